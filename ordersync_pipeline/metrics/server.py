"""``ordersync metrics serve``: a Prometheus endpoint (``/metrics``) over the warehouse.

The engine is the warehouse's own (``warehouse/connect.py``) with a short connect timeout, so a
warehouse that does not answer costs a scrape a few seconds (``ordersync_up 0``), not Prometheus's
whole scrape timeout. Nothing is migrated or written: the endpoint only reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from wsgiref.simple_server import WSGIServer

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, start_http_server

from ordersync_pipeline.metrics.collector import WarehouseCollector
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.warehouse.connect import create_warehouse_engine, normalize_url

__all__ = ["metrics_engine", "start_metrics_server", "CONNECT_TIMEOUT_S", "DEFAULT_PORT"]

DEFAULT_PORT = 9464
CONNECT_TIMEOUT_S = 3


def metrics_engine(url: str) -> sa.Engine:
    """An engine for reading ``url`` that gives up connecting after CONNECT_TIMEOUT_S."""
    parsed = normalize_url(url)
    networked = parsed.get_backend_name() in ("postgresql", "mysql", "mariadb")
    if networked and "connect_timeout" not in parsed.query:
        parsed = parsed.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
    return create_warehouse_engine(parsed)


def start_metrics_server(settings: Settings, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                         window: timedelta = timedelta(hours=1), table_rows_ttl: float = 300.0,
                         ) -> tuple[WSGIServer, threading.Thread, Callable[[], None]]:
    """Serve ``/metrics`` for ``settings``' warehouse and shops in a background thread. Returns the
    server (``server.server_port`` is the bound port), its thread and a function that stops it."""
    engine = metrics_engine(settings.warehouse_url)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WarehouseCollector(engine, shops=settings.shop_ids, window=window,
                                         table_rows_ttl=table_rows_ttl, clock=settings.clock,
                                         webhook_configured=settings.alert_webhook_url is not None))
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        engine.dispose()

    return server, thread, stop
