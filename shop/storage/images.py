"""Uploaded images are decoded and encoded again with Pillow before anyone can fetch them.

What is stored is a fresh file made from the pixels only: bytes appended after the image (an HTML or
script payload making a polyglot), comments, EXIF (GPS positions of a phone photo), ICC and text chunks
are gone. A file Pillow cannot decode as the declared type is refused, and so is one with more pixels
than UPLOAD_MAX_PIXELS (a decompression bomb: a few KB that unpack to gigabytes).
"""

from __future__ import annotations

import io
from enum import StrEnum
from pathlib import Path

from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from shop.errors import TooLarge, Unsupported

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}
# Frame timing and palette transparency are part of the picture; every other info key is metadata.
KEEP_INFO = ("transparency", "duration", "loop", "background")


# Renditions: smaller WebP copies for `srcset`, so a phone's 180 px card is not sent an 800 px upload.
RENDITION_WIDTHS = (320, 640, 1280)


def type_name(content_type: str) -> str:
    """ "PNG" for image/png: how messages name a type ("not a PNG image", not "not a image/png image")."""
    return FORMATS.get(content_type, content_type.split("/")[-1].upper())


class UploadErrorCode(StrEnum):
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    IMAGE_TOO_LARGE = "image_too_large"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    URL_EXPIRED = "upload_url_expired"
    URL_INVALID = "upload_url_invalid"
    ALREADY_UPLOADED = "already_uploaded"
    EMPTY_UPLOAD = "empty_upload"


def _refuse(content_type: str) -> Unsupported:
    return Unsupported(
        UploadErrorCode.UNSUPPORTED_MEDIA_TYPE, f"The file is not a readable {type_name(content_type)} image."
    )


def _frame(frame: Image.Image, fmt: str, upright: bool) -> Image.Image:
    """A copy the encoder takes (JPEG has no alpha or palette), upright, with no metadata."""
    frame = ImageOps.exif_transpose(frame) if upright else frame.copy()
    if fmt == "JPEG" and frame.mode not in ("RGB", "L", "CMYK"):
        frame = frame.convert("RGB")
    frame.info = {k: v for k, v in frame.info.items() if k in KEEP_INFO}
    return frame


def _decode(source: Path, content_type: str, max_pixels: int) -> tuple[list[Image.Image], dict]:
    """The frames of the image at `source` (checked to be of the declared format and size) and their timing."""
    fmt = FORMATS[content_type]
    try:
        with Image.open(source, formats=[fmt]) as image:
            # Header only so far: refuse a bomb before decoding it (every frame counts).
            if image.width * image.height * getattr(image, "n_frames", 1) > max_pixels:
                raise TooLarge(UploadErrorCode.IMAGE_TOO_LARGE, f"The image has more than {max_pixels} pixels.")
            if getattr(image, "n_frames", 1) > 1:
                frames = [_frame(f, fmt, upright=False) for f in ImageSequence.Iterator(image)]
            else:
                frames = [_frame(image, fmt, upright=True)]
            timing = (
                {"duration": [f.info.get("duration", 0) for f in frames], "loop": image.info.get("loop", 0)}
                if len(frames) > 1
                else {}
            )
    except (TooLarge, Unsupported):
        raise
    except Image.DecompressionBombError:
        raise TooLarge(UploadErrorCode.IMAGE_TOO_LARGE, f"The image has more than {max_pixels} pixels.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise _refuse(content_type) from None
    return frames, timing


def reencode(source: Path, target: Path, content_type: str, max_pixels: int) -> None:
    """Write to `target` a freshly encoded copy of the `content_type` image at `source`; 415 or 413 if refused."""
    fmt = FORMATS[content_type]
    frames, options = _decode(source, content_type, max_pixels)
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = 90
    try:
        frames[0].save(target, fmt, save_all=len(frames) > 1, append_images=frames[1:], **options)
    except (OSError, ValueError):
        raise _refuse(content_type) from None


def rendition_name(key: str, width: int) -> str:
    """uploads/<hex>.png → uploads/<hex>-w320.webp: where the `width` px wide copy of `key` is stored."""
    return f"{key.rsplit('.', 1)[0]}-w{width}.webp"


def renditions(source: Path) -> list[tuple[int, bytes]]:
    """WebP copies of the (already re-encoded) image at `source`, one for each of RENDITION_WIDTHS narrower
    than it, and one at its own width when it is narrower than the widest: never enlarged. None for animations."""
    with Image.open(source) as image:
        if getattr(image, "n_frames", 1) > 1:
            return []  # an animation stays one: served as uploaded
        frame = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    widths = sorted({min(w, frame.width) for w in RENDITION_WIDTHS})
    out = []
    for width in widths:
        height = max(1, round(frame.height * width / frame.width))
        copy = frame if width == frame.width else frame.resize((width, height), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        copy.save(buf, "WEBP", quality=82, method=4)
        out.append((width, buf.getvalue()))
    return out
