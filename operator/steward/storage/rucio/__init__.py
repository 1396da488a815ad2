"""Rucio storage: the only package that talks to Rucio (``rucio.client``).

Everything Steward asks of Rucio goes through `RucioStorage`: registering a Site's RSEs, adding,
moving, reducing and deleting replication rules, subscriptions, transfer limits, and listing
DIDs and rules. It
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
- **A server that does not answer is noticed.** Calls wait seconds sized to what they do, at
  most ``Settings.rucio_max_calls`` are in flight, and one availability state per process
  refuses calls at once while Rucio does not answer (`availability`).
- **Calls are rate-capped.** A token bucket (``Settings.rucio_calls_per_second``) bounds the
  request rate, so a thousand resources reconciled at start-up cannot flood Rucio.

Rucio's client is synchronous and blocking: callers in async code (kopf handlers) run these
methods off the event loop, in kopf's thread pool (sync handlers) or with
``asyncio.to_thread``. An instance is thread-safe; each thread gets its own client.

Units follow Rucio: rule lifetimes are seconds (methods take `datetime.timedelta`), subscription
lifetimes are days, sizes are bytes.
"""

from __future__ import annotations

from steward.storage.rucio.accounts import ADMIN_ATTRIBUTE, AccountClient
from steward.storage.rucio.availability import (
    Admission,
    CallSlots,
    CallTimeouts,
    RucioAvailability,
    RucioDownError,
)
from steward.storage.rucio.callpath import RetryPolicy, TokenBucket
from steward.storage.rucio.dids import (
    DID_COLUMN_KEYS,
    Collection,
    DIDClient,
    batched,
    metadata_text,
)
from steward.storage.rucio.replicas import MOCK_PROTOCOL, ReplicaClient
from steward.storage.rucio.requests import RequestClient, TransferLimit
from steward.storage.rucio.rses import MANAGED_ATTRIBUTES, SAME_SITE_DISTANCE, RSEClient, RSEInfo
from steward.storage.rucio.rules import RuleClient, refused_as_unsupported
from steward.storage.rucio.subscriptions import INACTIVE as SUBSCRIPTION_INACTIVE
from steward.storage.rucio.subscriptions import SubscriptionClient
from steward.storage.rucio.types import (
    DEFAULT_ACTIVITY,
    UNSET,
    AddedRules,
    Availability,
    DatasetReplica,
    DIDEntry,
    File,
    FileReplica,
    Lock,
    Rule,
    RuleSpec,
    RuleState,
    SiteRegistration,
    Subscription,
    SubscriptionSpec,
)

__all__ = [
    "ADMIN_ATTRIBUTE",
    "DEFAULT_ACTIVITY",
    "DID_COLUMN_KEYS",
    "MANAGED_ATTRIBUTES",
    "MOCK_PROTOCOL",
    "SAME_SITE_DISTANCE",
    "SUBSCRIPTION_INACTIVE",
    "UNSET",
    "AddedRules",
    "Admission",
    "Availability",
    "CallSlots",
    "CallTimeouts",
    "Collection",
    "DIDEntry",
    "DatasetReplica",
    "File",
    "FileReplica",
    "Lock",
    "RSEInfo",
    "RetryPolicy",
    "RucioAvailability",
    "RucioDownError",
    "RucioStorage",
    "Rule",
    "RuleSpec",
    "RuleState",
    "SiteRegistration",
    "Subscription",
    "SubscriptionSpec",
    "TokenBucket",
    "TransferLimit",
    "batched",
    "metadata_text",
    "refused_as_unsupported",
]


class RucioStorage(
    RuleClient,
    SubscriptionClient,
    DIDClient,
    ReplicaClient,
    RSEClient,
    AccountClient,
    RequestClient,
):
    """Steward's view of Rucio; see the package docstring for what it guarantees.

    One class over the verbs of each module, as Rucio's own ``Client`` is one class over its
    ``RuleClient``, ``DIDClient`` and the rest; they share one call path (`RucioCallPath`).
    """
