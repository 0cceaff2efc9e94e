"""Human-readable description of a store: what ``fer-store info`` prints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.store import ATTRS_KEY, Status, bytes_on_disk, open_store


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def describe_store(path: str | Path) -> str:
    """Dataset, counts per status / split / label, arrays (shape, dtype, chunks, bytes) and
    provenance of the store at ``path``, as text."""
    group = open_store(path)
    prov = group.attrs[ATTRS_KEY]
    status = group["status"][:]
    split = group["split"][:]
    label = group["label"][:]
    n = status.size
    lines = [
        f"store     {path}",
        f"dataset   {prov['dataset']}   samples {n}   complete {prov['complete']}   "
        f"schema v{prov['schema_version']}   created {prov['created']}",
        "",
        "status",
    ]
    lines += _table([[code.label, str(int((status == code).sum()))] for code in Status])
    lines += ["", "split (all / usable)"]
    usable = np.isin(status, [int(Status.OK), int(Status.OK_PRIOR)])
    lines += _table(
        [[name, str(int((split == i).sum())), str(int(((split == i) & usable).sum()))]
         for i, name in enumerate(prov["splits"])]
    )
    lines += ["", "label (all / usable)"]
    names = list(prov["label_names"]) + ["(unknown)"]
    codes = list(range(len(prov["label_names"]))) + [-1]
    lines += _table(
        [[name, str(int((label == c).sum())), str(int(((label == c) & usable).sum()))]
         for name, c in zip(names, codes) if (label == c).any() or c >= 0]
    )
    lines += ["", "label sets (fer-train --labels NAME; the first is the default)"]
    lines += _table(
        [[name, definition["kind"], ", ".join(definition["names"])]
         for name, definition in prov["label_sets"].items()]
    )
    lines += ["", "arrays"]
    rows = [["name", "shape", "dtype", "chunk", "shard", "dims", "on disk", "per sample"]]
    for name, array in sorted(group.arrays()):
        on_disk = bytes_on_disk(Path(path) / name)
        rows.append([
            name, str(tuple(array.shape)), str(array.dtype), str(tuple(array.chunks)),
            str(tuple(array.shards)) if array.shards else "-",
            ",".join(array.metadata.dimension_names or ()),
            f"{on_disk / 1e6:.2f} MB", f"{on_disk / max(n, 1):.0f} B",
        ])  # fmt: skip
    lines += _table(rows)
    lines += ["", "provenance"]
    lines += [f"  config_sha256    {prov['config_sha256']}", f"  manifest_sha256  {prov['manifest_sha256']}"]
    for role, model in prov["models"].items():
        lines.append(f"  model {role:<10} {model['file']} sha256 {model['sha256'][:16]}...")
    lines.append("  versions         " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()))
    lines.append("  config           " + json.dumps(prov["config"], sort_keys=True))
    for added in prov.get("guidance_added", []):
        models = "".join(f", {m['file']} sha256 {m['sha256'][:16]}..." for m in added["models"].values())
        lines.append(f"  added            {', '.join(added['types'])} ({added['finished']}{models})")
    if "growing" in prov:
        lines.append(
            f"  ADDING           {', '.join(prov['growing']['types'])} (unfinished, not offered to training; "
            "run fer-preprocess STORE --guidance with them again to finish)"
        )
    return "\n".join(lines)
