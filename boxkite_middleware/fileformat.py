"""The baseline file: Prometheus text format, written and read back exactly.

Writing goes through prometheus_client's own exposition, so the file, the baseline families
served at ``/metrics`` and the live families spell every ``le`` identically. Reading is line by
line, so that a broken file gets an error naming its line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import families
from .baseline import Baseline, BaselineError, Categories, Column, Histogram
from .binning import OTHER, canonical_category

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

END = "# EOF"


def metrics(baseline: Baseline, labels: dict[str, str]) -> list[Metric]:
    """The ``*_baseline`` families and ``boxkite_baseline_info``, with ``labels`` on each."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.utils import floatToGoString

    info = Metric(families.BASELINE_INFO.name, families.BASELINE_INFO.documentation, "gauge")
    info.add_sample(
        families.BASELINE_INFO.name,
        {
            **labels,
            "baseline": baseline.identity,
            "created": _timestamp(baseline.created),
            "version": baseline.version,
            "features": str(len(baseline.features)),
            "outputs": str(len(baseline.inference)),
        },
        1,
    )
    out: dict[str, Metric] = {}

    def family(chosen: families.Family) -> Metric:
        if chosen.name not in out:
            out[chosen.name] = Metric(chosen.name, chosen.documentation, chosen.kind)
        return out[chosen.name]

    def twin(template: dict[str, families.Family], role: str) -> Metric:
        return family(families.baseline_of(template[role]))

    for role, name, column in baseline.columns():
        column_labels = {**labels, families.COLUMN_LABEL[role]: name}
        if isinstance(column, Histogram):
            histogram = twin(families.VALUE_FAMILY, role)
            cumulative = 0
            for edge, count in zip((*column.edges, math.inf), column.counts):
                cumulative += count
                bucket_labels = {**column_labels, "le": floatToGoString(edge)}
                histogram.add_sample(histogram.name + "_bucket", bucket_labels, cumulative)
            if column.has_sum:  # OpenMetrics: no _sum with negative buckets, no _count alone
                histogram.add_sample(histogram.name + "_count", column_labels, cumulative)
                histogram.add_sample(histogram.name + "_sum", column_labels, column.total)
            stddev, width = families.STDDEV_FAMILY[role], families.WIDTH_FAMILY[role]
            _add_spread(column, column_labels, family(stddev), family(width))
        else:
            counter = twin(families.CATEGORY_FAMILY, role)
            for category, count in column.counts:
                sample_labels = {**column_labels, "category": category}
                counter.add_sample(counter.name + "_total", sample_labels, count)
        if column.missing is not None:
            missing = twin(families.MISSING_FAMILY, role)
            missing.add_sample(missing.name + "_total", column_labels, column.missing)
    return [info, *out.values()]


def _add_spread(column: Histogram, labels: dict[str, str], stddev: Metric, width: Metric) -> None:
    """What the Wasserstein distance needs in PromQL, which cannot read ``le`` as a number:
    the standard deviation, and each finite edge's distance to the next finite edge (labelled
    ``edge``, spelt as the bucket's ``le``: only histograms may have an ``le`` label)."""
    from prometheus_client.utils import floatToGoString

    if 0 < column.scale < math.inf:
        stddev.add_sample(stddev.name, labels, column.scale)
    for edge, following in zip(column.edges, column.edges[1:]):
        width.add_sample(width.name, {**labels, "edge": floatToGoString(edge)}, following - edge)


def render(baseline: Baseline) -> str:
    """The file `Baseline.save` writes: column order and kind, then the families, then EOF."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.metrics_core import Metric

    order = Metric(families.COLUMN_INFO.name, families.COLUMN_INFO.documentation, "gauge")
    for position, (role, name, column) in enumerate(baseline.columns()):
        order.add_sample(
            order.name,
            {"role": role, "name": name, "kind": column.kind, "position": str(position)},
            1,
        )
    collected = [order, *metrics(baseline, {})]
    text = generate_latest(_Collected(collected)).decode("utf-8")
    return text + END + "\n"


class _Collected:
    def __init__(self, collected: list[Metric]) -> None:
        self._collected = collected

    def collect(self) -> Iterable[Metric]:
        return self._collected


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class _Sample:
    line: int
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class _ColumnParts:
    """What the file says about one column, gathered from the families it appears in."""

    first_line: int
    buckets: list[tuple[float, float, int]] = field(default_factory=list)  # (le, cum, line)
    categories: list[tuple[str, float]] = field(default_factory=list)
    missing: float | None = None
    total: float = 0.0
    stddev: float | None = None


def parse(text: str, source: str) -> Baseline:
    samples, helps, end_line = _read_samples(text, source)
    if not samples:
        raise BaselineError(f"{source}: not a baseline file: it holds no samples")
    if any(sample.name.startswith("boxkite_") for sample in samples):
        if end_line is None:
            raise BaselineError(f"{source}: truncated: the file does not end with '{END}'")
        return _parse_current(samples, source)
    return _parse_legacy(samples, helps, source)


def _read_samples(text: str, source: str) -> tuple[list[_Sample], dict[str, str], int | None]:
    from prometheus_client.parser import text_string_to_metric_families

    samples: list[_Sample] = []
    helps: dict[str, str] = {}
    end_line = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if end_line is not None:
            raise BaselineError(f"{source}:{number}: content after '{END}'")
        if line.strip() == END:
            end_line = number
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[1] == "HELP":
                helps[parts[2]] = parts[3]
            continue
        try:
            (family,) = text_string_to_metric_families(line + "\n")
            (sample,) = family.samples
        except Exception as error:  # the parser raises several types for malformed input
            raise BaselineError(f"{source}:{number}: not a Prometheus sample: {line!r}") from error
        samples.append(_Sample(number, sample.name, dict(sample.labels), sample.value))
    return samples, helps, end_line


def _parse_current(samples: list[_Sample], source: str) -> Baseline:
    order: list[tuple[int, str, str, str, int]] = []
    parts: dict[tuple[str, str], _ColumnParts] = {}
    info: dict[str, str] = {}
    family_roles = _family_roles()
    for sample in samples:
        if sample.name == families.COLUMN_INFO.name:
            position = _label(sample, "position", source)
            if not position.isdigit():
                raise BaselineError(f"{source}:{sample.line}: position must be an integer")
            order.append(
                (
                    int(position),
                    _label(sample, "role", source),
                    _label(sample, "name", source),
                    _label(sample, "kind", source),
                    sample.line,
                )
            )
            continue
        if sample.name == families.BASELINE_INFO.name:
            info = sample.labels
            continue
        base, suffix = _split_suffix(sample.name)
        if base not in family_roles:
            raise BaselineError(f"{source}:{sample.line}: unknown family {sample.name!r}")
        role, part = family_roles[base]
        name = _label(sample, families.COLUMN_LABEL[role], source)
        column = parts.setdefault((role, name), _ColumnParts(sample.line))
        _add_part(column, part, suffix, sample, source)
    if not order:
        raise BaselineError(f"{source}: no {families.COLUMN_INFO.name} lines: not a baseline")
    order.sort()
    if [position for position, *_ in order] != list(range(len(order))):
        raise BaselineError(f"{source}: column positions are not 0..{len(order) - 1}")
    columns: dict[str, dict[str, Column]] = {"feature": {}, "inference": {}}
    for _, role, name, kind, line in order:
        if role not in columns:
            raise BaselineError(f"{source}:{line}: unknown role {role!r}")
        found = parts.pop((role, name), None)
        if found is None:
            raise BaselineError(f"{source}:{line}: column {name!r} has no data (truncated?)")
        columns[role][name] = _build(found, kind, f"{source}:{found.first_line}")
    if parts:
        (role, name), stray = next(iter(parts.items()))
        raise BaselineError(f"{source}:{stray.first_line}: column {name!r} is not declared")
    try:
        created = _seconds(info["created"]) if "created" in info else None
    except ValueError as error:
        raise BaselineError(f"{source}: bad created time {info['created']!r}") from error
    return _baseline(columns, source, created=created, version=info.get("version"))


def _family_roles() -> dict[str, tuple[str, str]]:
    """Baseline family name -> (role, which part of a column it holds)."""
    roles = {}
    for role in ("feature", "inference"):
        for part, by_role in (
            ("buckets", families.VALUE_FAMILY),
            ("categories", families.CATEGORY_FAMILY),
            ("missing", families.MISSING_FAMILY),
        ):
            roles[families.baseline_of(by_role[role]).name] = (role, part)
        roles[families.STDDEV_FAMILY[role].name] = (role, "stddev")
        roles[families.WIDTH_FAMILY[role].name] = (role, "widths")  # the edges say it
    return roles


_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _split_suffix(name: str) -> tuple[str, str]:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def _label(sample: _Sample, name: str, source: str) -> str:
    try:
        return sample.labels[name]
    except KeyError:
        raise BaselineError(f"{source}:{sample.line}: missing label {name!r}") from None


def _add_part(column: _ColumnParts, part: str, suffix: str, sample: _Sample, source: str) -> None:
    where = f"{source}:{sample.line}"
    if not (sample.value >= 0 and math.isfinite(sample.value)) and suffix != "_sum":
        raise BaselineError(f"{where}: counts must be finite and >= 0, not {sample.value}")
    if part == "buckets" and suffix == "_bucket":
        try:
            edge = float(sample.labels["le"])
        except (KeyError, ValueError):
            raise BaselineError(f"{where}: bucket without a numeric 'le' label") from None
        column.buckets.append((edge, sample.value, sample.line))
    elif part == "buckets" and suffix == "_sum":
        column.total = sample.value
    elif part == "categories":
        column.categories.append((_label(sample, "category", source), sample.value))
    elif part == "missing":
        column.missing = sample.value
    elif part == "stddev":
        column.stddev = sample.value


def _build(parts: _ColumnParts, kind: str, where: str) -> Column:
    if kind == "numeric":
        return _histogram(parts, where)
    if kind == "categorical":
        if not parts.categories:
            raise BaselineError(f"{where}: categorical column without categories")
        return _categories(parts.categories, parts.missing)
    raise BaselineError(f"{where}: unknown column kind {kind!r}")


def _histogram(parts: _ColumnParts, where: str) -> Histogram:
    if not parts.buckets:
        raise BaselineError(f"{where}: numeric column without buckets")
    edges, counts = [], []
    previous_edge, previous_count = -math.inf, 0.0
    for edge, cumulative, line in parts.buckets:
        if not edge > previous_edge:
            raise BaselineError(f"{where.rsplit(':', 1)[0]}:{line}: bucket edges out of order")
        if cumulative < previous_count:
            raise BaselineError(f"{where.rsplit(':', 1)[0]}:{line}: buckets are not cumulative")
        edges.append(edge)
        counts.append(int(cumulative - previous_count))
        previous_edge, previous_count = edge, cumulative
    if edges[-1] != math.inf:
        raise BaselineError(f"{where}: histogram has no +Inf bucket (truncated?)")
    missing = None if parts.missing is None else int(parts.missing)
    return Histogram(tuple(edges[:-1]), tuple(counts), missing, parts.total, parts.stddev)


def _categories(pairs: list[tuple[str, float]], missing: float | None) -> Categories:
    counts = dict((category, int(count)) for category, count in pairs)
    other = counts.pop(OTHER, 0)
    return Categories((*counts.items(), (OTHER, other)), None if missing is None else int(missing))


def _baseline(columns: dict[str, dict[str, Column]], source: str, **meta: Any) -> Baseline:
    try:
        return Baseline(columns["feature"], columns["inference"], **meta)
    except ValueError as error:
        raise BaselineError(f"{source}: {error}") from error


# Files of the original boxkite library: feature_N_value_baseline histograms (or _total
# counters with a `bin` label), names in the HELP text, inference_value_baseline.
_LEGACY = re.compile(r"^(?:feature_(\d+)|inference)_value_baseline$")
_LEGACY_HELP = re.compile(r"Baseline values for feature: (.*)$")


def _parse_legacy(samples: list[_Sample], helps: dict[str, str], source: str) -> Baseline:
    parts: dict[tuple[str, int], _ColumnParts] = {}
    for sample in samples:
        base, suffix = _split_suffix(sample.name)
        matched = _LEGACY.match(base)
        if matched is None:
            raise BaselineError(f"{source}:{sample.line}: not a baseline family: {sample.name!r}")
        key = ("feature", int(matched.group(1))) if matched.group(1) else ("inference", 0)
        column = parts.setdefault(key, _ColumnParts(sample.line))
        if suffix == "_total":
            category = canonical_category(_legacy_number(_label(sample, "bin", source)))
            column.categories.append((category or "", sample.value))
        else:
            _add_part(column, "buckets", suffix, sample, source)
    columns: dict[str, dict[str, Column]] = {"feature": {}, "inference": {}}
    for (role, index), found in sorted(parts.items()):
        where = f"{source}:{found.first_line}"
        if role == "feature":
            help_text = helps.get(f"feature_{index}_value_baseline") or helps.get(
                f"feature_{index}_value_baseline_total", ""
            )
            named = _LEGACY_HELP.search(help_text)
            name = named.group(1) if named else f"feature_{index}"
        else:
            name = "0"
        kind = "categorical" if found.categories else "numeric"
        columns[role][name] = _build(found, kind, where)
    return _baseline(columns, source, created=None, version="boxkite (legacy)")


def _legacy_number(text: str) -> Any:
    """boxkite wrote category bins with str(); numbers come back as numbers."""
    try:
        return float(text)
    except ValueError:
        return text
