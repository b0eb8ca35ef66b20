"""The boxkite-middleware command, run as users run it (a subprocess)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from boxkite_middleware import Baseline
from boxkite_middleware.baseline import Categories, Histogram

from .conftest import LEGACY, WINE


def _cli(*arguments: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "boxkite_middleware.cli", *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def _write_csv(path, separator=","):
    rng = np.random.default_rng(0)
    lines = [separator.join(["size", "colour", "grade", "price"])]
    for i in range(300):
        colour = ["red", "green", ""][i % 3]
        lines.append(
            separator.join(
                [f"{rng.normal(10, 2):.3f}", colour, str(i % 4), f"{rng.exponential(3):.2f}"]
            )
        )
    path.write_text("\n".join(lines) + "\n")


def test_baseline_from_csv_then_show(tmp_path):
    data, output = tmp_path / "train.csv", tmp_path / "histogram.prom"
    _write_csv(data, ";")
    built = _cli("baseline", str(data), "-o", str(output), "--inference-column", "price")
    assert built.returncode == 0, built.stderr
    baseline = Baseline.load(output)
    assert list(baseline.features) == ["size", "colour", "grade"]
    assert isinstance(baseline.features["size"], Histogram)
    colour = baseline.features["colour"]
    assert isinstance(colour, Categories) and colour.missing == 100
    assert dict(baseline.features["grade"].counts)["3"] == 75
    assert isinstance(baseline.inference["0"], Histogram)
    shown = _cli("show", str(output))
    assert shown.returncode == 0
    assert baseline.identity in shown.stdout
    assert "colour" in shown.stdout and "missing 33.3%" in shown.stdout
    assert "categorical" in shown.stdout and "numeric" in shown.stdout


def test_categorical_override(tmp_path):
    data, output = tmp_path / "train.csv", tmp_path / "h.prom"
    _write_csv(data)
    assert _cli("baseline", str(data), "-o", str(output), "--categorical", "price").returncode == 0
    assert isinstance(Baseline.load(output).features["price"], Categories)


def test_real_wine_csv(tmp_path):
    output = tmp_path / "wine.prom"
    built = _cli("baseline", str(WINE), "-o", str(output), "--inference-column", "quality")
    assert built.returncode == 0, built.stderr
    assert len(Baseline.load(output).features) == 11


def test_show_reads_legacy_files():
    shown = _cli("show", str(LEGACY))
    assert shown.returncode == 0 and "missing ?" in shown.stdout and "age" in shown.stdout


def test_errors_are_one_line_and_non_zero(tmp_path):
    data = tmp_path / "train.csv"
    _write_csv(data)
    cases = [
        _cli("show", str(tmp_path / "missing.prom")),
        _cli("baseline", str(data), "--inference-column", "nope"),
        _cli("baseline", str(tmp_path / "absent.csv")),
    ]
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    cases.append(_cli("baseline", str(tmp_path / "ragged.csv")))
    for result in cases:
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "error:" in result.stderr, result.stderr
    assert "ragged.csv:3" in cases[-1].stderr
    assert "'nope'" in cases[1].stderr


WITHOUT_PYARROW = (
    "import sys; sys.modules['pyarrow'] = None; from boxkite_middleware.cli import main"
)


@pytest.mark.parametrize("reader", ["pyarrow", "numpy and csv"])
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".parquet"])
def test_every_format_gives_the_same_baseline(tmp_path, suffix, reader):
    """CSV plain or compressed, and Parquet, read by pyarrow or (without it) by numpy and the
    csv module: one baseline, to the identity."""
    import bz2
    import gzip
    import lzma

    import pyarrow.csv
    import pyarrow.parquet

    plain = tmp_path / "train.csv"
    _write_csv(plain)
    reference = tmp_path / "reference.prom"
    assert _cli("baseline", str(plain), "-o", str(reference)).returncode == 0
    data = tmp_path / f"train{suffix}"
    if suffix == ".parquet":
        pyarrow.parquet.write_table(pyarrow.csv.read_csv(plain), data)
    elif suffix != ".csv":
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[data.suffix]
        with opener(data, "wb") as file:
            file.write(plain.read_bytes())
    output = tmp_path / "built.prom"
    arguments = ["baseline", str(data), "-o", str(output)]
    if reader == "pyarrow":
        built = _cli(*arguments)
    else:
        built = subprocess.run(
            [sys.executable, "-c", f"{WITHOUT_PYARROW}; sys.exit(main({arguments!r}))"],
            capture_output=True,
            text=True,
        )
    if suffix == ".parquet" and reader != "pyarrow":
        assert built.returncode == 1 and "boxkite-middleware[data]" in built.stderr
        return
    assert built.returncode == 0, built.stderr
    assert Baseline.load(output).identity == Baseline.load(reference).identity


def test_an_existing_baseline_is_not_overwritten_without_force(tmp_path):
    data, output = tmp_path / "train.csv", tmp_path / "histogram.prom"
    _write_csv(data)
    output.write_text("a running server reads this")
    refused = _cli("baseline", str(data), cwd=tmp_path)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert output.read_text() == "a running server reads this"
    assert _cli("baseline", str(data), "--force", cwd=tmp_path).returncode == 0
    assert Baseline.load(output).features


def test_version_module_entry_point_and_defaults_in_help():
    from boxkite_middleware import __version__

    version = subprocess.run(
        [sys.executable, "-m", "boxkite_middleware", "--version"], capture_output=True, text=True
    )
    assert version.stdout.strip() == f"boxkite-middleware {__version__}"
    helped = _cli("baseline", "--help").stdout
    assert "(default: histogram.prom)" in helped and "(default: 50)" in helped
    assert "(default: 0.05)" in _cli("rules", "--help").stdout
