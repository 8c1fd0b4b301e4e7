"""The crash-loop back-off's arithmetic and its setting."""

from __future__ import annotations

import pytest

from orchestr.backoff import ENV, Backoff, from_env
from orchestr.errors import OrchestrError


def test_kubernetes_back_off_by_default_the_first_restart_at_once():
    b = from_env({})
    assert b == Backoff(10.0, 300.0, 600.0)
    assert [b.delay(n) for n in range(1, 9)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert b.delay(10_000) == 300


def test_the_setting_takes_one_to_three_durations():
    assert from_env({ENV: "100ms,1s,10s"}) == Backoff(0.1, 1.0, 10.0)
    assert from_env({ENV: "1m"}) == Backoff(60.0, 300.0, 600.0)
    assert from_env({ENV: "20m"}).limit == 1200.0  # a lone first longer than the default limit raises it


@pytest.mark.parametrize("raw", ["soon", "1s,2s,3s,4s", "0s", "10s,1s"])
def test_a_bad_setting_is_one_line_naming_it(raw):
    with pytest.raises(OrchestrError, match=f"^{ENV}="):
        from_env({ENV: raw})
