"""Batch scoring jobs: record a table and its predictions without HTTP, push to a Pushgateway.

A nightly ``model.predict(df)`` is where many models run. `BatchRecorder` counts its features
and predictions with the same recorder, bins and families as the middleware, and pushes them
to Prometheus's Pushgateway, so the drift rules work unchanged:

    with BatchRecorder("histogram.prom", model="wine", gateway="pushgateway:9091", job="nightly"):
        ...  # (or without ``with``: `record`, then `push`)

The drift rules read counters with ``increase()``, which needs a value before and after. So
the context manager pushes twice: every series at 0 when the job starts, the counts when it
ends; Prometheus must scrape the gateway in between (the job's own run time is usually enough;
`push` waits ``settle`` seconds after the first push for short jobs).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from . import exposition, multiprocess
from .baseline import Baseline, _named_columns, _output_columns
from .payload import Frame, Reason
from .recorder import recorder_for
from .store import store

SLICE_ROWS = 65_536
"""Rows counted at a time: memory stays bounded for a table of any length."""


class BatchRecorder:
    """Count a batch job's features and predictions into the middleware's families."""

    def __init__(
        self,
        baseline: Baseline | str | Path,
        *,
        model: str = "default",
        labels: Mapping[str, str] | None = None,
        gateway: str | None = None,
        job: str = "boxkite_batch",
        grouping_key: Mapping[str, str] | None = None,
        settle: float = 0.0,
    ) -> None:
        if isinstance(baseline, (str, Path)):
            baseline = Baseline.load(baseline)
        self.recorder = recorder_for(model, baseline, labels=labels)
        store().ensure_files()
        if not multiprocess.enabled():
            exposition.register_collectors()
        self.gateway, self.job = gateway, job
        self.grouping_key = dict(grouping_key or {})
        self.settle = settle

    def record(
        self,
        features: Any,
        predictions: Any = None,
        *,
        columns: Sequence[str] | None = None,
    ) -> str:
        """Count one table (a DataFrame, a mapping ``name -> values``, ``(name, values)`` pairs
        or a 2-D array with ``columns=``) and its predictions (1-D, 2-D or a mapping, as
        `Baseline.from_data` takes them); return the reason it was counted with."""
        named = _named_columns(features, columns)
        names = tuple(name for name, _ in named)
        values = [np.asarray(column) for _, column in named]
        rows = len(values[0]) if values else 0
        outputs: Mapping[str, Any] | str = Reason.NO_PREDICTIONS
        if isinstance(predictions, Mapping):  # a probability matrix is split by the recorder
            outputs = {str(name): np.asarray(values) for name, values in predictions.items()}
        elif predictions is not None:
            outputs = {
                name: np.asarray(column) for name, column in _output_columns(predictions, None)
            }
        return self.recorder.record_slices(_slices(names, values, rows), outputs)

    def push(self) -> None:
        """Push every series of this process to the gateway, replacing the job's last push."""
        from prometheus_client import CollectorRegistry, push_to_gateway

        if self.gateway is None:
            raise ValueError("BatchRecorder(gateway=...) is needed to push")
        registry = CollectorRegistry()
        if multiprocess.enabled():
            registry.register(exposition.FilesCollector(multiprocess.directory()))
            registry.register(exposition.BaselineCollector(multiprocess.directory()))
        else:
            registry.register(exposition.StoreCollector())
            registry.register(exposition.BaselineCollector())
        push_to_gateway(
            self.gateway, job=self.job, registry=registry, grouping_key=self.grouping_key
        )

    def __enter__(self) -> BatchRecorder:
        self.push()  # every series at 0: increase() then sees the job's counts
        time.sleep(self.settle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.push()


def _slices(names: tuple[str, ...], values: list[np.ndarray], rows: int) -> Iterator[Frame]:
    for start in range(0, max(rows, 1), SLICE_ROWS):
        stop = min(start + SLICE_ROWS, rows)
        yield Frame(names, tuple(column[start:stop] for column in values), stop - start)
