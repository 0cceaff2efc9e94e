"""Dataset trees in their owners' official layouts, written from the real faces in ../shared/data.

Each ``write_*`` function builds one layout under a directory the caller owns (a pytest tmp dir) and
returns what the files say, so tests can compare a store with its source files.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.shared_data import DLIB_FACES, SHARED_DATA, reference_faces, require

FER2013_HEAD = SHARED_DATA / "fer2013" / "fer2013-head.csv"
FERPLUS_CSV = SHARED_DATA / "fer2013" / "fer2013new.csv"
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def fixture_usage(row: int) -> str:
    """The head CSV's rows are all Training; the fixtures move every tenth row to each test split."""
    return {8: "PublicTest", 9: "PrivateTest"}.get(row % 10, "Training")


def fer2013_head_rows(n: int) -> list[tuple[int, str, str]]:
    """The first ``n`` rows of the real FER-2013 CSV: ``(emotion, pixels, Usage)`` with Usage from
    :func:`fixture_usage`."""
    lines = require(FER2013_HEAD).read_text().splitlines()[1 : n + 1]
    rows = []
    for i, line in enumerate(lines):
        emotion, pixels, _ = line.split(",")
        rows.append((int(emotion), pixels, fixture_usage(i)))
    return rows


def write_fer2013_csv(root: Path, n: int) -> list[tuple[int, str, str]]:
    root.mkdir(parents=True, exist_ok=True)
    rows = fer2013_head_rows(n)
    text = "emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows)
    (root / "fer2013.csv").write_text(text)
    return rows


def write_fer2013_folders(root: Path, n: int) -> list[tuple[int, str, str]]:
    """The same rows as :func:`write_fer2013_csv`, as the image-folder form: lossless PNGs at
    ``fer2013-images/{train,test}/<class>/<Usage>_<row>.png``."""
    rows = fer2013_head_rows(n)
    for i, (emotion, pixels, usage) in enumerate(rows):
        folder = root / "fer2013-images" / ("train" if usage == "Training" else "test") / FER_CLASSES[emotion]
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.array(pixels.split(), dtype=np.uint8).reshape(48, 48)
        Image.fromarray(grey).save(folder / f"{usage}_{i}.png")
    return rows


def write_ferplus(root: Path, n: int) -> np.ndarray:
    """``fer2013.csv`` (first ``n`` rows) and the matching first ``n`` rows of ``fer2013new.csv``;
    returns the ``(n, 10)`` vote counts, names in the order of the file."""
    write_fer2013_csv(root, n)
    lines = require(FERPLUS_CSV).read_text().splitlines()
    body = []
    for i, line in enumerate(lines[1 : n + 1]):
        fields = line.split(",")
        fields[0] = fixture_usage(i)
        body.append(",".join(fields))
    (root / "fer2013new.csv").write_text("\n".join([lines[0], *body]) + "\n")
    return np.array([[float(v) for v in line.split(",")[2:]] for line in body], dtype=np.float32)


@dataclass
class AffectNetRow:
    path: str  # subDirectory_filePath
    box: np.ndarray  # (4,) left, top, right, bottom in the crop, pixel indices as written
    landmarks: np.ndarray  # (68, 2) in the crop, pixel indices as written
    expression: int
    valence: float
    arousal: float
    split: str

    def csv_line(self) -> str:
        left, top, right, bottom = (float(v) for v in self.box)
        marks = ";".join(f"{v:.2f}" for v in self.landmarks.reshape(-1))
        return (
            f"{self.path},{left:.0f},{top:.0f},{right - left:.0f},{bottom - top:.0f},{marks},"
            f"{self.expression},{self.valence},{self.arousal}"
        )


AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)


def write_affectnet(root: Path, dlib_faces: Path) -> list[AffectNetRow]:
    """AffectNet's layout from the dlib-faces photos: one row per photo (its first XML face), the
    image a crop around that face with a margin of one face width (AffectNet ships such crops),
    box and landmarks from the XML moved into the crop. ``training.csv`` has a header,
    ``validation.csv`` none (as in some releases). One crop is stored as BMP and one as TIFF; one
    row names a file that is missing; rows carry the codes 7, 8 and 10 (valence -2 for no-face)."""
    faces: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for file, box, points in reference_faces(dlib_faces):
        faces.setdefault(file, (box, points))
    images = root / "Manually_Annotated_Images"
    rows = []
    for i, (file, (box, points)) in enumerate(sorted(faces.items())):
        photo = Image.open(dlib_faces / file).convert("RGB")
        width = box[2] - box[0]
        left, top = int(max(0, box[0] - width)), int(max(0, box[1] - width))
        right, bottom = int(min(photo.width, box[2] + width)), int(min(photo.height, box[3] + width))
        crop = photo.crop((left, top, right, bottom))
        suffix = {2: ".bmp", 3: ".tif"}.get(i, ".jpg")
        path = f"{100 + i}/{Path(file).stem}{suffix}"
        (images / path).parent.mkdir(parents=True, exist_ok=True)
        crop.save(images / path, quality=95) if suffix == ".jpg" else crop.save(images / path)
        offset = np.array([left, top], dtype=np.float32)
        rows.append(
            AffectNetRow(
                path=path,
                box=box - np.tile(offset, 2),
                landmarks=points - offset,
                expression=(0, 1, 2, 3, 4, 5, 6, 7, 8)[i],
                valence=round(-0.9 + 0.2 * i, 2),
                arousal=round(0.5 - 0.1 * i, 2),
                split="train" if i < 5 else "val",
            )
        )
    missing = AffectNetRow("999/missing.jpg", rows[0].box, rows[0].landmarks, 10, -2.0, -2.0, "val")
    rows.append(missing)
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    train = [r.csv_line() for r in rows if r.split == "train"]
    val = [r.csv_line() for r in rows if r.split == "val"]
    (lists / "training.csv").write_text("\n".join([AFFECTNET_HEADER, *train]) + "\n")
    (lists / "validation.csv").write_text("\n".join(val) + "\n")
    return [r for r in rows if r.split == "train"] + [r for r in rows if r.split == "val"]


RAFDB_FILES = (("train_00001", 4), ("train_00002", 1), ("train_00003", 7), ("test_0001", 6), ("test_0002", 5))


def write_rafdb(root: Path, dlib_faces: Path) -> None:
    """RAF-DB basic's layout: 100x100 aligned crops of dlib-faces XML faces (margin of a quarter
    face) in ``Image/aligned/``, the photos themselves in ``Image/original/``, labels 1-7."""
    faces = list(reference_faces(dlib_faces))[::7][: len(RAFDB_FILES)]
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    (root / "Image" / "original").mkdir(parents=True)
    for (stem, _), (file, box, _) in zip(RAFDB_FILES, faces):
        photo = Image.open(dlib_faces / file).convert("RGB")
        margin = (box[2] - box[0]) / 4
        crop = photo.crop(tuple(int(v) for v in (box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin)))
        crop.resize((100, 100), Image.BICUBIC).save(root / "Image" / "aligned" / f"{stem}_aligned.jpg", quality=95)
        shutil.copy(dlib_faces / file, root / "Image" / "original" / f"{stem}.jpg")
    text = "".join(f"{stem}.jpg {label}\n" for stem, label in RAFDB_FILES)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(text)


CKPLUS_FROM_FER = {
    "anger": "angry",
    "contempt": "neutral",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "sadness": "sad",
    "surprise": "surprise",
}


def write_ckplus(root: Path, fer_folders: Path, per_class: int = 3, subjects: int = 5) -> list[tuple[str, str, str]]:
    """CK+'s extracted-frames layout from real 48x48 FER-2013 faces (the ``contempt`` folder takes
    neutral faces: the pixels are real, the class is the fixture's): ``<class>/S<subject>_<seq>_
    <frame>.png``, subjects cycling over ``subjects`` people. Returns ``(class, file, subject)`` rows."""
    rows = []
    for c, (ck_class, fer_class) in enumerate(CKPLUS_FROM_FER.items()):
        (root / ck_class).mkdir(parents=True)
        sources = sorted((fer_folders / "train" / fer_class).iterdir())[:per_class]
        for f, source in enumerate(sources):
            subject = f"S{(c + f) % subjects * 5 + 10:03d}"
            name = f"{subject}_{c + 1:03d}_{f + 10:08d}.png"
            Image.open(io.BytesIO(source.read_bytes())).save(root / ck_class / name)
            rows.append((ck_class, name, subject))
    return rows


def another_framing(box: np.ndarray) -> np.ndarray:
    """A box framing the face as another detector might: 1.3x wider, 1.44x taller, its centre
    raised by 12% of the face's height; integer pixels, as AffectNet's lists hold them."""
    left, top, right, bottom = (float(v) for v in box)
    width, height = right - left, bottom - top
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2 - 0.12 * height
    return np.round(
        [centre_x - 0.65 * width, centre_y - 0.72 * height, centre_x + 0.65 * width, centre_y + 0.72 * height]
    )


def write_affectnet_photos(
    destination: Path, scale: int, copies: int = 1
) -> tuple[Path, Path, list[tuple[str, np.ndarray]]]:
    """AffectNet's layout from the dlib example photos as AffectNet's large photos are: one row
    per face of dlib's XML files (43 faces in 9 photos), each its own JPEG, the photo upscaled
    ``scale`` times, its box in :func:`another_framing`, the landmarks the XML's; the rows
    repeated ``copies`` times, the last in ``validation.csv``. Also a ``folder`` tree of the same
    photos (``copies`` of each), without boxes.

    Returns:
        The AffectNet root, the folder root, and each face's ``(photo file, XML box scaled)``.
    """
    affectnet, folder = destination / "affectnet", destination / "folder" / "faces"
    images = affectnet / "Manually_Annotated_Images"
    lists = affectnet / "Manually_Annotated_file_lists"
    for path in (images, lists, folder):
        path.mkdir(parents=True)
    photos: dict[str, Image.Image] = {}
    lines, faces = [], []
    for i, (file, box, points) in enumerate(reference_faces(require(DLIB_FACES))):
        if file not in photos:
            photo = Image.open(require(DLIB_FACES) / file).convert("RGB")
            photos[file] = photo.resize((photo.width * scale, photo.height * scale), Image.Resampling.BICUBIC)
        box, points = box * scale, (points + 0.5) * scale - 0.5
        faces.append((file, box))
        for copy in range(copies):
            name = f"{copy}/{i:03d}_{Path(file).stem}.jpg"
            (images / name).parent.mkdir(exist_ok=True)
            photos[file].save(images / name, quality=90)
            left, top, right, bottom = another_framing(box)
            marks = ";".join(f"{v:.2f}" for v in points.reshape(-1))
            lines.append(f"{name},{left:.0f},{top:.0f},{right - left:.0f},{bottom - top:.0f},{marks},{i % 8},0.1,0.2")
    (lists / "training.csv").write_text("\n".join([AFFECTNET_HEADER, *lines[:-1]]) + "\n")
    (lists / "validation.csv").write_text(lines[-1] + "\n")
    for file, photo in photos.items():
        for copy in range(copies):
            photo.save(folder / f"{copy}_{file}", quality=90)
    return affectnet, folder.parent, faces
