"""The evaluation protocol of a run: which samples it trains on, which choose its epoch, which it
reports.

Three disjoint sets of one store's usable samples:

- **train**: what the model is fitted on;
- **validation**: scored after every epoch; the epoch with the best validation accuracy is the
  selected one (``best.pt``). Without validation data the last epoch is selected, and the run
  says so;
- **test**: scored once, after the last epoch, at the selected epoch and at the last epoch. No
  epoch, threshold or option is ever chosen on it.

Where each comes from (:func:`resolve_protocol`):

============  ===============================================  ==============================
              without folds                                    ``--folds K --fold I``
============  ===============================================  ==============================
train         ``--train-split`` [``train``, or the only split]  the other subject folds
validation    ``--eval-split``, else ``val`` when it is not    subject fold ``I + 1 mod K``
              the test split, else ``--val-fraction``
test          ``--test-split`` [``test``, else ``val``]         subject fold ``I``
============  ===============================================  ==============================

``--val-fraction F`` holds out about F of the training samples for validation instead (with
folds: instead of the next fold), by subject where the store records subjects (no subject in
both), else sample by sample; the draw is seeded by the run's seed.

**Class balance** follows each dataset's protocol in the literature (:data:`DATASET_BALANCE`,
:func:`class_balance`), unless ``--balance`` names one: the plain cross-entropy for FER-2013,
FERPlus, RAF-DB and CK+, whose results are reported as overall accuracy on their own class
mixes; a class-weighted loss for AffectNet, whose validation set is balanced (500 faces a class)
while its training set is not (the field weights the loss or samples classes evenly; this
project weights). Datasets of other layouts (``folder``, ``sample``) train unweighted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_models.data.selection import Selection, SubjectFolds, read_subjects, select_samples
from fer_models.training.config import TrainConfig
from pipeline.errors import ConfigError

# The class balance of a dataset's protocol (``--balance`` unset), by the dataset a store was built
# from; any other dataset: "none".
DATASET_BALANCE = {"affectnet": "weights"}


def class_balance(config: TrainConfig, dataset: str) -> tuple[str, str]:
    """``(balance, why)``: ``--balance``, else the protocol's for ``dataset``, and a few words
    saying which, for the run's first lines."""
    if config.balance is not None:
        return config.balance, "--balance"
    balance = DATASET_BALANCE.get(dataset, "none")
    return balance, f"{dataset}'s protocol; --balance chooses"


@dataclass(frozen=True)
class Protocol:
    """The three sample sets of a run and what each is called in logs and summaries.

    ``validation`` and ``test`` are None where the run has none; the names are None with them.
    """

    train: Selection
    validation: Selection | None
    test: Selection | None
    train_name: str
    validation_name: str | None
    test_name: str | None

    @property
    def selected_by(self) -> str:
        """How the reported epoch is chosen, in words (recorded in ``summary.json``)."""
        if self.validation is None:
            return "last epoch (no validation data)"
        return f"best validation accuracy on {self.validation_name} ({len(self.validation)} samples)"


def resolve_protocol(config: TrainConfig, store: str | Path, splits: list[str]) -> Protocol:
    """The train, validation and test samples of ``config`` on ``store`` (see the module docstring).

    Args:
        config: the run's configuration (its split, fold, validation and label options).
        store: the store location.
        splits: the store's split names.

    Raises:
        ConfigError: a split named twice for two roles, folds too few to leave a training fold,
            both ``--eval-split`` and ``--val-fraction``, or a set left empty.
    """
    train_split = train_split_name(config, splits)
    if config.eval_split and config.val_fraction:
        raise ConfigError("give either --eval-split or --val-fraction, not both")
    if config.folds:
        return _fold_protocol(config, store, train_split)

    test_split = config.test_split
    if test_split is None:
        test_split = next((name for name in ("test", "val") if name in splits and name != train_split), None)
    if test_split == train_split:
        raise ConfigError(
            f"--test-split {test_split} is also the train split; report on samples the model has not seen"
        )
    validation_split = config.eval_split
    if validation_split in (train_split, test_split) and validation_split is not None:
        role = "train" if validation_split == train_split else "test"
        raise ConfigError(
            f"--eval-split {validation_split} is also the {role} split: the epoch would be chosen on "
            f"{'the training samples' if role == 'train' else 'the samples reported'}; name another split, "
            "or hold out part of the train split with --val-fraction F"
        )
    if (
        validation_split is None
        and not config.val_fraction
        and "val" in splits
        and "val" not in (train_split, test_split)
    ):
        validation_split = "val"

    train = select_samples(store, train_split, config.labels)
    test = select_samples(store, test_split, config.labels, scored=True) if test_split else None
    if validation_split:
        validation = select_samples(store, validation_split, config.labels, scored=True)
        return Protocol(train, validation, test, train_split, validation_split, test_split)
    if config.val_fraction:
        train, held, how = hold_out(store, train, config.val_fraction, config.seed)
        validation = select_samples(store, train_split, config.labels, scored=True).restricted_to(held.index)
        return Protocol(
            train, validation, test, f"{train_split} ({how} held out)", f"{train_split} held out", test_split
        )
    return Protocol(train, None, test, train_split, None, test_split)


def train_split_name(config: TrainConfig, splits: list[str]) -> str:
    """The split trained on (and, with folds, cut into folds): ``--train-split``, else ``train``
    (or the store's only split)."""
    return config.train_split or ("train" if "train" in splits or len(splits) > 1 else splits[0])


def _fold_protocol(config: TrainConfig, store: str | Path, train_split: str) -> Protocol:
    k, fold = config.folds, config.fold
    test = select_samples(store, train_split, config.labels, SubjectFolds.only(k, fold), scored=True)
    test_name = f"fold{fold}"
    if config.val_fraction:
        rest = select_samples(store, train_split, config.labels, SubjectFolds.all_but(k, fold))
        train, held, how = hold_out(store, rest, config.val_fraction, config.seed)
        scored = select_samples(store, train_split, config.labels, SubjectFolds.all_but(k, fold), scored=True)
        validation = scored.restricted_to(held.index)
        return Protocol(
            train,
            validation,
            test,
            f"{train_split} folds but {fold} ({how} held out)",
            f"folds but {fold}, held out",
            test_name,
        )
    if k < 3:
        raise ConfigError(
            f"--folds {k} leaves no fold to train on once fold {fold} is tested and the next one validates; "
            "use --folds 3 or more, or --val-fraction F to validate on part of the training fold"
        )
    validation_fold = (fold + 1) % k
    train = select_samples(store, train_split, config.labels, SubjectFolds.all_but(k, fold, validation_fold))
    validation = select_samples(store, train_split, config.labels, SubjectFolds.only(k, validation_fold), scored=True)
    return Protocol(
        train,
        validation,
        test,
        f"{train_split} folds but {fold} and {validation_fold}",
        f"fold{validation_fold}",
        test_name,
    )


def hold_out(store: str | Path, selection: Selection, fraction: float, seed: int) -> tuple[Selection, Selection, str]:
    """Split ``selection`` into ``(train, validation, how)``: about ``fraction`` of it validates.

    Where the store records subjects, whole subjects are drawn (in a seeded random order, until
    the validation set reaches the fraction), so no person is in both; otherwise samples are
    drawn. ``how`` says which, for logs (``"12 of 96 subjects"``).

    Args:
        fraction: in (0, 1) (checked by ``TrainConfig``).

    Raises:
        ConfigError: a side left empty.
    """
    rng = np.random.default_rng([seed, 0x5E1EC7])
    subjects = read_subjects(store, selection.index)
    if subjects is None:
        count = int(round(fraction * len(selection)))
        chosen = np.zeros(len(selection), dtype=bool)
        chosen[rng.permutation(len(selection))[:count]] = True
        how = f"{count} of {len(selection)} samples"
    else:
        names, inverse, sizes = np.unique(subjects, return_inverse=True, return_counts=True)
        order = rng.permutation(len(names))
        taken = order[: int(np.searchsorted(np.cumsum(sizes[order]), fraction * len(selection))) + 1]
        chosen = np.isin(inverse, taken)
        how = f"{len(taken)} of {len(names)} subjects"
    if chosen.all() or not chosen.any():
        raise ConfigError(f"--val-fraction {fraction} leaves no sample for training or validation ({how})")
    return selection.subset(~chosen), selection.subset(chosen), how
