"""Time Baseline.from_data (exact, every row) against the original boxkite's export_text.

    python benchmarks/bench_baseline.py [--boxkite-python PATH] [--repeats N]

boxkite pins numpy < 2, so it runs in its own virtual environment
(benchmarks/setup_boxkite.sh makes one in .bench/boxkite); both sides time the same data, saved
to .npy files, in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import median_seconds, table

from boxkite_middleware import Baseline

ROWS = 1_000_000
DEFAULT_BOXKITE = Path(__file__).resolve().parent.parent / ".bench" / "boxkite" / "bin" / "python"

BOXKITE_TIMER = """
import json, sys, os, tempfile, time, statistics
import numpy as np
from boxkite.monitoring.service import ModelMonitoringService
folder, repeats = sys.argv[1], int(sys.argv[2])
results = {}
for case in json.loads(sys.argv[3]):
    columns = [(name, np.load(os.path.join(folder, name + ".npy")))
               for name in case["columns"]]
    out = os.path.join(folder, "boxkite.prom")
    run = lambda: ModelMonitoringService.export_text(features=columns, path=out)
    run()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter(); run(); timings.append(time.perf_counter() - start)
    results[case["name"]] = statistics.median(timings)
print(json.dumps(results))
"""


def cases(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    wide = {f"f{i}": rng.normal(i, 1 + i, ROWS) for i in range(11)}
    return {
        "1 continuous × 1M": {"f0": wide["f0"]},
        "11 continuous × 1M": wide,
        "5 categories × 1M": {"grade": rng.integers(0, 5, ROWS).astype(np.float64)},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boxkite-python", type=Path, default=DEFAULT_BOXKITE)
    parser.add_argument("--repeats", type=int, default=7)
    arguments = parser.parse_args()
    data = cases(np.random.default_rng(0))
    ours = {
        name: median_seconds(lambda columns=columns: Baseline.from_data(columns), arguments.repeats)
        for name, columns in data.items()
    }
    theirs = _boxkite(data, arguments)
    rows = []
    for name, seconds in ours.items():
        other = theirs.get(name)
        rows.append(
            [
                name,
                f"{seconds * 1e3:.1f} ms",
                f"{other * 1e3:.1f} ms" if other else "n/a",
                f"{other / seconds:.1f}×" if other else "n/a",
            ]
        )
    print(table(["data", "Baseline.from_data (exact)", "boxkite export_text", "speed-up"], rows))


def _boxkite(data, arguments) -> dict[str, float]:
    if not arguments.boxkite_python.exists():
        print(
            f"(no boxkite at {arguments.boxkite_python}: run benchmarks/setup_boxkite.sh)",
            file=sys.stderr,
        )
        return {}
    with tempfile.TemporaryDirectory() as folder:
        for columns in data.values():
            for name, values in columns.items():
                np.save(Path(folder) / f"{name}.npy", values)
        plan = [{"name": name, "columns": list(columns)} for name, columns in data.items()]
        output = subprocess.run(
            [
                str(arguments.boxkite_python),
                "-c",
                BOXKITE_TIMER,
                folder,
                str(arguments.repeats),
                json.dumps(plan),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return json.loads(output.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
