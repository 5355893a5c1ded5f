"""The refunds normaliser (types, quarantine reasons, one row per refund_id) and the refund stream's
detail call: refund.get completes a list record missing a field, through the simulator."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.sync.normalize_refunds import REFUND_COLUMNS, normalize_refunds, refund_incomplete
from ordersync_pipeline.sync.streams import stream
from ordersync_pipeline.sync.windows import Window
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.recorder import ListRecorder
from ordersync_pipeline.top.retry import RetryPolicy
from ordersync_pipeline.warehouse.tables import refunds

SYNCED_AT = datetime(2026, 11, 26, 2, 30, tzinfo=timezone.utc)
FETCHED_AT = datetime(2026, 11, 26, 2, 29, 58, tzinfo=timezone.utc)
GMT8 = timezone(timedelta(hours=8))


def good(**changes: Any) -> dict[str, Any]:
    record = {"refund_id": "241871234567890001", "tid": 3811877752109934217, "oid": 3811877752110934217,
              "status": "WAIT_SELLER_AGREE", "good_status": "BUYER_NOT_RECEIVED", "has_good_return": False,
              "total_fee": "49.00", "refund_fee": "49.00", "payment": "0.00", "created": "2026-11-25 11:05:18",
              "modified": "2026-11-25 11:05:19", "reason": "不想要了", "desc": "", "buyer_nick": "z**a"}
    record.update(changes)
    return record


def norm(items: list[Any]) -> Any:
    return normalize_refunds("shop-1", items, synced_at=SYNCED_AT, fetched_at=FETCHED_AT, source="increment")


def test_a_refund_becomes_one_typed_row_with_exactly_the_table_columns() -> None:
    batch = norm([good()])
    assert batch.quarantine == []
    [row] = batch.rows["refunds"]
    assert tuple(row) == REFUND_COLUMNS == tuple(c.name for c in refunds.columns)
    assert row["refund_id"] == 241871234567890001 and row["oid"] == 3811877752110934217
    assert row["refund_fee"] == Decimal("49.00") and row["has_good_return"] is False
    assert row["modified"] == datetime(2026, 11, 25, 11, 5, 19, tzinfo=GMT8)
    assert row["fetched_at"] == FETCHED_AT and row["synced_at"] == SYNCED_AT


@pytest.mark.parametrize(("change", "reason"), [
    ({"status": "REFUNDING"}, "'status' = 'REFUNDING' is not a known refund status"),
    ({"refund_fee": "49.001"}, "'refund_fee' = '49.001' is not money"),
    ({"refund_id": "-1"}, "'refund_id' = '-1' is not a positive 64-bit id"),
    ({"modified": "2099-01-01 00:00:00"}, "is implausible"),
    ({"has_good_return": "yes"}, "'has_good_return' = 'yes' is not a boolean"),
    ({"reason": "x\x00y"}, "'reason' contains a NUL character"),
])
def test_a_bad_record_is_quarantined_with_its_reason_and_the_page_goes_on(change: dict[str, Any],
                                                                            reason: str) -> None:
    batch = norm([good(**change), good(refund_id="241871234567890002")])
    assert [r["refund_id"] for r in batch.rows["refunds"]] == [241871234567890002]
    [bad] = batch.quarantine
    assert reason in bad["reason"] and bad["source"] == "increment" and bad["shop_id"] == "shop-1"
    assert bad["record_key"] == str(change.get("refund_id", "241871234567890001"))
    assert "\x00" not in bad["payload"]


def test_a_record_that_is_not_an_object_is_quarantined() -> None:
    batch = norm(["nonsense"])
    assert batch.rows["refunds"] == [] and "expected an object" in batch.quarantine[0]["reason"]


def test_one_row_per_refund_the_newest_version_winning() -> None:
    batch = norm([good(status="SUCCESS", modified="2026-11-25 12:00:00"), good(),
                  good(status="CLOSED", modified="2026-11-25 12:00:00")])
    assert [(r["status"], r["modified"].hour) for r in batch.rows["refunds"]] == [("CLOSED", 12)]


def test_an_incomplete_list_record_is_left_to_refund_get() -> None:
    incomplete = {"refund_id": "241871234567890001", "modified": "2026-11-25 11:05:19"}
    assert refund_incomplete(incomplete) and not refund_incomplete(good())
    assert not refund_incomplete({"tid": 1})  # no usable refund_id: the normaliser quarantines it
    batch = norm([incomplete])
    assert batch.rows["refunds"] == [] and batch.quarantine == []


def test_refund_get_completes_a_list_record_through_the_simulator() -> None:
    with start_simulator(SimulatorSettings(seed=5, shops=1, orders_per_day=300, history_days=5,
                                           clock="stepped")) as sim:
        truth = sim.world.refunds("shop-1")[0]
        client = TopClient(gateway=sim.gateway_url, app_key=sim.app_key, app_secret=sim.app_secret,
                           sign_method="hmac-sha256", timeout=5.0, recorder=ListRecorder(),
                           retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.1),
                           rng=random.Random(5))
        detail = stream("refunds").detail
        assert detail is not None and detail.method == "taobao.refund.get"
        now = sim.clock.now()
        try:
            page = detail.fetch(client, shop_id="shop-1", session=sim.shops[0].session,
                                record={"refund_id": truth["refund_id"]}, window=Window(now - timedelta(hours=1), now))
        finally:
            client.close()
    assert page.page_no == 0 and page.method == "taobao.refund.get"
    [row] = norm(page.items).rows["refunds"]
    assert (row["refund_id"], row["tid"], row["oid"], row["status"]) == (
        int(truth["refund_id"]), truth["tid"], truth["oid"], truth["status"])
