"""Alert rates on the real Wine Quality data, beside scipy's raw two-sample tests.

    python benchmarks/alert_rates_wine.py [--windows 300] [--seed 0] [--continuous]

The white-wine data (4,898 rows, `benchmarks/data/winequality-white.csv`) is split at random,
afresh for every window, into a training half (the baseline: 11 measurements, and ``quality``
as the model's predicted class) and a held-out half, from which the live window of n rows is
drawn without replacement — unchanged, or shifted in a known way. (Windows drawn from one
fixed held-out half share that half's own chance difference from the training half, which
inflates every test's false alarms as n grows.) A window alarms for this project when any
column crosses its alert threshold exactly as the generated rules decide (K-S and out of
range for the measurements, χ² for ``quality``; α = 0.05 per model, split over its 12
columns), and for scipy when any raw-value two-sample K-S test (the measurements) or χ² test
(``quality``) is significant at α/12 (Bonferroni). The share of windows that alarm is the
false-alarm rate (unchanged) or the detection rate. With alibi-detect installed, its
``TabularDrift`` (K-S per measurement, χ² for ``quality``, Bonferroni) gets a column too.

The measurements are recorded on grids (alcohol in tenths): a shift of 0.123 moves every value
off the grid, which a raw-value K-S test sees through the ties. ``--continuous`` spreads every
measurement uniformly over its recording step first, in training and live data alike, to show
the tests on data without ties.
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


def _load(continuous: bool, rng) -> dict[str, np.ndarray]:
    header = DATA.read_text().splitlines()[0]
    names = [name.strip('"') for name in header.split(";")]
    values = np.loadtxt(DATA, delimiter=";", skiprows=1)
    data = {name: values[:, i] for i, name in enumerate(names)}
    if continuous:
        for name, column in data.items():
            if name != "quality":
                step = float(np.median(np.diff(np.unique(column))))
                data[name] = column + rng.uniform(-step / 2, step / 2, column.size)
    return data


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


def _ours(training: dict[str, np.ndarray], baseline: Baseline, window: dict) -> bool:
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


def _scipy(training: dict[str, np.ndarray], baseline: Baseline, window: dict) -> bool:
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


def _alibi(training: dict[str, np.ndarray], baseline: Baseline, window: dict) -> bool:
    from alibi_detect.cd import TabularDrift

    names = list(training)
    reference = np.column_stack([training[name] for name in names]).astype(np.float32)
    detector = TabularDrift(
        reference, p_val=ALPHA, categories_per_feature={names.index("quality"): None}
    )
    live = np.column_stack([window[name] for name in names]).astype(np.float32)
    return bool(detector.predict(live)["data"]["is_drift"])


def _tests() -> dict:
    """The tests compared, by column title: this project, scipy, and alibi if installed."""
    tests = {"this project": _ours, "scipy K-S / χ² (Bonferroni)": _scipy}
    try:
        import alibi_detect  # noqa: F401
    except ImportError:
        return tests
    return {**tests, "alibi-detect TabularDrift": _alibi}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--continuous", action="store_true", help="spread the measurements off their grids"
    )
    arguments = parser.parse_args()
    rng = np.random.default_rng(arguments.seed)
    data = _load(arguments.continuous, rng)
    half = data["quality"].size // 2
    tests = _tests()
    rows = []
    for label, (scenario, label_shift) in _scenarios(data).items():
        rates: dict[str, list[str]] = {title: [] for title in tests}
        for size in SIZES:
            hits = dict.fromkeys(tests, 0)
            for _ in range(arguments.windows):
                training, held_out, baseline = _split(data, rng)
                window = _window(held_out, size, rng, scenario, label_shift)
                for title, test in tests.items():
                    hits[title] += test(training, baseline, window)
            for title in tests:
                rates[title].append(f"{100 * hits[title] / arguments.windows:.0f}")
        rows.append([label, *(" / ".join(rate) for rate in rates.values())])
    sizes = " / ".join(f"{size:,}" for size in SIZES)
    rest = data["quality"].size - half
    print(
        f"White wine: {half:,} training rows, windows from the other {rest:,} (a new split "
        "for every window), "
        f"{arguments.windows} windows per cell, % that alarm at n = {sizes}\n"
    )
    grid = "spread off their recording grids" if arguments.continuous else "as recorded"
    print(f"Measurements {grid}.\n")
    print(table(["live window", *tests], rows))


if __name__ == "__main__":
    main()
