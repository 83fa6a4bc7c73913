"""Product images: URLs (through CDN_BASE_URL when set) and the locally served media.

The demo catalogue uses generated placeholder images: `placeholder/<hue>/<label>.svg` renders a
product-coloured tile with a label, so the shop looks like a shop without shipping binary files.
"""
from __future__ import annotations

import re
from xml.sax.saxutils import escape

from flask import Blueprint, Response, abort, current_app, url_for

bp = Blueprint("media", __name__)
PLACEHOLDER = re.compile(r"placeholder/(\d{1,3})/([a-z0-9-]{1,60})\.svg")
ONE_YEAR = 365 * 24 * 3600


def image_url(path: str | None) -> str | None:
    """Where a browser fetches an image stored at `path`."""
    if not path:
        return None
    if path.startswith(("http://", "https://", "//")):
        return path
    cdn = current_app.config.get("CDN_BASE_URL")
    if cdn:
        return f"{cdn}/media/{path}"
    return url_for("media.file", path=path)


@bp.get("/media/<path:path>")
def file(path: str):
    m = PLACEHOLDER.fullmatch(path)
    if not m:
        abort(404)
    hue = int(m.group(1)) % 360
    label = escape(m.group(2).replace("-", " ").title())
    svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="800" height="800" viewBox="0 0 800 800" role="img">
<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">
<stop offset="0" stop-color="hsl({hue},45%,86%)"/><stop offset="1" stop-color="hsl({hue},40%,70%)"/></linearGradient></defs>
<rect width="800" height="800" fill="url(#g)"/>
<circle cx="400" cy="360" r="170" fill="hsl({hue},35%,55%)" opacity=".55"/>
<text x="400" y="640" font-family="system-ui,sans-serif" font-size="48" text-anchor="middle"
 fill="hsl({hue},40%,22%)">{label}</text></svg>"""
    resp = Response(svg, mimetype="image/svg+xml")
    # Immutable: the URL names the content, so browsers and a CDN keep it for a year.
    resp.headers["Cache-Control"] = f"public, max-age={ONE_YEAR}, immutable"
    return resp
