"""One alert path for every feature: a log line, a row in ``alerts`` and, when configured, a webhook.

```python
from ordersync_pipeline.alerts import Alerts, AlertKind
alerts = Alerts.from_settings(settings, warehouse)   # or Alerts(warehouse, webhook=None | Webhook(...))
alerts.open("failure_rate", shop_id="shop-1", key="taobao.trades.sold.increment.get", message="...")
alerts.resolve("failure_rate", shop_id="shop-1", key="taobao.trades.sold.increment.get")
alerts.open_alerts()                                  # -> list[AlertRow]
```

A condition ``(kind, shop_id, key)`` has at most one open alert; ``open`` returns True only when it
opened one. Delivery to the webhook (``ORDERSYNC_ALERT_WEBHOOK_URL`` in the format
``ORDERSYNC_ALERT_WEBHOOK_FORMAT``: dingtalk, wecom, slack or json) is retried with backoff and recorded
in ``delivered``; a receiver that is down never fails the caller. core.py says how; webhook.py holds the
payload shapes. No Dagster here.
"""

from ordersync_pipeline.alerts.core import ALERT_KINDS, AlertKind, AlertRow, Alerts, condition_key
from ordersync_pipeline.alerts.webhook import Delivery, Notice, Webhook

__all__ = ["Alerts", "AlertKind", "AlertRow", "ALERT_KINDS", "Webhook", "Notice", "Delivery", "condition_key"]
