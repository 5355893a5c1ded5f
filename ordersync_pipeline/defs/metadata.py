"""What the Dagster catalog shows about an asset, derived from the code so it cannot drift.

The column schema of a table asset comes from the SQLAlchemy table (warehouse/tables.py): its columns,
their types and the documentation each column carries in ``info["doc"]``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.warehouse.connect import normalize_url
from ordersync_pipeline.warehouse.tables import metadata as warehouse_metadata
from ordersync_pipeline.warehouse.types import Money, UTCDateTime

__all__ = ["asset_spec_metadata", "column_schema", "table_kinds", "check_description", "OWNERS"]

# Who answers for the data: shown in the catalog; a team name, not a person's address.
OWNERS = ["team:ordersync"]


def column_schema(table_name: str) -> dg.TableSchema:
    table = warehouse_metadata.tables[table_name]
    return dg.TableSchema(columns=[
        dg.TableColumn(name=column.name, type=_type_name(column),
                       description=str(column.info.get("doc", "")) or None,
                       constraints=dg.TableColumnConstraints(nullable=bool(column.nullable),
                                                             unique=bool(column.primary_key)))
        for column in table.columns])


def _type_name(column: sa.Column[Any]) -> str:
    """The column's type as PostgreSQL spells it (the production warehouse); money and times by meaning."""
    if isinstance(column.type, UTCDateTime):
        return "timestamp with time zone"
    if isinstance(column.type, Money):
        return "decimal(14,2)"
    compiled: str = column.type.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    return compiled.lower()


def asset_spec_metadata(table_name: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if table_name is not None:
        meta["dagster/column_schema"] = column_schema(table_name)
        meta["dagster/table_name"] = table_name
    return meta


def table_kinds(warehouse_url: str) -> set[str]:
    """Catalog kinds for the warehouse tables: the backend's name (``postgres``, ``mysql``, ``sqlite``)."""
    backend = normalize_url(warehouse_url).get_backend_name()
    return {"sql", {"postgresql": "postgres"}.get(backend, backend)}


def check_description(stream: Stream, table_asset: str) -> str:
    return (f"Warns when records of the partition failed validation and went to the quarantine table "
            f"instead of {table_asset} (one evaluation per {stream.title} partition; loading continues).")
