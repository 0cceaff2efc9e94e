"""A generated corpus of hostile inputs, each with the outcome preprocessing must record for it.

:func:`write_image_corpus` writes a ``folder`` dataset (``<root>/<class>/<file>``) whose files are
broken, odd or dangerous in one way each, made from one real face photo; :func:`write_row_corpus`
writes an AffectNet tree whose list file has one malformed row per kind beside good rows. Each
:class:`Kind` says which status the sample must end with and what its message must say.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.store import Status

OK = (Status.OK,)


@dataclass(frozen=True)
class Kind:
    name: str
    source: str  # path relative to the dataset root, as the manifest lists it
    statuses: tuple[Status, ...]  # the outcomes accepted
    message: str = ""  # a substring the message must contain ("" for none expected)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_png(side: int) -> bytes:
    """A complete, valid ``side x side`` 1-bit PNG (all black): 20000 px a side is 400 megapixels
    but under 100 KB of file."""
    row = b"\0" + bytes((side + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def zero_width_png() -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 64, 8, 0, 0, 0, 0))
        + _png_chunk(b"IEND", b"")
    )


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write_image_corpus(root: Path, face_photo: Path, no_face_photo: Path, crowd_photo: Path) -> list[Kind]:
    """Write the file kinds under ``root/<class>/`` and return them, ``control`` first.

    Args:
        face_photo: a photo of one frontal face that dlib's HOG detector finds.
        no_face_photo: a photo without a face.
        crowd_photo: a photo of 20 or more faces.
    """
    face = Image.open(face_photo).convert("RGB")
    face = face.resize((face.width * 300 // face.height, 300))
    gray = face.convert("L")
    jpeg = encode(face, "JPEG", quality=92)
    png = encode(face, "PNG")
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "face.jpg").write_bytes(jpeg)

    kinds: list[Kind] = []

    def add(name: str, relative: str, data: bytes | None, statuses=OK, message: str = "") -> Path:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        kinds.append(Kind(name, relative, tuple(statuses), message))
        return path

    unreadable = (Status.UNREADABLE,)
    add("control: the face as a plain JPEG", "good/control.jpg", jpeg)
    add("empty file", "broken/empty.jpg", b"", unreadable, "empty file (0 bytes)")
    add("truncated JPEG", "broken/truncated.jpg", jpeg[: len(jpeg) // 2], unreadable, "not a readable image")
    add("truncated PNG", "broken/truncated.png", png[: len(png) // 2], unreadable, "not a readable image")
    add("text named .jpg", "broken/notes.jpg", b"shopping list: eggs, milk\n", unreadable, "not a readable image")
    add(
        "HTML error page named .jpg",
        "broken/error-page.jpg",
        b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
        unreadable,
        "not a readable image",
    )
    add("PNG header with zero width", "broken/zero-width.png", zero_width_png(), unreadable, "not a readable image")
    add(
        "1x1 pixel image",
        "broken/one-pixel.png",
        encode(Image.new("RGB", (1, 1), (200, 150, 120)), "PNG"),
        unreadable,
        "too small to hold a face",
    )
    add("20000x20000 image", "broken/huge.png", huge_png(20000), unreadable, "over the limit")

    add(
        "16-bit grayscale PNG",
        "formats/sixteen-bit.png",
        encode(Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257), "PNG"),
    )
    add("CMYK JPEG", "formats/cmyk.jpg", encode(face.convert("CMYK"), "JPEG", quality=92))
    add("RGBA PNG", "formats/rgba.png", encode(face.convert("RGBA"), "PNG"))
    add("palette PNG", "formats/palette.png", encode(face.quantize(256), "PNG"))
    add("grayscale with alpha PNG", "formats/gray-alpha.png", encode(face.convert("LA"), "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees anticlockwise; viewers turn it back clockwise
    add(
        "EXIF-rotated photo",
        "formats/exif-rotated.jpg",
        encode(face.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=92, exif=exif.tobytes()),
    )
    add(
        "animated GIF",
        "formats/animated.gif",
        encode(face, "GIF", save_all=True, append_images=[Image.new("RGB", face.size)], duration=100, loop=0),
    )
    add("TIFF", "formats/face.tiff", encode(face, "TIFF"))
    add("BMP", "formats/face.bmp", encode(face, "BMP"))
    add("WebP", "formats/face.webp", encode(face, "WEBP", quality=90))
    add("JPEG with trailing garbage", "formats/trailing-garbage.jpg", jpeg + os.urandom(4096))

    add("image with no face", "content/no-face.jpg", no_face_photo.read_bytes(), (Status.NO_FACE,), "no face found")
    add(
        "image with 20+ faces",
        "content/crowd.jpg",
        crowd_photo.read_bytes(),
        OK,
        "several faces found (24); the largest was kept",
    )

    add("path with spaces and non-ASCII characters", "names/Émotion été — face 01.jpg", jpeg)
    add("duplicate file (first copy)", "names/duplicate-a.jpg", jpeg)
    add("duplicate file (second copy)", "names/duplicate-b.jpg", jpeg)

    loop = add("symlink loop", "links/loop.jpg", None, unreadable, "cannot read")
    os.symlink(loop.name, loop)  # points at itself
    dangling = add("dangling symlink", "links/dangling.jpg", None, unreadable, "cannot read")
    os.symlink("no-such-file.jpg", dangling)
    escaping = add(
        "symlink escaping the dataset root", "links/outside.jpg", None, unreadable, "outside the dataset root"
    )
    os.symlink(outside / "face.jpg", escaping)
    fifo = add(
        "FIFO named .jpg (would block a reader forever)",
        "links/fifo.jpg",
        None,
        unreadable,
        "a FIFO, not an image file",
    )
    os.mkfifo(fifo)
    if os.geteuid() != 0:  # root reads any file whatever its mode
        locked = add("unreadable file permissions", "links/no-permission.jpg", jpeg, unreadable, "Permission denied")
        locked.chmod(0)
    return kinds


@dataclass(frozen=True)
class Row:
    name: str
    fields: list[str]  # the CSV fields as written
    status: tuple[Status, ...]
    message: str = ""


def write_row_corpus(root: Path, face_photo: Path) -> list[Row]:
    """An AffectNet tree (both list files) whose ``training.csv`` holds one malformed row per
    kind between good rows; returns the rows in file order."""
    images = root / "Manually_Annotated_Images" / "1"
    lists = root / "Manually_Annotated_file_lists"
    images.mkdir(parents=True)
    lists.mkdir(parents=True)
    face = Image.open(face_photo).convert("RGB")
    face.save(images / "face.jpg", quality=92)
    width, height = face.size
    box = ["0", "0", str(width), str(height)]
    landmarks = ";".join(f"{width / 2:.1f};{height / 2:.1f}" for _ in range(68))
    good = ["1/face.jpg", *box, landmarks, "1", "0.5", "0.2"]
    usable = (Status.OK, Status.OK_PRIOR)
    failed = (Status.FAILED,)

    def change(index: int, value: str) -> list[str]:
        fields = list(good)
        fields[index] = value
        return fields

    rows = [
        Row("good row", good, usable),
        Row("row with missing fields", good[:4], failed, "expected 9 columns"),
        Row("row with extra fields", [*good, "x"], failed, "expected 9 columns"),
        Row(
            "non-numeric landmarks",
            change(5, "nose;" + landmarks.split(";", 1)[1]),
            failed,
            "column 'facial_landmarks'",
        ),
        Row("too few landmarks", change(5, landmarks.rsplit(";", 2)[0]), failed, "expected 136 numbers"),
        Row("non-numeric box", change(1, "left"), failed, "column 'face_x': expected a number"),
        Row("infinite box", change(3, "inf"), failed, "column 'face_width'"),
        Row("label out of range", change(6, "12"), failed, "unknown expression code 12"),
        Row("negative label", change(6, "-3"), failed, "unknown expression code -3"),
        Row("non-numeric label", change(6, "happy"), failed, "column 'expression'"),
        Row("path escaping the root with ..", change(0, "../../../etc/passwd"), failed, "must be relative"),
        Row("absolute path", change(0, "/etc/passwd"), failed, "must be relative"),
        Row("empty path", change(0, ""), failed, "must be relative"),
        Row("image file missing", change(0, "1/missing.jpg"), (Status.UNREADABLE,), "No such file"),
        Row("good row after the bad ones", good, usable),
    ]
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    (lists / "training.csv").write_text("\n".join([header, *(",".join(r.fields) for r in rows)]) + "\n")
    (lists / "validation.csv").write_text("\n".join([header, ",".join(good)]) + "\n")
    return rows
