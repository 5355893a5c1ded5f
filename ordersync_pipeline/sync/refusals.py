"""A detail call refused for one record: kept in the lake, quarantined by the normaliser, never fatal.

When the platform refuses a detail call (fullinfo, refund.get) for ONE record permanently (the record
was deleted between the list and the detail call: ``isv.refund-not-exist``, ``isv.trade-not-exist``),
retrying the partition fails the same way forever and blocks everything else in its window. So such a
refusal becomes a *refusal page* in the lake, in the detail answer's place (``page_no`` 0):

    {"ordersync_detail_refusal": {"method": ..., "record": <the list record>,
                                  "error_response": {"code", "msg", "sub_code", "sub_msg", "request_id"}}}

``error_response`` is rebuilt from the classified error's fields (everything TOP sent; never the
session or secret). Its one item is the list record carrying ``REFUSED`` (the error), which the
normalisers turn into a quarantine row naming the API, the record key and the platform's
sub_code/message; the record still counts as fetched and a from-lake rebuild gives the same rows.

Only a refusal *about the record* qualifies (``is_record_refusal``). Credentials, permissions, quotas,
transport and server faults are not about one record: they fail (or retry) the partition as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.top.envelope import loads
from ordersync_pipeline.top.errors import BusinessError, MalformedResponseError, TopError, classify
from ordersync_pipeline.top.pages import Page
from ordersync_pipeline.warehouse.types import escape_unstorable

__all__ = ["REFUSED", "REFUSAL_ENVELOPE", "Refusal", "is_record_refusal", "refusal_page", "refusal_items",
           "refusal_of", "without_refusal"]

REFUSAL_ENVELOPE = "ordersync_detail_refusal"
# The key a refused record's item carries the error under (never a TOP field name).
REFUSED = "_ordersync_refused"
_PREFIX = b'{"' + REFUSAL_ENVELOPE.encode() + b'"'
# top-api.md 2.5: ``isv.<thing>-not-exist[:<key>]`` means nothing was found for the key asked.
_NOT_EXIST = re.compile(r"^isv\.[a-z0-9-]+-not-exist(:.*)?$")
_ERROR_FIELDS = ("code", "msg", "sub_code", "sub_msg", "request_id")


def is_record_refusal(exc: BaseException, *, key_param: str) -> bool:
    """True when ``exc`` is the platform refusing a detail call because of the one record asked for:
    a business error (code 15 + ``isv.*``) saying the record does not exist, or that the record's own
    key (``key_param``, e.g. ``refund_id``) is invalid. Anything else about the call (session,
    permission, quota, transport, server) is not about the record and must fail the partition."""
    if not isinstance(exc, BusinessError):
        return False
    sub_code = exc.sub_code or ""
    return bool(_NOT_EXIST.match(sub_code)) or sub_code == f"isv.invalid-parameter:{key_param}"


@dataclass(frozen=True)
class Refusal:
    """The platform's refusal of one detail call, as kept in the lake."""

    method: str
    error: Mapping[str, Any]          # the error_response fields

    @classmethod
    def of(cls, exc: TopError) -> Refusal:
        return cls(method=exc.method, error=_error_fields(exc))

    def describe(self) -> str:
        """One secret-free line: the API, the platform's code, sub_code, message and request id."""
        return escape_unstorable(" ".join(str(classify(self.error, self.method)).split()))

    def reason(self, what: str, key: str | None) -> str:
        """The quarantine reason for the refused record ``what`` ``key`` (e.g. ``refund 123``)."""
        return f"{what} {key or '?'}: the detail call was refused for this record: {self.describe()}"


def refusal_page(exc: TopError, *, record: Mapping[str, Any], shop_id: str, method: str,
                 window_start: Any, window_end: Any) -> Page:
    """The lake page standing for a refused detail answer (``page_no`` 0, like the answer it replaces)."""
    doc = {REFUSAL_ENVELOPE: {"method": method, "record": dict(record), "error_response": _error_fields(exc)}}
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return Page(shop_id=shop_id, method=method, window_start=window_start, window_end=window_end, page_no=0,
                page_size=1, request_id=exc.request_id, fetched_at=utc_now(), body=body,
                items=[_item(doc[REFUSAL_ENVELOPE])], total_results=None, has_next=None)


def _error_fields(exc: TopError) -> dict[str, Any]:
    return {name: getattr(exc, name) for name in _ERROR_FIELDS if getattr(exc, name) is not None}


def refusal_items(body: bytes) -> list[Any] | None:
    """The items of a refusal page's ``body``; None when the body is not one (a platform answer).
    Raises ``MalformedResponseError`` when it is one but cannot be read (the lake reports it corrupt)."""
    if not body.startswith(_PREFIX):
        return None
    try:
        doc = loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedResponseError(f"{REFUSAL_ENVELOPE} body is not valid JSON ({len(body)} bytes)",
                                     method=REFUSAL_ENVELOPE) from None
    inner = doc.get(REFUSAL_ENVELOPE) if isinstance(doc, dict) and len(doc) == 1 else None
    if not isinstance(inner, dict):
        return None
    return [_item(inner)]


def _item(inner: Mapping[str, Any]) -> dict[str, Any]:
    record = inner.get("record")
    item: dict[str, Any] = dict(record) if isinstance(record, Mapping) else {}
    item[REFUSED] = {"method": inner.get("method"), "error": inner.get("error_response") or {}}
    return item


def refusal_of(item: Any) -> Refusal | None:
    """The refusal an item carries (an item of a refusal page), else None."""
    if not isinstance(item, Mapping):
        return None
    refused = item.get(REFUSED)
    if not isinstance(refused, Mapping):
        return None
    error = refused.get("error")
    return Refusal(method=str(refused.get("method") or "?"), error=error if isinstance(error, Mapping) else {})


def without_refusal(item: Mapping[str, Any]) -> dict[str, Any]:
    """The list record a refusal item stands for (its quarantine payload)."""
    return {key: value for key, value in item.items() if key != REFUSED}
