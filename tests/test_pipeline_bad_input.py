"""Bad input through the whole Dagster path. A loopback gateway relays the simulator's real (signed)
replies and spoils some of them: malformed trades are quarantined with their reason while the rest of
the page commits and the asset check warns; a page that stays unreadable fails its partition loudly,
publishes nothing to the lake and leaves its window incomplete."""

from __future__ import annotations

import functools
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
    INCREMENT_ASSETS,
    A,
    fetch_window,
    in_windows,
    increment_keys,
    instance_with_shops,
    materialize,
    metadata,
    query,
    resources,
    serial_loads,
    truth_rows,
    warehouse_rows,
    write_sim_config,
)

from ordersync_pipeline.defs import resources as resources_module
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
def relay(sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Tamper], Path]]:
    """``relay(tamper)`` starts a gateway in front of the simulator and returns a config using it."""
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))
    serial_loads(monkeypatch)
    gateways: list[CannedGateway] = []

    def start(tamper: Tamper) -> Path:
        def handler(params: dict[str, str]) -> tuple[int, bytes]:
            reply = requests.post(sim.gateway_url, data=params, timeout=10)
            return reply.status_code, tamper(params, reply.content)

        gateway = CannedGateway(handler).__enter__()
        gateways.append(gateway)
        return write_sim_config(sim, tmp_path / "ordersync.yaml", gateway=gateway.url)

    yield start
    for gateway in gateways:
        gateway.__exit__(None, None, None)


def test_malformed_trades_are_quarantined_the_rest_commits_and_the_check_warns(
        sim: Simulator, relay: Callable[[Tamper], Path], tmp_path: Path, pg_url: str) -> None:
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

    config = relay(tamper)
    result = materialize(INCREMENT_ASSETS, shops=["shop-1"], time_keys=KEYS,
                         instance=instance_with_shops(["shop-1"]),
                         resources=resources(config, pg_url, tmp_path / "lake"))
    assert result.success  # bad records are a warning, not a failed run

    assert warehouse_rows(pg_url) == {tid: row for tid, row in truth.items() if tid not in spoil}
    quarantined = query(pg_url, "SELECT record_key, reason, run_id FROM quarantine")
    reasons = {key: reason for key, reason, _ in quarantined}
    assert {run for *_, run in quarantined} == {result.run_id}
    assert "tid" in reasons[None]  # a trade without a tid has no record key, only its reason
    assert "payment" in reasons[str(bad_money)] and "12.3.4" in reasons[str(bad_money)]
    assert "status" in reasons[str(bad_status)] and "TRADE_TELEPORTED" in reasons[str(bad_status)]

    meta = metadata(result, "trades")
    assert meta["quarantined"] == len(quarantined) >= 3
    [check] = result.get_asset_check_evaluations()
    assert check.asset_key == dg.AssetKey("trades") and check.check_name == "no_quarantined_records"
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["quarantined"].value == len(quarantined)
    assert "TRADE_TELEPORTED" in str(check.metadata["first_reasons"].value)
    assert _completed(pg_url) == KEYS  # the rest of each page committed, so the windows are complete


def _completed(url: str) -> list[str]:
    return [k for (k,) in query(url, "SELECT partition_key FROM sync_windows WHERE stream = 'increment' "
                                "ORDER BY partition_key")]


def test_a_page_that_stays_truncated_fails_its_partition_and_publishes_nothing(
        sim: Simulator, relay: Callable[[Tamper], Path], tmp_path: Path, pg_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = KEYS
    bad_start = format_top_time(fetch_window(bad)[0])
    # Production waits 30 s and 60 s between step retries and backs off between HTTP attempts; the
    # retries still happen here, only without the waiting.
    monkeypatch.setattr(resources_module, "RetryPolicy", functools.partial(RetryPolicy, base_delay_s=0.0))
    monkeypatch.setattr(A.raw_trade_pages.op, "_retry_policy", dg.RetryPolicy(max_retries=1, delay=0))

    def tamper(params: dict[str, str], body: bytes) -> bytes:
        return body[: len(body) // 2] if params.get("start_modified") == bad_start else body

    config = relay(tamper)
    result = materialize(INCREMENT_ASSETS, shops=["shop-1"], time_keys=KEYS,
                         instance=instance_with_shops(["shop-1"]),
                         resources=resources(config, pg_url, tmp_path / "lake"), raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == ["raw_trade_pages"]
    failure = failures[0].event_specific_data.user_failure_data  # type: ignore[union-attr]
    assert failure.description.startswith("1 of 2 increment partitions failed to fetch")
    detail = failure.metadata["failures"].value
    assert bad in detail and good not in detail and "MalformedResponseError" in detail
    assert any(e.event_type == dg.DagsterEventType.STEP_RESTARTED for e in result.all_events)

    lake = PageLake(tmp_path / "lake")
    assert not lake.has_partition(shop_id="shop-1", stream="increment", partition_key=bad)
    assert lake.has_partition(shop_id="shop-1", stream="increment", partition_key=good)
    assert _completed(pg_url) == []
    assert query(pg_url, "SELECT COUNT(*) FROM trades") == [(0,)]
    errors = query(pg_url, "SELECT error_kind, COUNT(*) FROM api_calls WHERE outcome = 'error' "
                   "GROUP BY error_kind")
    assert [kind for kind, _ in errors] == ["MalformedResponseError"]
