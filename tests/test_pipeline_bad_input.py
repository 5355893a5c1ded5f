"""Bad input through the whole Dagster path. A loopback gateway relays the simulator's real (signed)
replies and spoils some of them: malformed trades are quarantined with their reason while the rest of
the page commits and the asset check warns; a page that stays unreadable fails its partition loudly,
publishes nothing to the lake and leaves its window incomplete."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest
import requests
from pipeline_support import (
    ANCHOR,
    check_evaluations,
    fetch_window,
    in_windows,
    increment_keys,
    partition_metadata,
    query,
    run,
    serial_loads,
    sim_settings,
    truth_rows,
    warehouse_rows,
)

from ordersync_pipeline.settings import Settings
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.timeutil import format_top_time
from ordersync_pipeline.top.retry import RetryPolicy
from ordersync_pipeline.top.testing import CannedGateway

KEYS = increment_keys(ANCHOR + timedelta(hours=20), 2)
Tamper = Callable[[dict[str, str], bytes], bytes]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=5, shops=1, orders_per_day=300, history_days=3,
                                           clock="stepped")) as s:
        yield s


@pytest.fixture
def relay(sim: Simulator, tmp_path: Path, pg_url: str) -> Iterator[Callable[[Tamper], Settings]]:
    """``relay(tamper)`` starts a gateway in front of the simulator and returns settings using it."""
    gateways: list[CannedGateway] = []

    def start(tamper: Tamper) -> Settings:
        def handler(params: dict[str, str]) -> tuple[int, bytes]:
            reply = requests.post(sim.gateway_url, data=params, timeout=10)
            return reply.status_code, tamper(params, reply.content)

        gateway = CannedGateway(handler).__enter__()
        gateways.append(gateway)
        # Retries still happen, only without production's waiting between them.
        return dataclasses.replace(
            serial_loads(sim_settings(sim, tmp_path, pg_url, gateway=gateway.url,
                                      sync={"retry_delay_seconds": 0})),
            retry=RetryPolicy(base_delay_s=0.0))

    yield start
    for gateway in gateways:
        gateway.__exit__(None, None, None)


def test_malformed_trades_are_quarantined_the_rest_commits_and_the_check_warns(
        sim: Simulator, relay: Callable[[Tamper], Settings], pg_url: str) -> None:
    truth = truth_rows(in_windows(sim.world.trades("shop-1"), [fetch_window(k) for k in KEYS]))
    no_tid, bad_money, bad_status = sorted(truth)[:3]
    spoil: dict[int, Callable[[dict[str, Any]], None]] = {
        no_tid: lambda t: t.pop("tid"),
        bad_money: lambda t: t.update(payment="12.3.4"),
        bad_status: lambda t: t.update(status="TRADE_TELEPORTED"),
    }

    def tamper(params: dict[str, str], body: bytes) -> bytes:
        data = orjson.loads(body)
        for trade in data.get("trades_sold_increment_get_response", {}).get("trades", {}).get("trade", []):
            if trade.get("tid") in spoil:
                spoil[trade["tid"]](trade)
        return orjson.dumps(data)

    result = run(relay(tamper), "increment", shops=["shop-1"], time_keys=KEYS)
    assert result.success  # bad records are a warning, not a failed run

    assert warehouse_rows(pg_url) == {tid: row for tid, row in truth.items() if tid not in spoil}
    quarantined = query(pg_url, "SELECT record_key, reason, run_id FROM quarantine")
    reasons = {key: reason for key, reason, _ in quarantined}
    assert {run_id for *_, run_id in quarantined} == {result.run_id}
    assert "tid" in reasons[None]  # a trade without a tid has no record key, only its reason
    assert "payment" in reasons[str(bad_money)] and "12.3.4" in reasons[str(bad_money)]
    assert "status" in reasons[str(bad_status)] and "TRADE_TELEPORTED" in reasons[str(bad_status)]

    # The quarantine figures and the check are per partition: the partition holding the bad trades
    # warns, a clean partition passes.
    meta = partition_metadata(result, "trades")
    assert sum(m["quarantined"] for m in meta.values()) == len(quarantined) >= 3
    evaluations = check_evaluations(result, "trades")
    assert sorted(evaluations) == sorted(meta)
    assert {part for part, passed in evaluations.items() if not passed} == {
        part for part, m in meta.items() if m["quarantined"]}
    checks = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert all(c.severity == dg.AssetCheckSeverity.WARN for c in checks)
    assert any("TRADE_TELEPORTED" in str(c.metadata["first_reasons"].value) for c in checks)
    assert _completed(pg_url) == KEYS  # the rest of each page committed, so the windows are complete


def _completed(url: str) -> list[str]:
    return [k for (k,) in query(url, "SELECT partition_key FROM sync_windows WHERE stream = 'trades' "
                                "AND kind = 'increment' ORDER BY partition_key")]


def test_a_page_that_stays_truncated_fails_its_partition_alone(
        sim: Simulator, relay: Callable[[Tamper], Settings], tmp_path: Path, pg_url: str) -> None:
    good, bad = KEYS
    # Any window holding the last minute of the bad partition (not the good one's, even with the
    # overlap): the two coalesced into one window first, then the bad one alone.
    inside_bad = format_top_time(fetch_window(bad)[1] - timedelta(minutes=1))

    def tamper(params: dict[str, str], body: bytes) -> bytes:
        covers = params.get("start_modified", "~") <= inside_bad <= params.get("end_modified", "")
        return body[: len(body) // 2] if covers else body

    result = run(relay(tamper), "increment", shops=["shop-1"], time_keys=KEYS, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == ["increment_sync"]
    failure = failures[0].event_specific_data.user_failure_data  # type: ignore[union-attr]
    assert failure.description.startswith("1 of 2 increment partitions failed")
    detail = failure.metadata["failed_partitions"].value
    assert bad in detail and good not in detail and "not valid JSON" in detail
    # The partition was retried in place (3 attempts), not the whole step by Dagster.
    assert not any(e.event_type == dg.DagsterEventType.STEP_RESTARTED for e in result.all_events)

    # The good partition is loaded, materialised and complete; the bad one is none of these.
    assert sorted(partition_metadata(result, "trades")) == [f"shop-1|{good}"]
    lake = PageLake(tmp_path / "lake")
    assert not lake.has_partition(shop_id="shop-1", stream="trades.increment", partition_key=bad)
    assert lake.has_partition(shop_id="shop-1", stream="trades.increment", partition_key=good)
    assert _completed(pg_url) == [good]
    assert query(pg_url, "SELECT COUNT(*) FROM trades")[0][0] > 0
    errors = query(pg_url, "SELECT error_kind, COUNT(*) FROM api_calls WHERE outcome = 'error' "
                   "GROUP BY error_kind")
    assert [kind for kind, _ in errors] == ["MalformedResponseError"]
