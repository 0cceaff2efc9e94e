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

from fer_models.data import InMemoryDataset, SubjectFolds, load_split
from fer_models.metrics import accuracy, confusion_matrix, macro_f1
from fer_models.registry import create_model, get_model_entry
from pipeline.errors import ConfigError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.store import ATTRS_KEY, open_store


@dataclass(frozen=True)
class TrainConfig:
    store: str
    model: str = "cnn"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    labels: str | None = None  # a label set of the store; None for its default
    train_split: str | None = None  # default: "train" if the store has it, else its only split
    eval_split: str | None = None  # default: "val" if the store has it, else "test"
    folds: int = 0  # > 0: subject-independent folds of the train split, fold `fold` evaluated
    fold: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch size must be at least 1 and the learning rate positive")
        if self.folds and not 0 <= self.fold < self.folds:
            raise ConfigError(f"--fold must be between 0 and {self.folds - 1} with --folds {self.folds}")
        if self.folds and self.eval_split:
            raise ConfigError("--folds evaluates a fold of the train split; leave out --eval-split")


def resolve_splits(config: TrainConfig, splits: list[str]) -> tuple[str, str]:
    """The (train, eval) split names of a run, defaults filled in from the store's splits."""
    if config.train_split:
        train_split = config.train_split
    elif "train" in splits or len(splits) > 1:
        train_split = "train"
    else:
        train_split = splits[0]
    if config.folds:
        return train_split, train_split
    return train_split, config.eval_split or ("val" if "val" in splits else "test")


def evaluate(model, dataset: InMemoryDataset, batch_size: int, num_classes: int, device: str) -> dict:
    """Accuracy, macro-F1 and confusion matrix against the hard labels (the most voted class of a
    soft target)."""
    model.eval()
    predicted = []
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
            predicted.append(model({"image": batch["image"].to(device)})["logits"].argmax(1).cpu())
    confusion = confusion_matrix(dataset.hard_label.numpy(), torch.cat(predicted).numpy(), num_classes)
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
        guidance = [name for name in missing if name in GUIDANCE_TYPES]
        hint = f"; build the store with fer-preprocess --guidance {','.join(guidance)}" if guidance else ""
        raise ConfigError(f"model {config.model!r} needs store arrays {missing} that {config.store} lacks{hint}")
    train_split, eval_split = resolve_splits(config, list(provenance["splits"]))
    folds = [SubjectFolds(config.folds, config.fold, held_out) for held_out in (False, True)] if config.folds else [None, None]
    train_split_data = load_split(config.store, train_split, config.labels, folds[0])
    train_data = InMemoryDataset(train_split_data)
    eval_data = InMemoryDataset(load_split(config.store, eval_split, config.labels, folds[1]))
    if config.folds:
        eval_split = f"fold{config.fold}"
    class_names = train_split_data.class_names
    num_classes = len(class_names)

    torch.manual_seed(config.seed)
    channels, size = group["image"].shape[1], group["image"].shape[-1]
    model = create_model(config.model, in_channels=channels, num_classes=num_classes, image_size=size).to(config.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    counts = np.bincount(train_data.hard_label.numpy(), minlength=num_classes)
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
                total_loss += loss.item() * len(batch["label"])
                seen += len(batch["label"])
            scores = evaluate(model, eval_data, config.batch_size, num_classes, config.device)
            record = {"epoch": epoch, "train_loss": total_loss / seen, f"{eval_split}_accuracy": scores["accuracy"],
                      f"{eval_split}_macro_f1": scores["macro_f1"], "seconds": round(time.perf_counter() - began, 2)}  # fmt: skip
            log.write(json.dumps(record) + "\n")
            log.flush()
            echo(json.dumps(record))
    torch.save(
        {"model": model.state_dict(), "config": dataclasses.asdict(config), "store_config_sha256": provenance["config_sha256"],
         "store_manifest_sha256": provenance["manifest_sha256"], "class_names": list(class_names)},
        out / "last.pt",
    )  # fmt: skip
    summary = {"model": config.model, "labels": list(class_names), "epochs": config.epochs, "train_samples": len(train_data),
               "eval_split": eval_split, "eval_samples": len(eval_data), **record, "confusion": scores["confusion"]}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
