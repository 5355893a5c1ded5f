"""Names of the environment variables ordersync reads (config.py documents each and re-exports them).

Apart from config.py so the CLI can name them in its options without importing the configuration models
(pydantic, yaml): every spawned process (loader processes too) imports the main module again, so what the
CLI imports at the top is paid in each of them.
"""

ENV_WAREHOUSE_URL = "ORDERSYNC_WAREHOUSE_URL"
ENV_HOME = "ORDERSYNC_HOME"
ENV_REDIS_URL = "ORDERSYNC_REDIS_URL"
ENV_CONFIG = "ORDERSYNC_CONFIG"
ENV_ALERT_WEBHOOK_URL = "ORDERSYNC_ALERT_WEBHOOK_URL"
ENV_ALERT_WEBHOOK_FORMAT = "ORDERSYNC_ALERT_WEBHOOK_FORMAT"
ENV_UI_URL = "ORDERSYNC_UI_URL"
ENV_LAKE_URL = "ORDERSYNC_LAKE_URL"
