"""A minimal signed caller for the simulator's own tests, benchmark and smoke checks.

Deliberately tiny: the product's client lives in ordersync_pipeline/top/. This one exists so the
simulator can be exercised without depending on it, and so tests can send deliberately wrong requests.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
import requests

from ordersync_pipeline.timeutil import format_top_time
from ordersync_pipeline.top.signing import SignMethod, sign


class Probe:
    def __init__(self, gateway_url: str, app_key: str, app_secret: str, *,
                 sign_method: SignMethod = "hmac-sha256", timeout: float = 10.0) -> None:
        self.url, self.app_key, self.app_secret = gateway_url, app_key, app_secret
        self.sign_method: SignMethod = sign_method
        self.timeout = timeout
        self.http = requests.Session()
        self.http.trust_env = False  # otherwise requests re-reads proxy settings on every call

    def params(self, method: str, session: str | None = None, **business: Any) -> dict[str, str]:
        params = {"method": method, "app_key": self.app_key, "v": "2.0", "format": "json",
                  "sign_method": self.sign_method,
                  "timestamp": format_top_time(datetime.now(timezone.utc))}
        if session is not None:
            params["session"] = session
        params.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in business.items()})
        params["sign"] = sign(params, self.app_secret, self.sign_method)
        return params

    def raw(self, method: str, session: str | None = None, **business: Any) -> requests.Response:
        return self.http.post(self.url, data=self.params(method, session, **business), timeout=self.timeout)

    def call(self, method: str, session: str | None = None, **business: Any) -> dict[str, Any]:
        """The decoded JSON body (success envelope or ``error_response``)."""
        return orjson.loads(self.raw(method, session, **business).content)  # type: ignore[no-any-return]
