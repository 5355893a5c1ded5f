"""`ordersync sync` as a cron user runs it: a real subprocess against a running simulator, with its
Dagster instance under ORDERSYNC_HOME; up-to-date re-runs; an expired session fails with advice and
without printing any secret."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value
from pipeline_support import (
    ANCHOR,
    in_windows,
    stored_of,
    truth_of,
    truth_rows,
    warehouse_rows,
    write_sim_config,
)

from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator

ORDERSYNC = str(Path(sys.executable).with_name("ordersync"))
TO = (ANCHOR + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")  # today 00:00 China time: a closed day


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=41, shops=1, orders_per_day=120, history_days=3,
                                           clock="stepped")) as s:
        yield s


def _sync(config: Path, home: Path, warehouse_url: str, to: str = TO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERSYNC_", "DAGSTER_"))}
    env.update(ORDERSYNC_HOME=str(home), ORDERSYNC_WAREHOUSE_URL=warehouse_url)
    return subprocess.run([ORDERSYNC, "sync", "--config", str(config), "--to", to], env=env,
                          capture_output=True, text=True, timeout=240)


def test_sync_loads_everything_records_runs_and_then_reports_up_to_date(
        sim: Simulator, tmp_path: Path, pg_url: str) -> None:
    home = tmp_path / "home"
    config = write_sim_config(sim, tmp_path / "ordersync.yaml")
    first = _sync(config, home, pg_url)
    assert first.returncode == 0, first.stdout + first.stderr
    # Every stream of the registry, each path in one run: trades and refunds together.
    assert "historical refunds+trades: 2 days x 1 shop(s)" in first.stdout
    assert "increment refunds+trades: 96 windows x 1 shop(s)" in first.stdout
    assert "ordersync summary" in first.stdout and "API calls:" in first.stdout

    # Everything created in the history days or changed during the increment day is there, as now; and,
    # since the reconciliation counted each completed day against the platform, so is every trade
    # created during the increment day (one changed again after it was fetched as now, by the re-fetch).
    days = [(ANCHOR - timedelta(days=2), ANCHOR + timedelta(days=1) - timedelta(seconds=1))]
    trades = sim.world.trades("shop-1")
    want = truth_rows(in_windows(trades, days, "created") + in_windows(trades, [(ANCHOR, ANCHOR + timedelta(days=1))]))
    assert warehouse_rows(pg_url) == want
    # Refunds changed in the history days or the increment day, as now; the summary counts both
    # streams per shop and the refund rate (trades with a refund over trades).
    refunds = in_windows(sim.world.refunds("shop-1"), [(ANCHOR - timedelta(days=2), ANCHOR + timedelta(days=1))])
    assert stored_of("refunds", pg_url) == truth_of("refunds", refunds) and refunds
    rate = len({r["tid"] for r in refunds}) / len(want)
    assert re.search(rf"^shop-1 +{len(want)} +{len(refunds)} +{rate:.1%}", first.stdout, re.MULTILINE), first.stdout
    # Each completed day reconciled against the platform, with its counts: no gap on any day.
    assert "reconciliation: 3 days x 1 shop(s)" in first.stdout
    for day in (ANCHOR - timedelta(days=2), ANCHOR - timedelta(days=1), ANCHOR):
        assert re.search(rf"^{day:%Y-%m-%d} +shop-1 +trades +\d+ +\d+ +0 +0 +\d+ +\d+ +ok$", first.stdout,
                         re.MULTILINE), first.stdout

    second = _sync(config, home, pg_url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already up to date" in second.stdout
    assert "historical trades" not in second.stdout

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
        # The history, the increments, and the reconciliation of the three completed days.
        assert sorted(r.job_name for r in runs) == ["daily_reconciliation_job", "historical_load_job",
                                                    "incremental_sync_job"]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert all(r.tags.get("ordersync/started_by") == "cli" for r in runs)
        secrets = [sim.app_secret, sim.shops[0].session]
        for run in runs:
            texts = [serialize_value(run), *(serialize_value(e) for e in instance.all_logs(run.run_id))]
            assert not [s for s in secrets for t in texts if s in t]
    for out in (first, second):
        assert not [s for s in secrets if s in out.stdout + out.stderr]

    # A history that is only partly complete (a run that failed half-way) is finished, not skipped:
    # exactly the missing day is loaded again.
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        first_day = conn.execute(sa.text(
            "select min(partition_key) from sync_windows where kind = 'historical'")).scalar_one()
        conn.execute(sa.text("delete from sync_windows where kind = 'historical' and partition_key = :k"),
                     {"k": first_day})
    engine.dispose()
    third = _sync(config, home, pg_url)
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"historical refunds+trades: 1 days x 1 shop(s) ({first_day})" in third.stdout
    assert warehouse_rows(pg_url) == want


def test_an_invalid_session_fails_with_re_authorise_advice_and_no_secret(
        sim: Simulator, tmp_path: Path, pg_url: str) -> None:
    wrong = "6102" + "0badc0de" * 8
    config = write_sim_config(sim, tmp_path / "ordersync.yaml", session=wrong)
    an_hour = (ANCHOR + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    result = _sync(config, tmp_path / "home", pg_url, to=an_hour)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    # Every step fails at once (no step retries: waiting cannot fix a session) and says what to do; the
    # reconciliation of the completed history days cannot ask the platform either.
    failed = [line for line in result.stdout.splitlines() if "FAILED:" in line]
    assert [line.split()[0] for line in failed] == ["historical", "increment", "reconciliation"]
    assert all("re-authorise this shop shop-1" in line for line in failed), failed
    assert wrong not in output and sim.app_secret not in output
