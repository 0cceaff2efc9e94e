import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import UnreadableImageError
from pipeline.stages.decode import decode_image, decode_reduced

LIMIT = 40_000_000


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient_rgb(width=40, height=30) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 6, y * 8, (x + y) * 3], axis=-1).astype(np.uint8)


def test_rgb_png_round_trips():
    pixels = gradient_rgb()
    out = decode_image(encode(Image.fromarray(pixels), "PNG"), max_pixels=LIMIT)
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out, pixels)


def test_grayscale_stays_single_channel():
    gray = gradient_rgb()[..., 0]
    out = decode_image(encode(Image.fromarray(gray), "PNG"), max_pixels=LIMIT)
    assert out.shape == (30, 40)
    np.testing.assert_array_equal(out, gray)


def test_sixteen_bit_is_scaled_to_eight():
    values = (np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)
    out = decode_image(encode(Image.fromarray(values), "PNG"), max_pixels=LIMIT)
    assert out.dtype == np.uint8 and out.shape == (30, 40)
    np.testing.assert_array_equal(out, np.round(values / 65535 * 255).astype(np.uint8))


def test_rgba_is_composited_on_black():
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :20, 3] = 255  # left half opaque, right half transparent
    out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), max_pixels=LIMIT)
    assert out.shape == (30, 40, 3)
    assert (out[:, :20] == 200).all() and (out[:, 20:] == 0).all()


def test_palette_png_becomes_rgb():
    image = Image.fromarray(gradient_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = decode_image(encode(image, "PNG"), max_pixels=LIMIT)
    assert out.shape == (30, 40, 3)


def test_a_dithered_palette_photo_shows_the_detector_the_faces_of_the_rgb_photo(dlib_faces):
    import dlib

    photo = Image.open(dlib_faces / "2008_004176.jpg").convert("RGB")
    web_palette = photo.convert("P")  # Pillow's web palette, Floyd-Steinberg dithered
    detector = dlib.get_frontal_face_detector()
    in_rgb = len(detector(np.asarray(photo), 1))
    undithered = decode_image(encode(web_palette, "PNG"), max_pixels=LIMIT)
    assert in_rgb == 7 and len(detector(undithered, 1)) == in_rgb
    assert len(detector(np.asarray(web_palette.convert("RGB")), 1)) < in_rgb  # the raw palette pixels hide faces


def test_exif_orientation_is_applied():
    pixels = gradient_rgb(width=40, height=30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    out = decode_image(data, max_pixels=LIMIT)
    assert out.shape == (40, 30, 3)  # width and height swapped
    expected = np.rot90(pixels, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds almost no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_images_over_the_pixel_limit_are_refused_before_decoding():
    with pytest.raises(UnreadableImageError, match="20000x20000 = 400,000,000 pixels"):
        decode_image(png_header_only(20000, 20000), max_pixels=LIMIT)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is not an image\n", "not a readable image"),
        (b"<html><body>404 Not Found</body></html>", "not a readable image"),
    ],
)
def test_non_images_are_unreadable(data, reason):
    with pytest.raises(UnreadableImageError, match=reason):
        decode_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_unreadable(fmt):
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), fmt)
    with pytest.raises(UnreadableImageError):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_unreadable_error_is_also_a_value_error():
    with pytest.raises(ValueError):
        decode_image(b"", max_pixels=LIMIT)


def test_a_format_pillow_cannot_identify_is_refused_without_decoding():
    """A Radiance HDR file: 600 KB that OpenCV would decode into 108 MB of float32 (at 30000 x
    30000, 3.4 GB and seconds) before any limit of ours applied; it is refused from its first bytes."""
    import cv2

    ok, hdr = cv2.imencode(".hdr", np.zeros((3000, 3000, 3), np.float32))
    with pytest.raises(UnreadableImageError, match=r"not an image format Pillow reads .* starts b'#\?RADIANCE"):
        decode_image(hdr.tobytes(), max_pixels=LIMIT)


def test_jpegs_decode_to_pillows_pixels_whole_and_reduced(dlib_faces):
    """OpenCV's libjpeg-turbo decodes a JPEG Pillow checked: Pillow's own pixels, at full size
    and at 1/2, 1/4 and 1/8 (Pillow's draft mode), in colour and in grey."""
    photo = Image.open(dlib_faces / "2008_002506.jpg").convert("RGB")
    for image in (photo, photo.convert("L")):
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=90)
        data = encoded.getvalue()
        assert np.array_equal(decode_image(data, max_pixels=10**8), np.asarray(Image.open(io.BytesIO(data))))
        for factor in (2, 4, 8):
            drafted = Image.open(io.BytesIO(data))
            drafted.draft(drafted.mode, (drafted.width // factor, drafted.height // factor))
            pixels, scale = decode_reduced(data, max_pixels=10**8, largest_factor=factor)
            assert scale == factor and np.array_equal(pixels, np.asarray(drafted))
    png = io.BytesIO()
    photo.save(png, "PNG")
    assert decode_reduced(png.getvalue(), max_pixels=10**8, largest_factor=4)[1] == 1  # not a JPEG: full size
