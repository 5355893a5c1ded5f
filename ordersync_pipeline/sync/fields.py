"""Field parsers shared by the normalisers (trades, refunds, ...): TOP's raw values to warehouse types.

Each parser returns the typed value, None when the field is absent, or raises ``Invalid`` whose message
is the quarantine reason (naming the field and the value). The rules are those written in
``sync/normalize.py``'s docstring: money is ``Decimal`` with 2 places (a third decimal is refused, not
rounded), times are aware GMT+8 ``yyyy-MM-dd HH:mm:ss``, ids positive 64-bit ints, text no longer than
its column and storable on every backend, ``modified`` plausible. The PII rule (``is_personal``) and
the quarantine payload (``payload_json``) live here too, so every stream strips the same fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

from ordersync_pipeline.timeutil import GMT8, format_top_time
from ordersync_pipeline.warehouse.types import escape_unstorable, unstorable_char

__all__ = [
    "Invalid", "show", "money", "time", "ident", "count", "text", "implausible", "latest_modified",
    "check_modified", "payload_json", "is_personal", "PII_FIELDS", "KEPT_RECEIVER_FIELDS",
    "MONEY_MAX_INT_DIGITS", "MODIFIED_FUTURE_TOLERANCE", "EARLIEST_MODIFIED",
]

# Receiver fields are masked by TOP but still personal; oaid is the key that unlocks them via platform
# services. Only the region is kept (regional sales). Same rule as warehouse/privacy.py.
PII_FIELDS: Final = frozenset({"receiver_name", "receiver_mobile", "receiver_phone", "receiver_address",
                               "receiver_town", "receiver_zip", "oaid"})
KEPT_RECEIVER_FIELDS: Final = frozenset({"receiver_state", "receiver_city", "receiver_district",
                                         "receiver_country"})


def is_personal(key: object) -> bool:
    """True for trade keys never written outside the API response: every ``receiver_*`` field but the
    region ones, and ``oaid`` (``PII_FIELDS`` lists the known ones)."""
    return key in PII_FIELDS or (isinstance(key, str) and key.startswith("receiver_")
                                 and key not in KEPT_RECEIVER_FIELDS)

# The warehouse's Money is NUMERIC(14, 2); a larger amount is a unit error, not a sale.
MONEY_MAX_INT_DIGITS: Final = 12
_ID_MAX: Final = 2**63 - 1            # BIGINT
_NUM_MAX: Final = 2**31 - 1           # INTEGER quantity
_CENT: Final = Decimal("0.01")
_CACHE_LIMIT: Final = 65_536          # bounded caches: cleared wholesale when full
# Times repeat far less than amounts (a 200k-trade lake: 23 % of time fields hit a 65,536-entry cache,
# 22 % a 4,096-entry one; amounts hit 99 % and have ~15k distinct values). The larger time cache only
# held ~10 MB more in every loader process (its keys pin pieces of parsed pages).
_TIME_CACHE_LIMIT: Final = 4_096

# Plausible ``modified``: clocks disagree by seconds, not a day; nothing on Taobao predates its launch.
MODIFIED_FUTURE_TOLERANCE: Final = timedelta(days=1)
EARLIEST_MODIFIED: Final = datetime(2003, 5, 10, tzinfo=GMT8)

class Invalid(Exception):
    """One field of one record failed validation; the message is the quarantine reason."""


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- field parsers: each returns the typed value or None (absent), or raises Invalid -------------

_money_cache: dict[str, Decimal] = {}
_time_cache: dict[str, datetime] = {}


def _parse_money_text(text: str, name: str, raw: Any) -> Decimal:
    body = text[1:] if text[:1] == "-" else text
    whole, dot, frac = body.partition(".")
    if (not whole or not whole.isascii() or not whole.isdigit() or len(whole) > MONEY_MAX_INT_DIGITS
            or (dot and (not frac or len(frac) > 2 or not frac.isascii() or not frac.isdigit()))):
        raise Invalid(f"field {name!r} = {show(raw)} is not money "
                       f"(up to {MONEY_MAX_INT_DIGITS} digits and at most 2 decimals)")
    try:
        return Decimal(text).quantize(_CENT)
    except InvalidOperation:  # pragma: no cover - the checks above leave nothing Decimal refuses
        raise Invalid(f"field {name!r} = {show(raw)} is not money") from None


def money(value: Any, name: str) -> Decimal | None:
    if type(value) is str:
        cached = _money_cache.get(value)
        if cached is not None:
            return cached
        if value == "":
            return None
        parsed = _parse_money_text(value, name, value)
        if len(_money_cache) >= _CACHE_LIMIT:
            _money_cache.clear()
        _money_cache[value] = parsed
        return parsed
    if value is None:
        return None
    if type(value) is int:
        return _parse_money_text(str(value), name, value)
    if type(value) is float:
        # Not what TOP sends, but repr() of a float is its shortest exact decimal text, so a float
        # such as 89.5 is taken at face value; NaN/inf/1e-05 fail the text checks.
        return _parse_money_text(repr(value), name, value)
    raise Invalid(f"field {name!r} = {show(value)} is not money (a {type(value).__name__})")


def time(value: Any, name: str) -> datetime | None:
    if type(value) is str:
        cached = _time_cache.get(value)
        if cached is not None:
            return cached
        if value == "":
            return None
        # fromisoformat is ~40x faster than strptime; the shape check keeps it to exactly
        # "yyyy-MM-dd HH:mm:ss" (fromisoformat alone would accept offsets, 'T', dates only...).
        if (len(value) != 19 or value[10] != " " or value[4] != "-" or value[7] != "-"
                or value[13] != ":" or value[16] != ":" or not value.isascii()):
            raise Invalid(f"field {name!r} = {show(value)} is not a TOP time (yyyy-MM-dd HH:mm:ss)")
        try:
            parsed = datetime.fromisoformat(value).replace(tzinfo=GMT8)
        except ValueError:
            raise Invalid(f"field {name!r} = {show(value)} is not a valid time") from None
        if len(_time_cache) >= _TIME_CACHE_LIMIT:
            _time_cache.clear()
        _time_cache[value] = parsed
        return parsed
    if value is None:
        return None
    raise Invalid(f"field {name!r} = {show(value)} is not a TOP time (a {type(value).__name__})")


def ident(value: Any, name: str, *, required: bool) -> int | None:
    if type(value) is int:
        if 0 < value <= _ID_MAX:
            return value
    elif type(value) is str:
        if value.isascii() and value.isdigit() and len(value) <= 19 and 0 < int(value) <= _ID_MAX:
            return int(value)
    elif value is None:
        if required:
            raise Invalid(f"field {name!r} missing")
        return None
    raise Invalid(f"field {name!r} = {show(value)} is not a positive 64-bit id")


def count(value: Any, name: str) -> int | None:
    if type(value) is int and 0 <= value <= _NUM_MAX:
        return value
    if value is None:
        return None
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 10:
        number = int(value)
        if number <= _NUM_MAX:
            return number
    raise Invalid(f"field {name!r} = {show(value)} is not a quantity")


def text(value: Any, name: str, limit: int) -> str | None:
    """Text up to ``limit`` characters (the column's width: an over-long value would fail the whole
    set-based upsert on PostgreSQL, and truncating would store something TOP never sent) that every
    backend can store (no NUL, no lone surrogate: see warehouse/types.py)."""
    if type(value) is str:
        # Hot path: the NUL scan and isascii are C loops; only non-ASCII text is encoded to find
        # surrogates (types.unstorable_char, inlined to save a call per field).
        if len(value) <= limit and "\x00" not in value:
            if value.isascii():
                return value
            try:
                value.encode("utf-8")
                return value
            except UnicodeEncodeError:
                pass
        if len(value) > limit:
            raise Invalid(f"field {name!r} = {show(value)} is longer than {limit} characters")
        raise Invalid(f"field {name!r} contains {unstorable_char(value)} (cannot be stored)")
    if value is None:
        return None
    if type(value) is int:
        return text(str(value), name, limit)
    raise Invalid(f"field {name!r} = {show(value)} is not text (a {type(value).__name__})")


def implausible(raw: Any, modified: datetime, latest: datetime) -> Invalid:
    """The reason ``modified`` is implausible (see the module docstring). ``latest`` is the load time
    plus the tolerance, in GMT8 like every parsed time: comparing the same tzinfo is the fast path."""
    if modified > latest:
        hours = MODIFIED_FUTURE_TOLERANCE // timedelta(hours=1)
        return Invalid(f"field 'modified' = {show(raw)} is implausible: more than {hours} hours after "
                        f"the load time ({format_top_time(latest - MODIFIED_FUTURE_TOLERANCE)} GMT+8)")
    return Invalid(f"field 'modified' = {show(raw)} is implausible: before Taobao's launch "
                    f"({EARLIEST_MODIFIED.date().isoformat()})")


def latest_modified(load_time: datetime) -> datetime:
    return (load_time + MODIFIED_FUTURE_TOLERANCE).astimezone(GMT8)


def payload_json(record: Any, *, keep_pii: bool = False) -> str:
    """The raw record as JSON text for the quarantine table; ints stay exact, PII stripped."""
    if isinstance(record, Mapping) and not keep_pii and any(is_personal(k) for k in record):
        record = {k: v for k, v in record.items() if not is_personal(k)}
    try:
        return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # orjson refuses ints beyond 64 bits, lone surrogates and non-JSON types. The stdlib writes
        # big ints exactly, but a lone surrogate raw: escaped here so the payload can be stored.
        return escape_unstorable(json.dumps(record, ensure_ascii=False, default=repr))


def check_modified(value: Any, latest: datetime) -> datetime:
    """The record's ``modified``: required, a TOP time, and plausible (``latest`` from ``latest_modified``)."""
    modified = time(value, "modified")
    if modified is None:
        raise Invalid("field 'modified' missing")
    if not EARLIEST_MODIFIED <= modified <= latest:
        raise implausible(value, modified, latest)
    return modified
