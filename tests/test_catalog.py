"""What the Dagster catalog says about each asset, schedule and sensor, read from the definitions as data:
an own description in Markdown, owners, kinds, tags, a column schema derived from the SQLAlchemy tables
(every column documented, so the schema cannot drift), freshness expectations on the increment path, and a
real run's row counts (dagster/row_count) and per-partition figures."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from pipeline_support import (
    ANCHOR,
    increment_keys,
    partition_metadata,
    query,
    run,
    serial_loads,
    sim_settings,
)

from ordersync_pipeline.config import OrdersyncConfig
from ordersync_pipeline.defs import build_definitions
from ordersync_pipeline.defs.metadata import PAGE_COLUMN_DOCS, table_kinds
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.lake import PAGE_SCHEMA
from ordersync_pipeline.sync.streams import STREAMS
from ordersync_pipeline.warehouse.column_docs import COLUMN_DOCS, column_doc
from ordersync_pipeline.warehouse.tables import metadata as warehouse_metadata


def _settings(tmp_path: Path, url: str | None = None, **extra: object) -> Settings:
    config = OrdersyncConfig.model_validate({
        "gateway": "http://127.0.0.1:9/router/rest", "app_key": "k", "app_secret": "s",
        "shops": [{"shop_id": "shop-1", "seller_nick": "s", "session": "x"}],
        "sync": {"start": ANCHOR.isoformat(), "history_days": 2}, **extra})
    return Settings.for_config(config, home=tmp_path, **({"warehouse_url": url} if url else {}))


def _registry_assets() -> dict[str, tuple[str, str]]:
    """Every asset the stream registry makes: name -> (path, layer)."""
    out = {}
    for stream in STREAMS:
        for kind in ("increment", "historical"):
            out[stream.assets.pages[kind]] = (kind, "pages")  # type: ignore[index]
            for table in stream.assets.tables[kind]:  # type: ignore[index]
                out[table] = (kind, "table")
    return out


def test_every_asset_has_its_own_markdown_description_owners_kinds_and_a_schema(tmp_path: Path) -> None:
    defs = build_definitions(_settings(tmp_path))
    graph = defs.resolve_asset_graph()
    descriptions: dict[str, str] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 40, name
        assert "``" not in node.description, f"{name}: reStructuredText backticks show literally in the UI"
        descriptions[name] = node.description
        assert node.owners == ["team:ordersync"], name
        assert "taobao" in node.kinds and len(node.kinds) <= 3, (name, node.kinds)
    assert len(set(descriptions.values())) == len(descriptions), "two assets share a description"
    for name, (kind, layer) in _registry_assets().items():
        node = graph.get(dg.AssetKey(name))
        assert node.tags["ordersync/path"] == kind and node.tags["ordersync/layer"] == layer, name
        assert node.kinds == ({"taobao", "parquet"} if layer == "pages" else {"taobao", "sql", "sqlite"})
        schema = node.metadata["dagster/column_schema"]
        assert isinstance(schema, dg.TableSchema) and schema.columns, name
        assert all(column.description for column in schema.columns), name
        if layer == "pages":
            assert [c.name for c in schema.columns] == PAGE_SCHEMA.names
        else:
            table = warehouse_metadata.tables[node.metadata["dagster/table_name"]]
            assert [c.name for c in schema.columns] == [c.name for c in table.columns], name
        # Increment assets promise freshness; the history is loaded once and promises none.
        policy = node.freshness_policy
        if kind == "increment":
            assert isinstance(policy, dg.FreshnessPolicy), name
        else:
            assert policy is None, name
    trades = graph.get(dg.AssetKey("trades")).metadata["dagster/column_schema"]
    money = {c.name: c for c in trades.columns}["payment"]
    assert money.type == "decimal(14,2)" and money.description == "amount the buyer actually paid, yuan"


def test_schedules_sensors_and_jobs_explain_themselves(tmp_path: Path) -> None:
    defs = build_definitions(_settings(tmp_path))
    things = [*(defs.schedules or []), *(defs.sensors or []), *(defs.jobs or [])]
    assert {t.name for t in things} >= {"incremental_sync_schedule", "gap_repair_sensor",
                                        "failure_rate_sensor"}
    for thing in things:
        assert thing.description and len(thing.description) > 30, thing.name
        assert "``" not in thing.description, thing.name
    for check in defs.resolve_asset_graph().asset_check_keys:
        spec = defs.resolve_asset_graph().get_check_spec(check)
        assert spec.description and "``" not in spec.description, check


def test_owners_come_from_the_configuration(tmp_path: Path) -> None:
    defs = build_definitions(_settings(tmp_path, owners=["team:data", "ops@example.com"]))
    graph = defs.resolve_asset_graph()
    owners = {tuple(graph.get(k).owners) for k in graph.get_all_asset_keys()}
    assert owners == {("team:data", "ops@example.com")}
    with pytest.raises(ValueError, match="owners"):
        _settings(tmp_path, owners=["someone"])


@pytest.mark.parametrize(("url", "backend"), [("postgresql://u@h/db", "postgres"),
                                              ("mariadb://root@h/db", "mysql"),
                                              ("mysql://root@h/db", "mysql"),
                                              ("sqlite:////tmp/w.db", "sqlite")])
def test_table_assets_name_the_warehouse_backend(url: str, backend: str) -> None:
    assert table_kinds(url) == {"taobao", "sql", backend}


def test_every_warehouse_column_is_documented_and_every_doc_names_a_column() -> None:
    missing = [f"{t.name}.{c.name}" for t in warehouse_metadata.sorted_tables for c in t.columns
               if not column_doc(t.name, c)]
    assert not missing, (f"columns without a doc (add info={{'doc': ...}} to the column or an entry to "
                         f"warehouse/column_docs.py): {missing}")
    # Docs may come ahead of a table (another branch's, before its merge); for a table that exists every
    # doc must name one of its columns.
    stray = [f"{table}.{column}" for table, docs in COLUMN_DOCS.items() for column in docs
             if table in warehouse_metadata.tables and column not in warehouse_metadata.tables[table].c]
    assert not stray, f"docs for columns that do not exist: {stray}"
    assert set(PAGE_COLUMN_DOCS) == set(PAGE_SCHEMA.names)
    for docs in COLUMN_DOCS.values():
        assert all("``" not in doc for doc in docs.values())


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=5, shops=1, orders_per_day=200, history_days=3,
                                           clock="stepped")) as s:
        yield s


def test_a_run_reports_each_partitions_figures_and_the_tables_row_count(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))
    settings = serial_loads(sim_settings(sim, tmp_path, sqlite_url))
    keys = increment_keys(ANCHOR + timedelta(hours=20), 3)
    result = run(settings, "increment", shops=["shop-1"], time_keys=keys)
    assert result.success
    total = {t: query(sqlite_url, f"SELECT count(*) FROM {t}")[0][0] for t in ("trades", "trade_orders")}
    for asset, table in (("trades", "trades"), ("trade_orders", "trade_orders")):
        meta = partition_metadata(result, asset)
        assert sorted(meta) == sorted(f"shop-1|{k}" for k in keys)
        with_count = [m for m in meta.values() if "dagster/row_count" in m]
        # Counted once per run, on the partition reported last: the table's size when the run ended.
        assert len(with_count) == 1 and with_count[0]["dagster/row_count"] == total[table] > 0
        assert sum(m["dagster/partition_row_count"] for m in meta.values()) >= total[table]
        assert all(m["window_start"] < m["window_end"] for m in meta.values())
