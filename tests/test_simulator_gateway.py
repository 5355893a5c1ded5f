"""The simulator speaks TOP on the wire: official SDKs work unchanged, platform errors, envelopes."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests

from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.simulator.probe import Probe
from ordersync_pipeline.timeutil import format_top_time, parse_top_time
from ordersync_pipeline.top.signing import sign

FIELDS = "tid,status,type,created,modified,payment,receiver_name,receiver_mobile,orders"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=11, shops=2, orders_per_day=300, history_days=3,
                                           clock="stepped")) as s:
        yield s


@pytest.fixture(scope="module")
def probe(sim: Simulator) -> Probe:
    return Probe(sim.gateway_url, sim.app_key, sim.app_secret)


def err(body: dict[str, Any]) -> dict[str, Any]:
    assert "error_response" in body, body
    return body["error_response"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- official SDKs, unchanged

def test_official_python_sdk_md5_epoch_ms_query_and_body(sim: Simulator) -> None:
    import taobao_open
    from taobao_open.api.base import RestApi
    from taobao_open.api.rest import TimeGetRequest

    host, port = sim.host, sim.port
    req = TimeGetRequest(host, port)
    req.set_app_info(taobao_open.appinfo(sim.app_key, sim.app_secret))
    assert parse_top_time(req.getResponse()["time_get_response"]["time"]) == sim.clock.now()

    class TradesSoldGetRequest(RestApi):  # shaped exactly like the SDK's generated request classes
        def __init__(self, domain: str, port: int) -> None:
            RestApi.__init__(self, domain, port)
            self.fields = None
            self.page_size = None

        def getapiname(self) -> str:
            return "taobao.trades.sold.get"

    req2 = TradesSoldGetRequest(host, port)
    req2.set_app_info(taobao_open.appinfo(sim.app_key, sim.app_secret))
    req2.fields, req2.page_size = "tid,status", 5
    body = req2.getResponse(authrize=sim.shops[0].session)
    trades = body["trades_sold_get_response"]["trades"]["trade"]
    assert len(trades) == 5 and all(t["tid"] > 2**53 for t in trades)


def test_taobaopy_hmac_form_post_local_time(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from taobaopy.taobao import TaoBaoAPIClient, TaoBaoAPIError

    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        client = TaoBaoAPIClient(sim.app_key, sim.app_secret, domain=f"http://{sim.host}:{sim.port}")
        client.set_access_token(sim.shops[1].session)
        page = client.trades_sold_get(fields="tid,created", page_size=3, use_has_next=True)
        resp = page["trades_sold_get_response"]
        assert "total_results" not in resp and resp["has_next"] is True
        tid = resp["trades"]["trade"][0]["tid"]
        full = client.trade_fullinfo_get(fields="tid,orders", tid=tid)
        assert full["trade_fullinfo_get_response"]["trade"]["tid"] == tid
        with pytest.raises(TaoBaoAPIError) as exc:
            client.trade_fullinfo_get(fields="tid", tid=tid + 1)
        assert exc.value.code == 15 and exc.value.sub_code == "isv.trade-not-exist"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_hmac_sha256_and_get_with_everything_in_the_query(sim: Simulator, probe: Probe) -> None:
    params = probe.params("taobao.time.get")
    assert params["sign_method"] == "hmac-sha256"
    body = requests.get(sim.gateway_url, params=params, timeout=5).json()
    assert "time_get_response" in body


# ---------------------------------------------------------------- platform errors

@pytest.mark.parametrize(("mutate", "code"), [
    (lambda p: p.pop("method"), 21),
    (lambda p: p.update(method="taobao.no.such.api"), 22),
    (lambda p: p.pop("app_key"), 28),
    (lambda p: p.update(app_key="999"), 29),
    (lambda p: p.pop("timestamp"), 30),
    (lambda p: p.update(timestamp="yesterday"), 31),
    (lambda p: p.update(format="yaml"), 23),
    (lambda p: p.pop("sign"), 24),
    (lambda p: p.update(sign="0" * 64), 25),
    (lambda p: p.pop("session"), 26),
    (lambda p: p.update(session="not-a-session"), 27),
])
def test_platform_errors_in_documented_order(sim: Simulator, probe: Probe, mutate: Any, code: int) -> None:
    params = probe.params("taobao.trades.sold.get", sim.shops[0].session, fields="tid")
    mutate(params)
    if code not in (24, 25) and "sign" in params:  # re-sign so only the mutation is wrong
        params["sign"] = sign(params, sim.app_secret, "hmac-sha256")
    resp = requests.post(sim.gateway_url, data=params, timeout=5)
    assert resp.status_code == 200
    e = err(resp.json())
    assert e["code"] == code and re.fullmatch(r"[0-9a-z]{6,13}", e["request_id"])
    if code == 25:
        assert "sub_code" not in e  # like the real platform sample
    if code == 27:
        assert e["sub_code"] == "invalid-sessionkey"


def test_timestamp_skew_over_ten_minutes_is_rejected_both_formats(sim: Simulator, probe: Probe) -> None:
    for stamp in (format_top_time(sim.clock.now() - timedelta(minutes=11)),
                  str(int((time.time() - 660) * 1000))):
        params = probe.params("taobao.time.get")
        params["timestamp"] = stamp
        params["sign"] = sign(params, sim.app_secret, "hmac-sha256")
        assert err(requests.post(sim.gateway_url, data=params, timeout=5).json())["code"] == 31
    ok = probe.params("taobao.time.get")
    ok["timestamp"] = str(int(time.time() * 1000))
    ok["sign"] = sign(ok, sim.app_secret, "hmac-sha256")
    assert "time_get_response" in requests.post(sim.gateway_url, data=ok, timeout=5).json()


def test_other_http_methods_get_code_9(sim: Simulator, probe: Probe) -> None:
    resp = requests.put(sim.gateway_url, data=probe.params("taobao.time.get"), timeout=5)
    assert resp.status_code == 200 and err(resp.json())["code"] == 9


def test_expired_session_flag(sim: Simulator, probe: Probe) -> None:
    sim.set_session_valid("shop-2", False)
    try:
        e = err(probe.call("taobao.trades.sold.get", sim.shops[1].session, fields="tid"))
        assert (e["code"], e["sub_code"]) == (27, "invalid-sessionkey")
        assert "trades_sold_get_response" in probe.call("taobao.trades.sold.get", sim.shops[0].session,
                                                        fields="tid")
    finally:
        sim.set_session_valid("shop-2", True)


def test_argument_errors_40_and_41(sim: Simulator, probe: Probe) -> None:
    s = sim.shops[0].session
    now = sim.clock.now()
    e = err(probe.call("taobao.trades.sold.get", s))
    assert (e["code"], e["msg"]) == (40, "Missing required arguments:fields")
    e = err(probe.call("taobao.trades.sold.increment.get", s, fields="tid",
                       end_modified=format_top_time(now)))
    assert e["msg"] == "Missing required arguments:start_modified"
    for kwargs, name in [
        ({"page_size": 101}, "page_size"), ({"page_size": 0}, "page_size"),
        ({"start_modified": format_top_time(now - timedelta(days=1, seconds=1))}, "end_modified"),
        ({"start_modified": format_top_time(now)}, "end_modified"),
        ({"start_modified": "2024-13-45 99:00:00"}, "start_modified"),
    ]:
        args = {"fields": "tid", "start_modified": format_top_time(now - timedelta(hours=1)),
                "end_modified": format_top_time(now), **kwargs}
        e = err(probe.call("taobao.trades.sold.increment.get", s, **args))
        assert (e["code"], e["msg"]) == (41, f"Invalid arguments:{name}")


def test_rate_limit_code_7_with_ban_seconds() -> None:
    with start_simulator(SimulatorSettings(orders_per_day=10, history_days=1, rate_limit_per_min=5)) as sim:
        probe = Probe(sim.gateway_url, sim.app_key, sim.app_secret)
        bodies = [probe.call("taobao.time.get") for _ in range(7)]
        assert all("time_get_response" in b for b in bodies[:5])
        e = err(bodies[5])
        assert (e["code"], e["msg"], e["sub_code"]) == (7, "App Call Limited",
                                                         "accesscontrol.limited-by-app-access-count")
        seconds = int(re.fullmatch(r"This ban will last for (\d+) more seconds", e["sub_msg"]).group(1))  # type: ignore[union-attr]
        assert 1 <= seconds <= 60


# ---------------------------------------------------------------- envelopes and value formats

def test_success_envelope_ids_money_dates_masking(sim: Simulator, probe: Probe) -> None:
    raw = probe.raw("taobao.trades.sold.get", sim.shops[0].session, fields=FIELDS, page_size=20).content
    assert re.search(rb'"tid":\d{19}[,}]', raw)  # big ints on the wire, not strings
    inner = json.loads(raw)["trades_sold_get_response"]
    assert re.fullmatch(r"[0-9a-z]{6,13}", inner["request_id"]) and inner["total_results"] > 20
    trades = inner["trades"]["trade"]
    assert [t["created"] for t in trades] == sorted((t["created"] for t in trades), reverse=True)
    for t in trades:
        assert set(t) <= set(FIELDS.split(","))
        assert re.fullmatch(r"\d+\.\d{2}", t["payment"])
        parse_top_time(t["created"]), parse_top_time(t["modified"])
        assert re.fullmatch(r".\*", t["receiver_name"]) and re.fullmatch(r"1\d\d\*{8}", t["receiver_mobile"])
        orders = t["orders"]["order"]
        assert 1 <= len(orders) <= 4
        if len(orders) == 1:
            assert orders[0]["oid"] == t["tid"]
        assert all(re.fullmatch(r"\d+\.\d{2}", o["price"]) and isinstance(o["sku_id"], str) for o in orders)


def test_simplify_has_next_and_empty_pages(sim: Simulator, probe: Probe) -> None:
    s = sim.shops[0].session
    body = probe.call("taobao.trades.sold.get", s, fields="tid,orders.oid", simplify=True, use_has_next=True,
                      page_size=2)
    assert set(body) == {"has_next", "trades", "request_id"} and isinstance(body["trades"], list)
    assert isinstance(body["trades"][0]["orders"], list) and set(body["trades"][0]["orders"][0]) == {"oid"}
    far = format_top_time(sim.clock.now() - timedelta(days=60))
    empty = probe.call("taobao.trades.sold.get", s, fields="tid", start_created=far, end_created=far)
    assert empty["trades_sold_get_response"]["total_results"] == 0
    assert "trades" not in empty["trades_sold_get_response"]


def test_fields_projection_orders_subfields_and_fullinfo_only_fields(sim: Simulator, probe: Probe) -> None:
    s = sim.shops[0].session
    body = probe.call("taobao.trades.sold.get", s, fields="tid,buyer_message,orders.oid,orders.num",
                      page_size=5)
    for t in body["trades_sold_get_response"]["trades"]["trade"]:
        assert set(t) == {"tid", "orders"}  # buyer_message is fullinfo-only
        assert all(set(o) == {"oid", "num"} for o in t["orders"]["order"])
    tid = t["tid"]
    full = probe.call("taobao.trade.fullinfo.get", s, fields="tid,buyer_message,orders", tid=tid)
    trade = full["trade_fullinfo_get_response"]["trade"]
    assert set(trade) == {"tid", "buyer_message", "orders"}
    truth = sim.world.trade(tid)
    assert truth is not None
    assert trade["buyer_message"] == truth["buyer_message"] and trade["orders"]["order"] == truth["orders"]
    assert "snapshot_url" in trade["orders"]["order"][0]


def test_fullinfo_of_another_shops_trade_does_not_exist(sim: Simulator, probe: Probe) -> None:
    tid = sim.world.trades("shop-2")[0]["tid"]
    e = err(probe.call("taobao.trade.fullinfo.get", sim.shops[0].session, fields="tid", tid=tid))
    assert (e["code"], e["sub_code"]) == (15, "isv.trade-not-exist")


def test_xml_format_gets_a_minimal_xml_envelope(sim: Simulator, probe: Probe) -> None:
    params = probe.params("taobao.time.get")
    params["format"] = "xml"
    params["sign"] = sign(params, sim.app_secret, "hmac-sha256")
    resp = requests.post(sim.gateway_url, data=params, timeout=5)
    assert resp.headers["Content-Type"].startswith("text/xml")
    assert re.search(r"<time_get_response><time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</time>", resp.text)


def test_keep_alive_connection_is_reused(sim: Simulator, probe: Probe) -> None:
    http = requests.Session()
    for _ in range(3):
        http.post(sim.gateway_url, data=probe.params("taobao.time.get"), timeout=5)
    assert len(http.adapters["http://"].poolmanager.pools) == 1
    pool = next(iter(http.adapters["http://"].poolmanager.pools._container.values()))
    assert pool.num_connections == 1


def test_env_has_no_tz_leak() -> None:
    assert os.environ.get("TZ") in (None, "")
