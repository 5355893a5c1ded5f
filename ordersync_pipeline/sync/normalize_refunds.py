"""Raw TOP refund dicts (taobao.refunds.receive.get, taobao.refund.get) -> ``refunds`` rows and quarantine.

The field rules are the trades' (``sync/fields.py``: money with at most 2 decimals, GMT+8 times, positive
64-bit ids, text within its column, a plausible ``modified``). Refund specifics:

* ``refund_id`` (TOP sends it as a string of digits), ``tid``, ``oid``, ``status`` and ``modified`` are
  required; ``status`` must be a refund status of top-api.md §4.5.
* ``has_good_return`` is a boolean (``true``/``false``, also as text).
* A record the list call could not describe (``refund_incomplete``: a usable ``refund_id`` but no
  ``tid``, ``oid``, ``status`` or ``modified``) yields no row and no quarantine row: the fetch completed
  it with ``taobao.refund.get`` in the same partition (streams.py, which refuses an answer that is
  itself incomplete, so nothing is dropped unseen). When refund.get refused that refund (it was deleted
  meanwhile), the fetch kept a refusal item instead (sync/refusals.py): it becomes a quarantine row
  naming the API, the refund and the platform's sub_code and message.

Within one batch each ``refund_id`` appears once, at its newest ``(modified, fetched_at)``, later input
winning a tie (the set-based upserts need that). Buyer identifiers in quarantine payloads follow the
same PII rule as trades (``fields.payload_json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from ordersync_pipeline.sync.fields import (
    Invalid,
    check_modified,
    ident,
    latest_modified,
    money,
    payload_json,
    show,
    text,
    time,
)
from ordersync_pipeline.sync.refusals import refusal_of, without_refusal
from ordersync_pipeline.sync.stream import Batch
from ordersync_pipeline.timeutil import require_aware
from ordersync_pipeline.warehouse.types import escape_unstorable

__all__ = ["normalize_refunds", "refund_incomplete", "REFUND_STATUSES", "REFUND_COLUMNS", "REFUND_FIELDS",
           "REQUIRED_FIELDS"]

# top-api.md §4.5: the refund states, the exchange flows' included.
REFUND_STATUSES: Final = frozenset({
    "WAIT_SELLER_AGREE", "WAIT_BUYER_RETURN_GOODS", "WAIT_SELLER_CONFIRM_GOODS", "SELLER_REFUSE_BUYER",
    "CLOSED", "SUCCESS", "WAIT_BUYER_CONFIRM_EXCHANGE_SELLER_SEND_GOODS", "EXCHANGE_TRANSFORM_TO_REFUND",
    "WAIT_SELLER_CONSIGN_GOODS",
})
REFUND_COLUMNS: Final = (
    "refund_id", "shop_id", "tid", "oid", "status", "refund_fee", "total_fee", "payment", "good_status",
    "has_good_return", "reason", "desc", "created", "modified", "synced_at", "fetched_at",
)
# What is asked of refunds.receive.get and refund.get: every column (all on the list API's field list).
REFUND_FIELDS: Final = ",".join([
    "refund_id", "tid", "oid", "status", "refund_fee", "total_fee", "payment", "good_status",
    "has_good_return", "reason", "desc", "created", "modified",
])
# Without these a list record cannot become a row: refund.get is asked for the refund.
REQUIRED_FIELDS: Final = ("tid", "oid", "status", "modified")


def refund_incomplete(record: Mapping[str, Any]) -> bool:
    """A record with a usable ``refund_id`` missing a field the row needs (see the module docstring)."""
    refund_id = record.get("refund_id")
    usable = isinstance(refund_id, int) or (isinstance(refund_id, str) and refund_id.isascii()
                                            and refund_id.isdigit())
    return usable and any(record.get(name) in (None, "") for name in REQUIRED_FIELDS)


def _flag(value: Any, name: str) -> bool | None:
    if type(value) is bool:
        return value
    if value is None or value == "":
        return None
    if value in ("true", "false"):
        return bool(value == "true")
    raise Invalid(f"field {name!r} = {show(value)} is not a boolean")


def _status(value: Any) -> str:
    if type(value) is str and value in REFUND_STATUSES:
        return value
    if value is None:
        raise Invalid("field 'status' missing")
    raise Invalid(f"field 'status' = {show(value)} is not a known refund status")


def _row(r: Mapping[str, Any], shop_id: str, synced_at: datetime, fetched_at: datetime,
         latest: datetime) -> dict[str, Any]:
    get = r.get
    return {
        "refund_id": ident(get("refund_id"), "refund_id", required=True),
        "shop_id": shop_id,
        "tid": ident(get("tid"), "tid", required=True),
        "oid": ident(get("oid"), "oid", required=True),
        "status": _status(get("status")),
        "refund_fee": money(get("refund_fee"), "refund_fee"),
        "total_fee": money(get("total_fee"), "total_fee"),
        "payment": money(get("payment"), "payment"),
        "good_status": text(get("good_status"), "good_status", 64),
        "has_good_return": _flag(get("has_good_return"), "has_good_return"),
        "reason": text(get("reason"), "reason", 255),
        "desc": text(get("desc"), "desc", 10_000),
        "created": time(get("created"), "created"),
        "modified": check_modified(get("modified"), latest),
        "synced_at": synced_at, "fetched_at": fetched_at,
    }


def _record_key(record: Any) -> str | None:
    refund_id = record.get("refund_id") if isinstance(record, Mapping) else None
    if refund_id is None or isinstance(refund_id, (dict, list)):
        return None
    return escape_unstorable(str(refund_id)[:64])


def _quarantined(record: Any, key: str | None, reason: str, *, shop_id: str, source: str,
                 at: datetime) -> dict[str, Any]:
    return {"quarantined_at": at, "source": source, "shop_id": shop_id, "record_key": key, "reason": reason,
            "payload": payload_json(record)}


def normalize_refunds(shop_id: str, items: Sequence[Mapping[str, Any]], *, synced_at: datetime,
                      fetched_at: datetime, source: str) -> Batch:
    """Validate and type one page's refunds; bad records become quarantine rows instead of raising.

    ``fetched_at``, ``synced_at`` and ``source`` mean what they mean for ``normalize.normalize_trades``.
    """
    require_aware(fetched_at, "fetched_at")
    require_aware(synced_at, "synced_at")
    latest = latest_modified(synced_at)
    by_id: dict[int, dict[str, Any]] = {}
    quarantine: list[dict[str, Any]] = []
    for record in items:
        try:
            if not isinstance(record, Mapping):
                raise Invalid(f"refund is a {type(record).__name__}, expected an object")
            refusal = refusal_of(record)
            if refusal is not None:
                key = _record_key(record)
                quarantine.append(_quarantined(without_refusal(record), key, refusal.reason("refund", key),
                                               shop_id=shop_id, source=source, at=synced_at))
                continue
            if refund_incomplete(record):
                continue  # completed by refund.get on the same partition (module docstring)
            row = _row(record, shop_id, synced_at, fetched_at, latest)
        except Invalid as exc:
            key = _record_key(record)
            quarantine.append(_quarantined(record, key, f"refund {key or '?'}: {exc}",
                                           shop_id=shop_id, source=source, at=synced_at))
            continue
        held = by_id.get(row["refund_id"])
        if held is None or held["modified"] <= row["modified"]:
            by_id[row["refund_id"]] = row
    return Batch(rows={"refunds": list(by_id.values())}, quarantine=quarantine)
