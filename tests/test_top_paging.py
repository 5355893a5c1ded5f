"""Pagers: window splitting, forward sold.get paging, reverse increment paging, call counts, drift."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordersync_pipeline.timeutil import GMT8, format_top_time, parse_top_time
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.errors import MalformedResponseError
from ordersync_pipeline.top.pages import TRADES, parse_list_body
from ordersync_pipeline.top.paging import (
    ALL_TRADE_TYPES,
    INCREMENT_GET,
    SOLD_GET,
    get_trade_fullinfo,
    iter_increment_pages,
    iter_sold_pages,
    split_window,
)
from ordersync_pipeline.top.recorder import ListRecorder
from ordersync_pipeline.top.retry import RetryPolicy
from ordersync_pipeline.top.testing import CannedGateway, replay

START = datetime(2024, 6, 18, 0, 0, tzinfo=GMT8)
END = START + timedelta(hours=1)


class FakeShop:
    """A gateway over a list of trades, with the list APIs' filters, ordering and paging."""

    def __init__(self, n: int, *, start: datetime = START, span_s: int = 3600) -> None:
        rng = random.Random(n)
        self.trades = []
        for i in range(n):
            at = start + timedelta(seconds=rng.randrange(span_s))
            tid = 3_800_000_000_000_000_000 + i
            self.trades.append({"tid": tid, "type": "fixed", "created": format_top_time(at),
                                "modified": format_top_time(at),
                                "orders": {"order": [{"oid": tid, "status": "WAIT_SELLER_SEND_GOODS"}]}})
        self.before_request: Callable[[FakeShop, dict[str, str]], None] | None = None

    def handle(self, p: dict[str, str]) -> tuple[int, bytes]:
        if self.before_request:
            self.before_request(self, p)
        field = "created" if p["method"] == SOLD_GET else "modified"
        lo = p["start_created" if field == "created" else "start_modified"]
        hi = p["end_created" if field == "created" else "end_modified"]
        hits = sorted((t for t in self.trades if lo <= t[field] <= hi), key=lambda t: (t[field], t["tid"]),
                      reverse=True)
        size, page_no = int(p["page_size"]), int(p["page_no"])
        page = hits[(page_no - 1) * size: page_no * size]
        inner: dict[str, Any] = {"request_id": f"r{page_no}"}
        if page:
            inner["trades"] = {"trade": page}
        if p.get("use_has_next") == "true":
            inner["has_next"] = page_no * size < len(hits)
        else:
            inner["total_results"] = len(hits)
        key = p["method"][len("taobao."):].replace(".", "_") + "_response"
        return 200, json.dumps({key: inner}).encode()

    def in_window(self, start: datetime, end: datetime) -> set[int]:
        lo, hi = format_top_time(start), format_top_time(end)
        return {t["tid"] for t in self.trades if lo <= t["modified"] <= hi}


def _client(url: str) -> TopClient:
    return TopClient(gateway=url, app_key="k", app_secret="s", recorder=ListRecorder(),
                     retry=RetryPolicy(max_attempts=2, base_delay_s=0.0))


def _tids(pages: Any) -> list[int]:
    return [t["tid"] for page in pages for t in page.items]


# -- split_window ---------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(start_s=st.integers(0, 10**8), length_s=st.integers(0, 3 * 86400),
       span_s=st.integers(60, 2 * 86400))
def test_split_window_is_contiguous_exact_and_bounded(start_s: int, length_s: int, span_s: int) -> None:
    start = datetime(2020, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=start_s)
    end = start + timedelta(seconds=length_s)
    pieces = split_window(start, end, timedelta(seconds=span_s))
    if length_s == 0:
        assert pieces == []
        return
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert all(timedelta(0) < e - s <= timedelta(seconds=span_s) for s, e in pieces)


def test_split_window_rejects_naive_and_empty_span() -> None:
    with pytest.raises(ValueError):
        split_window(datetime(2024, 1, 1), datetime(2024, 1, 2), timedelta(days=1))
    with pytest.raises(ValueError):
        split_window(START, END, timedelta(0))


def test_all_trade_types_are_explicit() -> None:
    assert {"fixed", "auction", "step", "auto_delivery", "ec", "cod", "fenxiao", "tmall_i18n"} <= set(ALL_TRADE_TYPES)
    assert "guarantee_trade" not in ALL_TRADE_TYPES and len(ALL_TRADE_TYPES) == len(set(ALL_TRADE_TYPES)) == 28


# -- sold.get ----------------------------------------------------------------------------------------------

def test_sold_pages_forward_with_has_next() -> None:
    shop = FakeShop(250)
    with CannedGateway(shop.handle) as gw:
        pages = list(iter_sold_pages(_client(gw.url), shop_id="s1", session="sess", start_created=START,
                                     end_created=END, fields="tid,modified,orders", page_size=100))
    assert [p.page_no for p in pages] == [1, 2, 3] and [p.has_next for p in pages] == [True, True, False]
    assert sorted(_tids(pages)) == sorted(t["tid"] for t in shop.trades)
    first = gw.requests[0]
    assert first["use_has_next"] == "true" and first["type"] == ",".join(ALL_TRADE_TYPES)
    assert first["start_created"] == "2024-06-18 00:00:00" and first["end_created"] == "2024-06-18 01:00:00"
    page = pages[0]
    assert page.method == SOLD_GET and page.shop_id == "s1" and page.window_end == END
    assert page.fetched_at.tzinfo is not None and page.total_results is None
    assert all(isinstance(t["orders"], list) for t in page.items)
    # the page lake re-reads the same trades
    assert page.items == parse_list_body(page.body, TRADES, method=SOLD_GET)[0]


# -- increment.get --------------------------------------------------------------------------------------

def test_increment_walks_last_page_first_in_about_one_call_per_page() -> None:
    shop = FakeShop(1000)
    with CannedGateway(shop.handle) as gw:
        client = _client(gw.url)
        pages = list(iter_increment_pages(client, shop_id="s1", session="sess", start_modified=START,
                                          end_modified=END, fields="tid,modified", page_size=100))
    assert len(gw.requests) == 11  # 1 to count + 10 pages: <= 11 calls per 1,000 trades
    assert [p.page_no for p in pages] == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert all(r["use_has_next"] == "false" for r in gw.requests)
    assert set(_tids(pages)) == shop.in_window(START, END) and len(_tids(pages)) == 1000
    assert pages[-1].total_results == 1000 and pages[-1].method == INCREMENT_GET


def test_increment_single_page_costs_one_call() -> None:
    shop = FakeShop(40)
    with CannedGateway(shop.handle) as gw:
        pages = list(iter_increment_pages(_client(gw.url), shop_id="s1", session="sess",
                                          start_modified=START, end_modified=END, fields="tid"))
    assert len(gw.requests) == 1 and len(pages) == 1 and len(pages[0].items) == 40


def test_increment_empty_window_yields_one_empty_page() -> None:
    shop = FakeShop(0)
    with CannedGateway(shop.handle) as gw:
        pages = list(iter_increment_pages(_client(gw.url), shop_id="s1", session="sess",
                                          start_modified=START, end_modified=END, fields="tid"))
    assert [(p.page_no, p.items, p.total_results) for p in pages] == [(1, [], 0)]


def test_increment_splits_windows_longer_than_a_day() -> None:
    shop = FakeShop(300, span_s=3 * 86400)
    end = START + timedelta(days=2, hours=12)
    with CannedGateway(shop.handle) as gw:
        pages = list(iter_increment_pages(_client(gw.url), shop_id="s1", session="sess",
                                          start_modified=START, end_modified=end, fields="tid"))
    spans = {(r["start_modified"], r["end_modified"]) for r in gw.requests}
    assert sorted(spans) == [("2024-06-18 00:00:00", "2024-06-19 00:00:00"),
                             ("2024-06-19 00:00:00", "2024-06-20 00:00:00"),
                             ("2024-06-20 00:00:00", "2024-06-20 12:00:00")]
    assert set(_tids(pages)) == shop.in_window(START, end)


def _drift(rate: float, seed: int) -> Callable[[FakeShop, dict[str, str]], None]:
    """Before each request, maybe modify a trade in the window again: it leaves the window."""
    rng = random.Random(seed)
    bumped = format_top_time(END + timedelta(hours=2))

    def bump(shop: FakeShop, params: dict[str, str]) -> None:
        inside = [t for t in shop.trades if t["modified"] < bumped]
        for _ in range(3):
            if inside and rng.random() < rate:
                rng.choice(inside)["modified"] = bumped

    return bump


def _forward_increment(client: TopClient, page_size: int) -> list[int]:
    """What a naive client does: page forward until a short page."""
    tids, page_no = [], 1
    while True:
        resp = client.call(INCREMENT_GET, {"fields": "tid", "start_modified": START, "end_modified": END,
                                           "page_no": page_no, "page_size": page_size}, session="s")
        trades = resp.data.get("trades", {}).get("trade", [])
        tids += [t["tid"] for t in trades]
        if len(trades) < page_size:
            return tids
        page_no += 1


def test_reverse_paging_under_drift_loses_nothing_and_forward_paging_does() -> None:
    reverse_shop, forward_shop = FakeShop(600), FakeShop(600)
    reverse_shop.before_request = _drift(0.8, seed=3)
    forward_shop.before_request = _drift(0.8, seed=3)
    with CannedGateway(reverse_shop.handle) as gw:
        pages = list(iter_increment_pages(_client(gw.url), shop_id="s1", session="sess",
                                          start_modified=START, end_modified=END, fields="tid",
                                          page_size=50))
    # Trades that left the window were modified after it; the next window picks them up.
    still_inside = reverse_shop.in_window(START, END)
    assert still_inside <= set(_tids(pages))
    with CannedGateway(forward_shop.handle) as gw:
        seen = set(_forward_increment(_client(gw.url), 50))
    lost = forward_shop.in_window(START, END) - seen
    assert lost, "forward paging under drift should skip trades"


def test_increment_page_without_total_is_malformed() -> None:
    body = json.dumps({"trades_sold_increment_get_response": {"has_next": False}}).encode()
    with CannedGateway(replay([(200, body)])) as gw:
        with pytest.raises(MalformedResponseError, match="total_results"):
            list(iter_increment_pages(_client(gw.url), shop_id="s1", session="x", start_modified=START,
                                      end_modified=END, fields="tid"))


def test_page_without_count_or_flag_is_malformed_not_empty() -> None:
    body = json.dumps({"trades_sold_get_response": {"request_id": "x"}}).encode()
    with CannedGateway(replay([(200, body)])) as gw:
        with pytest.raises(MalformedResponseError):
            list(iter_sold_pages(_client(gw.url), shop_id="s1", session="x", start_created=START,
                                 end_created=END, fields="tid"))


def test_page_size_is_checked() -> None:
    with pytest.raises(ValueError):
        list(iter_sold_pages(_client("http://127.0.0.1:9"), shop_id="s", session="x", start_created=START,
                             end_created=END, fields="tid", page_size=101))


def test_fullinfo_returns_the_unwrapped_trade() -> None:
    body = (Path(__file__).parent / "data" / "top-samples" / "trade_fullinfo_get.json").read_bytes()
    with CannedGateway(replay([(200, body)])) as gw:
        trade = get_trade_fullinfo(_client(gw.url), shop_id="s1", session="x", tid=3812094471235568392,
                                   fields="tid,orders")
    assert gw.requests[0]["tid"] == "3812094471235568392"
    assert trade["tid"] == 3812094471235568392 and trade["orders"][0]["oid"] == 3812094471235568392
    assert trade["promotion_details"][0]["promotion_name"] == "店铺优惠券"
    assert parse_top_time(trade["modified"]).tzinfo is not None
