"""Shared fixtures: a sample of the real Wine Quality data (tests/data/README.md)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Timing is for benchmarks: on a loaded 2-core machine a per-example deadline only adds flakes.
settings.register_profile("boxkite", deadline=None)
settings.load_profile("boxkite")

ROOT = Path(__file__).resolve().parent.parent
WINE = Path(__file__).parent / "data" / "winequality-white-sample.csv"
LEGACY = Path(__file__).parent / "data" / "boxkite-legacy-histogram.prom"


@pytest.fixture(scope="session")
def wine() -> dict[str, np.ndarray]:
    """The 11 wine measurements and `quality`, by column name."""
    with WINE.open(newline="") as file:
        rows = list(csv.reader(file, delimiter=";"))
    values = np.array(rows[1:], dtype=np.float64)
    return {name: values[:, i] for i, name in enumerate(rows[0])}
