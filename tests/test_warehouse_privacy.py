"""Receiver personal data stays out of the warehouse unless the operator turns it on."""

import json
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from ordersync_pipeline.sync.normalize import detail_row
from ordersync_pipeline.warehouse import Warehouse

TRADE = {"tid": 3812094471235568392, "modified": "2026-11-20 10:22:06", "status": "WAIT_SELLER_SEND_GOODS",
         "receiver_name": "王*", "receiver_mobile": "138********", "receiver_address": "文*街道**路**号",
         "receiver_city": "杭州市", "oaid": "1qPZxHk3nEXAMPLE"}


def _stored_detail(url: str, *, store_receiver_pii: bool) -> dict:
    warehouse = Warehouse(url, store_receiver_pii=store_receiver_pii)
    warehouse.migrate()
    row = detail_row("shop-1", TRADE, fetched_at=datetime.now(timezone.utc), keep_pii=store_receiver_pii)
    warehouse.upsert_trade_details([row])
    with warehouse.engine.connect() as conn:
        text = conn.execute(sa.text("select detail from trade_details")).scalar_one()
    warehouse.dispose()
    return json.loads(text)


def test_receiver_fields_are_not_stored_by_default(sqlite_url: str) -> None:
    detail = _stored_detail(sqlite_url, store_receiver_pii=False)
    assert detail["receiver_city"] == "杭州市"  # the region is not personal
    for field in ("receiver_name", "receiver_mobile", "receiver_address", "oaid"):
        assert field not in detail


def test_receiver_fields_are_kept_when_configured(pg_url: str) -> None:
    detail = _stored_detail(pg_url, store_receiver_pii=True)
    assert detail["receiver_name"] == "王*" and detail["receiver_mobile"] == "138********"


def test_the_dagster_resource_passes_the_setting_through(sqlite_url: str, tmp_path: Path) -> None:
    import dagster as dg

    from ordersync_pipeline.config import OrdersyncConfig
    from ordersync_pipeline.defs.resources import build_resources
    from ordersync_pipeline.settings import Settings

    for keep in (True, False):
        config = OrdersyncConfig.model_validate({
            "gateway": "http://127.0.0.1:9/router/rest", "app_key": "k", "app_secret": "s",
            "shops": [{"shop_id": "s", "seller_nick": "s", "session": "x"}],
            "sync": {"start": "2026-11-01", "store_receiver_pii": keep}})
        resource = build_resources(Settings.for_config(config, home=tmp_path, warehouse_url=sqlite_url))["warehouse"]
        warehouse = resource.resource_fn(dg.build_init_resource_context())
        assert warehouse.store_receiver_pii is keep
