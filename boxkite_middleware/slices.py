"""Large JSON requests of number rows, read a slice of rows at a time.

Parsed whole, a JSON body becomes 17 to 37 times its size in Python objects (a list and a float
object per value). Large batches are almost always rows of numbers, and there no string can
hide a bracket: every ``]`` inside the data array closes a row. So the array is cut after a
row every `SLICE_BYTES` and each slice is parsed on its own, while the rest of the document
(the column names) is parsed with the large arrays replaced by ``[]``. Memory then stays near
the body's own size, whatever the batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

SLICE_BYTES = 64 * 1024
SKELETON_BYTES = 64 * 1024
"""The document without its data (and index) array must be small: column names, keys."""

_NUMBER_ROWS = b"0123456789+-.eE,[] \t\r\nNaInfitylu"
"""Every byte an array of number rows may hold (``null``, ``NaN``, ``Infinity`` included)."""

_ROWS_KEY = re.compile(rb'"(?:data|instances)"\s*:\s*(\[)\s*\[')
_INDEX_KEY = re.compile(rb'"index"\s*:\s*(\[)')
_SCAN_BYTES = 1 << 20


def split(body: bytes | bytearray) -> tuple[bytes, Iterator[bytes]] | None:
    """``(skeleton, slices)``: the document with its rows array (``data`` or ``instances``,
    and a pandas ``index``) replaced by ``[]``, and the rows as JSON arrays of a few hundred
    KiB each; None unless the body has such an array of number rows."""
    rows = _number_array(body, _ROWS_KEY)
    if rows is None:
        return None
    start, end = rows
    removed = [(start, end)]
    index = _number_array(body, _INDEX_KEY)
    if index is not None and (index[1] < start or index[0] > end):
        removed.append(index)
    skeleton = _without(body, sorted(removed))
    if len(skeleton) > SKELETON_BYTES:
        return None
    return skeleton, _slices(body, start, end)


def _number_array(body: bytes | bytearray, key: re.Pattern) -> tuple[int, int] | None:
    """``(start, end)`` of the first array under ``key`` made only of number bytes; ``end``
    is one past its closing bracket."""
    for match in key.finditer(body):
        start = match.start(1)
        stop = _first_other_byte(body, start)
        # In an object, what follows the array is a comma and a quoted key, or "}": the
        # array's own closing bracket is the last one before the first other byte.
        close = body.rfind(b"]", start, stop)
        if close != -1 and body.count(b"[", start, close) == body.count(b"]", start, close + 1):
            return start, close + 1
    return None


def _first_other_byte(body: bytes | bytearray, start: int) -> int:
    """Where the run of number-row bytes from ``start`` ends, scanned a MiB at a time: what
    ``translate`` leaves of a chunk are its other bytes, and the first of them is the first
    occurrence of its value."""
    for position in range(start, len(body), _SCAN_BYTES):
        chunk = body[position : position + _SCAN_BYTES]
        other = chunk.translate(None, _NUMBER_ROWS)
        if other:
            return position + chunk.find(other[:1])
    return len(body)


def _without(body: bytes | bytearray, spans: list[tuple[int, int]]) -> bytes:
    pieces, previous = [], 0
    for start, end in spans:
        pieces += [bytes(body[previous:start]), b"[]"]
        previous = end
    pieces.append(bytes(body[previous:]))
    return b"".join(pieces)


def _slices(body: bytes | bytearray, start: int, end: int) -> Iterator[bytes]:
    """The rows of ``body[start:end]`` (``[[...], [...], ...]``) as arrays cut after a row.

    A row that holds a bracket of its own would be cut in two; the halves are not valid
    JSON, so the request ends as undecodable rather than counted wrong."""
    position, last = start + 1, end - 1  # inside the outer brackets
    while position < last:
        cut = body.find(b"]", min(position + SLICE_BYTES, last - 1), last)
        cut = last - 1 if cut == -1 else cut
        yield b"[" + bytes(body[position : cut + 1]) + b"]"
        comma = body.find(b",", cut + 1, last)
        if comma == -1:
            return
        position = comma + 1
