"""The SKU key shared by sales, forecasts, inventory snapshots and presale freezes, plus input helpers.

Rule: ``"sku:<sku_id>"`` when the row has a sku_id (TOP's sku ids are unique across items); otherwise
``"item:<num_iid>"`` (an item sold without SKU variants); otherwise ``"outer:<outer_iid>/<outer_sku_id>"``
(the merchant's own codes, either part may be empty); a row with none of these has no key (``<NA>``)
and is left out by its caller, which counts it. Ids are compared as text, so ``5000123`` (an int from
``items.onsale.get``) and ``"5000123"`` (the warehouse's text column) give the same key.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd

from ordersync_pipeline.timeutil import SHANGHAI

KEY_COLUMNS = ("num_iid", "sku_id", "outer_iid", "outer_sku_id")
EPOCH = np.datetime64("1970-01-01", "D")


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise a ValueError naming the missing columns of ``what`` (a frame the caller was given)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame is missing column(s) {missing}; it has {sorted(map(str, frame.columns))}")


def id_text(values: pd.Series) -> pd.Series:
    """Ids as stripped text with ``<NA>`` for missing or empty; float columns (ints with NaN) lose
    their ``.0`` instead of becoming ``"5000123.0"``."""
    if pd.api.types.is_float_dtype(values):
        values = values.astype("Int64")
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def sku_keys(frame: pd.DataFrame) -> pd.Series:
    """The SKU key of every row (see the module docstring); ``<NA>`` where the row has no id at all."""
    present = [c for c in KEY_COLUMNS if c in frame.columns]
    if not present:
        raise ValueError(f"cannot key SKUs: the frame has none of {list(KEY_COLUMNS)}")
    empty = pd.Series(pd.NA, index=frame.index, dtype="string")
    sku, item = _col(frame, "sku_id", empty), _col(frame, "num_iid", empty)
    outer_i, outer_s = _col(frame, "outer_iid", empty), _col(frame, "outer_sku_id", empty)
    outer = "outer:" + outer_i.fillna("") + "/" + outer_s.fillna("")
    key = ("sku:" + sku).fillna("item:" + item)
    key = key.fillna(outer.where(outer_i.notna() | outer_s.notna()))
    return key.rename("sku_key")


def _col(frame: pd.DataFrame, name: str, empty: pd.Series) -> pd.Series:
    return id_text(frame[name]) if name in frame.columns else empty


def shanghai_days(values: pd.Series, what: str) -> pd.Series:
    """Aware datetimes -> the Asia/Shanghai calendar day as an int (days since 1970-01-01), ``<NA>``
    where missing. Naive datetimes are refused: guessing their zone would move sales across days."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        stamps = values
    elif pd.api.types.is_datetime64_dtype(values):
        raise ValueError(f"{what} holds naive datetimes; pass timezone-aware values (e.g. UTC from the warehouse)")
    else:
        present = values.dropna()
        naive = [v for v in present.iloc[:1000] if getattr(v, "tzinfo", None) is None]
        if naive:
            raise ValueError(f"{what} holds naive or non-datetime values such as {naive[0]!r}; "
                             "pass timezone-aware datetimes")
        stamps = pd.to_datetime(values, utc=True)
    local = stamps.dt.tz_convert(SHANGHAI).dt.tz_localize(None).dt.floor("D")
    days = (local.to_numpy(dtype="datetime64[D]", na_value=np.datetime64("NaT")) - EPOCH).astype("int64")
    out = pd.Series(days, index=values.index, dtype="Int64")
    return out.mask(local.isna())


def to_fen(values: pd.Series, what: str) -> pd.Series:
    """Money in yuan (Decimal, str, int or float) -> int64 fen, exactly; missing counts as 0."""
    if pd.api.types.is_float_dtype(values) or pd.api.types.is_integer_dtype(values):
        return pd.Series(np.rint(values.fillna(0).to_numpy(dtype="float64") * 100).astype("int64"), index=values.index)
    return values.map(lambda v: _fen_one(v, what)).astype("int64")


def _fen_one(value: Any, what: str) -> int:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return 0
    try:
        return int((Decimal(str(value)) * 100).to_integral_value(ROUND_HALF_UP))
    except InvalidOperation:
        raise ValueError(f"{what} holds {value!r}, which is not an amount in yuan") from None


def day_numbers(values: pd.Series) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Calendar days (``date`` objects or naive day timestamps) -> days since 1970-01-01."""
    stamps = pd.to_datetime(values).to_numpy(dtype="datetime64[D]")
    return (stamps - EPOCH).astype("int64")


def day_dates(numbers: np.ndarray[Any, np.dtype[np.int64]] | pd.Series) -> np.ndarray[Any, np.dtype[np.object_]]:
    """Days since 1970-01-01 -> ``datetime.date`` objects (what the frames hand out)."""
    stamps = (EPOCH + np.asarray(numbers, dtype="int64").astype("timedelta64[D]"))
    return stamps.astype(object)
