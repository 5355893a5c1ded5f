"""A detail call refused for one record (refund.get: isv.refund-not-exist) against the simulator over loopback
HTTP: the record is quarantined, the rest of the partition loads and completes, a rebuild from the lake
gives the same with no call, and a transient detail failure still fails and retries the partition."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import (
    ANCHOR,
    fetch_window,
    in_windows,
    increment_keys,
    partition_metadata,
    query,
    run,
    serial_loads,
    sim_settings,
    stored_of,
    top_time,
    truth_of,
    world_records,
)

from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.top.retry import RetryPolicy
from ordersync_pipeline.warehouse import Warehouse

SHOP = "shop-1"
# Yesterday 08:00-11:00 China time: enough refunds to pick from.
KEYS = increment_keys(ANCHOR + timedelta(hours=8), 12)
REFUND_GET = "taobao.refund.get"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))  # the local rate budget lives here
    return tmp_path


@pytest.fixture
def sim() -> Any:
    with start_simulator(SimulatorSettings(seed=21, shops=1, orders_per_day=600, history_days=3,
                                           clock="stepped")) as simulator:
        yield simulator


def _refunds_in_window(sim: Simulator) -> list[dict[str, Any]]:
    windows = [fetch_window(k) for k in KEYS]
    refunds = in_windows(world_records(sim, "refunds", SHOP), windows)
    assert len(refunds) >= 4, "the window holds refunds to pick from"
    return sorted(refunds, key=lambda r: r["modified"])


def _quarantine(url: str) -> list[tuple[Any, ...]]:
    return query(url, "SELECT record_key, source, reason, payload FROM quarantine ORDER BY id")


def _fast(sim: Simulator, home: Path, url: str) -> Any:
    """No waits between attempts (the client's or the partition's); the attempts themselves stay."""
    settings = serial_loads(sim_settings(sim, home, url, sync={"retry_delay_seconds": 0}))
    return dataclasses.replace(settings, retry=RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0))


def test_a_refund_refused_by_refund_get_is_quarantined_and_the_partition_completes(
        sim: Simulator, home: Path, pg_url: str, sqlite_url: str) -> None:
    refunds = _refunds_in_window(sim)
    gone, completed = refunds[1], refunds[-2]
    sim.vanish_refund(gone["refund_id"])                    # listed without status, then "does not exist"
    sim.list_refund_incompletely(completed["refund_id"])    # listed without status, refund.get answers
    settings = _fast(sim, home, pg_url)

    result = run(settings, "increment", shops=[SHOP], time_keys=KEYS, streams=["refunds"])
    assert result.success
    # Every other refund, the completed one included, is in `refunds`; the gone one is not.
    want = truth_of("refunds", [r for r in refunds if r["refund_id"] != gone["refund_id"]])
    assert stored_of("refunds", pg_url) == want
    warehouse = Warehouse(pg_url)
    try:
        assert [w.partition_key for w in warehouse.completed_windows(SHOP, "refunds", "increment")] == KEYS
    finally:
        warehouse.dispose()

    # The quarantine row names the API, the refund and the platform's sub_code and message; no secret.
    rows = _quarantine(pg_url)
    assert rows and {row[0] for row in rows} == {str(gone["refund_id"])}
    for _, source, reason, payload in rows:
        assert source == "increment"
        assert REFUND_GET in reason and str(gone["refund_id"]) in reason
        assert "isv.refund-not-exist" in reason and "退款不存在" in reason
        record = json.loads(payload)
        assert record["refund_id"] == str(gone["refund_id"]) and "_ordersync_refused" not in record
        for secret in (sim.app_secret, sim.shops[0].session):
            assert secret not in reason and secret not in payload

    # Counted as fetched, and as quarantined, in its partition's own figures.
    pages = partition_metadata(result, "raw_refund_pages")
    table = partition_metadata(result, "refunds")
    gone_at = top_time(gone["modified"])
    holding = [k for k in KEYS if fetch_window(k)[0] <= gone_at <= fetch_window(k)[1]]
    assert holding
    for key in holding:
        low, high = fetch_window(key)
        listed = [r for r in refunds if low <= top_time(r["modified"]) <= high]
        # Each listed refund, plus one detail page each for the completed and the refused one.
        details = sum(1 for r in (gone, completed) if r in listed)
        assert pages[f"{SHOP}|{key}"]["refunds_fetched"] == len(listed) + details
        assert table[f"{SHOP}|{key}"]["quarantined"] == 1
    calls = query(pg_url, "SELECT outcome, sub_code FROM api_calls WHERE method = :m", m=REFUND_GET)
    assert ("error", "isv.refund-not-exist") in calls and ("ok", None) in calls

    # A re-run fetches again and still completes (the refusal is not a failure).
    assert run(settings, "increment", shops=[SHOP], time_keys=KEYS, streams=["refunds"]).success

    # The lake alone rebuilds the same rows and the same quarantine elsewhere, with no API call.
    before = sim.gateway.calls
    rebuilt = _fast(sim, home, sqlite_url)
    assert run(rebuilt, "increment", shops=[SHOP], time_keys=KEYS, streams=["refunds"], from_lake=True).success
    assert sim.gateway.calls == before
    assert stored_of("refunds", sqlite_url) == want
    assert {row[0] for row in _quarantine(sqlite_url)} == {str(gone["refund_id"])}
    # The same reasons as the re-run's (whose pages the lake now holds), request ids included.
    rebuilt_rows = _quarantine(sqlite_url)
    assert [r[2] for r in rebuilt_rows] == [r[2] for r in _quarantine(pg_url)[-len(rebuilt_rows):]]


def test_a_transient_refund_get_failure_still_fails_the_partition_and_a_retry_loads_it(
        sim: Simulator, home: Path, sqlite_url: str) -> None:
    refunds = _refunds_in_window(sim)
    pending = refunds[1]
    sim.list_refund_incompletely(pending["refund_id"])
    sim.fail_api(REFUND_GET, 1.0)                            # isp errors: the platform's bad hour
    settings = _fast(sim, home, sqlite_url)
    result = run(settings, "increment", shops=[SHOP], time_keys=KEYS, streams=["refunds"], raise_on_error=False)
    assert not result.success
    warehouse = Warehouse(sqlite_url)
    try:
        done = {w.partition_key for w in warehouse.completed_windows(SHOP, "refunds", "increment")}
        at = top_time(pending["modified"])
        holding = {k for k in KEYS if fetch_window(k)[0] <= at <= fetch_window(k)[1]}
        assert holding and not holding & done, "a transient refusal never completes its partition"
        assert done == set(KEYS) - holding                  # the other partitions were not held back
        assert _quarantine(sqlite_url) == []
        assert int(pending["refund_id"]) not in stored_of("refunds", sqlite_url)
        # The partition was attempted again (partition_attempts: 3, each call 3 times), not given up.
        assert sim.gateway.failures.injected[REFUND_GET] >= 9 * len(holding)

        sim.clear_failures()
        assert run(settings, "increment", shops=[SHOP], time_keys=sorted(holding), streams=["refunds"]).success
        assert stored_of("refunds", sqlite_url) == truth_of("refunds", refunds)
        assert {w.partition_key for w in warehouse.completed_windows(SHOP, "refunds", "increment")} == set(KEYS)
        assert _quarantine(sqlite_url) == []
    finally:
        warehouse.dispose()


def test_the_simulator_refuses_vanishing_refunds_at_a_seeded_rate() -> None:
    settings = SimulatorSettings(seed=21, shops=1, orders_per_day=600, history_days=3, clock="stepped",
                                 refund_vanish_rate=0.5)
    with start_simulator(settings) as sim:
        apis = sim.gateway.apis
        ids = [int(r["refund_id"]) for r in sim.world.refunds(SHOP)]
        vanished = [i for i in ids if apis._vanished(i)]
        assert 0.3 * len(ids) < len(vanished) < 0.7 * len(ids)
    with start_simulator(settings) as again:
        assert [i for i in ids if again.gateway.apis._vanished(i)] == vanished  # seeded: the same ones
    with pytest.raises(ValueError, match="refund_vanish_rate"):
        SimulatorSettings(refund_vanish_rate=1.5)
