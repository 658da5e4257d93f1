"""Regression guard for search speed (the benchmark, not this test, is the measurement)."""

from __future__ import annotations

import pytest

from benchmarks.common import interleaved
from benchmarks.search_step import make_fns


@pytest.mark.slow
def test_search_iteration_costs_at_most_three_plain_steps():
    t = interleaved(make_fns(depth=20, batch=64, precision="fp32"), repeats=5)
    search, plain = min(t["search_nchw"], t["search_cl"]), min(t["plain_nchw"], t["plain_cl"])
    assert search / plain < 3.0, t
