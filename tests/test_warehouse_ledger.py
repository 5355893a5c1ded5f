"""The API call ledger, quarantine and the completed-window log, on every backend."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import api_calls, quarantine

GMT8 = timezone(timedelta(hours=8))
NOW = datetime.now(timezone.utc)


@dataclass(frozen=True)
class FakeCallRecord:
    """Shaped like top.CallRecord (the warehouse reads attributes, not the class)."""

    started_at: datetime
    method: str
    shop_id: str | None
    outcome: str
    code: int | None
    sub_code: str | None
    latency_s: float
    request_id: str | None
    attempt: int
    error_kind: str | None



def call(outcome: str, *, shop: str = "shop-1", minutes_ago: float = 1, code: int | None = None) -> FakeCallRecord:
    return FakeCallRecord(
        started_at=NOW - timedelta(minutes=minutes_ago), method="taobao.trades.sold.increment.get",
        shop_id=shop, outcome=outcome, code=code, sub_code="isp.top-remote-connection-timeout" if code else None,
        latency_s=0.1234, request_id="15ryekq7hious", attempt=1, error_kind="TopServerError" if code else None,
    )


def test_failure_rate_counts_calls_since_the_given_time(wh: Warehouse) -> None:
    recent = [call("ok")] * 17 + [call("error", code=15)] * 3
    old_failures = [call("error", minutes_ago=120, code=15)] * 10
    other_shop = [call("error", shop="shop-2", code=15)]
    assert wh.record_calls([*recent, *old_failures, *other_shop], run_id="run-1") == 31
    since = NOW - timedelta(hours=1)
    assert wh.failure_rate(since, shop_id="shop-1") == pytest.approx(3 / 20)
    assert wh.failure_rate(since) == pytest.approx(4 / 21)
    assert wh.call_stats(since, shop_id="shop-2").calls == 1


def test_failure_rate_is_zero_without_calls(wh: Warehouse) -> None:
    assert wh.failure_rate(NOW - timedelta(hours=1)) == 0.0


def test_call_records_may_be_dicts_and_keep_their_details(wh: Warehouse) -> None:
    wh.record_calls([{"started_at": NOW.astimezone(GMT8), "method": "taobao.trade.fullinfo.get",
                      "shop_id": "shop-1", "outcome": "error", "code": 7, "sub_code": None,
                      "latency_s": 0.25, "request_id": "abc", "attempt": 2, "error_kind": "TopRateLimited"}],
                    run_id="r")
    with wh.engine.connect() as conn:
        row = conn.execute(sa.select(api_calls)).mappings().one()
    assert (row["code"], row["latency_ms"], row["attempt"], row["run_id"]) == ("7", 250, 2, "r")
    assert abs(row["called_at"] - NOW) < timedelta(milliseconds=1)


def test_quarantine_keeps_reason_and_raw_payload(wh: Warehouse) -> None:
    payload = json.dumps({"tid": 12345678901234567890123, "title": "坏数据"}, ensure_ascii=False)
    assert wh.add_quarantine([{"run_id": "r", "source": "increment", "shop_id": "shop-1",
                               "record_key": "tid:bad", "reason": "tid out of range", "payload": payload}]) == 1
    with wh.engine.connect() as conn:
        row = conn.execute(sa.select(quarantine)).mappings().one()
    assert row["payload"] == payload and row["reason"] == "tid out of range"
    assert row["quarantined_at"].tzinfo is not None


def test_windows_are_listed_in_order_and_rerecording_replaces(wh: Warehouse) -> None:
    start = datetime(2026, 11, 11, 0, 0, tzinfo=GMT8)
    for k in (2, 0, 1):
        wh.mark_window_complete(shop_id="shop-1", stream="trades", kind="increment",
                                window_start=start + timedelta(minutes=15 * k),
                                window_end=start + timedelta(minutes=15 * (k + 1)), partition_key=f"p{k}",
                                pages=1, records=10, run_id="run-1")
    wh.mark_window_complete(shop_id="shop-1", stream="trades", kind="increment", window_start=start,
                            window_end=start + timedelta(minutes=15), partition_key="p0", pages=3, records=250,
                            run_id="run-2")
    windows = wh.completed_windows("shop-1", "trades", "increment")
    assert [w.partition_key for w in windows] == ["p0", "p1", "p2"]
    assert (windows[0].pages, windows[0].records, windows[0].run_id) == (3, 250, "run-2")
    assert windows[0].window_start == start
    assert wh.completed_windows("shop-1", "trades", "historical") == []
    # Each stream keeps its own windows: a refunds window is not a trades window.
    assert wh.completed_windows("shop-1", "refunds", "increment") == []


def test_a_window_must_be_aware_and_non_empty(wh: Warehouse) -> None:
    start = datetime(2026, 11, 11, tzinfo=GMT8)
    with pytest.raises(ValueError):
        wh.mark_window_complete(shop_id="s", stream="trades", kind="increment", window_start=start,
                                window_end=start, partition_key=None, pages=0, records=0, run_id=None)
    with pytest.raises(ValueError):
        wh.mark_window_complete(shop_id="s", stream="trades", kind="daily", window_start=start,
                                window_end=start + timedelta(hours=1), partition_key=None, pages=0, records=0,
                                run_id=None)
