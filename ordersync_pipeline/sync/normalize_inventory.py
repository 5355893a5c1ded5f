"""``taobao.items.onsale.get`` items and ``taobao.item.skus.get`` SKUs -> ``inventory_snapshots`` rows: one
per SKU, or one per item sold without SKU variants (its ``num`` is the stock then).

items.onsale.get returns Item's list fields only; the SKUs (with their ``num_iid``) come from
item.skus.get and are matched to their item here. An item carrying ``skus`` itself is read the same way.

Rows carry the ids ``trade_orders`` carries (``num_iid``, ``sku_id``, ``outer_iid``, ``outer_sku_id``), so
the two join on num_iid/sku_id and, failing those, on the merchant's outer ids (forecast/keys.py holds the
one SKU-key rule both sides use). A record that cannot be read (not an object, no usable ``num_iid``, a
quantity that is not a whole number of units >= 0, unreadable money, text no database can store) goes to
quarantine with its reason; the rest of the page lands. Within one snapshot a SKU listed twice keeps its
last listing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ordersync_pipeline.sync.normalize import payload_json
from ordersync_pipeline.sync.stream import Batch
from ordersync_pipeline.top.envelope import parse_money
from ordersync_pipeline.warehouse.types import escape_unstorable, unstorable_char

__all__ = ["normalize_items", "TABLE", "SOURCE", "ITEM_FIELDS", "SKU_FIELDS"]

TABLE = "inventory_snapshots"
SOURCE = "inventory"
ITEM_FIELDS = "num_iid,title,outer_id,price,approve_status,num"
SKU_FIELDS = "sku_id,num_iid,outer_id,quantity,price,properties_name"


class _Bad(ValueError):
    pass


def normalize_items(shop_id: str, items: Sequence[Mapping[str, Any]], *, taken_at: datetime,
                    details: Sequence[Any] = ()) -> Batch:
    """Validate and type a snapshot's items (``details``: its item.skus.get SKUs); see the module docstring."""
    rows: dict[tuple[int, str | None], dict[str, Any]] = {}
    quarantine: list[dict[str, Any]] = []

    def bad(record: Any, what: str, exc: Exception) -> None:
        key = record.get("num_iid") if isinstance(record, Mapping) else None
        quarantine.append({"quarantined_at": taken_at, "source": SOURCE, "shop_id": shop_id,
                           "record_key": None if key is None or isinstance(key, (dict, list))
                           else escape_unstorable(str(key)[:64]),
                           "reason": f"inventory {what}: {exc}", "payload": payload_json(record)})

    skus: dict[int, list[Mapping[str, Any]]] = {}
    for sku in details:
        try:
            if not isinstance(sku, Mapping):
                raise _Bad(f"not an object: {type(sku).__name__}")
            num_iid = _id(sku.get("num_iid"), "num_iid")
            if num_iid is None:
                raise _Bad("a sku has no num_iid")
            skus.setdefault(num_iid, []).append(sku)
        except _Bad as exc:
            bad(sku, "sku", exc)
    for item in items:
        try:
            for row in _item_rows(shop_id, item, taken_at, skus):
                rows[(row["num_iid"], row["sku_id"])] = row
        except _Bad as exc:
            bad(item, "item", exc)
    return Batch(rows={TABLE: list(rows.values())}, quarantine=quarantine)


def _item_rows(shop_id: str, item: Any, taken_at: datetime,
               details: Mapping[int, list[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    if not isinstance(item, Mapping):
        raise _Bad(f"not an object: {type(item).__name__}")
    num_iid = _id(item.get("num_iid"), "num_iid")
    if num_iid is None:
        raise _Bad("no num_iid")
    base = {"shop_id": shop_id, "num_iid": num_iid, "outer_iid": _text(item.get("outer_id"), "outer_id", 128),
            "title": _text(item.get("title"), "title", 255),
            "approve_status": _text(item.get("approve_status"), "approve_status", 32), "taken_at": taken_at}
    price = _money(item.get("price"), "price")
    skus = item.get("skus")
    if skus in (None, "", []):
        skus = details.get(num_iid)
    if skus in (None, "", []):
        return [{**base, "sku_id": None, "outer_sku_id": None, "quantity": _quantity(item.get("num"), "num"),
                 "price": price}]
    if not isinstance(skus, list):
        raise _Bad(f"skus is {type(skus).__name__}, not a list")
    rows = []
    for sku in skus:
        if not isinstance(sku, Mapping):
            raise _Bad(f"a sku is {type(sku).__name__}, not an object")
        sku_id = _id(sku.get("sku_id"), "sku_id")
        if sku_id is None:
            raise _Bad("a sku has no sku_id")
        sku_price = _money(sku.get("price"), "sku price")
        rows.append({**base, "sku_id": str(sku_id), "outer_sku_id": _text(sku.get("outer_id"), "sku outer_id", 128),
                     "quantity": _quantity(sku.get("quantity"), "sku quantity"),
                     "price": sku_price if sku_price is not None else price})
    return rows


def _id(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Bad(f"{what} {value!r} is not an id")
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or int(text) <= 0 or int(text) >= 2**63:
        raise _Bad(f"{what} {escape_unstorable(text[:40])!r} is not a positive id")
    return int(text)


def _quantity(value: Any, what: str) -> int:
    if isinstance(value, bool) or value is None:
        raise _Bad(f"{what} missing or not a number: {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _Bad(f"{what} {escape_unstorable(str(value)[:40])!r} is not a whole number of units") from None
    if number < 0 or number >= 2**31:
        raise _Bad(f"{what} {number} is outside 0 .. 2^31-1 units")
    return number


def _money(value: Any, what: str) -> Any:
    try:
        amount = parse_money(value)
    except ValueError:
        raise _Bad(f"{what} {escape_unstorable(str(value)[:40])!r} is not an amount") from None
    if amount is not None and not -10**12 < amount < 10**12:
        raise _Bad(f"{what} {amount} is out of range")
    return amount


def _text(value: Any, what: str, limit: int) -> str | None:
    if value is None:
        return None
    text = str(value)
    bad = unstorable_char(text)
    if bad is not None:
        raise _Bad(f"{what} holds {bad}, which no warehouse can store")
    return text[:limit] or None
