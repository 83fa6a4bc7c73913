"""Product images: URLs (through CDN_BASE_URL when set) and the locally served media.

The demo catalogue uses generated placeholder images: `placeholder/<hue>/<label>.svg` renders a
product-coloured tile with a label, so the shop looks like a shop without shipping binary files.
"""

from __future__ import annotations

import re
from pathlib import Path
from xml.sax.saxutils import escape

from flask import Blueprint, Response, abort, current_app, request, send_from_directory, url_for

from shop.extensions import csrf
from shop.security import body_limit

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


def image_widths(path: str | None) -> list[int]:
    """The widths of the smaller copies stored for the upload at `path` (none for other images, or for
    uploads made before renditions existed: those are served as they are)."""
    if not path or not path.startswith("uploads/"):
        return []
    return list(_rendition_widths(current_app.config["UPLOAD_DIR"], path))


_WIDTHS: dict[tuple[str, str], tuple[int, ...]] = {}


def _rendition_widths(upload_dir: str, key: str) -> tuple[int, ...]:
    """Looked up on disk once per process: the copies are written before the original, so once the original
    is there they are all there, and uploads never change (a used upload URL answers 409)."""
    from shop.storage.backends import KEY_RE, RENDITION_RE

    if (upload_dir, key) in _WIDTHS:
        return _WIDTHS[(upload_dir, key)]
    if not KEY_RE.fullmatch(key):
        return ()
    name = key.removeprefix("uploads/")
    stem = name.rsplit(".", 1)[0]
    found = []
    for f in Path(upload_dir).glob(f"{stem}-w*.webp"):
        m = RENDITION_RE.fullmatch(f"uploads/{f.name}")
        if m:
            found.append(int(m.group(2)))
    widths = tuple(sorted(found))
    if (Path(upload_dir) / name).exists():  # not yet uploaded: ask again next time
        if len(_WIDTHS) > 20_000:
            _WIDTHS.clear()
        _WIDTHS[(upload_dir, key)] = widths
    return widths


def image_srcset(path: str | None) -> str | None:
    """A `srcset` of the upload's smaller copies ("…-w320.webp 320w, …"), or None when it has none."""
    from shop.storage.images import rendition_name

    widths = image_widths(path)
    if not widths:
        return None
    return ", ".join(f"{image_url(rendition_name(path, w))} {w}w" for w in widths)


@bp.put("/media/upload/<token>")
@csrf.exempt  # authorised by the signed URL itself, like a pre-signed S3 URL
@body_limit("UPLOAD_MAX_BYTES")  # images may be larger than MAX_CONTENT_LENGTH
def upload(token: str):
    """The local backend's pre-signed upload target (see shop.storage.backends)."""
    from shop.storage.backends import accept_local_upload

    key = accept_local_upload(token, request.content_type, request.stream, request.content_length)
    return {"key": key, "public_url": image_url(key)}, 201


@bp.get("/media/<path:path>")
def file(path: str):
    if path.startswith("uploads/"):
        from shop.storage.backends import KEY_RE, RENDITION_RE

        if not (KEY_RE.fullmatch(path) or RENDITION_RE.fullmatch(path)):
            abort(404)
        resp = send_from_directory(current_app.config["UPLOAD_DIR"], path.removeprefix("uploads/"), max_age=ONE_YEAR)
        resp.headers["Cache-Control"] = f"public, max-age={ONE_YEAR}, immutable"
        return resp
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
