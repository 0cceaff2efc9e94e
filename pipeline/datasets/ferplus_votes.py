"""FERPlus targets from the ten annotators' votes, as Barsoum et al.'s code makes them.

``microsoft/FERPlus``, ``src/ferplus.py``, ``FERPlusReader._process_data`` and ``load_folders``
(Barsoum et al. 2016, "Training deep networks for facial expression recognition with
crowd-sourced label distribution", arXiv 1608.01041):

- **Outlier removal**: a class that got a single vote (at most one) gets none, in every scheme.
- **Majority**: the class holding more than half of the votes left (``unknown`` and ``NF``, not a
  face, count in the total); no such class, or ``unknown`` / ``NF`` holding it: the face is
  neither trained on nor scored.
- **Probability and cross-entropy** share one distribution: the classes with the most votes are
  taken in turn (every class tied at the maximum at once) until they hold 75% of the votes or
  three are taken; met among them, ``unknown`` or ``NF`` ends the taking (and is dropped if a
  class came before it); a face whose taken classes hold at most half of the votes, or more than
  three of them, is dropped, as is one whose most voted taken class is ``unknown`` or ``NF``. The
  eight emotions' shares of the taken votes are the target. ``crossentropy`` trains on it as a
  soft target; ``probability`` draws a one-hot label from it each time the face is trained on.
- Validation and test are always scored by majority.

Votes are ``(N, 10) float32`` counts in the order of ``fer2013new.csv``: the eight emotions,
``unknown``, ``NF``.
"""

from __future__ import annotations

import numpy as np

EMOTIONS = 8  # the classes before unknown and NF
COVERED = 0.75  # the share of votes the taken classes should reach
MOST_TAKEN = 3


def without_single_votes(votes: np.ndarray) -> np.ndarray:
    """``votes`` with every count of at most one set to zero (the outlier removal)."""
    votes = np.asarray(votes, dtype=np.float32)
    return np.where(votes <= 1, 0, votes).astype(np.float32)


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """``(N,) int16``: the emotion holding more than half of each row's votes after outlier
    removal, -1 where none does (or ``unknown`` / ``NF`` does)."""
    kept = without_single_votes(votes)
    top = kept.argmax(axis=1)
    has_majority = kept.max(axis=1) > 0.5 * kept.sum(axis=1)
    return np.where(has_majority & (top < EMOTIONS), top, -1).astype(np.int16)


def vote_distributions(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The probability and cross-entropy targets: ``(N, 8) float32`` rows summing to 1 (zeros
    where dropped) and ``(N,) bool``, the faces kept."""
    kept = without_single_votes(votes)
    targets = np.zeros((len(kept), EMOTIONS), np.float32)
    keep = np.zeros(len(kept), bool)
    for row, counts in enumerate(kept):
        taken = _taken_votes(counts)
        if taken is not None:
            targets[row] = taken[:EMOTIONS] / taken[:EMOTIONS].sum()
            keep[row] = True
    return targets, keep


def _taken_votes(counts: np.ndarray) -> np.ndarray | None:
    """The votes of the classes taken from one row (10,), or None where the face is dropped."""
    total, left = float(counts.sum()), counts.copy()
    taken = np.zeros_like(counts)
    count, reached_non_emotion = 0, False
    while taken.sum() < COVERED * total and count < MOST_TAKEN and not reached_non_emotion:
        peak = left.max()
        for i in np.flatnonzero(left == peak):  # every class tied at the peak, in column order
            taken[i], left[i] = peak, 0
            count += 1
            if i >= EMOTIONS:  # unknown or NF: stop taking, and drop it if a class came before
                reached_non_emotion = True
                if taken.sum() > peak:
                    taken[i] = 0
                    count -= 1
                break
    if taken.sum() <= 0.5 * total or count > MOST_TAKEN or taken.argmax() >= EMOTIONS:
        return None
    return taken
