"""TopClient over real loopback HTTP: the signed form, retries, bans, the call ledger, secrecy."""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from ordersync_pipeline.timeutil import GMT8, parse_top_time
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.errors import (
    BusinessError,
    GatewayURLError,
    InvalidSessionError,
    MalformedResponseError,
    RateLimitedError,
    TopError,
    TransportError,
)
from ordersync_pipeline.top.ratelimit import Limits, LocalRateBudget
from ordersync_pipeline.top.recorder import ListRecorder
from ordersync_pipeline.top.request import build_request, encode_value
from ordersync_pipeline.top.retry import RetryPolicy
from ordersync_pipeline.top.signing import verify
from ordersync_pipeline.top.testing import CannedGateway, replay

SAMPLES = Path(__file__).parent / "data" / "top-samples"
SECRET = "app-secret-9f8e7d"
SESSION = "seller-session-6a5b4c"
SOLD = "taobao.trades.sold.get"


def sample(name: str) -> tuple[int, bytes]:
    return 200, (SAMPLES / name).read_bytes()


class Sleeper:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_client(url: str, **kw: Any) -> TopClient:
    defaults: dict[str, Any] = dict(gateway=url, app_key="app-1", app_secret=SECRET,
                                    sign_method="hmac-sha256", timeout=5.0, recorder=ListRecorder(),
                                    sleep=Sleeper(), rng=random.Random(1),
                                    retry=RetryPolicy(max_attempts=4, base_delay_s=0.1))
    defaults.update(kw)
    return TopClient(**defaults)


def test_request_encoding_rules() -> None:
    assert encode_value(True) == "true" and encode_value(False) == "false"
    assert encode_value(datetime(2024, 6, 18, 2, 0, tzinfo=timezone.utc)) == "2024-06-18 10:00:00"
    assert encode_value(["fixed", "step"]) == "fixed,step"
    assert encode_value(None) is None and encode_value("") is None and encode_value([]) is None
    with pytest.raises(ValueError, match="naive"):
        encode_value(datetime(2024, 6, 18))
    form = build_request(method=SOLD, params={"fields": "tid", "buyer_nick": None, "use_has_next": True},
                         app_key="k", secret="s", sign_method="md5",
                         timestamp=parse_top_time("2024-06-18 10:00:00"), session="sess")
    assert form["timestamp"] == "2024-06-18 10:00:00" and form["v"] == "2.0" and form["format"] == "json"
    assert "buyer_nick" not in form and "simplify" not in form and "partner_id" not in form
    assert verify(form, "s")
    with pytest.raises(ValueError, match="system parameters"):
        build_request(method=SOLD, params={"session": "x"}, app_key="k", secret="s", sign_method="md5",
                      timestamp=parse_top_time("2024-06-18 10:00:00"))


def test_successful_call_sends_a_signed_form_and_records_it() -> None:
    with CannedGateway(replay([sample("trades_sold_get_success.json")])) as gw:
        client = make_client(gw.url, partner_id="ordersync-test", simplify=False)
        resp = client.call(SOLD, {"fields": "tid,orders", "page_no": 1, "use_has_next": False},
                           session=SESSION, shop_id="shop-1")
    sent = gw.requests[0]
    assert verify(sent, SECRET) and sent["sign_method"] == "hmac-sha256"
    assert sent["method"] == SOLD and sent["app_key"] == "app-1" and sent["session"] == SESSION
    assert sent["use_has_next"] == "false" and sent["partner_id"] == "ordersync-test"
    skew = abs((parse_top_time(sent["timestamp"]) - datetime.now(GMT8)).total_seconds())
    assert skew < 5
    assert resp.data["total_results"] == 2 and resp.request_id == "16kq3xw7zbn4h"
    assert resp.body == sample("trades_sold_get_success.json")[1] and resp.latency_s > 0
    [rec] = client.recorder.calls  # type: ignore[attr-defined]
    assert (rec.method, rec.shop_id, rec.outcome, rec.attempt, rec.request_id, rec.error_kind) == (
        SOLD, "shop-1", "ok", 1, "16kq3xw7zbn4h", None)
    assert rec.started_at.tzinfo is not None


def test_simplify_client_reads_root_objects() -> None:
    with CannedGateway(replay([sample("trades_sold_get_simplify_true.json")])) as gw:
        resp = make_client(gw.url, simplify=True).call(SOLD, {"fields": "tid"}, session=SESSION)
    assert gw.requests[0]["simplify"] == "true" and resp.data["total_results"] == 2


def test_transient_errors_are_retried_and_every_attempt_recorded() -> None:
    answers = [(502, b"bad gateway"), (200, b'{"trades_sold_get_resp'), sample("error_15_isp_timeout.json"),
               sample("trades_sold_get_success.json")]
    with CannedGateway(replay(answers)) as gw:
        client = make_client(gw.url)
        resp = client.call(SOLD, {"fields": "tid"}, session=SESSION, shop_id="s")
    assert resp.data["total_results"] == 2 and len(gw.requests) == 4
    assert all(verify(r, SECRET) for r in gw.requests)  # each attempt is signed afresh
    records = client.recorder.calls  # type: ignore[attr-defined]
    assert [(r.attempt, r.outcome, r.error_kind, r.code, r.sub_code) for r in records] == [
        (1, "error", "TransportError", None, None),
        (2, "error", "MalformedResponseError", None, None),
        (3, "error", "ServerError", 15, "isp.top-remote-connection-timeout"),
        (4, "ok", None, None, None),
    ]
    assert records[2].request_id == "16kksr4el1bs0"
    assert client._sleep.calls == pytest.approx([0.1, 0.2, 0.4], rel=0.25)  # type: ignore[attr-defined]


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    with CannedGateway(replay([sample("error_15_isp_timeout.json")])) as gw:
        client = make_client(gw.url)
        with pytest.raises(TopError) as info:
            client.call(SOLD, {"fields": "tid"}, session=SESSION)
    assert info.value.attempts == 4 and len(gw.requests) == 4


def test_invalid_session_raises_at_once_naming_the_shop() -> None:
    with CannedGateway(replay([sample("error_27_invalid_session.json")])) as gw:
        client = make_client(gw.url)
        with pytest.raises(InvalidSessionError, match="re-authorise this shop shop-9") as info:
            client.call(SOLD, {"fields": "tid"}, session=SESSION, shop_id="shop-9")
    assert len(gw.requests) == 1 and info.value.attempts == 1
    assert client._sleep.calls == []  # type: ignore[attr-defined]


def test_business_error_is_not_retried() -> None:
    with CannedGateway(replay([sample("error_15_trade_not_exist.json")])) as gw:
        with pytest.raises(BusinessError):
            make_client(gw.url).call("taobao.trade.fullinfo.get", {"tid": 1, "fields": "tid"}, session=SESSION)
    assert len(gw.requests) == 1


def test_rate_limit_bans_the_shared_budget_and_waits(tmp_path: Path) -> None:
    budget = LocalRateBudget(tmp_path / "rl.sqlite3", Limits(per_minute=6000, burst=10))
    with CannedGateway(replay([sample("error_7_app_api_not_launched.json"),
                               sample("time_get.json")])) as gw:
        client = make_client(gw.url, rate_budget=budget, sleep=time.sleep, rng=random.Random(0),
                             retry=RetryPolicy(jitter_fraction=0.0))
        t0 = time.monotonic()
        assert client.time_get() == parse_top_time("2024-06-18 11:06:00")
        elapsed = time.monotonic() - t0
    assert 3.0 <= elapsed < 4.5  # "2 more seconds" + 1, honoured
    assert budget.ban_remaining("app-1") == 0.0
    assert "session" not in gw.requests[0]


def test_daily_quota_ban_fails_fast_for_every_later_call(tmp_path: Path) -> None:
    budget = LocalRateBudget(tmp_path / "rl.sqlite3", Limits(per_minute=6000, burst=10))
    with CannedGateway(replay([sample("error_7_app_call_limited_app_daily.json")])) as gw:
        client = make_client(gw.url, rate_budget=budget)
        with pytest.raises(RateLimitedError) as first:
            client.call(SOLD, {"fields": "tid"}, session=SESSION)
        assert first.value.daily_quota and first.value.attempts == 1
        other = make_client(gw.url, rate_budget=LocalRateBudget(tmp_path / "rl.sqlite3", Limits(per_minute=60)))
        with pytest.raises(RateLimitedError, match="ban recorded"):
            other.call(SOLD, {"fields": "tid"}, session=SESSION)
    assert len(gw.requests) == 1  # the second client never hit the gateway
    assert budget.ban_remaining("app-1") > 31000


def test_timeouts_are_transport_errors() -> None:
    def slow(params: dict[str, str]) -> tuple[int, bytes]:
        time.sleep(0.6)
        return sample("time_get.json")

    with CannedGateway(slow) as gw:
        client = make_client(gw.url, timeout=0.2, retry=RetryPolicy(max_attempts=2, base_delay_s=0.0))
        with pytest.raises(TransportError, match="Timeout") as info:
            client.time_get()
    assert info.value.retryable and info.value.attempts == 2


def test_connection_refused_is_a_transport_error() -> None:
    client = make_client("http://127.0.0.1:9/router/rest", retry=RetryPolicy(max_attempts=1))
    with pytest.raises(TransportError, match="ConnectionError"):
        client.call(SOLD, {"fields": "tid"}, session=SESSION)


@pytest.mark.parametrize("gateway", ["gw.api.taobao.com/router/rest", "ftp://gw.api.taobao.com/router/rest",
                                     "http:///router/rest", "http://exa mple.com/router/rest"])
def test_a_gateway_url_that_cannot_work_is_refused_at_construction(gateway: str) -> None:
    with pytest.raises(ValueError, match="gateway must be an absolute http") as info:
        make_client(gateway)
    assert repr(gateway) in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize("gateway", [
    "gw.api.taobao.com/router/rest",  # requests: MissingSchema
    "htp://gw.api.taobao.com/router/rest",  # InvalidSchema
    "http://a..b/router/rest",  # passes the constructor's check; urllib3 refuses the host when sending
])
def test_a_gateway_url_the_http_library_refuses_is_not_retried(gateway: str) -> None:
    # Set after construction, so the constructor's check cannot stop it first.
    client = make_client("http://127.0.0.1:9/router/rest")
    client.gateway = gateway
    with pytest.raises(GatewayURLError, match="fix `gateway` in the configuration") as info:
        client.call(SOLD, {"fields": "tid"}, session=SESSION, shop_id="shop-1")
    assert not info.value.retryable and info.value.attempts == 1
    assert client._sleep.calls == []  # type: ignore[attr-defined]
    assert [c.error_kind for c in client.recorder.calls] == ["GatewayURLError"]  # type: ignore[attr-defined]
    assert SECRET not in str(info.value) and SESSION not in str(info.value)


def test_refresh_session_parses_token_result() -> None:
    token = {"access_token": "new-session", "refresh_token": "new-refresh", "expires_in": 7776000}
    body = json.dumps({"top_auth_token_refresh_response": {"token_result": json.dumps(token),
                                                           "request_id": "abc"}}).encode()
    with CannedGateway(replay([(200, body)])) as gw:
        assert make_client(gw.url).refresh_session("old-refresh") == token
    assert gw.requests[0]["refresh_token"] == "old-refresh" and "session" not in gw.requests[0]


def test_secrets_never_appear_in_errors_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    names = ["error_15_isp_timeout.json", "error_15_trade_not_exist.json", "error_25_invalid_signature.json",
             "error_27_invalid_session.json", "error_40_missing_args.json",
             "error_7_app_call_limited_app_daily.json"]
    texts: list[str] = []
    with CannedGateway(replay([sample(n) for n in names] + [(500, b"oops"), (200, b"{trunc")])) as gw:
        client = make_client(gw.url, retry=RetryPolicy(max_attempts=1))
        texts.append(repr(client))
        for _ in range(len(names) + 2):
            with pytest.raises(TopError) as info:
                client.call(SOLD, {"fields": "tid"}, session=SESSION, shop_id="shop-1")
            texts += [str(info.value), repr(info.value), repr(info.value.args), repr(vars(info.value))]
    refused = make_client("http://127.0.0.1:9/router/rest", retry=RetryPolicy(max_attempts=1))
    with pytest.raises(TransportError) as info:
        refused.call(SOLD, {"fields": "tid"}, session=SESSION)
    texts += [str(info.value), repr(vars(info.value))]
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(r) for r in client.recorder.calls]  # type: ignore[attr-defined]
    blob = "\n".join(texts)
    assert SECRET not in blob and SESSION not in blob
    assert "taobao.trades.sold.get" in blob  # (the texts are real, not empty)


def test_malformed_final_answer_is_never_an_empty_result() -> None:
    with CannedGateway(replay([(200, b"")])) as gw:
        with pytest.raises(MalformedResponseError):
            make_client(gw.url, retry=RetryPolicy(max_attempts=2, base_delay_s=0)).call(
                SOLD, {"fields": "tid"}, session=SESSION)
    assert len(gw.requests) == 2
