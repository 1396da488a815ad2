"""Rucio storage: the only module that talks to Rucio (``rucio.client``).

Everything Steward asks of Rucio goes through `RucioStorage`: registering a Site's RSEs, adding,
moving, reducing and deleting replication rules, subscriptions, and listing DIDs and rules. It
keeps four promises the rest of Steward relies on:

- **Errors are mapped once.** Rucio's exceptions become `RucioTransientError` (retry later),
  `RucioPermanentError` (the input or configuration must change), `RucioNotFoundError` or
  `RucioAuthenticationError`. Transient failures (server unreachable, database busy) are retried
  here with bounded exponential backoff before they surface.
- **Creating a rule is idempotent.** Expressions are canonicalised (Rucio detects duplicates by
  comparing the expression as a string), and a ``DuplicateRule`` means "adopt the existing
  rule", never "create another" or "fail".
- **Credentials never leak.** The password is not in reprs, error messages or log records
  (Rucio's client logs request headers at DEBUG, including ``X-Rucio-Password``: its logger is
  given a redacting adapter). Tokens are cached in a private directory per instance, so
  another process' cached token for the same account is never used in place of checking ours.
- **Calls are rate-capped.** A token bucket (``Settings.rucio_calls_per_second``) bounds the
  request rate, so a thousand resources reconciled at start-up cannot flood Rucio.

Rucio's client is synchronous and blocking: callers in async code (kopf handlers) run these
methods off the event loop, in kopf's thread pool (sync handlers) or with
``asyncio.to_thread``. An instance is thread-safe; each thread gets its own client.

Units follow Rucio: rule lifetimes are seconds (methods take `datetime.timedelta`), subscription
lifetimes are days, sizes are bytes.
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeVar

import requests
from rucio.client import Client
from rucio.common import exception as rucio_errors
from rucio.common.constants import TransferLimitDirection

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
from steward.models.replication import RuleState
from steward.models.rse_expression import RSEExpressionError, canonical
from steward.models.site import RSE, Protocol, Site

__all__ = [
    "DEFAULT_ACTIVITY",
    "MANAGED_ATTRIBUTES",
    "SAME_SITE_DISTANCE",
    "UNSET",
    "AddedRules",
    "Availability",
    "File",
    "RetryPolicy",
    "RucioStorage",
    "Rule",
    "RuleSpec",
    "RuleState",
    "SiteRegistration",
    "Subscription",
    "SubscriptionSpec",
    "TokenBucket",
]

_T = TypeVar("_T")
_LOG = logging.getLogger(__name__)

MANAGED_ATTRIBUTES: Final = "steward_managed_attributes"
"""RSE attribute listing the attributes Steward set, so it can remove ones no longer declared."""

SAME_SITE_DISTANCE: Final = 1
"""Distance between two RSEs of one site (transfers within a facility need a distance too)."""

DEFAULT_ACTIVITY: Final = "User Subscriptions"
"""Rucio's default rule activity; subscriptions need one spelled out (the transmogrifier's own
default, ``default``, is not in Rucio's list of activities)."""

_DEFAULT_BATCH: Final = 500
"""DIDs or files per call: enough to amortise a call, and under SQLite's limit of 1,000 terms
in one expression (Rucio looks DIDs up with one OR term each)."""


class _Unset(Enum):
    UNSET = "UNSET"


UNSET: Final = _Unset.UNSET
"""Marks an `RucioStorage.update_rule` option as "leave as is" (None means "no value")."""


_STATE_CODES: Final = {
    RuleState.OK: "O",
    RuleState.REPLICATING: "R",
    RuleState.STUCK: "S",
    RuleState.SUSPENDED: "U",
    RuleState.WAITING_APPROVAL: "W",
    RuleState.INJECT: "I",
}
"""Rucio's one-letter codes, which its rule listing filter expects."""


def _utc(value: datetime | None) -> datetime | None:
    """Rucio returns naive UTC datetimes; make them aware."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _split(did: str) -> tuple[str, str]:
    """Split ``scope:name``."""
    scope, sep, name = did.partition(":")
    if not sep or not scope or not name:
        msg = f"invalid DID {did!r}: expected scope:name"
        raise RucioPermanentError(msg)
    return scope, name


def _did_dict(did: str) -> dict[str, str]:
    scope, name = _split(did)
    return {"scope": scope, "name": name}


def _seconds(lifetime: timedelta | None) -> int | None:
    """Convert a lifetime to Rucio's unit, seconds (negative: already expired)."""
    return None if lifetime is None else math.floor(lifetime.total_seconds())


def _canonical(expression: str) -> str:
    try:
        return canonical(expression)
    except RSEExpressionError as error:
        msg = f"invalid RSE expression {expression!r}: {error}"
        raise RucioPermanentError(msg) from error


@dataclass(frozen=True, slots=True)
class Rule:
    """A Rucio replication rule, as Steward reads it."""

    id: str
    scope: str
    name: str
    account: str
    rse_expression: str
    copies: int
    state: RuleState
    locks_ok: int = 0
    locks_replicating: int = 0
    locks_stuck: int = 0
    bytes: int | None = None
    """Size of the DID, when Rucio knows it."""
    expires_at: datetime | None = None
    comment: str | None = None
    child_rule_id: str | None = None
    locked: bool = False
    grouping: str = "DATASET"
    activity: str | None = None
    priority: int = 3
    source_replica_expression: str | None = None
    purge_replicas: bool = False
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def did(self) -> str:
        """``scope:name`` of the rule's DID."""
        return f"{self.scope}:{self.name}"

    @classmethod
    def from_rucio(cls, data: Mapping[str, Any]) -> Rule:
        """Build from a rule dictionary of Rucio's client."""
        return cls(
            id=data["id"],
            scope=data["scope"],
            name=data["name"],
            account=data["account"],
            rse_expression=data["rse_expression"],
            copies=int(data["copies"]),
            state=RuleState(data["state"]),
            locks_ok=int(data.get("locks_ok_cnt") or 0),
            locks_replicating=int(data.get("locks_replicating_cnt") or 0),
            locks_stuck=int(data.get("locks_stuck_cnt") or 0),
            bytes=data.get("bytes"),
            expires_at=_utc(data.get("expires_at")),
            comment=data.get("comments"),
            child_rule_id=data.get("child_rule_id"),
            locked=bool(data.get("locked")),
            grouping=str(data.get("grouping") or "DATASET"),
            activity=data.get("activity"),
            priority=int(data.get("priority") or 3),
            source_replica_expression=data.get("source_replica_expression"),
            purge_replicas=bool(data.get("purge_replicas")),
            error=data.get("error"),
            created_at=_utc(data.get("created_at")),
            updated_at=_utc(data.get("updated_at")),
        )


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """What a rule should be; the input of `RucioStorage.add_rules`."""

    rse_expression: str
    """Destination; canonicalised before it is sent."""
    copies: int = 1
    lifetime: timedelta | None = None
    """Rule lifetime (Rucio counts seconds); None: forever."""
    grouping: Literal["ALL", "DATASET", "NONE"] = "DATASET"
    priority: int = 3
    activity: str = DEFAULT_ACTIVITY
    source_replica_expression: str | None = None
    comment: str | None = None
    """Steward tags its rules here, so `RucioStorage.list_rules` finds them in one call."""
    locked: bool = False
    purge_replicas: bool = False
    ask_approval: bool = False
    asynchronous: bool = False
    ignore_availability: bool = False
    weight: str | None = None

    def __post_init__(self) -> None:
        if self.copies < 1:
            msg = f"a rule needs at least one copy, not {self.copies}"
            raise RucioPermanentError(msg)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of ``add_replication_rule`` (expression canonicalised)."""
        return {
            "copies": self.copies,
            "rse_expression": _canonical(self.rse_expression),
            "lifetime": _seconds(self.lifetime),
            "grouping": self.grouping,
            "priority": self.priority,
            "activity": self.activity,
            "source_replica_expression": self.source_replica_expression,
            "comment": self.comment,
            "locked": self.locked,
            "purge_replicas": self.purge_replicas,
            "ask_approval": self.ask_approval,
            "asynchronous": self.asynchronous,
            "ignore_availability": self.ignore_availability,
            "weight": self.weight,
        }

    def subscription_rule(self) -> dict[str, Any]:
        """Return the rule as a subscription carries it (the transmogrifier's format)."""
        rule: dict[str, Any] = {
            "copies": self.copies,
            "rse_expression": _canonical(self.rse_expression),
            "grouping": self.grouping,
            # The transmogrifier compares these two with the string "True".
            "locked": str(self.locked),
            "purge_replicas": str(self.purge_replicas),
        }
        rule["activity"] = self.activity
        optional = {
            "lifetime": _seconds(self.lifetime),
            "source_replica_expression": self.source_replica_expression,
            "comments": self.comment,
            "weight": self.weight,
        }
        rule.update({key: value for key, value in optional.items() if value is not None})
        return rule


@dataclass(frozen=True, slots=True)
class AddedRules:
    """Result of `RucioStorage.add_rules`."""

    rule_ids: dict[str, str]
    """Rule id per DID (``scope:name``)."""
    created: frozenset[str] = frozenset()
    """DIDs whose rule this call created."""
    adopted: frozenset[str] = frozenset()
    """DIDs whose existing, identical rule was adopted instead."""


@dataclass(slots=True)
class _Adding:
    """Progress of one `RucioStorage.add_rules` call."""

    spec: RuleSpec
    options: dict[str, Any]
    ids: dict[str, str] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    adopted: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A Rucio subscription: rules for new DIDs matching a filter (see the transmogrifier)."""

    name: str
    filter: Mapping[str, Any]
    """Rucio's filter: ``scope`` (list of regexes), ``did_type``, ``pattern``, metadata keys."""
    rules: Sequence[RuleSpec]
    comments: str = ""
    lifetime: timedelta | None = None
    """How long the subscription lives (Rucio counts whole days, rounded up); None: forever."""
    priority: int = 3

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments shared by ``add_subscription`` and ``update_subscription``."""
        days = None if self.lifetime is None else math.ceil(self.lifetime / timedelta(days=1))
        return {
            "filter_": dict(self.filter),
            "replication_rules": [rule.subscription_rule() for rule in self.rules],
            "comments": self.comments,
            "lifetime": days if days is not None else False,
            "priority": self.priority,
        }


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as Rucio reports it."""

    id: str
    name: str
    account: str
    filter: dict[str, Any]
    rules: list[dict[str, Any]]
    state: str
    comments: str | None
    priority: int | None

    @classmethod
    def from_rucio(cls, data: Mapping[str, Any]) -> Subscription:
        """Build from a subscription dictionary (filter and rules arrive as JSON text)."""
        import json  # noqa: PLC0415 - only needed here

        def decoded(value: Any) -> Any:  # noqa: ANN401 - JSON
            return json.loads(value) if isinstance(value, str) else value

        return cls(
            id=data["id"],
            name=data["name"],
            account=data["account"],
            filter=decoded(data.get("filter")) or {},
            rules=decoded(data.get("replication_rules")) or [],
            state=str(data.get("state")),
            comments=data.get("comments"),
            priority=data.get("policyid"),
        )


@dataclass(frozen=True, slots=True)
class File:
    """A file replica to register (test and dev data; Rucio moves no bytes for mock RSEs)."""

    did: str
    bytes: int
    adler32: str = "00000001"
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Availability:
    """An RSE's availability flags."""

    read: bool = True
    write: bool = True
    delete: bool = True


@dataclass(frozen=True, slots=True)
class SiteRegistration:
    """What `RucioStorage.register_site` changed; empty ``changes`` when already converged."""

    changes: tuple[str, ...]
    """One line per write, e.g. ``NCSA_TAPE: attribute tier=1`` (for the audit trail)."""
    pending: tuple[str, ...]
    """Distances not set because the other site or RSE is not registered yet."""


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
    """Allow ``rate`` calls per second on average, bursts up to ``burst``; thread-safe."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            msg = f"rate must be positive, not {rate}"
            raise ValueError(msg)
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self._burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                wait = (1 - self._tokens) / self._rate
            time.sleep(wait)
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


# Rucio exception classes -> (Steward error, retry in place?)
_TRANSIENT: Final[tuple[type[BaseException], ...]] = (
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


class RucioStorage:
    """Steward's view of Rucio; see the module docstring for what it guarantees.

    Parameters
    ----------
    settings
        ``rucio_host``, ``rucio_auth_host``, ``rucio_account``, ``rucio_username`` and the
        password (``rucio_secret()``); without ``rucio_host`` the rucio.cfg named by
        ``RUCIO_CONFIG`` supplies host and credentials, and ``rucio_account`` the account.
    retry
        Backoff for transient failures.
    calls_per_second
        Rate cap; ``settings.rucio_calls_per_second`` when None.
    timeout
        Seconds Rucio's client waits for one HTTP response.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        retry: RetryPolicy | None = None,
        calls_per_second: float | None = None,
        timeout: float = 600.0,
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
        self._timeout = timeout
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self.api_calls = 0
        """Rucio API calls made so far (each retry counts)."""
        self._token_dir = Path(tempfile.mkdtemp(prefix="steward-rucio-tokens-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._token_dir, ignore_errors=True)

    def __repr__(self) -> str:
        host = self._settings.rucio_host or "rucio.cfg"
        return f"RucioStorage(host={host!r}, account={self.account!r})"

    def close(self) -> None:
        """Forget the clients and remove the token cache."""
        self._local = threading.local()
        self._cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the call path -----------------------------------------------------------------------

    def _new_client(self) -> Any:  # noqa: ANN401 - rucio has no type information
        """Build a client whose tokens live in this instance's private directory."""
        settings = self._settings
        options: dict[str, Any] = {
            "account": self.account,
            "timeout": self._timeout,
            "logger": _RedactingLogger(logging.getLogger(f"{__name__}.client"), self._password),
        }
        if settings.rucio_host:
            options["rucio_host"] = settings.rucio_host
            options["auth_host"] = settings.rucio_auth_host or settings.rucio_host
        if settings.rucio_username and self._password is not None:
            options["auth_type"] = "userpass"
            options["creds"] = {"username": settings.rucio_username, "password": self._password}
        client_class = type(
            "StewardRucioClient", (Client,), {"TOKEN_PATH_PREFIX": f"{self._token_dir}/"}
        )
        return client_class(**options)

    def _client(self) -> Any:  # noqa: ANN401
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._new_client()
            self._local.client = client
        return client

    def _call(self, operation: str, function: Callable[[Any], _T]) -> _T:
        """Call Rucio through the rate cap, retrying transient failures with backoff.

        Raises
        ------
        RucioError
            The mapped error (`RucioTransientError` once the retries are used up).
        """
        start = time.monotonic()
        delays = self._retry.delays()
        while True:
            self._bucket.acquire()
            with self._count_lock:
                self.api_calls += 1
            try:
                return function(self._client())
            except RucioError:
                raise  # ours already (raised by Steward code inside ``function``)
            except Exception as raw:  # noqa: BLE001 - every failure is mapped, none escapes raw
                error, retry_here = self._translate(operation, raw)
                delay = next(delays, None) if retry_here else None
                if delay is None or time.monotonic() - start + delay > self._retry.deadline:
                    raise error from (None if self._leaks(raw) else raw)
                _LOG.warning("%s; retrying in %.1f s", error, delay)
                time.sleep(delay)

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
        if isinstance(raw, _TRANSIENT) or _is_server_error(raw):
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

    # -- rules -------------------------------------------------------------------------------

    def add_rules(
        self, dids: Sequence[str], spec: RuleSpec, *, batch_size: int = _DEFAULT_BATCH
    ) -> AddedRules:
        """Make sure each DID has a rule as ``spec`` says; create or adopt, never duplicate.

        Give the DIDs believed to have no rule yet: they go to Rucio in batched calls. A
        ``DuplicateRule`` fails a whole batch without saying which DID (rucio#3807). Then
        one listing of our rules with this expression finds the existing ones, which are
        adopted, and the rest is sent again as one batch; should that still hit a duplicate (a
        rule created meanwhile), it falls back to one DID per call, adopting each duplicate's
        rule found with ``list_did_rules``. A rule matches when account, canonical expression
        and copies are equal. An adopted rule that is expiring (a deleted rule only expires
        within the hour) gets its lifetime back when ``spec`` has none.

        Raises
        ------
        RucioPermanentError
            Invalid expression, unknown DID, quota exceeded, and the like.
        RucioTransientError
            Rucio stayed unreachable through the retries.
        """
        adding = _Adding(spec, spec.client_options())
        pending = list(dict.fromkeys(dids))
        for start in range(0, len(pending), batch_size):
            self._add_batch(pending[start : start + batch_size], adding)
        return AddedRules(adding.ids, frozenset(adding.created), frozenset(adding.adopted))

    def _add_batch(self, batch: list[str], adding: _Adding, *, listed: bool = False) -> None:
        """Add one batch; on a duplicate adopt what a listing finds, then go one by one."""
        try:
            rule_ids = self._call(
                "add_replication_rule",
                lambda c: c.add_replication_rule(
                    dids=[_did_dict(d) for d in batch], **adding.options
                ),
            )
        except RucioDuplicateRuleError:
            if len(batch) == 1:
                self._adopt(batch[0], self._find_rule(batch[0], adding), adding)
            elif not listed:
                existing = self._matching_rules(batch, adding)
                for did, rule in existing.items():
                    self._adopt(did, rule, adding)
                rest = [did for did in batch if did not in existing]
                if rest:
                    self._add_batch(rest, adding, listed=True)
            else:
                for did in batch:
                    self._add_batch([did], adding, listed=True)
            return
        adding.ids.update(zip(batch, rule_ids, strict=True))
        adding.created.update(batch)

    def _matches(self, rule: Rule, adding: _Adding) -> bool:
        return (rule.account, rule.rse_expression, rule.copies) == (
            self.account,
            adding.options["rse_expression"],
            adding.spec.copies,
        )

    def _matching_rules(self, batch: list[str], adding: _Adding) -> dict[str, Rule]:
        """Our rules with the batch's expression and copies on DIDs of the batch (one call)."""
        scopes = {_split(did)[0] for did in batch}
        rules = self.list_rules(
            rse_expression=adding.options["rse_expression"],
            scope=scopes.pop() if len(scopes) == 1 else None,
        )
        wanted = set(batch)
        return {r.did: r for r in rules if r.did in wanted and self._matches(r, adding)}

    def _find_rule(self, did: str, adding: _Adding) -> Rule:
        """Find the rule a single DID's ``DuplicateRule`` refers to."""
        for rule in self.list_did_rules(did):
            if self._matches(rule, adding):
                return rule
        msg = (
            f"Rucio reports a duplicate rule for {did} ({adding.options['rse_expression']}, "
            f"{adding.spec.copies} copies, account {self.account}) but lists none to adopt"
        )
        raise RucioDuplicateRuleError(msg)

    def _adopt(self, did: str, rule: Rule, adding: _Adding) -> None:
        """Take an existing rule as ours; give it back its lifetime if it was expiring."""
        if adding.spec.lifetime is None and rule.expires_at is not None:
            self.update_rule(rule.id, lifetime=None)
        adding.ids[did] = rule.id
        adding.adopted.add(did)

    def add_rule(self, did: str, spec: RuleSpec) -> str:
        """Make sure ``did`` has a rule as ``spec`` says; return its id (see `add_rules`)."""
        return self.add_rules([did], spec).rule_ids[did]

    def get_rule(self, rule_id: str) -> Rule:
        """Return one rule.

        Raises
        ------
        RucioNotFoundError
            If there is no such rule (any more).
        """
        return Rule.from_rucio(
            self._call("get_replication_rule", lambda c: c.get_replication_rule(rule_id))
        )

    def update_rule(
        self,
        rule_id: str,
        *,
        lifetime: timedelta | _Unset | None = UNSET,
        comment: str | _Unset = UNSET,
        locked: bool | _Unset = UNSET,
        activity: str | _Unset = UNSET,
        priority: int | _Unset = UNSET,
        source_replica_expression: str | _Unset | None = UNSET,
        purge_replicas: bool | _Unset = UNSET,
        state: Literal["SUSPENDED", "STUCK"] | _Unset = UNSET,
        cancel_requests: bool | _Unset = UNSET,
    ) -> None:
        """Change what Rucio lets change in place; `UNSET` options are left alone.

        ``lifetime`` counts from now; None removes the expiry, a zero or negative one expires
        the rule at once (judge-cleaner then deletes it). Expression and copies cannot change
        in place: use `change_rule`. ``cancel_requests`` with a ``state`` cancels the rule's
        queued and submitted transfers and marks its replicating locks STUCK.
        """
        given = {
            "lifetime": _seconds(lifetime) if not isinstance(lifetime, _Unset) else lifetime,
            "comment": comment,
            "locked": locked,
            "activity": activity,
            "priority": priority,
            "source_replica_expression": source_replica_expression,
            "purge_replicas": purge_replicas,
            "state": state.lower() if isinstance(state, str) else state,
            "cancel_requests": cancel_requests,
        }
        options = {key: value for key, value in given.items() if value is not UNSET}
        if options:
            self._call(
                "update_replication_rule",
                lambda c: c.update_replication_rule(rule_id, options),
            )

    def delete_rule(
        self, rule_id: str, *, purge_replicas: bool = False, unlock: bool = False
    ) -> bool:
        """Delete a rule; return False if it was already gone.

        Rucio's deletion is soft: the rule expires within the hour and judge-cleaner removes
        it. A locked rule (Rucio locks TAPE rules without lifetime) is refused unless
        ``unlock`` is True: protecting custodial copies is the caller's decision.
        """
        try:
            if unlock:
                self.update_rule(rule_id, locked=False)
            self._call(
                "delete_replication_rule",
                lambda c: c.delete_replication_rule(rule_id, purge_replicas=purge_replicas),
            )
        except RucioNotFoundError:
            return False
        return True

    def move_rule(self, rule_id: str, rse_expression: str) -> str:
        """Move a rule to another expression; return the new (child) rule's id.

        Rucio creates a child rule and expires the original once the child is OK, so the
        declared copies exist throughout. Idempotent: a child already heading to the same
        expression is returned; one heading elsewhere is detached and deleted first.
        """
        expression = _canonical(rse_expression)
        rule = self.get_rule(rule_id)
        if rule.child_rule_id is not None:
            child = self._existing_child(rule)
            if child is not None and child.rse_expression == expression:
                return child.id
            self._detach_child(rule)
        if rule.locked:  # else judge-cleaner would never remove the original
            self.update_rule(rule_id, locked=False)
        return str(
            self._call(
                "move_replication_rule",
                lambda c: c.move_replication_rule(rule_id, expression, override={}),
            )
        )

    def _existing_child(self, rule: Rule) -> Rule | None:
        """Return the rule's child rule, or None if it is gone."""
        assert rule.child_rule_id is not None  # noqa: S101 - checked by the caller
        try:
            return self.get_rule(rule.child_rule_id)
        except RucioNotFoundError:
            return None

    def _detach_child(self, rule: Rule) -> None:
        """Cancel a replacement in progress: the parent keeps its place, the child goes."""
        if rule.child_rule_id is None:
            return
        child_id = rule.child_rule_id
        self._call(
            "update_replication_rule",
            lambda c: c.update_replication_rule(rule.id, {"child_rule_id": None}),
        )
        self.update_rule(child_id, lifetime=timedelta(0))

    def reduce_rule(self, rule_id: str, copies: int) -> str:
        """Atomically replace an OK rule by one with fewer copies; return the new id.

        Rucio does not carry the comment over; this does.

        Raises
        ------
        RucioPermanentError
            If the rule is not OK (``RuleReplaceFailed``) or ``copies`` is not fewer.
        """
        rule = self.get_rule(rule_id)
        new_id = self._call("reduce_replication_rule", lambda c: _reduce(c, rule_id, copies))
        if new_id is None:
            new_id = self._reduced_rule(rule, copies)
        if rule.comment:
            self.update_rule(new_id, comment=rule.comment)
        return new_id

    def _reduced_rule(self, old: Rule, copies: int) -> str:
        """Find the rule Rucio's reduce created (its answer was lost, see `_reduce`)."""
        for rule in self.list_did_rules(old.did):
            if (rule.account, rule.rse_expression, rule.copies) == (
                old.account,
                old.rse_expression,
                copies,
            ):
                return rule.id
        msg = f"Rucio reduced rule {old.id} but lists no rule with {copies} copies for {old.did}"
        raise RucioPermanentError(msg)

    def change_rule(
        self, rule_id: str, *, rse_expression: str | None = None, copies: int | None = None
    ) -> str:
        """Change a rule's expression and/or copies; return the id of the rule now in charge.

        Never leaves fewer copies than declared on the way: fewer copies on an OK rule go
        through Rucio's atomic reduce; a new expression through move (the original expires
        once the new rule is OK); anything else through a new rule that becomes the old one's
        child, so Rucio expires the old one only once the new one is OK. A replacement
        already in progress towards another target is cancelled first.
        """
        rule = self.get_rule(rule_id)
        expression = _canonical(rse_expression or rule.rse_expression)
        wanted = copies or rule.copies
        if (expression, wanted) == (rule.rse_expression, rule.copies):
            return rule.id
        if rule.child_rule_id is not None:
            child = self._existing_child(rule)
            if child is not None and (child.rse_expression, child.copies) == (expression, wanted):
                return child.id
            self._detach_child(rule)
            rule = self.get_rule(rule_id)
        if expression == rule.rse_expression and wanted < rule.copies:
            if rule.state is RuleState.OK:
                return self.reduce_rule(rule.id, wanted)
        elif wanted == rule.copies:
            return self.move_rule(rule.id, expression)
        return self._replace(rule, expression, wanted)

    def _replace(self, rule: Rule, expression: str, copies: int) -> str:
        """Add the new rule, then make it the old one's child with the old one expiring."""
        remaining = None if rule.expires_at is None else rule.expires_at - datetime.now(UTC)
        spec = RuleSpec(
            rse_expression=expression,
            copies=copies,
            lifetime=remaining,
            grouping=rule.grouping,  # type: ignore[arg-type]
            priority=rule.priority,
            activity=rule.activity or DEFAULT_ACTIVITY,
            source_replica_expression=rule.source_replica_expression,
            comment=rule.comment,
            locked=rule.locked,
            purge_replicas=rule.purge_replicas,
        )
        new_id = self.add_rule(rule.did, spec)
        self._call(
            "update_replication_rule",
            lambda c: c.update_replication_rule(
                rule.id, {"child_rule_id": new_id, "lifetime": 0, "locked": False}
            ),
        )
        return new_id

    def list_rules(
        self,
        *,
        account: str | None = None,
        comment: str | None = None,
        scope: str | None = None,
        state: RuleState | None = None,
        rse_expression: str | None = None,
    ) -> list[Rule]:
        """Rules matching all the given filters, in one call (``account`` defaults to ours).

        Steward puts an owner tag in each rule's comment, so ``comment=`` returns every rule of
        one Steward resource at once.
        """
        filters: dict[str, str] = {"account": account or self.account}
        optional = {
            "comments": comment,
            "scope": scope,
            "state": _STATE_CODES[state] if state else None,
            "rse_expression": _canonical(rse_expression) if rse_expression else None,
        }
        filters.update({key: value for key, value in optional.items() if value is not None})
        rows = self._call(
            "list_replication_rules", lambda c: list(c.list_replication_rules(filters))
        )
        return [Rule.from_rucio(row) for row in rows]

    def refresh_rules(
        self, rule_ids: Iterable[str], *, comment: str | None = None
    ) -> dict[str, Rule]:
        """Return many rules of our account with one listing; gone ones are absent.

        One listing call replaces one ``get_replication_rule`` per rule (see
        bench/rucio_adapter.py); ``comment`` narrows the listing when all share it.
        """
        wanted = set(rule_ids)
        return {rule.id: rule for rule in self.list_rules(comment=comment) if rule.id in wanted}

    def list_did_rules(self, did: str) -> list[Rule]:
        """Every rule on one DID, of any account."""
        scope, name = _split(did)
        rows = self._call("list_did_rules", lambda c: list(c.list_did_rules(scope, name)))
        return [Rule.from_rucio(row) for row in rows]

    # -- subscriptions -----------------------------------------------------------------------

    def add_subscription(self, spec: SubscriptionSpec) -> str:
        """Create the subscription, or update it if it exists; return its id.

        Subscriptions act on DIDs created after them only (the transmogrifier reads the
        ``is_new`` flag): the caller backfills existing DIDs with `add_rules`.
        """
        if self.get_subscription(spec.name) is not None:
            return self.update_subscription(spec)
        options = spec.client_options()
        try:
            return str(
                self._call(
                    "add_subscription",
                    lambda c: c.add_subscription(
                        name=spec.name,
                        account=self.account,
                        retroactive=False,
                        dry_run=False,
                        **options,
                    ),
                )
            )
        except RucioPermanentError as error:
            if not _caused_by(error, rucio_errors.SubscriptionDuplicate):
                raise
            return self.update_subscription(spec)  # created concurrently

    def update_subscription(self, spec: SubscriptionSpec) -> str:
        """Replace the subscription's filter, rules, comments, lifetime and priority."""
        options = spec.client_options()
        self._call(
            "update_subscription",
            lambda c: c.update_subscription(spec.name, account=self.account, **options),
        )
        current = self.get_subscription(spec.name)
        if current is None:
            msg = f"subscription {spec.name!r} vanished while it was updated"
            raise RucioNotFoundError(msg)
        return current.id

    def get_subscription(self, name: str) -> Subscription | None:
        """Our account's subscription of that name, or None."""
        try:
            rows = self._call(
                "list_subscriptions",
                lambda c: list(c.list_subscriptions(name=name, account=self.account)),
            )
        except RucioNotFoundError:
            return None
        return Subscription.from_rucio(rows[0]) if rows else None

    # -- DIDs --------------------------------------------------------------------------------

    def list_dids(
        self,
        scope: str,
        match: Mapping[str, str] | None = None,
        *,
        exclude: Sequence[Mapping[str, str]] = (),
        did_type: Literal["dataset", "container", "collection", "file", "all"] = "dataset",
    ) -> list[str]:
        """DIDs (``scope:name``) of a scope whose metadata matches, minus the excluded.

        ``match`` keys must be managed by a Rucio metadata plugin: the DID columns
        (``datatype``, ``project``, ``run_number``, ``stream_name``, ``version``...) always;
        any key with the JSON plugin, which needs PostgreSQL, Oracle or MySQL (not SQLite).
        Each exclusion costs one more listing, subtracted here, so a DID lacking an excluded
        key is kept (a ``key.ne`` filter would drop it).

        Rucio refuses one filter whose keys belong to different metadata plugins (a DID
        column such as ``datatype`` with a JSON key such as ``instrument``), so each key is
        listed on its own and the results intersected: one listing per key.
        """
        selected = self._dids(scope, dict(match or {}), did_type)
        for excluded in exclude:
            selected -= self._dids(scope, {**(match or {}), **excluded}, did_type)
        return sorted(f"{scope}:{name}" for name in selected)

    def _dids(self, scope: str, filters: dict[str, str], did_type: str) -> set[str]:
        singles: list[dict[str, str]] = [{k: v} for k, v in sorted(filters.items())] or [{}]
        result: set[str] | None = None
        for single in singles:
            names = self._list_names(scope, single, did_type)
            result = names if result is None else result & names
            if not result:
                break
        return result or set()

    def _list_names(self, scope: str, single: dict[str, str], did_type: str) -> set[str]:
        names: list[str] = self._call(
            "list_dids", lambda c: list(c.list_dids(scope, [single], did_type=did_type))
        )
        return set(names)

    def add_scope(self, scope: str, account: str | None = None) -> bool:
        """Create a scope (owned by ``account``, ours by default); False if it existed."""
        try:
            self._call("add_scope", lambda c: c.add_scope(account or self.account, scope))
        except RucioPermanentError as error:
            if not _caused_by(error, rucio_errors.Duplicate):
                raise
            return False
        return True

    def add_dataset(
        self,
        did: str,
        *,
        meta: Mapping[str, Any] | None = None,
        lifetime: timedelta | None = None,
    ) -> bool:
        """Create a dataset; False if it existed. See `allow_metadata_values` for datatype."""
        return self._add_collection(did, "DATASET", meta, lifetime)

    def add_container(self, did: str, *, meta: Mapping[str, Any] | None = None) -> bool:
        """Create a container; False if it existed."""
        return self._add_collection(did, "CONTAINER", meta, None)

    def _add_collection(
        self,
        did: str,
        did_type: Literal["DATASET", "CONTAINER"],
        meta: Mapping[str, Any] | None,
        lifetime: timedelta | None,
    ) -> bool:
        scope, name = _split(did)
        try:
            self._call(
                "add_did",
                lambda c: c.add_did(
                    scope, name, did_type, meta=dict(meta or {}), lifetime=_seconds(lifetime)
                ),
            )
        except RucioPermanentError as error:
            if not _caused_by(error, rucio_errors.DataIdentifierAlreadyExists):
                raise
            return False
        return True

    def add_replicas(self, rse: str, files: Sequence[File]) -> None:
        """Register files and their replicas on ``rse``, `_DEFAULT_BATCH` files a call.

        Rucio looks the files up with one OR term each, and SQLite refuses an expression
        deeper than 1,000 terms.
        """
        rows = [
            {**_did_dict(f.did), "bytes": f.bytes, "adler32": f.adler32, "meta": dict(f.meta)}
            for f in files
        ]
        for start in range(0, len(rows), _DEFAULT_BATCH):
            self._rpc("add_replicas", rse, rows[start : start + _DEFAULT_BATCH])

    def attach(self, parent: str, children: Sequence[str]) -> None:
        """Attach DIDs (files to a dataset, datasets to a container)."""
        scope, name = _split(parent)
        dids = [_did_dict(child) for child in children]
        self._call("attach_dids", lambda c: c.attach_dids(scope, name, dids))

    def list_content(self, did: str) -> list[str]:
        """DIDs attached to a dataset or container (``scope:name``), one listing."""
        scope, name = _split(did)
        rows = self._call("list_content", lambda c: list(c.list_content(scope, name)))
        return sorted(f"{row['scope']}:{row['name']}" for row in rows)

    def is_open(self, did: str) -> bool:
        """Whether a dataset or container is still open (files may be added)."""
        scope, name = _split(did)
        row = self._call("get_did", lambda c: c.get_did(scope, name))
        return bool(row.get("open"))

    def close_collection(self, did: str) -> bool:
        """Close a dataset or container; False if it was closed already."""
        if not self.is_open(did):
            return False
        scope, name = _split(did)
        self._call("set_status", lambda c: c.set_status(scope, name, open=False))
        return True

    def set_metadata(self, did: str, meta: Mapping[str, Any]) -> None:
        """Set metadata keys of a DID (see `list_dids` for which keys a database supports)."""
        scope, name = _split(did)
        self._call("set_metadata_bulk", lambda c: c.set_metadata_bulk(scope, name, dict(meta)))

    def allow_metadata_values(self, key: str, values: Iterable[str]) -> None:
        """Declare allowed values of a metadata key (Rucio checks a dataset's ``datatype``)."""
        try:
            self._call("add_key", lambda c: c.add_key(key, "ALL"))
        except RucioPermanentError as error:
            if not _caused_by(error, rucio_errors.Duplicate):
                raise
        known = set(self._call("list_values", lambda c: c.list_values(key)) or [])
        for value in sorted(set(values) - known):
            self._rpc("add_value", key, value)

    def list_replicas(self, dids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Replica states per file: ``{file DID: {RSE: state}}`` for files and collections.

        States are Rucio's names (``AVAILABLE``, ``COPYING``, ``UNAVAILABLE``...), in every
        state, whatever the RSE's availability.
        """
        rows = self._call(
            "list_replicas",
            lambda c: list(c.list_replicas([_did_dict(d) for d in dids], all_states=True)),
        )
        return {f"{row['scope']}:{row['name']}": dict(row.get("states") or {}) for row in rows}

    def set_replicas_available(self, rse: str, dids: Sequence[str], *, available: bool) -> None:
        """Mark file replicas available or unavailable (a lost disk, a broken tape)."""
        state = "A" if available else "U"
        rows = [{**_did_dict(did), "state": state} for did in dids]
        self._call("update_replicas_states", lambda c: c.update_replicas_states(rse, rows))

    # -- RSEs --------------------------------------------------------------------------------

    def register_site(
        self,
        site: Site,
        *,
        peers: Iterable[Site] = (),
        availability: Mapping[str, Availability] | None = None,
    ) -> SiteRegistration:
        """Register or update a Site's RSEs until Rucio matches the declaration.

        Idempotent: a second call on an unchanged Site changes nothing. Per RSE: type,
        flags, attributes (declared plus ``site`` and ``type``; ones Steward set before and
        no longer declared are removed), protocols, limits, our account's quota. Per site:
        transfer limits, and distances to the RSEs of ``peers`` named in
        ``spec.distances`` (RSEs of one site are `SAME_SITE_DISTANCE` apart).

        Parameters
        ----------
        site
            The declaration.
        peers
            The other Sites, for distances; a distance to a site not given or not yet
            registered is reported in ``pending``.
        availability
            Flags per RSE name overriding the declared ones (a downtime in force).
        """
        changes: list[str] = []
        for rse in site.spec.rses:
            flags = (availability or {}).get(rse.name) or Availability(
                rse.availability_read, rse.availability_write, rse.availability_delete
            )
            changes += self._ensure_rse(rse, flags)
            changes += self._ensure_attributes(rse, site.spec.facility)
            changes += self._ensure_protocols(rse)
            changes += self._ensure_limits(rse)
            changes += self._ensure_quota(rse)
        changes += self._ensure_transfer_limits(site)
        distance_changes, pending = self._ensure_distances(site, peers)
        return SiteRegistration(tuple(changes + distance_changes), tuple(pending))

    def _get_rse(self, name: str) -> dict[str, Any] | None:
        try:
            rse: dict[str, Any] = self._call("get_rse", lambda c: c.get_rse(name))
        except RucioNotFoundError:
            return None
        return rse

    def _ensure_rse(self, rse: RSE, flags: Availability) -> list[str]:
        wanted = {
            "rse_type": rse.rucio_type,
            "deterministic": rse.deterministic,
            "volatile": rse.volatile,
            "staging_area": rse.staging_area,
            "availability_read": flags.read,
            "availability_write": flags.write,
            "availability_delete": flags.delete,
        }
        current = self._get_rse(rse.name)
        if current is None:
            self._call("add_rse", lambda c: c.add_rse(rse.name, **wanted))
            return [f"{rse.name}: added ({rse.rucio_type})"]
        diff = {key: value for key, value in wanted.items() if current.get(key) != value}
        if diff:
            self._call("update_rse", lambda c: c.update_rse(rse.name, diff))
        return [f"{rse.name}: {key}={value}" for key, value in diff.items()]

    def _ensure_attributes(self, rse: RSE, facility: str) -> list[str]:
        wanted = rse.effective_attributes(facility)
        current = self._rpc("list_rse_attributes", rse.name)
        changes = []
        for key, value in wanted.items():
            if _attribute(current.get(key)) != _attribute(value):
                self._rpc("add_rse_attribute", rse.name, key, value)
                changes.append(f"{rse.name}: attribute {key}={value}")
        managed = [k for k in str(current.get(MANAGED_ATTRIBUTES) or "").split(",") if k]
        for key in sorted(set(managed) - set(wanted)):
            if key in current:
                self._rpc("delete_rse_attribute", rse.name, key)
                changes.append(f"{rse.name}: attribute {key} removed")
        marker = ",".join(sorted(wanted))
        if current.get(MANAGED_ATTRIBUTES) != marker:
            self._rpc("add_rse_attribute", rse.name, MANAGED_ATTRIBUTES, marker)
        return changes

    def _ensure_protocols(self, rse: RSE) -> list[str]:
        """Converge protocols: remove undeclared and changed ones, then add what is missing.

        A changed protocol is replaced rather than updated: Rucio's client cannot address a
        protocol on port 0 (it drops a falsy port from the URL), and replacing is one path.
        """
        wanted = {(p.scheme, p.hostname, p.port): _protocol(p) for p in rse.protocols}
        current = self._protocols(rse.name)
        stale = sorted(
            key
            for key, existing in current.items()
            if key not in wanted
            or any(existing.get(k) != wanted[key][k] for k in ("prefix", "impl", "domains"))
        )
        for scheme, hostname, port in stale:
            self._rpc("delete_protocols", rse.name, scheme, hostname=hostname, port=port or None)
        if stale:
            current = self._protocols(rse.name)
        changes = []
        for key, protocol in wanted.items():
            if key not in current:
                self._rpc("add_protocol", rse.name, protocol)
                verb = "updated" if key in stale else "added"
                changes.append(f"{rse.name}: protocol {key[0]}://{key[1]}:{key[2]} {verb}")
        changes += [
            f"{rse.name}: protocol {key[0]}://{key[1]}:{key[2]} removed"
            for key in stale
            if key not in wanted
        ]
        return changes

    def _protocols(self, rse: str) -> dict[tuple[str, str, int], dict[str, Any]]:
        """The RSE's protocols by (scheme, hostname, port)."""
        return {
            (p["scheme"], p["hostname"], int(p["port"])): p
            for p in (self._get_rse(rse) or {}).get("protocols") or []
        }

    def _ensure_limits(self, rse: RSE) -> list[str]:
        current = self._rpc("get_rse_limits", rse.name) or {}
        changes = []
        for key, value in rse.limits.items():
            if current.get(key) != value:
                self._rpc("set_rse_limits", rse.name, key, value)
                changes.append(f"{rse.name}: limit {key}={value}")
        for key in sorted(set(current) - set(rse.limits)):
            self._rpc("delete_rse_limits", rse.name, key)
            changes.append(f"{rse.name}: limit {key} removed")
        return changes

    def _ensure_quota(self, rse: RSE) -> list[str]:
        limits = self._rpc("get_local_account_limit", self.account, rse.name)
        current = limits.get(rse.name)
        wanted = math.inf if rse.quota is None else rse.quota
        if current == wanted:
            return []
        value = -1 if rse.quota is None else rse.quota
        self._rpc("set_local_account_limit", self.account, rse.name, value)
        return [f"{rse.name}: quota of {self.account} = {'unlimited' if value < 0 else value}"]

    def _ensure_transfer_limits(self, site: Site) -> list[str]:
        names = {rse.name for rse in site.spec.rses}
        current = {
            (row["rse_expression"], row["activity"]): row.get("max_transfers")
            for row in self._call("list_transfer_limits", lambda c: list(c.list_transfer_limits()))
            if row["rse_expression"] in names and row.get("direction") == "DESTINATION"
        }
        wanted = {
            (name, limit.activity): limit.max_transfers
            for name in sorted(names)
            for limit in site.spec.transfer_limits
        }
        changes = []
        for (expression, activity), count in wanted.items():
            if current.get((expression, activity)) != count:
                self._rpc(
                    "set_transfer_limit",
                    expression,
                    activity=activity,
                    direction=TransferLimitDirection.DESTINATION,
                    max_transfers=count,
                )
                changes.append(f"{expression}: transfer limit {activity}={count}")
        for expression, activity in sorted(set(current) - set(wanted)):
            self._rpc(
                "delete_transfer_limit",
                expression,
                activity=activity,
                direction=TransferLimitDirection.DESTINATION,
            )
            changes.append(f"{expression}: transfer limit {activity} removed")
        return changes

    def _ensure_distances(self, site: Site, peers: Iterable[Site]) -> tuple[list[str], list[str]]:
        by_name = {peer.metadata.name: peer for peer in peers}
        own = [rse.name for rse in site.spec.rses]
        pairs = {(a, b): SAME_SITE_DISTANCE for a in own for b in own if a != b}
        pending = []
        for declared in site.spec.distances:
            peer = by_name.get(declared.site)
            if peer is None:
                pending.append(f"distance to site {declared.site}: site not known")
                continue
            pairs.update({(a, r.name): declared.distance for a in own for r in peer.spec.rses})
        changes = []
        for (source, destination), distance in sorted(pairs.items()):
            try:
                changes += self._ensure_distance(source, destination, distance)
            except RucioNotFoundError:
                pending.append(f"distance {source} -> {destination}: RSE not registered yet")
        return changes, pending

    def _ensure_distance(self, source: str, destination: str, distance: int) -> list[str]:
        current = self._call("get_distance", lambda c: c.get_distance(source, destination))
        if current and current[0].get("distance") == distance:
            return []
        verb = "update_distance" if current else "add_distance"
        self._call(
            verb,
            lambda c: getattr(c, verb)(source, destination, {"distance": distance}),
        )
        return [f"{source} -> {destination}: distance {distance}"]

    def set_rse_availability(self, rse: str, availability: Availability) -> bool:
        """Set read, write and delete availability (downtimes); return whether it changed."""
        wanted = {
            "availability_read": availability.read,
            "availability_write": availability.write,
            "availability_delete": availability.delete,
        }
        current = self._get_rse(rse)
        if current is None:
            msg = f"RSE {rse} is not registered in Rucio"
            raise RucioNotFoundError(msg)
        diff = {key: value for key, value in wanted.items() if current.get(key) != value}
        if diff:
            self._call("update_rse", lambda c: c.update_rse(rse, diff))
        return bool(diff)

    def rse_availability(self, names: Iterable[str]) -> dict[str, Availability | None]:
        """Availability of each RSE in Rucio now; None for one that is not registered."""
        result: dict[str, Availability | None] = {}
        for name in names:
            rse = self._get_rse(name)
            result[name] = (
                None
                if rse is None
                else Availability(
                    bool(rse["availability_read"]),
                    bool(rse["availability_write"]),
                    bool(rse["availability_delete"]),
                )
            )
        return result

    def list_rses(self, rse_expression: str = "*") -> list[str]:
        """Names of the RSEs an expression selects (Rucio's own evaluation); maybe none."""
        expression = _canonical(rse_expression)
        try:
            rows = self._call("list_rses", lambda c: list(c.list_rses(expression)))
        except RucioPermanentError as error:
            # Rucio raises InvalidRSEExpression for "selects nothing" too; that is a result.
            if "empty set" in str(error):
                return []
            raise
        return sorted(row["rse"] for row in rows)


def _attribute(value: Any) -> str:  # noqa: ANN401 - attribute values are loosely typed
    """Compare attribute values as Rucio's expressions do: as text, booleans lower case."""
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def _protocol(protocol: Protocol) -> dict[str, Any]:
    """Convert a Site protocol to Rucio's ``add_protocol`` form (same LAN and WAN priorities)."""
    priorities = {"read": protocol.read, "write": protocol.write, "delete": protocol.delete}
    return {
        "scheme": protocol.scheme,
        "hostname": protocol.hostname,
        "port": protocol.port,
        "prefix": protocol.prefix,
        "impl": protocol.impl,
        "domains": {
            "lan": priorities,
            "wan": {
                **priorities,
                "third_party_copy_read": protocol.third_party_copy,
                "third_party_copy_write": protocol.third_party_copy,
            },
        },
    }


def _reduce(client: Any, rule_id: str, copies: int) -> str | None:  # noqa: ANN401 - rucio client
    """Call ``reduce_replication_rule``; None when it succeeded but the answer was lost.

    rucio-clients 41.5.1 expects HTTP 200 from this call while the server answers 201
    Created, so a successful reduce raises a bare RucioException naming status 201.
    """
    try:
        return str(client.reduce_replication_rule(rule_id, copies)[0])
    except rucio_errors.RucioException as error:
        if type(error) is rucio_errors.RucioException and "http status code: 201" in str(error):
            return None
        raise


def _caused_by(error: BaseException, cause: type[BaseException]) -> bool:
    """Whether the Rucio exception behind a mapped error is of class ``cause``."""
    return isinstance(error.__cause__, cause)


def _is_server_error(raw: BaseException) -> bool:
    """Tell a bare RucioException for a 5xx answer without details (a server bug or crash)."""
    return type(raw) is rucio_errors.RucioException and "http status code: 5" in str(raw)
