"""Order quality checks over one shop's Asia/Shanghai day: rules the platform's own data always obeys.

They warn, they never block loading: a failing rule points at a record worth a look (a normaliser
gap, a platform oddity), not at a reason to stop syncing. Each check covers the trades **created** in
the day (after the day's reconciliation, so the set is complete):

* ``order_lines_add_up``: the lines' ``payment`` plus the trade's ``post_fee`` equal the trade's
  ``payment`` (to the fen), and a trade has at least one line.
* ``refunds_within_payment`` (when a ``refunds`` table exists): no refund's ``refund_fee`` exceeds what
  its order line was paid, and a trade's successful refunds together never exceed its ``payment``.
* ``status_transitions_valid``: every change of status seen for a trade changed in the day (its
  versions in the day's increment pages in the lake, then its stored row) is one the platform makes.
  Versions in between may never have been seen, so "makes" means reachable in the platform's graph.
* ``presale_amounts_agree``: a presale (``type = step``) trade's paid amount agrees with its stage:
  nothing before the deposit, less than the whole once only the deposit is paid (or forfeited), all of
  it once the balance is paid, and the trade waits for payment exactly while the balance is due.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ordersync_pipeline.sync.lake import PageLake, PartitionListing
from ordersync_pipeline.sync.runner import lake_dataset
from ordersync_pipeline.sync.windows import PARTITION_KEY_FORMAT, Window
from ordersync_pipeline.timeutil import SHANGHAI, parse_top_time
from ordersync_pipeline.top.pages import TRADES
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.days import day_number, runs
from ordersync_pipeline.warehouse.tables import metadata, trade_orders, trades

__all__ = ["QualityResult", "CHECKS", "order_lines_add_up", "refunds_within_payment",
           "status_transitions_valid", "presale_amounts_agree", "PLATFORM_TRANSITIONS", "reachable",
           "day_increment_keys", "run_all", "clean_days", "check_names"]

MAX_EXAMPLES = 10
ZERO = Decimal("0.00")


@dataclass(frozen=True)
class QualityResult:
    name: str
    checked: int                          # records looked at
    violations: int
    examples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.violations == 0

    def summary(self, where: str) -> str:
        if self.passed:
            return f"{where}: all {self.checked} checked agree"
        return f"{where}: {self.violations} of {self.checked} do not, e.g. {'; '.join(self.examples[:3])}"


# Descriptions for people (the asset checks show them).
CHECKS: dict[str, str] = {
    "order_lines_add_up": "Warns when a trade created in the day has no order lines, or its lines' payment plus "
                          "its post_fee differ from its payment.",
    "refunds_within_payment": "Warns when a refund exceeds what its order line was paid, or a trade's successful "
                              "refunds exceed its payment (trades created in the day).",
    "status_transitions_valid": "Warns when a trade changed in the day went from one status to another that the "
                                "platform never leads to (versions from the day's increment pages, then the "
                                "stored row).",
    "presale_amounts_agree": "Warns when a presale (step) trade created in the day has a paid amount that does not "
                             "fit its stage (deposit, balance, forfeited) or a status that does not fit it.",
}


class _Examples:
    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text)


def _in_day(shop_id: str, window: Window) -> sa.ColumnElement[bool]:
    return sa.and_(trades.c.shop_id == shop_id, trades.c.created >= window.start, trades.c.created < window.end)


def _count_and_examples(warehouse: Warehouse, candidates: sa.Select[Any],
                        bad: Callable[[sa.Subquery], sa.ColumnElement[bool]],
                        ) -> tuple[int, int, list[Mapping[str, Any]]]:
    """``(checked, violations, up to MAX_EXAMPLES offending rows in tid order)`` of the rows of
    ``candidates`` (a select with a ``tid`` column), ``bad`` saying which offend. The database compares
    and counts; only the examples travel (a day's trades through Python's row processing cost ~0.1 s)."""
    day = candidates.subquery("day")
    offends = bad(day)
    counted = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((offends, 1), else_=0)), 0))
    with warehouse.engine.connect() as conn:
        checked, violations = conn.execute(counted.select_from(day)).one()
        if not violations:
            return int(checked), 0, []
        examples = conn.execute(sa.select(day).where(offends).order_by(day.c.tid).limit(MAX_EXAMPLES))
        return int(checked), int(violations), [dict(row) for row in examples.mappings()]


def _lines_do_not_add_up(day: sa.Subquery) -> sa.ColumnElement[bool]:
    # Money compares in its stored unit (integer fen on SQLite, NUMERIC elsewhere): exact everywhere.
    return sa.or_(day.c.lines == 0, sa.and_(
        day.c.payment.is_not(None),
        sa.func.coalesce(day.c.line_total, 0) + sa.func.coalesce(day.c.post_fee, 0) != day.c.payment))


def _per_trade_lines(shop_id: str, window: Window) -> sa.Select[Any]:
    return (sa.select(trades.c.tid, trades.c.created, trades.c.payment, trades.c.post_fee,
                      sa.func.count(trade_orders.c.oid).label("lines"),
                      sa.func.sum(trade_orders.c.payment).label("line_total"))
            .select_from(trades.outerjoin(trade_orders, trade_orders.c.tid == trades.c.tid))
            .where(_in_day(shop_id, window))
            .group_by(trades.c.tid, trades.c.created, trades.c.payment, trades.c.post_fee))


def order_lines_add_up(warehouse: Warehouse, shop_id: str, window: Window) -> QualityResult:
    checked, violations, rows = _count_and_examples(warehouse, _per_trade_lines(shop_id, window),
                                                    _lines_do_not_add_up)
    examples = []
    for row in rows:
        if not row["lines"]:
            examples.append(f"tid {row['tid']}: no order lines")
        else:  # a NULL payment is never an example: a projection without amounts cannot be checked
            examples.append(f"tid {row['tid']}: lines {Decimal(row['line_total'] or 0)} + post_fee "
                            f"{row['post_fee'] or ZERO} != payment {row['payment']}")
    return QualityResult("order_lines_add_up", checked, violations, examples)


def _day_refunds(refunds: sa.Table, shop_id: str, window: Window) -> sa.Select[Any]:
    """The refunds of the trades created in the day, with their line's and trade's payment (and, for
    counting days together, the trade's ``created``)."""
    day_tids = (sa.select(trades.c.tid).where(trades.c.shop_id == shop_id, trades.c.created >= window.start,
                                              trades.c.created < window.end))
    return (sa.select(refunds.c.refund_id, refunds.c.tid, refunds.c.status, refunds.c.refund_fee,
                      trade_orders.c.payment.label("line_payment"), trades.c.payment.label("trade_payment"),
                      trades.c.created)
            .select_from(refunds.outerjoin(trade_orders, trade_orders.c.oid == refunds.c.oid)
                         .outerjoin(trades, trades.c.tid == refunds.c.tid))
            .where(refunds.c.tid.in_(day_tids)))


def refunds_within_payment(warehouse: Warehouse, shop_id: str, window: Window) -> QualityResult | None:
    """None when the warehouse has no refunds table (the refunds stream is not registered)."""
    refunds = metadata.tables.get("refunds")
    if refunds is None:
        return None
    query = _day_refunds(refunds, shop_id, window)
    bad = _Examples()
    refunded: dict[int, Decimal] = defaultdict(lambda: ZERO)
    paid: dict[int, Decimal | None] = {}
    checked = 0
    with warehouse.engine.connect() as conn:
        for row in conn.execute(query).mappings():
            checked += 1
            fee, line_paid = row["refund_fee"], row["line_payment"]
            if fee is not None and line_paid is not None and fee > line_paid:
                bad.add(f"refund {row['refund_id']} of tid {row['tid']}: {fee} > line payment {line_paid}")
            if fee is not None and row["status"] == "SUCCESS":
                refunded[int(row["tid"])] += fee
            paid[int(row["tid"])] = row["trade_payment"]
    for tid, total in refunded.items():
        trade_paid = paid.get(tid)
        if trade_paid is not None and total > trade_paid:
            bad.add(f"tid {tid}: successful refunds {total} > payment {trade_paid}")
    return QualityResult("refunds_within_payment", checked, bad.count, bad.examples)


# The platform's trade status graph (top-api.md §4.1): each status and the ones it can lead to
# directly. Closed states are terminal; a finished trade stays finished through an after-sale refund.
PLATFORM_TRANSITIONS: dict[str, frozenset[str]] = {
    "TRADE_NO_CREATE_PAY": frozenset({"WAIT_BUYER_PAY", "TRADE_CLOSED_BY_TAOBAO"}),
    "WAIT_BUYER_PAY": frozenset({"PAY_PENDING", "WAIT_PRE_AUTH_CONFIRM", "PAID_FORBID_CONSIGN",
                                 "WAIT_SELLER_SEND_GOODS", "TRADE_CLOSED_BY_TAOBAO"}),
    "PAY_PENDING": frozenset({"WAIT_BUYER_PAY", "WAIT_SELLER_SEND_GOODS", "TRADE_CLOSED_BY_TAOBAO"}),
    "WAIT_PRE_AUTH_CONFIRM": frozenset({"WAIT_SELLER_SEND_GOODS", "TRADE_CLOSED_BY_TAOBAO"}),
    "PAID_FORBID_CONSIGN": frozenset({"WAIT_SELLER_SEND_GOODS", "TRADE_CLOSED"}),
    "WAIT_SELLER_SEND_GOODS": frozenset({"SELLER_CONSIGNED_PART", "WAIT_BUYER_CONFIRM_GOODS", "TRADE_CLOSED"}),
    "SELLER_CONSIGNED_PART": frozenset({"WAIT_BUYER_CONFIRM_GOODS", "TRADE_CLOSED"}),
    "WAIT_BUYER_CONFIRM_GOODS": frozenset({"TRADE_BUYER_SIGNED", "TRADE_FINISHED", "TRADE_CLOSED"}),
    "TRADE_BUYER_SIGNED": frozenset({"TRADE_FINISHED", "TRADE_CLOSED"}),
    "TRADE_FINISHED": frozenset(),
    "TRADE_CLOSED": frozenset(),
    "TRADE_CLOSED_BY_TAOBAO": frozenset(),
}


def _closure(graph: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for start in graph:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            status = todo.pop()
            if status not in seen:
                seen.add(status)
                todo.extend(graph.get(status, ()))
        out[start] = frozenset(seen)
    return out


_REACHABLE = _closure(PLATFORM_TRANSITIONS)


def reachable(before: str, after: str) -> bool:
    """Can the platform take a trade from ``before`` to ``after`` (directly or through states between)?"""
    return before == after or after in _REACHABLE.get(before, frozenset())


def day_increment_keys(window: Window, increment_minutes: int) -> list[str]:
    """The increment partition keys starting within the day ``window``."""
    start = window.start.astimezone(SHANGHAI)
    step = timedelta(minutes=increment_minutes)
    count = int((window.end - window.start) / step)
    return [(start + i * step).strftime(PARTITION_KEY_FORMAT) for i in range(count)]


def status_transitions_valid(warehouse: Warehouse, lake: PageLake, shop_id: str, window: Window, *,
                             increment_keys: Sequence[str], listing: PartitionListing | None = None) -> QualityResult:
    """``listing``: the shop's increment directory as listed earlier in the run (None: listed now)."""
    versions: dict[int, dict[datetime, str]] = defaultdict(dict)
    dataset = lake_dataset("trades", "increment")
    # One directory listing instead of a manifest open per 15-minute partition (96 a day).
    listing = listing or lake.listing(shop_id=shop_id, stream=dataset)
    for key in listing.published(increment_keys):
        for page in lake.read_partition(shop_id=shop_id, stream=dataset, partition_key=key, shape=TRADES):
            for record in page.items:
                _add_version(versions, record)
    if versions:
        stored = sa.select(trades.c.tid, trades.c.modified, trades.c.status).where(
            trades.c.tid.in_(list(versions)))
        with warehouse.engine.connect() as conn:
            for tid, modified, status in conn.execute(stored):
                versions[int(tid)].setdefault(modified, status)
    bad = _Examples()
    for tid, seen in sorted(versions.items()):
        path = [status for _, status in sorted(seen.items())]
        for before, after in zip(path, path[1:]):
            if not reachable(before, after):
                bad.add(f"tid {tid}: {before} -> {after}")
                break
    return QualityResult("status_transitions_valid", len(versions), bad.count, bad.examples)


def _add_version(versions: dict[int, dict[datetime, str]], record: object) -> None:
    if not isinstance(record, dict):
        return
    tid, modified, status = record.get("tid"), record.get("modified"), record.get("status")
    if not isinstance(modified, str) or not isinstance(status, str) or not isinstance(tid, (int, str)):
        return  # the normaliser quarantined it; nothing to say about its transitions here
    try:
        versions[int(tid)].setdefault(parse_top_time(modified), status)
    except ValueError:
        return


_AWAITING_PAYMENT = ("WAIT_BUYER_PAY", "TRADE_NO_CREATE_PAY")
_BEFORE_BALANCE = ("WAIT_BUYER_PAY", "TRADE_NO_CREATE_PAY", "TRADE_CLOSED_BY_TAOBAO")


def _case_sensitive(warehouse: Warehouse) -> Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]]:
    """Text compared as Python compares it: MariaDB's utf8mb4_unicode_ci would take "Step" (or "step ") for
    "step". ``CAST(... AS BINARY)`` rather than the ``BINARY`` operator, which MySQL 8 deprecates."""
    if warehouse.dialect_name == "mysql":
        return lambda column: sa.type_coerce(sa.cast(column, mysql.BINARY()), sa.String())
    return lambda column: column


def _presale_out_of_step(day: sa.Subquery, text: Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]],
                         ) -> sa.ColumnElement[bool]:
    """``_presale_problem(...) is not None`` in SQL, rule for rule (NULLs coalesced as there)."""
    stage, payment = text(day.c.step_trade_status), day.c.payment
    paid = sa.func.coalesce(day.c.step_paid_fee, 0)
    status = text(sa.func.coalesce(day.c.status, ""))  # a NULL status is "not in" every list, as in Python
    return sa.or_(day.c.step_trade_status.is_(None), sa.and_(payment.is_not(None), sa.or_(
        sa.and_(stage == "FRONT_NOPAID_FINAL_NOPAID", paid != 0),
        sa.and_(stage.in_(["FRONT_PAID_FINAL_NOPAID", "FRONT_PAID_FRONT_FORFEITED"]),
                sa.or_(paid < 0, paid >= payment)),
        sa.and_(stage == "FRONT_PAID_FINAL_PAID", paid != payment),
        sa.and_(stage.in_(["FRONT_NOPAID_FINAL_NOPAID", "FRONT_PAID_FINAL_NOPAID"]),
                status.not_in(_BEFORE_BALANCE)),
        sa.and_(stage == "FRONT_PAID_FINAL_PAID", status.in_(_AWAITING_PAYMENT)),
        sa.and_(stage == "FRONT_PAID_FRONT_FORFEITED", status != "TRADE_CLOSED_BY_TAOBAO"))))


def _step_trades(warehouse: Warehouse, shop_id: str, window: Window) -> sa.Select[Any]:
    text = _case_sensitive(warehouse)
    return sa.select(trades.c.tid, trades.c.created, trades.c.status, trades.c.payment, trades.c.step_trade_status,
                     trades.c.step_paid_fee).where(_in_day(shop_id, window), text(trades.c.type) == "step")


def presale_amounts_agree(warehouse: Warehouse, shop_id: str, window: Window) -> QualityResult:
    text = _case_sensitive(warehouse)
    checked, violations, rows = _count_and_examples(warehouse, _step_trades(warehouse, shop_id, window),
                                                    lambda day: _presale_out_of_step(day, text))
    examples = []
    for row in rows:
        problem = _presale_problem(row["step_trade_status"], row["step_paid_fee"], row["payment"], row["status"])
        examples.append(f"tid {row['tid']}: {problem}")
    return QualityResult("presale_amounts_agree", checked, violations, examples)


def _presale_problem(stage: str | None, paid: Decimal | None, payment: Decimal | None,
                     status: str | None) -> str | None:
    paid = paid if paid is not None else ZERO
    if stage is None:
        return "a presale trade without step_trade_status"
    if payment is None:
        return None
    if stage == "FRONT_NOPAID_FINAL_NOPAID" and paid != ZERO:
        return f"nothing paid yet but step_paid_fee {paid}"
    if stage in ("FRONT_PAID_FINAL_NOPAID", "FRONT_PAID_FRONT_FORFEITED") and not ZERO <= paid < payment:
        return f"{stage} with step_paid_fee {paid} not below payment {payment}"
    if stage == "FRONT_PAID_FINAL_PAID" and paid != payment:
        return f"balance paid but step_paid_fee {paid} != payment {payment}"
    if stage in ("FRONT_NOPAID_FINAL_NOPAID", "FRONT_PAID_FINAL_NOPAID") and status not in _BEFORE_BALANCE:
        return f"{stage} but status {status}"
    if stage == "FRONT_PAID_FINAL_PAID" and status in _AWAITING_PAYMENT:
        return f"balance paid but status {status}"
    if stage == "FRONT_PAID_FRONT_FORFEITED" and status != "TRADE_CLOSED_BY_TAOBAO":
        return f"deposit forfeited but status {status}"
    return None


def run_all(warehouse: Warehouse, lake: PageLake, shop_id: str, window: Window, *, increment_minutes: int,
            clean: Mapping[str, int] | None = None, listing: PartitionListing | None = None) -> list[QualityResult]:
    """Every quality check that applies to this warehouse, for one shop's day.

    ``clean``: ``{check: checked}`` of checks already known to pass the day (``clean_days``, with the
    warehouse unchanged since); those are not asked again. ``listing``: as for ``status_transitions_valid``."""
    known = clean or {}

    def passed(name: str) -> QualityResult | None:
        return QualityResult(name, known[name], 0) if name in known else None

    results = [passed("order_lines_add_up") or order_lines_add_up(warehouse, shop_id, window)]
    refunds = passed("refunds_within_payment") or refunds_within_payment(warehouse, shop_id, window)
    if refunds is not None:
        results.append(refunds)
    results.append(status_transitions_valid(warehouse, lake, shop_id, window,
                                            increment_keys=day_increment_keys(window, increment_minutes),
                                            listing=listing))
    results.append(passed("presale_amounts_agree") or presale_amounts_agree(warehouse, shop_id, window))
    return results


def clean_days(warehouse: Warehouse, shop_id: str, windows: Sequence[Window]) -> list[dict[str, int]]:
    """For each of ``windows`` (days of one shop), ``{check: checked}`` of the SQL checks that find nothing
    there: each check counted for all the days in one query (per run of adjacent days) instead of one
    query a day. A check with violations is left out, so ``run_all`` asks it for the day and its examples
    come from the day's own query, as always."""
    out: list[dict[str, int]] = [{} for _ in windows]
    text = _case_sensitive(warehouse)
    refunds = metadata.tables.get("refunds")
    for run in runs([(w.start, w.end) for w in windows]):
        span = Window(windows[run[0]].start, windows[run[-1]].end)
        starts = [windows[i].start for i in run]
        counted = {
            "order_lines_add_up": _counted_by_day(warehouse, _per_trade_lines(shop_id, span),
                                                  _lines_do_not_add_up, starts),
            "presale_amounts_agree": _counted_by_day(warehouse, _step_trades(warehouse, shop_id, span),
                                                     lambda day: _presale_out_of_step(day, text), starts),
        }
        if refunds is not None:
            counted["refunds_within_payment"] = _refunds_counted_by_day(warehouse, refunds, shop_id, span, starts)
        for name, per_day in counted.items():
            for position, index in enumerate(run):
                checked, violations = per_day.get(position, (0, 0))
                if not violations:
                    out[index][name] = checked
    return out


def _counted_by_day(warehouse: Warehouse, candidates: sa.Select[Any],
                    bad: Callable[[sa.Subquery], sa.ColumnElement[bool]],
                    starts: Sequence[datetime]) -> dict[int, tuple[int, int]]:
    """``{day number: (checked, violations)}`` of ``_count_and_examples`` for the days starting at ``starts``
    (adjacent; ``candidates`` a select over all of them with a ``created`` column); days without rows absent."""
    day = candidates.subquery("day")
    flagged = sa.select(day_number(day.c.created, starts).label("day_no"),
                        sa.case((bad(day), 1), else_=0).label("bad")).subquery("flagged")
    query = sa.select(flagged.c.day_no, sa.func.count(), sa.func.sum(flagged.c.bad)).group_by(flagged.c.day_no)
    with warehouse.engine.connect() as conn:
        return {int(day_no): (int(checked), int(violations or 0)) for day_no, checked, violations in conn.execute(query)}


def _refunds_counted_by_day(warehouse: Warehouse, refunds: sa.Table, shop_id: str, window: Window,
                            starts: Sequence[datetime]) -> dict[int, tuple[int, int]]:
    """``refunds_within_payment``'s (checked, violations) per day, counted in the database by its rules:
    a refund above its line's payment, and a trade whose successful refunds together exceed its payment."""
    text = _case_sensitive(warehouse)
    day = _day_refunds(refunds, shop_id, window).subquery("day")
    fee = day.c.refund_fee
    flagged = sa.select(
        day_number(day.c.created, starts).label("day_no"), day.c.tid, day.c.trade_payment,
        sa.case((sa.and_(fee.is_not(None), day.c.line_payment.is_not(None), fee > day.c.line_payment), 1),
                else_=0).label("over_line"),
        sa.case((sa.and_(fee.is_not(None), text(day.c.status) == "SUCCESS"), fee)).label("success_fee"),
    ).subquery("flagged")
    per_trade = (sa.select(flagged.c.day_no, sa.func.count().label("refunds"),
                           sa.func.sum(flagged.c.over_line).label("over_line"),
                           sa.func.sum(flagged.c.success_fee).label("refunded"),
                           sa.func.max(flagged.c.trade_payment).label("paid"))
                 .group_by(flagged.c.day_no, flagged.c.tid).subquery("per_trade"))
    over_paid = sa.case((per_trade.c.refunded > per_trade.c.paid, 1), else_=0)
    query = (sa.select(per_trade.c.day_no, sa.func.sum(per_trade.c.refunds),
                       sa.func.sum(per_trade.c.over_line) + sa.func.sum(over_paid))
             .group_by(per_trade.c.day_no))
    with warehouse.engine.connect() as conn:
        return {int(day_no): (int(checked), int(violations or 0)) for day_no, checked, violations in conn.execute(query)}


def check_names(table_names: Iterable[str] | None = None) -> list[str]:
    """The quality checks that apply: ``refunds_within_payment`` only with a refunds table."""
    tables = set(metadata.tables if table_names is None else table_names)
    return [name for name in CHECKS if name != "refunds_within_payment" or "refunds" in tables]
