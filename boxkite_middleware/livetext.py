"""The live families' exposition text, with each series' line written once.

prometheus_client's encoders validate and escape every name and label of every sample on
every scrape (~10 µs a sample): with ~1,000 samples, a scrape of an 11-feature model took
~20 ms, most of it for series whose names and labels never change. Here a `Layout` asks
prometheus_client's own encoders, once per set of series, for the header lines and for each
sample's line at value 0, and keeps everything before the value. A scrape then sums the stored
values with numpy, makes the histogram buckets cumulative, and only formats numbers — into the
very lines prometheus_client would have written.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

FORMATS = ("text", "openmetrics")
EOF = "# EOF\n"


@dataclass(frozen=True)
class Key:
    """One stored key (prometheus_client's ``mmap_key``), parsed."""

    family: str
    documentation: str
    name: str
    labels: tuple[tuple[str, str], ...]
    """Sorted, and for a bucket without its ``le``."""
    le: float | None


@functools.lru_cache(maxsize=1 << 16)
def parse_key(key: str) -> Key:
    family, name, labels, documentation = json.loads(key)
    le = labels.pop("le", None)
    return Key(
        family,
        documentation,
        name,
        tuple(sorted(labels.items())),
        None if le is None else float(le),
    )


class Layout:
    """What a scrape writes for a given list of stored keys, all but the values.

    Families come in the order of their first key; a histogram's series in the order of their
    first key, each as its buckets by ``le`` (cumulative), then ``_count`` (only with a
    ``_sum``: OpenMetrics forbids ``_count`` alone), then ``_sum``."""

    def __init__(self, keys: Sequence[str], kinds: Sequence[str]) -> None:
        families: dict[str, tuple[str, str, dict]] = {}
        for slot, (key, kind) in enumerate(zip(keys, kinds)):
            parsed = parse_key(key)
            entry = families.setdefault(parsed.family, (kind, parsed.documentation, {}))
            entry[2].setdefault((parsed.name if kind != "histogram" else "", parsed.labels), [])
            group = entry[2][parsed.name if kind != "histogram" else "", parsed.labels]
            group.append((parsed, slot))
        metrics: list[Metric] = []
        direct: list[tuple[int, int]] = []  # (line, slot)
        buckets: list[int] = []  # slots, segment by segment, in le order
        bucket_lines: list[int] = []
        segment_ends: list[int] = []  # index in `buckets` one past each segment
        count_lines: list[tuple[int, int]] = []  # (line, segment)
        line = 0
        for family, (kind, documentation, groups) in families.items():
            metric = Metric(family, documentation, kind)
            for (_, labels), members in groups.items():
                if kind != "histogram":
                    for parsed, slot in members:
                        metric.add_sample(parsed.name, dict(labels), 0.0)
                        direct.append((line, slot))
                        line += 1
                    continue
                ordered = sorted((p.le, slot) for p, slot in members if p.le is not None)
                for le, slot in ordered:
                    metric.add_sample(
                        family + "_bucket", {**dict(labels), "le": floatToGoString(le)}, 0.0
                    )
                    buckets.append(slot)
                    bucket_lines.append(line)
                    line += 1
                segment_ends.append(len(buckets))
                sums = [slot for p, slot in members if p.name == family + "_sum"]
                if sums:
                    metric.add_sample(family + "_count", dict(labels), 0.0)
                    count_lines.append((line, len(segment_ends) - 1))
                    line += 1
                    metric.add_sample(family + "_sum", dict(labels), 0.0)
                    direct.append((line, sums[0]))
                    line += 1
            metrics.append(metric)
        self._lines = line
        self._direct_lines = np.array([d[0] for d in direct], dtype=np.intp)
        self._direct_slots = np.array([d[1] for d in direct], dtype=np.intp)
        self._buckets = np.array(buckets, dtype=np.intp)
        self._bucket_lines = np.array(bucket_lines, dtype=np.intp)
        ends = np.array(segment_ends, dtype=np.intp)
        self._segment_starts = np.concatenate(([0], ends[:-1])).astype(np.intp)
        self._segment_of_bucket = np.repeat(np.arange(len(ends)), np.diff(np.r_[0, ends]))
        self._count_lines = np.array([c[0] for c in count_lines], dtype=np.intp)
        self._count_ends = np.array([ends[c[1]] - 1 for c in count_lines], dtype=np.intp)
        self._text = {form: _prefixes(metrics, form) for form in FORMATS}

    def render(self, totals: np.ndarray, form: str) -> str:
        """The families' text for these totals (one per key), without OpenMetrics' ``# EOF``."""
        values = np.zeros(self._lines)
        values[self._direct_lines] = totals[self._direct_slots]
        if self._buckets.size:
            running = np.cumsum(totals[self._buckets])
            before = np.r_[0.0, running][self._segment_starts]
            cumulative = running - before[self._segment_of_bucket]
            values[self._bucket_lines] = cumulative
            values[self._count_lines] = cumulative[self._count_ends]
        pieces, prefixes = self._text[form]
        out = []
        for header, lines in pieces:
            out.append(header)
            out.extend(f"{prefixes[i]} {floatToGoString(values[i])}\n" for i in lines)
        return "".join(out)


def _prefixes(metrics: list[Metric], form: str) -> tuple[list[tuple[str, range]], list[str]]:
    """prometheus_client's own text for these families at value 0, cut before each value:
    headers per family, and each sample line's prefix in order."""
    pieces: list[tuple[str, range]] = []
    prefixes: list[str] = []
    for metric in metrics:
        text = _encode([metric], form)
        lines = text.splitlines(keepends=True)
        header = "".join(line for line in lines if line.startswith("#") and line != EOF)
        samples = [line for line in lines if not line.startswith("#")]
        start = len(prefixes)
        prefixes.extend(line.rstrip("\n").rsplit(" ", 1)[0] for line in samples)
        pieces.append((header, range(start, len(prefixes))))
    return pieces, prefixes


class _Metrics:
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def _encode(metrics: list[Metric], form: str) -> str:
    if form == "openmetrics":
        return generate_openmetrics(_Metrics(metrics)).decode()
    return generate_latest(_Metrics(metrics)).decode()


@functools.lru_cache(maxsize=32)
def layout(keys: tuple[str, ...], kinds: tuple[str, ...]) -> Layout:
    return Layout(keys, kinds)
