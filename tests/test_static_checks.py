"""Static checks as tests, so CI enforces them: mypy (strict, per pyproject) and ruff.

Both run from the repository root with this interpreter's tools; mypy reuses .mypy_cache, so a run
with nothing changed takes a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)


def test_mypy_strict_passes() -> None:
    result = _run("mypy", "ordersync_pipeline")
    assert result.returncode == 0, f"mypy failed:\n{result.stdout}{result.stderr}"


def test_ruff_passes() -> None:
    result = _run("ruff", "check", "ordersync_pipeline", "tests", "benchmarks")
    assert result.returncode == 0, f"ruff failed:\n{result.stdout}{result.stderr}"
