"""What the Dagster catalog shows about an asset, derived from the code so it cannot drift.

The column schema of a table asset comes from the SQLAlchemy table (warehouse/tables.py) and the doc of
each column (warehouse/column_docs.py); the schema of a raw pages asset from the page lake's Parquet schema
(sync/lake.py). Kinds, tags, owners and freshness expectations are made here for every asset the stream
registry yields, so a new stream gets them without a line of its own.

Descriptions are Markdown in the UI: single backticks only (reStructuredText's double backticks show
literally), which tests/test_catalog.py checks.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.lake import PAGE_SCHEMA
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.windows import Kind, Timeline
from ordersync_pipeline.warehouse.column_docs import column_doc
from ordersync_pipeline.warehouse.connect import normalize_url
from ordersync_pipeline.warehouse.tables import metadata as warehouse_metadata
from ordersync_pipeline.warehouse.types import Money, UTCDateTime

__all__ = ["asset_spec_metadata", "column_schema", "page_schema", "table_kinds", "check_description",
           "freshness_policy", "asset_tags", "user_facing", "PAGE_COLUMN_DOCS", "PAGE_KINDS"]

PAGE_KINDS = {"taobao", "parquet"}

# The page lake's columns (sync/lake.py PAGE_SCHEMA), one line each.
PAGE_COLUMN_DOCS = {
    "shop_id": "ordersync's name for the shop",
    "method": "the TOP API called, e.g. taobao.trades.sold.increment.get",
    "window_start": "start of the window fetched (inclusive)",
    "window_end": "end of the window fetched (exclusive)",
    "page_no": "page number (0 for a detail API's one-record answer)",
    "page_size": "page size asked for",
    "request_id": "the platform's request id",
    "fetched_at": "when the platform returned the page",
    "total_results": "the platform's total for the window, when it gives one",
    "has_next": "the platform's has_next flag, when it gives one",
    "body": "the response body exactly as received (JSON bytes)",
}


def column_schema(table_name: str) -> dg.TableSchema:
    table = warehouse_metadata.tables[table_name]
    return dg.TableSchema(columns=[
        dg.TableColumn(name=column.name, type=_type_name(column), description=column_doc(table_name, column),
                       constraints=dg.TableColumnConstraints(nullable=bool(column.nullable),
                                                             unique=bool(column.primary_key)))
        for column in table.columns])


def page_schema() -> dg.TableSchema:
    """The columns of every raw pages asset's Parquet files."""
    return dg.TableSchema(columns=[
        dg.TableColumn(name=field.name, type=_arrow_type_name(field.type),
                       description=PAGE_COLUMN_DOCS.get(field.name),
                       constraints=dg.TableColumnConstraints(nullable=field.nullable))
        for field in PAGE_SCHEMA])


def _arrow_type_name(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "timestamp with time zone"
    return str(arrow_type)


def _type_name(column: sa.Column[Any]) -> str:
    """The column's type as PostgreSQL spells it (the production warehouse); money and times by meaning."""
    if isinstance(column.type, UTCDateTime):
        return "timestamp with time zone"
    if isinstance(column.type, Money):
        return "decimal(14,2)"
    compiled: str = column.type.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    return compiled.lower()


def asset_spec_metadata(tables: str | Sequence[str] | None = None, *, pages: bool = False) -> dict[str, Any]:
    """Static catalog metadata: a table asset's column schema and table name (an asset for several
    tables shows its main table's as the schema and each other's as ``<table> columns``), or the page
    lake's schema for a pages asset."""
    tables = [tables] if isinstance(tables, str) else list(tables or ())
    meta: dict[str, Any] = {}
    if tables:
        meta["dagster/column_schema"] = column_schema(tables[0])
        meta["dagster/table_name"] = tables[0]
        for other in tables[1:]:
            meta[f"{other} columns"] = column_schema(other)
    elif pages:
        meta["dagster/column_schema"] = page_schema()
    return meta


def table_kinds(warehouse_url: str) -> set[str]:
    """Catalog kinds of an asset held in warehouse tables: ``taobao``, ``sql`` and the backend's name
    (``postgres``, ``mysql``, ``sqlite``). Dagster shows at most three kinds."""
    backend = normalize_url(warehouse_url).get_backend_name()
    return {"taobao", "sql", {"postgresql": "postgres"}.get(backend, backend)}


def asset_tags(stream: Stream, kind: Kind, layer: str) -> dict[str, str]:
    """Filterable tags: the stream, the path (increment / historical) and the layer (pages / table)."""
    return {"ordersync/stream": stream.name, "ordersync/path": kind, "ordersync/layer": layer}


def freshness_policy(timeline: Timeline) -> dg.FreshnessPolicy:
    """What "fresh" means for an increment asset: the schedule materialises it every partition length,
    a safety lag after each window closes. Warn after two missed ticks, fail after four (an open breaker
    pauses increments, so that shows here too). Evaluated when dagster.yaml has ``freshness: enabled``."""
    tick = timedelta(minutes=timeline.increment_minutes)
    return dg.FreshnessPolicy.time_window(fail_window=4 * tick + timeline.safety_lag,
                                          warn_window=2 * tick + timeline.safety_lag)


def check_description(stream: Stream, table_asset: str) -> str:
    return (f"Warns when records of the partition failed validation and went to the quarantine table "
            f"instead of {table_asset} (one evaluation per {stream.title} partition; loading continues).")


def user_facing(build: Callable[[Settings], dg.Definitions]) -> Callable[[Settings], dg.Definitions]:
    """``build`` as operators should meet it, whichever module made each asset: every asset without owners
    gets the configured ones (``owners:``), and Dagster's beta note on ``@asset(backfill_policy=...)``,
    printed once per asset by every process that loads the definitions (the UI's code server, each run),
    is not shown: single-run backfills are this project's deliberate choice, not something to act on."""

    @functools.wraps(build)
    def wrapper(settings: Settings) -> dg.Definitions:
        owners = list(settings.config.owners)

        def own(spec: dg.AssetSpec) -> dg.AssetSpec:
            return spec if spec.owners else spec.replace_attributes(owners=owners)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Parameter `backfill_policy` .* is currently in beta",
                                    category=dg.BetaWarning)
            # Dagster marks Definitions.map_asset_specs as a preview: a note for its developers.
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return build(settings).map_asset_specs(func=own)

    return wrapper
