"""Text no backend can store (a NUL, a lone UTF-16 surrogate): what is written for rejected records and
cached fullinfo details always lands, on every backend."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from ordersync_pipeline.sync.normalize import payload_json
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import quarantine, trade_details

GMT8 = timezone(timedelta(hours=8))
NOW = datetime.now(timezone.utc)
MODIFIED = (NOW - timedelta(hours=1)).astimezone(GMT8).replace(microsecond=0)


def quarantined(wh: Warehouse) -> list[dict[str, Any]]:
    with wh.engine.connect() as conn:
        return [dict(row) for row in conn.execute(sa.select(quarantine).order_by(quarantine.c.id)).mappings()]


# --- what is written for rejected records always lands -------------------------------------------------

def test_quarantine_payloads_with_nul_and_lone_surrogates_round_trip(wh: Warehouse) -> None:
    record = {"tid": 2**70, "buyer_nick": "a\x00b", "title": "\ud800羊\udfff", "k\x00ey": ["\ud83d"]}
    raw = '{"tid": 1, "buyer_nick": "\x00\ud800"}'  # a caller's raw text, not valid JSON for a database
    wh.add_quarantine([
        {"source": "increment", "shop_id": "shop-1", "record_key": "1\x00", "reason": "bad \ud800 text",
         "payload": payload_json(record)},
        {"source": "increment", "shop_id": "shop-1", "record_key": "2", "reason": "raw", "payload": raw},
    ])
    first, second = quarantined(wh)
    assert json.loads(first["payload"]) == record
    assert (first["record_key"], first["reason"]) == ("1\\u0000", "bad \\ud800 text")
    assert second["payload"] == '{"tid": 1, "buyer_nick": "\\u0000\\ud800"}'  # now JSON, too
    assert json.loads(second["payload"]) == {"tid": 1, "buyer_nick": "\x00\ud800"}


def test_cached_details_with_a_lone_surrogate_are_stored(wh: Warehouse) -> None:
    detail = {"tid": 9, "title": "店\ud800", "seller_memo": "x\x00y", "receiver_name": "王*"}
    wh.upsert_trade_details([{"tid": 9, "shop_id": "shop-1", "modified": MODIFIED, "detail": detail}])
    with wh.engine.connect() as conn:
        stored = conn.execute(sa.select(trade_details.c.detail)).scalar_one()
    assert json.loads(stored) == {"tid": 9, "title": "店\ud800", "seller_memo": "x\x00y"}
