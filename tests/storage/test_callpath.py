"""The call path's pure parts: pacing and backoff, on a fake clock."""

import pytest
from rucio.common import exception as rucio_errors

from steward.config import Settings
from steward.exceptions import RucioPermanentError, RucioTransientError
from steward.storage.rucio import RetryPolicy, TokenBucket
from steward.storage.rucio.callpath import RucioCallPath
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


@pytest.mark.parametrize(
    "raw",
    [
        rucio_errors.RucioException("(sqlite3.OperationalError) database is locked"),
        rucio_errors.DataIdentifierAlreadyExists("database is locked"),
        rucio_errors.InvalidObject("Details: (sqlite3.OperationalError) database is locked"),
    ],
)
def test_a_locked_rucio_database_is_transient(raw):
    path = RucioCallPath(Settings(rucio_host="http://127.0.0.1:1"))
    error, retry_here = path._translate("add_scope", raw)
    assert isinstance(error, RucioTransientError)
    assert retry_here
    path.close()


def test_other_refusals_stay_permanent():
    path = RucioCallPath(Settings(rucio_host="http://127.0.0.1:1"))
    error, retry_here = path._translate("add_scope", rucio_errors.AccessDenied("no"))
    assert isinstance(error, RucioPermanentError)
    assert not retry_here
    path.close()
