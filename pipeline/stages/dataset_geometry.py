"""Whether a dataset's own face box or landmarks can describe a face in its image.

A list file may give landmarks that lie off the photo (a row meant for another file, or points
in another frame) or a box of 1e30 pixels. Aligned from such points the face comes out black, and
a box that large is clipped to the whole photo without a word; either would be stored as a usable
face and trained on. These checks say what is wrong, so the sample is recorded as failed with
that message instead.

Boxes are ``(4,) float32`` (left, top, right, bottom) edges and landmarks ``(68, 2) float32``
(x, y) points, both in the pixels of the image they are checked against, origin at the top-left
pixel's corner.
"""

from __future__ import annotations

import numpy as np

# A dataset box may reach past the photo's edges, but no side may exceed this many times the
# photo's larger side.
MAX_BOX_TO_IMAGE = 2.0
# At least this share of the dataset's landmarks must lie on the photo.
MIN_LANDMARKS_INSIDE = 0.5


def dataset_box_problem(box: np.ndarray, height: int, width: int) -> str | None:
    """What makes ``box`` unusable as a face in an image of ``height`` x ``width`` pixels (None
    where nothing does): empty, or far larger than the image."""
    left, top, right, bottom = (float(v) for v in box)
    box_width, box_height = right - left, bottom - top
    if not (box_width > 0 and box_height > 0):
        return f"the dataset's box ({left:g}, {top:g}, {right:g}, {bottom:g}) is empty"
    if max(box_width, box_height) > MAX_BOX_TO_IMAGE * max(height, width):
        return (
            f"the dataset's box is {box_width:.4g} x {box_height:.4g} pixels, over {MAX_BOX_TO_IMAGE:g} times "
            f"the {width} x {height} image"
        )
    return None


def dataset_landmarks_problem(points: np.ndarray, height: int, width: int) -> str | None:
    """What makes ``points`` unusable as a face's landmarks in an image of ``height`` x ``width``
    pixels (None where nothing does): most of them off the image, or all in one spot, or spread
    far wider than the image."""
    x, y = points[:, 0], points[:, 1]
    inside = int(((x >= 0) & (x <= width) & (y >= 0) & (y <= height)).sum())
    if inside < MIN_LANDMARKS_INSIDE * len(points):
        return f"the dataset's landmarks lie outside the {width} x {height} image ({inside} of {len(points)} on it)"
    spread = float(max(np.ptp(x), np.ptp(y)))
    if spread < 1:
        return "the dataset's landmarks all lie within one pixel"
    if spread > MAX_BOX_TO_IMAGE * max(height, width):
        return f"the dataset's landmarks spread over {spread:.4g} pixels, over {MAX_BOX_TO_IMAGE:g} times the image"
    return None
