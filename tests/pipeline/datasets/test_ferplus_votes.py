"""FERPlus targets as Barsoum et al.'s code makes them: every row of the shared
``fer2013new.csv`` against a line-by-line transcription of ``FERPlusReader._process_data`` and
the filter of ``load_folders`` (microsoft/FERPlus, src/ferplus.py)."""

import csv
import sys

import numpy as np
import pytest

from pipeline.datasets.ferplus import LABEL_SETS
from pipeline.datasets.ferplus_votes import majority_labels, vote_distributions
from tests.support.shared_data import SHARED_DATA, require


def official_target(emotion_raw: list[float], mode: str) -> list[float] | None:
    """Transcription of ``_process_data(emotion_raw, mode)`` (Python floats, as ``load_folders``
    reads them) followed by ``load_folders``'s filter: the 8-class target, or None where the face
    is not kept."""
    size = len(emotion_raw)
    emotion_unknown = [0.0] * size
    emotion_unknown[-2] = 1.0
    emotion_raw = list(emotion_raw)
    for i in range(size):
        if emotion_raw[i] < 1.0 + sys.float_info.epsilon:
            emotion_raw[i] = 0.0
    sum_list = sum(emotion_raw)
    emotion = [0.0] * size
    if mode == "majority":
        maxval = max(emotion_raw)
        if maxval > 0.5 * sum_list:
            emotion[int(np.argmax(emotion_raw))] = maxval
        else:
            emotion = emotion_unknown
    else:
        sum_part, count, valid_emotion = 0.0, 0, True
        while sum_part < 0.75 * sum_list and count < 3 and valid_emotion:
            maxval = max(emotion_raw)
            for i in range(size):
                if emotion_raw[i] == maxval:
                    emotion[i] = maxval
                    emotion_raw[i] = 0
                    sum_part += emotion[i]
                    count += 1
                    if i >= 8:
                        valid_emotion = False
                        if sum(emotion) > maxval:
                            emotion[i] = 0
                            count -= 1
                        break
        if sum(emotion) <= 0.5 * sum_list or count > 3:
            emotion = emotion_unknown
    emotion = [float(i) / sum(emotion) for i in emotion]
    if int(np.argmax(emotion)) >= 8:  # load_folders: unknown or not a face
        return None
    emotion = emotion[:-2]
    return [float(i) / sum(emotion) for i in emotion]


@pytest.fixture(scope="module")
def ferplus_rows():
    """``(usage (N,), votes (N, 10))`` of the rows of fer2013new.csv with an image name (the
    images FERPlus keeps)."""
    with open(require(SHARED_DATA / "fer2013" / "fer2013new.csv"), newline="") as file:
        rows = [row for row in list(csv.reader(file))[1:] if row[1].strip()]
    return np.array([row[0] for row in rows]), np.array([[float(v) for v in row[2:]] for row in rows], np.float32)


def test_majority_labels_are_the_official_ones(ferplus_rows):
    usage, votes = ferplus_rows
    ours = majority_labels(votes)
    official = [official_target([float(v) for v in row], "majority") for row in votes]
    expected = np.array([-1 if t is None else int(np.argmax(t)) for t in official])
    assert np.array_equal(ours, expected)
    kept = {split: int((ours[usage == split] >= 0).sum()) for split in ("Training", "PublicTest", "PrivateTest")}
    assert kept == {"Training": 25060, "PublicTest": 3199, "PrivateTest": 3153}, kept
    # the majority without outlier removal, as stores built before had it, lost 13% of the test faces
    plain = (votes.max(1) * 2 > votes.sum(1)) & (votes.argmax(1) < 8)
    assert int(plain[usage == "PrivateTest"].sum()) == 2729


def test_crossentropy_and_probability_targets_are_the_official_distribution(ferplus_rows):
    _, votes = ferplus_rows
    targets, keep = vote_distributions(votes)
    for row, target, kept in zip(votes, targets, keep):
        official = official_target([float(v) for v in row], "crossentropy")
        assert kept == (official is not None)
        if official is not None:
            np.testing.assert_allclose(target, official, rtol=1e-6)
    soft = {s.name: s for s in LABEL_SETS if s.kind == "votes"}
    assert set(soft) == {"crossentropy", "probability"} and soft["probability"].draw
    assert all(s.evaluated_with == "8" for s in soft.values())  # scored by majority
