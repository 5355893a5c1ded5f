"""Partitions that share one fetched window in the page lake: which of the shared pages' records are a
partition's own.

A catch-up fetches several contiguous partitions of one shop and stream as one API window (far fewer
calls) and stores those pages once; each partition's manifest then names the shared data file and a
``Selection``: its own window on the records' time field. A partition's records are exactly those a
fetch of its window alone would have returned: list records whose time lies in ``[start, end]`` (TOP's
end bound is inclusive, so a record stamped on a boundary belongs to both neighbours, as when fetched
apart), and each detail answer (``page_no`` 0) that completes one of those records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ordersync_pipeline.timeutil import format_top_time
from ordersync_pipeline.top.pages import Page

__all__ = ["Selection", "SelectionCounter", "select_pages"]


@dataclass(frozen=True)
class Selection:
    """A partition's own records among shared pages: ``time_field`` within ``[start, end]``."""

    partition_key: str
    start: datetime
    end: datetime
    time_field: str              # "modified": what the list call filtered the shared window by
    record_key: str              # "tid": ties a detail answer to the list record it completes
    # Positions (in written order) of the shared pages holding any of its records, once written: a
    # reader parses only those (a day's file holds ~100 partitions; each needs a few of its pages).
    pages: tuple[int, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"partition_key": self.partition_key, "start": self.start.isoformat(),
                               "end": self.end.isoformat(), "time_field": self.time_field,
                               "record_key": self.record_key}
        if self.pages is not None:
            doc["pages"] = list(self.pages)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Selection:
        pages = doc.get("pages")
        return cls(partition_key=doc["partition_key"], start=datetime.fromisoformat(doc["start"]),
                   end=datetime.fromisoformat(doc["end"]), time_field=doc["time_field"],
                   record_key=doc["record_key"], pages=tuple(pages) if pages is not None else None)

    @property
    def bounds(self) -> tuple[str, str]:
        # TOP times are GMT+8 "yyyy-MM-dd HH:mm:ss", which sort chronologically as text.
        return format_top_time(self.start), format_top_time(self.end)


def _text(record: Any, name: str) -> str:
    return str(record.get(name) or "") if isinstance(record, dict) else ""


class _Selector:
    """Walks pages in written order for one selection (a detail page follows the list page it completes)."""

    def __init__(self, selection: Selection) -> None:
        self.selection = selection
        self.low, self.high = selection.bounds
        self._listed: set[str] = set()

    def items(self, page: Page) -> list[Any]:
        key = self.selection.record_key
        if page.page_no == 0:
            return [r for r in page.items if _text(r, key) in self._listed]
        field = self.selection.time_field
        chosen = [r for r in page.items if self.low <= _text(r, field) <= self.high]
        self._listed = {_text(r, key) for r in chosen}
        return chosen


def select_pages(pages: Iterable[Page], selection: Selection) -> Iterator[Page]:
    """The pages holding records of ``selection``, each with only those records."""
    selector = _Selector(selection)
    for page in pages:
        chosen = selector.items(page)
        if chosen:
            yield dataclasses.replace(page, items=chosen)


class SelectionCounter:
    """Each selection's pages and records among pages seen in written order: the writer's figures
    for every partition sharing the pages (the reader's ``select_pages`` yields exactly these)."""

    def __init__(self, selections: Sequence[Selection]) -> None:
        self._selectors = [_Selector(s) for s in selections]
        self.pages = {s.partition_key: 0 for s in selections}
        self.items = {s.partition_key: 0 for s in selections}
        self.positions: dict[str, list[int]] = {s.partition_key: [] for s in selections}
        self._seen = 0

    def indexed(self) -> list[Selection]:
        """The selections with the positions of their pages filled in."""
        return [dataclasses.replace(s.selection, pages=tuple(self.positions[s.selection.partition_key]))
                for s in self._selectors]

    def see(self, page: Page) -> None:
        position, self._seen = self._seen, self._seen + 1
        if page.page_no != 0 and page.items:
            times = [_text(r, self._selectors[0].selection.time_field) for r in page.items]
            low, high = min(times), max(times)
        else:
            low, high = "", "\uffff"
        for selector in self._selectors:
            if page.page_no != 0 and (selector.high < low or selector.low > high):
                selector.items(_EMPTY)  # no record of this page is its own: forget the last listing
                continue
            chosen = selector.items(page)
            if chosen:
                key = selector.selection.partition_key
                self.pages[key] += 1
                self.items[key] += len(chosen)
                self.positions[key].append(position)


_EMPTY = Page(shop_id="", method="", window_start=datetime.min, window_end=datetime.min, page_no=1,
              page_size=1, request_id=None, fetched_at=datetime.min, body=b"", items=[], total_results=0,
              has_next=False)
