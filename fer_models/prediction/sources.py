"""What fer-predict reads: image files, folders of them, and videos, one decoded picture at a time.

An input that is a folder stands for the image and video files under it (by suffix, recursively,
in sorted order); any other input is taken as given: a video by its suffix, else an image. A
picture that cannot be read is an :class:`Unreadable` entry with the reason, never an exception:
it becomes a row of its own, and the other inputs go on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import UnreadableImageError
from pipeline.stages.decode import decode_reduced

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


@dataclass(frozen=True)
class Picture:
    """One picture to predict on: an image file (``frame`` None) or a video's frame ``frame``
    (0-based); ``pixels`` ``(H, W) uint8`` gray or ``(H, W, 3) uint8`` RGB, None until read
    (image files are read where they are processed)."""

    source: str
    frame: int | None = None
    pixels: np.ndarray | None = None


@dataclass(frozen=True)
class Unreadable:
    """An input, or a video's frame, that could not be read, and why."""

    source: str
    message: str
    frame: int | None = None


def expand_inputs(inputs: list[str]) -> tuple[list[str], int]:
    """The files ``inputs`` stand for, in order: a folder's image and video files (recursively,
    sorted), any other input as given. Returns them and how many files under the folders were
    left out for their suffix."""
    files: list[str] = []
    skipped = 0
    for given in inputs:
        if not os.path.isdir(given):
            files.append(given)
            continue
        for path in sorted(p for p in Path(given).rglob("*") if p.is_file()):
            if path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                files.append(str(path))
            else:
                skipped += 1
    return files, skipped


def is_video(source: str) -> bool:
    return Path(source).suffix.lower() in VIDEO_SUFFIXES


def read_image(source: str, max_pixels: int) -> np.ndarray:
    """The decoded image file ``source``: ``(H, W) uint8`` or ``(H, W, 3) uint8`` RGB, decoded as
    the store's chain decodes a dataset's files.

    Raises:
        UnreadableImageError: missing, not a regular file, not an image, or over ``max_pixels``.
    """
    if not os.path.isfile(source):
        raise UnreadableImageError(f"{source}: {'not a regular file' if os.path.exists(source) else 'no such file'}")
    try:
        data = Path(source).read_bytes()
    except OSError as error:
        raise UnreadableImageError(f"cannot read {source}: {error}") from None
    pixels, _ = decode_reduced(data, max_pixels=max_pixels, largest_factor=1)
    return pixels


def video_frames(source: str, every: int) -> Iterator[Picture | Unreadable]:
    """Every ``every``-th frame of the video ``source`` (frames 0, N, 2N, ...) as RGB pictures,
    decoded by OpenCV; one :class:`Unreadable` where the file cannot be opened as a video."""
    import cv2

    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        yield Unreadable(source, f"{source}: OpenCV cannot open it as a video")
        return
    index = 0
    try:
        while True:
            if index % every == 0:
                ok, frame = capture.read()
                if not ok:
                    break
                yield Picture(source, index, np.ascontiguousarray(frame[:, :, ::-1]))
            elif not capture.grab():
                break
            index += 1
    finally:
        capture.release()
    if index == 0:
        yield Unreadable(source, f"{source}: OpenCV decoded no frame of it")
