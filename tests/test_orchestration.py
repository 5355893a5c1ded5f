"""The orchestration section: the executor chosen by configuration (optional extras imported only when
selected, a clear error when missing), shops per run for the schedule and the gap sensor, and where the
page lake lives (ORDERSYNC_LAKE_URL over orchestration.lake_url over ORDERSYNC_HOME/lake)."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import pytest

from ordersync_pipeline.config import ConfigError, lake_url, parse_config
from ordersync_pipeline.defs import build_definitions
from ordersync_pipeline.defs.executors import build_executor
from ordersync_pipeline.settings import Settings, load_settings
from ordersync_pipeline.sync.plan import RunRect, shard

BASE = {"gateway": "http://127.0.0.1:8080/router/rest", "app_key": "12345678", "app_secret": "s3cr3t-value",
        "shops": [{"shop_id": f"shop-{i:02d}", "seller_nick": f"nick-{i}", "session": "sess"} for i in range(5)],
        "sync": {"start": "2026-11-01"}}


def _config(**orchestration: object) -> dict[str, object]:
    return {**BASE, "orchestration": orchestration} if orchestration else dict(BASE)


def test_defaults_are_in_process_100_shops_and_the_home_lake(tmp_path: Path) -> None:
    config = parse_config(_config())
    assert config.orchestration.executor == "in_process"
    assert config.orchestration.max_shops_per_run == 500
    assert lake_url(config, {"ORDERSYNC_HOME": str(tmp_path)}) == str(tmp_path / "lake")
    assert build_executor(config.orchestration.executor) is dg.in_process_executor
    assert build_executor("multiprocess") is dg.multiprocess_executor


def test_lake_url_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = parse_config(_config(lake_url="file:///srv/lake"))
    env = {"ORDERSYNC_HOME": str(tmp_path)}
    assert lake_url(config, env) == "file:///srv/lake"
    assert lake_url(config, {**env, "ORDERSYNC_LAKE_URL": "s3://bucket/lake"}) == "s3://bucket/lake"
    path = tmp_path / "ordersync.yaml"
    path.write_text("gateway: http://127.0.0.1:8080/router/rest\napp_key: k\napp_secret: s\nshops:\n"
                    "  - {shop_id: a, seller_nick: a, session: s}\norchestration:\n  lake_url: /data/lake\n")
    settings = load_settings(path, {**env, "ORDERSYNC_LAKE_URL": str(tmp_path / "shared")})
    assert settings.lake_root == str(tmp_path / "shared")
    assert load_settings(path, env).lake_root == "/data/lake"


@pytest.mark.parametrize("bad, key", [({"executor": "dask"}, "orchestration.executor"),
                                      ({"max_shops_per_run": 0}, "orchestration.max_shops_per_run"),
                                      ({"lake_url": " "}, "orchestration.lake_url"),
                                      ({"shards": 3}, "orchestration.shards")])
def test_bad_orchestration_values_name_the_key(bad: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(_config(**bad))


@pytest.mark.parametrize("executor, module, extra", [("celery", "dagster_celery", "celery"),
                                                     ("k8s", "dagster_k8s", "k8s")])
def test_a_missing_executor_extra_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, executor: str,
                                                     module: str, extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, installed or not
    with pytest.raises(ConfigError, match=rf"ordersync\[{extra}\]"):
        build_executor(executor)  # type: ignore[arg-type]


def test_definitions_use_the_configured_executor_and_shard_size(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "dagster_celery", raising=False)  # another test may have loaded it
    settings = Settings.for_config(parse_config(_config(executor="multiprocess", max_shops_per_run=2)),
                                   home=tmp_path)
    defs = build_definitions(settings)
    job = defs.resolve_job_def("incremental_sync_job")
    assert job.executor_def is dg.multiprocess_executor
    schedule = defs.resolve_schedule_def("incremental_sync_schedule")
    assert "up to 2 shops" in (schedule.description or "")
    assert "dagster_celery" not in sys.modules


def test_shard_cuts_runs_into_contiguous_shop_ranges() -> None:
    rect = RunRect(kind="increment", streams=("trades",), shops=tuple(f"s{i}" for i in range(5)),
                   time_keys=("k1", "k2"))
    pieces = shard([rect], 2)
    assert [p.shops for p in pieces] == [("s0", "s1"), ("s2", "s3"), ("s4",)]
    assert all(p.time_keys == ("k1", "k2") for p in pieces)
    assert set().union(*(p.cells for p in pieces)) == rect.cells
    with pytest.raises(ValueError):
        shard([rect], 0)
