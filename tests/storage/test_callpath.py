"""The call path's pure parts: pacing and backoff, on a fake clock."""

import pytest

from steward.storage.rucio import RetryPolicy, TokenBucket
from support.clock import FakeTime


def test_token_bucket_allows_a_burst_then_paces():
    fake = FakeTime()
    bucket = TokenBucket(4, clock=fake.clock, sleep=fake.sleep)
    for _ in range(9):
        bucket.acquire()
    assert fake.slept == pytest.approx([0.25] * 5)


def test_token_bucket_refills_with_time_up_to_its_burst():
    fake = FakeTime()
    bucket = TokenBucket(2, burst=2, clock=fake.clock, sleep=fake.sleep)
    assert [bucket.acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    fake.now += 10
    assert [bucket.acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_retry_delays_double_with_jitter_and_a_cap():
    delays = list(RetryPolicy(attempts=6, initial_delay=1, max_delay=4).delays())
    assert len(delays) == 5
    for delay, base in zip(delays, [1, 2, 4, 4, 4], strict=True):
        assert base * 0.8 <= delay <= base * 1.2
