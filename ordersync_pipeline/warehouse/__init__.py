"""The warehouse: SQLAlchemy tables, Alembic migrations, bulk monotonic upserts, the call ledger,
quarantine and the completed-window log. No Dagster here; resources hand out ``Warehouse`` objects."""

from ordersync_pipeline.warehouse.connect import normalize_url
from ordersync_pipeline.warehouse.ledger import CallStats, CompletedWindow
from ordersync_pipeline.warehouse.store import Warehouse
from ordersync_pipeline.warehouse.upsert import UpsertResult

__all__ = ["CallStats", "CompletedWindow", "UpsertResult", "Warehouse", "normalize_url"]
