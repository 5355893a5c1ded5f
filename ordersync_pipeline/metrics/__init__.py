"""Prometheus metrics read from the warehouse at scrape time (``ordersync metrics serve``). No Dagster here.

=====================================================  ==============================================
``ordersync_up``                                       1 when the warehouse answered the scrape
``ordersync_scrape_section_ok{section}``               1 when a group of reads below succeeded
``ordersync_api_calls_total{method,outcome,code,       API calls (HTTP attempts) since the exporter
error_kind}``                                          started; errors have outcome="error"
``ordersync_api_call_latency_seconds{method}``         latency histogram, 50 ms .. 30 s
``ordersync_api_calls_recent{shop_id,method,outcome}`` calls in the last hour (the breaker's view)
``ordersync_sync_lag_seconds{shop_id,stream}``         now minus the newest synced ``modified``
``ordersync_sync_window_lag_seconds{shop_id,stream}``  now minus the newest completed increment window
``ordersync_table_rows{table}``                        rows per synced table
``ordersync_quarantine_records``                       records in quarantine (and ``_recent{source}``)
``ordersync_alerts_open{kind}``                        open alerts (and ``ordersync_alerts_undelivered``
                                                       when ORDERSYNC_ALERT_WEBHOOK_URL is set)
``ordersync_breaker_state{shop_id,api,state}``,        breaker state (when ``breaker_state`` exists)
``ordersync_breaker_open{shop_id,api}``
``ordersync_reconciliation_gap_days{shop_id,stream}``  reconciled days still short (when
and ``ordersync_reconciliation_days{...,status}``      ``reconciliation_daily`` exists)
=====================================================  ==============================================

deploy/prometheus holds a scrape configuration and alert rules over these, deploy/grafana a dashboard.
"""

from ordersync_pipeline.metrics.collector import SECTIONS, WarehouseCollector
from ordersync_pipeline.metrics.server import DEFAULT_PORT, metrics_engine, start_metrics_server

__all__ = ["WarehouseCollector", "SECTIONS", "DEFAULT_PORT", "metrics_engine", "start_metrics_server"]
