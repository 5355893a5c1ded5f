"""Per-day questions about many days answered by one query: each row is given the number of its day by a
``CASE`` that bisects the days' start times (log2(days) comparisons a row), so a query can group by it.

A span is ``(start, end)``; the spans asked about together must follow one another without a gap
(``runs`` cuts any list of spans into such runs), so that ``[first start, last end)`` filters the rows and
the last start at or before a row's time names its span.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

__all__ = ["Span", "runs", "day_number"]

Span = tuple[datetime, datetime]


def runs(spans: Sequence[Span]) -> list[list[int]]:
    """Indexes of ``spans`` grouped into runs of adjacent spans (each starting where the one before ends),
    in time order. Overlapping spans never share a run."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    out: list[list[int]] = []
    for i in order:
        if out and spans[out[-1][-1]][1] == spans[i][0]:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def day_number(column: sa.ColumnElement[Any], starts: Sequence[datetime], first: int = 0) -> sa.ColumnElement[int]:
    """``first + i`` for the last of ``starts`` (ascending) at or before ``column``'s value; only meaningful
    for a row at or after ``starts[0]``. Numbers are rendered inline: they are ints, not input."""
    if len(starts) == 1:
        return sa.literal_column(str(int(first)), sa.Integer)
    middle = len(starts) // 2
    return sa.case((column < starts[middle], day_number(column, starts[:middle], first)),
                   else_=day_number(column, starts[middle:], first + middle))
