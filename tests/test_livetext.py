"""The live families' text, written with cached lines, equals prometheus_client's encoding."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from boxkite_middleware import families, livetext
from boxkite_middleware.exposition import _Metrics, rebuild
from boxkite_middleware.store import Series


def _series() -> list[Series]:
    """Counters, a histogram with a ``_sum`` (edges ≥ 0) and one without (negative edges),
    for two label sets each, with a label value that needs escaping."""
    out = [
        Series(families.REQUESTS, "boxkite_requests_total", {"model": m, "reason": r})
        for m in ("a", 'q"u\\o\nte')
        for r in ("ok", "bad_shape")
    ]
    for feature, edges in (("size", ("0.5", "2.0", "10.0")), ("x", ("-3.0", "-1.0", "4.0"))):
        for model in ("a", "b"):
            labels = {"model": model, "feature": feature}
            value = families.FEATURE_VALUE
            out += [
                Series(value, value.name + "_bucket", {**labels, "le": le})
                for le in (*edges, "+Inf")
            ]
            if not edges[0].startswith("-"):
                out.append(Series(value, value.name + "_sum", labels))
    return out


SERIES = _series()


def _samples(text: str, form: str) -> dict[tuple, float]:
    parsed = parse_om(text) if form == "openmetrics" else parse_text(text)
    return {
        (family.name, family.type, sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parsed
        for sample in family.samples
    }


@given(
    st.lists(st.integers(0, 10**6), min_size=len(SERIES), max_size=len(SERIES)),
    st.permutations(range(len(SERIES))),
)
@settings(max_examples=100)
def test_the_cached_lines_say_what_prometheus_client_would(values, order):
    """Any values, keys in any order (as the union of several files comes)."""
    import numpy as np

    series = [SERIES[i] for i in order]
    amounts = [float(values[i]) for i in order]
    keys = tuple(s.key for s in series)
    kinds = tuple(s.family.kind for s in series)
    expected = rebuild((k, "", "", key, v, 0.0) for key, k, v in zip(keys, kinds, amounts))
    for form, encode in (("text", generate_latest), ("openmetrics", generate_openmetrics)):
        ours = livetext.layout(keys, kinds).render(np.array(amounts), form)
        theirs = encode(_Metrics(expected)).decode()
        if form == "openmetrics":
            ours += livetext.EOF  # a scrape ends with one (the strict parser wants it)
        assert _samples(ours, form) == _samples(theirs, form)
        headers = sorted(line for line in ours.splitlines() if line.startswith("# "))
        assert headers == sorted(line for line in theirs.splitlines() if line.startswith("# "))
