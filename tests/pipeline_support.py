"""Shared helpers for the pipeline tests: settings for a simulator, runs through the real Dagster
definitions, per-partition metadata and ground-truth comparisons.

Definitions are built from a ``Settings`` object (``build_definitions``), exactly as ``ordersync sync``
and the daemon build them; nothing depends on the environment or on import order. Increment partitions
start at ANCHOR (yesterday's Asia/Shanghai midnight, so a whole closed day of 15-minute partitions
exists) and the historical days are the HISTORY_DAYS days before it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ordersync_pipeline.config import OrdersyncConfig, load_config, write_config
from ordersync_pipeline.defs import build_definitions, timeline_for
from ordersync_pipeline.defs.partitions import multi_key
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.simulator import Simulator
from ordersync_pipeline.sync.streams import stream
from ordersync_pipeline.sync.windows import Kind, Timeline
from ordersync_pipeline.timeutil import SHANGHAI, parse_top_time
from ordersync_pipeline.warehouse import tables

HISTORY_DAYS = 2
ANCHOR = (datetime.now(SHANGHAI) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
FAST_SYNC = {"timeout_seconds": 2.0, "rate_limit_per_minute": 100_000}
JOBS = {"increment": "incremental_sync_job", "historical": "historical_load_job"}


# ---------------------------------------------------------------- settings and definitions

def sim_config(sim: Simulator, *, session: str | None = None, sync: dict[str, Any] | None = None,
               **top: Any) -> OrdersyncConfig:
    """An ordersync configuration for ``sim`` (inline simulator secrets) with the test layout."""
    cfg = sim.config()
    data = cfg.model_dump()
    data.update(FAST_SYNC)
    data.update(top)
    data["sync"] = {"start": ANCHOR.isoformat(), "history_days": HISTORY_DAYS, **(sync or {})}
    if session is not None:
        for shop in data["shops"]:
            shop["session"] = session
    return OrdersyncConfig.model_validate(data)


def write_sim_config(sim: Simulator, path: Path, **kwargs: Any) -> Path:
    """``sim_config`` written to ``path`` (for the CLI tests)."""
    write_config(sim_config(sim, **kwargs), path)
    load_config(path)  # fail here, not in a run, if the file is unusable
    return path


def sim_settings(sim: Simulator, home: Path, warehouse_url: str, *, world_clock: bool = False,
                 **kwargs: Any) -> Settings:
    """Settings for ``sim``; ``world_clock``: "now" is the simulator's (stepped) clock, so a window is
    fetched only once it has closed in world time."""
    clock = sim.clock.now if world_clock else None
    return Settings.for_config(sim_config(sim, **kwargs), home=home, warehouse_url=warehouse_url,
                               lake_root=str(home / "lake"),
                               **({"clock": clock} if clock else {}))


def timeline(settings: Settings) -> Timeline:
    return timeline_for(settings)


def run(settings: Settings, kind: Kind, *, shops: Sequence[str], time_keys: Sequence[str],
        streams: Sequence[str] = ("trades",), from_lake: bool = False,
        instance: dg.DagsterInstance | None = None, defs: dg.Definitions | None = None,
        raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """One run of the path's job over shops x time_keys (each contiguous) for ``streams``."""
    defs = defs or build_definitions(settings)
    job = defs.resolve_job_def(JOBS[kind])
    selection = [dg.AssetKey(a) for name in streams for a in stream(name).assets.all_names(kind)]
    tags = {ASSET_PARTITION_RANGE_START_TAG: str(multi_key(shops[0], time_keys[0])),
            ASSET_PARTITION_RANGE_END_TAG: str(multi_key(shops[-1], time_keys[-1]))}
    run_config = {"ops": {f"{kind}_sync": {"config": {"from_lake": True}}}} if from_lake else None
    return job.execute_in_process(instance=instance or dg.DagsterInstance.ephemeral(), tags=tags,
                                  run_config=run_config, asset_selection=selection,
                                  raise_on_error=raise_on_error)


def partition_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dict[str, Any]]:
    """Each partition's materialisation metadata for ``asset``, as plain values, by partition key."""
    out: dict[str, dict[str, Any]] = {}
    for event in result.all_events:
        if not event.is_step_materialization:
            continue
        mat = event.event_specific_data.materialization  # type: ignore[union-attr]
        if mat.asset_key == dg.AssetKey(asset):
            assert mat.partition not in out, f"{asset} {mat.partition} materialised twice"
            out[str(mat.partition)] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return out


def check_evaluations(result: dg.ExecuteInProcessResult, asset: str,
                      check: str = "no_quarantined_records") -> dict[str, bool]:
    """Each partition's evaluation of ``check`` on ``asset``: passed or not."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if evaluation.asset_key == dg.AssetKey(asset) and evaluation.check_name == check:  # type: ignore[union-attr]
                out[str(evaluation.partition)] = evaluation.passed  # type: ignore[union-attr]
    return out


# ---------------------------------------------------------------- time keys

def increment_key(at: datetime) -> str:
    """The increment time key of the 15-minute partition starting at ``at``."""
    return at.astimezone(SHANGHAI).strftime("%Y-%m-%d-%H:%M")


def increment_keys(first: datetime, count: int) -> list[str]:
    return [increment_key(first + timedelta(minutes=15 * i)) for i in range(count)]


def history_keys() -> list[str]:
    return [(ANCHOR - timedelta(days=HISTORY_DAYS - i)).strftime("%Y-%m-%d") for i in range(HISTORY_DAYS)]


def key_window(time_key: str) -> tuple[datetime, datetime]:
    """The 15-minute partition [start, end) of a time key (aware)."""
    start = datetime.strptime(time_key, "%Y-%m-%d-%H:%M").replace(tzinfo=SHANGHAI)
    return start, start + timedelta(minutes=15)


def fetch_window(time_key: str) -> tuple[datetime, datetime]:
    """What the partition fetches: its window moved the 5-minute overlap earlier."""
    start, end = key_window(time_key)
    return start - timedelta(minutes=5), end


# ---------------------------------------------------------------- ground truth and warehouse reads

def top_time(text: str) -> datetime:
    return parse_top_time(text).astimezone(timezone.utc)


def truth_rows(trades: Iterable[dict[str, Any]]) -> dict[int, tuple[Any, ...]]:
    """Ground-truth trades as comparable tuples: status, modified, payment and the order lines."""
    out = {}
    for t in trades:
        lines = tuple(sorted((int(o["oid"]), o.get("status"), Decimal(o["payment"]), int(o["num"]))
                             for o in t["orders"]))
        out[int(t["tid"])] = (t["status"], top_time(t["modified"]), Decimal(t["payment"]), lines)
    return out


def warehouse_rows(url: str, shop_id: str | None = None) -> dict[int, tuple[Any, ...]]:
    """Stored trades as the same tuples as ``truth_rows`` (read through the warehouse's column types,
    as an analyst's SQLAlchemy query would)."""
    t, o = tables.trades, tables.trade_orders
    trade_q = sa.select(t.c.tid, t.c.status, t.c.modified, t.c.payment)
    line_q = sa.select(o.c.oid, o.c.tid, o.c.status, o.c.payment, o.c.num)
    if shop_id is not None:
        trade_q, line_q = trade_q.where(t.c.shop_id == shop_id), line_q.where(o.c.shop_id == shop_id)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(trade_q).all()
            lines: dict[int, list[tuple[Any, ...]]] = {}
            for oid, tid, status, payment, num in conn.execute(line_q):
                lines.setdefault(int(tid), []).append((int(oid), status, payment, int(num)))
    finally:
        engine.dispose()
    return {int(tid): (status, _utc(modified), payment, tuple(sorted(lines.get(int(tid), []))))
            for tid, status, modified, payment in stored}


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def snapshot(url: str, table_keys: Sequence[tuple[str, str]] = (("trades", "tid"), ("trade_orders", "oid")),
             ) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables (all columns but load-time stamps), in key order."""
    out = {}
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        quote = engine.dialect.identifier_preparer.quote  # refunds."desc" is an SQL keyword
        columns = {table: [quote(c["name"]) for c in inspector.get_columns(table)
                           if c["name"] not in ("synced_at", "fetched_at")]
                   for table, _ in table_keys}
    finally:
        engine.dispose()
    for table, key in table_keys:
        out[table] = query(url, f"SELECT {', '.join(columns[table])} FROM {table} ORDER BY {key}")
    return out


def in_windows(records: Iterable[dict[str, Any]], windows: Iterable[tuple[datetime, datetime]],
               field: str = "modified") -> list[dict[str, Any]]:
    """Records whose ``field`` lies in any [start, end] (TOP's end bound is inclusive)."""
    spans = [(s.astimezone(timezone.utc), e.astimezone(timezone.utc)) for s, e in windows]
    return [r for r in records if any(s <= top_time(r[field]) <= e for s, e in spans)]


def serial_loads(settings: Settings) -> Settings:
    """The same settings loading a run's partitions in-process (parallel PostgreSQL loading starts
    spawned worker processes: seconds of fixed cost per run that tests making many small runs skip)."""
    config = settings.config.model_copy(deep=True)
    config.sync.load_workers = 1
    return dataclasses.replace(settings, config=config)


# ---------------------------------------------------------------- any stream of the registry

def world_records(sim: Simulator, stream_name: str, shop_id: str) -> list[dict[str, Any]]:
    """The simulator's ground truth of a stream for one shop, now (every trade type)."""
    if stream_name == "trades":
        return sim.world.trades(shop_id)
    if stream_name == "refunds":
        return sim.world.refunds(shop_id)
    raise KeyError(f"no ground truth helper for stream {stream_name!r}: add one here")


def truth_of(stream_name: str, records: Iterable[dict[str, Any]]) -> dict[int, tuple[Any, ...]]:
    """Ground-truth records of a stream as comparable tuples keyed by the record key."""
    if stream_name == "trades":
        return truth_rows(records)
    return {int(r["refund_id"]): (int(r["tid"]), int(r["oid"]), r["status"], top_time(r["modified"]),
                                  Decimal(r["refund_fee"])) for r in records}


def stored_of(stream_name: str, url: str, shop_id: str | None = None) -> dict[int, tuple[Any, ...]]:
    """A stream's stored rows as the same tuples as ``truth_of``."""
    if stream_name == "trades":
        return warehouse_rows(url, shop_id)
    r = tables.refunds
    q = sa.select(r.c.refund_id, r.c.tid, r.c.oid, r.c.status, r.c.modified, r.c.refund_fee)
    if shop_id is not None:
        q = q.where(r.c.shop_id == shop_id)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(q).all()
    finally:
        engine.dispose()
    return {int(rid): (int(tid), int(oid), status, _utc(modified), fee)
            for rid, tid, oid, status, modified, fee in rows}


STREAM_TABLE_KEYS = {"trades": (("trades", "tid"), ("trade_orders", "oid")), "refunds": (("refunds", "refund_id"),)}
