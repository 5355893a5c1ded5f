"""Forecasting and replenishment maths (issue 11): pandas frames in, pandas frames out, no Dagster.

    sales.build_daily_sales(order_lines, refunds, start=..., end=...) -> DailySales (.frame: daily_sales)
    model.forecast_sales(daily_sales, as_of=..., catalogue=...)         -> sales_forecast frame
    replenish.replenishment_suggestions(forecast, inventory, freezes)   -> replenishment_suggestions frame
    backtest.run_backtest(daily_sales)                                  -> WAPE / bias / coverage per method
    charts.forecast_chart_svg(...), charts.suggestions_markdown(...)    -> what people look at

``frames`` turns TOP trade and refund dicts (the simulator's ground truth, fullinfo) into the input
frames; ``keys`` holds the one SKU-key rule shared by sales, inventory and freezes.

Submodules are imported directly (``from ordersync_pipeline.forecast.model import forecast_sales``):
statsforecast takes seconds to import, so only ``model`` (and what calls it) loads it, lazily, and only
its ETS module (``ets``).
Errors: bad input frames raise ``ValueError`` naming the column and what to pass instead; bad *data*
(unknown SKUs, negative days, missing stock) never raises, it is handled by a rule stated where it
applies and shown in the output's ``model``/``note``/``reason`` columns.
"""
