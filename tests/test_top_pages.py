"""The general page type and its one parser: list shapes, wrapped and simplify=true bodies, malformed
answers, records kept for quarantine, and the reverse pager walking refunds through a shape."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.timeutil import format_top_time
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.errors import BusinessError, MalformedResponseError
from ordersync_pipeline.top.pages import REFUNDS, TRADES, ListShape, list_from_response, parse_list_body
from ordersync_pipeline.top.paging import REFUNDS_RECEIVE, REFUNDS_RECEIVE_GET, iter_increment_pages
from ordersync_pipeline.top.recorder import ListRecorder
from ordersync_pipeline.top.retry import RetryPolicy

SAMPLES = Path(__file__).parent / "data" / "top-samples"
SOLD = "taobao.trades.sold.get"


def _sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_wrapped_and_simplify_bodies_parse_to_the_same_content() -> None:
    wrapped = parse_list_body(_sample("trades_sold_get_success.json"), TRADES, method=SOLD)
    simple = parse_list_body(_sample("trades_sold_get_simplify_true.json"), TRADES, method=SOLD)
    assert wrapped == simple
    items, total, has_next = wrapped
    assert total == 2 and has_next is None
    assert [len(t["orders"]) for t in items] == [1, 2]  # orders unwrapped to plain lists


def test_refund_shape_reads_the_refunds_sample() -> None:
    items, total, _ = parse_list_body(_sample("refunds_receive_get.json"), REFUNDS, method=REFUNDS_RECEIVE_GET)
    assert total == 1 and items[0]["refund_id"] == "241871234567890001"
    assert items[0]["tid"] == 3811877752109934217  # exact beyond 2**53


def test_error_envelopes_and_non_json_bodies_raise_what_the_client_raises() -> None:
    with pytest.raises(BusinessError):
        parse_list_body(_sample("error_15_trade_not_exist.json"), TRADES, method=SOLD)
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        parse_list_body(b"<html>", TRADES, method=SOLD)
    with pytest.raises(MalformedResponseError, match="expected trades_sold_get_response"):
        parse_list_body(_sample("refunds_receive_get.json"), TRADES, method=SOLD)


def test_an_absent_list_is_an_empty_page_but_no_count_and_no_flag_is_malformed() -> None:
    empty = b'{"trades_sold_get_response":{"total_results":0,"request_id":"x"}}'
    assert parse_list_body(empty, TRADES, method=SOLD) == ([], 0, None)
    with pytest.raises(MalformedResponseError, match="neither total_results nor has_next") as info:
        parse_list_body(b'{"trades_sold_get_response":{"request_id":"x"}}', TRADES, method=SOLD,
                        shop_id="shop-1")
    assert info.value.retryable and info.value.request_id == "x" and info.value.shop_id == "shop-1"
    with pytest.raises(MalformedResponseError, match="trades: expected a list"):
        list_from_response({"has_next": False, "trades": "garbage"}, TRADES, method=SOLD)


def test_a_bad_record_is_kept_for_quarantine_not_dropped_and_not_fatal() -> None:
    data = {"total_results": 3, "trades": {"trade": [
        ["not", "a", "trade"], {"tid": 1, "orders": {"oops": 1}}, {"tid": 2, "orders": {"order": {"oid": 5}}}]}}
    items, total, _ = list_from_response(json.loads(json.dumps(data)), TRADES, method=SOLD)
    assert items == [["not", "a", "trade"], {"tid": 1, "orders": {"oops": 1}},
                     {"tid": 2, "orders": [{"oid": 5}]}]
    assert total == 3


def test_a_shape_names_only_nested_lists_the_envelope_can_unwrap() -> None:
    assert ListShape("items", "item", nested=("skus",)).nested == ("skus",)
    with pytest.raises(ValueError, match="add them to top.envelope.LIST_WRAPPERS"):
        ListShape("items", "item", nested=("props",))


# -- one reverse pager, refunds through their shape ------------------------------------------------

@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=13, shops=1, orders_per_day=600, history_days=3,
                                           clock="stepped")) as s:
        yield s


def test_refunds_are_reverse_paged_through_the_same_pager(sim: Simulator) -> None:
    shop = sim.shops[0]
    client = TopClient(gateway=sim.gateway_url, app_key=sim.app_key, app_secret=sim.app_secret,
                       sign_method="hmac-sha256", recorder=ListRecorder(), rng=random.Random(3),
                       retry=RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05))
    end = sim.clock.now() - timedelta(minutes=5)
    start = end - timedelta(hours=30)
    fields = "refund_id,tid,oid,status,modified"
    try:
        pages = list(iter_increment_pages(client, shop_id=shop.shop_id, session=shop.session,
                                          start_modified=start, end_modified=end, fields=fields,
                                          page_size=10, api=REFUNDS_RECEIVE))
    finally:
        client.close()
    lo, hi = format_top_time(start), format_top_time(end)
    truth = {r["refund_id"] for r in sim.world.refunds(shop.shop_id) if lo <= r["modified"] <= hi}
    got: list[Any] = [r["refund_id"] for p in pages for r in p.items]
    assert len(truth) > 20 and set(got) == truth and len(got) == len(truth)
    assert {p.method for p in pages} == {REFUNDS_RECEIVE_GET}
    first_span = [p.page_no for p in pages if p.window_start == start]
    assert len(first_span) > 2 and first_span == list(range(first_span[0], 0, -1))  # last page first
    assert all(p.items == parse_list_body(p.body, REFUNDS, method=p.method)[0] for p in pages)
