"""Decode image files to pixel arrays.

Pillow reads the header first, so an image over the pixel limit is refused before its pixels are
decoded. EXIF orientation is applied; 16-bit, palette, CMYK, alpha and grayscale images all come
out as 8-bit grayscale or RGB. OpenCV is the fallback for files whose header Pillow read and
checked but whose pixels it could not decode; a file Pillow cannot identify is not handed to
OpenCV, whose decoders allocate before any limit of ours applies (a 9 MB Radiance HDR file took
3.4 GB and 14 s).
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import UnreadableImageError

# We enforce our own limit from the header; Pillow's decompression-bomb guard would otherwise
# raise for large but legitimate photos before our check could give a clear message.
Image.MAX_IMAGE_PIXELS = None
# OpenCV, the fallback, would print a warning for every broken file; the sample's message says it.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

# Below this many pixels a side an image cannot show a face that landmarks could be fitted to
# (FER-2013's faces, the smallest in common use, are 48 px); such images are refused, not aligned.
MIN_SIDE = 8


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode an encoded image file at full size: :func:`decode_reduced` with no reduction."""
    return decode_reduced(data, max_pixels=max_pixels, largest_factor=1)[0]


def decode_reduced(data: bytes, *, max_pixels: int, largest_factor: int) -> tuple[np.ndarray, int]:
    """Decode an encoded image file, a JPEG at a reduced scale where ``largest_factor`` allows.

    A JPEG is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg's DCT scaling (Pillow's draft
    mode), the largest of those factors not above ``largest_factor``: several times faster, and a
    smaller array for everything after. Other formats are decoded at full size.

    Args:
        data: the file's bytes (JPEG, PNG, BMP, TIFF, GIF (first frame), WebP, ...).
        max_pixels: refuse images whose header says width * height exceeds this.

    Returns:
        ``(pixels, factor)``: ``pixels`` ``(H, W) uint8`` for grayscale sources, ``(H, W, 3)
        uint8`` RGB otherwise, with EXIF orientation applied; ``factor`` (1, 2, 4 or 8) source
        pixels per decoded pixel (a decoded pixel's corner ``(x, y)`` is the source's ``(factor *
        x, factor * y)``). 16-bit images are scaled to 8 bits; alpha is composited on black;
        palette images are smoothed (Gaussian, sigma :data:`PALETTE_BLUR_SIGMA`) to undo their
        dithering.

    Raises:
        UnreadableImageError: empty, truncated or non-image data, too many pixels, or fewer
            than :data:`MIN_SIDE` pixels a side.
    """
    if not data:
        raise UnreadableImageError("empty file (0 bytes)")
    try:
        return _decode_with_pillow(data, max_pixels, largest_factor)
    except UnreadableImageError:
        raise
    except UnidentifiedImageError:
        raise UnreadableImageError(
            f"not a readable image: not an image format Pillow reads (JPEG, PNG, BMP, GIF, TIFF, WebP, ...; "
            f"the file starts {data[:12]!r})"
        ) from None
    except Exception as pillow_error:  # noqa: BLE001 - Pillow raises many types; OpenCV may still read it
        decoded = _decode_with_opencv(data)  # the header Pillow read passed the pixel check
        if decoded is None:
            raise UnreadableImageError(f"not a readable image: {pillow_error}") from None
        _check_pixels(decoded.shape[1], decoded.shape[0], max_pixels)
        return decoded, 1


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise UnreadableImageError(f"image has no pixels ({width}x{height})")
    if min(width, height) < MIN_SIDE:
        raise UnreadableImageError(
            f"image is {width}x{height} pixels, too small to hold a face (at least {MIN_SIDE} a side)"
        )
    if width * height > max_pixels:
        raise UnreadableImageError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (raise --max-pixels to accept it)"
        )


def _decode_with_pillow(data: bytes, max_pixels: int, largest_factor: int) -> tuple[np.ndarray, int]:
    with Image.open(io.BytesIO(data)) as image:
        _check_pixels(image.width, image.height, max_pixels)
        if image.format == "JPEG" and image.mode in ("RGB", "L") and data.endswith(JPEG_END):
            decoded = _decode_jpeg_with_opencv(data, image.mode == "L", largest_factor)
            if decoded is not None:
                return decoded
        factor = 1
        if largest_factor > 1 and image.format == "JPEG":
            full_width = image.width
            wanted = (max(1, image.width // largest_factor), max(1, image.height // largest_factor))
            image.draft(image.mode if image.mode in ("RGB", "L") else None, wanted)
            factor = round(full_width / image.width)  # libjpeg gives ceil(width / factor) columns
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a truncated file must fail, not decode half grey
            image.load()
        ImageOps.exif_transpose(image, in_place=True)  # a copy of the pixels only where it turns them
        return _to_uint8_array(image), factor


JPEG_END = b"\xff\xd9"  # the end-of-image marker: a file without it at its end may be cut short
_REDUCED_FLAGS = {
    (False, 1): cv2.IMREAD_COLOR,
    (False, 2): cv2.IMREAD_REDUCED_COLOR_2,
    (False, 4): cv2.IMREAD_REDUCED_COLOR_4,
    (False, 8): cv2.IMREAD_REDUCED_COLOR_8,
    (True, 1): cv2.IMREAD_GRAYSCALE,
    (True, 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    (True, 4): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    (True, 8): cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def _decode_jpeg_with_opencv(data: bytes, gray: bool, largest_factor: int) -> tuple[np.ndarray, int] | None:
    """A whole (RGB or grayscale) JPEG whose header Pillow checked, decoded by OpenCV's
    libjpeg-turbo: the same pixels as Pillow's (EXIF orientation applied), in a quarter of the
    time (Pillow hands its pixels to numpy through a chunked copy), at 1/2, 1/4 or 1/8 scale where
    ``largest_factor`` allows; None where OpenCV cannot decode it."""
    factor = max(k for k in (1, 2, 4, 8) if k <= max(1, largest_factor))
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[gray, factor])
    if decoded is None:
        return None
    return (decoded if gray else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)), factor


# Palette images (palette PNG, GIF) are usually dithered, and the pixel-level noise of dithering
# hides faces from the HOG detector: a group photo saved with the web palette showed 2 of its 7
# faces, against 7 of 7 in RGB. A light Gaussian blur undoes the dithering (7 of 7 again).
PALETTE_BLUR_SIGMA = 0.7


def _to_uint8_array(image: Image.Image) -> np.ndarray:
    pixels = _palette_free_array(image)
    if image.mode in ("P", "PA"):
        pixels = cv2.GaussianBlur(pixels, (0, 0), PALETTE_BLUR_SIGMA)
    return pixels


def _palette_free_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or pixels.max() > 255 else 255.0
        return np.clip(np.round(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
    if mode in ("L", "1"):
        return np.asarray(image.convert("L"), dtype=np.uint8)
    if mode in ("LA", "La"):
        pixels = np.asarray(image.convert("LA"), dtype=np.float32)
        return np.round(pixels[..., 0] * pixels[..., 1] / 255.0).astype(np.uint8)
    if (mode == "P" and "transparency" in image.info) or mode in ("RGBA", "RGBa", "PA"):
        pixels = np.asarray(image.convert("RGBA"), dtype=np.float32)
        return np.round(pixels[..., :3] * pixels[..., 3:4] / 255.0).astype(np.uint8)
    as_rgb = image if mode == "RGB" else image.convert("RGB")  # converting RGB to RGB would copy it
    return np.ascontiguousarray(np.asarray(as_rgb, dtype=np.uint8))


def _decode_with_opencv(data: bytes) -> np.ndarray | None:
    buffer = np.frombuffer(data, dtype=np.uint8)
    decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if decoded is None:
        return None
    if decoded.dtype == np.uint16:
        decoded = (decoded.astype(np.float32) * (255.0 / 65535.0)).round().astype(np.uint8)
    elif decoded.dtype != np.uint8:
        return None
    if decoded.ndim == 2:
        return decoded
    if decoded.shape[2] == 4:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGRA2BGR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def to_gray(image: np.ndarray) -> np.ndarray:
    """``(H, W) or (H, W, 3) uint8 RGB`` -> ``(H, W) uint8`` (ITU-R BT.601 luma)."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W) or (H, W, 3) uint8`` -> ``(H, W, 3) uint8 RGB`` (gray replicated)."""
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image
