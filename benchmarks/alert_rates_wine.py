"""Alert rates on the real Wine Quality data, beside scipy's raw two-sample tests.

    python benchmarks/alert_rates_wine.py [--windows 300] [--seed 0]

The white-wine data (4,898 rows, `benchmarks/data/winequality-white.csv`) is split at random,
afresh for every window, into a training half (the baseline: 11 measurements, and ``quality``
as the model's predicted class) and a held-out half, from which the live window of n rows is
drawn without replacement — unchanged, or shifted in a known way. (Windows drawn from one
fixed held-out half share that half's own chance difference from the training half, which
inflates every test's false alarms as n grows.) A window alarms for this project when any
column crosses its alert threshold exactly as the generated rules decide (K-S, PSI, out of
range; α = 0.05 per model, split over its 12 columns), and for scipy when any raw-value
two-sample K-S test (the measurements) or χ² test (``quality``) is significant at α/12
(Bonferroni). The share of windows that alarm is the false-alarm rate (unchanged) or the
detection rate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import table  # noqa: E402

from boxkite_middleware import Baseline  # noqa: E402
from boxkite_middleware.baseline import Histogram  # noqa: E402
from boxkite_middleware.binning import OTHER, bucket_counts, canonical_category  # noqa: E402
from boxkite_middleware.drift import Distribution, judge  # noqa: E402

DATA = HERE / "data" / "winequality-white.csv"
SIZES = (100, 300, 1000)
ALPHA = 0.05


def _load() -> dict[str, np.ndarray]:
    header = DATA.read_text().splitlines()[0]
    names = [name.strip('"') for name in header.split(";")]
    values = np.loadtxt(DATA, delimiter=";", skiprows=1)
    return {name: values[:, i] for i, name in enumerate(names)}


def _scenarios(training: dict[str, np.ndarray]) -> dict:
    alcohol_sd = float(np.std(training["alcohol"]))

    def shifted(name: str, change):
        return lambda window, rng: {**window, name: change(window[name], rng)}

    def unchanged(window, rng):
        return window

    return {
        "unchanged (held-out rows)": (unchanged, False),
        "alcohol +0.1 SD": (shifted("alcohol", lambda v, rng: v + 0.1 * alcohol_sd), False),
        "alcohol +0.25 SD": (shifted("alcohol", lambda v, rng: v + 0.25 * alcohol_sd), False),
        "residual sugar ×1.2": (shifted("residual sugar", lambda v, rng: v * 1.2), False),
        "3 % of alcohol ×10 (unit error)": (
            shifted("alcohol", lambda v, rng: np.where(rng.random(v.size) < 0.03, v * 10, v)),
            False,
        ),
        "quality ≥ 7 twice as frequent (label shift)": (unchanged, True),
        "15 % of predicted classes up one": (
            shifted("quality", lambda v, rng: np.where(rng.random(v.size) < 0.15, v + 1, v)),
            False,
        ),
    }
    """label -> (change a window, draw quality >= 7 twice as often)"""


def _window(held_out, size, rng, scenario, label_shift=False):
    weights = None
    if label_shift:  # quality >= 7 twice as frequent
        weights = np.where(held_out["quality"] >= 7, 2.0, 1.0)
        weights /= weights.sum()
    picked = rng.choice(held_out["quality"].size, size, replace=False, p=weights)
    return scenario({name: values[picked] for name, values in held_out.items()}, rng)


def _split(data: dict[str, np.ndarray], rng) -> tuple[dict, dict, Baseline]:
    order = rng.permutation(data["quality"].size)
    half = data["quality"].size // 2
    training = {name: values[order[:half]] for name, values in data.items()}
    held_out = {name: values[order[half:]] for name, values in data.items()}
    features = {name: v for name, v in training.items() if name != "quality"}
    baseline = Baseline.from_data(features, inference={"quality": training["quality"]})
    return training, held_out, baseline


def _ours(baseline: Baseline, window: dict[str, np.ndarray]) -> bool:
    found = []
    for role, name, column in baseline.columns():
        if isinstance(column, Histogram):
            live = bucket_counts(window[name], np.array(column.edges))
            keys = (*map(str, column.edges), "+Inf")
            expected = np.array(column.counts, dtype=float)
        else:
            known = [category for category, _ in column.counts]
            index = {category: i for i, category in enumerate(known)}
            live = np.zeros(len(known))
            for value in window[name]:
                live[index.get(canonical_category(value), index[OTHER])] += 1
            keys, expected = tuple(known), np.array([c for _, c in column.counts], dtype=float)
        kind = "numeric" if isinstance(column, Histogram) else "categorical"
        found.append(Distribution("wine", role, name, kind, keys, live, expected, 0.0, 0.0))
    return any(verdict.drifted for verdict in judge(found))


def _scipy(training: dict[str, np.ndarray], window: dict[str, np.ndarray]) -> bool:
    tests = len(training)
    for name, values in training.items():
        if name == "quality":
            classes = np.union1d(values, window[name])
            counts = [[np.sum(v == c) for c in classes] for v in (values, window[name])]
            p = stats.chi2_contingency(np.array(counts) + 0.0)[1]
        else:
            p = stats.ks_2samp(values, window[name]).pvalue
        if p < ALPHA / tests:
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    rng = np.random.default_rng(arguments.seed)
    data = _load()
    half = data["quality"].size // 2
    rows = []
    for label, (scenario, label_shift) in _scenarios(data).items():
        ours, theirs = [], []
        for size in SIZES:
            hits = [0, 0]
            for _ in range(arguments.windows):
                training, held_out, baseline = _split(data, rng)
                window = _window(held_out, size, rng, scenario, label_shift)
                hits[0] += _ours(baseline, window)
                hits[1] += _scipy(training, window)
            ours.append(f"{100 * hits[0] / arguments.windows:.0f}")
            theirs.append(f"{100 * hits[1] / arguments.windows:.0f}")
        rows.append([label, " / ".join(ours), " / ".join(theirs)])
    sizes = " / ".join(f"{size:,}" for size in SIZES)
    rest = data["quality"].size - half
    print(
        f"White wine: {half:,} training rows, windows from the other {rest:,} (a new split "
        "for every window), "
        f"{arguments.windows} windows per cell, % that alarm at n = {sizes}\n"
    )
    print(table(["live window", "this project", "scipy K-S / χ² (Bonferroni)"], rows))


if __name__ == "__main__":
    main()
