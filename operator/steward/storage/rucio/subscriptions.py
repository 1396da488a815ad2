"""Rucio's subscription verbs (its ``SubscriptionClient``)."""

from __future__ import annotations

from typing import Final

from rucio.common import exception as rucio_errors

from steward.exceptions import RucioNotFoundError, RucioPermanentError
from steward.storage.rucio.callpath import RucioCallPath, caused_by
from steward.storage.rucio.types import Subscription, SubscriptionSpec

__all__ = ["INACTIVE", "SubscriptionClient"]

INACTIVE: Final = "INACTIVE"
"""Rucio's state of a subscription that creates no rules (``SubscriptionState.INACTIVE``)."""


class SubscriptionClient(RucioCallPath):
    """Subscriptions: rules the transmogrifier creates for new matching DIDs."""

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
            if not caused_by(error, rucio_errors.SubscriptionDuplicate):
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

    def deactivate_subscription(self, name: str) -> bool:
        """Stop the subscription creating rules; False if there is no such subscription.

        Rucio keeps an inactive subscription (and its history); `add_subscription` with the
        same name makes it active again.
        """
        try:
            self._call(
                "deactivate_subscription",
                lambda c: c.deactivate_subscription(name, account=self.account),
            )
        except RucioNotFoundError:
            return False
        return True

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
