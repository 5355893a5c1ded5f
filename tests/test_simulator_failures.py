"""The simulator's failing APIs and hidden changes: one API failing for a while (in world time, per shop,
each failure kind), and changes the increment API never lists while sold.get and fullinfo still do."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.simulator.cli import parse_failure
from ordersync_pipeline.simulator.probe import Probe
from ordersync_pipeline.simulator.settings import ApiFailure
from ordersync_pipeline.timeutil import SHANGHAI, format_top_time, parse_top_time

INCREMENT = "taobao.trades.sold.increment.get"
SOLD = "taobao.trades.sold.get"
START = datetime(2026, 11, 20, 12, 0, tzinfo=SHANGHAI)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=5, shops=2, orders_per_day=400, history_days=2,
                                           clock="stepped", start_at=START)) as s:
        yield s


def _probe(sim: Simulator) -> Probe:
    return Probe(sim.gateway_url, sim.app_key, sim.app_secret)


def _increment(sim: Simulator, shop: int = 0, *, start: datetime, end: datetime,
               page_size: int = 100) -> dict[str, Any]:
    return _probe(sim).call(INCREMENT, session=sim.shops[shop].session, fields="tid,modified",
                            start_modified=format_top_time(start), end_modified=format_top_time(end),
                            page_size=page_size, type="fixed,auction,step,tmall_i18n")


def _sold(sim: Simulator, shop: int = 0, *, start: datetime, end: datetime, page_size: int = 100,
          page_no: int = 1) -> dict[str, Any]:
    return _probe(sim).call(SOLD, session=sim.shops[shop].session, fields="tid,modified",
                            start_created=format_top_time(start), end_created=format_top_time(end),
                            page_size=page_size, page_no=page_no, type="fixed,auction,step,tmall_i18n")


def _error(body: dict[str, Any]) -> dict[str, Any] | None:
    return body.get("error_response")


def test_one_api_fails_only_inside_its_world_time_window(sim: Simulator) -> None:
    hour = timedelta(hours=1)
    sim.fail_api(INCREMENT, 1.0, start=START + hour, end=START + 2 * hour)
    window = dict(start=START - hour, end=START - hour + timedelta(minutes=30))
    assert _error(_increment(sim, **window)) is None           # before the window
    sim.clock.advance(3600)
    failed = _error(_increment(sim, **window))
    assert failed is not None and failed["code"] == 15 and failed["sub_code"].startswith("isp.")
    assert _error(_sold(sim, **window)) is None                 # only that API fails
    sim.clock.advance(3600)                                     # end is exclusive
    assert _error(_increment(sim, **window)) is None
    assert sim.state()["api_failures"] == {INCREMENT: 1}


def test_a_failure_rate_applies_to_that_share_of_calls_and_to_one_shop_when_named(sim: Simulator) -> None:
    sim.fail_api(INCREMENT, 0.2, shop_id="shop-1")
    window = dict(start=START - timedelta(hours=2), end=START - timedelta(hours=1))
    failures = sum(_error(_increment(sim, 0, **window)) is not None for _ in range(300))
    assert 30 <= failures <= 90, failures                       # ~20 % of 300 (seeded)
    assert all(_error(_increment(sim, 1, **window)) is None for _ in range(30))   # shop-2 is fine
    sim.clear_failures()
    assert all(_error(_increment(sim, 0, **window)) is None for _ in range(30))


@pytest.mark.parametrize(("kind", "status"), [("http502", 502), ("malformed", 200), ("truncated", 200)])
def test_each_failure_kind_looks_like_it_does_on_the_wire(sim: Simulator, kind: str, status: int) -> None:
    sim.fail_api(SOLD, 1.0, kind=kind)  # type: ignore[arg-type]
    reply = _probe(sim).raw(SOLD, session=sim.shops[0].session, fields="tid",
                            start_created=format_top_time(START - timedelta(hours=1)),
                            end_created=format_top_time(START))
    assert reply.status_code == status
    if status == 200:
        with pytest.raises(ValueError):
            reply.json()


def test_failure_windows_over_the_admin_api(sim: Simulator) -> None:
    base = sim.base_url
    start = format_top_time(START)
    end = format_top_time(START + timedelta(minutes=30))
    ok = requests.post(f"{base}/admin/failures", params={"method": INCREMENT, "rate": "1", "start": start,
                                                         "end": end, "kind": "isp"}, timeout=5)
    assert ok.status_code == 200, ok.text
    listed = requests.get(f"{base}/admin/failures", timeout=5).json()
    assert listed["failures"] == [{"method": INCREMENT, "rate": 1.0, "shop_id": None, "kind": "isp",
                                   "start": start, "end": end}]
    assert _error(_increment(sim, start=START - timedelta(hours=1), end=START)) is not None
    bad = requests.post(f"{base}/admin/failures", params={"method": INCREMENT, "rate": "1", "kind": "boom"},
                        timeout=5)
    assert bad.status_code == 400 and "kind must be one of" in bad.json()["error"]
    late = requests.post(f"{base}/admin/failures", params={"method": INCREMENT, "rate": "1",
                                                           "start": "yesterday"}, timeout=5)
    assert late.status_code == 400 and "start must be" in late.json()["error"]
    assert requests.post(f"{base}/admin/failures/clear", timeout=5).status_code == 200
    assert _error(_increment(sim, start=START - timedelta(hours=1), end=START)) is None


def test_failure_settings_are_checked_and_the_cli_parses_them() -> None:
    with pytest.raises(ValueError, match="within 0..1"):
        ApiFailure(INCREMENT, 1.5)
    with pytest.raises(ValueError, match="timezone-aware"):
        ApiFailure(INCREMENT, 0.1, start=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="after its start"):
        ApiFailure(INCREMENT, 0.1, start=START, end=START)
    assert parse_failure(f"{INCREMENT}=0.2") == ApiFailure(INCREMENT, 0.2)
    from ordersync_pipeline.simulator.cli import simulator

    result = CliRunner().invoke(simulator, ["serve", "--fail", "nonsense"])
    assert result.exit_code != 0 and "METHOD=RATE" in result.output


def _tids(body: dict[str, Any], method: str) -> list[int]:
    inner = body[method.replace("taobao.", "").replace(".", "_") + "_response"]
    return [int(t["tid"]) for t in (inner.get("trades") or {}).get("trade", [])]


def test_a_hidden_change_is_missing_from_the_increment_api_only(sim: Simulator) -> None:
    day_start = START - timedelta(hours=12)
    trades = [t for t in sim.world.trades("shop-1") if day_start <= parse_top_time(t["created"]) < START]
    created_only = next(t for t in trades if t["modified"] == t["created"])
    changed = next(t for t in trades if t["modified"] > t["created"] and
                   parse_top_time(t["modified"]) < START - timedelta(hours=1))
    whole = dict(start=day_start, end=START)
    assert {created_only["tid"], changed["tid"]} <= set(_tids(_increment_all(sim, **whole), INCREMENT))

    sim.hide_from_increment(created_only["tid"])                 # every version
    last = parse_top_time(changed["modified"])
    sim.hide_from_increment(changed["tid"], start=last, end=last)  # only its newest change
    listed = set(_tids(_increment_all(sim, **whole), INCREMENT))
    assert created_only["tid"] not in listed and changed["tid"] not in listed
    # sold.get and fullinfo still see both, at their newest versions.
    sold = set(_tids(_sold(sim, start=day_start, end=START), SOLD)) | set(
        _tids(_sold(sim, start=day_start, end=START, page_no=2), SOLD))
    assert {created_only["tid"], changed["tid"]} <= sold
    full = _probe(sim).call("taobao.trade.fullinfo.get", session=sim.shops[0].session, fields="tid,modified",
                            tid=changed["tid"])
    assert full["trade_fullinfo_get_response"]["trade"]["modified"] == changed["modified"]
    assert sim.state()["hidden_from_increment"] == 2
    with pytest.raises(KeyError, match="no trade"):
        sim.hide_from_increment(12345)


def _increment_all(sim: Simulator, *, start: datetime, end: datetime) -> dict[str, Any]:
    """Every trade changed in [start, end], in one answer (the window split so none exceeds a page)."""
    trades: list[dict[str, Any]] = []
    cursor = start
    while cursor < end:
        stop = min(cursor + timedelta(minutes=30), end)
        body = _increment(sim, start=cursor, end=stop)
        inner = body["trades_sold_increment_get_response"]
        assert inner["total_results"] <= 100
        trades += (inner.get("trades") or {}).get("trade", [])
        cursor = stop
    return {"trades_sold_increment_get_response": {"trades": {"trade": trades}}}


def test_an_increment_miss_rate_drops_that_share_of_trades_from_the_increment_api() -> None:
    with start_simulator(SimulatorSettings(seed=5, shops=1, orders_per_day=600, history_days=1,
                                           clock="stepped", start_at=START, increment_miss_rate=0.05)) as sim:
        day_start = START - timedelta(hours=12)
        listed = set(_tids(_increment_all(sim, start=day_start, end=START), INCREMENT))
        changed = {t["tid"] for t in sim.world.trades("shop-1")
                   if day_start <= parse_top_time(t["modified"]) <= START}
        missed = changed - listed
        assert listed <= changed
        assert 0.02 * len(changed) <= len(missed) <= 0.09 * len(changed), (len(missed), len(changed))
