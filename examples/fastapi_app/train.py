"""Train the wine-grade classifier (a label out, a string feature in) and record its baseline.

python examples/fastapi_app/train.py
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from wine import FEATURES, REGIONS, measurements, quality, regions  # noqa: E402

from boxkite_middleware import Baseline  # noqa: E402

COLUMNS = [*FEATURES, "region"]


def grade(scores: np.ndarray) -> np.ndarray:
    return np.where(scores >= 7, "good", np.where(scores <= 4, "poor", "average"))


def table(columns: dict[str, np.ndarray]) -> np.ndarray:
    """Numbers as they are; the region as its index (unknown regions as missing)."""
    codes = {region: float(i) for i, region in enumerate(REGIONS)}
    region = [codes.get(value, np.nan) for value in columns["region"]]
    return np.column_stack([*(np.asarray(columns[n], dtype=float) for n in FEATURES), region])


def main() -> None:
    train, holdout = measurements(4000, seed=11), measurements(1000, seed=12)
    train["region"], holdout["region"] = regions(4000, seed=13), regions(1000, seed=14)
    model = HistGradientBoostingClassifier(
        max_iter=100, random_state=0, categorical_features=[len(FEATURES)]
    )
    model.fit(table(train), grade(quality(train, seed=15)))
    predictions = model.predict(table(holdout))
    (HERE / "model.pkl").write_bytes(pickle.dumps({"model": model, "columns": COLUMNS}))
    baseline = Baseline.from_data(train, inference=predictions)
    baseline.save(HERE / "histogram.prom")
    print(f"trained on 4000 rows; wrote model.pkl and {baseline!r}")


if __name__ == "__main__":
    main()
