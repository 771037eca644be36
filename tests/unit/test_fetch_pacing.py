"""The worker's fetch min bytes follow the input rate: held only while the input fills them within the wait."""

from __future__ import annotations

import pytest

from loyalty_stream.stream.fetch_pacing import FetchMinBytes

CEILING = 8192
WAIT_S = 0.02  # a fetch filled within the wait needs 8192 / 0.02 = 409,600 bytes/s


def steady(pacing: FetchMinBytes, bytes_per_s: float, seconds: float, *, start: float, fetches_per_s: int = 50,
           ) -> tuple[float, list[int]]:
    """Feed `seconds` of fetches at `bytes_per_s`; returns the end time and every answer."""
    answers, now, step = [], start, 1 / fetches_per_s
    for _ in range(round(seconds * fetches_per_s)):
        now += step
        answers.append(pacing.observe(round(bytes_per_s * step), now))
    return now, answers


def test_the_first_fetches_ask_for_one_byte_until_a_window_has_been_measured() -> None:
    pacing = FetchMinBytes(ceiling=CEILING, max_wait_s=WAIT_S)
    assert pacing.current == 1
    assert pacing.observe(1_000_000, 0.0) == 1  # opens the window: its bytes came before it
    _, answers = steady(pacing, 1_000_000, 0.48, start=0.0)
    assert set(answers) == {1}


@pytest.mark.parametrize(("bytes_per_s", "expected"), [
    (480_000, CEILING),  # 1,000 activities/s of ~480 bytes: 9.6 KB a wait
    (412_000, CEILING),  # just over the ceiling within the wait
    (400_000, 1),
    (120_000, 1),  # 250/s: 2.4 KB a wait, the bytes never arrive in time
])
def test_a_window_holds_fetches_only_if_its_rate_fills_the_ceiling_within_the_wait(bytes_per_s: int,
                                                                                   expected: int) -> None:
    pacing = FetchMinBytes(ceiling=CEILING, max_wait_s=WAIT_S)
    pacing.observe(0, 0.0)
    _, answers = steady(pacing, bytes_per_s, 1.0, start=0.0)
    assert answers[-1] == expected
    assert pacing.current == expected


def test_once_holding_it_keeps_holding_down_to_the_keep_ratio_and_lets_go_below() -> None:
    pacing = FetchMinBytes(ceiling=CEILING, max_wait_s=WAIT_S, keep_ratio=0.75)
    pacing.observe(0, 0.0)
    now, _ = steady(pacing, 480_000, 1.0, start=0.0)
    assert pacing.current == CEILING
    now, answers = steady(pacing, 320_000, 2.0, start=now)  # 6.4 KB a wait: above 0.75 of 8 KB
    assert set(answers) == {CEILING}
    now, answers = steady(pacing, 290_000, 1.0, start=now)  # 5.8 KB a wait: below 6 KB
    assert answers[-1] == 1
    _, answers = steady(pacing, 320_000, 2.0, start=now)  # the same 6.4 KB does not start holding again
    assert set(answers) == {1}


def test_a_pause_in_the_input_brings_it_back_to_one_byte() -> None:
    pacing = FetchMinBytes(ceiling=CEILING, max_wait_s=WAIT_S)
    pacing.observe(0, 0.0)
    now, _ = steady(pacing, 480_000, 1.0, start=0.0)
    assert pacing.current == CEILING
    assert pacing.observe(500, now + 3.0) == 1  # one record after 3 s of nothing


def test_the_answer_changes_only_when_a_window_closes() -> None:
    pacing = FetchMinBytes(ceiling=CEILING, max_wait_s=WAIT_S, window_s=0.5)
    pacing.observe(0, 0.0)
    assert pacing.observe(10_000_000, 0.1) == 1  # a burst, but the window is still open
    assert pacing.observe(0, 0.49) == 1
    assert pacing.observe(0, 0.5) == CEILING  # 10 MB in 0.5 s: 400 KB a wait


def test_a_gap_shorter_than_a_window_is_part_of_the_load() -> None:
    pacing = FetchMinBytes(ceiling=CEILING, max_wait_s=WAIT_S, window_s=0.5)
    pacing.observe(0, 0.0)
    now, _ = steady(pacing, 480_000, 1.0, start=0.0)
    assert pacing.current == CEILING
    assert pacing.observe(300_000, now + 0.4) == CEILING  # 0.4 s without input, then what it missed
