"""The lake's Arrow columns built without ``pa.array`` (sync/arrow_columns.py): each kind equals what
``pa.array`` builds from the same values, nulls and edge values included, and writing a partition leaves
pandas unimported (pyarrow's list conversion imported it in every process writing the lake)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordersync_pipeline.sync.arrow_columns import column

ZONES = st.sampled_from([timezone.utc, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))])
AWARE = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=ZONES)
KINDS = {
    "string": (pa.string(), st.text()),
    "binary": (pa.binary(), st.binary()),
    "bool": (pa.bool_(), st.booleans()),
    "int32": (pa.int32(), st.integers(-2**31, 2**31 - 1)),
    "int64": (pa.int64(), st.integers(-2**63, 2**63 - 1)),
    "timestamp": (pa.timestamp("us", tz="UTC"), AWARE),
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kind_equals_what_pa_array_builds(name: str) -> None:
    kind, values = KINDS[name]

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.one_of(st.none(), values), max_size=70))
    def check(items: list[object]) -> None:
        built = column(items, kind)
        built.validate(full=True)
        assert built.equals(pa.array(items, type=kind))
        assert built.null_count == sum(v is None for v in items)

    check()


def test_a_naive_time_and_an_unsupported_type_are_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        column([datetime(2026, 1, 1)], pa.timestamp("us", tz="UTC"))
    with pytest.raises(TypeError, match="no builder"):
        column([1.5], pa.float64())


def test_writing_the_lake_does_not_import_pandas(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = f"""
import sys
from datetime import datetime, timezone
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.top.pages import Page, TRADES
at = datetime(2026, 11, 26, 2, 30, tzinfo=timezone.utc)
body = b'{{"trades_sold_get_response":{{"total_results":0,"has_next":false,"trades":{{"trade":[]}}}}}}'
pages = [Page(shop_id="s", method="taobao.trades.sold.get", window_start=at, window_end=at, page_no=1,
              page_size=100, request_id=None, fetched_at=at, body=body, items=[], total_results=None,
              has_next=None)]
lake = PageLake({str(tmp_path)!r})
lake.write_partition(shop_id="s", stream="trades.historical", partition_key="2026-11-26", pages=pages)
back = list(lake.read_partition(shop_id="s", stream="trades.historical", partition_key="2026-11-26", shape=TRADES))
assert back == pages, back
assert "pandas" not in sys.modules, "writing the lake imported pandas"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
