"""One real Prometheus scraping a simulated fleet: series, memory and rule evaluation time.

    python benchmarks/fleet_scale.py [--targets 20 100 400] [--features 50] [--bins 30]
                                     [--seconds 120]

One asyncio server answers on as many loopback ports as there are targets, each port a
replica of one model whose ``/metrics`` holds what the middleware exports for ``--features``
numeric features of ``--bins`` equal-mass bins: live buckets, ``_sum``/``_count``, missing
counts and request counts, growing at ~20 rows a second per replica. A real Prometheus
scrapes them every 10 s and evaluates the generated rules (one 30m window) every 10 s, for
``--seconds`` per setup, in two setups per fleet size:

- *per replica*: every replica also exports the baseline (the default ``expose_baseline``);
- *rule file*: the baseline is written into the rule file once (``rules --baseline``) and
  the replicas run with ``expose_baseline=False``.

Then Prometheus' own metrics give the head series, its resident memory and how long each
rule group's last evaluation took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import table  # noqa: E402

from boxkite_middleware import Baseline  # noqa: E402
from boxkite_middleware.fileformat import metrics  # noqa: E402
from boxkite_middleware.rules import RuleOptions, rule_file, to_yaml  # noqa: E402

MODEL = "fleet"
INTERVAL = "10s"
ROWS_PER_SECOND = 20


def _baseline(features: int, bins: int) -> Baseline:
    rng = np.random.default_rng(0)
    columns = {f"f{i:02d}": rng.gamma(2 + i % 7, 1.0 + i % 3, 5000) for i in range(features)}
    return Baseline.from_data(columns, max_bins=bins)


def _baseline_text(baseline: Baseline) -> str:
    from prometheus_client.exposition import generate_latest

    class Collected:
        def collect(self):
            return metrics(baseline, {"model": MODEL, "baseline": baseline.identity})

    return generate_latest(Collected()).decode()


class Fleet:
    """Replicas on ports ``first .. first+count-1``, their counts proportional to the
    baseline's and growing with time (each replica at its own rate)."""

    def __init__(self, baseline: Baseline, count: int, first: int, expose: bool) -> None:
        self.ports = range(first, first + count)
        self.started = time.monotonic()
        self.constant = _baseline_text(baseline) if expose else ""
        labels = f'model="{MODEL}",baseline="{baseline.identity}"'
        names, shares = [], []
        for name, column in baseline.features.items():
            edges = [*map(repr, column.edges), "+Inf"]
            cumulative = np.cumsum(column.counts) / sum(column.counts)
            for edge, share in zip(edges, cumulative):
                names.append(
                    f'boxkite_feature_value_bucket{{{labels},feature="{name}",le="{edge}"}}'
                )
                shares.append(share)
            names.append(f'boxkite_feature_value_count{{{labels},feature="{name}"}}')
            shares.append(1.0)
            names.append(f'boxkite_feature_missing_total{{{labels},feature="{name}"}}')
            shares.append(0.001)
        names.append(f'boxkite_requests_total{{{labels},outcome="recorded",reason="ok"}}')
        shares.append(0.1)
        self.names, self.shares = names, np.array(shares)
        self.sums = [
            f'boxkite_feature_value_sum{{{labels},feature="{name}"}}' for name in baseline.features
        ]
        self.means = np.array(
            [column.total / sum(column.counts) for column in baseline.features.values()]
        )

    def text(self, port: int) -> bytes:
        rows = (time.monotonic() - self.started) * ROWS_PER_SECOND * (1 + (port % 7) / 10)
        values = np.floor(self.shares * rows)
        lines = [f"{name} {value:.0f}" for name, value in zip(self.names, values)]
        lines += [f"{name} {value:.17g}" for name, value in zip(self.sums, self.means * rows)]
        return ("\n".join(lines) + "\n" + self.constant).encode()

    async def serve(self, stop: asyncio.Event) -> None:
        async def answer(port, reader, writer):
            try:
                await reader.readuntil(b"\r\n\r\n")
                body = self.text(port)
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await writer.drain()
            finally:
                writer.close()

        servers = [
            await asyncio.start_server(lambda r, w, p=port: answer(p, r, w), "127.0.0.1", port)
            for port in self.ports
        ]
        await stop.wait()
        for server in servers:
            server.close()


def _prometheus_metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("prometheus_tsdb_head_series ", "process_resident_memory_bytes ")):
            name, value = line.split()
            found[name] = float(value)
        elif line.startswith("prometheus_rule_group_last_duration_seconds{"):
            group = line.split('rule_group="')[1].split('"')[0].split(";")[-1]
            found[f"rules {group}"] = float(line.split()[-1])
    return found


def _query(url: str, expr: str) -> float:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=30
    ) as response:
        result = json.loads(response.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else float("nan")


def measure(baseline: Baseline, targets: int, expose: bool, seconds: float, port: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="fleet-"))
    options = RuleOptions(windows=("30m",))
    baselines = [] if expose else [(baseline, MODEL, {})]
    (folder / "rules.yml").write_text(to_yaml(rule_file(options, baselines)))
    fleet = Fleet(baseline, targets, port + 1, expose)
    config = {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(folder / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "model",
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in fleet.ports]}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(to_yaml(config))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(fleet.serve(stop),))
    thread.start()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("w"),
    )
    try:
        time.sleep(seconds)
        found = _prometheus_metrics(url)
        found["scrape seconds"] = _query(url, 'avg(scrape_duration_seconds{job="model"})')
        found["up"] = _query(url, 'sum(up{job="model"})')
        found["scraped"] = _query(url, 'sum(scrape_samples_scraped{job="model"})')
        found["ks series"] = _query(url, "count(boxkite:feature_ks:30m)")
        return found
    finally:
        process.terminate()
        process.wait(timeout=30)
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[20, 100, 400])
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--bins", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--port", type=int, default=19090)
    arguments = parser.parse_args()
    baseline = _baseline(arguments.features, arguments.bins)
    rows = []
    for targets in arguments.targets:
        for expose in (True, False):
            found = measure(baseline, targets, expose, arguments.seconds, arguments.port)
            rule_seconds = sum(v for k, v in found.items() if k.startswith("rules "))
            rows.append(
                [
                    f"{targets}",
                    "per replica" if expose else "rule file",
                    f"{found['up']:.0f}",
                    f"{found['scraped'] / targets:,.0f}",
                    f"{found['prometheus_tsdb_head_series']:,.0f}",
                    f"{found['process_resident_memory_bytes'] / 2**20:,.0f}",
                    f"{rule_seconds:.2f}",
                    f"{1000 * rule_seconds / targets:.1f}",
                    f"{1000 * found['scrape seconds']:.0f}",
                ]
            )
            print(rows[-1], {k: v for k, v in found.items() if k.startswith("rules ")}, flush=True)
    print(
        f"\n{arguments.features} features × {arguments.bins} bins per replica, scrape and rule "
        f"interval {INTERVAL}, {arguments.seconds:.0f} s per setup\n"
    )
    print(
        table(
            [
                "targets",
                "baseline",
                "up",
                "scraped per target",
                "head series",
                "Prometheus RSS MiB",
                "rule evaluation s",
                "ms per target",
                "scrape ms",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
