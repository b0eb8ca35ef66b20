"""Synthetic white-wine measurements, drawn from the published per-column statistics.

The examples ship no third-party data: these facts (min, mean, std, max of the UCI white Wine
Quality data, Cortez et al. 2009) and each column's recording resolution are enough to make a
realistic training set. ``quality`` follows a plausible linear rule plus noise.
"""

from __future__ import annotations

import numpy as np

# column: (min, mean, std, max, resolution)
STATISTICS = {
    "fixed acidity": (3.8, 6.855, 0.8439, 14.2, 0.1),
    "volatile acidity": (0.08, 0.2782, 0.1008, 1.1, 0.005),
    "citric acid": (0.0, 0.3342, 0.1210, 1.66, 0.01),
    "residual sugar": (0.6, 6.391, 5.072, 65.8, 0.05),
    "chlorides": (0.009, 0.04577, 0.02185, 0.346, 0.001),
    "free sulfur dioxide": (2.0, 35.31, 17.01, 289.0, 0.5),
    "total sulfur dioxide": (9.0, 138.4, 42.50, 440.0, 1.0),
    "density": (0.98711, 0.9940, 0.002991, 1.03898, 0.00001),
    "pH": (2.72, 3.188, 0.1510, 3.82, 0.01),
    "sulphates": (0.22, 0.4898, 0.1141, 1.08, 0.01),
    "alcohol": (8.0, 10.51, 1.231, 14.2, 0.1),
}
SKEWED = {"residual sugar", "chlorides", "free sulfur dioxide", "volatile acidity"}
FEATURES = sorted(STATISTICS)  # the curl of the original walkthrough lists them alphabetically
REGIONS = ["minho", "lima", "cavado", "ave", "basto", "sousa", "amarante", "baiao", "paiva"]


def measurements(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Columns with the published mean and spread, clipped to the published range."""
    rng = np.random.default_rng(seed)
    columns = {}
    for name, (low, mean, std, high, step) in STATISTICS.items():
        if name in SKEWED:  # log-normal with the same mean and standard deviation
            sigma = np.sqrt(np.log1p((std / mean) ** 2))
            values = rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, rows)
        else:
            values = rng.normal(mean, std, rows)
        columns[name] = np.round(np.clip(values, low, high) / step) * step
    return columns


def quality(columns: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """A sensory score 3..9: better with alcohol, worse with volatile acidity and chlorides."""
    rng = np.random.default_rng(seed)
    score = (
        5.9
        + 0.45 * (columns["alcohol"] - 10.51)
        - 2.0 * (columns["volatile acidity"] - 0.2782)
        - 8.0 * (columns["chlorides"] - 0.04577)
        + 0.6 * (columns["sulphates"] - 0.4898)
        + rng.normal(0, 0.6, len(columns["alcohol"]))
    )
    return np.clip(np.round(score), 3, 9)


def regions(rows: int, seed: int) -> np.ndarray:
    """Sub-regions of the Vinho Verde appellation, the first few much more common."""
    weights = np.array([30, 20, 15, 10, 8, 7, 5, 3, 2], dtype=float)
    return np.random.default_rng(seed).choice(REGIONS, rows, p=weights / weights.sum())


def rows(columns: dict, names: list[str]) -> list[list]:
    """Row-major lists for a pandas-split request, NaN written as JSON null."""
    table = zip(*(columns[name] for name in names), strict=True)
    return [[None if isinstance(v, float) and v != v else _plain(v) for v in row] for row in table]


def _plain(value):
    return value.item() if hasattr(value, "item") else value
