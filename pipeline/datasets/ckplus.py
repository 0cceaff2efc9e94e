"""``ckplus``: the extended Cohn-Kanade dataset (Lucey et al. 2010) in its widely used
extracted-frames layout, pre-cropped faces (for example 48x48 grayscale).

Layout::

    <root>/<class>/S<subject>_<sequence>_<frame>.png

with the class folders anger, contempt, disgust, fear, happy, sadness, surprise. One split,
``all``: a subject appears in several sequences, so evaluation splits by subject at training time
(k folds, no subject in two folds); the store keeps each sample's subject (``S005``) in
``subject``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets.label_sets import LabelSet
from pipeline.datasets.manifest import Manifest
from pipeline.datasets.paths import FilesUnderRoot, require_directory
from pipeline.errors import DatasetError

LABEL_NAMES = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
LABEL_SETS = (
    LabelSet.identity("7", LABEL_NAMES),
    LabelSet.from_labels("6", LABEL_NAMES, {name: (name,) for name in LABEL_NAMES if name != "contempt"}),
)
# CK+48 is distributed as 48x48 face crops, kept as they are.
CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "detect": {"prior": "full-frame"},
    "align": {"mode": "crop", "size": 48, "color": "gray"},
}
_FILE_NAME = re.compile(r"^(S\d+)_(\d+)_(\d+)\.(?i:png|jpg|jpeg)$")


class CkPlusDataset(FilesUnderRoot):
    name = "ckplus"
    config_defaults = CONFIG_DEFAULTS

    def scan(self, root: Path | None) -> Manifest:
        root = require_directory(root, self.name)
        folders = sorted(p for p in root.iterdir() if not p.name.startswith("."))
        unknown = [p.name for p in folders if p.name not in LABEL_NAMES or not p.is_dir()]
        if unknown:
            raise DatasetError(
                f"unexpected entries in {root}: {', '.join(unknown)}; the CK+ root holds only the class "
                f"folders {', '.join(LABEL_NAMES)}"
            )
        if not folders:
            raise DatasetError(f"{root} holds none of the CK+ class folders {', '.join(LABEL_NAMES)}")
        sources, labels, subjects, skip = [], [], [], []
        for folder in folders:
            for file in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
                relative = file.relative_to(root).as_posix()
                match = _FILE_NAME.match(file.name)
                sources.append(relative)
                labels.append(LABEL_NAMES.index(folder.name))
                subjects.append(match.group(1) if match else "")
                # A file named otherwise has no subject, so no fold could hold it: recorded, not read.
                skip.append(
                    ""
                    if match
                    else f"{relative}: expected a file named S<subject>_<sequence>_<frame>.png "
                    "(the subject decides its fold)"
                )
        if not sources:
            raise DatasetError(f"no images in the CK+ class folders under {root}")
        return Manifest(
            dataset=self.name,
            label_names=LABEL_NAMES,
            splits=("all",),
            source=tuple(sources),
            label=np.array(labels),
            split=np.zeros(len(sources)),
            subject=tuple(subjects),
            skip=tuple(skip) if any(skip) else None,
            label_sets=LABEL_SETS,
        )
