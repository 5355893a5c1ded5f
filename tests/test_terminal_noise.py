"""What a run prints to the terminal under ordersync's default Dagster instance: INFO and up (the run's
summary), not Dagster's DEBUG line per event; and the default dagster.yaml is kept up to date only when
ordersync wrote it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from pipeline_support import ANCHOR, increment_keys, run, serial_loads, sim_settings

from ordersync_pipeline.app.instance import DAGSTER_YAML, default_dagster_yaml, ensure_dagster_home
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator


def test_the_default_dagster_yaml_is_written_refreshed_when_ours_and_left_alone_when_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = ensure_dagster_home(tmp_path)
    yaml_path = home / "dagster.yaml"
    assert yaml_path.read_text(encoding="utf-8") == default_dagster_yaml(home)
    older = DAGSTER_YAML.split("# Runs print INFO")[0]   # what ordersync wrote before python_logs
    yaml_path.write_text(older, encoding="utf-8")
    monkeypatch.delenv("DAGSTER_HOME")
    ensure_dagster_home(tmp_path)
    assert yaml_path.read_text(encoding="utf-8") == default_dagster_yaml(home)
    mine = "# my instance\ntelemetry:\n  enabled: false\n"
    yaml_path.write_text(mine, encoding="utf-8")
    monkeypatch.delenv("DAGSTER_HOME")
    ensure_dagster_home(tmp_path)
    assert yaml_path.read_text(encoding="utf-8") == mine
    monkeypatch.delenv("DAGSTER_HOME")
    yaml_path.write_text(DAGSTER_YAML, encoding="utf-8")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.python_log_level == "INFO"
        assert instance.get_settings("freshness") == {"enabled": True}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=3, shops=1, orders_per_day=100, history_days=2,
                                           clock="stepped")) as s:
        yield s


def test_a_run_on_the_default_instance_prints_its_summary_and_no_debug_line(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str,
        capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    settings = serial_loads(sim_settings(sim, tmp_path, sqlite_url))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        capfd.readouterr()
        result = run(settings, "increment", shops=["shop-1"],
                     time_keys=increment_keys(ANCHOR + timedelta(hours=9), 2), instance=instance)
    assert result.success
    printed = capfd.readouterr().err.splitlines()
    assert any("increment: 2 partition(s) loaded, 0 failed" in line for line in printed), printed
    assert not [line for line in printed if " - DEBUG - " in line]
