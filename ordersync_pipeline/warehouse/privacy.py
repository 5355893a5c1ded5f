"""Receiver personal data never reaches the warehouse: the last line of defence for ``trade_details``.

The normaliser already leaves these out of ``trades``; a cached fullinfo trade is JSON we did not
build field by field, so it is scrubbed again here before it is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ordersync_pipeline.warehouse.types import escape_unstorable

# Kept for regional sales; every other receiver_* field (name, mobile, phone, address, zip, town...)
# is personal or close enough to it.
KEPT_RECEIVER_FIELDS = frozenset({"receiver_state", "receiver_city", "receiver_district", "receiver_country"})
EXTRA_PERSONAL_FIELDS = frozenset({"oaid"})


def is_personal(field: str) -> bool:
    return (field.startswith("receiver_") and field not in KEPT_RECEIVER_FIELDS) or field in EXTRA_PERSONAL_FIELDS


def scrub_detail(detail: Any) -> str:
    """The fullinfo trade (JSON text, bytes or a dict) as JSON text without receiver personal fields.

    The text is always storable: a lone surrogate (JSON can carry ``"\\ud800"``) stays escaped
    instead of being written raw, which no backend could encode."""
    trade = json.loads(detail) if isinstance(detail, (str, bytes, bytearray)) else detail
    if not isinstance(trade, Mapping):
        raise ValueError(f"trade_details.detail must be a JSON object, got {type(trade).__name__}")
    return escape_unstorable(json.dumps({k: v for k, v in trade.items() if not is_personal(k)},
                                        ensure_ascii=False))
