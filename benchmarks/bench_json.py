"""Which JSON parser pays: stdlib json vs orjson vs msgspec on pandas-split bodies; then the
middleware's own `payload.loads` on 100-row bodies with bare NaN tokens (MLflow's missing
values), which orjson alone refuses.

python benchmarks/bench_json.py        (msgspec is timed when installed)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

from common import median_seconds, table  # noqa: E402
from wine import FEATURES, measurements, rows  # noqa: E402

from boxkite_middleware import payload  # noqa: E402

REPEATS = 2000


def _per_call(parse, body: bytes, repeats: int = REPEATS) -> float:
    """Median per call; each result is dropped at once (keeping thousands of parsed documents
    alive made the cyclic collector run and tripled the times)."""

    def calls() -> None:
        for _ in range(repeats):
            parse(body)

    return median_seconds(calls, 7) / repeats


def _with_nans(count: int, first_row: int) -> bytes:
    """A 100-row body as MLflow's client writes it, ``count`` values missing from ``first_row``."""
    data = rows(measurements(100, seed=4), FEATURES)
    for i in range(count):
        data[(first_row + i) % 100][(7 * i) % len(FEATURES)] = float("nan")
    return json.dumps({"dataframe_split": {"columns": FEATURES, "data": data}}).encode()


def main() -> None:
    parsers = {"json (stdlib)": json.loads}
    try:
        import orjson

        parsers["orjson"] = orjson.loads
    except ImportError:
        pass
    try:
        import msgspec

        parsers["msgspec"] = msgspec.json.decode
    except ImportError:
        pass
    results = []
    for size in (1, 100, 1000):
        body = json.dumps(
            {"columns": FEATURES, "data": rows(measurements(size, seed=4), FEATURES)}
        ).encode()
        repeats = REPEATS if size < 1000 else 200
        timings = {name: _per_call(parse, body, repeats) for name, parse in parsers.items()}
        stdlib = timings["json (stdlib)"]
        results.append(
            [str(size), f"{len(body):,}"]
            + [f"{seconds * 1e6:.1f} µs ({stdlib / seconds:.1f}×)" for seconds in timings.values()]
        )
    print(table(["rows", "bytes", *parsers], results))
    print()
    results = []
    for count, first_row in ((0, 0), (1, 0), (1, 50), (1, 99), (100, 0), (1100, 0)):
        body = _with_nans(count, first_row)
        ours, stdlib = _per_call(payload.loads, body), _per_call(json.loads, body)
        results.append(
            [str(count), str(first_row), f"{ours * 1e6:.1f} µs", f"{stdlib * 1e6:.1f} µs"]
        )
    print(table(["NaN values", "first in row", "payload.loads", "json (stdlib)"], results))


if __name__ == "__main__":
    main()
