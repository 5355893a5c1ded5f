"""The run-failure sensor: a real failing run opens one run_failed alert with its link and a secret-free
error (posted to a loopback receiver); a later successful run over the same shops resolves it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
from pipeline_support import increment_keys, run, sim_config
from pydantic import SecretStr
from webhook_receiver import receiver, refused_url

from ordersync_pipeline.alerts import Alerts
from ordersync_pipeline.config import OrdersyncConfig
from ordersync_pipeline.defs import build_definitions
from ordersync_pipeline.defs.alerting import (
    RUN_FAILED_SENSOR,
    RUN_SUCCEEDED_SENSOR,
    RunScope,
    resolve_covered,
    run_scope,
)
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.timeutil import SHANGHAI
from ordersync_pipeline.warehouse import Warehouse

UI = "http://dagster.example:3000"
BAD_SESSION = "expired-SESSION-SECRET-4242"
# A closed window (yesterday 10:00 Shanghai): increment partitions start at pipeline_support.ANCHOR.
KEYS = increment_keys((datetime.now(SHANGHAI) - timedelta(days=1)).replace(hour=10, minute=0, second=0,
                                                                           microsecond=0), 1)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=11, shops=2, orders_per_day=60, history_days=2)) as simulator:
        yield simulator


def settings_for(sim: Simulator, home: Path, url: str, webhook: str, *, bad_shop: str | None) -> Settings:
    data = sim_config(sim).model_dump()
    for shop in data["shops"]:
        shop["session"] = BAD_SESSION if shop["shop_id"] == bad_shop else shop["session"].get_secret_value()
    data["app_secret"] = data["app_secret"].get_secret_value()
    # One fetch thread: two threads creating a fresh home's rate-budget file at once can meet "database
    # is locked" (Gateway.rate_budget is built lazily without a lock), which is not what this tests.
    data["sync"].update(partition_attempts=1, retry_delay_seconds=0, fetch_concurrency=1)
    settings = Settings.for_config(OrdersyncConfig.model_validate(data), home=home, warehouse_url=url)
    return dataclasses.replace(settings, alert_webhook_url=SecretStr(webhook), alert_webhook_format="json",
                               ui_url=UI)


def sensor_context(defs: dg.Definitions, name: str, result: dg.ExecuteInProcessResult,
                   instance: dg.DagsterInstance, wh: Warehouse, event: dg.DagsterEvent,
                   ) -> dg.RunStatusSensorContext:
    return dg.build_run_status_sensor_context(
        sensor_name=name, dagster_event=event, dagster_instance=instance, dagster_run=result.dagster_run,
        resources={"warehouse": wh})


def test_the_sensors_are_part_of_the_definitions_and_run_by_default(sim: Simulator, tmp_path: Path) -> None:
    defs = build_definitions(settings_for(sim, tmp_path, f"sqlite:///{tmp_path}/w.db", UI, bad_shop=None))
    for name in (RUN_FAILED_SENSOR, RUN_SUCCEEDED_SENSOR):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.description
        assert sensor.required_resource_keys == {"warehouse"}


def test_a_failing_run_opens_one_alert_and_a_later_success_resolves_it(
        sim: Simulator, tmp_path: Path, pg_url: str) -> None:
    wh = Warehouse(pg_url)
    wh.migrate()
    instance = dg.DagsterInstance.ephemeral()
    shops = [s.shop_id for s in sim.shops]
    with receiver(answers=[(200, b"{}")]) as rx:
        failing = settings_for(sim, tmp_path, pg_url, rx.url, bad_shop=shops[1])
        defs = build_definitions(failing)
        failed_sensor = defs.resolve_sensor_def(RUN_FAILED_SENSOR)
        results = []
        for _ in range(2):  # the same shops failing on two ticks: one alert
            result = run(failing, "increment", shops=shops, time_keys=KEYS, instance=instance, defs=defs,
                         raise_on_error=False)
            assert not result.success
            failed_sensor(sensor_context(defs, RUN_FAILED_SENSOR, result, instance, wh,
                                         result.get_run_failure_event()))
            results.append(result)

        [alert] = Alerts(wh).open_alerts()
        first_run = results[0].dagster_run.run_id
        assert (alert.kind, alert.shop_id, alert.key) == ("run_failed", None,
                                                          f"incremental_sync_job|{shops[0]}|{shops[1]}")
        assert alert.message.startswith(f"incremental_sync_job run failed: {UI}/runs/{first_run} 1 of 2 "
                                        f"increment partitions failed")
        assert f"first: trades increment {shops[1]} {KEYS[0]}: " in alert.message
        assert f"re-authorise this shop {shops[1]}" in alert.message   # the cause, from failures.describe
        assert [b["event"] for b in rx.bodies()] == ["opened"] and alert.delivered
        for text in (alert.message, rx.requests[0].body.decode()):
            assert BAD_SESSION not in text and "SECRET" not in text

        # The session is fixed; a run of the same job over the same shops succeeds.
        fixed = settings_for(sim, tmp_path, pg_url, rx.url, bad_shop=None)
        defs = build_definitions(fixed)
        result = run(fixed, "increment", shops=shops, time_keys=KEYS, instance=instance, defs=defs)
        resolved_sensor = defs.resolve_sensor_def(RUN_SUCCEEDED_SENSOR)
        resolved_sensor(sensor_context(defs, RUN_SUCCEEDED_SENSOR, result, instance, wh,
                                       result.get_run_success_event()))
        assert Alerts(wh).open_alerts() == []
        assert [b["event"] for b in rx.bodies()] == ["opened", "resolved"]
    wh.dispose()


def test_a_success_over_fewer_shops_or_before_the_alert_opened_does_not_resolve(sqlite_url: str) -> None:
    wh = Warehouse(sqlite_url)
    wh.migrate()
    opened = datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)
    alerts = Alerts(wh, clock=lambda: opened)
    failed = RunScope("incremental_sync_job", "shop-a", "shop-c")
    alerts.open("run_failed", shop_id=None, key=failed.key, message="failed")
    alerts.open("run_failed", shop_id=None, key="reconciliation_job", message="failed too")
    later = opened + timedelta(minutes=1)
    assert resolve_covered(alerts, RunScope("incremental_sync_job", "shop-b", "shop-c"), later) == []
    assert resolve_covered(alerts, RunScope("historical_load_job", "shop-a", "shop-z"), later) == []
    assert resolve_covered(alerts, RunScope("incremental_sync_job", "shop-a", "shop-z"),
                           opened - timedelta(seconds=5)) == []     # finished before the alert opened
    assert resolve_covered(alerts, RunScope("incremental_sync_job", "shop-a", "shop-z"), later) == [failed.key]
    # A job without shop partitions: any later success of it clears it.
    assert resolve_covered(alerts, RunScope("reconciliation_job"), later) == ["reconciliation_job"]
    assert alerts.open_alerts() == []
    wh.dispose()


def test_run_scope_reads_dagsters_partition_tags() -> None:
    def fake_run(tags: dict[str, str]) -> dg.DagsterRun:
        return dg.DagsterRun(job_name="incremental_sync_job", run_id="r1", tags=tags)

    ranged = run_scope(fake_run({"dagster/asset_partition_range_start": "shop-1|2026-11-30-10:00",
                                 "dagster/asset_partition_range_end": "shop-3|2026-11-30-11:00"}))
    assert (ranged.key, ranged.shop_id, ranged.partitions) == (
        "incremental_sync_job|shop-1|shop-3", None, "shop-1|2026-11-30-10:00 .. shop-3|2026-11-30-11:00")
    single = run_scope(fake_run({"dagster/partition": "shop-2|2026-11-30-10:00"}))
    assert (single.key, single.shop_id) == ("incremental_sync_job|shop-2|shop-2", "shop-2")
    by_day = run_scope(fake_run({"dagster/partition": "2026-11-30"}))
    assert (by_day.key, by_day.shop_id, by_day.partitions) == ("incremental_sync_job", None, "2026-11-30")
    assert run_scope(fake_run({})) == RunScope("incremental_sync_job")
    assert RunScope.from_key(single.key) == RunScope("incremental_sync_job", "shop-2", "shop-2")


def test_an_error_that_is_not_a_failure_is_named_by_its_innermost_cause_without_the_password(
        sim: Simulator, tmp_path: Path, sqlite_url: str) -> None:
    # The run's warehouse is down (nothing listens there) and its URL carries a password.
    down = "postgresql+psycopg://sync:pw-SECRET-77@127.0.0.1:1/warehouse"
    failing = settings_for(sim, tmp_path, down, refused_url(), bad_shop=None)
    defs = build_definitions(failing)
    instance = dg.DagsterInstance.ephemeral()
    result = run(failing, "increment", shops=[sim.shops[0].shop_id], time_keys=KEYS, instance=instance,
                 defs=defs, raise_on_error=False)
    assert not result.success
    wh = Warehouse(sqlite_url)
    wh.migrate()
    defs.resolve_sensor_def(RUN_FAILED_SENSOR)(sensor_context(
        defs, RUN_FAILED_SENSOR, result, instance, wh, result.get_run_failure_event()))
    [alert] = Alerts(wh).open_alerts()
    assert alert.shop_id == sim.shops[0].shop_id      # one shop: the alert names it
    assert "pw-SECRET" not in alert.message and "SECRET" not in alert.message
    assert alert.message.startswith(f"incremental_sync_job run failed: {UI}/runs/{result.run_id} "
                                    "WarehouseUnreachable: PostgreSQL warehouse sync@127.0.0.1:1/warehouse: "
                                    "Connection refused")
    wh.dispose()
