"""False-alarm and detection rates of the drift alert thresholds, by simulation.

    python benchmarks/alert_rates.py [--trials 400]

The wine-grade example's 12 features (11 measurements and a categorical region); the
baseline from 4,000 training rows. Each trial draws a live window of n rows — resampled from
the training rows themselves (unchanged traffic), or shifted in a known way — bins it with the
baseline, and asks whether any column of the model crosses its threshold: K-S against
``c(a)·sqrt((n+m)/(n·m))``, Pearson's χ² against ``χ²(k−1, 1−a)`` (the formulas of the
generated Prometheus rules, α = 0.05 per model and window, F = 12, a = 0.8·α/F). The share
of trials that alarm is the model's false-alarm rate (unchanged) or detection rate (shifted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

from common import table  # noqa: E402
from wine import FEATURES, REGIONS, measurements, regions  # noqa: E402

from boxkite_middleware import Baseline  # noqa: E402
from boxkite_middleware.baseline import Histogram  # noqa: E402
from boxkite_middleware.binning import OTHER, bucket_counts  # noqa: E402
from boxkite_middleware.drift import (  # noqa: E402
    chi2_statistic,
    chi2_threshold,
    ks_statistic,
    ks_threshold,
)

SIZES = (200, 1000, 5000)


def _shifts(training: dict) -> dict:
    std = {name: float(np.std(training[name])) for name in FEATURES}
    return {
        "unchanged (resampled training rows)": lambda c, rng: c,
        "alcohol +0.1 std": lambda c, rng: {**c, "alcohol": c["alcohol"] + 0.1 * std["alcohol"]},
        "alcohol +0.25 std": lambda c, rng: {**c, "alcohol": c["alcohol"] + 0.25 * std["alcohol"]},
        "residual sugar ×1.2": lambda c, rng: {**c, "residual sugar": c["residual sugar"] * 1.2},
        "15 % of wines one region over": lambda c, rng: {
            **c,
            "region": np.where(
                rng.random(len(c["region"])) < 0.15, _next_region(c["region"]), c["region"]
            ),
        },
        "10 % unseen region": lambda c, rng: {
            **c,
            "region": np.where(rng.random(len(c["region"])) < 0.1, "alentejo", c["region"]),
        },
    }


def _next_region(values: np.ndarray) -> np.ndarray:
    following = {region: REGIONS[(i + 1) % len(REGIONS)] for i, region in enumerate(REGIONS)}
    return np.array([following[value] for value in values])


def _alarms(baseline: Baseline, window: dict) -> bool:
    columns = len(baseline.features)
    for name, column in baseline.features.items():
        expected = np.array(
            column.counts if isinstance(column, Histogram) else [c for _, c in column.counts],
            dtype=float,
        )
        if isinstance(column, Histogram):
            live = bucket_counts(np.asarray(window[name], dtype=float), np.array(column.edges))
            n, m = live.sum(), expected.sum()
            if ks_statistic(live, expected) > ks_threshold(n, m, columns):
                return True
        else:
            known = {category: i for i, (category, _) in enumerate(column.counts)}
            live = np.bincount(
                [known.get(value, known[OTHER]) for value in window[name]], minlength=len(known)
            ).astype(float)
            if chi2_statistic(live, expected) > chi2_threshold(live, expected, columns):
                return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=400)
    arguments = parser.parse_args()
    rng = np.random.default_rng(0)
    training = measurements(4000, seed=11)
    training["region"] = regions(4000, seed=13)
    baseline = Baseline.from_data(training)
    rows = []
    for label, shift in _shifts(training).items():
        rates = []
        for size in SIZES:
            hits = 0
            for _ in range(arguments.trials):
                picked = rng.integers(0, 4000, size)
                window = shift({name: values[picked] for name, values in training.items()}, rng)
                hits += _alarms(baseline, window)
            rates.append(f"{100 * hits / arguments.trials:.1f} %")
        rows.append([label, *rates])
    print(table(["live window", *(f"n = {size:,}" for size in SIZES)], rows))


if __name__ == "__main__":
    main()
