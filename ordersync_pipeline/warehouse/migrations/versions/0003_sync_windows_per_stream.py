"""Completed windows per stream: ``sync_windows`` says which stream (trades, refunds, ...) and which path.

Before this revision the table knew one stream, trades, and its ``stream`` column held the path
(``increment`` / ``historical``). Now ``stream`` names the registry's stream and the new ``kind`` the
path; existing rows become ``stream = 'trades'`` with their old value as ``kind``. ``trades`` (records
read) is renamed ``records``, since a refunds window reads refunds. The primary key gains ``kind``.

Written by hand as a snapshot (later edits to tables.py need a new revision, never an edit here).

Revision ID: 0003_sync_windows_per_stream
Revises: 0002_fetched_at_and_sqlite_fen
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ordersync_pipeline.warehouse.types import UTCDateTime

MYSQL_TABLE_ARGS: dict[str, str] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

revision = "0003_sync_windows_per_stream"
down_revision = "0002_fetched_at_and_sqlite_fen"
branch_labels = None
depends_on = None


def _table(name: str, *, stream_width: int, with_kind: bool, count: str) -> sa.Table:
    columns = [sa.Column("shop_id", sa.String(64), primary_key=True),
               sa.Column("stream", sa.String(stream_width), primary_key=True)]
    if with_kind:
        columns.append(sa.Column("kind", sa.String(16), primary_key=True))
    columns += [sa.Column("window_start", UTCDateTime, primary_key=True),
                sa.Column("window_end", UTCDateTime, primary_key=True),
                sa.Column("partition_key", sa.String(64)),
                sa.Column("pages", sa.Integer, nullable=False),
                sa.Column(count, sa.Integer, nullable=False),
                sa.Column("completed_at", UTCDateTime, nullable=False),
                sa.Column("run_id", sa.String(64))]
    table: sa.Table = sa.Table(name, sa.MetaData(), *columns, **MYSQL_TABLE_ARGS)  # type: ignore[call-overload]
    return table


def _swap(new: sa.Table, copy_sql: str) -> None:
    # A new table, the rows copied, the old one dropped and the new renamed: the same steps on
    # PostgreSQL, MariaDB and SQLite (whose primary keys cannot be altered in place), and the table
    # holds one small row per window.
    new.create(op.get_bind())
    op.execute(copy_sql)
    op.drop_table("sync_windows")
    op.rename_table(new.name, "sync_windows")


def upgrade() -> None:
    _swap(_table("sync_windows_0003", stream_width=32, with_kind=True, count="records"),
          "INSERT INTO sync_windows_0003 (shop_id, stream, kind, window_start, window_end, partition_key, "
          "pages, records, completed_at, run_id) SELECT shop_id, 'trades', stream, window_start, "
          "window_end, partition_key, pages, trades, completed_at, run_id FROM sync_windows")


def downgrade() -> None:
    _swap(_table("sync_windows_0002", stream_width=16, with_kind=False, count="trades"),
          "INSERT INTO sync_windows_0002 (shop_id, stream, window_start, window_end, partition_key, "
          "pages, trades, completed_at, run_id) SELECT shop_id, kind, window_start, window_end, "
          "partition_key, pages, records, completed_at, run_id FROM sync_windows WHERE stream = 'trades'")
