"""Terminal drivers behind ``ordersync sync``, ``demo`` and ``dev``: plan, execute, report.

They build the Dagster definitions from ``Settings`` and run them against the persistent instance, so the
UI shows everything they did. Dagster wiring itself lives in ``defs/``.
"""
