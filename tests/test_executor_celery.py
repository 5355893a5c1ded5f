"""The Celery path (orchestration.executor: celery, docs/scaling.md) run for real: one local Celery worker
on this machine's Redis, Dagster storage on PostgreSQL shared with it, the simulator over loopback.

The run is launched in this process the way the daemon's run worker does (``execute_job`` on a
reconstructable job, not ``execute_in_process``, which always runs in-process); its step must execute in
the worker, which loads the code location from ``ordersync_pipeline.definitions`` and the configuration
from its own environment, and land ground truth in the warehouse.

The broker and result backend are Redis with a key prefix of this test's own, so parallel test runs
(pytest-xdist, other checkouts) never take each other's tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import redis
import sqlalchemy as sa
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from pipeline_support import (
    ANCHOR,
    fetch_window,
    in_windows,
    increment_keys,
    truth_rows,
    warehouse_rows,
    write_sim_config,
)

from ordersync_pipeline.defs.partitions import multi_key
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.streams import stream

REDIS = "redis://127.0.0.1:6379/0"
SHOPS = ["shop-1", "shop-2"]
KEYS = increment_keys(ANCHOR + timedelta(hours=19), 2)
WORKER_START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 240


@pytest.fixture
def dagster_pg() -> Iterator[str]:
    """A fresh PostgreSQL database for Dagster's run, event and schedule storage (shared with the worker)."""
    from conftest import PG_ADMIN_URL, _fresh_database

    for url in _fresh_database(PG_ADMIN_URL, '"'):
        yield sa.make_url(url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def _celery_settings(prefix: str) -> dict[str, Any]:
    options = {"global_keyprefix": prefix}
    return {"broker_transport_options": options, "result_backend_transport_options": options}


def _start_worker(env: dict[str, str], config_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """``celery -A dagster_celery.app worker`` (what ``dagster-celery worker start`` runs), one process."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "-Q", "dagster",
             "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
            env={**env, "PYTHONPATH": os.pathsep.join([str(config_dir), env.get("PYTHONPATH", "")])},
            stdout=out, stderr=subprocess.STDOUT, cwd=config_dir, start_new_session=True)


def _wait_ready(worker: subprocess.Popen[bytes], log: Path) -> None:
    import time

    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise AssertionError(f"the Celery worker exited ({worker.returncode}):\n{log.read_text()}")
        if "ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"the Celery worker was not ready in {WORKER_START_TIMEOUT_S}s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=21, shops=2, orders_per_day=250, history_days=3,
                                           clock="stepped")) as s:
        yield s


def test_a_sync_run_on_the_celery_executor_runs_its_step_in_the_worker_and_lands_ground_truth(
        sim: Simulator, tmp_path: Path, pg_url: str, dagster_pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"ordersync-test-{uuid.uuid4().hex[:12]}:"
    home, dagster_home, config_dir = tmp_path / "home", tmp_path / "dagster", tmp_path / "celery"
    for folder in (home, dagster_home, config_dir):
        folder.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        f"telemetry: {{enabled: false}}\nstorage:\n  postgres:\n    postgres_url: {dagster_pg}\n", encoding="utf-8")
    # The worker's Celery settings: dagster_celery.app reads a `dagster_celery_config` module when present
    # (what `dagster-celery worker start -y config.yaml` writes), here with this test's broker and prefix.
    (config_dir / "dagster_celery_config.py").write_text(
        f"broker_url = {REDIS!r}\nresult_backend = {REDIS!r}\n"
        + "".join(f"{key} = {value!r}\n" for key, value in _celery_settings(prefix).items()), encoding="utf-8")
    config_path = write_sim_config(sim, home / "ordersync.yaml", orchestration={"executor": "celery"})
    env = {**os.environ, "ORDERSYNC_HOME": str(home), "ORDERSYNC_CONFIG": str(config_path),
           "ORDERSYNC_WAREHOUSE_URL": pg_url, "DAGSTER_HOME": str(dagster_home)}
    for name in ("ORDERSYNC_REDIS_URL", "ORDERSYNC_LAKE_URL"):
        env.pop(name, None)
    for name, value in env.items():
        if name.startswith(("ORDERSYNC_", "DAGSTER_HOME")):
            monkeypatch.setenv(name, value)

    log = tmp_path / "worker.log"
    worker = _start_worker(env, config_dir, log)
    try:
        _wait_ready(worker, log)
        recon = ReconstructableRepository.for_module(
            "ordersync_pipeline.definitions", "defs", working_directory=str(tmp_path)
        ).get_reconstructable_job("incremental_sync_job")
        selection = [dg.AssetKey(name) for name in stream("trades").assets.all_names("increment")]
        tags = {ASSET_PARTITION_RANGE_START_TAG: str(multi_key(SHOPS[0], KEYS[0])),
                ASSET_PARTITION_RANGE_END_TAG: str(multi_key(SHOPS[-1], KEYS[-1]))}
        run_config = {"execution": {"config": {"broker": REDIS, "backend": REDIS,
                                               "config_source": _celery_settings(prefix)}}}
        with dg.DagsterInstance.get() as instance:
            assert not instance.is_ephemeral
            with dg.execute_job(recon, instance=instance, run_config=run_config, tags=tags,
                                asset_selection=selection, raise_on_error=False) as result:
                assert result.success, log.read_text(errors="replace")[-3000:]
                in_worker = [event for event in instance.all_logs(result.run_id)
                             if event.is_dagster_event and "in celery worker" in (event.message or "")]
                materialized = {event.step_materialization_data.materialization.partition
                                for event in result.all_events if event.is_step_materialization
                                and event.asset_key == dg.AssetKey("trades")}
        assert in_worker, "the step did not run in the Celery worker"
        assert materialized == {str(multi_key(shop, key)) for shop in SHOPS for key in KEYS}
        for shop in SHOPS:
            truth = truth_rows(in_windows(sim.world.trades(shop), [fetch_window(k) for k in KEYS]))
            assert truth and warehouse_rows(pg_url, shop) == truth
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(match=f"{prefix}*"):  # the queue, its bindings, the task results
            client.delete(key)
        client.close()
