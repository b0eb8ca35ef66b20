"""Large requests read a slice of rows at a time decode and count as if parsed whole."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boxkite_middleware import payload, slices
from boxkite_middleware.payload import Frame, Reason, decode_large_request, decode_request

from .helpers import mixed_baseline, post, scrape

number = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
)


def _layout(names: list[str], rows: list[list], shape: str, spacing: str) -> bytes:
    separators = {"compact": (",", ":"), "spaced": (", ", ": ")}.get(spacing)
    if shape == "split":
        document: object = {"columns": names, "index": list(range(len(rows))), "data": rows}
    elif shape == "dataframe_split":
        document = {"dataframe_split": {"columns": names, "data": rows}}
    else:
        document = {"instances": rows}
    if spacing == "pretty":
        return json.dumps(document, indent=2, allow_nan=True).encode()
    return json.dumps(document, separators=separators, allow_nan=True).encode()


def _as_floats(frame_columns) -> list[list[float]]:
    def one(value):
        if value is None:
            return "missing"
        number = float(value)
        return "missing" if math.isnan(number) else number

    return [[one(value) for value in column] for column in frame_columns]


@given(
    width=st.integers(1, 4),
    data=st.data(),
    shape=st.sampled_from(["split", "dataframe_split", "instances"]),
    spacing=st.sampled_from(["compact", "spaced", "pretty"]),
    slice_bytes=st.integers(1, 200),
)
@settings(max_examples=200)
def test_slices_decode_like_the_whole_document(width, data, shape, spacing, slice_bytes):
    rows = data.draw(st.lists(st.lists(number, min_size=width, max_size=width), min_size=1))
    names = [f"c{i}" for i in range(width)]
    body = _layout(names, rows, shape, spacing)
    whole = decode_request(body, "application/json")
    original = slices.SLICE_BYTES
    slices.SLICE_BYTES = slice_bytes  # many slices, cut at every possible row
    try:
        frames = list(decode_large_request(body))
    finally:
        slices.SLICE_BYTES = original
    assert all(isinstance(frame, Frame) for frame in frames), frames
    assert sum(frame.rows for frame in frames) == whole.rows == len(rows)
    assert {frame.names for frame in frames} == {whole.names}
    joined = [[v for frame in frames for v in frame.columns[i]] for i in range(width)]
    assert _as_floats(joined) == _as_floats(whole.columns)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"columns": ["a"], "data": [["red"], [1]]}', Reason.TOO_LARGE),  # strings
        (b'{"columns": ["a", "b"], "data": [[1, 2], [3]]}', Reason.BAD_SHAPE),
        (b'{"columns": "a", "data": [[1]]}', Reason.BAD_SHAPE),
        (b'{"columns": ["a"], "data": [[1]], "pad": "' + b"x" * 70_000 + b'"}', Reason.TOO_LARGE),
        (b'{"data": [[1]]}', Reason.UNKNOWN_FORMAT),  # no column names
    ],
)
def test_what_cannot_be_sliced_says_why(body, expected):
    decoded = decode_large_request(body)
    if not isinstance(decoded, str):
        decoded = next(frame for frame in decoded if isinstance(frame, str))
    assert decoded == expected


def test_a_cut_inside_a_row_that_holds_a_list_ends_the_request_undecodable(monkeypatch):
    """Such a row is no number row: a cut after its inner bracket leaves invalid JSON, so the
    request is not counted rather than counted wrong."""
    monkeypatch.setattr(slices, "SLICE_BYTES", 1)
    frames = list(decode_large_request(b'{"columns": ["a"], "data": [[[1, 2]], [3]]}'))
    assert frames == [Reason.UNDECODABLE]


def test_a_large_body_counts_exactly_as_a_small_one(monkeypatch):
    """The same rows, recorded whole and in slices, give the same series."""
    from boxkite_middleware import BoxkiteMiddleware

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"predictions": ["cat", "dog", "cat"]}']

    rows = [[-3.5, 1], [None, 4], [float("inf"), 2]] * 1
    body = json.dumps({"columns": ["x", "grade"], "data": rows}, allow_nan=True).encode()
    whole = BoxkiteMiddleware(app, baseline=mixed_baseline(), model="whole")
    sliced = BoxkiteMiddleware(app, baseline=mixed_baseline(), model="sliced")
    assert post(whole, body) == 200
    monkeypatch.setattr(payload, "SLICED_BYTES", 10)  # this body now takes the slices path
    monkeypatch.setattr(slices, "SLICE_BYTES", 8)
    assert post(sliced, body) == 200
    result = scrape()
    for name in (
        "boxkite_feature_value_bucket",
        "boxkite_feature_missing_total",
        "boxkite_feature_category_total",
        "boxkite_inference_category_total",
        "boxkite_requests_total",
    ):
        by_model = {
            model: {
                tuple(sorted((k, v) for k, v in s.labels.items() if k != "model")): s.value
                for s in result.find(name, model=model)
            }
            for model in ("whole", "sliced")
        }
        assert by_model["whole"] == by_model["sliced"], name
    assert result.value("boxkite_requests_total", model="sliced", reason="ok") == 1


@pytest.mark.parametrize("shape", ["wine rows", "one-value rows"])
def test_recording_a_body_at_the_cap_costs_at_most_five_times_its_size(shape):
    """tracemalloc's peak during a wrapped call, less the bare app's own peak."""
    from benchmarks.bench_body_cost import app, one_value_body, peak, wine_body
    from boxkite_middleware import BoxkiteMiddleware
    from boxkite_middleware.monitor import DEFAULT_MAX_BODY_BYTES

    from .helpers import wine_baseline

    body = (wine_body if shape == "wine rows" else one_value_body)(DEFAULT_MAX_BODY_BYTES)
    wrapped = BoxkiteMiddleware(app, baseline=wine_baseline(), model=f"cap {shape}")
    extra = peak(wrapped, body) - peak(app, body)
    assert extra <= 5 * len(body), extra / len(body)
    counted = scrape().value(
        "boxkite_requests_total", model=f"cap {shape}", reason="no_predictions"
    )
    assert counted == 1  # and it was recorded, not skipped
