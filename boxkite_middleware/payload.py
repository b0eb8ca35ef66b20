"""Decode prediction request and response bodies; never raise into the app.

Every function here returns either the decoded value or a *reason* (a short string from
`Reason`) saying why nothing can be recorded. Nothing here knows about HTTP transports or
statistics: bytes and a media type in, columns out.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import slices
from .binning import numeric_or_text

try:  # A fast parser where it pays; the standard library for what it refuses.
    import orjson

    _fast_loads: Callable[[Any], Any] | None = orjson.loads
    _FastError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - exercised when the `fast` extra is not installed
    _fast_loads = None
    _FastError = ValueError


class Reason:
    """Why a request was not (fully) recorded: the ``reason`` label of boxkite_requests_total."""

    OK = "ok"
    NOT_JSON = "not_json"
    UNDECODABLE = "undecodable"
    TOO_LARGE = "too_large"
    UNKNOWN_FORMAT = "unknown_format"
    BAD_SHAPE = "bad_shape"
    NO_FEATURES = "no_features"
    ERROR_STATUS = "error_status"
    NO_RESPONSE = "no_response"
    COMPRESSED = "compressed"
    NO_BASELINE = "no_baseline"
    INTERNAL_ERROR = "internal_error"
    SAMPLED_OUT = "sampled_out"
    # A recorded request whose predictions could not be read.
    NO_PREDICTIONS = "no_predictions"
    PREDICTIONS_MISSING = "predictions_missing"  # read, but every value null or not a number


JSON_TYPES = frozenset({"application/json"})
MAX_RECORD_CELLS = 4_000_000
"""Records (``[{...}, ...]``) with more columns × rows than this are not decoded."""
CSV_TYPES = frozenset({"text/csv", "application/csv"})


def is_json(media_type: str) -> bool:
    """``application/json`` and ``application/*+json`` (parameters already stripped)."""
    return media_type in JSON_TYPES or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


SLICED_BYTES = 64 * 1024
"""JSON requests beyond this whose rows are all numbers are read a slice of rows at a time
(`decode_large_request`): parsed whole they would cost 17-37 times their size in memory."""
LARGE_BODY_BYTES = 1024 * 1024
"""JSON requests beyond this are read only that way (others are skipped as too large)."""


@dataclass(frozen=True)
class Frame:
    """Request rows as columns. ``names`` is None for unnamed data, matched by position."""

    names: tuple[str, ...] | None
    columns: tuple[Sequence[Any] | np.ndarray, ...]
    """JSON's values as decoded; CSV's as float64 arrays (or strings) by `numeric_or_text`."""
    rows: int


_CONSTANTS = {"NaN": None, "Infinity": math.inf, "-Infinity": -math.inf}


def loads(body: bytes | bytearray) -> Any:
    """Parse JSON like the app's own parser would: NaN, Infinity, 1e400 and a BOM included.

    NaN is read as null, by either parser: to a recorder both mean *missing*. That lets orjson
    read what MLflow's client sends for a DataFrame with missing values (a bare ``NaN`` for
    each) two to three times faster than the standard library can; that one is left with the
    rarer rest."""
    if _fast_loads is not None:
        try:
            return _fast_loads(body)
        except _FastError:
            pass
        nulled = _nan_as_null(body)
        if nulled is not None:
            try:
                return _fast_loads(nulled)
            except _FastError:
                pass
    return json.loads(body, parse_constant=_CONSTANTS.__getitem__)


def _nan_as_null(body: bytes | bytearray) -> bytes | None:
    """``body`` with every bare ``NaN`` token as ``null``; None if it has none, or if it has a
    backslash: then a quote may be escaped and telling tokens from string contents would take
    a tokenizer. Without one, splitting at quotes leaves the strings' contents at odd places
    (UTF-8 never puts ``"`` or ``NaN`` inside a multi-byte character)."""
    if b"NaN" not in body or b"\\" in body:
        return None
    pieces: list[Any] = body.split(b'"')
    pieces[::2] = [piece.replace(b"NaN", b"null") for piece in pieces[::2]]
    return b'"'.join(pieces)


Location = str | Callable[[Any], Any]
"""Where something is in a parsed JSON document: a dotted path (`locate`), or a function that
takes the document and returns it."""


def decode_request(
    body: bytes | bytearray, media_type: str, rows: Location | None = None
) -> Frame | str:
    """A request body as a `Frame`, or the reason it cannot be read. ``rows``: where the rows
    are in a JSON body when it is none of the shapes we know."""
    if not body:
        return Reason.UNDECODABLE
    if media_type in CSV_TYPES:
        return _csv_frame(body)
    if not is_json(media_type):
        return Reason.NOT_JSON
    try:
        document = loads(body)
    except (ValueError, RecursionError):
        return Reason.UNDECODABLE
    if rows is None:
        return _frame(document)
    try:
        located = find(document, rows)
    except Exception:  # not there, or the app's own function failed on this body
        return Reason.UNKNOWN_FORMAT
    if isinstance(located, dict) and "columns" in located and "data" in located:
        return _split(located)
    return _tensor(located)  # records, rows, a mapping of columns, or one column


def find(document: Any, location: Location) -> Any:
    """What is at ``location`` in the document (raises when it is not there)."""
    return location(document) if callable(location) else locate(document, location)


def locate(document: Any, path: str) -> Any:
    """The value at a dotted path such as ``"records"`` or ``"payload.rows"``: a digit indexes
    a list, and ``*`` takes the rest of the path in each element of one (``"probabilities.*.0"``
    is the first class's probability of every row). KeyError, IndexError or TypeError when
    it is not there."""
    return _walk(document, path.split("."))


def _walk(document: Any, parts: list[str]) -> Any:
    for at, part in enumerate(parts):
        if part == "*" and isinstance(document, list):
            return [_walk(item, parts[at + 1 :]) for item in document]
        if isinstance(document, list) and part.isdigit():
            document = document[int(part)]
        elif isinstance(document, dict):
            document = document[part]
        else:
            raise TypeError(f"no {part!r} in a {type(document).__name__}")
    return document


def decode_any_request(
    body: bytes | bytearray, media_type: str, rows: Location | None = None
) -> Frame | Iterator[Frame | str] | str:
    """`decode_request`, or for a large JSON body of number rows `decode_large_request`
    (which knows the data and instances keys only: with ``rows`` given, large bodies are
    parsed whole up to `LARGE_BODY_BYTES`)."""
    if len(body) > SLICED_BYTES and is_json(media_type):
        sliced = decode_large_request(body) if rows is None else Reason.TOO_LARGE
        if sliced != Reason.TOO_LARGE or len(body) > LARGE_BODY_BYTES:
            return sliced
    return decode_request(body, media_type, rows)


def decode_large_request(body: bytes | bytearray) -> Iterator[Frame | str] | str:
    """A JSON request too large to parse whole (`LARGE_BODY_BYTES`), as frames of a slice of
    rows each (`slices`); ``too_large`` unless its rows are all numbers."""
    parts = slices.split(body)
    if parts is None:
        return Reason.TOO_LARGE
    skeleton, pieces = parts
    head = decode_request(skeleton, "application/json")
    if isinstance(head, str):
        return head
    if head.rows:  # rows outside the array that was cut out: not a shape we know
        return Reason.BAD_SHAPE
    return _sliced_frames(head.names, pieces)


def _sliced_frames(names: tuple[str, ...] | None, pieces: Iterable[bytes]) -> Iterator[Frame | str]:
    width = None if names is None else len(names)
    for piece in pieces:
        try:
            rows = loads(piece)
        except (ValueError, RecursionError):
            yield Reason.UNDECODABLE
            return
        if width is None:  # unnamed rows: as wide as the first
            width = len(rows[0]) if rows and isinstance(rows[0], list) else 0
        columns = _transpose(rows, width)
        if columns is None:
            yield Reason.BAD_SHAPE
            return
        yield Frame(names, columns, len(rows))


def _frame(document: Any) -> Frame | str:
    if isinstance(document, list):
        return _rows(document)
    if not isinstance(document, dict):
        return Reason.UNKNOWN_FORMAT
    if "dataframe_split" in document:
        return _split(document["dataframe_split"])
    if "dataframe_records" in document:
        return _records(document["dataframe_records"])
    if "instances" in document:
        return _tensor(document["instances"])
    if "inputs" in document:
        inputs = document["inputs"]
        if _is_open_inference(inputs):
            return _open_inference(inputs)
        return _tensor(inputs)
    if "columns" in document and "data" in document:
        return _split(document)
    return Reason.UNKNOWN_FORMAT


def _split(document: Any) -> Frame | str:
    """pandas ``orient="split"``: ``{"columns": [...], "data": [[...], ...], "index": [...]}``."""
    if not isinstance(document, dict):
        return Reason.UNKNOWN_FORMAT
    names, data = document.get("columns"), document.get("data")
    if not isinstance(data, list):
        return Reason.BAD_SHAPE
    if names is None:
        return _rows(data)
    if not isinstance(names, list) or _kinds(names) - {str, int, float, bool}:
        return Reason.BAD_SHAPE
    if names and data and not isinstance(data[0], list):
        data = [[value] for value in data] if len(names) == 1 else data
    columns = _transpose(data, len(names))
    if columns is None:
        return Reason.BAD_SHAPE
    return Frame(tuple(map(str, names)), columns, len(data))


def _records(records: Any) -> Frame | str:
    """pandas ``orient="records"``: ``[{"col": value, ...}, ...]``; absent keys are missing.

    The only layout where the decoded size is not bounded by the body's: n rows with a new key
    each would make n columns of n values, so the cells are capped."""
    if not isinstance(records, list) or _kinds(records) - {dict}:
        return Reason.BAD_SHAPE
    names: dict[str, None] = {}
    for row in records:
        names.update(dict.fromkeys(row))
    if len(names) * len(records) > MAX_RECORD_CELLS:
        return Reason.TOO_LARGE
    columns = tuple([row.get(name) for row in records] for name in names)
    return Frame(tuple(str(name) for name in names), columns, len(records))


def _rows(rows: list[Any]) -> Frame | str:
    """A bare JSON list: records when it holds objects, else unnamed rows."""
    if rows and _kinds(rows) == {dict}:
        return _records(rows)
    return _tensor(rows)


def _tensor(value: Any) -> Frame | str:
    """MLflow ``instances``/``inputs``: records, a column mapping, rows, or one column."""
    if isinstance(value, dict):
        by_name = {
            str(name): values if isinstance(values, list) else [values]
            for name, values in value.items()
        }
        lengths = {len(values) for values in by_name.values()}
        if len(lengths) > 1:
            return Reason.BAD_SHAPE
        return Frame(tuple(by_name), tuple(by_name.values()), lengths.pop() if lengths else 0)
    if not isinstance(value, list):
        return Reason.UNKNOWN_FORMAT
    kinds = _kinds(value)
    if value and kinds == {dict}:
        return _records(value)
    if value and kinds == {list}:
        width = len(value[0])
        columns = _transpose(value, width)
        return Reason.BAD_SHAPE if columns is None else Frame(None, columns, len(value))
    if kinds & {list, dict}:
        return Reason.BAD_SHAPE
    return Frame(None, (value,), len(value))


def _is_open_inference(inputs: Any) -> bool:
    """Open Inference Protocol (KServe V2): a list of ``{"name", "shape", "datatype", "data"}``."""
    return (
        isinstance(inputs, list)
        and bool(inputs)
        and all(isinstance(t, dict) and {"name", "datatype", "data"} <= t.keys() for t in inputs)
    )


def _open_inference(tensors: list[dict[str, Any]]) -> Frame | str:
    """One column per 1-D (or N×1) tensor, by name; or one 2-D tensor as unnamed rows."""
    shapes: list[list[int]] = []
    data: list[list[Any]] = []
    for tensor in tensors:
        shape, values = tensor.get("shape"), _flat(tensor["data"])
        if not (isinstance(shape, list) and shape and all(map(_is_size, shape))):
            return Reason.BAD_SHAPE
        if values is None:
            return Reason.BAD_SHAPE
        shapes.append(shape)
        data.append(values)
    if len(tensors) == 1 and len(shapes[0]) == 2 and shapes[0][1] != 1:
        rows, width = shapes[0]
        if width < 1 or len(data[0]) != rows * width:
            return Reason.BAD_SHAPE
        flat = data[0]
        return Frame(None, tuple(flat[i::width] for i in range(width)), rows)
    if any(len(shape) > 2 or (len(shape) == 2 and shape[1] != 1) for shape in shapes):
        return Reason.UNKNOWN_FORMAT
    if len({len(values) for values in data}) != 1:
        return Reason.BAD_SHAPE
    names = tuple(str(tensor["name"]) for tensor in tensors)
    return Frame(names, tuple(data), len(data[0]))


def _is_size(dimension: Any) -> bool:
    """A tensor dimension: a non-negative JSON integer (not ``10.0``, not ``true``)."""
    return type(dimension) is int and dimension >= 0


def _flat(data: Any) -> list[Any] | None:
    if not isinstance(data, list):
        return None
    if _kinds(data) == {list}:
        return [value for row in data for value in row]
    return data


def _kinds(items: list[Any]) -> set[type]:
    """The exact types in a JSON list, found in one pass in C."""
    return set(map(type, items))


def _transpose(rows: list[Any], width: int) -> tuple[Sequence[Any], ...] | None:
    """Row-major lists as columns; None when a row is not a list of ``width`` values."""
    if _kinds(rows) - {list} or set(map(len, rows)) - {width}:
        return None
    if not rows:
        return tuple([] for _ in range(width))
    return tuple(zip(*rows))


def _csv_frame(body: bytes | bytearray) -> Frame | str:
    """``text/csv`` with a header row, as both MLflow generations accept it."""
    try:
        text = body.decode("utf-8-sig")
        table = list(csv.reader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error):
        return Reason.UNDECODABLE
    if len(table) < 2:
        return Reason.BAD_SHAPE
    header, rows = table[0], table[1:]
    columns = _transpose(rows, len(header))
    if columns is None:
        return Reason.BAD_SHAPE
    return Frame(tuple(header), tuple(numeric_or_text(list(c)) for c in columns), len(rows))


def decode_response(
    body: bytes | bytearray,
    media_type: str,
    encoding: str,
    limit: int,
    outputs: Mapping[str, Location] | None = None,
) -> dict | str:
    """Predictions by output label (``"0"``, ``"1"``, … or object keys), or a reason.

    Accepts a list, ``{"predictions": ...}``, a list of lists (multi-output or class
    probabilities), a list of objects, or a mapping ``output -> values``; or, with
    ``outputs``, each output's values at its dotted path (`locate`), so that one response can
    feed several outputs. A body compressed by an inner middleware is inflated up to ``limit``
    bytes.
    """
    if not is_json(media_type):
        return Reason.NOT_JSON
    if encoding not in ("", "identity"):
        inflated = _inflate(body, encoding, limit)
        if inflated is None:
            return Reason.COMPRESSED
        body = inflated
    try:
        document = loads(body)
    except (ValueError, RecursionError):
        return Reason.UNDECODABLE
    if outputs is not None:
        return _located_outputs(document, outputs)
    if isinstance(document, dict) and "predictions" in document:
        document = document["predictions"]
    if isinstance(document, dict):
        return {str(name): v if isinstance(v, list) else [v] for name, v in document.items()}
    if not isinstance(document, list):
        return Reason.UNKNOWN_FORMAT
    kinds = _kinds(document)
    if not kinds & {list, dict}:
        return {"0": document}  # one output: the common case, no copy
    if kinds == {dict}:
        frame = _records(document)
    elif kinds == {list}:
        frame = _tensor(document)
    else:
        return Reason.BAD_SHAPE
    if isinstance(frame, str):
        return frame
    names = frame.names or tuple(str(i) for i in range(len(frame.columns)))
    return dict(zip(names, frame.columns))


def _located_outputs(document: Any, outputs: Mapping[str, Location]) -> dict[str, list[Any]]:
    found = {}
    for name, location in outputs.items():
        try:
            values = find(document, location)
        except Exception:  # not in this response: the recorder says no_predictions if none is
            continue
        found[name] = values if isinstance(values, list) else [values]
    return found


def _inflate(body: bytes | bytearray, encoding: str, limit: int) -> bytes | None:
    """gzip or deflate (zlib or raw) up to ``limit`` bytes; None if unknown, broken or larger."""
    if encoding == "gzip":
        window_bits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        window_bits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        return None
    inflater = zlib.decompressobj(window_bits)
    try:
        inflated = inflater.decompress(body, limit)
    except zlib.error:
        return None
    if inflater.unconsumed_tail or not inflater.eof:
        return None
    return inflated
