"""normalize_trades: TOP trade dicts -> typed warehouse rows, and every reason a trade is quarantined."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ordersync_pipeline.sync.normalize import (
    ORDER_COLUMNS, QUARANTINE_COLUMNS, TRADE_COLUMNS, InvalidTrade, NormalizedBatch, detail_row,
    merge_batches, normalize_trades,
)
from ordersync_pipeline.top.pages import TRADES, parse_list_body

SAMPLES = Path(__file__).parent / "data" / "top-samples"
SYNCED_AT = datetime(2026, 11, 26, 2, 30, tzinfo=timezone.utc)
FETCHED_AT = datetime(2026, 11, 26, 2, 29, 58, tzinfo=timezone.utc)
GMT8 = timezone(timedelta(hours=8))


def sample_trades(name: str) -> list[dict[str, Any]]:
    method = "taobao.trades.sold.increment.get" if "increment" in name else "taobao.trades.sold.get"
    trades, _, _ = parse_list_body((SAMPLES / name).read_bytes(), TRADES, method=method)
    return trades


def norm(trades: list[Any], **kw: Any) -> NormalizedBatch:
    return normalize_trades("shop-1", trades, fetched_at=FETCHED_AT, synced_at=SYNCED_AT, source="increment",
                            **kw)


def good_trade() -> dict[str, Any]:
    """The two-line sample trade, orders already unwrapped to a plain list (as in a Page)."""
    return copy.deepcopy(sample_trades("trades_sold_get_success.json")[1])


# --- samples ----------------------------------------------------------------------------------------

def test_sold_get_sample_rows_have_exact_columns_and_types() -> None:
    batch = norm(sample_trades("trades_sold_get_success.json"))
    assert batch.quarantine == []
    assert [r["tid"] for r in batch.trades] == [3812094471235568392, 3811877752109934217]
    assert all(tuple(r) == TRADE_COLUMNS for r in batch.trades)
    assert all(tuple(r) == ORDER_COLUMNS for r in batch.orders)
    first = batch.trades[0]
    assert first["created"] == datetime(2024, 6, 18, 2, 21, 33, tzinfo=timezone.utc)
    assert first["modified"] == datetime(2024, 6, 18, 10, 22, 6, tzinfo=GMT8)
    assert first["modified"].utcoffset() == timedelta(hours=8)
    assert first["payment"] == Decimal("89.00") and first["discount_fee"] == Decimal("10.00")
    assert first["payment"].as_tuple().exponent == -2
    assert (first["shop_id"], first["source"], first["synced_at"]) == ("shop-1", "increment", SYNCED_AT)
    assert first["receiver_city"] == "杭州市"


def test_ids_beyond_2_pow_53_stay_exact() -> None:
    batch = norm(sample_trades("trades_sold_get_success.json"))
    oids = [o["oid"] for o in batch.orders]
    assert oids == [3812094471235568392, 3811877752110934217, 3811877752111934217]
    assert all(type(o) is int and o > 2**53 for o in oids)
    assert float(oids[1]) == float(oids[1] + 1)  # a float could not have told them apart
    line = batch.orders[1]
    assert (line["tid"], line["num_iid"], line["sku_id"]) == (3811877752109934217, 712345678902,
                                                              "5012345678911")
    assert line["refund_status"] == "WAIT_SELLER_AGREE" and line["modified"] == batch.trades[1]["modified"]


def test_simplify_variant_gives_the_same_rows() -> None:
    plain = norm(sample_trades("trades_sold_get_success.json"))
    simple = norm(sample_trades("trades_sold_get_simplify_true.json"))
    assert simple.trades == plain.trades and simple.orders == plain.orders


def test_increment_sample_with_presale_step_trade_and_projected_fields() -> None:
    batch = norm(sample_trades("trades_sold_increment_get_has_next.json"))
    assert batch.quarantine == []
    step = batch.trades[1]
    assert (step["type"], step["status"], step["step_trade_status"]) == (
        "step", "WAIT_BUYER_PAY", "FRONT_PAID_FINAL_NOPAID")
    assert step["step_paid_fee"] == Decimal("50.00") and step["payment"] == Decimal("399.00")
    assert step["created"] is None and step["total_fee"] is None  # projected away, not invented
    assert len(batch.orders) == 3 and batch.orders[2]["oid"] == 3813200458817702219


def test_orders_absent_wrapped_or_plain() -> None:
    plain = good_trade()
    wrapped = good_trade()
    wrapped["orders"] = {"order": wrapped["orders"]}
    absent = good_trade()
    del absent["orders"]
    assert norm([wrapped]).orders == norm([plain]).orders and len(norm([plain]).orders) == 2
    batch = norm([absent])
    assert len(batch.trades) == 1 and batch.orders == [] and batch.quarantine == []
    empty = good_trade()
    empty["orders"] = {}
    assert norm([empty]).orders == []


def test_accepted_variants_digit_string_ids_int_money_empty_optional() -> None:
    t = good_trade()
    t["tid"] = "3811877752109934217"
    t["orders"][0]["oid"] = "3811877752110934217"
    t["post_fee"] = 5
    t["adjust_fee"] = "-3.5"
    t["pay_time"] = ""
    t["orders"][0]["sku_id"] = 5012345678911
    batch = norm([t])
    assert batch.quarantine == []
    row = batch.trades[0]
    assert row["tid"] == 3811877752109934217 and row["post_fee"] == Decimal("5.00")
    assert row["adjust_fee"] == Decimal("-3.50") and row["pay_time"] is None
    assert batch.orders[0]["oid"] == 3811877752110934217 and batch.orders[0]["sku_id"] == "5012345678911"


def test_same_tid_twice_keeps_newest_modified_whatever_the_order() -> None:
    old = good_trade()
    new = good_trade()
    new["modified"] = "2024-06-18 12:00:00"
    new["status"] = "WAIT_BUYER_CONFIRM_GOODS"
    for trades in ([old, new], [new, old]):
        batch = norm(trades)
        assert [r["status"] for r in batch.trades] == ["WAIT_BUYER_CONFIRM_GOODS"]
        assert len(batch.orders) == 2
        assert {o["modified"] for o in batch.orders} == {datetime(2024, 6, 18, 12, tzinfo=GMT8)}


# --- quarantine ---------------------------------------------------------------------------------------

def _mutate(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    t = good_trade()
    target: Any = t
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return t


class _Delete:
    def __repr__(self) -> str:
        return "<deleted>"


DELETE = _Delete()
ORDER0 = ("orders", 0)

QUARANTINE_CASES = [
    (("tid",), DELETE, "'tid' missing"),
    (("tid",), "38118777521x", "'tid' = '38118777521x' is not a positive 64-bit id"),
    (("tid",), 2**63, "'tid' = 9223372036854775808 is not a positive 64-bit id"),
    (("tid",), -5, "'tid' = -5"),
    (("tid",), 1.5, "'tid' = 1.5"),
    (("modified",), DELETE, "'modified' missing"),
    (("modified",), "2024-06-18T11:05:19", "'modified' = '2024-06-18T11:05:19' is not a TOP time"),
    (("modified",), "2024-02-30 11:05:19", "'modified' = '2024-02-30 11:05:19' is not a valid time"),
    (("created",), "yesterday", "'created' = 'yesterday' is not a TOP time"),
    (("created",), 1718677292, "'created' = 1718677292 is not a TOP time"),
    (("payment",), "abc", "'payment' = 'abc' is not money"),
    (("payment",), "1.234", "'payment' = '1.234' is not money"),
    (("payment",), "NaN", "'payment' = 'NaN' is not money"),
    (("payment",), float("nan"), "'payment' = nan is not money"),
    (("payment",), "1e3", "'payment' = '1e3' is not money"),
    (("total_fee",), "1234567890123.00", "'total_fee' = '1234567890123.00' is not money"),
    (("status",), "SHIPPED", "'status' = 'SHIPPED' is not a known trade status"),
    (("status",), DELETE, "'status' missing"),
    (("status",), "ALL_WAIT_PAY", "query-only aggregate"),
    (("buyer_nick",), ["x"], "'buyer_nick' = ['x'] is not text"),
    (("num",), -1, "'num' = -1 is not a quantity"),
    (("orders",), "none", "'orders' = 'none' is not a list of orders"),
    (ORDER0 + ("oid",), DELETE, "order[0] (oid=None): field 'oid' missing"),
    (ORDER0 + ("price",), "49.001", "order[0] (oid=3811877752110934217): field 'price' = '49.001'"),
    (ORDER0 + ("status",), "LOST", "order[0] (oid=3811877752110934217): field 'status' = 'LOST'"),
    (ORDER0, "line", "order[0] is a str, expected an object"),
    (("orders", 1, "oid"), 3811877752110934217, "lists the same oid twice"),
]


@pytest.mark.parametrize(("path", "value", "reason"), QUARANTINE_CASES,
                         ids=[f"{'.'.join(map(str, c[0]))}={c[1]!r}"[:60] for c in QUARANTINE_CASES])
def test_each_invalid_field_quarantines_the_trade_and_the_rest_continues(
        path: tuple[Any, ...], value: Any, reason: str) -> None:
    bad = _mutate(path, value)
    other = sample_trades("trades_sold_get_success.json")[0]
    batch = norm([bad, other])
    assert [r["tid"] for r in batch.trades] == [3812094471235568392]
    assert [o["tid"] for o in batch.orders] == [3812094471235568392]  # no line of the bad trade
    (q,) = batch.quarantine
    assert tuple(q) == QUARANTINE_COLUMNS
    if reason == "query-only aggregate":
        reason = "'status' = 'ALL_WAIT_PAY' is not a known trade status"
    assert reason in q["reason"]
    assert (q["shop_id"], q["source"], q["quarantined_at"]) == ("shop-1", "increment", SYNCED_AT)
    assert q["record_key"] == (None if path == ("tid",) and value is DELETE else str(bad["tid"]))
    assert orjson.loads(q["payload"]) == orjson.loads(orjson.dumps(bad))


def test_quarantine_reason_starts_with_the_tid() -> None:
    (q,) = norm([_mutate(("payment",), "x")]).quarantine
    assert q["reason"].startswith("trade 3811877752109934217: field 'payment'")


def test_non_object_trade_is_quarantined() -> None:
    batch = norm([["not", "a", "trade"], None])
    assert [q["reason"] for q in batch.quarantine] == ["trade ?: trade is a list, expected an object",
                                                     "trade ?: trade is a NoneType, expected an object"]
    assert batch.quarantine[0]["payload"] == '["not","a","trade"]' and batch.trades == []


def test_quarantine_payload_keeps_big_ints_exact_and_strips_pii() -> None:
    body = (SAMPLES / "trade_fullinfo_get.json").read_bytes()
    trade = orjson.loads(body)["trade_fullinfo_get_response"]["trade"]
    trade["status"] = "UNKNOWN"
    (q,) = norm([trade]).quarantine
    assert '"tid":3812094471235568392' in q["payload"]
    for secret in ("receiver_name", "receiver_mobile", "receiver_address", "receiver_town",
                   "receiver_zip", "oaid", "王*", "138****"):
        assert secret not in q["payload"]
    kept = orjson.loads(q["payload"])
    assert {"receiver_state", "receiver_city", "receiver_district", "receiver_country"} <= set(kept)
    assert "receiver_name" in trade  # the caller's dict is not modified
    (kept,) = norm([trade], keep_pii=True).quarantine
    assert orjson.loads(kept["payload"]) == trade


def test_payload_of_ints_beyond_64_bits_is_still_exact_json() -> None:
    t = good_trade()
    t["tid"] = 2**70
    (q,) = norm([t]).quarantine
    assert q["record_key"] == str(2**70) and f'"tid": {2**70}' in q["payload"]


def test_naive_synced_at_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="synced_at"):
        normalize_trades("shop-1", [], fetched_at=FETCHED_AT, synced_at=datetime(2026, 1, 1), source="x")


# --- never raises -----------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
FIELDS = ["tid", "status", "modified", "created", "pay_time", "payment", "total_fee", "num", "type",
          "buyer_nick", "orders", "step_paid_fee", "receiver_name"]
field_values = st.one_of(json_values, st.sampled_from(["WAIT_BUYER_PAY", "2024-06-18 10:22:06", "1.00",
                                                       "3811877752109934217", "", "-0", "0.001"]))
orders_values = st.lists(st.dictionaries(st.sampled_from(["oid", "price", "status", "num", "sku_id"]),
                                         field_values, max_size=5), max_size=3)
trade_dicts = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=10),
    st.builds(lambda base, orders: {**base, "orders": {"order": orders}},
              st.fixed_dictionaries({"tid": st.integers(1, 2**63), "status": st.just("TRADE_FINISHED"),
                                     "modified": st.just("2024-06-18 10:22:06")}), orders_values),
    json_values,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(trade_dicts, max_size=5))
def test_never_raises_every_input_lands_in_exactly_one_place(trades: list[Any]) -> None:
    batch = norm(trades)
    singles = [norm([t]) for t in trades]
    assert all(len(s.trades) + len(s.quarantine) == 1 for s in singles)
    assert len(batch.quarantine) == sum(len(s.quarantine) for s in singles)
    accepted_tids = {s.trades[0]["tid"] for s in singles if s.trades}
    assert [r["tid"] for r in batch.trades] == list(dict.fromkeys(
        s.trades[0]["tid"] for s in singles if s.trades))
    assert {r["tid"] for r in batch.trades} == accepted_tids
    for q in batch.quarantine:
        assert isinstance(q["reason"], str) and q["reason"] and isinstance(q["payload"], str)
    for o in batch.orders:
        assert o["tid"] in accepted_tids


def test_text_longer_than_its_column_is_quarantined_not_truncated() -> None:
    t = good_trade()
    t["orders"][1]["title"] = "长" * 256
    (q,) = norm([t]).quarantine
    assert "order[1] (oid=3811877752111934217): field 'title'" in q["reason"]
    assert "longer than 255 characters" in q["reason"]
    t["orders"][1]["title"] = "长" * 255
    assert norm([t]).orders[1]["title"] == "长" * 255


def test_detail_row_caches_fullinfo_without_pii() -> None:
    trade = orjson.loads((SAMPLES / "trade_fullinfo_get.json").read_bytes())[
        "trade_fullinfo_get_response"]["trade"]
    row = detail_row("shop-1", trade, fetched_at=SYNCED_AT)
    assert (row["tid"], row["shop_id"], row["fetched_at"]) == (3812094471235568392, "shop-1", SYNCED_AT)
    assert row["modified"] == datetime(2024, 6, 18, 10, 22, 6, tzinfo=GMT8)
    detail = orjson.loads(row["detail"])
    assert detail["promotion_details"] and "receiver_mobile" not in detail and "oaid" not in detail
    with pytest.raises(InvalidTrade, match="'modified' missing"):
        detail_row("shop-1", {"tid": 1}, fetched_at=SYNCED_AT)


def test_row_keys_are_the_warehouse_columns() -> None:
    from ordersync_pipeline.warehouse import tables

    assert tuple(c.name for c in tables.trades.columns) == TRADE_COLUMNS
    # refund_modified is written by the refund state rule (warehouse/refund_status.py), never by the trade.
    assert tuple(c.name for c in tables.trade_orders.columns if c.name != "refund_modified") == ORDER_COLUMNS
    assert set(QUARANTINE_COLUMNS) == {c.name for c in tables.quarantine.columns} - {"id", "run_id"}
    row = detail_row("s", {"tid": 1, "modified": "2024-06-18 10:22:06"}, fetched_at=SYNCED_AT)
    assert set(row) == {c.name for c in tables.trade_details.columns}


def test_largest_amount_the_money_column_holds_is_accepted() -> None:
    t = good_trade()
    t["payment"] = "999999999999.99"
    assert norm([t]).trades[0]["payment"] == Decimal("999999999999.99")


# --- text no warehouse can store ------------------------------------------------------------------------

UNSTORABLE_CASES = [
    (("buyer_nick",), "t**\x00", "field 'buyer_nick' contains a NUL character (cannot be stored)"),
    (ORDER0 + ("title",), "\x00", "order[0] (oid=3811877752110934217): field 'title' contains a NUL "
                                  "character (cannot be stored)"),
    (("seller_nick",), "店\ud800",
     "field 'seller_nick' contains a lone UTF-16 surrogate U+D800 (cannot be stored)"),
    (("orders", 1, "outer_sku_id"), "\udfff", "order[1] (oid=3811877752111934217): field 'outer_sku_id' "
                                               "contains a lone UTF-16 surrogate U+DFFF (cannot be stored)"),
    (("type",), "fixed\ud83d", "field 'type' contains a lone UTF-16 surrogate U+D83D (cannot be stored)"),
]


@pytest.mark.parametrize(("path", "value", "reason"), UNSTORABLE_CASES,
                         ids=[".".join(map(str, c[0])) + "=" + ascii(c[1]) for c in UNSTORABLE_CASES])
def test_text_no_warehouse_can_store_quarantines_the_trade_and_the_rest_continues(
        path: tuple[Any, ...], value: str, reason: str) -> None:
    bad = _mutate(path, value)
    other = sample_trades("trades_sold_get_success.json")[0]
    batch = norm([bad, other])
    assert [r["tid"] for r in batch.trades] == [3812094471235568392]
    assert [o["tid"] for o in batch.orders] == [3812094471235568392]
    (q,) = batch.quarantine
    assert q["reason"] == f"trade 3811877752109934217: {reason}"
    # The payload itself can be stored anywhere (no raw NUL, encodable) and parses back exactly.
    assert "\x00" not in q["payload"] and q["payload"].encode("utf-8")
    assert json.loads(q["payload"]) == bad


def test_unicode_that_can_be_stored_is_kept() -> None:
    t = good_trade()
    t["buyer_nick"] = "小明😀"  # outside the BMP: a surrogate pair in UTF-16, fine in UTF-8
    t["orders"][0]["title"] = "羊毛大衣，冬季新款（包邮）"
    batch = norm([t])
    assert batch.quarantine == []
    assert (batch.trades[0]["buyer_nick"], batch.orders[0]["title"]) == ("小明😀", "羊毛大衣，冬季新款（包邮）")


def test_record_keys_with_unstorable_text_are_escaped() -> None:
    t = good_trade()
    t["tid"] = "38\x00"
    (q,) = norm([t]).quarantine
    assert q["record_key"] == "38\\u0000" and q["reason"].startswith("trade 38\\u0000: field 'tid'")


# --- implausible modified ------------------------------------------------------------------------------

def _at(moment: datetime) -> str:
    return moment.astimezone(GMT8).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(("modified", "accepted"), [
    (SYNCED_AT + timedelta(days=1), True),  # clocks may disagree: up to a day ahead is accepted
    (SYNCED_AT + timedelta(days=1, seconds=1), False),
    (datetime(2099, 1, 1, tzinfo=GMT8), False),
    (datetime(2003, 5, 10, tzinfo=GMT8), True),  # Taobao's launch
    (datetime(2003, 5, 9, 23, 59, 59, tzinfo=GMT8), False),
    (datetime(1970, 1, 1, 8, tzinfo=GMT8), False),  # an epoch zero
], ids=["one-day-ahead", "one-day-and-a-second-ahead", "2099", "launch-day", "before-launch", "epoch"])
def test_an_implausible_modified_is_quarantined(modified: datetime, accepted: bool) -> None:
    t = good_trade()
    t["modified"] = _at(modified)
    batch = norm([t])
    assert (len(batch.trades), len(batch.quarantine)) == ((1, 0) if accepted else (0, 1))
    if not accepted:
        reason = batch.quarantine[0]["reason"]
        assert reason.startswith(
            f"trade 3811877752109934217: field 'modified' = '{_at(modified)}' is implausible: ")
        assert ("more than 24 hours after the load time (2026-11-26 10:30:00 GMT+8)" in reason
                if modified > SYNCED_AT else "before Taobao's launch (2003-05-10)" in reason)


def test_detail_rows_refuse_an_implausible_modified_too() -> None:
    with pytest.raises(InvalidTrade, match="'modified' = '2099-01-01 00:00:00' is implausible"):
        detail_row("shop-1", {"tid": 1, "modified": "2099-01-01 00:00:00"}, fetched_at=SYNCED_AT)


def test_detail_rows_with_unstorable_text_are_escaped_json() -> None:
    trade = {"tid": 1, "modified": "2024-06-18 10:22:06", "seller_memo": "备注\ud800", "title": "a\x00"}
    row = detail_row("shop-1", trade, fetched_at=SYNCED_AT)
    assert "\x00" not in row["detail"] and row["detail"].encode("utf-8")
    assert json.loads(row["detail"]) == trade


# --- versions: fetched_at, and merging pages ------------------------------------------------------------

def test_every_row_carries_its_pages_fetched_at() -> None:
    batch = norm(sample_trades("trades_sold_get_success.json"))
    assert {r["fetched_at"] for r in batch.trades + batch.orders} == {FETCHED_AT}
    with pytest.raises(ValueError, match="fetched_at"):
        normalize_trades("shop-1", [], fetched_at=datetime(2026, 1, 1), synced_at=SYNCED_AT, source="x")


def _page(trades: list[dict[str, Any]], fetched_at: datetime) -> NormalizedBatch:
    return normalize_trades("shop-1", trades, fetched_at=fetched_at, synced_at=SYNCED_AT, source="increment")


def test_merging_pages_keeps_each_trades_newest_version_with_only_its_lines() -> None:
    old = good_trade()  # two lines
    new = good_trade()
    new["modified"] = "2024-06-18 12:00:00"
    new["orders"] = new["orders"][:1]  # a line was removed
    other = sample_trades("trades_sold_get_success.json")[0]
    bad = _mutate(("payment",), "x")
    later = FETCHED_AT + timedelta(minutes=1)
    for pages in ([_page([new, other], FETCHED_AT), _page([old, bad], later)],
                  [_page([old, bad], later), _page([new, other], FETCHED_AT)]):
        merged = merge_batches(pages)
        assert sorted(r["tid"] for r in merged.trades) == [3811877752109934217, 3812094471235568392]
        newest = next(r for r in merged.trades if r["tid"] == 3811877752109934217)
        assert newest["modified"] == datetime(2024, 6, 18, 12, tzinfo=GMT8)
        assert newest["fetched_at"] == FETCHED_AT
        lines = [o for o in merged.orders if o["tid"] == 3811877752109934217]
        assert [o["oid"] for o in lines] == [3811877752110934217]
        assert len(merged.quarantine) == 1


def test_merging_pages_on_equal_modified_keeps_the_later_fetch() -> None:
    first = good_trade()
    second = good_trade()
    second["status"] = "WAIT_BUYER_CONFIRM_GOODS"
    second["orders"] = second["orders"][1:]
    later = FETCHED_AT + timedelta(seconds=30)
    for pages in ([_page([first], FETCHED_AT), _page([second], later)],
                  [_page([second], later), _page([first], FETCHED_AT)]):
        merged = merge_batches(pages)
        assert [(r["status"], r["fetched_at"]) for r in merged.trades] == [
            ("WAIT_BUYER_CONFIRM_GOODS", later)]
        assert [o["oid"] for o in merged.orders] == [3811877752111934217]
