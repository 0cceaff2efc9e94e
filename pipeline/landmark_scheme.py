"""The 0-based iBUG 68-point landmark scheme: index ranges and the horizontal-flip permutation.

Jaw 0-16, right brow 17-21, left brow 22-26, nose bridge 27-30, lower nose 31-35, right eye
36-41, left eye 42-47, outer lips 48-59, inner lips 60-67; "right" is the subject's right, on the
image's left. Pure data (numpy only): the store contract and training use it without dlib.
"""

from __future__ import annotations

import numpy as np

N_LANDMARKS = 68

# Index ranges of the iBUG 68-point scheme, [start, stop).
JAW = range(0, 17)
RIGHT_BROW = range(17, 22)
LEFT_BROW = range(22, 27)
NOSE_BRIDGE = range(27, 31)
LOWER_NOSE = range(31, 36)
RIGHT_EYE = range(36, 42)
LEFT_EYE = range(42, 48)
OUTER_LIPS = range(48, 60)
INNER_LIPS = range(60, 68)
# Single points: the tip of the nose (the last of the bridge) and the mouth corners (right, left).
NOSE_TIP = 30
MOUTH_CORNERS = (48, 54)


def _flip_permutation() -> np.ndarray:
    """Index map of a horizontal flip: the flipped face's landmark i is the original's
    ``FLIP_PERMUTATION[i]`` (mirror-image points swap: jaw 0 <-> 16, right brow 17 <-> left brow
    26, eye corners 36 <-> 45, mouth corners 48 <-> 54, ...; points on the midline stay)."""
    pairs = [(i, 16 - i) for i in range(17)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(27 + i, 27 + i) for i in range(4)]  # nose bridge, on the midline
    pairs += [(31 + i, 35 - i) for i in range(5)]  # lower nose
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48 + i, 54 - i) for i in range(7)]  # upper outer lip, corner to corner
    pairs += [(55 + i, 59 - i) for i in range(5)]  # lower outer lip
    pairs += [(60 + i, 64 - i) for i in range(5)]  # upper inner lip
    pairs += [(65, 67), (66, 66)]  # lower inner lip
    permutation = np.arange(N_LANDMARKS)
    for a, b in pairs:
        permutation[a], permutation[b] = b, a
    return permutation


FLIP_PERMUTATION = _flip_permutation()

# The face's outline as polylines of landmark indices (for drawing): jaw, brows, nose bridge and
# lower nose open; eyes and lips closed loops.
SKELETON_EDGES: tuple[tuple[int, ...], ...] = (
    *(tuple(part) for part in (JAW, RIGHT_BROW, LEFT_BROW, NOSE_BRIDGE, LOWER_NOSE)),
    *((*part, part[0]) for part in (RIGHT_EYE, LEFT_EYE, OUTER_LIPS, INNER_LIPS)),
)
