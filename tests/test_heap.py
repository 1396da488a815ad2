"""Returning free heap to the operating system (`steward.heap`): pure, with the real glibc."""

import platform
import threading

from steward.heap import HeapTrimmer, trim


def test_trim_calls_glibc_where_there_is_glibc():
    assert trim() is (platform.libc_ver()[0] == "glibc")


class _Counting:
    """A trimmer that counts its calls and lets the test wait for the n-th one."""

    def __init__(self, *, available=True):
        self.available = available
        self.calls = 0
        self.called = threading.Condition()

    def __call__(self):
        with self.called:
            self.calls += 1
            self.called.notify_all()
        return self.available

    def wait_for(self, calls):
        with self.called:
            return self.called.wait_for(lambda: self.calls >= calls, timeout=30)


def test_the_trimmer_calls_at_start_then_every_interval_until_stopped():
    counting = _Counting()
    trimmer = HeapTrimmer(0.001, counting)
    trimmer.start()
    trimmer.start()  # a second start starts no second thread
    assert counting.wait_for(3)
    trimmer.stop()
    stopped_at = counting.calls
    assert trimmer.calls == stopped_at
    assert not any(t.name == "steward-heap-trim" for t in threading.enumerate())


def test_no_thread_where_the_c_library_has_no_malloc_trim():
    counting = _Counting(available=False)
    trimmer = HeapTrimmer(0.001, counting)
    trimmer.start()
    assert counting.calls == 1
    assert trimmer.calls == 0
    assert not any(t.name == "steward-heap-trim" for t in threading.enumerate())
    trimmer.stop()
    assert counting.calls == 1
