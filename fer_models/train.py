"""Training loop: a registered model on a store's train split, scored each epoch on a held-out split."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fer_models.data import InMemoryDataset, load_split
from fer_models.metrics import accuracy, confusion_matrix, macro_f1
from fer_models.registry import create_model, get_model_entry
from pipeline.errors import ConfigError
from pipeline.store import ATTRS_KEY, open_store


@dataclass(frozen=True)
class TrainConfig:
    store: str
    model: str = "cnn"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    train_split: str = "train"
    eval_split: str | None = None  # default: "val" if the store has it, else "test"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch size must be at least 1 and the learning rate positive")


def evaluate(model, dataset: InMemoryDataset, batch_size: int, num_classes: int, device: str) -> dict:
    model.eval()
    predicted = []
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
            predicted.append(model({"image": batch["image"].to(device)})["logits"].argmax(1).cpu())
    confusion = confusion_matrix(dataset.label.numpy(), torch.cat(predicted).numpy(), num_classes)
    return {"accuracy": accuracy(confusion), "macro_f1": macro_f1(confusion), "confusion": confusion.tolist()}


def train(config: TrainConfig, out_dir: str | Path, echo=print) -> dict:
    """Train ``config.model`` on the store; writes ``config.json``, ``log.jsonl`` (one line per
    epoch), ``last.pt`` (weights, config, store provenance hash) and ``summary.json`` to ``out_dir``.
    Returns the summary."""
    entry = get_model_entry(config.model)
    group = open_store(config.store)
    provenance = group.attrs[ATTRS_KEY]
    missing = [name for name in entry.requires if name not in group]
    if missing:
        raise ConfigError(f"model {config.model!r} needs store arrays {missing} that {config.store} lacks")
    eval_split = config.eval_split or ("val" if "val" in provenance["splits"] else "test")
    train_data = InMemoryDataset(load_split(config.store, config.train_split))
    eval_data = InMemoryDataset(load_split(config.store, eval_split))
    num_classes = len(provenance["label_names"])

    torch.manual_seed(config.seed)
    channels, size = group["image"].shape[1], group["image"].shape[-1]
    model = create_model(config.model, in_channels=channels, num_classes=num_classes, image_size=size).to(config.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    counts = np.bincount(train_data.label.numpy(), minlength=num_classes)
    class_weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / num_classes, dtype=torch.float32)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(train_data, batch_size=config.batch_size, shuffle=True, generator=generator)
    began = time.perf_counter()
    with open(out / "log.jsonl", "w") as log:
        for epoch in range(1, config.epochs + 1):
            model.train()
            total_loss, seen = 0.0, 0
            for batch in loader:
                batch = {k: v.to(config.device) for k, v in batch.items()}
                loss = F.cross_entropy(model(batch)["logits"], batch["label"], weight=class_weight.to(config.device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total_loss += float(loss) * len(batch["label"])
                seen += len(batch["label"])
            scores = evaluate(model, eval_data, config.batch_size, num_classes, config.device)
            record = {"epoch": epoch, "train_loss": total_loss / seen, f"{eval_split}_accuracy": scores["accuracy"],
                      f"{eval_split}_macro_f1": scores["macro_f1"], "seconds": round(time.perf_counter() - began, 2)}  # fmt: skip
            log.write(json.dumps(record) + "\n")
            log.flush()
            echo(json.dumps(record))
    torch.save(
        {"model": model.state_dict(), "config": dataclasses.asdict(config), "store_config_sha256": provenance["config_sha256"],
         "store_manifest_sha256": provenance["manifest_sha256"], "label_names": provenance["label_names"]},
        out / "last.pt",
    )  # fmt: skip
    summary = {"model": config.model, "epochs": config.epochs, "train_samples": len(train_data),
               "eval_split": eval_split, "eval_samples": len(eval_data), **record, "confusion": scores["confusion"]}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
