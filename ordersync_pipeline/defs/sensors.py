"""Sensors: gap repair and the failure-rate breaker.

* ``gap_repair_sensor`` launches, within one tick, every closed increment window (per shop and stream)
  that ``sync_windows`` does not hold, as the fewest runs that target exactly those partitions
  (reconcile/gaps.py). It does not launch what a queued or running increment run already covers, nor
  what it launched itself and has not seen finish: its cursor remembers those run keys.
* ``failure_rate_sensor`` runs the breaker (reconcile/breaker.py) each tick: failure share per shop and
  increment API from ``api_calls``, opening (alert, paused increments), probing after the cool-down,
  closing (alert resolved); it launches the degraded full pull of an open shop every
  ``full_pull_every_minutes``. The state lives in ``breaker_state`` (it survives restarts); the cursor
  shows it in the UI.
"""


import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    RUN_KEY_TAG,
)

from ordersync_pipeline.alerts import Alerts
from ordersync_pipeline.defs.automation import INCREMENT_JOB, range_tags
from ordersync_pipeline.defs.partitions import Partitions, split_key
from ordersync_pipeline.defs.reconcile import DEGRADED_JOB
from ordersync_pipeline.defs.resources import cached_warehouse
from ordersync_pipeline.reconcile.breaker import BreakerPolicy, Breakers, TickReport, probe_api
from ordersync_pipeline.reconcile.fullpull import degraded_streams
from ordersync_pipeline.reconcile.gaps import find_gaps
from ordersync_pipeline.reconcile.records import open_breaker_shops
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.plan import shard
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.streams import STREAMS, stream
from ordersync_pipeline.timeutil import now as host_now
from ordersync_pipeline.top.gateway import Gateway
from ordersync_pipeline.top.retry import RetryPolicy
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.recorder import WarehouseCallRecorder

__all__ = ["build_sensors", "GAP_SENSOR", "BREAKER_SENSOR", "GapCursor", "STARTED_BY_GAP_REPAIR",
           "paused_shops_reader"]

GAP_SENSOR = "gap_repair_sensor"
BREAKER_SENSOR = "failure_rate_sensor"
STARTED_BY_GAP_REPAIR = "gap_repair"
# Statuses of a run that has not finished (queued, starting, running, stopping).
_UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# A run the sensor requested but the instance never showed after this long was not launched.
_LAUNCH_GRACE = timedelta(minutes=10)
# A probe call waits at most this long: a sensor tick must stay short.
_PROBE_TIMEOUT_S = 10.0


def build_sensors(settings: Settings, partitions: Partitions, *,
                  max_shops_per_run: int | None = None) -> list[dg.SensorDefinition]:
    """``max_shops_per_run``: shops per gap-repair run (``orchestration.max_shops_per_run`` when None)."""
    max_shops = max_shops_per_run or settings.config.orchestration.max_shops_per_run
    return [_gap_repair_sensor(settings, partitions, max_shops), _failure_rate_sensor(settings)]


def _warehouse(settings: Settings) -> Warehouse:
    return cached_warehouse(settings.warehouse_url, settings.config.sync.store_receiver_pii)


def paused_shops_reader(settings: Settings) -> Callable[[], set[str]]:
    """For the incremental schedule: the shops whose breaker is open now."""
    def paused() -> set[str]:
        return open_breaker_shops(_warehouse(settings))
    return paused


# ---------------------------------------------------------------------------------------------- gap repair

@dataclass
class GapCursor:
    """Runs the gap sensor requested and has not yet seen finish: run key -> (requested at, start, end)."""

    pending: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)   # what the last tick found (for people)

    @classmethod
    def parse(cls, text: str | None) -> "GapCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(pending={k: (str(v[0]), str(v[1]), str(v[2])) for k, v in data.get("pending", {}).items()},
                   last=data.get("last", {}))

    def dump(self) -> str:
        return json.dumps({"pending": {k: list(v) for k, v in self.pending.items()}, "last": self.last},
                          sort_keys=True)


def _range_cells(partitions_def: dg.MultiPartitionsDefinition, start: str, end: str) -> set[tuple[str, str]]:
    keys = partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
    return {split_key(key) for key in keys}


def _run_cells(run: dg.DagsterRun, partitions_def: dg.MultiPartitionsDefinition) -> set[tuple[str, str]]:
    tags = run.tags
    if ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
        return _range_cells(partitions_def, tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG])
    if PARTITION_NAME_TAG in tags:
        return {split_key(tags[PARTITION_NAME_TAG])}
    return set()


def _busy_cells(instance: dg.DagsterInstance, partitions_def: dg.MultiPartitionsDefinition,
                cursor: GapCursor, now: datetime) -> set[tuple[str, str]]:
    """Cells an unfinished increment run covers, or a run this sensor requested and has not seen yet."""
    busy: set[tuple[str, str]] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(job_name=INCREMENT_JOB, statuses=_UNFINISHED)):
        busy |= _run_cells(run, partitions_def)
    for run_key, (requested_at, start, end) in list(cursor.pending.items()):
        runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
        if runs:  # launched: unfinished ones were counted above; finished ones are done with
            del cursor.pending[run_key]
        elif now - datetime.fromisoformat(requested_at) > _LAUNCH_GRACE:
            del cursor.pending[run_key]
        else:
            busy |= _range_cells(partitions_def, start, end)
    return busy


def _gap_repair_sensor(settings: Settings, partitions: Partitions, max_shops: int) -> dg.SensorDefinition:
    timeline = partitions.timeline
    lookback = timedelta(days=settings.config.monitoring.gap_lookback_days)

    @dg.sensor(name=GAP_SENSOR, job_name=INCREMENT_JOB, minimum_interval_seconds=120,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=(
                   "Finds every closed increment window (per shop and stream) of the last "
                   f"{settings.config.monitoring.gap_lookback_days} days that sync_windows does not hold (the "
                   "daemon was down, a run was killed, a breaker paused the shop) and launches them within one "
                   "tick as the fewest runs covering exactly those partitions. Skips the newest window (the "
                   "schedule's), shops whose breaker is open, and partitions a queued or running run covers."))
    def gap_repair_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        now = settings.clock()
        cursor = GapCursor.parse(context.cursor)
        warehouse = _warehouse(settings)
        busy = _busy_cells(context.instance, partitions.increment, cursor, host_now())
        paused = open_breaker_shops(warehouse)
        plan = find_gaps(warehouse, timeline, streams=STREAMS, shop_ids=settings.shop_ids, now=now,
                         lookback=lookback, grace=timeline.increment_step, busy=busy, paused=paused)
        tick = now.strftime("%Y%m%dT%H%M%S")
        requests = []
        for i, rect in enumerate(shard(plan.runs, max_shops)):
            run_key = f"gap|{tick}|{i}"
            tags = range_tags(rect.shops[0], rect.shops[-1], rect.time_keys[0], rect.time_keys[-1])
            requests.append(dg.RunRequest(
                run_key=run_key, asset_selection=[dg.AssetKey(name) for name in _assets(rect.streams)],
                tags={**tags, "ordersync/started_by": STARTED_BY_GAP_REPAIR}))
            cursor.pending[run_key] = (host_now().isoformat(), tags[ASSET_PARTITION_RANGE_START_TAG],
                                       tags[ASSET_PARTITION_RANGE_END_TAG])
        cursor.last = {"at": now.isoformat(), "wanted_partitions": plan.partitions, "runs": len(requests),
                       "paused_shops": sorted(paused), "busy_partitions": len(busy)}
        if not requests:
            context.update_cursor(cursor.dump())
            return dg.SkipReason(f"no gap: every closed increment window of the last {lookback.days} days is "
                                 f"complete or being fetched (paused shops: {sorted(paused) or 'none'})")
        context.log.info(f"{plan.partitions} incomplete partition(s) x stream(s) in {len(requests)} run(s)")
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump())

    return gap_repair_sensor


def _assets(stream_names: Iterable[str]) -> list[str]:
    return [name for entry in stream_names for name in stream(entry).assets.all_names("increment")]


# ---------------------------------------------------------------------------------------------- breaker

def _prober(settings: Settings, warehouse: Warehouse) -> Callable[[str, Stream], tuple[bool, str]]:
    config = settings.config.model_copy(update={"timeout_seconds": min(settings.config.timeout_seconds,
                                                                       _PROBE_TIMEOUT_S)})
    # No retries: a probe is a sample of how the API answers, not an attempt to get through.
    gateway = Gateway(config, home=settings.home, redis_url=settings.redis_url, retry=RetryPolicy(max_attempts=1))
    calls = settings.config.monitoring.breaker.probe_calls

    def probe(shop_id: str, entry: Stream) -> tuple[bool, str]:
        with WarehouseCallRecorder(warehouse, run_id=None) as recorder, gateway.client(recorder) as client:
            return probe_api(client, entry, shop_id=shop_id, session=gateway.session(shop_id),
                             now=settings.clock(), calls=calls)

    return probe


def _breaker_cursor(report: TickReport) -> str:
    return json.dumps({f"{shop}|{api}": {
        "state": r.state, "failure_rate": round(r.failure_rate, 4), "calls": r.calls, "errors": r.errors,
        "opened_at": r.opened_at.isoformat() if r.opened_at else None,
        "next_probe_at": r.next_probe_at.isoformat() if r.next_probe_at else None}
        for (shop, api), r in sorted(report.records.items())}, sort_keys=True)


def _failure_rate_sensor(settings: Settings) -> dg.SensorDefinition:
    breaker = settings.config.monitoring.breaker
    policy = BreakerPolicy.from_settings(breaker)
    pull_streams = degraded_streams()

    @dg.sensor(name="failure_rate_sensor", job_name=DEGRADED_JOB, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=(
                   f"The failure-rate breaker (熔断降级): when more than {breaker.failure_rate:.0%} of a shop's "
                   f"calls to an increment API failed in the last {breaker.window_minutes} minutes (at least "
                   f"{breaker.min_calls} calls), it alerts, pauses the shop's incremental runs and launches a full "
                   f"pull every {breaker.full_pull_every_minutes} minutes; after {breaker.cooldown_minutes} minutes "
                   "it probes the API and closes on success, and the gap sensor repairs the skipped windows. "
                   "State: the breaker_state table and this sensor's cursor."))
    def failure_rate_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        warehouse = _warehouse(settings)
        breakers = Breakers(warehouse, policy=policy, alerts=Alerts.from_settings(settings, warehouse),
                            probe=_prober(settings, warehouse), clock=settings.clock)
        report = breakers.tick(settings.shop_ids)
        stamp = settings.clock().strftime("%Y%m%dT%H%M%S")
        requests = [dg.RunRequest(run_key=f"full_pull|{shop}|{stamp}", partition_key=shop,
                                  tags={"ordersync/started_by": "failure_rate_sensor"})
                    for shop in report.full_pulls if pull_streams]
        for shop, api in report.opened:
            context.log.warning(f"breaker opened: shop {shop} {api}")
        for shop, api in report.closed:
            context.log.info(f"breaker closed: shop {shop} {api}")
        return dg.SensorResult(run_requests=requests, cursor=_breaker_cursor(report))

    return failure_rate_sensor
