"""The real data in ../shared/data (see its README): where it is, skipping where it is absent, and
extracting parts of it."""

from __future__ import annotations

import shutil
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


DLIB_FACES = SHARED_DATA / "dlib-faces"


FER2013_TGZ = SHARED_DATA / "fer2013" / "fer2013-images.tgz"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (see ../shared/data/README.md)")
    return path


def reference_faces(folder: Path):
    """``(file, box, landmarks)`` of every face in dlib-faces' two XML files: box ``(4,) float32``
    (left, top, right, bottom) edges, landmarks ``(68, 2) float32`` in dlib's integer pixel
    coordinates (pixel centres, not the corner frame)."""
    for xml in ("training_with_face_landmarks.xml", "testing_with_face_landmarks.xml"):
        for image in ET.parse(folder / xml).getroot().iter("image"):
            for box in image.iter("box"):
                left, top = int(box.get("left")), int(box.get("top"))
                edges = np.array([left, top, left + int(box.get("width")), top + int(box.get("height"))], np.float32)
                parts = sorted(box.iter("part"), key=lambda p: int(p.get("name")))
                points = np.array([[float(p.get("x")), float(p.get("y"))] for p in parts], np.float32)
                yield image.get("file"), edges, points


def extract_fer2013(destination: Path, per_class: int) -> Path:
    """Extract the first ``per_class`` images of every (split, class) folder of the FER-2013 image
    archive, keeping its ``<split>/<class>/<file>.jpg`` layout. Returns the dataset root."""
    taken: Counter[tuple[str, str]] = Counter()
    with tarfile.open(require(FER2013_TGZ)) as archive:
        for member in archive:
            parts = Path(member.name).parts  # fer2013-images/<split>/<class>/<file>
            if not member.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])
            if taken[key] >= per_class:
                continue
            taken[key] += 1
            target = destination / parts[1] / parts[2] / parts[3]
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    return destination
