"""Loading the configuration: errors are one line, name the key, never show a secret; sync.start, the
gateway URL and unreadable files are refused at load time; ORDERSYNC_HOME is private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from ordersync_pipeline.config import (
    ConfigError,
    OrdersyncConfig,
    load_config,
    ordersync_home,
    parse_config,
    warehouse_url,
)
from ordersync_pipeline.timeutil import parse_local_time

SECRET = "Zq7Xw4Pk9Lm2Vb8Nd"
SESSION = "6102f9d8Hj5Ty3Ru"
NUMERIC_SECRET = "90817263544536"

GOOD = f"""\
gateway: http://127.0.0.1:8080/router/rest
app_key: "12345678"
app_secret: {SECRET}
shops:
  - shop_id: shop-1
    seller_nick: nick-1
    session: {SESSION}
"""


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "ordersync.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _load_error(tmp_path: Path, text: str | bytes) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    return info.value


def _slices(secret: str, size: int = 4) -> list[str]:
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


def assert_secret_free(err: BaseException, *secrets: str) -> None:
    """No secret, and no 4-character slice of one, in the message or the repr."""
    texts = str(err) + "\n" + repr(err)
    for secret in secrets:
        leaked = [piece for piece in _slices(secret) if piece in texts]
        assert not leaked, (leaked, texts)


def test_good_file_loads(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.secret().get_secret_value() == SECRET and cfg.shops[0].shop_id == "shop-1"


def test_a_misspelt_secret_key_is_named_but_its_value_is_not_shown(tmp_path: Path) -> None:
    err = _load_error(tmp_path, GOOD.replace("app_secret:", "app_secert:"))
    assert "unknown key 'app_secert'" in str(err) and "did you mean 'app_secret'" in str(err)
    assert_secret_free(err, SECRET, SESSION)
    assert "\n" not in str(err)


def test_a_numeric_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    text = GOOD.replace(f"app_secret: {SECRET}", f"app_secret: {NUMERIC_SECRET}")
    text = text.replace(f"session: {SESSION}", f"session: {NUMERIC_SECRET[::-1]}")
    err = _load_error(tmp_path, text)
    assert "app_secret:" in str(err) and "shops[0].session:" in str(err)
    assert "quotes" in str(err)
    assert_secret_free(err, NUMERIC_SECRET, NUMERIC_SECRET[::-1])


def test_a_missing_field_does_not_dump_the_mapping_with_the_secret_first(tmp_path: Path) -> None:
    text = (f"app_secret: {SECRET}\napp_key: '1'\nshops:\n"
            f"  - session: {SESSION}\n    shop_id: shop-1\n")
    err = _load_error(tmp_path, text)
    assert "gateway: required key is missing" in str(err)
    assert "shops[0].seller_nick: required key is missing" in str(err)
    assert_secret_free(err, SECRET, SESSION)


def test_model_validate_used_directly_never_shows_a_secret() -> None:
    data = {"gateway": "http://127.0.0.1:1/router/rest", "app_key": "1", "app_secert": SECRET,
            "app_secret": 12345678901234, "shops": [{"shop_id": "s", "session": SESSION}]}
    with pytest.raises(ValidationError) as info:
        OrdersyncConfig.model_validate(data)
    assert_secret_free(info.value, SECRET, SESSION, "12345678901234")
    with pytest.raises(ConfigError) as wrapped:
        parse_config(data, source="simulator config")
    assert str(wrapped.value).startswith("simulator config: 3 problems: ")
    assert_secret_free(wrapped.value, SECRET, SESSION, "12345678901234")


def test_non_secret_values_are_quoted_to_help(tmp_path: Path) -> None:
    err = _load_error(tmp_path, GOOD + "sign_method: sha1\nsync:\n  page_size: 500\n")
    assert "sign_method must be one of" in str(err) and "'sha1'" in str(err)
    assert "sync.page_size: Input should be less than or equal to 100 (got 500)" in str(err)


@pytest.mark.parametrize("start", ["yesterday", "2026-13-01", "30/11/2026"])
def test_sync_start_must_be_an_iso_date_or_time(tmp_path: Path, start: str) -> None:
    err = _load_error(tmp_path, GOOD + f"sync:\n  start: '{start}'\n")
    assert str(err).startswith(f"configuration file {tmp_path / 'ordersync.yaml'}: sync.start must be an ISO date")
    assert repr(start) in str(err) and "2026-11-30T10:00" in str(err)


@pytest.mark.parametrize("written, expected", [
    ("'2026-11-30'", "2026-11-30"),
    ("2026-11-30", "2026-11-30"),                        # YAML reads this as a date
    ("2026-11-30 10:00:00", "2026-11-30T10:00:00"),      # ... and this as a datetime
    ("'2026-11-30T10:00+08:00'", "2026-11-30T10:00+08:00"),
])
def test_sync_start_accepts_dates_and_times_as_text_or_yaml(tmp_path: Path, written: str, expected: str) -> None:
    cfg = load_config(_write(tmp_path, GOOD + f"sync:\n  start: {written}\n"))
    assert cfg.sync.start == expected
    assert parse_local_time(expected).tzinfo is not None


@pytest.mark.parametrize("gateway", ["gw.api.taobao.com/router/rest", "ftp://gw.api.taobao.com/router/rest",
                                     "http:///router/rest", "http://gw:99999/router/rest",
                                     "http://exa mple.com/router/rest"])
def test_the_gateway_must_be_an_absolute_http_url(tmp_path: Path, gateway: str) -> None:
    err = _load_error(tmp_path, GOOD.replace("http://127.0.0.1:8080/router/rest", gateway))
    assert "gateway must be an absolute http(s) URL with a host" in str(err)
    assert repr(gateway) in str(err) and "\n" not in str(err)


def test_a_binary_file_is_one_line(tmp_path: Path) -> None:
    err = _load_error(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert str(err) == (f"configuration file {tmp_path / 'ordersync.yaml'} is not UTF-8 text "
                        "(byte 0x89 at offset 0): give the ordersync YAML file")


def test_a_nul_in_utf8_text_is_one_line(tmp_path: Path) -> None:
    err = _load_error(tmp_path, GOOD + "\x00")
    assert "is not valid YAML: unacceptable character #x0000" in str(err) and "\n" not in str(err)


def test_a_yaml_syntax_error_names_the_place_but_not_the_line(tmp_path: Path) -> None:
    # PyYAML's own message quotes the offending line: here, the secret.
    err = _load_error(tmp_path, GOOD.replace(f"app_secret: {SECRET}", f"app_secret: {SECRET}: x"))
    assert "is not valid YAML: line 3, column" in str(err) and "mapping values are not allowed" in str(err)
    assert_secret_free(err, SECRET)
    assert "\n" not in str(err)


def test_a_directory_or_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file .*: Is a directory"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_an_unset_secret_variable_says_what_to_do(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD.replace(f"app_secret: {SECRET}", "app_secret_env: OS_TEST_SECRET")))
    with pytest.raises(ConfigError, match="environment variable OS_TEST_SECRET is not set; export it"):
        cfg.secret(environ={})


def test_home_and_its_default_warehouse_path_are_private(tmp_path: Path) -> None:
    home = tmp_path / "a" / "home"
    old = os.umask(0o022)
    try:
        url = warehouse_url({"ORDERSYNC_HOME": str(home)})
    finally:
        os.umask(old)
    assert url == f"sqlite:///{home / 'warehouse.db'}"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    # An existing directory is the user's choice: its mode is left alone.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    assert ordersync_home({"ORDERSYNC_HOME": str(shared)}) == shared
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755


def test_the_forecast_section_has_defaults_and_runs_after_the_reconciliation(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    f = cfg.forecast
    assert (f.lead_time_days, f.service_level, f.pack_size, f.history_days, f.inventory_cron, f.run_at) == (
        7, 0.95, 1, 182, "0 * * * *", "02:00")
    tuned = load_config(_write(tmp_path, GOOD + "forecast:\n  lead_time_days: 10\n  pack_size: 12\n"
                                                "  inventory_cron: '*/30 * * * *'\n"))
    assert (tuned.forecast.lead_time_days, tuned.forecast.pack_size, tuned.forecast.inventory_cron) == (
        10, 12, "*/30 * * * *")
    early = _load_error(tmp_path, GOOD + "forecast:\n  run_at: '00:45'\n")
    assert "forecast.run_at (00:45) must be later than monitoring.reconcile_at (01:00)" in str(early)
    assert "service_level" in str(_load_error(tmp_path, GOOD + "forecast:\n  service_level: 1.5\n"))
    assert "inventory_cron" in str(_load_error(tmp_path, GOOD + "forecast:\n  inventory_cron: hourly\n"))
