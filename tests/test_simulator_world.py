"""The simulated shop behaves like a shop: seeded, lifecycles, clock, lag, page drift, TMC, faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests

from ordersync_pipeline.config import OrdersyncConfig, load_config, write_config
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.simulator.probe import Probe
from ordersync_pipeline.timeutil import SHANGHAI, format_top_time, parse_top_time

LIST_FIELDS = "tid,type,status,created,modified,orders.oid"

# Worlds whose test reads the changes of a few minutes start at a fixed afternoon: started at the host's
# time, a run after midnight Shanghai time found too few changes (16 of 20 at 00:40, none at 01:45).
AFTERNOON = datetime.now(SHANGHAI).replace(hour=15, minute=0, second=0, microsecond=0) - timedelta(days=1)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=5, shops=2, orders_per_day=400, history_days=14,
                                           clock="stepped")) as s:
        yield s


@pytest.fixture(scope="module")
def probe(sim: Simulator) -> Probe:
    return Probe(sim.gateway_url, sim.app_key, sim.app_secret)


def sold_all(probe: Probe, session: str, start: datetime, end: datetime, **extra: Any) -> list[dict[str, Any]]:
    out, page = [], 1
    while True:
        body = probe.call("taobao.trades.sold.get", session, fields=LIST_FIELDS, start_created=format_top_time(start),
                          end_created=format_top_time(end), page_no=page, page_size=100, **extra)
        inner = body["trades_sold_get_response"]
        out += inner.get("trades", {}).get("trade", [])
        if not inner["has_next"]:
            return out
        page += 1


def test_same_seed_same_world_other_seed_other_world(sim: Simulator) -> None:
    with start_simulator(SimulatorSettings(seed=5, shops=2, orders_per_day=400, history_days=14,
                                           clock="stepped")) as twin:
        at = min(sim.clock.now_ts(), twin.clock.now_ts())
        assert twin.world.trades("shop-1", at)[:200] == sim.world.trades("shop-1", at)[:200]
        assert twin.shops == sim.shops and twin.app_secret == sim.app_secret
    with start_simulator(SimulatorSettings(seed=6, shops=1, orders_per_day=400, history_days=14)) as other:
        assert other.world.trades("shop-1")[:50] != sim.world.trades("shop-1")[:50]


def test_history_volume_weekly_pattern_and_promotion_spike(sim: Simulator) -> None:
    per_day: dict[str, int] = {}
    for t in sim.world.trades("shop-1"):
        per_day[t["created"][:10]] = per_day.get(t["created"][:10], 0) + 1
    full_days = sorted(per_day)[:-1]  # today is still running
    counts = [per_day[d] for d in full_days]
    assert len(full_days) == 14 and max(counts) > 2.5 * min(counts)  # the promotion day stands out
    assert sorted(counts)[len(counts) // 2] == pytest.approx(400, rel=0.2)


def test_lifecycles_are_consistent(sim: Simulator) -> None:
    trades = sim.world.trades("shop-1")
    statuses = {t["status"] for t in trades}
    assert {"WAIT_BUYER_PAY", "WAIT_SELLER_SEND_GOODS", "WAIT_BUYER_CONFIRM_GOODS", "TRADE_FINISHED",
            "TRADE_CLOSED", "TRADE_CLOSED_BY_TAOBAO"} <= statuses
    assert {"fixed", "auction", "step", "tmall_i18n"} <= {t["type"] for t in trades}
    for t in trades:
        times = [t[k] for k in ("created", "pay_time", "consign_time", "end_time") if k in t]
        assert times == sorted(times) and max(times) <= t["modified"]
        if t["status"] == "TRADE_CLOSED_BY_TAOBAO" and t["type"] != "step":
            assert "pay_time" not in t
        if t["status"] in ("WAIT_BUYER_CONFIRM_GOODS", "TRADE_FINISHED"):
            assert "pay_time" in t and "consign_time" in t
        if t["status"] == "TRADE_CLOSED":  # refunded before shipping
            assert all(o["refund_status"] == "SUCCESS" for o in t["orders"])
        if t["type"] == "step":
            assert t["step_trade_status"] in ("FRONT_NOPAID_FINAL_NOPAID", "FRONT_PAID_FINAL_NOPAID",
                                              "FRONT_PAID_FINAL_PAID", "FRONT_PAID_FRONT_FORFEITED")
            if t["step_trade_status"] == "FRONT_PAID_FINAL_NOPAID":
                assert t["status"] == "WAIT_BUYER_PAY" and t["step_paid_fee"] != "0.00"
        total = sum(int(o["payment"].replace(".", "")) for o in t["orders"]) + int(t["post_fee"].replace(".", ""))
        assert total == int(t["payment"].replace(".", ""))
    assert {len(t["orders"]) for t in trades} == {1, 2, 3, 4}


def test_default_type_filter_hides_tmall_i18n_unless_asked(sim: Simulator, probe: Probe) -> None:
    now = sim.clock.now()
    start, session = now - timedelta(days=2), sim.shops[0].session
    truth = [t for t in sim.world.trades("shop-1") if t["created"] >= format_top_time(start)]
    default = sold_all(probe, session, start, now)
    assert {t["tid"] for t in default} == {t["tid"] for t in truth if t["type"] != "tmall_i18n"}
    assert [t["tid"] for t in default] == sorted((t["tid"] for t in default), reverse=True)
    every = sold_all(probe, session, start, now, type="guarantee_trade,step,tmall_i18n")
    assert {t["tid"] for t in every} == {t["tid"] for t in truth}


def test_increment_window_is_the_modified_truth(sim: Simulator, probe: Probe) -> None:
    now = sim.clock.now()
    start = now - timedelta(hours=6)
    body = probe.call("taobao.trades.sold.increment.get", sim.shops[1].session, fields="tid,modified,type",
                      start_modified=format_top_time(start), end_modified=format_top_time(now), page_size=100,
                      type="guarantee_trade,step,tmall_i18n")["trades_sold_increment_get_response"]
    truth = {t["tid"]: t["modified"] for t in sim.world.trades("shop-2")
             if format_top_time(start) <= t["modified"] <= format_top_time(now)}
    assert body["total_results"] == len(truth) > 0
    got = body["trades"]["trade"]
    assert [t["modified"] for t in got] == sorted((t["modified"] for t in got), reverse=True)
    assert all(truth[t["tid"]] == t["modified"] for t in got)


def test_stepped_clock_moves_trades_along_and_creates_new_ones(probe: Probe) -> None:
    with start_simulator(SimulatorSettings(seed=8, shops=1, orders_per_day=2000, history_days=1,
                                           clock="stepped")) as sim:
        before = {t["tid"]: t for t in sim.world.trades("shop-1")}
        t0 = sim.clock.now()
        sim.clock.advance(3 * 3600)
        after = {t["tid"]: t for t in sim.world.trades("shop-1")}
        assert len(after) > len(before)
        changed = [tid for tid in before if after[tid]["modified"] != before[tid]["modified"]]
        assert changed and all(after[tid]["modified"] > format_top_time(t0) for tid in changed)
        p = Probe(sim.gateway_url, sim.app_key, sim.app_secret)
        body = p.call("taobao.trades.sold.increment.get", sim.shops[0].session, fields="tid,modified",
                      start_modified=format_top_time(t0 + timedelta(seconds=1)),
                      end_modified=format_top_time(sim.clock.now()), page_size=100,
                      type="guarantee_trade,step,tmall_i18n")
        assert body["trades_sold_increment_get_response"]["total_results"] == sum(
            1 for t in after.values() if t["modified"] > format_top_time(t0))


def test_visibility_lag_hides_fresh_changes_from_increment_only() -> None:
    with start_simulator(SimulatorSettings(seed=9, shops=1, orders_per_day=3000, history_days=1,
                                           clock="stepped", visibility_lag_s=120, start_at=AFTERNOON)) as sim:
        p = Probe(sim.gateway_url, sim.app_key, sim.app_secret)
        session = sim.shops[0].session
        t0 = sim.clock.now()
        sim.clock.advance(60)
        fresh = [t for t in sim.world.trades("shop-1") if t["modified"] > format_top_time(t0)]
        assert fresh

        def increment() -> set[int]:
            body = p.call("taobao.trades.sold.increment.get", session, fields="tid",
                          start_modified=format_top_time(t0 + timedelta(seconds=1)),
                          end_modified=format_top_time(t0 + timedelta(seconds=60)), page_size=100,
                          type="guarantee_trade,step,tmall_i18n")["trades_sold_increment_get_response"]
            return {t["tid"] for t in body.get("trades", {}).get("trade", [])}

        assert increment() == set()
        full = p.call("taobao.trade.fullinfo.get", session, fields="modified", tid=fresh[0]["tid"])
        assert full["trade_fullinfo_get_response"]["trade"]["modified"] == fresh[0]["modified"]
        sim.clock.advance(120)
        assert {t["tid"] for t in fresh} <= increment()


def test_refunds_list_trails_the_world_by_the_same_visibility_lag() -> None:
    with start_simulator(SimulatorSettings(seed=9, shops=1, orders_per_day=3000, history_days=1,
                                           clock="stepped", visibility_lag_s=1800, start_at=AFTERNOON)) as sim:
        p = Probe(sim.gateway_url, sim.app_key, sim.app_secret)
        session = sim.shops[0].session
        now = sim.clock.now()
        start = now - timedelta(hours=6)

        def listed() -> dict[str, str]:
            body = p.call("taobao.refunds.receive.get", session, fields="refund_id,status,modified",
                          start_modified=format_top_time(start), end_modified=format_top_time(sim.clock.now()),
                          page_size=100, type="fixed,auction,step,tmall_i18n")["refunds_receive_get_response"]
            return {r["refund_id"]: r["modified"] for r in body.get("refunds", {}).get("refund", [])}

        def truth(at: datetime) -> dict[str, str]:
            lo, hi = format_top_time(start), format_top_time(at)
            return {r["refund_id"]: r["modified"] for r in sim.world.refunds("shop-1", int(at.timestamp()))
                    if lo <= r["modified"] <= hi}

        lagged = truth(now - timedelta(seconds=1800))
        assert truth(now) != lagged, "some refund must have changed within the lag"
        assert listed() == lagged
        sim.clock.advance(1800)
        assert listed() == truth(now)


def test_page_drift_loses_trades_for_forward_paging_but_not_reverse() -> None:
    def pages(sim: Simulator, order: str) -> tuple[set[int], set[int]]:
        p = Probe(sim.gateway_url, sim.app_key, sim.app_secret)
        session = sim.shops[0].session
        end = sim.clock.now() - timedelta(hours=1)
        args = {"fields": "tid", "start_modified": format_top_time(end - timedelta(hours=12)),
                "end_modified": format_top_time(end), "page_size": 20, "type": "guarantee_trade,step,tmall_i18n"}
        first = p.call("taobao.trades.sold.increment.get", session, page_no=1, **args)
        total = first["trades_sold_increment_get_response"]["total_results"]
        last = -(-total // 20)
        window_tids = {t["tid"] for t in sim.world.trades("shop-1")
                       if args["start_modified"] <= t["modified"] <= args["end_modified"]}
        numbers = range(1, last + 1) if order == "forward" else range(last, 0, -1)
        seen: set[int] = set()
        for n in numbers:
            body = p.call("taobao.trades.sold.increment.get", session, page_no=n, **args)
            seen |= {t["tid"] for t in body["trades_sold_increment_get_response"].get("trades", {}).get("trade", [])}
        # Trades that drifted out of the window belong to a later window; the rest must all be seen.
        still_in_window = {t["tid"] for t in sim.world.trades("shop-1")
                           if args["start_modified"] <= t["modified"] <= args["end_modified"]}
        assert still_in_window < window_tids  # drift really happened
        return seen, still_in_window

    settings = SimulatorSettings(seed=4, shops=1, orders_per_day=1500, history_days=1, page_drift=1.0,
                                 clock="stepped")
    with start_simulator(settings) as sim:
        seen, truth = pages(sim, "forward")
        assert truth - seen, "forward paging should lose trades at page boundaries"
    with start_simulator(settings) as sim:
        seen, truth = pages(sim, "reverse")
        assert truth <= seen


def test_tmc_messages_redelivered_until_confirmed() -> None:
    with start_simulator(SimulatorSettings(seed=3, shops=1, orders_per_day=3000, history_days=1,
                                           clock="stepped", tmc_redelivery_s=300, start_at=AFTERNOON)) as sim:
        p = Probe(sim.gateway_url, sim.app_key, sim.app_secret)
        assert "messages" not in p.call("taobao.tmc.messages.consume", quantity=50)["tmc_messages_consume_response"]
        sim.clock.advance(600)
        msgs = p.call("taobao.tmc.messages.consume", quantity=20)["tmc_messages_consume_response"]["messages"]["tmc_message"]
        assert len(msgs) == 20
        topics = {m["topic"] for m in msgs}
        assert topics <= {"taobao_trade_TradeCreate", "taobao_trade_TradeBuyerPay", "taobao_trade_TradeSellerShip",
                          "taobao_trade_TradeSuccess", "taobao_trade_TradeClose", "taobao_trade_TradeBuyerStepPay",
                          "taobao_refund_RefundCreated", "taobao_refund_RefundSuccess"}
        content = json.loads(msgs[0]["content"])  # content is a JSON string
        assert content["tid"] > 2**53 and sim.world.trade(content["tid"]) is not None
        ids = [m["id"] for m in msgs]
        p.call("taobao.tmc.messages.confirm", s_message_ids=",".join(map(str, ids[:10])))
        again = p.call("taobao.tmc.messages.consume", quantity=200)["tmc_messages_consume_response"]
        assert not set(ids) & {m["id"] for m in again.get("messages", {}).get("tmc_message", [])}
        sim.clock.advance(300)
        redelivered = {m["id"] for m in p.call("taobao.tmc.messages.consume", quantity=200)
                       ["tmc_messages_consume_response"]["messages"]["tmc_message"]}
        assert set(ids[10:]) <= redelivered and not set(ids[:10]) & redelivered
        e = p.call("taobao.tmc.messages.consume", quantity=5)["error_response"]
        assert (e["code"], e["msg"]) == (41, "Invalid arguments:quantity")


def test_faults_cover_isp_errors_broken_bodies_and_timeouts() -> None:
    settings = SimulatorSettings(seed=2, shops=1, orders_per_day=50, history_days=1, fault_rate=1.0,
                                 fault_timeout_s=0.6, fault_slow_s=0.05)
    with start_simulator(settings) as sim:
        p = Probe(sim.gateway_url, sim.app_key, sim.app_secret, timeout=0.4)
        kinds: set[str] = set()
        for _ in range(40):
            try:
                resp = p.raw("taobao.trades.sold.get", sim.shops[0].session, fields="tid")
            except requests.exceptions.ReadTimeout:
                kinds.add("timeout")
                continue
            if resp.status_code == 502:
                kinds.add("http502")
                continue
            try:
                body = resp.json()
            except ValueError:
                kinds.add("broken-json")
                continue
            if "error_response" in body:
                assert body["error_response"]["code"] == 15
                assert body["error_response"]["sub_code"].startswith("isp.")
                kinds.add("isp")
            else:
                kinds.add("ok-but-slow")
        assert {"isp", "broken-json", "timeout", "ok-but-slow", "http502"} <= kinds
        assert sum(sim.gateway.faults.injected.values()) == 40


def test_refunds_logistics_and_inventory(sim: Simulator, probe: Probe) -> None:
    session = sim.shops[0].session
    truth = sim.world.refunds("shop-1")
    assert {r["status"] for r in truth} == {"WAIT_SELLER_AGREE", "SUCCESS"}
    body = probe.call("taobao.refunds.receive.get", session, fields="refund_id,tid,oid,status,modified,refund_fee",
                      page_size=100, type="fixed,auction,step,tmall_i18n")["refunds_receive_get_response"]
    assert body["total_results"] == len(truth)
    # Without ``type`` the API lists its default types only: guarantee_trade (fixed + auction) and
    # auto_delivery (top-api.md 3.6), as trades.sold.get does with its own defaults.
    default = probe.call("taobao.refunds.receive.get", session, fields="refund_id,tid", page_size=100,
                         )["refunds_receive_get_response"]
    guaranteed = [r for r in truth if (sim.world.trade(r["tid"]) or {}).get("type") in ("fixed", "auction")]
    assert 0 < default["total_results"] == len(guaranteed) < len(truth)
    got = body["refunds"]["refund"]
    assert isinstance(got[0]["refund_id"], str) and got[0]["tid"] > 2**53
    one = probe.call("taobao.refund.get", session, fields="refund_id,status,tid", refund_id=got[0]["refund_id"])
    assert one["refund_get_response"]["refund"]["tid"] == got[0]["tid"]
    trade = sim.world.trade(got[0]["tid"])
    assert trade is not None
    assert any(o.get("refund_id") == got[0]["refund_id"] for o in trade["orders"])

    now = sim.clock.now()
    shipped = [t for t in sim.world.trades("shop-1") if t["status"] == "WAIT_BUYER_CONFIRM_GOODS"]
    stalled = []
    for t in shipped:
        trace = probe.call("taobao.logistics.trace.search", session, tid=t["tid"])["logistics_trace_search_response"]
        steps = trace["trace_list"]["transit_step_info"]
        assert steps[0]["status_time"] == t["consign_time"] and trace["out_sid"]
        if now - parse_top_time(steps[-1]["status_time"]) > timedelta(hours=72):
            stalled.append(t["tid"])
    assert stalled and len(stalled) < len(shipped) / 2

    items = probe.call("taobao.items.onsale.get", session, fields="num_iid,title,num,skus",
                       page_size=100)["items_onsale_get_response"]
    assert items["total_results"] == len(sim.world.inventory("shop-1")) == len(items["items"]["item"])
    first = items["items"]["item"][0]
    assert "skus" not in first  # Item's list fields only; SKU detail is taobao.item.skus.get's
    skus = probe.call("taobao.item.skus.get", session, fields="sku_id,num_iid,quantity",
                      num_iids=str(first["num_iid"]))["item_skus_get_response"]["skus"]["sku"]
    assert first["num"] == sum(s["quantity"] for s in skus) and {s["num_iid"] for s in skus} == {first["num_iid"]}
    too_many = probe.call("taobao.item.skus.get", session, fields="sku_id", num_iids=",".join(["1"] * 41))
    assert too_many["error_response"]["code"] == 41


def test_admin_http_ground_truth_and_config(sim: Simulator, tmp_path: Any) -> None:
    base = sim.gateway_url.rsplit("/router/rest", 1)[0]
    state = requests.get(f"{base}/admin/state", timeout=5).json()
    assert [s["shop_id"] for s in state["shops"]] == ["shop-1", "shop-2"]
    trades = requests.get(f"{base}/admin/trades", params={"shop_id": "shop-2"}, timeout=10).json()
    assert trades == sim.world.trades("shop-2")
    before = sim.clock.now()
    requests.post(f"{base}/admin/advance", params={"seconds": 30}, timeout=5).raise_for_status()
    assert sim.clock.now() - before == timedelta(seconds=30)
    config = sim.config()
    assert isinstance(config, OrdersyncConfig) and config.gateway == sim.gateway_url
    assert config.secret().get_secret_value() == sim.app_secret
    assert config.shop("shop-1").session_key().get_secret_value() == sim.shops[0].session
    loaded = load_config(write_config(config, tmp_path / "ordersync.yaml"))
    assert loaded.shops[1].seller_nick == sim.shops[1].seller_nick


def test_a_stepped_world_can_start_in_the_past_and_a_real_clock_cannot() -> None:
    from datetime import datetime, timedelta, timezone

    from ordersync_pipeline.simulator import SimulatorSettings, start_simulator

    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
    with start_simulator(SimulatorSettings(seed=5, shops=1, orders_per_day=50, history_days=1,
                                           clock="stepped", start_at=start)) as sim:
        assert sim.clock.now() == start
        created = [t["created"] for t in sim.world.trades("shop-1")]
        # history lies before the world's start, none of it after
        assert created and max(created) <= start.astimezone(timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S")
    with pytest.raises(ValueError, match="start_at needs clock"):
        SimulatorSettings(clock="real", start_at=start)
