"""Steward's errors, and which of them are worth retrying.

Storage modules convert client exceptions (Rucio, Kubernetes, SQLAlchemy) into these once, so
services and handlers reason about two questions only: is it transient (retry later with
backoff) or permanent (the spec or the credentials must change)?
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "ConfigurationError",
    "NotFoundError",
    "PermanentError",
    "RucioAuthenticationError",
    "RucioError",
    "RucioNotFoundError",
    "RucioPermanentError",
    "RucioTransientError",
    "StewardError",
    "TransientError",
]


class StewardError(Exception):
    """Base of every error Steward raises on purpose."""


class TransientError(StewardError):
    """Worth retrying: the outside world is temporarily unable (outage, timeout, lock).

    Handlers turn it into ``kopf.TemporaryError`` with a delay.
    """

    def __init__(self, message: str, *, retry_after: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(StewardError):
    """Retrying does not help until the input or configuration changes.

    Handlers turn it into ``kopf.PermanentError`` and a Degraded condition.
    """


class NotFoundError(PermanentError):
    """The thing looked up does not exist."""


class AlreadyExistsError(PermanentError):
    """The object to create exists already (a crash after creating it, or a name clash)."""


class ConfigurationError(PermanentError):
    """Settings are missing or inconsistent."""


class RucioError(StewardError):
    """Base of errors from Rucio."""


class RucioTransientError(RucioError, TransientError):
    """Rucio is unreachable, overloaded, or asked us to retry."""


class RucioPermanentError(RucioError, PermanentError):
    """Rucio refused the request for a reason that retrying does not change."""


class RucioNotFoundError(RucioPermanentError, NotFoundError):
    """A rule, DID, RSE or subscription does not exist in Rucio."""


class RucioAuthenticationError(RucioPermanentError):
    """Rucio rejected Steward's credentials (never includes the credentials themselves)."""


class RucioDuplicateRuleError(RucioPermanentError):
    """Rucio has a rule for the same DID, account, RSE expression and copies.

    The Rucio storage adopts such a rule instead of raising; this error means the existing rule
    could not be found to adopt (for example it belongs to another account's view).
    """


__all__ += ["RucioDuplicateRuleError"]
