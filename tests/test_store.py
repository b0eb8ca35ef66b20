"""The store: slots in memory or in mmap files that prometheus_client's own reader reads."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import CollectorRegistry

from boxkite_middleware import families
from boxkite_middleware.store import COUNTER, HISTOGRAM, Increments, Series, Store

COUNTERS = [
    Series(families.REQUESTS, "boxkite_requests_total", {"model": "m", "reason": str(i)})
    for i in range(5)
]
BUCKETS = [
    Series(families.FEATURE_VALUE, "boxkite_feature_value_bucket", {"feature": "x", "le": f"{i}.0"})
    for i in range(6)
]

increments_strategy = st.lists(
    st.tuples(
        st.lists(st.integers(0, len(BUCKETS) - 1), max_size=30),  # a batch's unit slots
        st.lists(  # other amounts: (block, slot, amount)
            st.tuples(st.sampled_from([COUNTER, HISTOGRAM]), st.integers(0, 4), st.integers(1, 9)),
            max_size=6,
        ),
    ),
    max_size=8,
)


def _stores(tmp_path) -> list[Store]:
    stores = [Store(None), Store(str(tmp_path))]
    for store in stores:
        assert store.allocate(COUNTERS) == 0
        assert store.allocate(BUCKETS) == 0
        store.ensure_files()  # as the recorder does once it has allocated its series
    return stores


def _scraped(directory) -> dict[tuple, float]:
    """What prometheus_client's MultiProcessCollector reads from the directory."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return {
        (sample.name, sample.labels.get("reason") or sample.labels.get("le")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name in ("boxkite_requests_total", "boxkite_feature_value_bucket")
        and sample.labels.get("model", "m") == "m"
    }


@given(increments_strategy)
@settings(max_examples=50, deadline=None)
def test_both_stores_count_what_was_applied(tmp_path_factory, requests):
    directory = tmp_path_factory.mktemp("store")
    stores = _stores(directory)
    expected = {COUNTER: np.zeros(len(COUNTERS)), HISTOGRAM: np.zeros(len(BUCKETS))}
    for units, others in requests:
        increments = Increments()
        if units:
            increments.units[HISTOGRAM].append(np.array(units))
        for block, slot, amount in others:
            increments.add(block, slot, amount)
            expected[block][slot] += amount
        np.add.at(expected[HISTOGRAM], units, 1)
        for store in stores:
            store.apply(increments)
    for store in stores:
        counters, histograms = store.snapshot()[COUNTER], store.snapshot()[HISTOGRAM]
        assert counters.tolist() == expected[COUNTER].tolist()
        assert histograms.tolist() == expected[HISTOGRAM].tolist()
    scraped = _scraped(directory)
    for i, value in enumerate(expected[COUNTER]):
        assert scraped["boxkite_requests_total", str(i)] == value
    cumulative = np.cumsum(expected[HISTOGRAM])  # the collector accumulates buckets
    for i, value in enumerate(cumulative):
        assert scraped["boxkite_feature_value_bucket", f"{i}.0"] == value


def test_a_forked_child_writes_its_own_file(tmp_path):
    _, store = _stores(tmp_path)
    store.add(COUNTER, 0, 1)
    child = os.fork()
    if child == 0:  # the child's counts start at 0 in its own file; the parent's stay put
        try:
            store.add(COUNTER, 0, 10)
            counters = store.snapshot()[COUNTER]
            os._exit(0 if counters[0] == 10 else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.snapshot()[COUNTER][0] == 1
    owners = sorted(int(path.name.split("_")[2]) for path in tmp_path.glob("counter_boxkite_*.db"))
    assert owners == sorted([os.getpid(), child])
    assert _scraped(tmp_path)["boxkite_requests_total", "0"] == 11


def test_series_added_later_keep_earlier_counts(tmp_path):
    """A second recorder's series grow the file past its first 64 KiB; nothing is lost."""
    _, store = _stores(tmp_path)
    store.add(COUNTER, 3, 7)
    more = [
        Series(families.REQUESTS, "boxkite_requests_total", {"model": "n", "reason": str(i)})
        for i in range(2000)
    ]
    first = store.allocate(more)
    store.add(COUNTER, first + 1999, 2)
    counters = store.snapshot()[COUNTER]
    assert counters[3] == 7 and counters[first + 1999] == 2
    (grown,) = tmp_path.glob(f"counter_boxkite_{os.getpid()}_*.db")  # replaced, not added
    assert grown.stat().st_size > 65536
    assert _scraped(tmp_path)["boxkite_requests_total", "3"] == 7


def test_the_file_layout_self_check_catches_a_different_layout(tmp_path, monkeypatch):
    from boxkite_middleware import multiprocess

    monkeypatch.setattr(multiprocess, "_checked", False)
    multiprocess.self_check(str(tmp_path))  # the installed prometheus_client agrees
    assert not list(tmp_path.iterdir())  # and the probe is gone
    monkeypatch.setattr(multiprocess, "_checked", False)
    monkeypatch.setattr(multiprocess, "_DOUBLES", __import__("struct").Struct("ff"))
    with pytest.raises(RuntimeError, match="lays out its multiprocess files differently"):
        multiprocess.self_check(str(tmp_path))


def test_the_collector_pause_is_counted_across_threads():
    import gc

    from boxkite_middleware.monitor import _CollectorPause

    pause = _CollectorPause()
    assert gc.isenabled()
    pause.__enter__()  # thread A starts recording
    pause.__enter__()  # thread B too
    pause.__exit__()  # B is done: A is still recording
    assert not gc.isenabled()
    pause.__exit__()
    assert gc.isenabled()
    gc.disable()  # the app's own choice is kept
    try:
        with pause:
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
