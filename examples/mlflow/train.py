"""Train the wine-quality model, log it to MLflow with its baseline, and register it.

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python examples/mlflow/train.py [--no-baseline]

As in the original walkthrough: an ElasticNet on the white-wine measurements, logged with
``mlflow.sklearn.log_model`` and registered as ``wine``; here the baseline (the histograms of
the holdout's features and of the model's predictions on it) is logged inside the model's
artifacts, so ``models:/wine/<version>`` carries it. Prints the registered version.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.linear_model import ElasticNet  # noqa: E402
from wine import FEATURES, measurements, quality  # noqa: E402

from boxkite_middleware import Baseline  # noqa: E402
from boxkite_middleware.mlflow import log_baseline  # noqa: E402

NAME = "wine"
SEED = 20261130
TRAIN, HOLDOUT = slice(0, 3000), slice(3000, 4000)


def wines() -> tuple[pd.DataFrame, np.ndarray]:
    """The measurements and their quality scores: training rows, then the holdout's."""
    columns = measurements(4000, SEED)
    return pd.DataFrame(columns)[FEATURES], quality(columns, SEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-baseline", action="store_true", help="register the model alone")
    arguments = parser.parse_args()
    table, target = wines()
    model = ElasticNet(alpha=0.05, l1_ratio=0.5).fit(table[TRAIN], target[TRAIN])
    mlflow.set_experiment("wine")
    with mlflow.start_run(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice on pinning requirements
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=NAME,
            input_example=table.iloc[:2],
        )
        if not arguments.no_baseline:
            holdout = table[HOLDOUT]
            baseline = Baseline.from_data(holdout, inference=model.predict(holdout))
            print("baseline", log_baseline(baseline, info), file=sys.stderr)
    print(info.registered_model_version)


if __name__ == "__main__":
    main()
