"""Order quality checks over a shop's day: the simulator's data passes every one; each rule catches the
record that breaks it (lines that do not add up, a presale stage and amount that disagree, a status
change the platform never makes, seen in the lake's increment pages)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from ordersync_pipeline.reconcile import quality
from ordersync_pipeline.reconcile.load import load_pages
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.streams import TRADE_FIELDS, stream
from ordersync_pipeline.sync.windows import day_window
from ordersync_pipeline.timeutil import SHANGHAI, format_top_time
from ordersync_pipeline.top import paging
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.pages import Page
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import trade_orders, trades

DAY = date(2026, 11, 24)
WINDOW = day_window(DAY)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=17, shops=1, orders_per_day=400, history_days=2, clock="stepped",
                                           start_at=datetime(2026, 11, 25, 1, tzinfo=SHANGHAI))) as s:
        yield s


@pytest.fixture
def loaded(sim: Simulator, wh: Warehouse) -> Warehouse:
    with TopClient(gateway=sim.gateway_url, app_key=sim.app_key, app_secret=sim.app_secret) as client:
        pages = paging.iter_sold_pages(client, shop_id="shop-1", session=sim.shops[0].session,
                                       start_created=WINDOW.start, end_created=WINDOW.end - timedelta(seconds=1),
                                       fields=TRADE_FIELDS)
        load_pages(wh, stream("trades"), "shop-1", pages, source="sold", run_id=None)
    return wh


def test_the_platforms_own_data_passes_every_check(loaded: Warehouse, tmp_path: Path) -> None:
    results = quality.run_all(loaded, PageLake(tmp_path), "shop-1", WINDOW, increment_minutes=15)
    assert [r.name for r in results] == quality.check_names()
    by_name = {r.name: r for r in results}
    assert by_name["order_lines_add_up"].checked > 300
    assert by_name["presale_amounts_agree"].checked > 5  # the simulator sells presale (step) trades
    assert all(r.passed for r in results), [r.summary("shop-1") for r in results if not r.passed]


def test_lines_that_do_not_add_up_and_a_presale_out_of_step_are_named(loaded: Warehouse) -> None:
    with loaded.engine.begin() as conn:
        tid = conn.execute(sa.select(trades.c.tid).where(trades.c.type == "fixed").limit(1)).scalar_one()
        oid = conn.execute(sa.select(trade_orders.c.oid).where(trade_orders.c.tid == tid).limit(1)).scalar_one()
        conn.execute(trade_orders.update().where(trade_orders.c.oid == oid).values(payment=Decimal("0.01")))
        # More paid than the whole trade: wrong at every stage.
        step = conn.execute(sa.select(trades.c.tid, trades.c.payment).where(trades.c.type == "step").limit(1)).one()
        conn.execute(trades.update().where(trades.c.tid == step.tid).values(
            step_paid_fee=step.payment + Decimal("1.00")))
    lines = quality.order_lines_add_up(loaded, "shop-1", WINDOW)
    assert lines.violations == 1 and lines.examples[0].startswith(f"tid {tid}: lines ")
    presale = quality.presale_amounts_agree(loaded, "shop-1", WINDOW)
    assert presale.violations == 1 and presale.examples[0].startswith(f"tid {step.tid}: ")
    assert str(step.payment + Decimal("1.00")) in presale.examples[0]
    assert "do not" in presale.summary("shop-1")
    assert quality.order_lines_add_up(loaded, "shop-2", WINDOW).checked == 0


def test_status_changes_are_judged_against_the_platforms_graph() -> None:
    assert quality.reachable("WAIT_BUYER_PAY", "TRADE_FINISHED")            # via paid and shipped
    assert quality.reachable("WAIT_SELLER_SEND_GOODS", "TRADE_CLOSED")      # refunded before shipping
    assert not quality.reachable("TRADE_FINISHED", "WAIT_SELLER_SEND_GOODS")
    assert not quality.reachable("TRADE_CLOSED_BY_TAOBAO", "WAIT_BUYER_PAY")
    assert set(quality.PLATFORM_TRANSITIONS) == {
        "TRADE_NO_CREATE_PAY", "WAIT_BUYER_PAY", "SELLER_CONSIGNED_PART", "WAIT_SELLER_SEND_GOODS",
        "WAIT_BUYER_CONFIRM_GOODS", "TRADE_BUYER_SIGNED", "TRADE_FINISHED", "TRADE_CLOSED",
        "TRADE_CLOSED_BY_TAOBAO", "PAY_PENDING", "WAIT_PRE_AUTH_CONFIRM", "PAID_FORBID_CONSIGN"}
    keys = quality.day_increment_keys(WINDOW, 15)
    assert len(keys) == 96 and keys[0] == "2026-11-24-00:00" and keys[-1] == "2026-11-24-23:45"


def _page(trades_: list[dict[str, object]], at: datetime) -> Page:
    body = json.dumps({"trades_sold_increment_get_response": {
        "total_results": len(trades_), "trades": {"trade": trades_}, "request_id": "r"}}).encode()
    return Page(shop_id="shop-1", method=paging.INCREMENT_GET, window_start=at - timedelta(minutes=20),
                window_end=at, page_no=1, page_size=100, request_id="r", fetched_at=at.astimezone(timezone.utc),
                body=body, items=trades_, total_results=len(trades_), has_next=None)


def test_a_status_going_backwards_in_the_lake_is_a_violation(loaded: Warehouse, tmp_path: Path) -> None:
    with loaded.engine.connect() as conn:
        tid, status, modified = conn.execute(sa.select(trades.c.tid, trades.c.status, trades.c.modified).where(
            trades.c.status == "WAIT_BUYER_CONFIRM_GOODS").limit(1)).one()
    lake = PageLake(tmp_path)
    earlier = modified - timedelta(hours=1)
    # A version seen earlier in the day that is FINISHED, then stored as waiting for confirmation.
    lake.write_partition(shop_id="shop-1", stream="trades.increment", partition_key="2026-11-24-10:00", pages=[
        _page([{"tid": tid, "status": "TRADE_FINISHED", "modified": format_top_time(earlier)},
               {"tid": 1, "status": "WAIT_BUYER_PAY", "modified": format_top_time(earlier)},
               {"tid": 1, "status": "TRADE_FINISHED", "modified": format_top_time(modified)}], modified)])
    result = quality.status_transitions_valid(loaded, lake, "shop-1", WINDOW,
                                              increment_keys=quality.day_increment_keys(WINDOW, 15))
    assert result.checked == 2
    assert result.violations == 1 and result.examples == [f"tid {tid}: TRADE_FINISHED -> {status}"]
