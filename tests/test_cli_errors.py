"""`ordersync sync` as an operator meets it when something is wrong: a broken warehouse, a bad time, a
bad configuration file each end as one `Error:` line and a non-zero exit (no traceback, no secret);
a bug still shows its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ordersync_pipeline import cli
from ordersync_pipeline import settings as settings_module
from ordersync_pipeline.top.errors import InvalidSessionError

ORDERSYNC = str(Path(sys.executable).with_name("ordersync"))
SECRET = "Hq4Vn8Xc2Jm6"
SESSION = "6102Tb9Yw3Kd7"
PASSWORD = "Wp5Zr1Gs9"

CONFIG = f"""\
gateway: http://127.0.0.1:9/router/rest
app_key: "12345678"
app_secret: {SECRET}
shops:
  - shop_id: shop-1
    seller_nick: nick-1
    session: {SESSION}
"""


def _sync(tmp_path: Path, *args: str, config: str | bytes = CONFIG,
          warehouse: str | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ordersync.yaml"
    if isinstance(config, bytes):
        path.write_bytes(config)
    else:
        path.write_text(config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERSYNC_", "DAGSTER_"))}
    env["ORDERSYNC_HOME"] = str(tmp_path / "home")
    if warehouse is not None:
        env["ORDERSYNC_WAREHOUSE_URL"] = warehouse
    return subprocess.run([ORDERSYNC, "sync", "--config", str(path), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root ignores mode bits; sysfs refuses new files to everyone
        return Path("/sys")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked


WAREHOUSES: list[tuple[str, Callable[[Path], str], str]] = [
    ("warehouse down", lambda _: f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/wh",
     "Error: PostgreSQL warehouse postgres@127.0.0.1:1/wh: Connection refused; is the server running"),
    ("bad port", lambda _: "postgresql://postgres@127.0.0.1:99999/wh", 'invalid port number: "99999"'),
    ("wrong MariaDB credentials", lambda _: f"mysql://nobody:{PASSWORD}@127.0.0.1:3306/wh",
     "Access denied for user 'nobody'"),
    ("database does not exist", lambda _: "postgresql://postgres@127.0.0.1:5432/ordersync_no_such_db",
     'database "ordersync_no_such_db" does not exist; create the database'),
    ("unknown scheme", lambda _: f"oracle://scott:{PASSWORD}@db/wh", "unsupported warehouse URL scheme 'oracle'"),
    ("unwritable SQLite directory", lambda tmp: f"sqlite:///{_unwritable_dir(tmp) / 'warehouse.db'}",
     "Permission denied; make the directory exist and be writable"),
    ("missing SQLite directory", lambda tmp: f"sqlite:///{tmp / 'nope' / 'warehouse.db'}",
     "directory {tmp}/nope does not exist"),
]


def assert_one_clear_line(result: subprocess.CompletedProcess[str], expected: str, *, code: int = 1) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    assert len(output.strip().splitlines()) <= 5, output
    assert expected in output, output
    for secret in (SECRET, SESSION, PASSWORD):
        assert secret not in output, output


@pytest.mark.parametrize(("build", "expected"), [row[1:] for row in WAREHOUSES], ids=[row[0] for row in WAREHOUSES])
def test_a_broken_warehouse_is_one_line(tmp_path: Path, build: Callable[[Path], str], expected: str) -> None:
    result = _sync(tmp_path, warehouse=build(tmp_path))
    assert_one_clear_line(result, expected.replace("{tmp}", str(tmp_path)))
    assert result.stderr.startswith("Error: ")


def test_a_bad_from_time_is_a_usage_error(tmp_path: Path) -> None:
    result = _sync(tmp_path, "--from", "yesterday")
    assert_one_clear_line(result, "Invalid value for '--from': 'yesterday' is not an ISO date or time", code=2)


def test_a_bad_to_time_is_a_usage_error(tmp_path: Path) -> None:
    result = _sync(tmp_path, "--to", "2026-11-31")
    assert_one_clear_line(result, "Invalid value for '--to': '2026-11-31' is not an ISO date", code=2)


def test_a_bad_sync_start_fails_when_the_configuration_is_loaded(tmp_path: Path) -> None:
    result = _sync(tmp_path, config=CONFIG + "sync:\n  start: yesterday\n")
    assert_one_clear_line(result, "sync.start must be an ISO date (2026-11-30) or date and time")


def test_a_binary_configuration_file_is_one_line(tmp_path: Path) -> None:
    result = _sync(tmp_path, config=b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert_one_clear_line(result, "is not UTF-8 text (byte 0x89 at offset 0)")


def test_a_misspelt_secret_key_is_named_without_its_value(tmp_path: Path) -> None:
    result = _sync(tmp_path, config=CONFIG.replace("app_secret:", "app_secert:"))
    assert_one_clear_line(result, "unknown key 'app_secert' (did you mean 'app_secret'?)")
    assert not [SECRET[i:i + 4] for i in range(len(SECRET) - 3) if SECRET[i:i + 4] in result.stderr]


def test_a_gateway_without_a_scheme_fails_at_once(tmp_path: Path) -> None:
    result = _sync(tmp_path, config=CONFIG.replace("http://127.0.0.1:9/router/rest", "127.0.0.1:9/router/rest"))
    assert_one_clear_line(result, "gateway must be an absolute http(s) URL with a host")


def test_an_operator_error_from_any_command_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def expired(_path: object) -> None:
        raise InvalidSessionError("Invalid session", method="taobao.trades.sold.get", code=27, shop_id="shop-1")

    monkeypatch.setattr(settings_module, "load_settings", expired)
    (tmp_path / "c.yaml").write_text(CONFIG, encoding="utf-8")
    result = CliRunner().invoke(cli.main, ["sync", "--config", str(tmp_path / "c.yaml")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith("Error: taobao.trades.sold.get: Invalid session")
    assert result.output.strip().endswith("re-authorise this shop shop-1")


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(_path: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(settings_module, "load_settings", broken)
    (tmp_path / "c.yaml").write_text(CONFIG, encoding="utf-8")
    result = CliRunner().invoke(cli.main, ["sync", "--config", str(tmp_path / "c.yaml")])
    assert isinstance(result.exception, KeyError)  # not turned into a one-line "Error:"
