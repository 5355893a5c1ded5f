"""The first history day at the platform's 90-day limit (issue 9): the list API sees only the last 90
days counted from the moment of the call, so a day that was inside the horizon when the run was planned
can start before it by the time it is fetched. The window is clipped to the horizon at call time and
sync_windows records the window really fetched; a day wholly past the horizon fails alone, not retried."""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path

import pytest
from pipeline_support import ANCHOR, partition_metadata, query, run, sim_settings

from ordersync_pipeline.defs import timeline_for
from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.sync.plan import is_complete
from ordersync_pipeline.sync.windows import HISTORY_HORIZON, HORIZON_MARGIN, Window, clip_to_horizon
from ordersync_pipeline.warehouse import Warehouse


def test_the_day_cut_by_the_horizon_is_fetched_from_the_horizon_and_recorded_so(tmp_path: Path,
                                                                                sqlite_url: str) -> None:
    first_day = ANCHOR - timedelta(days=2)
    now = first_day + HISTORY_HORIZON + timedelta(hours=6)   # the horizon cuts the first day at 06:00
    with start_simulator(SimulatorSettings(seed=5, shops=1, orders_per_day=300, history_days=93,
                                           clock="stepped", start_at=now)) as sim:
        settings = sim_settings(sim, tmp_path, sqlite_url, world_clock=True, sync={"history_days": 2})
        key = first_day.strftime("%Y-%m-%d")
        result = run(settings, "historical", shops=["shop-1"], time_keys=[key])
        assert result.success
        horizon = now - HISTORY_HORIZON + HORIZON_MARGIN
    [window] = Warehouse(sqlite_url).completed_windows("shop-1", "trades", "historical")
    assert window.window_start == horizon and window.window_end == first_day + timedelta(days=1)
    assert is_complete(timeline_for(settings), "historical", key, [Window(window.window_start, window.window_end)])
    assert partition_metadata(result, "historical_trades")[f"shop-1|{key}"]["rows_upserted"] > 0
    [(earliest, latest)] = query(sqlite_url, "SELECT MIN(created), MAX(created) FROM trades")
    assert str(horizon.astimezone(timezone.utc).replace(tzinfo=None)) <= earliest
    assert latest < str((first_day + timedelta(days=1)).astimezone(timezone.utc).replace(tzinfo=None))


def test_clip_to_horizon() -> None:
    day = Window(ANCHOR, ANCHOR + timedelta(days=1))
    inside = ANCHOR + HISTORY_HORIZON - timedelta(hours=1)
    assert clip_to_horizon(day, now=inside) == day
    cut = clip_to_horizon(day, now=ANCHOR + HISTORY_HORIZON + timedelta(hours=3))
    assert cut == Window(ANCHOR + timedelta(hours=3) + HORIZON_MARGIN, day.end)
    assert clip_to_horizon(day, now=ANCHOR + HISTORY_HORIZON + timedelta(days=1)) is None


@pytest.mark.parametrize("days_past", [1, 30])
def test_a_day_wholly_past_the_horizon_fails_alone_without_retries(tmp_path: Path, sqlite_url: str,
                                                                    days_past: int) -> None:
    first_day = ANCHOR - timedelta(days=2)
    now = first_day + HISTORY_HORIZON + timedelta(days=days_past, hours=1)
    with start_simulator(SimulatorSettings(seed=5, shops=1, orders_per_day=50, history_days=2,
                                           clock="stepped", start_at=now)) as sim:
        settings = sim_settings(sim, tmp_path, sqlite_url, world_clock=True, sync={"history_days": 2})
        calls = sim.gateway.calls
        result = run(settings, "historical", shops=["shop-1"], time_keys=[first_day.strftime("%Y-%m-%d")],
                     raise_on_error=False)
        assert sim.gateway.calls == calls  # nothing asked of the platform
    assert not result.success
    assert Warehouse(sqlite_url).completed_windows("shop-1", "trades", "historical") == []
