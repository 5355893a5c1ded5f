"""Every way a TOP call can fail, as one exception tree.

```
TopError                      code, sub_code, msg, sub_msg, request_id, method, shop_id; .retryable
 ├── TransportError           connection error, timeout, HTTP 5xx (retryable; other HTTP statuses not)
 ├── GatewayURLError          the gateway URL cannot be requested (no/odd scheme, bad host): never retried
 ├── MalformedResponseError   truncated / not JSON / not the expected envelope (retryable)
 ├── UnstableWindowError      the pager: an increment window kept changing while paged (retryable later)
 ├── RateLimitedError         code 7 (and 15 + isp.call-limited): .ban_seconds, .daily_quota
 ├── SessionError             credentials: fix configuration or re-authorise, never retry
 │    ├── InvalidSignatureError   code 25
 │    ├── MissingSessionError     code 26
 │    └── InvalidSessionError     code 27 ("re-authorise this shop <shop_id>")
 ├── InvalidArgumentsError    code 40 / 41: .parameter names the argument
 ├── ServerError              code 15 + isp.* (or no sub_code): retryable except three deterministic isp codes
 ├── BusinessError            code 15 + isv.* (e.g. isv.trade-not-exist), code >= 100: not retryable
 └── PlatformError            any other code (permissions, timestamp, app key, ...)
```

``classify(error_response, method)`` turns the inner object of ``{"error_response": {...}}`` into the
right subclass. Nothing here ever holds the app secret or a session key: errors are built only from the
response and the API method name, so ``str(err)`` is safe to log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "TopError", "TransportError", "GatewayURLError", "MalformedResponseError", "RateLimitedError", "SessionError",
    "InvalidSignatureError", "MissingSessionError", "InvalidSessionError", "InvalidArgumentsError",
    "ServerError", "BusinessError", "PlatformError", "classify", "DAILY_QUOTA_SUB_CODE",
    "NON_RETRYABLE_ISP", "UnstableWindowError",
]

# The app key's daily quota: the ban lasts until the quota resets (hours), unlike the per-API bans.
DAILY_QUOTA_SUB_CODE = "accesscontrol.limited-by-app-access-count"
# isp.* codes that are deterministic server-side failures: retrying returns the same error.
NON_RETRYABLE_ISP = frozenset({"isp.null-pointer-exception", "isp.top-parse-error",
                               "isp.top-mapping-parse-error"})
_BAN_RE = re.compile(r"(\d+)\s+more\s+seconds")


class TopError(Exception):
    """Base of every TOP client error; carries the response's identifiers, never credentials."""

    retryable: bool = False

    def __init__(self, msg: str, *, method: str, code: int | None = None, sub_code: str | None = None,
                 sub_msg: str | None = None, request_id: str | None = None,
                 shop_id: str | None = None) -> None:
        self.msg = msg
        self.method = method
        self.code = code
        self.sub_code = sub_code
        self.sub_msg = sub_msg
        self.request_id = request_id
        self.shop_id = shop_id
        self.attempts = 1  # the client sets how many HTTP attempts were made before giving up
        super().__init__(msg)

    def __str__(self) -> str:
        parts = [f"{self.method}: {self.msg}"]
        if self.sub_msg:
            parts.append(f"({self.sub_msg})")
        ids = [f"code={self.code}", f"sub_code={self.sub_code}", f"request_id={self.request_id}"]
        if self.shop_id:
            ids.append(f"shop_id={self.shop_id}")
        return " ".join(parts) + " [" + ", ".join(ids) + "]"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(method={self.method!r}, code={self.code!r}, "
                f"sub_code={self.sub_code!r}, request_id={self.request_id!r})")


class TransportError(TopError):
    """No usable HTTP response: connection failure, timeout, or an HTTP error status."""

    def __init__(self, msg: str, *, method: str, status: int | None = None,
                 shop_id: str | None = None) -> None:
        super().__init__(msg, method=method, shop_id=shop_id)
        self.status = status
        # 4xx means the request itself is wrong (bad gateway path, ...): repeating it cannot help.
        self.retryable = status is None or status >= 500


class GatewayURLError(TopError):
    """The HTTP library refused the gateway URL itself: fix ``gateway`` in the configuration."""


class MalformedResponseError(TopError):
    """The body is not a complete TOP envelope for this method; never treated as an empty result."""

    retryable = True


class UnstableWindowError(TopError):
    """Rows kept entering an increment window while it was paged, walk after walk.

    Raised by the pager, not by a single call: no answer was wrong, but the pages read may not add up
    to the whole window. Retryable: a later run finds the window settled (if it never settles, the
    safety lag is shorter than the platform's visibility lag).
    """

    retryable = True


class RateLimitedError(TopError):
    """Code 7 App Call Limited: wait ``ban_seconds`` (from the sub_msg) before calling again."""

    retryable = True

    def __init__(self, msg: str, **kwargs: Any) -> None:
        super().__init__(msg, **kwargs)
        self.ban_seconds = parse_ban_seconds(self.sub_msg)
        self.daily_quota = self.sub_code == DAILY_QUOTA_SUB_CODE


class SessionError(TopError):
    """The credentials are wrong: fix the configuration or re-authorise; retrying cannot help."""


class InvalidSignatureError(SessionError):
    """Code 25: the signature does not match (wrong app secret or sign_method)."""


class MissingSessionError(SessionError):
    """Code 26: the API needs a seller session and none was sent."""


class InvalidSessionError(SessionError):
    """Code 27: the session key is expired, revoked or for another app; the seller must re-authorise."""

    def __str__(self) -> str:
        shop = self.shop_id or "(unknown shop)"
        return f"{super().__str__()}: re-authorise this shop {shop}"


class InvalidArgumentsError(TopError):
    """Codes 40/41: a parameter is missing or invalid; ``parameter`` names it when TOP does."""

    def __init__(self, msg: str, **kwargs: Any) -> None:
        super().__init__(msg, **kwargs)
        name = msg.partition(":")[2].strip()
        self.parameter: str | None = name or None


class ServerError(TopError):
    """Code 15 with an ``isp.*`` sub_code: a transient platform fault, except the deterministic ones."""

    def __init__(self, msg: str, **kwargs: Any) -> None:
        super().__init__(msg, **kwargs)
        self.retryable = (self.sub_code or "") not in NON_RETRYABLE_ISP


class BusinessError(TopError):
    """Code 15 with an ``isv.*`` sub_code (or code >= 100): the request is valid but refused."""


class PlatformError(TopError):
    """Any other platform code (permissions, timestamp, app key, method, ...)."""


def parse_ban_seconds(sub_msg: str | None) -> int | None:
    """``This ban will last for 31062 more seconds`` -> 31062; None when absent."""
    match = _BAN_RE.search(sub_msg or "")
    return int(match.group(1)) if match else None


def _error_class(code: int | None, sub_code: str) -> type[TopError]:
    if code == 7 or sub_code == "isp.call-limited":
        return RateLimitedError
    by_code: dict[int | None, type[TopError]] = {
        25: InvalidSignatureError, 26: MissingSessionError, 27: InvalidSessionError,
        40: InvalidArgumentsError, 41: InvalidArgumentsError,
    }
    if code in by_code:
        return by_code[code]
    if code == 15:
        # Business refusals are isv.*; everything else under 15 is a server-side fault.
        return BusinessError if sub_code.startswith("isv.") else ServerError
    if code is not None and code >= 100:
        return BusinessError
    return PlatformError


def classify(error_response: Mapping[str, Any], method: str, *, shop_id: str | None = None) -> TopError:
    """Build the exception for the inner object of an ``error_response`` envelope."""
    raw_code = error_response.get("code")
    try:
        code: int | None = int(raw_code) if raw_code is not None else None
    except (TypeError, ValueError):
        code = None

    def text(key: str) -> str | None:
        value = error_response.get(key)
        return None if value is None else str(value)

    sub_code = text("sub_code")
    cls = _error_class(code, sub_code or "")
    return cls(text("msg") or "TOP error", method=method, code=code, sub_code=sub_code,
               sub_msg=text("sub_msg"), request_id=text("request_id"), shop_id=shop_id)
