"""Shared helpers for the pipeline tests: one fixed partition layout, simulator configs, resources,
materialisation shortcuts and ground-truth comparisons.

The Dagster layer computes its partitions when ``ordersync_pipeline.defs.assets`` is imported, from
``ORDERSYNC_CONFIG`` (its ``sync`` section) and ``ORDERSYNC_HOME``. This module fixes that layout once
per test session, before anything imports the definitions: increment partitions start at ANCHOR
(yesterday's Asia/Shanghai midnight, so a whole closed day of 15-minute partitions exists) and the
historical days are the HISTORY_DAYS days before it. Tests then hand each materialisation explicit
resources (config file of their own simulator, a fresh warehouse, a lake under tmp_path).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ordersync_pipeline.config import ENV_CONFIG, ENV_HOME, load_config, write_config
from ordersync_pipeline.simulator import Simulator
from ordersync_pipeline.timeutil import SHANGHAI, parse_top_time
from ordersync_pipeline.warehouse import tables

HISTORY_DAYS = 2
ANCHOR = (datetime.now(SHANGHAI) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
LAYOUT_HOME = Path(tempfile.mkdtemp(prefix="ordersync-layout-"))
LAYOUT_CONFIG = LAYOUT_HOME / "ordersync.yaml"


def _sync_section(**extra: Any) -> dict[str, Any]:
    return {"start": ANCHOR.isoformat(), "history_days": HISTORY_DAYS, **extra}


def _import_definitions() -> Any:
    if "ordersync_pipeline.defs.assets" in sys.modules:
        loaded = sys.modules["ordersync_pipeline.defs.assets"].ANCHOR
        if loaded != ANCHOR:
            raise RuntimeError(f"ordersync_pipeline.defs was imported before tests/pipeline_support.py with "
                               f"anchor {loaded}; the pipeline tests need {ANCHOR}")
    LAYOUT_CONFIG.write_text(
        "gateway: http://127.0.0.1:9/router/rest\napp_key: layout\napp_secret: layout\n"
        "shops: [{shop_id: layout, seller_nick: layout, session: layout}]\n"
        f"sync: {{start: '{ANCHOR.isoformat()}', history_days: {HISTORY_DAYS}}}\n", encoding="utf-8")
    saved = {k: os.environ.get(k) for k in (ENV_CONFIG, ENV_HOME)}
    os.environ[ENV_CONFIG], os.environ[ENV_HOME] = str(LAYOUT_CONFIG), str(LAYOUT_HOME)
    try:
        import ordersync_pipeline.definitions as definitions
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return definitions


definitions = _import_definitions()
defs = definitions.defs

import dagster as dg  # noqa: E402  (after the layout is fixed)
from dagster._core.storage.tags import (  # noqa: E402
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ordersync_pipeline.defs import assets as A  # noqa: E402
from ordersync_pipeline.defs.resources import (  # noqa: E402
    PageLakeResource,
    TopApiResource,
    WarehouseResource,
)

INCREMENT_ASSETS = A.INCREMENT_ASSETS
HISTORICAL_ASSETS = A.HISTORICAL_ASSETS
FAST_SYNC = {"timeout_seconds": 2.0, "rate_limit_per_minute": 100_000}


# ---------------------------------------------------------------- time keys

def increment_key(at: datetime) -> str:
    """The increment time key of the 15-minute partition starting at ``at``."""
    return at.astimezone(SHANGHAI).strftime("%Y-%m-%d-%H:%M")


def increment_keys(first: datetime, count: int) -> list[str]:
    return [increment_key(first + timedelta(minutes=15 * i)) for i in range(count)]


def history_keys() -> list[str]:
    return list(A.HISTORY_DAYS.get_partition_keys())


def key_window(time_key: str) -> tuple[datetime, datetime]:
    """The 15-minute partition [start, end) of a time key (aware)."""
    tw = A.INCREMENT_TIME.time_window_for_partition_key(time_key)
    return tw.start, tw.end


def fetch_window(time_key: str) -> tuple[datetime, datetime]:
    """What the partition fetches: its window moved the overlap earlier."""
    start, end = key_window(time_key)
    return start - A.OVERLAP, end


# ---------------------------------------------------------------- simulators and configuration

def write_sim_config(sim: Simulator, path: Path, *, session: str | None = None, **top: Any) -> Path:
    """An ordersync configuration for ``sim`` (inline simulator secrets), with the session layout."""
    cfg = sim.config()
    data = cfg.model_dump()
    data.update(FAST_SYNC)
    data.update(top)
    data["sync"] = _sync_section()
    if session is not None:
        for shop in data["shops"]:
            shop["session"] = session
    write_config(type(cfg).model_validate(data), path)
    load_config(path)  # fail here, not in a run, if the file is unusable
    return path


def resources(config_path: Path, warehouse_url: str, lake_root: Path) -> dict[str, Any]:
    return {"top": TopApiResource(config_path=str(config_path)),
            "warehouse": WarehouseResource(url=warehouse_url),
            "lake": PageLakeResource(root=str(lake_root))}


def instance_with_shops(shops: Iterable[str]) -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shops", list(shops))
    return instance


def materialize(assets: Sequence[Any], *, shops: Sequence[str], time_keys: Sequence[str],
                instance: dg.DagsterInstance, resources: dict[str, Any],
                run_config: dict[str, Any] | None = None,
                raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """One run over shops x time_keys (a contiguous range: one partition or range tags)."""
    first = dg.MultiPartitionKey({"shop": shops[0], "time": time_keys[0]})
    last = dg.MultiPartitionKey({"shop": shops[-1], "time": time_keys[-1]})
    kwargs: dict[str, Any] = {}
    if first == last:
        kwargs["partition_key"] = first
    else:
        kwargs["tags"] = {ASSET_PARTITION_RANGE_START_TAG: str(first),
                          ASSET_PARTITION_RANGE_END_TAG: str(last)}
    return dg.materialize(list(assets), instance=instance, resources=resources, run_config=run_config,
                          raise_on_error=raise_on_error, **kwargs)


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The materialisation metadata of ``asset`` in ``result`` as plain values.

    A run over a partition range reports one materialisation per partition, all with the run's
    metadata; they must agree.
    """
    mats = result.asset_materializations_for_node(
        {"trades": "trade_tables", "trade_orders": "trade_tables"}.get(asset, asset))
    found = [{k: getattr(v, "value", v) for k, v in m.metadata.items()}
             for m in mats if m.asset_key == dg.AssetKey(asset)]
    assert found and all(f == found[0] for f in found), found
    return found[0]


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


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of trades and trade_orders (all columns but synced_at and fetched_at: when the row was
    written and fetched, which a re-run moves), in key order."""
    out = {}
    for table, key in (("trades", "tid"), ("trade_orders", "oid")):
        engine = sa.create_engine(url)
        try:
            cols = [c["name"] for c in sa.inspect(engine).get_columns(table)
                    if c["name"] not in ("synced_at", "fetched_at")]
        finally:
            engine.dispose()
        out[table] = query(url, f"SELECT {', '.join(cols)} FROM {table} ORDER BY {key}")
    return out


def in_windows(trades: Iterable[dict[str, Any]], windows: Iterable[tuple[datetime, datetime]],
               field: str = "modified") -> list[dict[str, Any]]:
    """Trades whose ``field`` lies in any [start, end] (TOP's end bound is inclusive)."""
    spans = [(s.astimezone(timezone.utc), e.astimezone(timezone.utc)) for s, e in windows]
    return [t for t in trades if any(s <= top_time(t[field]) <= e for s, e in spans)]


def serial_loads(monkeypatch: Any) -> None:
    """Load a run's partitions in-process. Parallel PostgreSQL loading starts spawned worker processes
    (seconds of fixed cost per run); tests that make many small runs opt out of it, the others keep
    the configured default so the parallel path stays covered."""
    if hasattr(A.SETTINGS, "load_workers"):
        monkeypatch.setattr(A.SETTINGS, "load_workers", 1)
