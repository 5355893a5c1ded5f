"""The ``trade_details`` cache: ``taobao.trade.fullinfo.get`` for trades a later step needs more about.

The list call describes every column of ``trades`` and ``trade_orders``; a trade whose list record is
incomplete is completed at fetch time (its fullinfo answer is kept in the lake beside the list pages, see
the trades entry in sync/streams.py). This cache is for what the tables do not hold: presale payment
details (``presale``) and buyer messages (``buyer_message``), opted into with ``sync.detail_reasons``.
Each costs one call per changed trade; the cache is keyed by (tid, modified) so a trade is fetched again
only after it changed, and a fullinfo answer already in the lake costs no call at all. A trade fullinfo
refuses for itself (``isv.trade-not-exist``: deleted since it was listed) is quarantined and the rest
of the partition cached (sync/refusals.py), instead of failing the partition on every re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ordersync_pipeline.sync.fields import payload_json
from ordersync_pipeline.sync.normalize import detail_row
from ordersync_pipeline.sync.refusals import Refusal, is_record_refusal, refusal_of
from ordersync_pipeline.timeutil import format_top_time
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.top.errors import TopError
from ordersync_pipeline.top.pages import Page
from ordersync_pipeline.top.paging import FULLINFO_GET, get_trade_fullinfo
from ordersync_pipeline.warehouse import Warehouse

if TYPE_CHECKING:
    # Annotations only: loader processes import this module (DetailCandidates) and never call the API.
    from ordersync_pipeline.top.client import TopClient

__all__ = ["DetailReason", "DETAIL_FIELDS", "DetailsResult", "needs_details", "detail_candidates",
           "DetailCandidates", "refresh_details"]

DetailReason = Literal["incomplete", "presale", "buyer_message"]

DETAIL_FIELDS = ",".join([
    "tid", "status", "type", "created", "modified", "pay_time", "consign_time", "end_time", "payment",
    "total_fee", "post_fee", "discount_fee", "adjust_fee", "step_trade_status", "step_paid_fee",
    "buyer_open_uid", "buyer_nick", "seller_nick", "receiver_state", "receiver_city", "receiver_district",
    "num", "has_buyer_message", "orders", "buyer_message", "seller_memo", "step_pay_details",
    "promotion_details",
])


@dataclass(frozen=True)
class DetailsResult:
    shop_id: str
    candidates: int
    fetched: int
    cached: int
    refused: int = 0                  # fullinfo refused for the trade itself: quarantined, not cached


def needs_details(trade: Mapping[str, Any], reasons: frozenset[DetailReason]) -> bool:
    """True when one of ``reasons`` applies to the trade (``incomplete``: no usable order lines)."""
    orders = trade.get("orders")
    if "incomplete" in reasons and (not isinstance(orders, list) or not orders
                                    or any(not isinstance(o, dict) or "oid" not in o for o in orders)):
        return True
    if "presale" in reasons and trade.get("type") == "step":
        return True
    return "buyer_message" in reasons and bool(trade.get("has_buyer_message"))


def detail_candidates(pages: Iterable[Page], reasons: frozenset[DetailReason],
                      ) -> tuple[dict[int, Any], dict[int, Mapping[str, Any]]]:
    """Newest ``modified`` per tid for the trades of ``pages`` that need a fullinfo answer, and the
    fullinfo answers already among the pages (fetched when the list record was incomplete)."""
    candidates = DetailCandidates(reasons)
    for page in pages:
        candidates.see(page)
    return candidates.result()


class DetailCandidates:
    """``detail_candidates`` a page at a time: the sync's load feeds it the pages it reads anyway
    (``SyncRunner(watches=...)``), so the trade_details follower does not read the partition from the
    lake a second time. Picklable, for loader processes."""

    def __init__(self, reasons: frozenset[DetailReason]) -> None:
        self.reasons = reasons
        self._wanted: dict[int, Any] = {}
        self._answered: dict[int, Mapping[str, Any]] = {}
        self._refused: dict[int, Any] = {}

    def see(self, page: Page) -> None:
        for trade in page.items:
            if not isinstance(trade, dict):
                continue
            tid = trade.get("tid")
            if not isinstance(tid, int):
                continue
            if refusal_of(trade) is not None:
                # fullinfo refused this version at fetch time and the load quarantined it: asking
                # again would only be refused again.
                self._refused[tid] = trade.get("modified")
                continue
            if page.method == FULLINFO_GET:
                self._answered[tid] = trade
            if needs_details(trade, self.reasons):
                modified = trade.get("modified")
                if tid not in self._wanted or str(modified) > str(self._wanted[tid]):
                    self._wanted[tid] = modified

    def result(self) -> tuple[dict[int, Any], dict[int, Mapping[str, Any]]]:
        """(wanted, answered) over the pages seen so far, as ``detail_candidates`` returns them."""
        wanted = dict(self._wanted)
        for tid, modified in self._refused.items():
            if tid in wanted and str(wanted[tid]) == str(modified) and tid not in self._answered:
                del wanted[tid]
        return wanted, dict(self._answered)


def refresh_details(*, client: TopClient | None, warehouse: Warehouse, shop_id: str, session: str | None,
                    candidates: dict[int, Any], answered: Mapping[int, Mapping[str, Any]] | None = None,
                    synced_at: datetime | None = None,
                    fetch: Callable[..., dict[str, Any]] = get_trade_fullinfo) -> DetailsResult:
    """Cache fullinfo for candidates not yet cached at the same ``modified``: from ``answered`` when the
    lake already holds the answer, else with one call each."""
    answered = answered or {}
    cached = warehouse.cached_detail_modified(list(candidates))
    todo = [tid for tid, modified in candidates.items()
            if _as_top_text(cached.get(tid)) != _as_top_text(modified)]
    rows = []
    refusals: list[dict[str, Any]] = []
    fetched = 0
    at = synced_at or utc_now()
    for tid in todo:
        trade = answered.get(tid)
        if trade is None or _as_top_text(trade.get("modified")) != _as_top_text(candidates[tid]):
            if client is None or session is None:
                raise RuntimeError(f"trade {tid} needs a fullinfo call but no client was given")
            fetched += 1
            try:
                trade = fetch(client, shop_id=shop_id, session=session, tid=tid, fields=DETAIL_FIELDS)
            except TopError as exc:
                # Refused for this trade alone (deleted since it was listed): quarantined, and the
                # other trades of the partition still cached. Anything else fails the partition.
                if not is_record_refusal(exc, key_param="tid"):
                    raise
                refusals.append({"quarantined_at": at, "source": "trade_details", "shop_id": shop_id,
                                 "record_key": str(tid), "reason": Refusal.of(exc).reason("trade", str(tid)),
                                 "payload": payload_json({"tid": tid, "modified": _as_top_text(candidates[tid])})})
                continue
        rows.append(detail_row(shop_id, trade, fetched_at=at, keep_pii=warehouse.store_receiver_pii))
    if rows:
        warehouse.upsert_trade_details(rows)
    if refusals:
        warehouse.add_quarantine(refusals)
    return DetailsResult(shop_id=shop_id, candidates=len(candidates), fetched=fetched,
                         cached=len(candidates) - len(todo), refused=len(refusals))


def _as_top_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_top_time(value)
    return str(value)
