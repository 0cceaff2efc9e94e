"""``folder``: images in class sub-folders, optionally under split folders.

Layouts accepted (the first level decides):

    <root>/<class>/<image>                 -> one split, ``all``
    <root>/<split>/<class>/<image>         -> splits from the folder names

A first level whose folders hold only folders is read as splits. Class names are the union over
splits, sorted; splits come in the order train, val/validation, test, then the rest sorted.
Every non-hidden file in a class folder is a sample (a non-image becomes status ``unreadable``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets.manifest import Manifest
from pipeline.datasets.paths import FilesUnderRoot, require_directory
from pipeline.errors import DatasetError
from pipeline.file_names import shown

_SPLIT_ORDER = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


def _visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


class FolderDataset(FilesUnderRoot):
    name = "folder"
    config_defaults: dict[str, dict[str, Any]] = {}

    def scan(self, root: Path | None) -> Manifest:
        root = require_directory(root, "folder")
        top = [p for p in _visible_children(root) if p.is_dir()]
        if not top:
            raise DatasetError(
                f"{root} holds no class folders; expected <root>/<class>/<image> or <root>/<split>/<class>/<image>"
            )
        has_splits = all(
            any(child.is_dir() for child in _visible_children(folder))
            and not any(child.is_file() for child in _visible_children(folder))
            for folder in top
        )
        split_dirs = sorted(top, key=lambda p: (_SPLIT_ORDER.get(p.name.lower(), 9), p.name)) if has_splits else [root]
        splits = tuple(p.name for p in split_dirs) if has_splits else ("all",)
        class_names = sorted({c.name for d in split_dirs for c in _visible_children(d) if c.is_dir()})
        sources, labels, split_ids = [], [], []
        for split_id, split_dir in enumerate(split_dirs):
            for class_dir in _visible_children(split_dir):
                if not class_dir.is_dir():
                    continue
                label = class_names.index(class_dir.name)
                for file in _visible_children(class_dir):
                    if file.is_dir():
                        continue
                    sources.append(file.relative_to(root).as_posix())
                    labels.append(label)
                    split_ids.append(split_id)
        if not sources:
            raise DatasetError(f"no files found in the class folders under {root}")
        return Manifest(
            dataset=self.name,
            label_names=tuple(shown(name) for name in class_names),
            splits=tuple(shown(name) for name in splits),
            source=tuple(sources),
            label=np.array(labels),
            split=np.array(split_ids),
        )
