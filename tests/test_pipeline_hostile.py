"""No gap under hostile conditions: a day of increment partitions materialised as the world clock steps
forward, with a visibility lag longer than the safety lag, page drift and injected faults. Also: no
secret reaches Dagster's event log or run records."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._serdes import serialize_value
from pipeline_support import (
    ANCHOR,
    history_keys,
    increment_keys,
    query,
    run,
    serial_loads,
    sim_settings,
    stored_of,
    top_time,
    truth_of,
    truth_rows,
    warehouse_rows,
    world_records,
)

from ordersync_pipeline.defs import build_definitions
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.streams import stream_names

SHOPS = ["shop-1", "shop-2"]
LAG_S = 240           # the increment index trails the world by 4 minutes: more than the 3-minute safety lag
STEPS_PER_RUN = 1     # one run per 15-minute partition, as the schedule launches them


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    # The stepped world clock starts at yesterday 00:03 so a whole day of partitions can be stepped
    # through (and still exist for Dagster, whose partition keys stop at real now).
    settings = SimulatorSettings(seed=77, shops=2, orders_per_day=150, history_days=2, clock="stepped",
                                 start_at=ANCHOR + timedelta(minutes=3),
                                 visibility_lag_s=LAG_S, page_drift=0.3, fault_rate=0.03,
                                 fault_timeout_s=1.5, fault_slow_s=0.05)
    with start_simulator(settings) as sim:
        yield sim


def test_a_stepped_day_of_increments_under_lag_drift_and_faults_leaves_no_gap(
        hostile: Simulator, tmp_path: Path, pg_url: str) -> None:
    sim = hostile
    # The pipeline's "now" is the world's: a window is fetched only once closed in world time.
    settings = serial_loads(sim_settings(sim, tmp_path, pg_url, world_clock=True, timeout_seconds=1.0))
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()

    assert run(settings, "historical", shops=SHOPS, time_keys=history_keys(), instance=instance,
               defs=defs, streams=stream_names()).success

    day = increment_keys(ANCHOR, 96)
    for first in range(0, len(day), STEPS_PER_RUN):
        batch = day[first:first + STEPS_PER_RUN]
        sim.clock.advance(15 * 60 * len(batch))  # now = the batch's last window end + 3 minutes
        result = run(settings, "increment", shops=SHOPS, time_keys=batch, instance=instance, defs=defs,
                     streams=stream_names())
        assert result.success, batch

    last_end = ANCHOR + timedelta(days=1)
    assert sim.clock.now() == last_end + timedelta(minutes=3)
    cutoff = last_end - timedelta(seconds=LAG_S)
    stats = sim.state()
    assert stats["drifted"] > 0 and sum(stats["faults"].values()) > 0, stats  # the day was hostile

    for shop in SHOPS:
        truth = truth_rows(t for t in sim.world.trades(shop) if top_time(t["modified"]) < cutoff)
        stored = warehouse_rows(pg_url, shop)
        assert len(truth) > 300
        missing = sorted(set(truth) - set(stored))
        assert not missing, f"{len(missing)} trades never landed, e.g. {missing[:5]}"
        wrong = {tid: (stored[tid], want) for tid, want in truth.items() if stored[tid] != want}
        assert not wrong, f"{len(wrong)} trades differ, e.g. {list(wrong.items())[:2]}"
        # Every stream of the registry: refunds too, each at its newest state before the cutoff.
        for name in stream_names():
            if name == "trades":
                continue
            want = truth_of(name, (r for r in world_records(sim, name, shop) if top_time(r["modified"]) < cutoff))
            have = stored_of(name, pg_url, shop)
            assert len(want) > 10, name
            assert {k: have.get(k) for k in want} == want, name
    assert query(pg_url, "SELECT COUNT(*), COUNT(DISTINCT tid) FROM trades")[0] == (
        len(warehouse_rows(pg_url)),) * 2
    errors = query(pg_url, "SELECT COUNT(*) FROM api_calls WHERE outcome = 'error'")[0][0]
    assert errors > 0  # faults were met and retried, not avoided
    windows = query(pg_url, "SELECT shop_id, stream, COUNT(*) FROM sync_windows WHERE kind = 'increment' "
                    "GROUP BY shop_id, stream ORDER BY shop_id, stream")
    assert windows == [(shop, name, 96) for shop in SHOPS for name in sorted(stream_names())]

    _assert_no_secret_in_dagster_records(instance, [sim.app_secret, *(s.session for s in sim.shops)])


def _assert_no_secret_in_dagster_records(instance: dg.DagsterInstance, secrets: list[str]) -> None:
    """Every event (messages, metadata, errors) and every run record, serialised, holds no secret."""
    runs = instance.get_runs()
    assert len(runs) > 40
    for record in runs:
        texts: list[Any] = [serialize_value(record)]
        texts += [serialize_value(entry) for entry in instance.all_logs(record.run_id)]
        for text in texts:
            for secret in secrets:
                assert secret not in text, f"a secret leaked into run {record.run_id}"


