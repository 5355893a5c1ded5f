"""The executor of every job, chosen by ``orchestration.executor`` (docs/scaling.md).

``in_process`` (the default) runs a whole run in the process that launched it: the work inside a sync
run is already parallel (fetch threads, loader processes), and Dagster's multiprocess executor would
start another Python per step (~4 CPU-s of imports each) for nothing. ``multiprocess`` is Dagster's own
default. ``celery`` and ``k8s`` hand the steps to an existing Celery or Kubernetes cluster; their
packages are optional extras, imported only when selected.
"""

from __future__ import annotations

import importlib
from typing import Any

import dagster as dg

from ordersync_pipeline.config import ConfigError, Executor

__all__ = ["build_executor", "EXTRAS"]

# executor -> (module, attribute, the extra that installs the module)
EXTRAS: dict[str, tuple[str, str, str]] = {
    "celery": ("dagster_celery", "celery_executor", "celery"),
    "k8s": ("dagster_k8s", "k8s_job_executor", "k8s"),
}


def build_executor(name: Executor) -> dg.ExecutorDefinition:
    """The executor definition for ``name``; ``ConfigError`` when its optional package is missing."""
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    module_name, attribute, extra = EXTRAS[name]
    try:
        module: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"orchestration.executor is {name!r} but {module_name} is not installed ({exc.name} missing): "
            f"install the extra with `pip install 'ordersync[{extra}]'` (or `uv sync --extra {extra}`), "
            "or choose in_process / multiprocess") from None
    executor: dg.ExecutorDefinition = getattr(module, attribute)
    return executor
