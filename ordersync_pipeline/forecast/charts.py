"""What people look at: a per-SKU chart (history, forecast, 80 % interval) and the top suggestions.

Charts are small SVG documents written by hand (no plotting dependency): they render in a browser,
in Markdown (Dagster's UI shows ``![..](data:image/svg+xml;base64,..)``) and as files under
``ORDERSYNC_HOME/reports/``. ``write_report`` writes both for the day's top suggestions.
"""

from __future__ import annotations

import base64
import re
from datetime import date
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

from ordersync_pipeline.forecast.keys import day_numbers

WIDTH, HEIGHT = 640, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 44, 16, 28, 36
HISTORY_COLOR, FORECAST_COLOR, BAND_COLOR, PROMO_COLOR = "#1f4e79", "#d9480f", "#ffc9a3", "#7b2cbf"


def forecast_chart_svg(history: pd.DataFrame, forecast: pd.DataFrame, *, title: str,
                       history_days: int = 56) -> str:
    """An SVG line chart: the last ``history_days`` of ``units_net`` (promotion days as dots), then
    the forecast with its interval band. ``history``: day, units_net[, promo_day] of one SKU;
    ``forecast``: target_day, units, lower, upper of the same SKU."""
    hist = history.assign(n=day_numbers(history["day"])).sort_values("n").tail(history_days)
    fc = forecast.assign(n=day_numbers(forecast["target_day"])).sort_values("n")
    all_days = np.concatenate([hist["n"].to_numpy(), fc["n"].to_numpy()])
    if len(all_days) == 0:
        return _svg([_text(WIDTH / 2, HEIGHT / 2, f"{title}: no data", anchor="middle")])
    x0, x1 = int(all_days.min()), int(all_days.max())
    top = max(1.0, float(np.nanmax(np.concatenate([hist["units_net"].to_numpy("float64"),
                                                    fc["upper"].to_numpy("float64"), [0.0]]))))
    y_max = _nice_ceiling(top)

    def x(day: float) -> float:
        return PAD_LEFT + (day - x0) / max(x1 - x0, 1) * (WIDTH - PAD_LEFT - PAD_RIGHT)

    def y(units: float) -> float:
        return HEIGHT - PAD_BOTTOM - max(units, 0.0) / y_max * (HEIGHT - PAD_TOP - PAD_BOTTOM)

    parts = [_text(PAD_LEFT, 18, title, weight="bold")]
    parts += _axes(x, y, y_max, x0, x1)
    if len(fc):
        band = [(x(d), y(u)) for d, u in zip(fc["n"], fc["upper"])]
        band += [(x(d), y(lo)) for d, lo in zip(fc["n"][::-1], fc["lower"][::-1])]
        parts.append(f'<polygon points="{_points(band)}" fill="{BAND_COLOR}" fill-opacity="0.7" stroke="none"/>')
        line = [(x(d), y(u)) for d, u in zip(fc["n"], fc["units"])]
        if len(hist):  # join the forecast to the last observed day
            line.insert(0, (x(hist["n"].iloc[-1]), y(float(hist["units_net"].iloc[-1]))))
        parts.append(f'<polyline points="{_points(line)}" fill="none" stroke="{FORECAST_COLOR}" '
                     'stroke-width="2" stroke-dasharray="5,3"/>')
    if len(hist):
        parts.append(f'<line x1="{x(hist["n"].iloc[-1]):.1f}" y1="{PAD_TOP}" x2="{x(hist["n"].iloc[-1]):.1f}" '
                     f'y2="{HEIGHT - PAD_BOTTOM}" stroke="#999" stroke-dasharray="2,2"/>')
        line = [(x(d), y(float(u))) for d, u in zip(hist["n"], hist["units_net"])]
        parts.append(f'<polyline points="{_points(line)}" fill="none" stroke="{HISTORY_COLOR}" stroke-width="1.5"/>')
        if "promo_day" in hist.columns:
            for d, u in zip(hist["n"][hist["promo_day"].astype(bool)], hist["units_net"][hist["promo_day"].astype(bool)]):
                parts.append(f'<circle cx="{x(d):.1f}" cy="{y(float(u)):.1f}" r="3.5" fill="{PROMO_COLOR}"/>')
    parts += _legend()
    return _svg(parts)


def svg_data_uri(svg: str) -> str:
    """The SVG as a ``data:`` URI, for Markdown images in the Dagster UI."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def suggestions_markdown(suggestions: pd.DataFrame, *, top: int = 10) -> str:
    """A Markdown table of the ``top`` largest suggested quantities (all rows that order nothing are
    left out; an empty table says so)."""
    ordered = suggestions[suggestions["suggested_qty"] > 0].sort_values(
        ["suggested_qty", "shop_id", "sku_key"], ascending=[False, True, True]).head(top)
    if ordered.empty:
        return "_No reorder suggested today._\n"
    lines = ["| shop | SKU | order | on hand | frozen | available | lead-time demand | safety | reason |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in ordered.itertuples(index=False):
        lines.append(f"| {_cell(r.shop_id)} | {_cell(r.sku_key)} | {r.suggested_qty} | {_cell(r.on_hand)} | "
                     f"{r.frozen} | {_cell(r.available)} | {r.forecast_lead_time:.1f} | {r.safety_stock:.1f} | "
                     f"{_cell(r.reason)} |")
    return "\n".join(lines) + "\n"


def write_report(directory: Path, daily: pd.DataFrame, forecast: pd.DataFrame, suggestions: pd.DataFrame, *,
                 top: int = 5, as_of: date | None = None) -> list[Path]:
    """Write ``suggestions.md`` (the table, then a chart per top SKU) and one SVG per chart into
    ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    chosen = suggestions[suggestions["suggested_qty"] > 0].sort_values(
        ["suggested_qty", "shop_id", "sku_key"], ascending=[False, True, True]).head(top)
    day = as_of or (max(forecast["as_of"]) if len(forecast) else None)
    body = [f"# Replenishment suggestions{f' as of {day}' if day else ''}\n", suggestions_markdown(suggestions, top=top)]
    for r in chosen.itertuples(index=False):
        shop, sku = str(r.shop_id), str(r.sku_key)
        svg = forecast_chart_svg(daily[(daily["shop_id"] == shop) & (daily["sku_key"] == sku)],
                                 forecast[(forecast["shop_id"] == shop) & (forecast["sku_key"] == sku)],
                                 title=f"{shop} {sku}: history and 7-day forecast")
        path = directory / f"chart-{_slug(shop)}-{_slug(sku)}.svg"
        path.write_text(svg, encoding="utf-8")
        written.append(path)
        body.append(f"\n## {shop} {sku}\n\n![{escape(sku)}]({path.name})\n")
    report = directory / "suggestions.md"
    report.write_text("\n".join(body), encoding="utf-8")
    return [report, *written]


# ------------------------------------------------------------------ SVG pieces

def _axes(x, y, y_max: float, x0: int, x1: int) -> list[str]:  # type: ignore[no-untyped-def]
    parts = []
    for k in range(5):
        v = y_max * k / 4
        parts.append(f'<line x1="{PAD_LEFT}" y1="{y(v):.1f}" x2="{WIDTH - PAD_RIGHT}" y2="{y(v):.1f}" '
                     'stroke="#e5e5e5"/>')
        parts.append(_text(PAD_LEFT - 6, y(v) + 4, f"{v:g}", anchor="end"))
    step = 7 if x1 - x0 > 14 else 1
    for d in range(x1, x0 - 1, -step):
        label = str(np.datetime64(d, "D"))[5:]
        parts.append(_text(x(d), HEIGHT - PAD_BOTTOM + 16, label, anchor="middle"))
    parts.append(f'<line x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}" x2="{WIDTH - PAD_RIGHT}" '
                 f'y2="{HEIGHT - PAD_BOTTOM}" stroke="#666"/>')
    return parts


def _legend() -> list[str]:
    items = [(HISTORY_COLOR, "net units"), (FORECAST_COLOR, "forecast"), (BAND_COLOR, "80 % interval"),
             (PROMO_COLOR, "promotion day")]
    parts, x = [], float(PAD_LEFT)
    for color, label in items:
        parts.append(f'<rect x="{x:.0f}" y="{HEIGHT - 14}" width="10" height="10" fill="{color}"/>')
        parts.append(_text(x + 14, HEIGHT - 5, label))
        x += 24 + 7 * len(label)
    return parts


def _svg(parts: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>' + "".join(parts) + "</svg>\n")


def _text(x: float, y: float, text: str, *, anchor: str = "start", weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-weight="{weight}" fill="#222">'
            f"{escape(text)}</text>")


def _points(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in points)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= value (axis top)."""
    magnitude = 10 ** np.floor(np.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * magnitude >= value:
            return float(m * magnitude)
    return float(10 * magnitude)


def _cell(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "?"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"
