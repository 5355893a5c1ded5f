"""The definitions ``dagster dev`` / the daemon load (workspace.yaml, code location ``ordersync``).

Built lazily, when Dagster asks, from the configuration named by ``ORDERSYNC_CONFIG`` (or
``ORDERSYNC_HOME/ordersync.yaml``) and the environment: importing this module reads nothing and writes
nothing. Tests and the ``ordersync`` command build definitions from a ``Settings`` object directly.
"""

from __future__ import annotations

import dagster as dg

from ordersync_pipeline.defs import build_definitions
from ordersync_pipeline.settings import load_settings


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
