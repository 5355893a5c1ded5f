"""Charts and the suggestions table: valid SVG with history, forecast and band; escaped text; the report files."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from ordersync_pipeline.forecast.charts import (forecast_chart_svg, suggestions_markdown, svg_data_uri,
                                                write_report)

END = date(2026, 11, 29)
SVG = "{http://www.w3.org/2000/svg}"


def history(sku: str = "sku:1") -> pd.DataFrame:
    days = [END - timedelta(days=k) for k in range(69, -1, -1)]
    return pd.DataFrame({"shop_id": "shop-1", "sku_key": sku, "day": days,
                         "units_net": [5 + (k % 7) for k in range(70)], "promo_day": [k == 66 for k in range(70)]})


def forecast(sku: str = "sku:1") -> pd.DataFrame:
    return pd.DataFrame({"shop_id": "shop-1", "sku_key": sku, "as_of": END,
                         "target_day": [END + timedelta(days=k) for k in range(1, 8)],
                         "units": [8.0] * 7, "lower": [5.0] * 7, "upper": [11.0] * 7})


def suggestions() -> pd.DataFrame:
    return pd.DataFrame({"shop_id": "shop-1", "sku_key": ["sku:1", "sku:2", "sku:3"], "suggested_qty": [12, 0, 30],
                         "on_hand": pd.array([3, 50, None], dtype="Int64"), "frozen": [0, 0, 2],
                         "available": pd.array([3, 50, None], dtype="Int64"), "forecast_lead_time": [10.0, 1.0, 25.0],
                         "safety_stock": [2.5, 0.5, 4.0], "reason": ["order 12 | soon", "no order", "order 30"]})


def test_chart_is_valid_svg_with_history_forecast_band_and_promotion_marks() -> None:
    svg = forecast_chart_svg(history(), forecast(), title="shop-1 <sku & 1>")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert len(root.findall(f"{SVG}polyline")) == 2   # history and forecast
    assert len(root.findall(f"{SVG}polygon")) == 1    # the interval band
    assert len(root.findall(f"{SVG}circle")) == 1     # one promotion day in the last 56 days
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "shop-1 <sku & 1>" in texts and "80 % interval" in texts
    history_line = root.findall(f"{SVG}polyline")[1].attrib["points"].split()
    assert len(history_line) == 56


def test_chart_of_nothing_says_so() -> None:
    svg = forecast_chart_svg(history().head(0), forecast().head(0), title="x")
    assert "x: no data" in [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]


def test_data_uri_round_trips() -> None:
    svg = forecast_chart_svg(history(), forecast(), title="t")
    uri = svg_data_uri(svg)
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).decode() == svg


def test_markdown_table_lists_the_largest_orders_first_and_escapes_pipes() -> None:
    table = suggestions_markdown(suggestions(), top=5)
    rows = [line for line in table.splitlines() if line.startswith("| shop-1")]
    assert [r.split(" | ")[1] for r in rows] == ["sku:3", "sku:1"]  # nothing-to-order rows are left out
    assert "order 12 \\| soon" in rows[1] and "| ? |" in rows[0]    # unknown stock shows as ?
    assert suggestions_markdown(suggestions().assign(suggested_qty=0)) == "_No reorder suggested today._\n"


def test_write_report_writes_the_table_and_one_chart_per_top_sku(tmp_path: Path) -> None:
    daily = pd.concat([history("sku:1"), history("sku:3")])
    fc = pd.concat([forecast("sku:1"), forecast("sku:3")])
    paths = write_report(tmp_path / "reports", daily, fc, suggestions(), top=5)
    names = sorted(p.name for p in paths)
    assert names == ["chart-shop-1-sku-1.svg", "chart-shop-1-sku-3.svg", "suggestions.md"]
    report = (tmp_path / "reports" / "suggestions.md").read_text()
    assert report.startswith(f"# Replenishment suggestions as of {END}")
    assert "![sku:3](chart-shop-1-sku-3.svg)" in report
    for p in paths:
        if p.suffix == ".svg":
            ET.fromstring(p.read_text())
