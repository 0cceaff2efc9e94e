"""Where a dataset's face crops put the face, measured on a store that keeps them.

A dataset distributed as face crops (FER-2013, CK+48, RAF-DB aligned; ``--align crop``) frames
each face its own way. On the crops where dlib's detector found the face, a store holds the 68
landmarks in crop pixels; their median position over those faces, as shares of the crop's side,
is the dataset's framing (:attr:`CropFraming.template`). The landmarks, not the detector's box,
because the box's share of a face depends on the scale it is found at: on 48-pixel crops the
detector's smallest window makes it 92% of the crop, on a photo's larger faces about 80%.
:meth:`CropFraming.crop_box` fits the template to a face's landmarks in a photo by scale and
shift (no rotation: a dataset's crops are not rotated upright), so the face can be cut out as the
dataset would have cut it (``fer-predict --crop-faces``). Coordinates are pixels with the origin
at the top-left corner of the top-left pixel; boxes are ``(left, top, right, bottom)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

# Fewer detected faces than this say too little of a dataset's framing to crop photos by it.
MIN_FRAMING_FACES = 20


@dataclass(frozen=True)
class CropFraming:
    """A dataset's framing of its square face crops.

    template: the median of each of the 68 landmarks over ``faces`` crops, as shares of the crop's
    side, ``(x0, y0, x1, y1, ...)``. source_size: the crops' side in pixels (their median).
    """

    template: tuple[float, ...]
    source_size: int
    faces: int

    @classmethod
    def fit(cls, landmarks: np.ndarray, sizes: np.ndarray) -> CropFraming | None:
        """The framing of crops of ``(N,)`` sides whose ``(N, 68, 2)`` landmarks (crop pixels) dlib
        placed in the detector's box; None for fewer than :data:`MIN_FRAMING_FACES` faces."""
        if len(landmarks) < MIN_FRAMING_FACES:
            return None
        template = np.median(landmarks / sizes[:, None, None], axis=0)
        return cls(tuple(round(float(v), 4) for v in template.ravel()), int(np.median(sizes)), len(landmarks))

    def crop_box(self, landmarks: np.ndarray) -> np.ndarray:
        """The ``(4,) float32`` square crop (the photo's pixels) that puts a face's ``(68, 2)``
        landmarks where the dataset's crops put theirs: the least-squares scale and shift of the
        template onto them."""
        template = np.asarray(self.template, dtype=np.float64).reshape(-1, 2)
        points = np.asarray(landmarks, dtype=np.float64)
        spread = template - template.mean(axis=0)
        side = float((spread * (points - points.mean(axis=0))).sum() / (spread**2).sum())
        left, top = points.mean(axis=0) - side * template.mean(axis=0)
        return np.array([left, top, left + side, top + side], dtype=np.float32)

    def cut(self, pixels: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The crop of ``pixels`` (``(H, W)`` or ``(H, W, 3) uint8``) framing the face of
        ``landmarks`` as :meth:`crop_box` says, resized to the dataset's crop side (area averaging
        a larger face first; edges beyond the photo repeat its border): ``(side, side[, 3]) uint8``."""
        import cv2  # here: training reads framings, and never loads OpenCV (docs/architecture.md)

        left, top, right, _ = (float(v) for v in self.crop_box(landmarks))
        side = self.source_size
        scale = side / (right - left)
        factor = max(1, int(1 / scale))
        if factor > 1:
            height, width = (extent // factor * factor for extent in pixels.shape[:2])
            pixels = cv2.resize(
                pixels[:height, :width], (width // factor, height // factor), interpolation=cv2.INTER_AREA
            )
        # OpenCV's pixel centres are at integers: a corner-frame x is the centre-frame x + 0.5.
        to_crop = np.array(
            [
                [scale * factor, 0, (0.5 * factor - left) * scale - 0.5],
                [0, scale * factor, (0.5 * factor - top) * scale - 0.5],
            ]
        )
        cut: np.ndarray = cv2.warpAffine(
            pixels, to_crop, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return cut

    def summary(self) -> str:
        """One line for people."""
        template = np.asarray(self.template).reshape(-1, 2)
        eyes = np.linalg.norm(template[36:42].mean(axis=0) - template[42:48].mean(axis=0))
        return (
            f"eyes {100 * eyes:.0f}% of the crop's side apart, the landmarks' centre at "
            f"({100 * template[:, 0].mean():.0f}%, {100 * template[:, 1].mean():.0f}%), crops of {self.source_size} px "
            f"(measured on {self.faces:,} faces)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "template": list(self.template)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropFraming:
        return cls(tuple(float(v) for v in data["template"]), int(data["source_size"]), int(data["faces"]))
