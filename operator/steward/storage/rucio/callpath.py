"""The one path every Rucio call takes: client per thread, rate cap, retries, error mapping.

Rucio's exceptions become `RucioTransientError` (retry later), `RucioPermanentError` (the input
or configuration must change), `RucioNotFoundError` or `RucioAuthenticationError`, here and
nowhere else. Transient failures are retried with bounded, jittered exponential backoff, by
Steward only: Rucio's client's own retries (of 502/503/504 and refused connections) are turned
off, so every try passes the rate cap and counts against the retry deadline. Each call waits
seconds sized to what it does, holds one of a bounded number of call slots, and reports to the
process-wide availability state, which refuses calls at once while Rucio does not answer
(`steward.storage.rucio.availability`). The
password never reaches a repr, an error message or a log record (Rucio's client logs request
headers at DEBUG, including ``X-Rucio-Password``: its logger gets a redacting adapter), and
tokens are cached in a private directory per instance. The verbs (rules, DIDs, replicas, RSEs,
subscriptions) live in sibling modules, split as Rucio's own client is.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Self, TypeVar

import requests
from rucio.client import Client
from rucio.common import exception as rucio_errors

from steward.config import Settings
from steward.exceptions import (
    ConfigurationError,
    RucioAuthenticationError,
    RucioDuplicateRuleError,
    RucioError,
    RucioNotFoundError,
    RucioPermanentError,
    RucioTransientError,
)
from steward.models.rse_expression import RSEExpressionError, canonical
from steward.observability import RUCIO_CALL_SECONDS, RUCIO_CALLS, RUCIO_ERRORS
from steward.storage.rucio.availability import (
    Admission,
    CallSlots,
    CallTimeouts,
    RucioAvailability,
    RucioDownError,
)
from steward.storage.rucio.responses import load_json_data

__all__ = [
    "CallSlots",
    "CallTimeouts",
    "RetryPolicy",
    "RucioAvailability",
    "RucioCallPath",
    "TokenBucket",
    "canonical_expression",
    "caused_by",
    "did_dict",
    "is_database_locked",
    "is_server_error",
    "seconds",
    "split_did",
    "utc",
]

_T = TypeVar("_T")
_LOG = logging.getLogger("steward.storage.rucio")

DEFAULT_BATCH: Final = 500
"""DIDs or files per call: enough to amortise a call, and under SQLite's limit of 1,000 terms
in one expression (Rucio looks DIDs up with one OR term each)."""


def utc(value: datetime | None) -> datetime | None:
    """Rucio returns naive UTC datetimes; make them aware."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def split_did(did: str) -> tuple[str, str]:
    """Split ``scope:name``."""
    scope, sep, name = did.partition(":")
    if not sep or not scope or not name:
        msg = f"invalid DID {did!r}: expected scope:name"
        raise RucioPermanentError(msg)
    return scope, name


def did_dict(did: str) -> dict[str, str]:
    """``{"scope": ..., "name": ...}`` as Rucio's client takes DIDs."""
    scope, name = split_did(did)
    return {"scope": scope, "name": name}


def seconds(lifetime: timedelta | None) -> int | None:
    """Convert a lifetime to Rucio's unit, seconds (negative: already expired)."""
    return None if lifetime is None else math.floor(lifetime.total_seconds())


def canonical_expression(expression: str) -> str:
    """Canonical form of an RSE expression (Rucio compares expressions as strings)."""
    try:
        return canonical(expression)
    except RSEExpressionError as error:
        msg = f"invalid RSE expression {expression!r}: {error}"
        raise RucioPermanentError(msg) from error


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff for transient failures."""

    attempts: int = 6
    """Tries in all (1 means no retry)."""
    initial_delay: float = 0.5
    max_delay: float = 8.0
    deadline: float = 60.0
    """Never start a try later than this many seconds after the first."""
    retry_after: float = 30.0
    """``retry_after`` of the `RucioTransientError` raised when the retries are used up."""

    def delays(self) -> Iterator[float]:
        """Sleep before each retry: doubling, capped, with +-20% jitter."""
        delay = self.initial_delay
        for _ in range(self.attempts - 1):
            yield delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography
            delay = min(delay * 2, self.max_delay)


class TokenBucket:
    """Allow ``rate`` calls per second on average, bursts up to ``burst``; thread-safe.

    ``clock`` and ``sleep`` are injectable, so the pacing is tested without waiting.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            msg = f"rate must be positive, not {rate}"
            raise ValueError(msg)
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self._burst
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                wait = (1 - self._tokens) / self._rate
            self._sleep(wait)
            waited += wait


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Give Rucio's client a logger that masks the password in every record it emits."""

    def __init__(self, logger: logging.Logger, secret: str | None) -> None:
        super().__init__(logger, {})
        self._secret = secret

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:  # noqa: ANN401
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        kwargs.pop("exc_info", None)  # a traceback could carry the request headers
        self.logger.log(level, "%s", _redact(text, self._secret), **kwargs)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class _ServerBusyError(Exception):
    """Rucio, or a proxy before it, answered 502, 503 or 504.

    Raised instead of the client's own back-off, so that Steward's retry loop, deadline and
    rate cap decide what happens next.
    """


_UNANSWERED: Final[tuple[type[BaseException], ...]] = (
    _ServerBusyError,
    rucio_errors.ServerConnectionException,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
"""Failures that mean Rucio did not answer (rather than answered with an error)."""

# Rucio exception classes -> (Steward error, retry in place?)
_TRANSIENT: Final[tuple[type[BaseException], ...]] = (
    _ServerBusyError,
    rucio_errors.ServerConnectionException,
    rucio_errors.DatabaseException,
    rucio_errors.ServiceUnavailable,
    rucio_errors.ResourceTemporaryUnavailable,
    rucio_errors.ReplicationRuleCreationTemporaryFailed,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_NOT_FOUND: Final[tuple[type[BaseException], ...]] = (
    rucio_errors.RuleNotFound,
    rucio_errors.DataIdentifierNotFound,
    rucio_errors.RSENotFound,
    rucio_errors.ScopeNotFound,
    rucio_errors.SubscriptionNotFound,
    rucio_errors.AccountNotFound,
    rucio_errors.ReplicaNotFound,
    rucio_errors.RSEAttributeNotFound,
    rucio_errors.IdentityNotFound,
)
_AUTHENTICATION: Final[tuple[type[BaseException], ...]] = (
    rucio_errors.CannotAuthenticate,
    rucio_errors.NoAuthInformation,
    rucio_errors.MissingClientParameter,
)
_PERMANENT: Final[tuple[tuple[tuple[type[BaseException], ...], type[RucioPermanentError]], ...]] = (
    (_NOT_FOUND, RucioNotFoundError),
    ((rucio_errors.DuplicateRule,), RucioDuplicateRuleError),
)
_WRITE_BLOCKED_RETRY_AFTER: Final = 300.0


class RucioCallPath:
    """Client per thread, rate cap, retries, timeouts, call slots and error mapping.

    Parameters
    ----------
    settings
        ``rucio_host``, ``rucio_auth_host``, ``rucio_account``, ``rucio_username`` and the
        password (``rucio_secret()``); without ``rucio_host`` the rucio.cfg named by
        ``RUCIO_CONFIG`` supplies host and credentials, and ``rucio_account`` the account.
        The timeouts (``rucio_*_timeout``) and call slots (``rucio_max_calls``) come from it.
    retry
        Backoff for transient failures.
    calls_per_second
        Rate cap; ``settings.rucio_calls_per_second`` when None.
    availability
        The process-wide "does Rucio answer" state; a new one when None (the operator shares
        one across every resource through its one instance of this class).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        retry: RetryPolicy | None = None,
        calls_per_second: float | None = None,
        availability: RucioAvailability | None = None,
    ) -> None:
        self._settings = settings if settings is not None else Settings()
        secret = self._settings.rucio_secret()
        self._password = secret.get_secret_value() if secret is not None else None
        if self._settings.rucio_username and self._password is None:
            msg = (
                "rucio_username is set but no password: set STEWARD_RUCIO_PASSWORD or "
                "STEWARD_RUCIO_PASSWORD_FILE"
            )
            raise ConfigurationError(msg)
        self.account = self._settings.rucio_account
        self._retry = retry or RetryPolicy()
        self._bucket = TokenBucket(calls_per_second or self._settings.rucio_calls_per_second)
        self.timeouts = CallTimeouts(
            connect=self._settings.rucio_connect_timeout,
            read=self._settings.rucio_read_timeout,
            write=self._settings.rucio_write_timeout,
            listing=self._settings.rucio_listing_timeout,
        )
        self.slots = CallSlots(self._settings.rucio_max_calls)
        self.availability = availability or RucioAvailability()
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self.api_calls = 0
        """Rucio API calls made so far (each retry counts; calls refused while down do not)."""
        self._token_dir = Path(tempfile.mkdtemp(prefix="steward-rucio-tokens-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._token_dir, ignore_errors=True)

    def __repr__(self) -> str:
        host = self._settings.rucio_host or "rucio.cfg"
        return f"RucioStorage(host={host!r}, account={self.account!r})"

    def whoami(self) -> str:
        """The account the credentials log in as: one cheap call proving Rucio answers us."""
        answer = self._call("whoami", lambda c: c.whoami())
        return (
            str(answer.get("account", self.account)) if isinstance(answer, dict) else self.account
        )

    def close(self) -> None:
        """Forget the clients and remove the token cache."""
        self._local = threading.local()
        self._cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _new_client(self) -> Any:  # noqa: ANN401 - rucio has no type information
        """Build a client whose tokens live in this instance's private directory.

        The client logs in when built, so this runs inside a call's slot and timeouts. Its
        own retries are off: its back-off for 502/503/504 raises instead of sleeping, and
        ``request_retries = -1`` re-raises a refused connection at the first try. Its answers
        are parsed by `responses.load_json_data`: the values its own parser gives, for a
        fraction of the CPU.
        """
        settings = self._settings
        options: dict[str, Any] = {
            "account": self.account,
            "timeout": self.timeouts.of("get_auth_token"),
            "logger": _RedactingLogger(logging.getLogger(f"{__name__}.client"), self._password),
        }
        if settings.rucio_host:
            options["rucio_host"] = settings.rucio_host
            options["auth_host"] = settings.rucio_auth_host or settings.rucio_host
        if settings.rucio_username and self._password is not None:
            options["auth_type"] = "userpass"
            options["creds"] = {"username": settings.rucio_username, "password": self._password}
        client_class = type(
            "StewardRucioClient",
            (Client,),
            {
                "TOKEN_PATH_PREFIX": f"{self._token_dir}/",
                "REQUEST_RETRIES": -1,
                "_back_off": _raise_busy,
                "_load_json_data": load_json_data,
                "session": property(_get_session, _set_session),
            },
        )
        client = client_class(**options)
        client.request_retries = -1  # rucio.cfg's [client] request_retries would re-enable them
        return client

    def _client(self) -> Any:  # noqa: ANN401
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._new_client()
            self._local.client = client
        return client

    def _call(self, operation: str, function: Callable[[Any], _T]) -> _T:
        """Call Rucio through the rate cap and a call slot, retrying transient failures.

        While Rucio is marked down a try is refused without a request; the loop then waits
        for the next probe only if that comes before the retry deadline, so a short deadline
        (the operator's) fails at once and frees the handler thread.

        Raises
        ------
        RucioError
            The mapped error (`RucioTransientError` once the retries are used up;
            `RucioDownError` for a call refused while Rucio does not answer).
        """
        start = time.monotonic()
        delays = self._retry.delays()
        while True:
            try:
                return self._attempt(operation, function)
            except _Failed as failed:
                delay = next(delays, None) if failed.retry else None
                if delay is not None and isinstance(failed.error, RucioDownError):
                    delay = max(delay, self.availability.wait())
                if delay is None or time.monotonic() - start + delay > self._retry.deadline:
                    raise failed.error from failed.cause
                if not isinstance(failed.error, RucioDownError):
                    _LOG.warning("%s; retrying in %.1f s", failed.error, delay)
                time.sleep(delay)

    def _attempt(self, operation: str, function: Callable[[Any], _T]) -> _T:
        """One try: admission, rate cap, a slot, the call with its timeouts, the verdict."""
        admission = self.availability.admit()
        if admission is Admission.REFUSE:
            raise _Failed(
                self.availability.refused(operation, retry_after=self._retry.retry_after),
                retry=True,
            )
        probing = admission is Admission.PROBE and not self._probe()
        try:
            result = self._request(operation, function, probing=probing)
        except BaseException:
            if probing and not self.availability.up and self.availability.probing:
                self.availability.failed("the probe call ended without an answer", probe=True)
            raise
        self.availability.answered()
        return result

    def _request(self, operation: str, function: Callable[[Any], _T], *, probing: bool) -> _T:
        """Rate cap, a call slot, the call with its timeouts; failures mapped for the loop."""
        self._bucket.acquire()
        timeouts = self.timeouts.of(operation)
        try:
            with self.slots.hold(timeouts[1], lambda: not probing and not self.availability.up):
                with self._count_lock:
                    self.api_calls += 1
                RUCIO_CALLS.labels(operation).inc()
                try:
                    with RUCIO_CALL_SECONDS.labels(operation).time():
                        client = self._client()
                        client.timeout = timeouts
                        return function(client)
                except RucioError:
                    self.availability.answered()  # Steward's own verdict on an answer
                    raise
                except Exception as raw:  # noqa: BLE001 - every failure is mapped, none escapes raw
                    raise self._failure(operation, raw, probe=probing) from None
        except TimeoutError as busy:
            if not self.availability.up:
                raise _Failed(
                    self.availability.refused(operation, retry_after=self._retry.retry_after),
                    retry=True,
                ) from None
            message = f"Rucio {operation} not attempted: {busy} for {timeouts[1]:.0f} s"
            error = RucioTransientError(message, retry_after=self._retry.retry_after)
            raise _Failed(error, retry=False) from None

    def _probe(self) -> bool:
        """Ask Rucio whether it answers, for everyone: ``ping``, with the read timeout.

        Returns False, without a request, in a thread that has no client yet (it would log
        in first): its own call is then the probe. Whatever happens, a probe ends with a
        verdict, or no caller would ever probe again.

        Raises
        ------
        _Failed
            Rucio did not answer the ping (it stays down, the next probe backs off).
        """
        client = getattr(self._local, "client", None)
        if client is None:
            return False
        verdict = False
        try:
            with self._count_lock:
                self.api_calls += 1
            RUCIO_CALLS.labels("ping").inc()
            client.timeout = self.timeouts.of("ping")
            try:
                client.ping()
            except Exception as raw:  # noqa: BLE001 - mapped like any call
                verdict = True
                raise self._failure("ping", raw, probe=True) from None
            verdict = True
            self.availability.answered()
        finally:
            if not verdict:
                self.availability.failed("the probe was interrupted", probe=True)
        return True

    def _failure(self, operation: str, raw: Exception, *, probe: bool = False) -> _Failed:
        """Map a client exception, tell the availability state, and wrap it for the loop."""
        error, retry_here = self._translate(operation, raw)
        RUCIO_ERRORS.labels(operation, type(error).__name__).inc()
        if isinstance(raw, _UNANSWERED):
            self.availability.failed(str(error), probe=probe)
        else:
            self.availability.answered()  # an error is an answer
        return _Failed(error, retry=retry_here, cause=None if self._leaks(raw) else raw)

    def _stream(self, operation: str, function: Callable[[Any], Iterable[_T]]) -> Iterator[_T]:
        """Call a listing verb through `_call` and yield its rows as the server sends them.

        Rucio's listings answer a stream of JSON lines that its client reads lazily, so a
        million rows never sit in memory at once, as long as the caller does not collect
        them. The request (and its retries) happens at the first row; a failure while reading
        the rest is mapped like any other but not retried, as the rows already yielded cannot
        be taken back: the caller starts again.

        Raises
        ------
        RucioError
            The mapped error.
        """
        rows = iter(self._call(operation, lambda c: iter(function(c))))
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except Exception as raw:  # noqa: BLE001 - every failure is mapped, none escapes raw
                error, _ = self._translate(operation, raw)
                raise error from (None if self._leaks(raw) else raw)
            yield row

    def _rpc(self, method: str, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - untyped client
        """Call the client method of that name with ``args`` through `_call`."""
        return self._call(method, lambda c: getattr(c, method)(*args, **kwargs))

    def _leaks(self, raw: BaseException) -> bool:
        """Whether an exception's text contains the password (then it is not chained)."""
        secret = self._password
        return secret is not None and secret != "" and secret in f"{raw!s} {raw!r}"

    def _translate(self, operation: str, raw: Exception) -> tuple[RucioError, bool]:
        """Map a client exception to Steward's, and say whether to retry it right here."""
        detail = _redact(f"{type(raw).__name__}: {raw}".replace("\n", " "), self._password)
        message = f"Rucio {operation} failed: {detail}"
        if isinstance(raw, _TRANSIENT) or is_server_error(raw) or is_database_locked(raw):
            return RucioTransientError(message, retry_after=self._retry.retry_after), True
        if isinstance(raw, rucio_errors.RSEWriteBlocked):
            return RucioTransientError(message, retry_after=_WRITE_BLOCKED_RETRY_AFTER), False
        if isinstance(raw, _AUTHENTICATION):
            hint = f"check the Rucio credentials of account {self.account!r}"
            return RucioAuthenticationError(f"{message} ({hint})"), False
        for classes, error in _PERMANENT:
            if isinstance(raw, classes):
                return error(message), False
        return RucioPermanentError(message), False


def caused_by(error: BaseException, cause: type[BaseException]) -> bool:
    """Whether the Rucio exception behind a mapped error is of class ``cause``."""
    return isinstance(error.__cause__, cause)


def is_database_locked(raw: BaseException) -> bool:
    """Tell SQLite's "database is locked" behind a Rucio error, whatever class carries it.

    Rucio on SQLite reports a writer that lost the race for the lock as an error whose class
    depends on where it happened; the transaction was rolled back, so trying again is safe.
    """
    return "database is locked" in str(raw)


def is_server_error(raw: BaseException) -> bool:
    """Tell a bare RucioException for a 5xx answer without details (a server bug or crash)."""
    return type(raw) is rucio_errors.RucioException and "http status code: 5" in str(raw)


class _Failed(Exception):  # noqa: N818 - internal signal of the retry loop, never escapes
    """One try failed with ``error``; ``retry`` says whether the loop may try again."""

    def __init__(
        self, error: RucioError, *, retry: bool, cause: BaseException | None = None
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry = retry
        self.cause = cause


def _raise_busy(client: Any, _retry_number: int, reason: str) -> None:  # noqa: ANN401
    """Stand-in for the client's ``_back_off``: no sleeping and retrying inside the client.

    Rucio itself answers 503 for some refusals (an RSE blocked for writing: RSEWriteBlocked),
    with its exception in the answer: that one is raised as Rucio's exception, since Rucio did
    answer; only a 502/503/504 without one (a proxy, a worker gone) means Rucio is not there.
    """
    response = getattr(client, "_steward_response", None)
    if response is not None and (
        "ExceptionClass" in response.headers or b"ExceptionClass" in (response.content or b"")
    ):
        exc_cls, exc_msg = client._get_exception(  # noqa: SLF001 - the client's own parser
            headers=response.headers, status_code=response.status_code, data=response.content
        )
        raise exc_cls(exc_msg)
    raise _ServerBusyError(reason)


def _remember_response(client: Any) -> Callable[..., None]:  # noqa: ANN401
    """A requests response hook keeping the client's last answer for `_raise_busy`."""

    def hook(response: requests.Response, *_args: object, **_kwargs: object) -> None:
        client._steward_response = response  # noqa: SLF001 - our own attribute

    return hook


def _get_session(client: Any) -> requests.Session:  # noqa: ANN401
    session: requests.Session = client.__dict__["_steward_session"]
    return session


def _set_session(client: Any, session: requests.Session) -> None:  # noqa: ANN401
    """The client replaces its session after a 401: every session gets the response hook."""
    session.hooks["response"].append(_remember_response(client))
    client.__dict__["_steward_session"] = session
