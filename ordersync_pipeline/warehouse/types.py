"""Column types that behave the same on PostgreSQL, MariaDB/MySQL and SQLite.

* ``UTCDateTime``: always timezone-aware on the Python side. PostgreSQL stores TIMESTAMPTZ; MariaDB
  (DATETIME(6)) and SQLite (text) have no time zone, so the value is converted to UTC on the way in
  and tagged UTC on the way out. Naive datetimes are refused: guessing their offset would shift a
  whole sync window by eight hours.
* ``Money``: NUMERIC(14,2) <-> ``Decimal``. SQLite has no decimal type, so the value is bound as text
  and read back quantized to cents (14 significant digits fit a float exactly).
* ``BigId``: BIGINT; on SQLite an autoincrementing key must be spelled INTEGER to alias the rowid.
* ``LongText``: TEXT, LONGTEXT on MariaDB (a fullinfo trade can exceed TEXT's 64 KB there).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

CENT = Decimal("0.01")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An aware datetime on every backend; stored as UTC where the database has no time zone."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.DateTime())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given for a timezone-aware column")
        if dialect.name == "postgresql":
            return value
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Money(sa.types.TypeDecorator[Decimal]):
    """NUMERIC(14,2) as ``Decimal`` on every backend."""

    impl = sa.Numeric(14, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            # asdecimal=False: we do the exact conversion ourselves (and avoid SQLAlchemy's warning).
            return dialect.type_descriptor(sa.Numeric(14, 2, asdecimal=False))
        return dialect.type_descriptor(sa.Numeric(14, 2))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
        return str(amount) if dialect.name == "sqlite" else amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
        return amount.quantize(CENT)


def big_id() -> sa.types.TypeEngine[int]:
    """BIGINT everywhere; INTEGER on SQLite so an autoincrement key aliases the rowid."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def long_text() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
