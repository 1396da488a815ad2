"""A Rucio that hangs, refuses or answers 503: noticed once, shared, bounded, and recovered from.

The hang is the real server stopped with SIGSTOP (it accepts connections and answers nothing),
the refusal the real server's API stopped; both are a private server, never the shared one.
Rucio cannot be made to answer 503 itself, so that case is a socket server that answers 503 to
everything, as a proxy in front of a dead Rucio does.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pydantic import SecretStr

from steward.config import Settings
from steward.exceptions import RucioTransientError
from steward.storage.rucio import RetryPolicy, RucioAvailability, RucioDownError, RucioStorage
from steward.testing.rucio_server import RucioServer

SHORT = {
    "rucio_read_timeout": 1.5,
    "rucio_write_timeout": 1.5,
    "rucio_listing_timeout": 1.5,
    "rucio_connect_timeout": 1.5,
    "rucio_calls_per_second": 10_000,
}


class Clock:
    """A monotonic clock the test moves: the probe comes when the test says."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _storage(server: RucioServer, clock: Clock, **settings: Any) -> RucioStorage:
    availability = RucioAvailability(initial_probe=60, max_probe=60, clock=clock)
    return RucioStorage(
        server.settings(**{**SHORT, **settings}),
        retry=RetryPolicy(attempts=3, initial_delay=0.1, deadline=2.0),
        availability=availability,
    )


def _outage_is_noticed_once_and_ends_at_the_probe(
    server: RucioServer, start_outage: Any, end_outage: Any, symptom: str
) -> None:
    clock = Clock()
    storage = _storage(server, clock)
    transitions: list[bool] = []
    storage.availability.listeners.append(lambda up, _reason: transitions.append(up))
    account = storage.whoami()  # logged in before the outage
    start_outage()
    try:
        with pytest.raises(RucioTransientError, match=symptom):
            storage.list_rules()
        assert not storage.availability.up
        calls = storage.api_calls
        for _ in range(5):  # refused without a request while no probe is due
            with pytest.raises(RucioDownError, match="not attempted: Rucio does not answer"):
                storage.get_rule("0" * 32)
        assert storage.api_calls == calls
        clock.now += 100  # the probe is due, Rucio still out: it fails and backs off
        with pytest.raises(RucioTransientError, match=symptom):
            storage.whoami()
        assert storage.api_calls == calls + 1  # the ping only
    finally:
        end_outage()
    clock.now += 100
    assert storage.whoami() == account  # the probe finds Rucio back, then the call is made
    assert storage.availability.up
    assert transitions == [False, True]
    storage.close()


@pytest.mark.rucio
def test_a_hung_rucio_is_noticed_and_its_return_too(private_rucio_server: RucioServer) -> None:
    server = private_rucio_server
    _outage_is_noticed_once_and_ends_at_the_probe(
        server, server.freeze_api, server.thaw_api, "timed out|Timeout"
    )


@pytest.mark.rucio
def test_a_refusing_rucio_is_noticed_and_its_return_too(
    private_rucio_server: RucioServer,
) -> None:
    server = private_rucio_server
    _outage_is_noticed_once_and_ends_at_the_probe(
        server, server.stop_api, server.start_api, "Connection|refused"
    )


@pytest.mark.rucio
def test_hung_calls_hold_at_most_their_slots(private_rucio_server: RucioServer) -> None:
    """Four callers, two slots: two requests hang, the other two are refused once Rucio is
    marked down, without a request of their own."""
    server = private_rucio_server
    clock = Clock()
    storage = _storage(server, clock, rucio_max_calls=2)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            storage.list_rules()
        except RucioTransientError as error:
            errors.append(error)

    server.freeze_api()
    try:
        calls = storage.api_calls
        callers = [threading.Thread(target=call) for _ in range(4)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(60)
        assert not any(thread.is_alive() for thread in callers)
    finally:
        server.thaw_api()
    assert len(errors) == 4
    assert storage.api_calls - calls == 2
    assert all(isinstance(error, RucioDownError) for error in errors), errors
    assert all("Read timed out" in str(error) for error in errors)  # the reason, for all
    storage.close()


@contextmanager
def _answering(status: int) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server answering ``status`` to every request; yields its URL and the paths."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server's names

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_rucio_client_does_not_retry_503_on_its_own() -> None:
    """Rucio's client alone tries three times per call with its own sleeps; every try must
    be Steward's, through its rate cap and within its retry deadline."""
    with _answering(503) as (url, seen):
        settings = Settings(
            rucio_host=url,
            rucio_username="steward",
            rucio_password=SecretStr("unused"),
        )
        # Probes due at once: each retry is a probe, never refused for a probe not yet due.
        availability = RucioAvailability(initial_probe=0.0, max_probe=0.0)
        storage = RucioStorage(
            settings,
            retry=RetryPolicy(attempts=3, initial_delay=0.01, deadline=30),
            availability=availability,
        )
        with pytest.raises(RucioTransientError, match="server returned 503"):
            storage.whoami()
        assert len(seen) == 3  # one request per Steward try, the login's
        assert storage.api_calls == 3
        assert not availability.up
        storage.close()
