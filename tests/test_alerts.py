"""The alert path: dedup and resolve on every backend, each webhook format's payload against a real loopback
receiver, bounded retries, a receiver that is down or answers 500, and no secret anywhere."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from ordersync_pipeline.alerts import ALERT_KINDS, Alerts, Webhook
from ordersync_pipeline.alerts.webhook import WECOM_MAX_BYTES, backoff_delays, judge_response
from ordersync_pipeline.config import ConfigError, OrdersyncConfig, alert_webhook
from ordersync_pipeline.settings import Settings, load_settings
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import alerts as alerts_table
from webhook_receiver import receiver, refused_url

OPENED = datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)
APP_SECRET = "app-SECRET-0123456789abcdef"
SESSION = "session-SECRET-6100e27f1b6b"


def fixed_clock() -> datetime:
    return OPENED


def fast(url: str, fmt: str = "json", **kwargs: object) -> Webhook:
    """A webhook whose retries wait milliseconds, not seconds."""
    return Webhook(url, format=fmt, backoff_seconds=0.01, timeout_seconds=2.0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_wh(sqlite_url: str) -> Iterator[Warehouse]:
    warehouse = Warehouse(sqlite_url)
    warehouse.migrate()
    yield warehouse
    warehouse.dispose()


def stored(wh: Warehouse) -> list[dict[str, object]]:
    with wh.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(alerts_table).order_by(alerts_table.c.id)).mappings()]


# -------------------------------------------------------------------------- dedup and resolve (every backend)

def test_one_open_alert_per_condition_resolved_when_it_clears(wh: Warehouse) -> None:
    alerts = Alerts(wh, clock=fixed_clock)
    assert alerts.open("failure_rate", shop_id="shop-1", key="increment", message="12 % of calls failed")
    assert not alerts.open("failure_rate", shop_id="shop-1", key="increment", message="13 % of calls failed")
    # Another shop, another key, or no shop at all are other conditions.
    assert alerts.open("failure_rate", shop_id="shop-2", key="increment", message="7 %")
    assert alerts.open("run_failed", shop_id=None, key="incremental_sync_job", message="run failed")
    assert not alerts.open("run_failed", shop_id=None, key="incremental_sync_job", message="again")

    open_now = alerts.open_alerts()
    assert [(a.kind, a.shop_id, a.key) for a in open_now] == [
        ("failure_rate", "shop-1", "increment"), ("failure_rate", "shop-2", "increment"),
        ("run_failed", None, "incremental_sync_job")]
    assert open_now[0].message == "12 % of calls failed"      # the first message is kept
    assert open_now[0].opened_at == OPENED and not open_now[0].delivered
    assert [a.key for a in alerts.open_alerts("run_failed")] == ["incremental_sync_job"]

    assert alerts.resolve("failure_rate", shop_id="shop-1", key="increment")
    assert not alerts.resolve("failure_rate", shop_id="shop-1", key="increment")
    assert not alerts.resolve("reconciliation_gap", shop_id="shop-1", key="never-opened")
    assert [(a.shop_id, a.kind) for a in alerts.open_alerts()] == [("shop-2", "failure_rate"), (None, "run_failed")]

    # The condition comes back: a new alert (the old row stays as history).
    assert alerts.open("failure_rate", shop_id="shop-1", key="increment", message="9 %")
    rows = [r for r in stored(wh) if r["shop_id"] == "shop-1"]
    assert [(r["resolved_at"] is not None, r["open_key"] is None, r["message"]) for r in rows] == [
        (True, True, "12 % of calls failed"), (False, False, "9 %")]


def test_processes_opening_the_same_condition_at_once_make_one_alert(wh: Warehouse) -> None:
    url = wh.engine.url.render_as_string(hide_password=False)
    warehouses = [Warehouse(url) for _ in range(6)]   # one engine each, like separate processes
    results: list[bool] = []
    barrier = threading.Barrier(len(warehouses))

    def open_it(w: Warehouse) -> None:
        barrier.wait()
        results.append(Alerts(w).open("reconciliation_gap", shop_id="s", key="2026-11-29", message="3 missing"))

    threads = [threading.Thread(target=open_it, args=(w,)) for w in warehouses]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in warehouses:
        w.dispose()
    assert sorted(results) == [False] * 5 + [True]
    assert len(stored(wh)) == 1


def test_unknown_kind_and_bad_keys_are_refused_with_the_allowed_values(sqlite_wh: Warehouse) -> None:
    alerts = Alerts(sqlite_wh)
    with pytest.raises(ValueError, match="unknown alert kind 'breaker'.*failure_rate"):
        alerts.open("breaker", shop_id=None, key="k", message="m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1 to 255 characters"):
        alerts.open("quarantine", shop_id=None, key="x" * 256, message="m")
    assert set(ALERT_KINDS) == {"failure_rate", "reconciliation_gap", "run_failed", "logistics_stall",
                                "quarantine"}


# -------------------------------------------------------------------------- payload shapes

def test_each_format_posts_its_platforms_payload(sqlite_wh: Warehouse) -> None:
    expected_title = "[ordersync ALERT] failure_rate shop shop-1"
    message = "12.5 % of 80 calls to taobao.trades.sold.increment.get failed <since> 10:00 & rising"
    bodies = {}
    for fmt in ("dingtalk", "wecom", "slack", "json"):
        with receiver(answers=[(200, b'{"errcode":0,"errmsg":"ok"}' if fmt in ("dingtalk", "wecom") else b"ok")]
                      ) as rx:
            alerts = Alerts(sqlite_wh, webhook=fast(rx.url, fmt), clock=fixed_clock)
            assert alerts.open("failure_rate", shop_id="shop-1", key=f"increment-{fmt}", message=message)
            assert len(rx.requests) == 1
            request = rx.requests[0]
            assert request.path == "/robot/send?access_token=tok-SECRET-123456"
            assert request.headers["Content-Type"] == "application/json; charset=utf-8"
            bodies[fmt] = request.json()
            assert alerts.open_alerts()[-1].delivered
    facts = f"kind: failure_rate|shop: shop-1|key: increment-{{fmt}}|opened: {OPENED.isoformat()}"

    def lines(fmt: str, prefix: str) -> str:
        return "\n".join(prefix + f for f in facts.format(fmt=fmt).split("|"))

    assert bodies["dingtalk"] == {"msgtype": "markdown", "markdown": {
        "title": expected_title,
        "text": f"#### {expected_title}\n\n{message}\n\n" + lines("dingtalk", "- ")}}
    assert bodies["wecom"] == {"msgtype": "markdown", "markdown": {
        "content": f"**{expected_title}**\n{message}\n" + lines("wecom", "> ")}}
    escaped = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert bodies["slack"] == {"text": f"*{expected_title}*\n{escaped}\n" + lines("slack", "• ")}
    row_id = bodies["json"]["id"]
    assert isinstance(row_id, int)
    assert bodies["json"] == {"source": "ordersync", "event": "opened", "id": row_id, "kind": "failure_rate",
                              "shop_id": "shop-1", "key": "increment-json", "message": message,
                              "opened_at": OPENED.isoformat(), "resolved_at": None}


def test_the_longest_possible_wecom_content_fits_its_4096_byte_limit(sqlite_wh: Warehouse) -> None:
    with receiver() as rx:
        alerts = Alerts(sqlite_wh, webhook=fast(rx.url, "wecom"))
        # Four-byte characters everywhere: a 255-character key and a message cut to 500 characters.
        alerts.open("reconciliation_gap", shop_id="s" * 64, key="🧾" * 255, message="📦" * 2000)
        content = rx.requests[0].json()["markdown"]["content"]
        assert content.count("📦") == 497 and content.count("🧾") == 255
        assert len(content.encode("utf-8")) <= WECOM_MAX_BYTES


def test_resolving_a_delivered_alert_posts_a_resolved_notice(sqlite_wh: Warehouse) -> None:
    with receiver() as rx:
        alerts = Alerts(sqlite_wh, webhook=fast(rx.url, "json"), clock=fixed_clock)
        alerts.open("reconciliation_gap", shop_id="s", key="2026-11-29", message="3 trades missing")
        assert alerts.resolve("reconciliation_gap", shop_id="s", key="2026-11-29")
        assert [(b["event"], b["resolved_at"]) for b in rx.bodies()] == [
            ("opened", None), ("resolved", OPENED.isoformat())]


# -------------------------------------------------------------------------- delivery: retries, down, 500

def test_a_receiver_answering_500_is_retried_with_backoff_until_it_takes_the_alert(sqlite_wh: Warehouse) -> None:
    waits: list[float] = []
    with receiver(answers=[(500, b"busy"), (503, b"busy"), (200, b"ok")]) as rx:
        alerts = Alerts(sqlite_wh, webhook=fast(rx.url, "slack", sleep=waits.append))
        assert alerts.open("run_failed", shop_id=None, key="job", message="failed")
        assert len(rx.requests) == 3 and waits == [0.01, 0.02]
        assert alerts.open_alerts()[0].delivered


def test_a_receiver_that_keeps_answering_500_never_fails_the_caller_and_is_retried_later(
        sqlite_wh: Warehouse, caplog: pytest.LogCaptureFixture) -> None:
    with receiver(answers=[(500, b"down")]) as rx:
        alerts = Alerts(sqlite_wh, webhook=fast(rx.url, "dingtalk"), quiet_seconds=0)
        with caplog.at_level(logging.WARNING, logger="ordersync.alerts"):
            assert alerts.open("failure_rate", shop_id="s", key="k", message="m")
        assert len(rx.requests) == 3                       # bounded: three attempts, then give up
        assert [a.delivered for a in alerts.open_alerts()] == [False]
        assert "did not take alert" in caplog.text and "HTTP 500" in caplog.text
        # The receiver recovers: the next open posts the old alert first, then the new one.
        rx.answers = [(200, b'{"errcode":0,"errmsg":"ok"}')]
        assert alerts.open("failure_rate", shop_id="s", key="k2", message="m2")
        assert [b["markdown"]["title"] for b in rx.bodies()[3:]] == ["[ordersync ALERT] failure_rate shop s"] * 2
        assert [a.delivered for a in alerts.open_alerts()] == [True, True]


def test_a_receiver_that_is_down_never_fails_the_caller(sqlite_wh: Warehouse,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    url = refused_url()
    alerts = Alerts(sqlite_wh, webhook=fast(url, "wecom"), secrets=[url])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ordersync.alerts"):
        assert alerts.open("run_failed", shop_id=None, key="job", message="failed")
        # While the receiver is known to be down, later alerts do not wait on it again.
        assert alerts.open("run_failed", shop_id=None, key="job-2", message="failed too")
    assert time.monotonic() - started < 5
    assert [a.delivered for a in alerts.open_alerts()] == [False, False]
    assert "ConnectionError" in caplog.text
    assert "down-SECRET" not in caplog.text and url not in caplog.text
    assert alerts.flush() == 0   # still quiet: the rows wait for the receiver to come back


def test_a_flush_after_the_quiet_period_delivers_what_waited(sqlite_wh: Warehouse) -> None:
    alerts = Alerts(sqlite_wh, webhook=fast(refused_url(), "json"), quiet_seconds=0)
    alerts.open("quarantine", shop_id="s", key="a", message="first")
    alerts.open("quarantine", shop_id="s", key="b", message="second")
    with receiver() as rx:
        alerts.webhook = fast(rx.url, "json")
        assert alerts.flush() == 2
        assert [b["message"] for b in rx.bodies()] == ["first", "second"]
        assert alerts.flush() == 0 and len(rx.requests) == 2   # delivered once, not again


def test_dingtalk_refusals_are_judged_by_errcode() -> None:
    assert judge_response("dingtalk", 200, b'{"errcode":0,"errmsg":"ok"}') == (None, False)
    assert judge_response("dingtalk", 200, b'{"errcode":310000,"errmsg":"keywords not in content"}') == (
        "errcode=310000 errmsg='keywords not in content'", False)
    assert judge_response("dingtalk", 200, b'{"errcode":130101,"errmsg":"send too fast"}')[1] is True
    assert judge_response("wecom", 200, b'{"errcode":45009,"errmsg":"api freq out of limit"}')[1] is True
    assert judge_response("wecom", 200, b"<html>") == ("HTTP 200 with a body that is not JSON", True)
    assert judge_response("slack", 200, b"ok") == (None, False)
    assert judge_response("slack", 404, b"no_service") == ("HTTP 404", False)
    assert judge_response("json", 429, b"") == ("HTTP 429", True)
    assert judge_response("json", 502, b"") == ("HTTP 502", True)
    assert backoff_delays(4, 0.5) == [0.5, 1.0, 2.0] and backoff_delays(1, 0.5) == []


def test_a_refusal_is_not_retried_and_stays_undelivered(sqlite_wh: Warehouse) -> None:
    with receiver(answers=[(200, b'{"errcode":310000,"errmsg":"keywords not in content"}')]) as rx:
        alerts = Alerts(sqlite_wh, webhook=fast(rx.url, "dingtalk"))
        assert alerts.open("quarantine", shop_id=None, key="k", message="m")
        assert len(rx.requests) == 1 and not alerts.open_alerts()[0].delivered


# -------------------------------------------------------------------------- secrets and settings

def settings_with_secrets(tmp_path: Path, url: str, webhook_url: str) -> Settings:
    config = OrdersyncConfig.model_validate({
        "gateway": "http://127.0.0.1:1/router/rest", "app_key": "12345678", "app_secret": APP_SECRET,
        "shops": [{"shop_id": "shop-1", "seller_nick": "n", "session": SESSION},
                  {"shop_id": "shop-2", "seller_nick": "m", "session_env": "ORDERSYNC_TEST_UNSET_SESSION"}]})
    settings = Settings.for_config(config, home=tmp_path, warehouse_url=url)
    return dataclasses.replace(settings, alert_webhook_url=SecretStr(webhook_url), alert_webhook_format="json")


def test_no_secret_reaches_the_row_the_payload_or_the_log(sqlite_url: str, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with receiver() as rx:
        settings = settings_with_secrets(tmp_path, sqlite_url, rx.url)
        wh = Warehouse(sqlite_url)
        wh.migrate()
        alerts = Alerts.from_settings(settings, wh)
        leaky = (f"call failed: app_secret={APP_SECRET} session={SESSION}\nposting to {rx.url} "
                 "(token tok-SECRET-123456) via postgresql://sync:pg-SECRET@db/wh")
        with caplog.at_level(logging.DEBUG, logger="ordersync.alerts"):
            assert alerts.open("run_failed", shop_id="shop-1", key="job", message=leaky)
        row = stored(wh)[0]
        texts = [str(row["message"]), rx.requests[0].body.decode(), caplog.text, repr(alerts), repr(settings)]
        for text in texts:
            for secret in ("SECRET", APP_SECRET, SESSION, rx.url):
                assert secret not in text, (secret, text)
        assert row["message"] == ("call failed: app_secret=*** session=*** posting to *** (token ***) "
                                  "via postgresql://sync:***@db/wh")
        assert repr(alerts) == f"Alerts(webhook=Webhook(format='json', host='127.0.0.1:{rx.url.split(':')[2].split('/')[0]}'))"
        wh.dispose()


def test_webhook_environment_resolution() -> None:
    assert alert_webhook({}) == (None, "json")
    url, fmt = alert_webhook({"ORDERSYNC_ALERT_WEBHOOK_URL": "https://oapi.dingtalk.com/robot/send?access_token=t"})
    assert url is not None and url.get_secret_value().endswith("access_token=t") and fmt == "dingtalk"
    assert alert_webhook({"ORDERSYNC_ALERT_WEBHOOK_URL": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"}
                         )[1] == "wecom"
    assert alert_webhook({"ORDERSYNC_ALERT_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x"})[1] == "slack"
    assert alert_webhook({"ORDERSYNC_ALERT_WEBHOOK_URL": "https://alerts.example/in",
                          "ORDERSYNC_ALERT_WEBHOOK_FORMAT": "WeCom"})[1] == "wecom"
    with pytest.raises(ConfigError, match="ORDERSYNC_ALERT_WEBHOOK_FORMAT must be one of dingtalk, wecom, "
                                          "slack, json, got 'teams'"):
        alert_webhook({"ORDERSYNC_ALERT_WEBHOOK_FORMAT": "teams"})
    with pytest.raises(ConfigError) as bad:
        alert_webhook({"ORDERSYNC_ALERT_WEBHOOK_URL": "oapi.dingtalk.com/robot/send?access_token=tok-SECRET"})
    assert "ORDERSYNC_ALERT_WEBHOOK_URL must be an http:// or https:// URL" in str(bad.value)
    assert "SECRET" not in str(bad.value)


def test_load_settings_reads_the_alert_environment(tmp_path: Path) -> None:
    config = tmp_path / "ordersync.yaml"
    config.write_text("gateway: http://127.0.0.1:1/router/rest\napp_key: k\napp_secret: s\n"
                      "shops: [{shop_id: a, seller_nick: n, session: x}]\nsync: {start: '2026-11-30'}\n")
    env = {"ORDERSYNC_HOME": str(tmp_path / "home"), "ORDERSYNC_UI_URL": "https://dagster.example/",
           "ORDERSYNC_ALERT_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/tok"}
    settings = load_settings(config, environ=env)
    assert settings.alert_webhook_url is not None and settings.alert_webhook_format == "slack"
    assert settings.ui_url == "https://dagster.example"
    assert "tok" not in repr(settings)
    defaults = load_settings(config, environ={"ORDERSYNC_HOME": str(tmp_path / "home")})
    assert (defaults.alert_webhook_url, defaults.alert_webhook_format, defaults.ui_url) == (
        None, "json", "http://127.0.0.1:3000")
    with pytest.raises(ConfigError, match="ORDERSYNC_UI_URL must be an http"):
        load_settings(config, environ={**env, "ORDERSYNC_UI_URL": "dagster.example"})
