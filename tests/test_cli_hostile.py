"""`ordersync sync` under what operators really do (issue 6): a start anchor with a time of day, shops
reordered, prepended and removed, one shop's session expired or its key unset, a sync killed with
kill -9, and two syncs at once on one home. Each runs the real command as a subprocess against the
simulator over loopback HTTP and compares the warehouse with the simulator's ground truth.

``ORDERSYNC_TEST_BIN`` points the tests at another ``ordersync`` executable (e.g. an older release) to
show they fail there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_support import ANCHOR, in_windows, query, sim_config, truth_rows, warehouse_rows

from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator

ORDERSYNC = os.environ.get("ORDERSYNC_TEST_BIN") or str(Path(sys.executable).with_name("ordersync"))
TO = (ANCHOR + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")  # today 00:00 China time: a closed day


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=43, shops=3, orders_per_day=150, history_days=3,
                                           clock="stepped")) as s:
        yield s


def _config(sim: Simulator, path: Path, shops: list[str], **kwargs: Any) -> Path:
    """The simulator's configuration with ``shops`` in this order; only non-default settings are written
    (as a person writes the file, and so an older ordersync can read it too)."""
    data = sim_config(sim, **kwargs).model_dump(exclude_defaults=True)
    by_id = {shop["shop_id"]: shop for shop in data["shops"]}
    data["shops"] = [by_id[s] for s in shops]
    path.write_text(yaml.safe_dump(_plain(data), allow_unicode=True), encoding="utf-8")
    return path


def _sync(config: Path, home: Path, warehouse_url: str, *, to: str = TO, env: dict[str, str] | None = None,
          wait: bool = True) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERSYNC_", "DAGSTER_"))}
    clean.update(ORDERSYNC_HOME=str(home), ORDERSYNC_WAREHOUSE_URL=warehouse_url, **(env or {}))
    return subprocess.run([ORDERSYNC, "sync", "--config", str(config), "--to", to], env=clean,
                          capture_output=True, text=True, timeout=300)


def _truth(sim: Simulator, shop: str, *, history_from: Any, anchor: Any, end: Any) -> dict[int, Any]:
    """What one shop's warehouse must hold: created in the history range, or changed since the anchor."""
    trades = sim.world.trades(shop)
    return truth_rows(in_windows(trades, [(history_from, anchor)], "created")
                      + in_windows(trades, [(anchor - timedelta(minutes=5), end)]))


def test_a_start_anchor_with_a_time_of_day_leaves_no_gap(sim: Simulator, tmp_path: Path, sqlite_url: str) -> None:
    # 6.1: history used to end at the anchor day's midnight while increments began at 10:00, so trades
    # created that morning and not changed after 10:00 were fetched by neither path.
    anchor = ANCHOR + timedelta(hours=10, minutes=7)
    config = _config(sim, tmp_path / "c.yaml", ["shop-1"], sync={"start": anchor.isoformat(), "history_days": 1})
    result = _sync(config, tmp_path / "home", sqlite_url)
    assert result.returncode == 0, result.stdout + result.stderr
    want = _truth(sim, "shop-1", history_from=ANCHOR - timedelta(days=1), anchor=anchor,
                  end=ANCHOR + timedelta(days=1))
    morning = [tid for tid, row in want.items() if row[1] < anchor]
    assert len(morning) > 30
    stored = warehouse_rows(sqlite_url)
    missing = sorted(set(want) - set(stored))
    assert not missing, f"{len(missing)} trades fetched by neither path, e.g. {missing[:3]}"


def test_reordering_prepending_and_removing_shops_keeps_syncing_exactly_the_configured_ones(
        sim: Simulator, tmp_path: Path, pg_url: str) -> None:
    # 6.2 / 6.6: runs used to be a range from the config's first to last shop in Dagster's registration
    # order: a reordered or prepended list synced nothing ("ok", 0 calls), a removed shop failed every run.
    home = tmp_path / "home"
    first_hour = (ANCHOR + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    second_hour = (ANCHOR + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    one = _sync(_config(sim, tmp_path / "1.yaml", ["shop-2", "shop-3"]), home, pg_url, to=first_hour)
    assert one.returncode == 0, one.stdout + one.stderr

    # shop-1 prepended, the others swapped: shop-1 gets its history and the hour; the others the new windows.
    two = _sync(_config(sim, tmp_path / "2.yaml", ["shop-1", "shop-3", "shop-2"]), home, pg_url, to=second_hour)
    assert two.returncode == 0, two.stdout + two.stderr
    calls = query(pg_url, "SELECT COUNT(DISTINCT shop_id) FROM api_calls WHERE called_at > "
                  "(SELECT MAX(completed_at) FROM sync_windows WHERE shop_id = 'shop-2' AND partition_key = :k)",
                  k=(ANCHOR + timedelta(minutes=45)).strftime("%Y-%m-%d-%H:%M"))
    assert calls[0][0] == 3
    for shop in ("shop-1", "shop-2", "shop-3"):
        keys = [k for (k,) in query(pg_url, "SELECT partition_key FROM sync_windows WHERE shop_id = :s AND "
                                    "stream = 'trades' AND kind = 'increment' ORDER BY partition_key", s=shop)]
        assert len(keys) == 8, (shop, keys)  # 00:00 .. 01:45: every window of the two hours, exactly once

    # shop-3 removed from the middle: the others go on cleanly; shop-3's rows stay in the warehouse.
    kept = query(pg_url, "SELECT COUNT(*) FROM trades WHERE shop_id = 'shop-3'")[0][0]
    third_hour = (ANCHOR + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    three = _sync(_config(sim, tmp_path / "3.yaml", ["shop-1", "shop-2"]), home, pg_url, to=third_hour)
    assert three.returncode == 0, three.stdout + three.stderr
    assert "unknown shop" not in three.stdout + three.stderr
    assert query(pg_url, "SELECT COUNT(*) FROM trades WHERE shop_id = 'shop-3'")[0][0] == kept
    newest = query(pg_url, "SELECT shop_id, MAX(partition_key) FROM sync_windows WHERE kind = 'increment' "
                   "GROUP BY shop_id ORDER BY shop_id")
    last = (ANCHOR + timedelta(hours=2, minutes=45)).strftime("%Y-%m-%d-%H:%M")
    assert newest[:2] == [("shop-1", last), ("shop-2", last)]


def test_one_shops_expired_session_or_unset_key_fails_that_shop_alone_and_at_once(
        sim: Simulator, tmp_path: Path, pg_url: str) -> None:
    # 6.7 / 6.10: a code 27 for one shop failed the whole fetch step, so the other shops' pages were never
    # loaded; an unset session variable was retried for minutes as if it could heal.
    cfg = sim_config(sim).model_dump(exclude_defaults=True)
    shops = {s["shop_id"]: s for s in cfg["shops"]}
    shops["shop-1"]["session"] = "6102" + "0badc0de" * 8                    # expired (code 27)
    shops["shop-3"]["session"], shops["shop-3"]["session_env"] = None, "ORDERSYNC_TEST_UNSET_SESSION"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_plain(cfg), allow_unicode=True), encoding="utf-8")
    an_hour = (ANCHOR + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    started = time.monotonic()
    result = _sync(path, tmp_path / "home", pg_url, to=an_hour)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "re-authorise this shop shop-1" in output
    assert "ORDERSYNC_TEST_UNSET_SESSION" in output
    assert "Traceback" not in output and shops["shop-1"]["session"] not in output
    assert elapsed < 90, f"permanent failures were retried as if transient ({elapsed:.0f}s)"
    # shop-2's history and hour are loaded and complete; the failed shops have nothing recorded.
    recorded = dict(query(pg_url, "SELECT shop_id, COUNT(*) FROM sync_windows GROUP BY shop_id"))
    assert recorded == {"shop-2": 2 * (2 + 4)}  # two days and four windows, for trades and for refunds
    want = _truth(sim, "shop-2", history_from=ANCHOR - timedelta(days=2), anchor=ANCHOR,
                  end=ANCHOR + timedelta(hours=1))
    assert warehouse_rows(pg_url, "shop-2") == want


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[Simulator]:
    """The same world behind a platform that takes 0.1 s a reply, so a sync is surely still running
    when the test kills it (on a fast simulator it could finish while a second sync was starting)."""
    with start_simulator(SimulatorSettings(seed=43, shops=3, orders_per_day=150, history_days=3,
                                           clock="stepped", reply_delay_s=0.1)) as s:
        yield s


def test_a_sync_killed_with_kill_9_is_marked_failed_and_the_next_one_completes_the_work(
        slow_sim: Simulator, tmp_path: Path, pg_url: str) -> None:
    # 6.12: the killed run stayed STARTED forever; a second sync beside a running one did everything twice.
    sim = slow_sim
    home = tmp_path / "home"
    config = _config(sim, tmp_path / "c.yaml", ["shop-1", "shop-2"], sync={"history_days": 2, "page_size": 20})
    to = (ANCHOR + timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERSYNC_", "DAGSTER_"))}
    clean.update(ORDERSYNC_HOME=str(home), ORDERSYNC_WAREHOUSE_URL=pg_url)
    victim = subprocess.Popen([ORDERSYNC, "sync", "--config", str(config), "--to", to], env=clean,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Killed once the first partitions are in the lake, while others are still being fetched.
        _wait_for(lambda: len(list(home.glob("lake/**/*.manifest.json"))) >= 2, timeout=120)
        # A second sync on the same home while the first holds it: refused in one line, no work done.
        beside = _sync(config, home, pg_url, to=to)
        assert beside.returncode != 0 and "another ordersync sync is running" in beside.stdout + beside.stderr
        assert "Traceback" not in beside.stdout + beside.stderr
        assert victim.poll() is None, "the sync finished before it could be killed: slow the simulator down"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    after = _sync(config, home, pg_url, to=to)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "marked run" in after.stdout and "killed" in after.stdout
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        statuses = [r.status for r in instance.get_runs()]
    assert dg.DagsterRunStatus.STARTED not in statuses and dg.DagsterRunStatus.FAILURE in statuses
    for shop in ("shop-1", "shop-2"):
        want = _truth(sim, shop, history_from=ANCHOR - timedelta(days=2), anchor=ANCHOR,
                      end=ANCHOR + timedelta(hours=4))
        assert warehouse_rows(pg_url, shop) == want


def _wait_for(condition: Any, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")
