"""Decoding request and response bodies: every format, and hostile bytes never raise."""

from __future__ import annotations

import gzip
import json
import math
import zlib

import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.utils.proto_json_utils import dump_input_data

from boxkite_middleware import payload
from boxkite_middleware.payload import Frame, Reason, decode_request, decode_response

from .helpers import CURL_BODY, CURL_VALUES

JSON = "application/json"


def _columns(frame: Frame) -> dict[str, list]:
    """Columns by name, NaN written as None (pandas writes a missing string either way)."""
    assert isinstance(frame, Frame), frame
    return {
        name: [None if isinstance(v, float) and math.isnan(v) else v for v in values]
        for name, values in zip(frame.names, frame.columns, strict=True)
    }


def test_curl_bytes_of_the_original_walkthrough():
    frame = decode_request(CURL_BODY, JSON)
    assert frame.rows == 1
    assert {name: values[0] for name, values in _columns(frame).items()} == CURL_VALUES


DF = pd.DataFrame({"a": [1.5, 2.5], "b": ["x", None], "c": [1, 2]})


@pytest.mark.parametrize(
    "body",
    [
        DF.to_json(orient="split"),  # MLflow 1.x, format=pandas-split
        DF.to_json(orient="records"),  # MLflow 1.x, format=pandas-records
        json.dumps({"dataframe_split": DF.to_dict(orient="split")}),  # MLflow 2.x/3.x
        json.dumps({"dataframe_records": DF.to_dict(orient="records")}),
        json.dumps({"instances": DF.to_dict(orient="records")}),
        json.dumps({"inputs": DF.to_dict(orient="list")}),
        json.dumps({"inputs": DF.to_dict(orient="list"), "params": {"temperature": 0.1}}),
        json.dumps({"instances": {"a": [1.5, 2.5], "b": ["x", None], "c": [1, 2]}}),
    ],
)
def test_mlflow_formats_give_the_same_columns(body):
    frame = decode_request(body.encode(), JSON)
    assert _columns(frame) == {"a": [1.5, 2.5], "b": ["x", None], "c": [1, 2]}
    assert frame.rows == 2


def test_unnamed_rows_and_single_column_tensors():
    frame = decode_request(b'{"instances": [[1, 2, 3], [4, 5, 6]]}', JSON)
    assert frame.names is None and [list(c) for c in frame.columns] == [[1, 4], [2, 5], [3, 6]]
    one = decode_request(b'{"inputs": [1, 2, 3]}', JSON)
    assert one.names is None and one.rows == 3 and list(one.columns[0]) == [1, 2, 3]
    assert decode_request(b"[[1, 2], [3, 4]]", JSON).rows == 2


def test_csv_with_header():
    frame = decode_request(b"a,b,c\r\n1.5,x,1\r\n2.5,,2\r\n", "text/csv")
    columns = _columns(frame)
    assert columns["a"] == [1.5, 2.5] and columns["c"] == [1.0, 2.0]
    assert columns["b"] == ["x", ""]


def test_open_inference_protocol_is_not_mlflow_inputs():
    body = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]},
            {"name": "c", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2]]},
        ]
    }
    frame = decode_request(json.dumps(body).encode(), JSON)
    assert _columns(frame) == {"a": [1.5, 2.5], "c": [1, 2]}
    matrix = {
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}]
    }
    frame = decode_request(json.dumps(matrix).encode(), JSON)
    assert frame.names is None and [list(c) for c in frame.columns] == [[1, 4], [2, 5], [3, 6]]
    cube = {"inputs": [{"name": "x", "shape": [1, 2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
    assert decode_request(json.dumps(cube).encode(), JSON) == Reason.UNKNOWN_FORMAT


@pytest.mark.parametrize("shape", [[10.0, 2], [2, 1.0], [True, 2], [-1], ["2"], [2, None]])
def test_open_inference_shapes_that_are_no_sizes_are_bad_shape(shape):
    data = list(range(20))
    body = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP64", "data": data}]}
    assert decode_request(json.dumps(body).encode(), JSON) == Reason.BAD_SHAPE


def test_what_the_standard_library_accepts_is_still_read():
    frame = decode_request(
        b'{"columns": ["a"], "data": [[NaN], [Infinity], [-Infinity], [1e400]]}', JSON
    )
    assert list(frame.columns[0]) == [None, math.inf, -math.inf, math.inf]  # NaN: missing
    bom = decode_request(b"\xef\xbb\xbf" + CURL_BODY, JSON)
    assert isinstance(bom, Frame) and bom.rows == 1


@pytest.mark.parametrize(
    ("body", "media_type", "reason"),
    [
        (b"", JSON, Reason.UNDECODABLE),
        (b'{"columns": ["a"], "data": [[1]', JSON, Reason.UNDECODABLE),
        (b"\xff\xfe\x00garbage", JSON, Reason.UNDECODABLE),
        (b"[" * 100_000 + b"]" * 100_000, JSON, Reason.UNDECODABLE),
        (b'{"columns": ["a", "b"], "data": [[1, 2], [3]]}', JSON, Reason.BAD_SHAPE),
        (b'{"columns": "a", "data": [[1]]}', JSON, Reason.BAD_SHAPE),
        (b'{"hello": 1}', JSON, Reason.UNKNOWN_FORMAT),
        (b'"just a string"', JSON, Reason.UNKNOWN_FORMAT),
        (b"a,b\n1,2,3\n", "text/csv", Reason.BAD_SHAPE),
        (b"\xff\xfe", "text/csv", Reason.UNDECODABLE),
        (b"<xml/>", "application/xml", Reason.NOT_JSON),
        (b'{"instances": [[1, 2], [3]]}', JSON, Reason.BAD_SHAPE),
        (b'{"inputs": {"a": [1, 2], "b": [1]}}', JSON, Reason.BAD_SHAPE),
        # 20,000 records with a new key each: 20,000 columns of 20,000 cells if decoded
        (json.dumps([{f"k{i}": i} for i in range(20_000)]).encode(), JSON, Reason.TOO_LARGE),
    ],
)
def test_bad_requests_give_a_reason(body, media_type, reason):
    assert decode_request(body, media_type) == reason


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "columns",
                    "data",
                    "inputs",
                    "instances",
                    "index",
                    "dataframe_split",
                    "dataframe_records",
                    "name",
                    "shape",
                    "datatype",
                    "predictions",
                    "a",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@given(json_values)
@settings(max_examples=500, deadline=None)
def test_any_json_document_decodes_or_gives_a_reason(document):
    body = json.dumps(document).encode()
    result = decode_request(body, JSON)
    assert isinstance(result, (Frame, str))
    if isinstance(result, Frame):
        assert all(len(column) == result.rows for column in result.columns)
        if result.names is not None:
            assert len(result.names) == len(result.columns)
    predictions = decode_response(body, JSON, "", 1 << 20)
    assert isinstance(predictions, (dict, str))


def _nan_as_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_nan_as_none(item) for item in value]
    if isinstance(value, dict):
        return {key: _nan_as_none(item) for key, item in value.items()}
    return value


tricky_text = st.text(alphabet='NaN"\\,[]: x', max_size=8) | st.text(max_size=5)
nan_documents = st.recursive(
    st.none() | st.floats() | st.just(math.nan) | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children),
    max_leaves=20,
)


@given(nan_documents)
@settings(max_examples=500, deadline=None)
def test_nan_is_read_as_null_and_strings_are_left_alone(document):
    """Whichever parser reads it; orjson whenever no backslash or Infinity stops it."""
    body = json.dumps(document).encode()
    expected = _nan_as_none(document)
    assert payload.loads(body) == expected
    nulled = payload._nan_as_null(body)
    if b"NaN" not in body or b"\\" in body:
        assert nulled is None
    elif b"Infinity" not in body:
        assert orjson.loads(nulled) == expected


def test_mlflow_bodies_with_missing_values_take_the_fast_parser():
    frame = pd.DataFrame({"a": [1.5, None], "b": ["NaN", None]})
    body = dump_input_data(frame).encode()  # MLflow's client: bare NaN for both missing values
    assert body.count(b"NaN") == 3
    assert orjson.loads(payload._nan_as_null(body))["dataframe_split"]["data"] == [
        [1.5, "NaN"],
        [None, None],
    ]


@given(st.binary(max_size=300), st.sampled_from([JSON, "text/csv", "application/x+json"]))
@settings(max_examples=500, deadline=None)
def test_any_bytes_decode_or_give_a_reason(body, media_type):
    assert isinstance(decode_request(body, media_type), (Frame, str))
    assert isinstance(decode_response(body, media_type, "gzip", 1000), (dict, str))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[6.0, 5.5]", {"0": [6.0, 5.5]}),  # MLflow 1.x
        (b'{"predictions": [6.0, 5.5]}', {"0": [6.0, 5.5]}),  # MLflow 2.x/3.x
        (b'{"predictions": ["cat", "dog"]}', {"0": ["cat", "dog"]}),
        (b"[[0.1, 0.9], [0.8, 0.2]]", {"0": (0.1, 0.8), "1": (0.9, 0.2)}),
        (b'[{"price": 1.5, "label": "a"}]', {"price": [1.5], "label": ["a"]}),
        (b'{"predictions": {"price": [1.5, 2.5]}}', {"price": [1.5, 2.5]}),
    ],
)
def test_responses(body, expected):
    decoded = decode_response(body, JSON, "", 1 << 20)
    assert {key: list(value) for key, value in decoded.items()} == {
        key: list(value) for key, value in expected.items()
    }


def test_compressed_responses_are_inflated_within_a_cap():
    body = b'{"predictions": [1.0, 2.0]}'
    raw = zlib.compressobj(wbits=-15)
    deflated = raw.compress(body) + raw.flush()
    for compressed, encoding in [
        (gzip.compress(body), "gzip"),
        (zlib.compress(body), "deflate"),
        (deflated, "deflate"),
    ]:
        decoded = decode_response(compressed, JSON, encoding, 1000)
        assert list(decoded["0"]) == [1.0, 2.0]
    bomb = gzip.compress(b"[" + b"1," * 500_000 + b"1]")
    assert decode_response(bomb, JSON, "gzip", 10_000) == Reason.COMPRESSED
    assert decode_response(body, JSON, "br", 1000) == Reason.COMPRESSED
    assert decode_response(b"not gzip", JSON, "gzip", 1000) == Reason.COMPRESSED
