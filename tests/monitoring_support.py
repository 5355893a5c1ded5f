"""Helpers for the monitoring tests: evaluate schedules and sensors as the daemon would, and execute the runs
they request in-process (with the tags the daemon would put on them), against a persistent instance."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from ordersync_pipeline.alerts import Alerts
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.top.retry import RetryPolicy

# Quiet runs: the event log keeps everything; the terminal needs none of it.
QUIET: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclasses.dataclass
class Tick:
    requests: list[dg.RunRequest]
    cursor: str | None
    skip: str | None


def schedule_tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, at: datetime) -> Tick:
    schedule = defs.resolve_schedule_def(name)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as context:
        data = schedule.evaluate_tick(context)
    return Tick(list(data.run_requests or []), None, data.skip_message)


def sensor_tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None) -> Tick:
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as context:
        data = sensor.evaluate_tick(context)
    return Tick(list(data.run_requests or []), data.cursor, data.skip_message)


def execute(defs: dg.Definitions, instance: dg.DagsterInstance, job_name: str, request: dg.RunRequest,
            *, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """The run ``request`` asks for, as the daemon would launch it (run key and tags included)."""
    job = defs.resolve_job_def(job_name)
    tags = {**request.tags, **({RUN_KEY_TAG: request.run_key} if request.run_key else {})}
    return job.execute_in_process(instance=instance, tags=tags, run_config=QUIET,
                                  asset_selection=list(request.asset_selection) if request.asset_selection else None,
                                  partition_key=request.partition_key, raise_on_error=raise_on_error)


def fast_retries(settings: Settings) -> Settings:
    """The same settings retrying failed calls after tenths of a second instead of seconds, and failed
    partitions after one second: a test's faults are met and retried without minutes of waiting."""
    config = settings.config.model_copy(deep=True)
    config.sync.retry_delay_seconds = 1.0
    return dataclasses.replace(settings, config=config,
                               retry=RetryPolicy(max_attempts=6, base_delay_s=0.05, max_delay_s=0.5))


def with_monitoring(settings: Settings, **changes: Any) -> Settings:
    """The same settings with ``monitoring.breaker`` fields (``breaker_<name>``) or ``monitoring`` fields
    changed."""
    config = settings.config.model_copy(deep=True)
    for name, value in changes.items():
        if name.startswith("breaker_"):
            setattr(config.monitoring.breaker, name.removeprefix("breaker_"), value)
        else:
            setattr(config.monitoring, name, value)
    return dataclasses.replace(settings, config=config)


class AlertSpy:
    """Counts the alerts opened (newly, not deduplicated ones) through the real ``Alerts``."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, str | None, str]] = []
        self.resolved: list[tuple[str, str | None, str]] = []

    def install(self, monkeypatch: Any) -> AlertSpy:
        original_open, original_resolve = Alerts.open, Alerts.resolve

        def spy_open(alerts: Alerts, kind: Any, *, shop_id: str | None, key: str, message: str) -> bool:
            opened = original_open(alerts, kind, shop_id=shop_id, key=key, message=message)
            if opened:
                self.opened.append((kind, shop_id, key))
            return opened

        def spy_resolve(alerts: Alerts, kind: Any, *, shop_id: str | None, key: str) -> bool:
            resolved = original_resolve(alerts, kind, shop_id=shop_id, key=key)
            if resolved:
                self.resolved.append((kind, shop_id, key))
            return resolved

        monkeypatch.setattr(Alerts, "open", spy_open)
        monkeypatch.setattr(Alerts, "resolve", spy_resolve)
        return self

    def kinds(self) -> Sequence[str]:
        return [kind for kind, _, _ in self.opened]
