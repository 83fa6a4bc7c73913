"""Pre-signed uploads: the browser sends the file straight to storage, never through a web worker.

`presign()` answers the contract's {upload_url, method, headers, public_url}. Two backends:
- s3: boto3's pre-signed PUT (S3_BUCKET, S3_ENDPOINT_URL for S3-compatible stores);
- local: a URL on this app signed with SECRET_KEY that names the key, content type, size limit
  and expiry; `accept_local_upload()` checks all of them before writing under UPLOAD_DIR, with smaller
  WebP copies beside the upload (`<key>-w320.webp`...) that pages offer by `srcset` (shop.media.image_srcset).
  S3 uploads go straight to the bucket and get no copies yet: pages serve them as uploaded.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from pathlib import Path

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from shop.errors import Conflict, Malformed, NotAllowed, TooLarge, Unsupported, ValidationError
from shop.security import external_url
from shop.storage.images import UploadErrorCode, reencode, rendition_name, renditions, type_name

IMAGE_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif"}
# The first bytes of each type: a file that claims to be a PNG must start like one.
MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
log = logging.getLogger(__name__)
KEY_RE = re.compile(r"uploads/[0-9a-f]{32}\.(jpg|png|webp|gif)")
# The smaller copies made of each local upload (shop.storage.images.renditions), served beside it.
RENDITION_RE = re.compile(r"uploads/([0-9a-f]{32})-w([0-9]{1,4})\.webp")


def validate_request(filename, content_type, size=None) -> tuple[str, str, int | None]:
    fields = {}
    if not isinstance(filename, str) or not filename.strip() or len(filename) > 255:
        fields["filename"] = "is required (at most 255 characters)"
    if not isinstance(content_type, str) or content_type not in IMAGE_TYPES:
        fields["content_type"] = f"must be one of {', '.join(IMAGE_TYPES)}"
    max_bytes = current_app.config["UPLOAD_MAX_BYTES"]
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= max_bytes):
        fields["size"] = f"must be between 1 and {max_bytes} bytes"
    if fields:
        raise ValidationError(fields)
    return filename.strip(), content_type, size


def new_key(content_type: str) -> str:
    return f"uploads/{uuid.uuid4().hex}{IMAGE_TYPES[content_type]}"


def public_url(key: str) -> str:
    from shop.media import image_url

    return image_url(key)


def presign(filename, content_type, size=None) -> dict:
    """Where and how to upload one image, valid for UPLOAD_URL_SECONDS."""
    _, content_type, size = validate_request(filename, content_type, size)
    key = new_key(content_type)
    cfg = current_app.config
    if cfg["STORAGE_BACKEND"] == "s3":
        return _presign_s3(key, content_type, size)
    token = _serializer().dumps({"k": key, "ct": content_type, "max": size or cfg["UPLOAD_MAX_BYTES"]})
    return {
        "upload_url": external_url("media.upload", token=token),
        "method": "PUT",
        "headers": {"Content-Type": content_type},
        "public_url": public_url(key),
        "key": key,
        "expires_in": cfg["UPLOAD_URL_SECONDS"],
    }


def _presign_s3(key: str, content_type: str, size: int | None) -> dict:
    import boto3
    from botocore.config import Config as BotoConfig

    cfg = current_app.config
    client = boto3.client(
        "s3",
        endpoint_url=cfg["S3_ENDPOINT_URL"],
        region_name=cfg["S3_REGION"],
        config=BotoConfig(signature_version="s3v4"),
    )
    params = {
        "Bucket": cfg["S3_BUCKET"],
        "Key": key,
        "ContentType": content_type,
        "CacheControl": "public, max-age=31536000, immutable",
    }
    headers = {"Content-Type": content_type, "Cache-Control": params["CacheControl"]}
    if size:
        params["ContentLength"] = size
    url = client.generate_presigned_url("put_object", Params=params, ExpiresIn=cfg["UPLOAD_URL_SECONDS"])
    base = (
        cfg["CDN_BASE_URL"]
        or f"{(cfg['S3_ENDPOINT_URL'] or 'https://s3.amazonaws.com').rstrip('/')}/{cfg['S3_BUCKET']}"
    )
    return {
        "upload_url": url,
        "method": "PUT",
        "headers": headers,
        "public_url": f"{base}/{key}",
        "key": key,
        "expires_in": cfg["UPLOAD_URL_SECONDS"],
    }


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="shop.storage.upload")


def accept_local_upload(token: str, content_type: str | None, body_stream, content_length: int | None) -> str:
    """Check a local upload URL and store its body; returns the key. 403 for an expired or altered URL."""
    try:
        data = _serializer().loads(token, max_age=current_app.config["UPLOAD_URL_SECONDS"])
    except SignatureExpired:
        raise NotAllowed(UploadErrorCode.URL_EXPIRED, "This upload URL has expired; ask for a new one.") from None
    except BadSignature:
        raise NotAllowed(UploadErrorCode.URL_INVALID, "This upload URL is not valid.") from None
    key, expected_type, max_bytes = data["k"], data["ct"], int(data["max"])
    if not KEY_RE.fullmatch(key):
        raise NotAllowed(UploadErrorCode.URL_INVALID, "This upload URL is not valid.")
    if (content_type or "").split(";")[0].strip() != expected_type:
        raise Unsupported(
            UploadErrorCode.UNSUPPORTED_MEDIA_TYPE, f"This URL takes {type_name(expected_type)} images only."
        )
    if content_length is not None and content_length > max_bytes:
        raise TooLarge(UploadErrorCode.PAYLOAD_TOO_LARGE, f"The file is larger than {max_bytes} bytes.")
    target = Path(current_app.config["UPLOAD_DIR"]) / key.removeprefix("uploads/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise Conflict(UploadErrorCode.ALREADY_UPLOADED, "This upload URL was already used.")
    tmp = target.with_suffix(target.suffix + f".{os.getpid()}.{time.monotonic_ns()}.part")
    clean = tmp.with_suffix(".clean")
    written = 0
    try:
        with open(tmp, "wb") as out:
            while chunk := body_stream.read(64 * 1024):
                if written == 0 and not chunk.startswith(MAGIC[expected_type]):
                    raise Unsupported(
                        UploadErrorCode.UNSUPPORTED_MEDIA_TYPE, f"The file is not a {type_name(expected_type)} image."
                    )
                written += len(chunk)
                if written > max_bytes:
                    raise TooLarge(UploadErrorCode.PAYLOAD_TOO_LARGE, f"The file is larger than {max_bytes} bytes.")
                out.write(chunk)
        if written == 0:
            raise Malformed(UploadErrorCode.EMPTY_UPLOAD, "The upload was empty.")
        # What is served is Pillow's fresh encoding of the pixels, never the bytes sent (polyglots, metadata).
        reencode(tmp, clean, expected_type, current_app.config["UPLOAD_MAX_PIXELS"])
        _store_renditions(clean, target.parent, key)
        os.replace(clean, target)
    finally:
        tmp.unlink(missing_ok=True)
        clean.unlink(missing_ok=True)
    return key


def _store_renditions(source: Path, folder: Path, key: str) -> None:
    """The smaller copies of an upload, beside it, written before the original: once the original is in place,
    pages may already ask for them. Copies that cannot be made are skipped (the original is served instead)."""
    try:
        copies = renditions(source)
    except (OSError, ValueError) as exc:
        log.warning("no smaller copies of %s: %s", key, exc)
        return
    for width, data in copies:
        copy = folder / rendition_name(key, width).removeprefix("uploads/")
        part = copy.with_name(f"{copy.name}.{os.getpid()}.{time.monotonic_ns()}.part")
        try:
            part.write_bytes(data)
            os.replace(part, copy)
        finally:
            part.unlink(missing_ok=True)
