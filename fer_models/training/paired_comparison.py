"""A model against its twin over several seeds, with the paired difference and its interval.

The two sides (a and b) are two training configs that differ in what is compared: the model (a
guided model and its unguided twin), the store (one model on two builds of the same dataset, e.g.
its own crops against re-aligned faces: the stores must hold the same samples, the same manifest
hash) or a setting such as the class balance. Each seed trains both models with the same data order and augmentation draws (both are seeded
from the seed and the epoch), on the same protocol; ``OUT/<a or b>/seed<S>/`` is an ordinary run
directory, a finished one is read back and an interrupted one resumed, so the command can be run
again after a kill. Both models are scored on the same test samples, which makes the comparison
paired: the 95% interval of the difference comes from a bootstrap that resamples the seeds and,
within each, the test samples (the same samples for both models). ``comparison.json``,
``comparison.md`` and ``comparison.png`` hold the per-seed figures, the mean difference and its
interval.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from fer_models.training.config import TrainConfig
from fer_models.training.cross_validation import finished_run
from fer_models.training.metrics import accuracy, confusion_matrix, macro_f1
from fer_models.training.run_directory import strict_json, train
from fer_models.training.run_summary import RunSummary
from pipeline.errors import ConfigError
from pipeline.progress import QUIET, Progress
from pipeline.run_predictions import Predictions
from pipeline.store import read_provenance

REPLICATES = 2000
METRICS = ("accuracy", "macro_f1")


class Figures(TypedDict):
    """Test accuracy and macro-F1 (fractions), or their differences a - b."""

    accuracy: float
    macro_f1: float


class Intervals(TypedDict):
    """The 95% interval ``[low, high]`` of each mean difference a - b (fractions)."""

    accuracy: list[float]
    macro_f1: list[float]


class SeedRow(TypedDict):
    seed: int
    a: Figures
    b: Figures
    difference: Figures


class Side(TypedDict):
    """One side: its model and options, the settings where it differs from the other side
    (``store``, ``balance``, ...), and ``name``, all that in short."""

    model: str
    options: dict[str, Any]
    settings: dict[str, Any]
    name: str


class Means(TypedDict):
    a: Figures
    b: Figures


class Comparison(TypedDict):
    """A model against its twin over seeds (``comparison.json``; ``comparison.md`` shows it)."""

    a: Side
    b: Side
    store: str  # a's store (and b's, unless b's settings name another)
    labels: str | None
    seeds: list[SeedRow]
    mean: Means
    mean_difference: Figures
    interval_95: Intervals
    replicates: int


def compare_models(
    a: TrainConfig, b: TrainConfig, seeds: list[int], out_dir: str | Path, *, progress: Progress = QUIET
) -> Comparison:
    """Train ``a`` and ``b`` for each of ``seeds`` into ``out_dir/{a,b}/seed<S>`` and write the
    comparison (see the module docstring).

    Returns:
        The comparison: per seed each model's test accuracy and macro-F1 and the difference a - b;
        their means; the 95% paired-bootstrap interval of each mean difference.

    Raises:
        ConfigError: fewer than two seeds, two identical sides, other label sets, stores of other
            samples, or runs scored on different test samples.
    """
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError("a comparison needs at least two different seeds")
    if a == b:
        raise ConfigError("the two sides are the same config: give a twin model, --twin-store or a twin setting")
    if a.labels != b.labels:
        raise ConfigError(f"the two sides must use the same label set, got {a.labels!r} and {b.labels!r}")
    if a.store != b.store:
        manifests = [read_provenance(store).manifest_sha256 for store in (a.store, b.store)]
        if manifests[0] != manifests[1]:
            raise ConfigError(
                f"{a.store} and {b.store} hold other samples (manifest hashes {manifests[0][:12]} and "
                f"{manifests[1][:12]}): compare two builds of the same dataset"
            )
    out = Path(out_dir)
    run_dirs: dict[str, list[Path]] = {"a": [], "b": []}
    for seed in seeds:
        for side, config in (("a", a), ("b", b)):
            seeded = dataclasses.replace(config, seed=seed)
            run_dir = out / side / f"seed{seed}"
            if finished_run(run_dir, seeded) is None:
                progress.line(f"{config.model} seed {seed} -> {run_dir}")
                train(seeded, run_dir, resume=(run_dir / "last.pt").exists(), progress=progress)
            run_dirs[side].append(run_dir)
    table = comparison_table(a, b, seeds, run_dirs["a"], run_dirs["b"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(strict_json(table, indent=2))
    (out / "comparison.md").write_text(comparison_markdown(table))
    import cv2  # for the figure alone: training loads OpenCV only to draw (docs/architecture.md)

    cv2.imwrite(str(out / "comparison.png"), cv2.cvtColor(render_comparison(table), cv2.COLOR_RGB2BGR))
    return table


def comparison_table(
    a: TrainConfig, b: TrainConfig, seeds: list[int], a_runs: list[Path], b_runs: list[Path]
) -> Comparison:
    """The comparison of finished runs: ``a_runs[i]`` and ``b_runs[i]`` are the run directories
    (``summary.json``, ``test_predictions.csv``) of seed ``seeds[i]``'s pair.

    Raises:
        ConfigError: a run without test samples, or a pair scored on different test samples.
    """
    a_predictions: list[Predictions] = []
    b_predictions: list[Predictions] = []
    rows: list[SeedRow] = []
    labels: list[str] = []
    for seed, a_run, b_run in zip(seeds, a_runs, b_runs, strict=True):
        (a_figures, a_scored, labels), (b_figures, b_scored, _) = _scored_run(a_run), _scored_run(b_run)
        if not np.array_equal(np.sort(a_scored.index), np.sort(b_scored.index)):
            raise ConfigError(f"seed {seed}: the two runs scored different test samples")
        a_predictions.append(a_scored)
        b_predictions.append(b_scored)
        rows.append({"seed": seed, "a": a_figures, "b": b_figures, "difference": _difference(a_figures, b_figures)})
    means: Means = {"a": _mean([row["a"] for row in rows]), "b": _mean([row["b"] for row in rows])}
    return {
        "a": _side(a, b),
        "b": _side(b, a),
        "store": a.store,
        "labels": a.labels,
        "seeds": rows,
        "mean": means,
        "mean_difference": _mean([row["difference"] for row in rows]),
        "interval_95": paired_bootstrap(a_predictions, b_predictions, len(labels)),
        "replicates": REPLICATES,
    }


def _scored_run(run_dir: Path) -> tuple[Figures, Predictions, list[str]]:
    """A finished run's test figures, test predictions and class names."""
    summary = RunSummary.from_dict(json.loads((run_dir / "summary.json").read_text()), str(run_dir))
    if summary.test is None:
        raise ConfigError(f"{run_dir}: the run has no test samples to compare on")
    figures: Figures = {"accuracy": summary.test.accuracy, "macro_f1": summary.test.macro_f1}
    return figures, Predictions.read_csv(run_dir / "test_predictions.csv"), summary.labels


def _difference(a: Figures, b: Figures) -> Figures:
    return {"accuracy": a["accuracy"] - b["accuracy"], "macro_f1": a["macro_f1"] - b["macro_f1"]}


def _mean(figures: list[Figures]) -> Figures:
    return {
        "accuracy": float(np.mean([f["accuracy"] for f in figures])),
        "macro_f1": float(np.mean([f["macro_f1"] for f in figures])),
    }


def _side(config: TrainConfig, other: TrainConfig) -> Side:
    """One side of the comparison: its model and options, and where it differs from the other
    side in anything else (``store``, ``balance``, ...), those settings; ``name`` says it in short."""
    differing = {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(TrainConfig)
        if field.name not in ("model", "options") and getattr(config, field.name) != getattr(other, field.name)
    }
    name = config.model + "".join(f" {key}={value}" for key, value in config.options.items())
    name += "".join(f" {key}={Path(value).name if key == 'store' else value}" for key, value in differing.items())
    return {"model": config.model, "options": config.options, "settings": differing, "name": name}


def paired_bootstrap(
    a: list[Predictions], b: list[Predictions], num_classes: int, replicates: int = REPLICATES, seed: int = 0
) -> Intervals:
    """The 95% interval (2.5th and 97.5th percentiles) of the mean over seeds of each metric's
    difference a - b, over ``replicates`` resamplings of the seeds and, within each drawn seed,
    of its test samples (the same draw for both models). ``a[i]`` and ``b[i]`` are one seed's
    predictions on the same samples."""
    rng = np.random.default_rng(seed)
    pairs = []  # per seed: the targets and both models' predictions, in store-index order
    for first, second in zip(a, b):
        in_order, other_order = np.argsort(first.index), np.argsort(second.index)
        if not np.array_equal(first.target[in_order], second.target[other_order]):
            raise ConfigError(
                "the two models' test samples have other targets; they were not scored on the same samples"
            )
        pairs.append((first.target[in_order], first.predicted[in_order], second.predicted[other_order]))
    differences: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(replicates):
        per_seed: dict[str, list[float]] = {m: [] for m in METRICS}
        for s in rng.integers(0, len(pairs), len(pairs)):
            target, first, second = pairs[s]
            samples = rng.integers(0, len(target), len(target))
            confusions = [confusion_matrix(target[samples], p[samples], num_classes) for p in (first, second)]
            per_seed["accuracy"].append(accuracy(confusions[0]) - accuracy(confusions[1]))
            per_seed["macro_f1"].append(macro_f1(confusions[0]) - macro_f1(confusions[1]))
        for m in METRICS:
            differences[m].append(float(np.mean(per_seed[m])))
    low, high = 2.5, 97.5
    return {
        "accuracy": [
            float(np.percentile(differences["accuracy"], low)),
            float(np.percentile(differences["accuracy"], high)),
        ],
        "macro_f1": [
            float(np.percentile(differences["macro_f1"], low)),
            float(np.percentile(differences["macro_f1"], high)),
        ],
    }


def comparison_markdown(table: Comparison) -> str:
    """The comparison as a markdown table (percent)."""
    a, b = table["a"]["name"], table["b"]["name"]
    lines = [
        f"# {a} against {b}",
        "",
        f"a: `{json.dumps({'model': table['a']['model'], 'options': table['a']['options'], **table['a']['settings']})}`; "
        f"b: `{json.dumps({'model': table['b']['model'], 'options': table['b']['options'], **table['b']['settings']})}`.",
        f"Store `{table['store']}` (where a side names none), labels {table['labels'] or 'the store default'}; test accuracy and "
        "macro-F1 (%) at each run's selected epoch; the difference is a - b.",
        "",
        f"| seed | {a} acc | {b} acc | difference | {a} macro-F1 | {b} macro-F1 | difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table["seeds"]:
        acc_a, acc_b = (f"{100 * row[side]['accuracy']:.2f}" for side in ("a", "b"))
        f1_a, f1_b = (f"{100 * row[side]['macro_f1']:.2f}" for side in ("a", "b"))
        lines.append(
            f"| {row['seed']} | {acc_a} | {acc_b} | {100 * row['difference']['accuracy']:+.2f} | {f1_a} | {f1_b} | "
            f"{100 * row['difference']['macro_f1']:+.2f} |"
        )
    low, high = (100 * v for v in table["interval_95"]["accuracy"])
    f1_low, f1_high = (100 * v for v in table["interval_95"]["macro_f1"])
    lines += [
        f"| mean | {100 * table['mean']['a']['accuracy']:.2f} | {100 * table['mean']['b']['accuracy']:.2f} | "
        f"{100 * table['mean_difference']['accuracy']:+.2f} | {100 * table['mean']['a']['macro_f1']:.2f} | "
        f"{100 * table['mean']['b']['macro_f1']:.2f} | {100 * table['mean_difference']['macro_f1']:+.2f} |",
        "",
        f"95% interval of the mean difference (paired bootstrap over seeds and test samples, "
        f"{table['replicates']} replicates): accuracy [{low:+.2f}, {high:+.2f}], macro-F1 [{f1_low:+.2f}, {f1_high:+.2f}]. "
        + ("The interval holds 0: no difference is shown." if low <= 0 <= high else "The interval excludes 0."),
        "",
    ]
    return "\n".join(lines)


def guidance_table_markdown(tables: list[Comparison]) -> str:
    """Several comparisons (each :func:`comparison_table`'s result, a guided model against its
    twin) as one markdown table: per pair the seeds, both mean test accuracies, and the mean
    differences of accuracy and macro-F1 (points) with their 95% paired intervals."""
    lines = [
        "| guided (a) | twin (b) | seeds | a acc | b acc | a - b acc [95%] | a - b macro-F1 [95%] | the guidance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for table in tables:
        low, high = (100 * v for v in table["interval_95"]["accuracy"])
        f1_low, f1_high = (100 * v for v in table["interval_95"]["macro_f1"])
        verdict = "helps" if low > 0 else "hurts" if high < 0 else "no difference shown"
        lines.append(
            f"| `{table['a']['name']}` | `{table['b']['name']}` | {len(table['seeds'])} | "
            f"{100 * table['mean']['a']['accuracy']:.2f} | {100 * table['mean']['b']['accuracy']:.2f} | "
            f"{100 * table['mean_difference']['accuracy']:+.2f} [{low:+.2f}, {high:+.2f}] | "
            f"{100 * table['mean_difference']['macro_f1']:+.2f} [{f1_low:+.2f}, {f1_high:+.2f}] | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def render_comparison(table: Comparison, width: int = 560, height: int = 320) -> np.ndarray:
    """Per seed, each model's test accuracy (a blue, b orange, joined per seed; the left axis, %)
    and on the right, on an axis of its own (points), the mean difference with its 95% interval.
    Returns ``(height, width, 3) uint8`` RGB."""
    image = np.full((height, width, 3), 255, np.uint8)
    import cv2

    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)
    rows = table["seeds"]
    values = [r[s]["accuracy"] for r in rows for s in ("a", "b")]
    low, high = min(values) - 0.01, max(values) + 0.01
    top, bottom, left, right = 40, height - 40, 60, width - 200

    def y_of(v: float) -> int:
        return int(bottom - (v - low) / (high - low) * (bottom - top))

    cv2.putText(
        image,
        f"test accuracy: {table['a']['name']} (blue) vs {table['b']['name']} (orange)",
        (8, 20),
        font,
        0.45,
        black,
        1,
        cv2.LINE_AA,
    )
    for value in np.linspace(low, high, 5):
        cv2.putText(image, f"{100 * value:.1f}", (8, y_of(value) + 4), font, 0.35, black, 1, cv2.LINE_AA)
    for i, row in enumerate(rows):
        x = left + int((i + 0.5) * (right - left) / len(rows))
        a, b = y_of(row["a"]["accuracy"]), y_of(row["b"]["accuracy"])
        cv2.line(image, (x, a), (x, b), (160, 160, 160), 1, cv2.LINE_AA)
        cv2.circle(image, (x, a), 5, (31, 119, 180), -1, cv2.LINE_AA)
        cv2.circle(image, (x, b), 5, (255, 127, 14), -1, cv2.LINE_AA)
        cv2.putText(image, f"seed {row['seed']}", (x - 24, bottom + 20), font, 0.35, black, 1, cv2.LINE_AA)
    interval = [100 * v for v in table["interval_95"]["accuracy"]]
    mean = 100 * table["mean_difference"]["accuracy"]
    span = max(abs(interval[0]), abs(interval[1]), abs(mean), 0.5)
    centre_x = width - 80

    def d_of(v: float) -> int:
        return int((top + bottom) / 2 - v / span * (bottom - top) / 2)

    # The difference has an axis of its own (points of accuracy), apart from the accuracies'.
    axis_x = centre_x - 60
    cv2.line(image, (right + 10, top - 20), (right + 10, bottom + 8), (200, 200, 200), 1)
    cv2.line(image, (axis_x, d_of(span)), (axis_x, d_of(-span)), black, 1)
    for tick in (-span, -span / 2, 0.0, span / 2, span):
        cv2.line(image, (axis_x - 3, d_of(tick)), (axis_x, d_of(tick)), black, 1)
        cv2.putText(image, f"{tick:+.1f}", (axis_x - 42, d_of(tick) + 4), font, 0.33, black, 1, cv2.LINE_AA)
    cv2.line(image, (axis_x, d_of(0)), (centre_x + 40, d_of(0)), (160, 160, 160), 1)
    cv2.line(image, (centre_x, d_of(interval[0])), (centre_x, d_of(interval[1])), black, 2)
    cv2.circle(image, (centre_x, d_of(mean)), 5, black, -1, cv2.LINE_AA)
    cv2.putText(image, "a - b (points), 95%", (axis_x - 30, top - 8), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.putText(
        image,
        f"{mean:+.2f} [{interval[0]:+.2f}, {interval[1]:+.2f}]",
        (centre_x - 90, bottom + 20),
        font,
        0.35,
        black,
        1,
        cv2.LINE_AA,
    )
    return image
