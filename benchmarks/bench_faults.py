"""Respawn latency of a SIGKILLed gunicorn worker with and without 8 concurrent scrapers.

.venv/bin/python benchmarks/bench_faults.py [--kills 5]

A 61-feature model (the scrape is ~1.3 MB), 4 sync workers under our gunicorn configuration;
the scrapers are 8 processes requesting /metrics in a loop. Respawn latency is the time from
the SIGKILL until gunicorn has a new worker; median and max of ``--kills``, quiet and busy.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import table  # noqa: E402
from tests.test_faults import _respawn_seconds, _wide_baseline  # noqa: E402
from tests.test_gunicorn import Gunicorn  # noqa: E402


def scrape_forever(url: str) -> None:
    while True:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{url}/metrics", timeout=60).read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=5)
    kills = parser.parse_args().kills
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as folder:
        server = Gunicorn(Path(folder), "wsgi", baseline=_wide_baseline())
        try:
            server.post(50)
            quiet = [_respawn_seconds(server) for _ in range(kills)]
            scrapers = [
                multiprocessing.Process(target=scrape_forever, args=(server.url,), daemon=True)
                for _ in range(8)
            ]
            for scraper in scrapers:
                scraper.start()
            time.sleep(2)
            busy = []
            for _ in range(kills):
                busy.append(_respawn_seconds(server))
                time.sleep(0.5)
            for scraper in scrapers:
                scraper.kill()
        finally:
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(30)
    rows = [
        [name, f"{statistics.median(s) * 1e3:.0f}", f"{max(s) * 1e3:.0f}"]
        for name, s in (("no scrapers", quiet), ("8 scrapers", busy))
    ]
    rows.append(
        ["busy / quiet (medians)", f"{statistics.median(busy) / statistics.median(quiet):.1f}×", ""]
    )
    print(table(["", "respawn median ms", "max ms"], rows))


if __name__ == "__main__":
    main()
