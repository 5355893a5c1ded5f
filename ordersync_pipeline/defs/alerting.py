"""Run-failure alerts: a failed run opens a ``run_failed`` alert; a later success of its job resolves it.

Rule. The condition is the job and the shops the run covered (``key`` = ``job|first_shop|last_shop``
from the run's partition tags, ``job`` alone for a run without shop partitions; ``shop_id`` is the shop
when the run covered one). So a job that keeps failing for the same shops every tick is one open alert,
not one per tick, while another shard of shops failing is its own alert. The alert resolves when a run
of the same job whose shops include the alert's (the same range, a re-run, a wider backfill) succeeds
after the alert opened. Which time window a run covered does not matter: the increment schedule moves
on to a new window every tick, and a window that failed is repaired by the gap sensor and proven by the
reconciliation, which have their own alerts.

The message carries the run's link (``{ORDERSYNC_UI_URL}/runs/{run_id}``), its partitions and the error:
the step failure's description (the sync step's ``Failure`` is already built from
``failures.describe``), else the innermost cause of the step's error, else the innermost cause of the
run failure's error (a resource that could not start), else that event's message; the alert path then
removes every known secret and masks a URL's password.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg
from dagster._core.events import JobFailureData
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from dagster_shared.error import SerializableErrorInfo

from ordersync_pipeline.alerts import Alerts
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.warehouse import Warehouse

__all__ = ["alerting_sensors", "RunScope", "run_scope", "failure_text", "RUN_FAILED_SENSOR",
           "RUN_SUCCEEDED_SENSOR"]

RUN_FAILED_SENSOR = "run_failed_alert_sensor"
RUN_SUCCEEDED_SENSOR = "run_succeeded_resolve_sensor"
# How many failed steps a message names (the link shows every one).
_MAX_STEPS = 2


@dataclass(frozen=True)
class RunScope:
    """A run's job and the shops its partitions cover (None: no shop dimension, the whole job)."""

    job: str
    first_shop: str | None = None
    last_shop: str | None = None
    partitions: str | None = None     # for people: "shop-1|2026-11-30-10:00 .. shop-2|2026-11-30-10:00"

    @property
    def key(self) -> str:
        # "|" appears in neither a job name nor a shop_id (config.ShopConfig's pattern).
        return self.job if self.first_shop is None else f"{self.job}|{self.first_shop}|{self.last_shop}"

    @property
    def shop_id(self) -> str | None:
        return self.first_shop if self.first_shop == self.last_shop else None

    def covers(self, other: RunScope) -> bool:
        """Does a success over this scope clear a failure over ``other``? Same job, and these shops
        include the other's (shops are sorted strings: the partitions' own order)."""
        if self.job != other.job:
            return False
        if self.first_shop is None or self.last_shop is None:
            return True
        if other.first_shop is None or other.last_shop is None:
            return False
        return self.first_shop <= other.first_shop and other.last_shop <= self.last_shop

    @classmethod
    def from_key(cls, key: str) -> RunScope:
        parts = key.split("|")
        return cls(job=parts[0]) if len(parts) != 3 else cls(job=parts[0], first_shop=parts[1],
                                                             last_shop=parts[2])


def run_scope(run: dg.DagsterRun) -> RunScope:
    """The scope of ``run`` from Dagster's partition tags (a range, or one partition)."""
    tags = run.tags
    first, last = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if first is None or last is None:
        first = last = tags.get(PARTITION_NAME_TAG)
    if first is None or last is None:
        return RunScope(job=run.job_name)
    partitions = first if first == last else f"{first} .. {last}"
    # Multi-partition keys read "shop|time" (dimensions by name); a key without "|" has no shop.
    if "|" not in first or "|" not in last:
        return RunScope(job=run.job_name, partitions=partitions)
    return RunScope(job=run.job_name, first_shop=first.split("|", 1)[0], last_shop=last.split("|", 1)[0],
                    partitions=partitions)


def failure_text(step_failures: Sequence[dg.DagsterEvent], run_failure: dg.DagsterEvent | None) -> str:
    """What went wrong: the failed steps (their own descriptions first), else the run failure's error
    (resources that could not start fail the run before any step), else its message."""
    texts: list[str] = []
    for event in step_failures[:_MAX_STEPS]:
        data = event.step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        if not described and data.error is not None:
            described = innermost(data.error)
        texts.append(f"{event.step_key}: {described or 'failed'}" if len(step_failures) > 1
                     else described or f"{event.step_key} failed")
    if len(step_failures) > _MAX_STEPS:
        texts.append(f"and {len(step_failures) - _MAX_STEPS} more failed step(s)")
    if texts:
        return "; ".join(texts)
    if run_failure is not None:
        failure = run_failure.event_specific_data
        if isinstance(failure, JobFailureData) and failure.error is not None:
            return innermost(failure.error)
        if run_failure.message:
            return run_failure.message
    return "the run failed before any step ran"


def innermost(error: SerializableErrorInfo) -> str:
    """The user's exception under Dagster's wrappers, as ``ClassName: message``."""
    while error.cause is not None:
        error = error.cause
    text = error.message.strip()
    # Dagster writes "package.module.ClassName: text"; the class name alone says enough.
    head, sep, rest = text.partition(": ")
    name = error.cls_name or ""
    return f"{name}: {rest}" if sep and name and head.endswith(name) else text


def failure_message(run: dg.DagsterRun, scope: RunScope, ui_url: str, error: str) -> str:
    """Link first and partitions last: messages are cut at 500 characters, and the link shows both."""
    where = f" [partitions {scope.partitions}]" if scope.partitions else ""
    return f"{run.job_name} run failed: {ui_url}/runs/{run.run_id} {error}{where}"


def alerting_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    """The run-failure sensor and its resolving twin, both running by default."""

    @dg.run_failure_sensor(
        name=RUN_FAILED_SENSOR, default_status=dg.DefaultSensorStatus.RUNNING,
        description=("Opens a run_failed alert (log, alerts table, webhook) with the run's link and error; "
                     "one open alert per job and shop range."))
    def run_failed_alert_sensor(context: dg.RunFailureSensorContext,
                                warehouse: dg.ResourceParam[Warehouse]) -> None:
        run = context.dagster_run
        scope = run_scope(run)
        error = failure_text(context.get_step_failure_events(), context.failure_event)
        opened = Alerts.from_settings(settings, warehouse).open(
            "run_failed", shop_id=scope.shop_id, key=scope.key,
            message=failure_message(run, scope, settings.ui_url, error))
        context.log.info(f"run {run.run_id} of {run.job_name} failed: "
                         f"{'alert opened' if opened else 'its alert was already open'} ({scope.key})")

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS, name=RUN_SUCCEEDED_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=("Resolves open run_failed alerts of a job once a run of it over the same shops (or "
                     "more) succeeds after the alert opened."))
    def run_succeeded_resolve_sensor(context: dg.RunStatusSensorContext,
                                     warehouse: dg.ResourceParam[Warehouse]) -> None:
        run = context.dagster_run
        record = context.instance.get_run_record_by_id(run.run_id)
        ended = record.end_time if record is not None and record.end_time is not None else None
        finished = datetime.fromtimestamp(ended, timezone.utc) if ended is not None else settings.clock()
        resolved = resolve_covered(Alerts.from_settings(settings, warehouse), run_scope(run), finished)
        if resolved:
            context.log.info(f"run {run.run_id} of {run.job_name} succeeded: resolved {', '.join(resolved)}")

    return [run_failed_alert_sensor, run_succeeded_resolve_sensor]


def resolve_covered(alerts: Alerts, success: RunScope, finished: datetime) -> list[str]:
    """Resolve every open run_failed alert that ``success`` (finished at ``finished``) clears; returns
    their keys."""
    resolved = []
    for alert in alerts.open_alerts("run_failed"):
        if alert.opened_at < finished and success.covers(RunScope.from_key(alert.key)):
            if alerts.resolve("run_failed", shop_id=alert.shop_id, key=alert.key):
                resolved.append(alert.key)
    return resolved
