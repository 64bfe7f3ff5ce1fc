"""The example's task handlers (``handlers = { process_image = "tasks:process_image" }``).

``process_image`` stands in for the seed's image job: it takes an image as base64 (``image``
with ``width`` and ``height``), or generates a deterministic one from ``width``, ``height``
and ``seed``, and returns its size, checksum, mean brightness and the dimensions of a
thumbnail that fits in ``thumbnail`` pixels (default 128). examples/perl-legacy/
process_image.pl computes exactly the same result in Perl.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from surge.errors import HandlerError

MAX_PIXELS = 4096 * 4096


def process_image(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise HandlerError("payload must be a JSON object", permanent=True)
    width, height = _dimension(payload, "width", 64), _dimension(payload, "height", 48)
    box = _dimension(payload, "thumbnail", 128)
    if "image" in payload:
        pixels = _decode(payload["image"])
        if len(pixels) != width * height:
            raise HandlerError(
                f"image has {len(pixels)} bytes, expected width*height = {width * height}",
                permanent=True)
    else:
        pixels = generate_pixels(width * height, _dimension(payload, "seed", 0, minimum=0))
    thumb_width, thumb_height = thumbnail_size(width, height, box)
    return {
        "width": width,
        "height": height,
        "bytes": len(pixels),
        "sha256": hashlib.sha256(pixels).hexdigest(),
        "mean": sum(pixels) // len(pixels),
        "thumbnail": {"width": thumb_width, "height": thumb_height},
    }


def generate_pixels(count: int, seed: int) -> bytes:
    """A grey ramp: pixel i is (7 i + seed) mod 256 (the same formula as the Perl handler)."""
    ramp = bytes((7 * i + seed) % 256 for i in range(256))
    # The ramp repeats every 256 pixels (7 is odd), so build the image from whole copies.
    return (ramp * (count // 256 + 1))[:count]


def thumbnail_size(width: int, height: int, box: int) -> tuple[int, int]:
    """Fit inside box×box keeping the aspect ratio; never enlarge."""
    if width <= box and height <= box:
        return width, height
    if width >= height:
        return box, max(1, height * box // width)
    return max(1, width * box // height), box


def _dimension(payload: dict[str, Any], key: str, default: int, minimum: int = 1) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HandlerError(f"{key} must be an integer >= {minimum}, got {value!r}",
                           permanent=True)
    if key in ("width", "height") and value > 4096:
        raise HandlerError(f"{key} must be at most 4096, got {value}", permanent=True)
    return value


def _decode(image: Any) -> bytes:
    if not isinstance(image, str):
        raise HandlerError("image must be a base64 string", permanent=True)
    try:
        pixels = base64.b64decode(image, validate=True)
    except binascii.Error as exc:
        raise HandlerError(f"image is not valid base64: {exc}", permanent=True) from exc
    if not pixels:
        raise HandlerError("image is empty", permanent=True)
    return pixels
