"""Files in the metrics directory and /metrics scrape time as workers keep dying, under
servers that have no master hooks (each new worker, and each scrape, folds what ended).

    python benchmarks/bench_worker_deaths.py [--server uwsgi] [--deaths 1000] [--every 100]

A worker is killed with SIGKILL, the benchmark waits for its replacement, and every
``--every`` deaths 10 requests are sent and 21 scrapes timed (median). Servers: uwsgi (2
forked workers), uvicorn (``--workers 2``, spawned: ~1 s per death), granian (2 workers,
``--respawn-failed-workers``), hypercorn (2 workers; it stops when a worker dies, so each
"death" is a SIGHUP that replaces both workers gracefully).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import median_seconds, table  # noqa: E402

from tests.servers import Server  # noqa: E402
from tests.test_servers import DYING  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=list(DYING), default="uwsgi")
    parser.add_argument("--deaths", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    options = parser.parse_args()
    command, replace = DYING[options.server]
    server = Server(Path(tempfile.mkdtemp(prefix="bench-deaths-")), *command)
    rows = []
    started = time.monotonic()
    try:
        for death in range(options.deaths + 1):
            if death % options.every == 0:
                server.post(10)
                scrape = median_seconds(server.scrape, repeats=21)
                files = server.files()
                own = sum("_boxkite_" in name for name in files)
                rows.append([str(death), str(len(files)), str(own), f"{scrape * 1000:.2f}"])
                print(rows[-1], f"{time.monotonic() - started:.0f} s", file=sys.stderr)
            if death < options.deaths:
                replace(server)
        counted = server.scrape().value("boxkite_requests_total", model="e2e", reason="ok")
    finally:
        server.stop()
    how = "reloads by SIGHUP" if options.server == "hypercorn" else "deaths by SIGKILL"
    print(f"{options.server}, 2 workers, {options.deaths} {how}")
    print(table(["deaths", "*.db files", "of them per-worker", "scrape p50 (ms)"], rows))
    sent = 10 * len(rows)
    print(f"\nrequests counted {counted:.0f} of {sent} sent (all answered before a kill)")


if __name__ == "__main__":
    main()
