"""What a terminal sync did, in a few lines: each run, rows per shop and stream, each reconciled day,
calls, quarantine, time.

Figures are this invocation's own: API calls, quarantined records and reconciled days are counted by the
run ids it started, so a sync running beside another never counts the other's work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa

from ordersync_pipeline.reconcile.records import DayResult, read_days
from ordersync_pipeline.sync.streams import STREAMS
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import api_calls, metadata, quarantine

__all__ = ["RunReport", "SyncReport", "StockSummary", "collect_figures", "collect_stock"]


@dataclass
class RunReport:
    name: str                    # e.g. "increment trades+refunds"
    partitions: int              # partitions x streams asked for
    materialized: int            # partitions x streams that completed
    seconds: float
    run_id: str | None = None
    error: str | None = None
    # CPU of the process running it plus the loader processes it started and ended (not the database's).
    cpu_seconds: float = 0.0

    @property
    def success(self) -> bool:
        return self.error is None and self.materialized == self.partitions


@dataclass
class StockSummary:
    """The stock and forecast section: the newest snapshot, open presale freezes, the day's suggestions."""

    day: str                                       # the forecast's as_of (Asia/Shanghai)
    skus_listed: int = 0                           # SKUs in the newest inventory snapshots
    skus_in_stock: int = 0                         # of which quantity > 0
    units_on_hand: int = 0
    frozen_lines: int = 0                          # open presale freezes
    frozen_units: int = 0
    skus_to_reorder: int = 0
    units_suggested: int = 0
    top: list[tuple[str, str, int, str]] = field(default_factory=list)   # shop, sku_key, qty, reason
    backtest: dict[str, float] = field(default_factory=dict)              # defs/forecast.backtest_figures
    backtest_note: str = ""
    report_path: str | None = None

    def lines(self) -> list[str]:
        out = ["", f"stock and replenishment (as of {self.day})",
               f"SKUs in stock: {self.skus_in_stock} of {self.skus_listed} listed "
               f"({self.units_on_hand} units on hand); "
               f"presale freeze: {self.frozen_units} units on {self.frozen_lines} open order line(s)",
               f"reorder: {self.units_suggested} units over {self.skus_to_reorder} SKU(s)"]
        for shop, sku, qty, reason in self.top:
            out.append(f"  {shop:<12} {sku:<22} {qty:>6}  {reason}")
        b = self.backtest
        if b:
            out.append(f"backtest (4 weekly origins): WAPE model {b['model_wape']:.3f}, seasonal naive "
                       f"{b['seasonal_naive_wape']:.3f}, 28-day average {b['moving_average_wape']:.3f} "
                       f"(model {b['improvement']:+.1%} vs seasonal naive); bias model {b['model_bias']:+.3f}; "
                       f"80 % interval coverage {b['coverage']:.0%}")
        elif self.backtest_note:
            out.append(f"backtest: {self.backtest_note}")
        if self.report_path:
            out.append(f"report: {self.report_path}")
        return out


@dataclass
class SyncReport:
    runs: list[RunReport] = field(default_factory=list)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)      # stream -> shop -> rows
    refunded_trades: dict[str, int] = field(default_factory=dict)      # shop -> trades with a refund
    reconciliation: list[DayResult] = field(default_factory=list)      # the days this sync reconciled
    api_calls: int = 0
    api_errors: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    stock: StockSummary | None = None

    @property
    def success(self) -> bool:
        return all(run.success for run in self.runs)

    def render(self) -> str:
        lines = ["", "ordersync summary", "-----------------"]
        if not self.runs:
            lines.append("nothing to run: every closed window is already synced")
        for run in self.runs:
            state = "ok" if run.success else f"FAILED: {run.error or f'{run.materialized} of {run.partitions} done'}"
            lines.append(f"{run.name:<34} {run.materialized:>6}/{run.partitions:<6} {run.seconds:7.1f}s  "
                         f"run {run.run_id or '-'}  {state}")
        shops = sorted({shop for per_shop in self.rows.values() for shop in per_shop})
        if shops:
            names = [s.name for s in STREAMS if s.name in self.rows]
            header = f"{'shop':<16}" + "".join(f"{name:>12}" for name in names)
            if "refunds" in names and "trades" in names:
                header += f"{'refund rate':>13}"
            lines += ["", header]
            for shop in shops:
                line = f"{shop:<16}" + "".join(f"{self.rows[name].get(shop, 0):>12}" for name in names)
                if "refunds" in names and "trades" in names:
                    trades = self.rows["trades"].get(shop, 0)
                    rate = self.refunded_trades.get(shop, 0) / trades if trades else 0.0
                    line += f"{rate:>12.1%} "
                lines.append(line)
        lines += self._reconciliation_lines()
        if self.stock is not None:
            lines += self.stock.lines()
        lines += ["", f"API calls: {self.api_calls} ({self.api_errors} failed attempts, retried)",
                  f"Quarantined records: {self.quarantined}", f"Wall time: {self.seconds:.1f}s"]
        lines.extend(self.notes)
        return "\n".join(lines)


    def _reconciliation_lines(self) -> list[str]:
        """Each reconciled shop-day: the platform's count, the warehouse's, what was re-fetched."""
        if not self.reconciliation:
            return []
        lines = ["", "reconciliation: the platform's count against the warehouse's, per day",
                 f"{'day':<12}{'shop':<16}{'stream':<10}{'platform':>10}{'warehouse':>11}{'missing':>9}"
                 f"{'stale':>7}{'re-fetched':>12}{'pending':>9}  status"]
        for row in self.reconciliation:
            lines.append(f"{row.day.isoformat():<12}{row.shop_id:<16}{row.stream:<10}{row.platform_count:>10}"
                         f"{row.warehouse_count:>11}{row.missing_count:>9}{row.stale_count:>7}"
                         f"{row.refetched_count:>12}{row.pending_count:>9}  {row.status}")
        gaps = sum(row.gap for row in self.reconciliation)
        refetched = sum(row.refetched_count for row in self.reconciliation)
        pending = sum(row.pending_count for row in self.reconciliation)
        lines.append(f"{len(self.reconciliation)} day(s) checked, {refetched} record(s) re-fetched, "
                     + (f"{gaps} with a gap left (see the reconciliation_gap alerts)" if gaps else "no gap left")
                     + (f"; {pending} changed after the synced range (pending: the next sync brings them)"
                        if pending else ""))
        return lines


def collect_figures(report: SyncReport, warehouse: Warehouse, shops: Sequence[str],
                    run_ids: Sequence[str]) -> None:
    """Rows per stream and shop (the stream's main table), and this invocation's calls and quarantine."""
    with warehouse.engine.connect() as conn:
        for stream in STREAMS:
            table = metadata.tables[stream.tables[0]]
            query = sa.select(table.c.shop_id, sa.func.count()).group_by(table.c.shop_id)
            counts = {str(shop): int(n) for shop, n in conn.execute(query)}
            report.rows[stream.name] = {shop: int(counts.get(shop, 0)) for shop in shops}
        if "refunds" in metadata.tables:
            refunds = metadata.tables["refunds"]
            refunded = (sa.select(refunds.c.shop_id, sa.func.count(sa.distinct(refunds.c.tid)))
                        .group_by(refunds.c.shop_id))
            report.refunded_trades = {str(shop): int(n) for shop, n in conn.execute(refunded)}
        if run_ids:
            errors = sa.func.sum(sa.case((api_calls.c.outcome == "error", 1), else_=0))
            calls, failed = conn.execute(sa.select(sa.func.count(), errors)
                                         .where(api_calls.c.run_id.in_(list(run_ids)))).one()
            report.api_calls, report.api_errors = int(calls or 0), int(failed or 0)
            report.quarantined = int(conn.execute(sa.select(sa.func.count()).select_from(quarantine)
                                                  .where(quarantine.c.run_id.in_(list(run_ids)))).scalar_one())
    if run_ids:
        report.reconciliation = read_days(warehouse, shop_ids=shops, run_ids=run_ids)


def collect_stock(warehouse: Warehouse, shops: Sequence[str], day: date, *, backtest: dict[str, float],
                  backtest_note: str = "", report_path: str | None = None, top: int = 5) -> StockSummary:
    """The stock section from the warehouse: newest snapshots, open freezes and the day's suggestions."""
    from ordersync_pipeline.forecast import store

    summary = StockSummary(day=day.isoformat(), backtest=backtest, backtest_note=backtest_note,
                           report_path=report_path)
    inventory = store.read_inventory(warehouse, shops)
    summary.skus_listed = len(inventory)
    summary.skus_in_stock = int((inventory["quantity"] > 0).sum()) if len(inventory) else 0
    summary.units_on_hand = int(inventory["quantity"].sum()) if len(inventory) else 0
    freezes = store.read_freezes(warehouse, shops)
    open_ = freezes[freezes["released_at"].isna()] if len(freezes) else freezes
    summary.frozen_lines, summary.frozen_units = len(open_), int(open_["quantity"].sum()) if len(open_) else 0
    suggestions = store.read_suggestions(warehouse, shops, as_of=day)
    ordering = suggestions[suggestions["suggested_qty"] > 0] if len(suggestions) else suggestions
    summary.skus_to_reorder = len(ordering)
    summary.units_suggested = int(ordering["suggested_qty"].sum()) if len(ordering) else 0
    if len(ordering):
        ordering = ordering.sort_values(["suggested_qty", "shop_id", "sku_key"], ascending=[False, True, True])
        head = ordering.head(top)
        summary.top = [(str(shop), str(sku), int(qty), str(reason)) for shop, sku, qty, reason in zip(
            head["shop_id"], head["sku_key"], head["suggested_qty"].astype("int64"), head["reason"])]
    return summary
