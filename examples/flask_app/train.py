"""Train the wine-quality regressor and record its baseline (features + held-out predictions).

python examples/flask_app/train.py
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from wine import FEATURES, measurements, quality  # noqa: E402

from boxkite_middleware import Baseline  # noqa: E402


def main() -> None:
    train, holdout = measurements(4000, seed=1), measurements(1000, seed=2)
    model = HistGradientBoostingRegressor(max_iter=100, random_state=0)
    model.fit(np.column_stack([train[name] for name in FEATURES]), quality(train, seed=3))
    predictions = model.predict(np.column_stack([holdout[name] for name in FEATURES]))
    (HERE / "model.pkl").write_bytes(pickle.dumps({"model": model, "features": FEATURES}))
    baseline = Baseline.from_data(train, inference=predictions)
    baseline.save(HERE / "histogram.prom")
    print(f"trained on {len(train[FEATURES[0]])} rows; wrote model.pkl and {baseline!r}")


if __name__ == "__main__":
    main()
