"""Raw TOP trade dicts -> warehouse rows (``trades``, ``trade_orders``) and ``quarantine`` rows.

Types at this edge: money is ``Decimal`` with exactly 2 places, times are aware datetimes (TOP sends
GMT+8 wall time), ids are Python ints (ids exceed 2^53, so never floats), ``sku_id`` is text.

Validation rules (a failing trade is quarantined with a reason naming the field and value; the rest
of the batch continues, so ``normalize_trades`` never raises on bad input):

* ``tid`` missing or not a positive 64-bit integer (an int or a string of ASCII digits).
* ``modified`` missing or not ``yyyy-MM-dd HH:mm:ss``: it orders every upsert, so without it the row
  could neither win nor lose correctly. Other times (``created``, ``pay_time`` ...) may be absent
  (field projections), but present-and-unparsable is rejected rather than stored as NULL.
* ``modified`` implausible: more than ``MODIFIED_FUTURE_TOLERANCE`` after the load time, or before
  ``EARLIEST_MODIFIED`` (Taobao's launch). A version dated 2099 would win every later upsert and
  freeze the row against every real change.
* ``status`` missing, or not in the trade status enum (top-api.md §4.1): an unknown status would be
  stored and counted as if understood. Order lines may omit status, but not carry an unknown one.
* Money: a string (or int) with at most 2 decimals and at most ``MONEY_MAX_INT_DIGITS`` integer
  digits. More than 2 decimals is rejected, not rounded: TOP documents 2 dp, so a third digit means
  the unit or the format is wrong and rounding would hide it. NaN/inf/exponents are rejected.
* Any bad order line quarantines the whole trade: stored without it, the trade would look complete
  and its amounts would not add up, and nothing downstream could tell. The monotonic upsert keeps the
  previous good version of the trade meanwhile.

Empty strings in optional money/time fields are treated as absent. Text fields accept strings (ints
are rendered as text, e.g. a numeric ``sku_id``) no longer than their warehouse column
(warehouse/tables.py widths, written inline below); anything else is rejected. Text holding a NUL
character (PostgreSQL cannot store it, and it would fail the whole COPY batch) or a lone UTF-16
surrogate (JSON can carry ``"\\ud800"``; no backend can encode it) quarantines its record too.

Every row carries its page's ``fetched_at``: the version of a row is ``(modified, fetched_at)``, so of
two versions with equal ``modified`` the one the platform returned later wins (warehouse/upsert.py).
``normalize_trades`` therefore takes one page's trades; ``merge_batches`` combines pages.

Within one batch each ``tid`` appears once: if the same trade arrives twice (page drift, overlap,
several pages flushed together) the newest version wins, later input breaking ties, and only that
version's lines are kept. Set-based upserts (Postgres ``ON CONFLICT``) refuse to touch one key twice
in a statement, so this is needed.

Receiver personal data never reaches a row (there are no such columns) and is stripped from
quarantine payloads unless ``keep_pii=True``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from ordersync_pipeline.sync.fields import (
    EARLIEST_MODIFIED,
    KEPT_RECEIVER_FIELDS,
    MODIFIED_FUTURE_TOLERANCE,
    MONEY_MAX_INT_DIGITS,
    PII_FIELDS,
    Invalid,
    count,
    ident,
    implausible,
    is_personal,
    latest_modified,
    money,
    payload_json,
    show,
    text,
    time,
)
from ordersync_pipeline.sync.refusals import refusal_of, without_refusal
from ordersync_pipeline.timeutil import require_aware
from ordersync_pipeline.warehouse.types import escape_unstorable

__all__ = [
    "NormalizedBatch", "normalize_trades", "merge_batches", "detail_row", "payload_json", "InvalidTrade",
    "TRADE_STATUSES", "TRADE_COLUMNS", "ORDER_COLUMNS",
    "QUARANTINE_COLUMNS", "PII_FIELDS", "KEPT_RECEIVER_FIELDS", "is_personal", "MONEY_MAX_INT_DIGITS",
    "MODIFIED_FUTURE_TOLERANCE", "EARLIEST_MODIFIED",
]

TRADE_STATUSES: Final = frozenset({
    "TRADE_NO_CREATE_PAY", "WAIT_BUYER_PAY", "SELLER_CONSIGNED_PART", "WAIT_SELLER_SEND_GOODS",
    "WAIT_BUYER_CONFIRM_GOODS", "TRADE_BUYER_SIGNED", "TRADE_FINISHED", "TRADE_CLOSED",
    "TRADE_CLOSED_BY_TAOBAO", "PAY_PENDING", "WAIT_PRE_AUTH_CONFIRM", "PAID_FORBID_CONSIGN",
})

TRADE_COLUMNS: Final = (
    "shop_id", "tid", "status", "type", "created", "modified", "pay_time", "consign_time", "end_time",
    "payment", "total_fee", "post_fee", "discount_fee", "adjust_fee", "step_trade_status",
    "step_paid_fee", "buyer_open_uid", "buyer_nick", "seller_nick", "receiver_state", "receiver_city",
    "receiver_district", "num", "source", "synced_at", "fetched_at",
)
ORDER_COLUMNS: Final = (
    "oid", "tid", "shop_id", "num_iid", "sku_id", "outer_iid", "outer_sku_id", "title", "num", "price",
    "payment", "total_fee", "discount_fee", "adjust_fee", "divide_order_fee", "status",
    "refund_status", "modified", "synced_at", "fetched_at",
)
QUARANTINE_COLUMNS: Final = ("quarantined_at", "source", "shop_id", "record_key", "reason", "payload")


@dataclass
class NormalizedBatch:
    trades: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)


class InvalidTrade(ValueError):
    """Raised by ``detail_row`` (a single fullinfo trade has no batch to quarantine within)."""


def _status(value: Any, name: str, *, required: bool) -> str | None:
    if type(value) is str and value in TRADE_STATUSES:
        return value
    if value is None and not required:
        return None
    if value is None:
        raise Invalid(f"field {name!r} missing")
    raise Invalid(f"field {name!r} = {show(value)} is not a known trade status")


# --- records --------------------------------------------------------------------------------------

def _order_list(value: Any) -> list[Any]:
    """Orders absent (fields projection) -> []; a list or TOP's ``{"order": [...]}`` wrapper."""
    if value is None:
        return []
    if isinstance(value, dict):
        if not value:
            return []
        if len(value) == 1 and "order" in value:
            value = value["order"]
            if isinstance(value, dict):  # one order sent as an object, not a list
                return [value]
    if isinstance(value, list):
        return value
    raise Invalid(f"field 'orders' = {show(value)} is not a list of orders")


def _order_row(o: Any, position: int, tid: int, shop_id: str, modified: datetime,
               synced_at: datetime, fetched_at: datetime) -> dict[str, Any]:
    if not isinstance(o, Mapping):
        raise Invalid(f"order[{position}] is a {type(o).__name__}, expected an object")
    get = o.get
    try:
        oid = ident(get("oid"), "oid", required=True)
        return {
            "oid": oid, "tid": tid, "shop_id": shop_id,
            "num_iid": ident(get("num_iid"), "num_iid", required=False),
            "sku_id": text(get("sku_id"), "sku_id", 64),
            "outer_iid": text(get("outer_iid"), "outer_iid", 128),
            "outer_sku_id": text(get("outer_sku_id"), "outer_sku_id", 128),
            "title": text(get("title"), "title", 255),
            "num": count(get("num"), "num"),
            "price": money(get("price"), "price"),
            "payment": money(get("payment"), "payment"),
            "total_fee": money(get("total_fee"), "total_fee"),
            "discount_fee": money(get("discount_fee"), "discount_fee"),
            "adjust_fee": money(get("adjust_fee"), "adjust_fee"),
            "divide_order_fee": money(get("divide_order_fee"), "divide_order_fee"),
            "status": _status(get("status"), "status", required=False),
            "refund_status": text(get("refund_status"), "refund_status", 64),
            "modified": modified, "synced_at": synced_at, "fetched_at": fetched_at,
        }
    except Invalid as exc:
        raise Invalid(f"order[{position}] (oid={show(get('oid'))}): {exc}") from None


def _trade_rows(t: Mapping[str, Any], shop_id: str, synced_at: datetime, fetched_at: datetime,
                latest: datetime, source: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    get = t.get
    tid = ident(get("tid"), "tid", required=True)
    assert tid is not None
    modified = time(get("modified"), "modified")
    if modified is None:
        raise Invalid("field 'modified' missing")
    if not EARLIEST_MODIFIED <= modified <= latest:
        raise implausible(get("modified"), modified, latest)
    row = {
        "shop_id": shop_id, "tid": tid,
        "status": _status(get("status"), "status", required=True),
        "type": text(get("type"), "type", 64),
        "created": time(get("created"), "created"),
        "modified": modified,
        "pay_time": time(get("pay_time"), "pay_time"),
        "consign_time": time(get("consign_time"), "consign_time"),
        "end_time": time(get("end_time"), "end_time"),
        "payment": money(get("payment"), "payment"),
        "total_fee": money(get("total_fee"), "total_fee"),
        "post_fee": money(get("post_fee"), "post_fee"),
        "discount_fee": money(get("discount_fee"), "discount_fee"),
        "adjust_fee": money(get("adjust_fee"), "adjust_fee"),
        "step_trade_status": text(get("step_trade_status"), "step_trade_status", 64),
        "step_paid_fee": money(get("step_paid_fee"), "step_paid_fee"),
        "buyer_open_uid": text(get("buyer_open_uid"), "buyer_open_uid", 128),
        "buyer_nick": text(get("buyer_nick"), "buyer_nick", 128),
        "seller_nick": text(get("seller_nick"), "seller_nick", 128),
        "receiver_state": text(get("receiver_state"), "receiver_state", 64),
        "receiver_city": text(get("receiver_city"), "receiver_city", 64),
        "receiver_district": text(get("receiver_district"), "receiver_district", 64),
        "num": count(get("num"), "num"),
        "source": source, "synced_at": synced_at, "fetched_at": fetched_at,
    }
    orders = [_order_row(o, i, tid, shop_id, modified, synced_at, fetched_at)
              for i, o in enumerate(_order_list(get("orders")))]
    if len(orders) > 1 and len({o["oid"] for o in orders}) != len(orders):
        raise Invalid("field 'orders' lists the same oid twice")
    return row, orders


# --- quarantine -----------------------------------------------------------------------------------

def _record_key(record: Any) -> str | None:
    tid = record.get("tid") if isinstance(record, Mapping) else None
    if tid is None or isinstance(tid, (dict, list)):
        return None
    return escape_unstorable(str(tid)[:64])  # it is quoted in reasons, which must be storable too


def _quarantine_row(record: Any, reason: str, *, shop_id: str, source: str, at: datetime,
                    keep_pii: bool) -> dict[str, Any]:
    return {"quarantined_at": at, "source": source, "shop_id": shop_id,
            "record_key": _record_key(record), "reason": reason,
            "payload": payload_json(record, keep_pii=keep_pii)}


# --- the batch ------------------------------------------------------------------------------------

def normalize_trades(shop_id: str, trades: Iterable[Mapping[str, Any]], *, fetched_at: datetime,
                     synced_at: datetime, source: str, keep_pii: bool = False) -> NormalizedBatch:
    """Validate and type one page's ``trades``; bad records become quarantine rows instead of raising.

    ``fetched_at`` (aware) is when the platform returned the page: with ``modified`` it is each row's
    version. ``synced_at`` (aware) stamps every row, is the quarantine time and the load time that
    ``modified`` may not exceed by more than ``MODIFIED_FUTURE_TOLERANCE``. ``source`` names where the
    trades came from (e.g. ``"increment"``, ``"historical"``, ``"tmc"``). Rows are unique by ``tid``
    (trades) and ``oid`` (orders) within the batch, newest ``modified`` winning, later input on a tie.
    """
    require_aware(fetched_at, "fetched_at")
    require_aware(synced_at, "synced_at")
    latest = latest_modified(synced_at)
    by_tid: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    quarantine: list[dict[str, Any]] = []
    for record in trades:
        try:
            if not isinstance(record, Mapping):
                raise Invalid(f"trade is a {type(record).__name__}, expected an object")
            refusal = refusal_of(record)
            if refusal is not None:  # fullinfo refused for this trade (sync/refusals.py)
                quarantine.append(_quarantine_row(without_refusal(record),
                                                  refusal.reason("trade", _record_key(record)),
                                                  shop_id=shop_id, source=source, at=synced_at,
                                                  keep_pii=keep_pii))
                continue
            row, orders = _trade_rows(record, shop_id, synced_at, fetched_at, latest, source)
        except Invalid as exc:
            quarantine.append(_quarantine_row(record, f"trade {_record_key(record) or '?'}: {exc}",
                                              shop_id=shop_id, source=source, at=synced_at,
                                              keep_pii=keep_pii))
            continue
        seen = by_tid.get(row["tid"])
        if seen is None or seen[0]["modified"] <= row["modified"]:
            by_tid[row["tid"]] = (row, orders)
    return _batch(by_tid.values(), quarantine)


def _version(row: Mapping[str, Any]) -> tuple[datetime, datetime]:
    return row["modified"], row["fetched_at"]


def _batch(versions: Iterable[tuple[dict[str, Any], list[dict[str, Any]]]],
           quarantine: list[dict[str, Any]]) -> NormalizedBatch:
    """The batch of the chosen trade versions with their lines (an oid listed under two trades: the
    newer line wins)."""
    batch = NormalizedBatch(quarantine=quarantine)
    by_oid: dict[int, dict[str, Any]] = {}
    for row, orders in versions:
        batch.trades.append(row)
        for order in orders:
            seen_order = by_oid.get(order["oid"])
            if seen_order is None or _version(seen_order) <= _version(order):
                by_oid[order["oid"]] = order
    batch.orders = list(by_oid.values())
    return batch


def merge_batches(batches: Iterable[NormalizedBatch]) -> NormalizedBatch:
    """One batch from several (one per page, in page order): each ``tid`` once, at its newest
    ``(modified, fetched_at)`` (the later batch on a tie) with only that version's lines; every
    quarantine row is kept."""
    pages = list(batches)
    merged = NormalizedBatch(trades=[row for b in pages for row in b.trades],
                             orders=[row for b in pages for row in b.orders],
                             quarantine=[row for b in pages for row in b.quarantine])
    if (len({row["tid"] for row in merged.trades}) == len(merged.trades)
            and len({row["oid"] for row in merged.orders}) == len(merged.orders)):
        return merged  # the common case, no trade on two pages: nothing to choose
    by_tid: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for batch in pages:
        lines: dict[int, list[dict[str, Any]]] = {}
        for order in batch.orders:
            lines.setdefault(order["tid"], []).append(order)
        for row in batch.trades:
            seen = by_tid.get(row["tid"])
            if seen is None or _version(seen[0]) <= _version(row):
                by_tid[row["tid"]] = (row, lines.get(row["tid"], []))
    return _batch(by_tid.values(), merged.quarantine)


def detail_row(shop_id: str, trade: Mapping[str, Any], *, fetched_at: datetime,
               keep_pii: bool = False) -> dict[str, Any]:
    """A ``trade_details`` cache row for one fullinfo trade: its JSON (receiver PII stripped unless
    ``keep_pii``), keyed by ``tid`` and versioned by ``modified``. Raises ``InvalidTrade`` when either
    is unusable."""
    require_aware(fetched_at, "fetched_at")
    try:
        if not isinstance(trade, Mapping):
            raise Invalid(f"trade is a {type(trade).__name__}, expected an object")
        tid = ident(trade.get("tid"), "tid", required=True)
        modified = time(trade.get("modified"), "modified")
        if modified is None:
            raise Invalid("field 'modified' missing")
        latest = latest_modified(fetched_at)
        if not EARLIEST_MODIFIED <= modified <= latest:
            raise implausible(trade.get("modified"), modified, latest)
    except Invalid as exc:
        raise InvalidTrade(f"fullinfo trade {_record_key(trade) or '?'}: {exc}") from None
    return {"tid": tid, "shop_id": shop_id, "modified": modified, "fetched_at": fetched_at,
            "detail": payload_json(trade, keep_pii=keep_pii)}
