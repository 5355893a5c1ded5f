"""Column types that behave the same on PostgreSQL, MariaDB/MySQL and SQLite.

* ``UTCDateTime``: always timezone-aware on the Python side. PostgreSQL stores TIMESTAMPTZ; MariaDB
  (DATETIME(6)) and SQLite (text) have no time zone, so the value is converted to UTC on the way in
  and tagged UTC on the way out. Naive datetimes are refused: guessing their offset would shift a
  whole sync window by eight hours.
* ``Money``: NUMERIC(14,2) <-> ``Decimal``. SQLite has no decimal type: a NUMERIC column there holds
  floating point, whose sums drift (505015.379999998), so on SQLite the value is stored as an integer
  number of fen (cents). NUMERIC affinity keeps integers as INTEGER, so SUM stays exact; Python
  users still get ``Decimal`` yuan, raw SQL must divide by 100.
* ``BigId``: BIGINT; on SQLite an autoincrementing key must be spelled INTEGER to alias the rowid.
* ``LongText``: TEXT, LONGTEXT on MariaDB (a fullinfo trade can exceed TEXT's 64 KB there).

Text the databases cannot store: PostgreSQL refuses a NUL character in text, and no backend can
encode a lone UTF-16 surrogate ("\\ud800", which JSON can carry as an escape) as UTF-8.
``unstorable_char`` finds them (the normaliser quarantines such records) and ``escape_unstorable``
writes them as JSON-style escapes (for quarantine payloads and cached JSON, which must always land).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

CENT = Decimal("0.01")
_HUNDRED = Decimal(100)

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


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


class _SqliteFen(sa.Numeric[Any]):
    """NUMERIC(14, 2) in the DDL (so the schema reads the same everywhere), integer fen as values:
    no float conversion either way (the base class would bind floats on SQLite)."""

    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


class Money(sa.types.TypeDecorator[Decimal]):
    """NUMERIC(14,2) as ``Decimal`` yuan on every backend; integer fen inside SQLite (see above)."""

    impl = sa.Numeric(14, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SqliteFen(14, 2, asdecimal=False))
        return dialect.type_descriptor(sa.Numeric(14, 2))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
        if dialect.name == "sqlite":
            # Half up, as PostgreSQL and MariaDB round a third decimal in NUMERIC(14, 2). (The
            # fastest exact form measured: ~0.2 us a value, on every money column of every row.)
            return int((amount * _HUNDRED).to_integral_value(ROUND_HALF_UP))
        return amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            # Integer fen (also from SUM over the column); a float only from an expression such as
            # AVG, which is as exact as a float can be.
            fen = Decimal(value) if isinstance(value, int) else Decimal(str(value))
            return fen.scaleb(-2).quantize(CENT, rounding=ROUND_HALF_UP)
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
        return amount.quantize(CENT)


def big_id() -> sa.types.TypeEngine[int]:
    """BIGINT everywhere; INTEGER on SQLite so an autoincrement key aliases the rowid."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def long_text() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def unstorable_char(text: str) -> str | None:
    """What in ``text`` no warehouse can store (a NUL, or a lone surrogate such as ``U+D800``), or
    None. Cheap for the common case: one C scan for NUL, and ASCII text cannot hold a surrogate."""
    if "\x00" in text:
        return "a NUL character"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")  # measured ~2x faster than a regex search over short CJK strings
    except UnicodeEncodeError as exc:
        return f"a lone UTF-16 surrogate U+{ord(text[exc.start]):04X}"
    return None


def escape_unstorable(text: str) -> str:
    """``text`` with each NUL and lone surrogate written as its JSON escape (``\\u0000``,
    ``\\ud800``): JSON text stays valid JSON that parses back to the same value; plain text stays
    readable. Text without such characters is returned as it is."""
    if unstorable_char(text) is None:
        return text
    return _UNSTORABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
