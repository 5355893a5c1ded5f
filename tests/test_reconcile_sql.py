"""Reconciliation's work done in the database gives on every backend what the row-by-row Python gave: the
order quality checks' counts and messages (the Python rules are kept here as the reference) through NULL
payments and post fees, trades without lines, every presale stage and status, case-variant text and more
offenders than examples; and a day's stored count."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from ordersync_pipeline.reconcile import quality
from ordersync_pipeline.sync.windows import day_window
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import trade_orders, trades

WINDOW = day_window(date(2026, 11, 24))
AT = WINDOW.start + timedelta(hours=3)
NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)
ZERO = Decimal("0.00")


def _trade(tid: int, **values: Any) -> dict[str, Any]:
    row = {"shop_id": "shop-1", "tid": tid, "type": "fixed", "status": "WAIT_SELLER_SEND_GOODS", "created": AT,
           "modified": AT, "synced_at": NOW, "payment": None, "post_fee": None, "step_trade_status": None,
           "step_paid_fee": None}
    return {**row, **values}


def _line(oid: int, tid: int, payment: Decimal | None) -> dict[str, Any]:
    return {"oid": oid, "tid": tid, "shop_id": "shop-1", "payment": payment, "modified": AT, "synced_at": NOW}


def _insert(warehouse: Warehouse, rows: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]] = ()) -> None:
    with warehouse.engine.begin() as conn:
        conn.execute(trades.insert(), list(rows))
        if lines:
            conn.execute(trade_orders.insert(), list(lines))


def _reference_order_lines(warehouse: Warehouse) -> tuple[int, list[str]]:
    """The rule as it was written row by row in Python (checked, every offender's message by tid)."""
    with warehouse.engine.connect() as conn:
        day = conn.execute(sa.select(trades.c.tid, trades.c.payment, trades.c.post_fee).where(
            trades.c.shop_id == "shop-1", trades.c.created >= WINDOW.start, trades.c.created < WINDOW.end,
        ).order_by(trades.c.tid)).all()
        sums = {int(tid): Decimal(total or 0) for tid, total in conn.execute(
            sa.select(trade_orders.c.tid, sa.func.sum(trade_orders.c.payment)).group_by(trade_orders.c.tid))}
    out = []
    for tid, payment, post_fee in day:
        if tid not in sums:
            out.append(f"tid {tid}: no order lines")
        elif payment is not None and sums[tid] + (post_fee or ZERO) != payment:
            out.append(f"tid {tid}: lines {sums[tid]} + post_fee {post_fee or ZERO} != payment {payment}")
    return len(day), out


def _reference_presale(warehouse: Warehouse) -> tuple[int, list[str]]:
    with warehouse.engine.connect() as conn:
        day = conn.execute(sa.select(trades).where(trades.c.shop_id == "shop-1").order_by(trades.c.tid)).mappings()
        step = [row for row in day if row["type"] == "step"]
    out = []
    for row in step:
        problem = quality._presale_problem(row["step_trade_status"], row["step_paid_fee"], row["payment"],
                                           row["status"])
        if problem:
            out.append(f"tid {row['tid']}: {problem}")
    return len(step), out


def test_order_lines_add_up_in_sql_as_row_by_row(wh: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    money = [None, ZERO, Decimal("5.00"), Decimal("12.30")]
    rows, lines, tid, oid = [], [], 0, 0
    # Every payment x post_fee, with no lines, one NULL line, lines that add up to 12.30 and lines of 7.30.
    for payment, post_fee, line_set in itertools.product(
            money, money, [(), (None,), (Decimal("7.30"), Decimal("5.00")), (Decimal("7.30"), None)]):
        tid += 1
        rows.append(_trade(tid, payment=payment, post_fee=post_fee))
        for amount in line_set:
            oid += 1
            lines.append(_line(oid, tid, amount))
    rows.append(_trade(tid + 1, shop_id="shop-2"))                      # another shop: not looked at
    rows.append(_trade(tid + 2, created=WINDOW.end))                    # the next day: not looked at
    _insert(wh, rows, lines)
    checked, messages = _reference_order_lines(wh)
    assert checked == tid and 16 < len(messages) < tid
    assert any("lines 0 + post_fee 0.00 != payment 12.30" in m for m in messages)   # the sum of NULL lines
    monkeypatch.setattr(quality, "MAX_EXAMPLES", 1000)
    result = quality.order_lines_add_up(wh, "shop-1", WINDOW)
    assert (result.checked, result.violations, result.examples) == (checked, len(messages), messages)
    monkeypatch.setattr(quality, "MAX_EXAMPLES", 10)
    capped = quality.order_lines_add_up(wh, "shop-1", WINDOW)
    assert (capped.violations, capped.examples) == (len(messages), messages[:10])
    assert quality.order_lines_add_up(wh, "shop-3", WINDOW) == quality.QualityResult("order_lines_add_up", 0, 0)


def test_presale_amounts_agree_in_sql_as_row_by_row(wh: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    stages = [None, "FRONT_NOPAID_FINAL_NOPAID", "FRONT_PAID_FINAL_NOPAID", "FRONT_PAID_FRONT_FORFEITED",
              "FRONT_PAID_FINAL_PAID", "SOMETHING_NEW", "front_paid_final_paid", "FRONT_PAID_FINAL_PAID "]
    paid = [None, Decimal("-1.00"), ZERO, Decimal("1.00"), Decimal("10.00"), Decimal("11.00")]
    payments = [None, ZERO, Decimal("10.00")]
    statuses = [None, "WAIT_BUYER_PAY", "TRADE_NO_CREATE_PAY", "TRADE_CLOSED_BY_TAOBAO", "WAIT_SELLER_SEND_GOODS",
                "wait_buyer_pay", "trade_closed_by_taobao", "TRADE_CLOSED_BY_TAOBAO "]
    rows = [_trade(tid, type="step", step_trade_status=stage, step_paid_fee=fee, payment=payment, status=status)
            for tid, (stage, fee, payment, status) in enumerate(itertools.product(stages, paid, payments, statuses),
                                                                start=1)]
    base = len(rows)
    rows += [_trade(base + 1, type="Step", step_trade_status=None), _trade(base + 2, type=None),
             _trade(base + 4, type="step ", step_trade_status=None),
             _trade(base + 3, type="fixed", step_trade_status=None)]          # not presale: not checked
    _insert(wh, rows)
    checked, messages = _reference_presale(wh)
    assert checked == base and 100 < len(messages) < base
    monkeypatch.setattr(quality, "MAX_EXAMPLES", 10_000)
    result = quality.presale_amounts_agree(wh, "shop-1", WINDOW)
    assert (result.checked, result.violations, result.examples) == (checked, len(messages), messages)
    monkeypatch.setattr(quality, "MAX_EXAMPLES", 10)
    capped = quality.presale_amounts_agree(wh, "shop-1", WINDOW)
    assert (capped.violations, capped.examples) == (len(messages), messages[:10])


def test_a_days_stored_count_is_the_number_of_its_versions(wh: Warehouse) -> None:
    _insert(wh, [_trade(1, created=WINDOW.start), _trade(2), _trade(3, created=WINDOW.end),
                 _trade(4, shop_id="shop-2"), _trade(5, created=WINDOW.start - timedelta(microseconds=1))])
    assert set(wh.versions_between("trades", shop_id="shop-1", column="created", start=WINDOW.start,
                                   end=WINDOW.end)) == {1, 2}
    assert wh.count_between("trades", shop_id="shop-1", column="created", start=WINDOW.start, end=WINDOW.end) == 2
    assert wh.count_between("trades", shop_id="shop-3", column="created", start=WINDOW.start, end=WINDOW.end) == 0
