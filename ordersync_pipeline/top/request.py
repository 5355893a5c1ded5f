"""Building a signed TOP request: system parameters, value encoding, signature.

Encoding (top-api.md 1.3-1.6): booleans ``true``/``false``; datetimes ``yyyy-MM-dd HH:mm:ss`` in
GMT+8 (aware datetimes only: a naive one would be silently eight hours off); lists comma-joined;
``None`` and empty values dropped before signing, as the official Java SDK does, so the signature
covers exactly what is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from ordersync_pipeline.timeutil import format_top_time
from ordersync_pipeline.top.signing import SignMethod, sign

__all__ = ["encode_value", "encode_params", "build_request", "SYSTEM_PARAMS", "API_VERSION"]

API_VERSION = "2.0"
SYSTEM_PARAMS = frozenset({"method", "app_key", "session", "timestamp", "v", "sign_method", "sign",
                           "format", "partner_id", "simplify", "target_app_key"})


def encode_value(value: Any) -> str | None:
    """The wire form of one parameter value; None when it is to be left out."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_top_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (str, int, Decimal)):
        text = str(value)
        return text if text != "" else None
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        raise TypeError("file/bytes parameters are not supported (uploads are out of scope)")
    if isinstance(value, (Sequence, set, frozenset)):
        items = [encode_value(v) for v in value]
        joined = ",".join(v for v in items if v is not None)
        return joined or None
    raise TypeError(f"cannot encode a {type(value).__name__} as a TOP parameter")


def encode_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Encode business parameters, dropping None/empty values."""
    out: dict[str, str] = {}
    for key, value in params.items():
        text = encode_value(value)
        if text is not None:
            out[key] = text
    return out


def build_request(*, method: str, params: Mapping[str, Any], app_key: str, secret: str,
                  sign_method: SignMethod, timestamp: datetime, session: str | None = None,
                  simplify: bool = False, partner_id: str | None = None) -> dict[str, str]:
    """The full signed form for one attempt (system + business parameters + ``sign``)."""
    clash = SYSTEM_PARAMS.intersection(params)
    if clash:
        raise ValueError(f"system parameters cannot be passed as business parameters: {sorted(clash)}")
    form = encode_params(params)
    form.update(encode_params({
        "method": method, "app_key": app_key, "session": session, "timestamp": timestamp,
        "v": API_VERSION, "sign_method": sign_method, "format": "json",
        "partner_id": partner_id, "simplify": True if simplify else None,
    }))
    form["sign"] = sign(form, secret, sign_method)
    return form
