"""Reading response bodies: envelopes, simplify=true, list wrappers, big ids, malformed bodies, money."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from ordersync_pipeline.timeutil import GMT8, parse_top_time
from ordersync_pipeline.top.envelope import (
    parse_body,
    parse_money,
    response_key,
    unwrap_list,
    unwrap_nested,
    unwrap_trade,
)
from ordersync_pipeline.top.errors import BusinessError, InvalidSessionError, MalformedResponseError

SAMPLES = Path(__file__).parent / "data" / "top-samples"
SOLD = "taobao.trades.sold.get"


def _body(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.mark.parametrize(("method", "key"), [
    ("taobao.trades.sold.get", "trades_sold_get_response"),
    ("taobao.trade.fullinfo.get", "trade_fullinfo_get_response"),
    ("taobao.tmc.messages.consume", "tmc_messages_consume_response"),
    ("taobao.open.trades.sold.get", "open_trades_sold_get_response"),
])
def test_response_key(method: str, key: str) -> None:
    assert response_key(method) == key


def test_wrapped_and_simplified_bodies_give_the_same_trades() -> None:
    wrapped = parse_body(_body("trades_sold_get_success.json"), SOLD)
    simple = parse_body(_body("trades_sold_get_simplify_true.json"), SOLD, simplify=True)
    trades_w = [unwrap_trade(t) for t in unwrap_list(wrapped["trades"], "trade")]
    trades_s = [unwrap_trade(t) for t in unwrap_list(simple["trades"], "trade")]
    assert trades_w == trades_s
    assert wrapped["total_results"] == simple["total_results"] == 2
    assert [len(t["orders"]) for t in trades_w] == [1, 2]


def test_ids_above_2_pow_53_stay_exact_ints() -> None:
    data = parse_body(_body("trades_sold_get_success.json"), SOLD)
    tid = unwrap_list(data["trades"], "trade")[0]["tid"]
    assert tid == 3812094471235568392 and isinstance(tid, int) and tid > 2**53


def test_ints_beyond_64_bits_fall_back_to_stdlib_json() -> None:
    body = b'{"trades_sold_get_response":{"total_results":1,"trades":{"trade":[{"tid":123456789012345678901234}]}}}'
    assert unwrap_list(parse_body(body, SOLD)["trades"], "trade")[0]["tid"] == 123456789012345678901234


def test_other_samples_parse_and_unwrap() -> None:
    refunds = parse_body(_body("refunds_receive_get.json"), "taobao.refunds.receive.get")
    assert unwrap_list(refunds["refunds"], "refund")[0]["refund_id"] == "241871234567890001"
    msgs = parse_body(_body("tmc_messages_consume.json"), "taobao.tmc.messages.consume")
    first = unwrap_list(msgs["messages"], "tmc_message")[0]
    assert json.loads(first["content"])["tid"] == 3812094471235568392
    full = parse_body(_body("trade_fullinfo_get.json"), "taobao.trade.fullinfo.get")
    trade = unwrap_trade(full["trade"])
    assert isinstance(trade["orders"], list) and isinstance(trade["promotion_details"], list)
    assert parse_body(_body("time_get.json"), "taobao.time.get")["time"] == "2024-06-18 11:06:00"


def test_unwrap_nested_unwraps_named_lists_only_and_lenient_mode_leaves_bad_values() -> None:
    record = {"orders": {"order": {"oid": 1}}, "promotion_details": {"promotion_detail": []}}
    assert unwrap_nested(record, ("orders",)) == {
        "orders": [{"oid": 1}], "promotion_details": {"promotion_detail": []}}
    bad = {"orders": {"oops": 1}}
    with pytest.raises(ValueError, match="'order'"):
        unwrap_nested(bad, ("orders",))
    with pytest.raises(ValueError):
        unwrap_trade({"orders": {"oops": 1}})  # fullinfo answers stay strict
    assert unwrap_nested(bad, ("orders",), strict=False) == {"orders": {"oops": 1}}


def test_unwrap_list_shapes() -> None:
    assert unwrap_list(None, "trade") == []
    assert unwrap_list({}, "trade") == []
    assert unwrap_list({"trade": {"tid": 1}}, "trade") == [{"tid": 1}]
    with pytest.raises(ValueError):
        unwrap_list({"order": []}, "trade")
    with pytest.raises(ValueError):
        unwrap_list("x", "trade")


def test_error_envelopes_raise_classified_errors() -> None:
    with pytest.raises(BusinessError) as info:
        parse_body(_body("error_15_trade_not_exist.json"), "taobao.trade.fullinfo.get")
    assert info.value.sub_code == "isv.trade-not-exist"
    with pytest.raises(InvalidSessionError, match="re-authorise this shop s1"):
        parse_body(_body("error_27_invalid_session.json"), SOLD, simplify=True, shop_id="s1")


@pytest.mark.parametrize("body", [
    b"",
    b"   ",
    _body("trades_sold_get_success.json")[:200],           # truncated
    b"<html>502 Bad Gateway</html>",
    b"[]",
    b'"trades"',
    b'{"trades_sold_get_response": []}',
    b'{"trades_sold_get_response": {}, "extra": 1}',
    b'{"trade_fullinfo_get_response": {"trade": {}}}',       # the wrong API's envelope
    b'{"total_results": 2}',                                # simplify body when not asked for
    b'{"error_response": "boom"}',
])
def test_malformed_bodies_are_retryable_errors_never_empty_results(body: bytes) -> None:
    with pytest.raises(MalformedResponseError) as info:
        parse_body(body, SOLD)
    assert info.value.retryable and info.value.method == SOLD


def test_simplify_true_requires_an_object_with_fields() -> None:
    with pytest.raises(MalformedResponseError):
        parse_body(b"{}", SOLD, simplify=True)
    with pytest.raises(MalformedResponseError):
        parse_body(b'{"time_get_response": {"time": "x"}}', SOLD, simplify=True)


def test_money_and_time_helpers() -> None:
    assert parse_money("200.07") == Decimal("200.07")
    assert parse_money("0.00") == Decimal("0.00")
    assert parse_money(None) is None and parse_money("") is None
    for bad in ("abc", "NaN", True):
        with pytest.raises(ValueError):
            parse_money(bad)  # type: ignore[arg-type]
    t = parse_top_time("2024-06-18 11:05:19")
    assert t.utcoffset() == GMT8.utcoffset(None) and t.hour == 11
