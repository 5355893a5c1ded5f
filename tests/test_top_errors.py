"""The TOP exception tree: every sample error envelope maps to the right class, with safe context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ordersync_pipeline.top.errors import (
    BusinessError,
    GatewayURLError,
    InvalidArgumentsError,
    InvalidSessionError,
    InvalidSignatureError,
    MalformedResponseError,
    MissingSessionError,
    PlatformError,
    RateLimitedError,
    ServerError,
    SessionError,
    TopError,
    TransportError,
    classify,
)

SAMPLES = Path(__file__).parent / "data" / "top-samples"
METHOD = "taobao.trades.sold.get"

# Every error sample in top-samples/: class, retryable, and the parsed extras.
EXPECTED = {
    "error_15_isp_timeout.json": (ServerError, True),
    "error_15_trade_not_exist.json": (BusinessError, False),
    "error_25_invalid_signature.json": (InvalidSignatureError, False),
    "error_27_invalid_session.json": (InvalidSessionError, False),
    "error_40_missing_args.json": (InvalidArgumentsError, False),
    "error_7_app_api_not_launched.json": (RateLimitedError, True),
    "error_7_app_call_limited_api.json": (RateLimitedError, True),
    "error_7_app_call_limited_app_daily.json": (RateLimitedError, True),
}


def _sample(name: str) -> dict[str, object]:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))["error_response"]  # type: ignore[no-any-return]


def test_every_error_sample_is_in_the_table() -> None:
    assert sorted(p.name for p in SAMPLES.glob("error_*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classify_samples(name: str) -> None:
    raw = _sample(name)
    cls, retryable = EXPECTED[name]
    err = classify(raw, METHOD, shop_id="shop-1")
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.code == raw["code"] and err.sub_code == raw.get("sub_code")
    assert err.request_id == raw["request_id"] and err.method == METHOD
    text = str(err)
    for part in (METHOD, f"code={raw['code']}", f"sub_code={raw.get('sub_code')}", str(raw["request_id"])):
        assert part in text


@pytest.mark.parametrize(("name", "seconds", "daily"), [
    ("error_7_app_api_not_launched.json", 2, False),
    ("error_7_app_call_limited_api.json", 1, False),
    ("error_7_app_call_limited_app_daily.json", 31062, True),
])
def test_rate_limit_ban_seconds_and_daily_quota(name: str, seconds: int, daily: bool) -> None:
    err = classify(_sample(name), METHOD)
    assert isinstance(err, RateLimitedError)
    assert err.ban_seconds == seconds and err.daily_quota is daily


def test_invalid_session_names_the_shop_to_reauthorise() -> None:
    err = classify(_sample("error_27_invalid_session.json"), METHOD, shop_id="shop-7")
    assert isinstance(err, SessionError)
    assert "re-authorise this shop shop-7" in str(err)


def test_invalid_arguments_names_the_parameter() -> None:
    err = classify(_sample("error_40_missing_args.json"), METHOD)
    assert isinstance(err, InvalidArgumentsError) and err.parameter == "start_modified"
    err41 = classify({"code": 41, "msg": "Invalid arguments:cid", "request_id": "r"}, METHOD)
    assert isinstance(err41, InvalidArgumentsError) and err41.parameter == "cid"


@pytest.mark.parametrize(("raw", "cls", "retryable"), [
    ({"code": 26, "msg": "Missing session"}, MissingSessionError, False),
    ({"code": 15, "sub_code": "isp.null-pointer-exception"}, ServerError, False),
    ({"code": 15, "sub_code": "isp.top-parse-error"}, ServerError, False),
    ({"code": 15, "sub_code": "isp.top-mapping-parse-error"}, ServerError, False),
    ({"code": 15, "sub_code": "isp.unknown-error"}, ServerError, True),
    ({"code": 15, "sub_code": "isp.call-limited"}, RateLimitedError, True),
    ({"code": 15, "sub_code": "isv.invalid-parameter:tid"}, BusinessError, False),
    ({"code": 11, "sub_code": "isv.permission-api-package-empty"}, PlatformError, False),
    ({"code": 31, "msg": "Invalid timestamp"}, PlatformError, False),
    ({"code": 10, "msg": "Service Currently Unavailable"}, PlatformError, False),
    ({"code": 501, "msg": "business"}, BusinessError, False),
    ({"code": "garbage"}, PlatformError, False),
])
def test_classify_table(raw: dict[str, object], cls: type[TopError], retryable: bool) -> None:
    err = classify(raw, METHOD)
    assert type(err) is cls and err.retryable is retryable


def test_transport_and_malformed_retryability() -> None:
    assert TransportError("timeout", method=METHOD).retryable
    assert TransportError("HTTP 502", method=METHOD, status=502).retryable
    assert not TransportError("HTTP 404", method=METHOD, status=404).retryable
    assert MalformedResponseError("truncated", method=METHOD).retryable
    assert not GatewayURLError("no scheme", method=METHOD).retryable


def test_every_class_is_a_top_error_and_repr_is_short() -> None:
    err = classify(_sample("error_15_isp_timeout.json"), METHOD)
    assert isinstance(err, TopError)
    assert repr(err) == ("ServerError(method='taobao.trades.sold.get', code=15, "
                         "sub_code='isp.top-remote-connection-timeout', request_id='16kksr4el1bs0')")
