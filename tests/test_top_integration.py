"""The TOP client and pagers against the simulator over real loopback HTTP, compared with ground truth."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.simulator import faults as sim_faults
from ordersync_pipeline.timeutil import SHANGHAI, format_top_time
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.errors import InvalidSessionError
from ordersync_pipeline.top.pages import Page
from ordersync_pipeline.top.paging import (
    INCREMENT_GET,
    SOLD_GET,
    get_trade_fullinfo,
    iter_increment_pages,
    iter_sold_pages,
)
from ordersync_pipeline.top.ratelimit import Limits, LocalRateBudget
from ordersync_pipeline.top.recorder import ListRecorder
from ordersync_pipeline.top.retry import RetryPolicy

FIELDS = "tid,type,status,created,modified,payment,total_fee,orders"


def _client(sim: Any, **kw: Any) -> TopClient:
    args: dict[str, Any] = dict(gateway=sim.gateway_url, app_key=sim.app_key, app_secret=sim.app_secret,
                                sign_method="hmac-sha256", timeout=5.0, recorder=ListRecorder(),
                                retry=RetryPolicy(max_attempts=8, base_delay_s=0.01, max_delay_s=0.1),
                                rng=random.Random(5))
    args.update(kw)
    return TopClient(**args)


def _by_tid(pages: list[Page]) -> dict[int, dict[str, Any]]:
    return {t["tid"]: t for p in pages for t in p.items}


def _truth(sim: Any, shop_id: str, field: str, start: datetime, end: datetime) -> dict[int, dict[str, Any]]:
    """Ground-truth trades whose ``field`` lies in [start, end] (TOP's end bound is inclusive)."""
    lo, hi = format_top_time(start), format_top_time(end)
    return {t["tid"]: t for t in sim.world.trades(shop_id) if lo <= t[field] <= hi}


def _assert_same(got: dict[int, dict[str, Any]], truth: dict[int, dict[str, Any]]) -> None:
    assert set(got) == set(truth)
    for tid, trade in got.items():
        want = truth[tid]
        for key in ("type", "status", "created", "modified", "payment", "total_fee"):
            assert trade[key] == want[key], (tid, key)
        assert [o["oid"] for o in trade["orders"]] == [o["oid"] for o in want["orders"]]


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    with start_simulator(SimulatorSettings(seed=11, shops=2, orders_per_day=300, history_days=2,
                                           clock="stepped")) as s:
        yield s


def _yesterday(sim: Any) -> tuple[datetime, datetime]:
    today = sim.clock.now().astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1), today


def test_a_day_of_trades_by_created_matches_ground_truth(sim: Any) -> None:
    shop = sim.shops[0]
    start, end = _yesterday(sim)
    client = _client(sim)
    pages = list(iter_sold_pages(client, shop_id=shop.shop_id, session=shop.session, start_created=start,
                                 end_created=end, fields=FIELDS, page_size=100))
    truth = _truth(sim, shop.shop_id, "created", start, end)
    assert len(truth) > 200
    assert {t["type"] for t in truth.values()} - {"fixed", "auction", "step"}  # non-default types exist
    _assert_same(_by_tid(pages), truth)
    assert len(client.recorder.calls) == len(pages) == -(-len(truth) // 100)  # type: ignore[attr-defined]


def test_increment_over_a_day_and_a_half_matches_ground_truth_in_one_call_per_page(sim: Any) -> None:
    shop = sim.shops[1]
    end = sim.clock.now() - timedelta(minutes=5)
    start = end - timedelta(hours=36)
    client = _client(sim)
    pages = list(iter_increment_pages(client, shop_id=shop.shop_id, session=shop.session,
                                      start_modified=start, end_modified=end, fields=FIELDS))
    truth = _truth(sim, shop.shop_id, "modified", start, end)
    _assert_same(_by_tid(pages), truth)
    calls = len(client.recorder.calls)  # type: ignore[attr-defined]
    spans = 2
    assert calls <= len(pages) + spans  # one extra call per span, to learn the page count
    assert calls <= 11 * -(-len(truth) // 1000) + spans


def test_fullinfo_matches_ground_truth(sim: Any) -> None:
    shop = sim.shops[0]
    want = sim.world.trades(shop.shop_id)[-1]
    got = get_trade_fullinfo(_client(sim), shop_id=shop.shop_id, session=shop.session, tid=want["tid"],
                             fields=FIELDS + ",receiver_state")
    assert got["tid"] == want["tid"] and got["modified"] == want["modified"]
    assert isinstance(got["orders"], list) and got["receiver_state"] == want["receiver_state"]


def test_faults_still_yield_every_trade() -> None:
    settings = SimulatorSettings(seed=5, shops=1, orders_per_day=300, history_days=1, clock="stepped",
                                 fault_rate=0.35, fault_timeout_s=0.8, fault_slow_s=0.05)
    with start_simulator(settings) as s:
        shop = s.shops[0]
        client = _client(s, timeout=0.3, retry=RetryPolicy(max_attempts=12, base_delay_s=0.0))
        end = s.clock.now() - timedelta(minutes=1)
        start = end - timedelta(hours=20)
        sold = list(iter_sold_pages(client, shop_id=shop.shop_id, session=shop.session, start_created=start,
                                    end_created=end, fields=FIELDS, page_size=20))
        inc = list(iter_increment_pages(client, shop_id=shop.shop_id, session=shop.session,
                                        start_modified=start, end_modified=end, fields=FIELDS, page_size=20))
        _assert_same(_by_tid(sold), _truth(s, shop.shop_id, "created", start, end))
        _assert_same(_by_tid(inc), _truth(s, shop.shop_id, "modified", start, end))
    kinds = {r.error_kind for r in client.recorder.errors}  # type: ignore[attr-defined]
    assert {"ServerError", "MalformedResponseError", "TransportError"} <= kinds


def test_rate_limit_is_honoured_with_a_shared_ban_and_no_lost_pages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The simulator's limiter is a sliding one-minute window; shrink the window so bans last ~2 s.
    monkeypatch.setattr(sim_faults.RateLimiter, "WINDOW", 2.0)
    settings = SimulatorSettings(seed=3, shops=1, orders_per_day=300, history_days=1, clock="stepped",
                                 rate_limit_per_min=4)
    budget = LocalRateBudget(tmp_path / "rl.sqlite3", Limits(per_minute=60_000, burst=100))
    bans: list[float] = []
    real_ban = budget.ban
    monkeypatch.setattr(budget, "ban", lambda key, seconds: (bans.append(seconds), real_ban(key, seconds)))
    with start_simulator(settings) as s:
        shop = s.shops[0]
        client = _client(s, rate_budget=budget, retry=RetryPolicy(max_attempts=8, jitter_fraction=0.0))
        end = s.clock.now() - timedelta(minutes=1)
        start = end - timedelta(hours=12)
        pages = list(iter_increment_pages(client, shop_id=shop.shop_id, session=shop.session,
                                          start_modified=start, end_modified=end, fields=FIELDS,
                                          page_size=30))
        _assert_same(_by_tid(pages), _truth(s, shop.shop_id, "modified", start, end))
    records = client.recorder.calls  # type: ignore[attr-defined]
    limited = [r for r in records if r.error_kind == "RateLimitedError"]
    assert limited and all(r.code == 7 for r in limited) and bans
    assert all(seconds >= 2 for seconds in bans)  # ban N seconds + 1
    # After each code 7 the next attempt waited out the ban.
    for i, rec in enumerate(records[:-1]):
        if rec.error_kind == "RateLimitedError":
            assert (records[i + 1].started_at - rec.started_at).total_seconds() >= 1.0
    assert len([r for r in records if r.outcome == "ok"]) == len(pages) + 1


def _forward_increment(client: TopClient, shop: Any, start: datetime, end: datetime, size: int) -> set[int]:
    """A naive pager: page 1, 2, 3, ... while has_next."""
    seen: set[int] = set()
    page_no = 1
    while True:
        resp = client.call(INCREMENT_GET, {"fields": "tid", "start_modified": start, "end_modified": end,
                                           "page_no": page_no, "page_size": size, "use_has_next": True,
                                           "type": "fixed,auction,step,tmall_i18n"},
                           session=shop.session, shop_id=shop.shop_id)
        seen |= {t["tid"] for t in resp.data.get("trades", {}).get("trade", [])}
        if not resp.data.get("has_next"):
            return seen
        page_no += 1


def test_reverse_paging_under_drift_loses_nothing_but_forward_paging_does() -> None:
    settings = SimulatorSettings(seed=21, shops=1, orders_per_day=400, history_days=1, clock="stepped",
                                 page_drift=0.6)
    with start_simulator(settings) as s:
        shop = s.shops[0]
        end = s.clock.now() - timedelta(hours=1)
        start = end - timedelta(hours=12)
        pages = list(iter_increment_pages(_client(s), shop_id=shop.shop_id, session=shop.session,
                                          start_modified=start, end_modified=end, fields=FIELDS,
                                          page_size=20))
        still_inside = set(_truth(s, shop.shop_id, "modified", start, end))
        assert len(pages) > 5 and still_inside <= set(_by_tid(pages))
        assert s.state()["drifted"] > 0  # trades really did move while we paged
    with start_simulator(settings) as s:  # the same world again, for the naive pager
        shop = s.shops[0]
        seen = _forward_increment(_client(s), shop, start, end, 20)
        lost = set(_truth(s, shop.shop_id, "modified", start, end)) - seen
        assert lost, "forward paging under drift should lose trades"


def test_invalid_session_names_the_shop_and_is_not_retried(sim: Any) -> None:
    shop = sim.shops[1]
    sim.set_session_valid(shop.shop_id, False)
    try:
        client = _client(sim)
        start, end = _yesterday(sim)
        with pytest.raises(InvalidSessionError, match=f"re-authorise this shop {shop.shop_id}") as info:
            list(iter_sold_pages(client, shop_id=shop.shop_id, session=shop.session, start_created=start,
                                 end_created=end, fields=FIELDS))
    finally:
        sim.set_session_valid(shop.shop_id, True)
    assert info.value.attempts == 1 and info.value.code == 27
    assert [(r.method, r.error_kind) for r in client.recorder.calls] == [  # type: ignore[attr-defined]
        (SOLD_GET, "InvalidSessionError")]
