"""The failure-rate breaker: its pure state machine (open above the share with enough calls, probe after the
cool-down, close on success, full pulls while open), and ticks over a real ledger and a real probe of the
simulator: which failures count, state that survives a restart, alerts opened and resolved once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ordersync_pipeline.alerts import Alerts
from ordersync_pipeline.config import BreakerSettings
from ordersync_pipeline.reconcile.breaker import (
    BreakerPolicy,
    Breakers,
    Stats,
    after_probe,
    evaluate,
    full_pull_due,
    guarded_apis,
    probe_api,
)
from ordersync_pipeline.reconcile.records import BreakerRecord, open_breaker_shops, read_breakers
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.streams import stream
from ordersync_pipeline.timeutil import now as host_now
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.recorder import CallRecord
from ordersync_pipeline.top.retry import RetryPolicy
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.recorder import WarehouseCallRecorder

INCREMENT = "taobao.trades.sold.increment.get"
T = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
POLICY = BreakerPolicy(failure_rate=0.05, window=timedelta(minutes=15), min_calls=20,
                       cooldown=timedelta(minutes=30), probe_calls=3, full_pull_range=timedelta(hours=24),
                       full_pull_every=timedelta(minutes=60))


def _closed(**changes: object) -> BreakerRecord:
    base = BreakerRecord(shop_id="s", api=INCREMENT, state="closed", failure_rate=0.0, calls=0, errors=0,
                         opened_at=None, closed_at=None, next_probe_at=None, last_full_pull_at=None,
                         calls_after_id=0, updated_at=T)
    return BreakerRecord(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_the_policy_defaults_match_the_issue() -> None:
    policy = BreakerPolicy.from_settings(BreakerSettings())
    assert policy.failure_rate == 0.05 and policy.full_pull_every == timedelta(hours=1)
    assert policy.window == timedelta(minutes=15) and policy.min_calls == 20


@pytest.mark.parametrize(("calls", "errors", "opens"), [
    (19, 19, False),   # too few attempts to judge
    (100, 5, False),   # exactly 5 %: not above it
    (100, 6, True),
    (20, 2, True),
])
def test_a_closed_breaker_opens_only_above_the_share_with_enough_calls(calls: int, errors: int,
                                                                        opens: bool) -> None:
    step = evaluate(_closed(), Stats(calls, errors), now=T, policy=POLICY, last_call_id=77)
    assert step.opened is opens
    assert step.record.calls == calls and step.record.errors == errors
    if opens:
        assert step.record.is_open and step.record.opened_at == T
        assert step.record.next_probe_at == T + POLICY.cooldown and step.record.calls_after_id == 77
        assert f"{errors} of {calls} calls" in (step.record.reason or "")


def test_an_open_breaker_probes_after_the_cooldown_and_closes_on_success() -> None:
    opened = evaluate(_closed(), Stats(100, 50), now=T, policy=POLICY, last_call_id=1).record
    assert not evaluate(opened, Stats(100, 0), now=T, policy=POLICY, last_call_id=2).record.state == "closed"
    failed = after_probe(opened, False, now=T + POLICY.cooldown, policy=POLICY, last_call_id=5, detail="no")
    assert failed.record.is_open and failed.record.next_probe_at == T + 2 * POLICY.cooldown
    closed = after_probe(failed.record, True, now=T + 2 * POLICY.cooldown, policy=POLICY, last_call_id=9,
                         detail="3 of 3")
    assert closed.closed and closed.record.state == "closed" and closed.record.calls_after_id == 9
    assert closed.record.closed_at == T + 2 * POLICY.cooldown and closed.record.next_probe_at is None


def test_full_pulls_are_due_at_once_and_then_every_hour_while_open() -> None:
    opened = evaluate(_closed(), Stats(100, 50), now=T, policy=POLICY, last_call_id=1).record
    assert full_pull_due(opened, T, POLICY)
    pulled = BreakerRecord(**{**opened.__dict__, "last_full_pull_at": T})
    assert not full_pull_due(pulled, T + timedelta(minutes=59), POLICY)
    assert full_pull_due(pulled, T + timedelta(minutes=60), POLICY)
    assert not full_pull_due(_closed(), T, POLICY)


def test_the_guarded_apis_are_each_streams_increment_api() -> None:
    assert guarded_apis()[INCREMENT] is stream("trades")


# ---------------------------------------------------------------- ticks over a real ledger and probe

@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=3, shops=2, orders_per_day=100, history_days=1)) as s:
        yield s


def _calls(warehouse: Warehouse, shop: str, ok: int, failed: int, kind: str = "ServerError") -> None:
    now = host_now()
    records = [CallRecord(started_at=now, method=INCREMENT, shop_id=shop, outcome="ok", code=None, sub_code=None,
                          latency_s=0.01, request_id=None, attempt=1, error_kind=None) for _ in range(ok)]
    records += [CallRecord(started_at=now, method=INCREMENT, shop_id=shop, outcome="error", code=15,
                           sub_code="isp.remote-service-error", latency_s=0.01, request_id=None, attempt=1,
                           error_kind=kind) for _ in range(failed)]
    warehouse.record_calls(records, run_id="r")


class _World:
    """The pipeline's clock for the breaker (cool-downs), stepped by the test."""

    def __init__(self, settings: Settings) -> None:
        self.now = T
        self.settings = settings

    def __call__(self) -> datetime:
        return self.now


def _settings(sim: Simulator, tmp_path: Path, warehouse: Warehouse) -> Settings:
    return Settings.for_config(sim.config(), home=tmp_path,
                               warehouse_url=warehouse.engine.url.render_as_string(hide_password=False))


def _breakers(sim: Simulator, warehouse: Warehouse, clock: _World) -> Breakers:
    def probe(shop_id: str, entry: object) -> tuple[bool, str]:
        with WarehouseCallRecorder(warehouse, run_id=None) as recorder, TopClient(
                gateway=sim.gateway_url, app_key=sim.app_key, app_secret=sim.app_secret,
                retry=RetryPolicy(max_attempts=1), recorder=recorder) as client:
            session = sim.shops[int(shop_id[-1]) - 1].session
            return probe_api(client, stream("trades"), shop_id=shop_id, session=session, now=sim.clock.now(),
                             calls=POLICY.probe_calls)
    return Breakers(warehouse, policy=POLICY, alerts=Alerts.from_settings(clock.settings, warehouse),
                    probe=probe, clock=clock)


def test_ticks_open_probe_and_close_with_one_alert_and_state_that_survives_restarts(
        sim: Simulator, tmp_path: Path) -> None:
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    warehouse.migrate()
    clock = _World(_settings(sim, tmp_path, warehouse))
    alerts = Alerts.from_settings(clock.settings, warehouse)
    _calls(warehouse, "shop-1", ok=40, failed=1)
    _calls(warehouse, "shop-1", ok=0, failed=30, kind="RateLimitedError")   # our own quota: not the platform
    _calls(warehouse, "shop-2", ok=40, failed=1)
    first = _breakers(sim, warehouse, clock).tick(["shop-1", "shop-2"])
    assert first.opened == [] and first.open_shops == set()
    assert first.records[("shop-1", INCREMENT)].calls == 71 and first.records[("shop-1", INCREMENT)].errors == 1

    _calls(warehouse, "shop-1", ok=0, failed=10)                            # 11 of 81 now: 13.6 %
    second = _breakers(sim, warehouse, clock).tick(["shop-1", "shop-2"])
    assert second.opened == [("shop-1", INCREMENT)] and second.full_pulls == ["shop-1"]
    assert [a.key for a in alerts.open_alerts("failure_rate")] == [INCREMENT]
    # A restart: new objects read the state back; the full pull is not due again within the hour.
    assert open_breaker_shops(warehouse) == {"shop-1"}
    clock.now = T + timedelta(minutes=10)
    third = _breakers(sim, warehouse, clock).tick(["shop-1", "shop-2"])
    assert third.opened == [] and third.full_pulls == [] and third.probes == []
    assert len(alerts.open_alerts("failure_rate")) == 1                      # one condition, one alert

    # After the cool-down the probe meets a failing API: still open, next probe a cool-down later.
    sim.fail_api(INCREMENT, 1.0, shop_id="shop-1")
    clock.now = T + timedelta(minutes=31)
    fourth = _breakers(sim, warehouse, clock).tick(["shop-1", "shop-2"])
    assert fourth.probes == [("shop-1", INCREMENT, False)] and fourth.open_shops == {"shop-1"}
    assert read_breakers(warehouse)[("shop-1", INCREMENT)].next_probe_at == clock.now + POLICY.cooldown

    sim.clear_failures()
    clock.now = T + timedelta(minutes=62)
    fifth = _breakers(sim, warehouse, clock).tick(["shop-1", "shop-2"])
    assert fifth.probes == [("shop-1", INCREMENT, True)] and fifth.closed == [("shop-1", INCREMENT)]
    assert fifth.full_pulls == [] and open_breaker_shops(warehouse) == set()
    assert alerts.open_alerts("failure_rate") == []
    # The failures that opened it are still inside the window, but no longer count.
    sixth = _breakers(sim, warehouse, clock).tick(["shop-1", "shop-2"])
    assert sixth.opened == [] and sixth.records[("shop-1", INCREMENT)].calls == 0
