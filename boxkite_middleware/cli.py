"""The ``boxkite-middleware`` command: baselines, drift rules and dashboards, drift tables."""

from __future__ import annotations

import argparse
import bz2
import csv
import functools
import gzip
import json
import lzma
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .baseline import DEFAULT_MAX_BINS, DEFAULT_MAX_CATEGORIES, Baseline, Categories, Column
from .binning import numeric_or_text
from .dashboard import dashboard
from .drift import as_record, distributions, judge, since, table
from .rules import RuleOptions, rule_file, to_yaml

PROGRESS_EVERY = 250_000
BLOCKS = " ▁▂▃▄▅▆▇█"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    try:
        return arguments.run(arguments)
    except (OSError, ValueError, TypeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error
        print(f"boxkite-middleware: error: {message}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boxkite-middleware", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    command = functools.partial(
        commands.add_parser, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )

    build = command("baseline", help="build a baseline from a CSV or Parquet file")
    build.add_argument(
        "data",
        type=Path,
        help="training data: CSV with a header row (also .gz, .bz2, .xz), or Parquet",
    )
    build.add_argument("-o", "--output", type=Path, default=Path("histogram.prom"), help="file")
    build.add_argument("--force", action="store_true", help="overwrite an existing output")
    build.add_argument(
        "--categorical", nargs="+", default=[], metavar="COL", help="count these as categories"
    )
    build.add_argument(
        "--continuous", nargs="+", default=[], metavar="COL", help="bin these as numbers"
    )
    build.add_argument(
        "--inference-column",
        nargs="+",
        default=[],
        metavar="COL",
        help="columns holding the model's predictions rather than features",
    )
    build.add_argument("--max-bins", type=int, default=DEFAULT_MAX_BINS, help="per column")
    build.add_argument(
        "--max-categories", type=int, default=DEFAULT_MAX_CATEGORIES, help="per column"
    )
    build.add_argument(
        "--max-samples", type=int, default=None, help="count a random sample (default: all)"
    )
    build.add_argument("--seed", type=int, default=0, help="of that sample")
    build.set_defaults(run=_build)

    show = command("show", help="summarise a baseline file")
    show.add_argument("baseline", type=Path, help="a file written by `baseline`")
    show.set_defaults(run=_show)

    rules = command("rules", help="write Prometheus drift rules (YAML)")
    _rule_options(rules)
    rules.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="write this baseline's series as constant rules, once per Prometheus instead of "
        "once per replica (replicas may then run with expose_baseline=False); repeat for two "
        "baselines during a rolling deploy",
    )
    rules.add_argument("--model", default="default", help="the model label of --baseline")
    rules.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a constant label of --baseline, as the middleware's labels= sets it",
    )
    rules.add_argument("-o", "--output", type=Path, default=None, help="default: stdout")
    rules.set_defaults(run=_rules)

    board = command("dashboard", help="write a Grafana dashboard (JSON)")
    board.add_argument(
        "--window",
        action="append",
        metavar="DURATION",
        help="the rule windows to offer (as given to `rules`)",
    )
    board.add_argument("-o", "--output", type=Path, default=None, help="default: stdout")
    board.set_defaults(run=_dashboard)

    drift = command(
        "drift",
        help="drift statistics from a live /metrics",
        epilog=f"exit status: 0 no drift, {DRIFT_FOUND} drift found, 1 an error",
    )
    drift.add_argument(
        "metrics",
        help="a /metrics URL (host:port[/path] means http://), or a file holding a scrape",
    )
    drift.add_argument(
        "--interval",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="judge what was counted between two scrapes this far apart (30s, 5m) instead of "
        "everything since the workers started",
    )
    drift.add_argument("--json", action="store_true", help="one JSON object per column")
    _threshold_options(drift)
    drift.set_defaults(run=_drift)

    report = command("report", help="write the drift report page (self-contained HTML)")
    report.add_argument(
        "source",
        help="a /metrics URL (host:port means http://host:port/metrics), a saved scrape, or, "
        "with --window, a Prometheus server's URL (the whole fleet)",
    )
    report.add_argument(
        "-o", "--output", type=Path, default=Path("drift-report.html"), help="the page"
    )
    report.add_argument(
        "--interval",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="from a /metrics URL: what was counted between two scrapes this far apart",
    )
    report.add_argument(
        "--window", default=None, metavar="DURATION", help="from Prometheus: this window (30m)"
    )
    _threshold_options(report)
    report.set_defaults(run=_report)

    serve = command(
        "serve",
        help="serve an MLflow model with its baseline: MLflow's scoring app under gunicorn",
    )
    serve.add_argument("model_uri", help="models:/NAME/VERSION, models:/NAME@ALIAS, runs:/…")
    serve.add_argument("-w", "--workers", type=int, default=2, help="uvicorn worker processes")
    serve.add_argument("--host", default="127.0.0.1", help="address of the model's port")
    serve.add_argument("-p", "--port", type=int, default=5000, help="the model's port")
    serve.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics here only (default: -p)"
    )
    serve.add_argument(
        "--model", default=None, help="the model label (default: the registered name)"
    )
    serve.set_defaults(run=_serve)
    return parser


def _build(arguments: argparse.Namespace) -> int:
    if arguments.output.exists() and not arguments.force:
        raise ValueError(
            f"{arguments.output} exists (a server may be reading it): choose another --output "
            "or pass --force"
        )
    table = read_table(arguments.data)
    unknown = [
        name
        for name in (*arguments.inference_column, *arguments.categorical, *arguments.continuous)
        if name not in table
    ]
    if unknown:
        raise ValueError(f"{arguments.data}: no column named {unknown[0]!r}")
    outputs = {str(i): table.pop(name) for i, name in enumerate(arguments.inference_column)}
    baseline = Baseline.from_data(
        table,
        inference=outputs or None,
        categorical=arguments.categorical,
        continuous=arguments.continuous,
        max_bins=arguments.max_bins,
        max_categories=arguments.max_categories,
        max_samples=arguments.max_samples,
        seed=arguments.seed,
    )
    baseline.save(arguments.output)
    print(f"wrote {arguments.output}: {baseline!r}")
    return 0


COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def read_table(path: Path) -> dict[str, Any]:
    """Columns of a CSV (any of , ; tab as separator; plain or .gz, .bz2, .xz) or Parquet
    file, by header name.

    With pyarrow installed (the ``data`` extra) it reads both formats. Without it, or when
    pyarrow finds a CSV malformed (the csv module then says on which line), an all-numeric CSV
    goes through numpy's C parser (a million rows in under a second) and one with text or empty
    cells through the csv module, with progress on stderr; Parquet needs pyarrow.
    """
    try:
        import pyarrow
    except ImportError:
        pyarrow = None
    if path.suffix in (".parquet", ".pq"):
        if pyarrow is None:
            raise ValueError("Parquet needs pyarrow: pip install 'boxkite-middleware[data]'")
        import pyarrow.parquet

        return _columns(pyarrow.parquet.read_table(path))
    opener: Any = COMPRESSED.get(path.suffix, open)
    with opener(path, "rt", newline="", encoding="utf-8-sig") as file:
        header_line = file.readline()
    if not header_line.strip():
        raise ValueError(f"{path}: empty file")
    delimiter = max(",;\t", key=header_line.count)
    if pyarrow is not None:
        import pyarrow.csv

        try:
            with opener(path, "rb") as raw:
                options = pyarrow.csv.ParseOptions(delimiter=delimiter)
                return _columns(pyarrow.csv.read_csv(raw, parse_options=options))
        except pyarrow.ArrowInvalid:
            pass
    with opener(path, "rt", newline="", encoding="utf-8-sig") as file:
        header = next(csv.reader([file.readline()], delimiter=delimiter))
        try:
            numbers = np.loadtxt(file, delimiter=delimiter, dtype=np.float64, ndmin=2)
        except ValueError:
            file.seek(0)
            return _read_text_table(path, csv.reader(file, delimiter=delimiter))
    if numbers.shape[1] != len(header):
        raise ValueError(f"{path}: {numbers.shape[1]} fields, header has {len(header)}")
    return {name: numbers[:, i] for i, name in enumerate(header)}


def _columns(table: Any) -> dict[str, Any]:
    """A pyarrow Table's columns by name, as numpy arrays (text columns as objects)."""
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _read_text_table(path: Path, reader: Any) -> dict[str, Any]:
    header = next(reader)
    cells: list[list[str]] = [[] for _ in header]
    for number, row in enumerate(reader, 2):
        if len(row) != len(header):
            raise ValueError(f"{path}:{number}: {len(row)} fields, header has {len(header)}")
        for column, cell in zip(cells, row):
            column.append(cell)
        if number % PROGRESS_EVERY == 0:
            print(f"read {number - 1:,} rows", file=sys.stderr)
    return {name: numeric_or_text(column) for name, column in zip(header, cells)}


def _show(arguments: argparse.Namespace) -> int:
    baseline = Baseline.load(arguments.baseline)
    print(f"{arguments.baseline}: baseline {baseline.identity}, version {baseline.version}")
    for role, name, column in baseline.columns():
        print(f"  {role:<9} {name:<24} {_summary(column)}")
    return 0


def _rule_options(parser: argparse.ArgumentParser) -> None:
    defaults = RuleOptions()
    parser.add_argument(
        "--window",
        action="append",
        metavar="DURATION",
        help=f"repeat for several windows (default {defaults.windows[0]})",
    )
    _threshold_options(parser)
    parser.add_argument(
        "--for",
        dest="duration",
        default=defaults.duration,
        help="how long a condition must hold before the alert fires",
    )
    parser.add_argument(
        "--sample-size",
        choices=("rows", "requests"),
        default=defaults.sample_size,
        help="count n in rows, or in requests (rows of a batch are not independent)",
    )
    parser.add_argument(
        "--group-by",
        action="append",
        default=[],
        metavar="LABEL",
        help="also keep this label apart (e.g. namespace)",
    )


def _threshold_options(parser: argparse.ArgumentParser) -> None:
    """The flags that set the thresholds, shared by `rules` and `drift`."""
    defaults = RuleOptions()
    parser.add_argument(
        "--alpha",
        type=float,
        default=defaults.alpha,
        help="false-alarm rate per model and window, split over its columns",
    )
    for name, what in (("ks", "K-S distance"), ("psi", "PSI"), ("missing", "missing-rate change")):
        parser.add_argument(
            f"--{name}-floor",
            type=float,
            default=getattr(defaults, f"{name}_floor"),
            help=f"the least {what} that alerts, however significant (opt-in)",
        )
    parser.add_argument(
        "--smoothing",
        type=float,
        default=defaults.smoothing,
        help="uniform share mixed into each categorical distribution",
    )
    parser.add_argument(
        "--min-live",
        type=int,
        default=defaults.min_live,
        help="no verdict or alert below this many live values (rows, for the missing rate)",
    )


THRESHOLDS = ("alpha", "ks_floor", "psi_floor", "missing_floor", "smoothing", "min_live")


def _thresholds(arguments: argparse.Namespace) -> dict[str, Any]:
    """The `RuleOptions` fields `_threshold_options` sets, as given."""
    return {name: getattr(arguments, name) for name in THRESHOLDS}


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)


def _rules(arguments: argparse.Namespace) -> int:
    options = RuleOptions(
        windows=tuple(arguments.window or RuleOptions().windows),
        duration=arguments.duration,
        sample_size=arguments.sample_size,
        group_by=tuple(arguments.group_by),
        **_thresholds(arguments),
    )
    from .recorder import check_labels

    labels = check_labels(dict(_pair(text) for text in arguments.label))
    baselines = [(Baseline.load(path), arguments.model, labels) for path in arguments.baseline]
    header = "# Generated by `boxkite-middleware rules`; see its --help for the options.\n"
    _write(header + to_yaml(rule_file(options, baselines)) + "\n", arguments.output)
    return 0


def _pair(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise ValueError(f"--label {text!r}: give KEY=VALUE")
    return key, value


def _dashboard(arguments: argparse.Namespace) -> int:
    options = RuleOptions(windows=tuple(arguments.window or RuleOptions().windows))
    _write(json.dumps(dashboard(options), indent=2, ensure_ascii=False) + "\n", arguments.output)
    return 0


DRIFT_FOUND = 3
"""``drift``'s exit status when a column drifted (1 is an error, 2 argparse's usage error)."""


def _duration(text: str) -> float:
    """``90``, ``90s``, ``5m`` or ``1h`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    scale = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        seconds = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 5m)") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError("the interval must be positive")
    return seconds


def _verdicts(source: str, interval: float | None, arguments: argparse.Namespace) -> list:
    """Judge a /metrics source: everything since the workers started, or an interval."""
    found = distributions(_scrape(source))
    if interval is not None:
        time.sleep(interval)
        found = since(distributions(_scrape(source)), found)
    if not found:
        raise ValueError(f"{source}: no boxkite baseline and live families")
    return judge(found, RuleOptions(**_thresholds(arguments)))


def _drift(arguments: argparse.Namespace) -> int:
    verdicts = _verdicts(arguments.metrics, arguments.interval, arguments)
    if arguments.json:
        for verdict in verdicts:
            print(json.dumps(as_record(verdict), ensure_ascii=False))
    else:
        print(table(verdicts))
    return DRIFT_FOUND if any(verdict.drifted for verdict in verdicts) else 0


def _report(arguments: argparse.Namespace) -> int:
    from .drift import fleet_text
    from .report import page

    if arguments.window is not None:
        RuleOptions(windows=(arguments.window,))  # a Prometheus duration, or a ValueError
        url = _url(arguments.source, "")
        found = distributions(fleet_text(url, arguments.window))
        if not found:
            raise ValueError(f"{url}: no boxkite series over {arguments.window}")
        verdicts = judge(found, RuleOptions(**_thresholds(arguments)))
        source, window = url, f"the last {arguments.window}, every replica"
    else:
        verdicts = _verdicts(arguments.source, arguments.interval, arguments)
        source = arguments.source
        window = (
            f"{arguments.interval:g} s between two scrapes"
            if arguments.interval
            else "since the workers started"
        )
    arguments.output.write_text(page(verdicts, source=source, window=window), encoding="utf-8")
    print(f"wrote {arguments.output}", file=sys.stderr)
    return DRIFT_FOUND if any(verdict.drifted for verdict in verdicts) else 0


def _url(source: str, default_path: str) -> str:
    """``host:port`` as ``http://host:port`` plus ``default_path`` if it has no path."""
    if source.startswith(("http://", "https://")):
        return source
    if "/" not in source:
        source += default_path
    return "http://" + source


def _scrape(source: str) -> str:
    """A scrape's text: from a file, or from a URL (``host:port`` alone means its /metrics)."""
    if not source.startswith(("http://", "https://")) and Path(source).exists():
        return Path(source).read_text(encoding="utf-8")
    with urllib.request.urlopen(_url(source, "/metrics"), timeout=30) as response:
        return response.read().decode("utf-8")


def _serve(arguments: argparse.Namespace) -> int:
    """Download the model (with its baseline) once, then run gunicorn: each uvicorn worker
    builds MLflow's scoring app for it, wrapped in the middleware. Signals are passed on;
    the download is removed when gunicorn has stopped."""
    import os
    import signal
    import subprocess
    import tempfile

    import mlflow

    from . import mlflow as serving

    name, version = serving.registered(arguments.model_uri)
    with tempfile.TemporaryDirectory(prefix="boxkite-mlflow-model-") as directory:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=arguments.model_uri, dst_path=directory
        )
        environment = {
            **os.environ,
            serving.MODEL_PATH: local,
            serving.MODEL_LABEL: arguments.model or name,
        }
        if version is not None:
            environment[serving.MODEL_VERSION] = version
        if arguments.metrics_port is not None:
            environment["BOXKITE_METRICS_PORT"] = str(arguments.metrics_port)
        command = [sys.executable, "-m", "gunicorn", "-c", "python:boxkite_middleware.gunicorn"]
        command += ["-k", "uvicorn_worker.UvicornWorker", "--workers", str(arguments.workers)]
        command += ["--bind", f"{arguments.host}:{arguments.port}"]
        command += ["boxkite_middleware.mlflow:serving_app()"]
        print(
            f"boxkite-middleware: serving {arguments.model_uri} as model "
            f"{environment[serving.MODEL_LABEL]!r} on {arguments.host}:{arguments.port}",
            file=sys.stderr,
            flush=True,
        )
        server = subprocess.Popen(command, env=environment)
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, lambda received, _: server.send_signal(received))
        return server.wait()


def _summary(column: Column) -> str:
    if isinstance(column, Categories):
        counts = [count for _, count in column.counts]
        shape = f"{len(counts) - 1} categories"
        top = ", ".join(f"{name}={count}" for name, count in column.counts[:4])
    else:
        counts = list(column.counts)
        shape = f"{len(counts)} bins [{column.edges[0]:.4g} .. {column.edges[-1]:.4g}]"
        top = ""
    total = sum(counts)
    missing = "missing ?" if column.missing is None else _rate(column.missing, total)
    return f"{column.kind:<11} {shape:<32} n={total:<9} {missing:<14} {_sparkline(counts)} {top}"


def _rate(missing: int, present: int) -> str:
    whole = missing + present
    return f"missing {100 * missing / whole:.1f}%" if whole else "missing 0%"


def _sparkline(counts: list[int]) -> str:
    peak = max(counts) or 1
    scaled = np.ceil(np.asarray(counts) / peak * (len(BLOCKS) - 1)).astype(int)
    return "".join(BLOCKS[level] for level in scaled)


if __name__ == "__main__":
    sys.exit(main())
