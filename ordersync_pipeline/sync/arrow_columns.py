"""Python values to Arrow arrays and back, without pyarrow's pandas paths.

``pa.array`` on a list (or an ndarray) asks pyarrow's pandas shim whether the input is a pandas object,
and the shim imports pandas to answer: ~50 MB and ~0.25 CPU-s in every process that writes the lake
(the sync's pipeline process during a history load, each run process the daemon launches), none of
which otherwise needs pandas. The lake's page columns are few and simple, so their buffers are laid out
here as Arrow's columnar format defines them (validity bitmap, values or offsets + data) and handed to
``pa.Array.from_buffers``, which takes them as they are.

Supported: string, binary, bool, int32, int64 and ``timestamp[us]`` (from aware datetimes), each
nullable. tests/test_sync_arrow_columns.py checks every kind against ``pa.array``. ``rows`` is the way
back (the lake's reads), for the same reason: pyarrow converts zoned timestamps to Python through pandas.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from typing import Any

import pyarrow as pa

__all__ = ["column", "rows"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_TYPECODES = {8: "q", 4: "i"}          # bytes per value -> array typecode (int64, int32 on Linux/macOS)
assert array("q").itemsize == 8 and array("i").itemsize == 4


def column(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    """``pa.array(values, type=kind)`` for the kinds above, without pyarrow's pandas check."""
    validity, nulls = _validity(values)
    n = len(values)
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        data = [b"" if v is None else (v.encode() if isinstance(v, str) else bytes(v)) for v in values]
        offsets = array("i", accumulate((len(d) for d in data), initial=0))
        if offsets[-1] >= 2**31:
            raise ValueError(f"{offsets[-1]} bytes do not fit one {kind} array (2 GiB); write fewer rows per batch")
        buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
    elif pa.types.is_boolean(kind):
        buffers = [validity, _bitmap([bool(v) for v in values])]
    elif pa.types.is_timestamp(kind):
        if kind.unit != "us":
            raise TypeError(f"only microsecond timestamps are built here, not {kind}")
        buffers = [validity, _fixed([0 if v is None else _micros(v) for v in values], 8)]
    elif pa.types.is_integer(kind) and kind.bit_width in (32, 64) and pa.types.is_signed_integer(kind):
        buffers = [validity, _fixed([0 if v is None else int(v) for v in values], kind.bit_width // 8)]
    else:
        raise TypeError(f"no builder for {kind}")
    return pa.Array.from_buffers(kind, n, buffers, null_count=nulls)


def _micros(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} for a zoned timestamp column")
    return (value - _EPOCH) // _US


def _fixed(values: list[int], width: int) -> pa.Buffer:
    return pa.py_buffer(array(_TYPECODES[width], values))


def _bitmap(bits: list[bool]) -> pa.Buffer:
    """Arrow's bit-packed layout: bit i of the buffer is ``bits[i]``, least significant bit first."""
    packed = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            packed[i >> 3] |= 1 << (i & 7)
    return pa.py_buffer(bytes(packed))


def _validity(values: Sequence[Any]) -> tuple[pa.Buffer | None, int]:
    nulls = sum(1 for v in values if v is None)
    return (None if not nulls else _bitmap([v is not None for v in values])), nulls


_TICKS_PER_US = {"us": 1, "ns": 1_000}
_US_PER_TICK = {"s": 1_000_000, "ms": 1_000, "us": 1}


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """``table.to_pylist()``, except that zoned timestamps become aware UTC datetimes here: pyarrow's
    own conversion of them imports pandas, ~80 MB more in every loader process that never uses it.
    Their ticks are read through a zero-copy int64 view, not ``cast``, which imports pyarrow.compute
    (~10 MB more per process)."""
    columns: list[list[Any]] = []
    for values in table.columns:
        kind = values.type
        if pa.types.is_timestamp(kind) and kind.tz is not None:
            ticks_of = (ticks for chunk in values.chunks for ticks in chunk.view(pa.int64()).to_pylist())
            columns.append([None if ticks is None else _EPOCH + timedelta(microseconds=_microseconds(ticks, kind.unit))
                            for ticks in ticks_of])
        else:
            columns.append(values.to_pylist())
    return [dict(zip(table.column_names, row)) for row in zip(*columns)]


def _microseconds(ticks: int, unit: str) -> int:
    """Ticks of ``unit`` since the epoch in whole microseconds (datetime's resolution; ns floored)."""
    return ticks // _TICKS_PER_US[unit] if unit in _TICKS_PER_US else ticks * _US_PER_TICK[unit]
