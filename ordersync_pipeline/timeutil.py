"""Time on the platform: TOP speaks ``yyyy-MM-dd HH:mm:ss`` in GMT+8; days and partitions are Asia/Shanghai.

Everything inside ordersync is timezone-aware. Naive datetimes are rejected at the edges rather than
guessed at, because a silently wrong offset shifts whole sync windows by eight hours.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
GMT8 = timezone(timedelta(hours=8), "GMT+8")
TOP_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def require_aware(dt: datetime, what: str = "datetime") -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {dt.isoformat()}")
    return dt


def format_top_time(dt: datetime) -> str:
    """Format an aware datetime the way TOP expects it: GMT+8, second precision."""
    return require_aware(dt).astimezone(GMT8).strftime(TOP_TIME_FORMAT)


def parse_top_time(text: str) -> datetime:
    """Parse a TOP ``yyyy-MM-dd HH:mm:ss`` (GMT+8) string into an aware datetime."""
    return datetime.strptime(text, TOP_TIME_FORMAT).replace(tzinfo=GMT8)


def parse_local_time(text: str) -> datetime:
    """An ISO date or datetime typed by a person; without an offset it means Asia/Shanghai time."""
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=SHANGHAI)


def now() -> datetime:
    return datetime.now(timezone.utc)
