"""The original walkthrough, end to end, on this machine; stops everything it started.

    python examples/mlflow/run.py [--sqlite] [--workers 2]

1. PostgreSQL (Debian's ``postgresql`` package; ``--sqlite``, or no PostgreSQL installed,
   uses SQLite) behind an MLflow tracking server, artifacts on disk.
2. ``train.py``: the wine model logged with ``mlflow.sklearn.log_model``, its baseline
   inside the model's artifacts, registered as ``wine`` version 1.
3. ``boxkite-middleware serve models:/wine/1``: MLflow's scoring app under gunicorn with
   uvicorn workers, ``/metrics`` on a port of its own.
4. The walkthrough's request, then the holdout as normal traffic and stronger, sweeter wines
   as drifted traffic, sent as MLflow's client sends a DataFrame.
5. ``boxkite-middleware drift`` on the live ``/metrics``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import services  # noqa: E402
from train import HOLDOUT, wines  # noqa: E402

WALKTHROUGH = {  # step 8 of the original walkthrough, as MLflow 3 takes a DataFrame
    "dataframe_split": {
        "columns": [
            "alcohol",
            "chlorides",
            "citric acid",
            "density",
            "fixed acidity",
            "free sulfur dioxide",
            "pH",
            "residual sugar",
            "sulphates",
            "total sulfur dioxide",
            "volatile acidity",
        ],
        "data": [
            [12.8, 0.029, 0.48, 0.98, 6.2, 29, 3.33, 1.2, 0.39, 75, 0.66],
            [12.8, 0.029, 0.48, 0.98, 6.2, 29, 3.33, 1.2, 0.39, 75, 0.66],
        ],
    }
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--workers", type=int, default=2)
    arguments = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if arguments.sqlite or services.postgres_binary("initdb") is None:
            backend = f"sqlite:///{stack.enter_context(_scratch())}/mlflow.db"
        else:
            backend = stack.enter_context(services.postgres())
        print(f"== tracking server on {backend.split('@')[-1]}", flush=True)
        tracking = stack.enter_context(services.tracking_server(backend))
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
        print("== training and registering the wine model", flush=True)
        subprocess.run([sys.executable, str(HERE / "train.py")], env=env, check=True)
        port, metrics_port = services.free_port(), services.free_port()
        command = [sys.executable, "-m", "boxkite_middleware", "serve", "models:/wine/1"]
        command += ["--workers", str(arguments.workers), "--port", str(port)]
        command += ["--metrics-port", str(metrics_port)]
        served = subprocess.Popen(command, env=env, start_new_session=True)
        stack.callback(services.stop, served)
        url = f"http://127.0.0.1:{port}"
        services.wait_for(f"{url}/ping", served)
        print("== the walkthrough's request:", _invoke(url, WALKTHROUGH), flush=True)
        table, _ = wines()
        holdout = table[HOLDOUT]
        drifted = holdout.assign(alcohol=holdout["alcohol"] + 1.5)
        drifted = drifted.assign(**{"residual sugar": drifted["residual sugar"] * 1.5})
        for frame in (holdout, drifted):
            for start in range(0, len(frame), 100):
                _invoke(url, {"dataframe_split": frame[start : start + 100].to_dict("split")})
        print("== drift on the live /metrics (holdout replayed, then drifted wines)", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "boxkite_middleware",
                "drift",
                f"http://127.0.0.1:{metrics_port}/metrics",
            ],
            check=False,
        )


def _invoke(url: str, document: dict) -> list:
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["predictions"]


@contextlib.contextmanager
def _scratch():
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="walkthrough-sqlite-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
