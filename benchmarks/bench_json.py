"""Which JSON parser pays: stdlib json vs orjson vs msgspec on pandas-split bodies.

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
        repeats = 2000 if size < 1000 else 200
        timings = {
            name: median_seconds(lambda p=parse, b=body, r=repeats: [p(b) for _ in range(r)], 7)
            / repeats
            for name, parse in parsers.items()
        }
        stdlib = timings["json (stdlib)"]
        results.append(
            [str(size), f"{len(body):,}"]
            + [f"{seconds * 1e6:.1f} µs ({stdlib / seconds:.1f}×)" for seconds in timings.values()]
        )
    print(table(["rows", "bytes", *parsers], results))


if __name__ == "__main__":
    main()
