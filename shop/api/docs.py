"""The OpenAPI document (/api/v1/openapi.json) and Swagger UI (/api/docs), served from the installed bundle
(swagger-ui-py's copy of Swagger UI 5, which renders OpenAPI 3.1; nothing is fetched from a CDN)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from flask import jsonify, send_from_directory

from shop.api import bp
from shop.api.contract import operation
from shop.api.openapi import spec
from shop.security import csp_nonce

_PACKAGE = find_spec("swagger_ui")
assert _PACKAGE is not None and _PACKAGE.submodule_search_locations, "swagger-ui-py is not installed (make install)"
SWAGGER_DIR = Path(next(iter(_PACKAGE.submodule_search_locations))) / "static"

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>The shop API v1</title><link rel="stylesheet" href="docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script nonce="{nonce}">window.ui = SwaggerUIBundle({url: "v1/openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body></html>"""


@bp.get("/v1/openapi.json")
@operation("This document (OpenAPI 3.1)", tags=["meta"], responses={200: None})
def openapi_json():
    return jsonify(spec())


@bp.get("/docs")
def docs():
    return DOCS_PAGE.replace("{nonce}", csp_nonce())  # the page's one inline script runs under the CSP


@bp.get("/docs/static/<path:filename>")
def docs_static(filename: str):
    return send_from_directory(SWAGGER_DIR, filename, max_age=86400)
