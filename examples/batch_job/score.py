"""A nightly scoring job for the wine-quality model, watched by boxkite-middleware.

python examples/batch_job/score.py --gateway 127.0.0.1:9091 [--rows 5000] [--drift]

It scores tonight's table with the model the Flask example trained (its ``model.pkl`` and
``histogram.prom``; run ``examples/flask_app/train.py`` first), a part at a time, records every
part and its predictions, and pushes the counts to a Pushgateway: every series at 0 as the job
starts, the counts as it ends. ``--drift`` makes tonight's wines stronger and sweeter.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from wine import measurements  # noqa: E402

from boxkite_middleware import BatchRecorder  # noqa: E402

TRAINED = HERE.parent / "flask_app"
PART = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="host:port of the Pushgateway")
    parser.add_argument("--rows", type=int, default=5000, help="rows in tonight's table")
    parser.add_argument("--drift", action="store_true", help="stronger, sweeter wines")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the first push")
    arguments = parser.parse_args()
    trained = pickle.loads((TRAINED / "model.pkl").read_bytes())
    table = measurements(arguments.rows, seed=20261130)
    if arguments.drift:
        table["alcohol"] = table["alcohol"] + 1.5
        table["residual sugar"] = table["residual sugar"] * 1.5
    with BatchRecorder(
        TRAINED / "histogram.prom",
        model="wine-nightly",
        gateway=arguments.gateway,
        job="wine-nightly",
        settle=arguments.settle,
    ) as batch:
        for start in range(0, arguments.rows, PART):
            part = {name: values[start : start + PART] for name, values in table.items()}
            matrix = np.column_stack([part[name] for name in trained["features"]])
            batch.record(part, trained["model"].predict(matrix))
    print(f"scored and recorded {arguments.rows} rows; pushed to {arguments.gateway}")


if __name__ == "__main__":
    main()
