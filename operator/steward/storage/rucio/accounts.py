"""Rucio's account verbs (its ``AccountClient``): the identity Steward acts as.

Steward acts as one dedicated Rucio account (``steward`` by default, `Settings.rucio_account`),
never as ``root``: the account is Rucio's unit of ownership (every rule Steward creates belongs
to it), of duplicate detection (one rule per DID, account, expression and copies) and of listing
cost (Steward lists its own account's rules). Rucio's default permission policy
(``rucio.core.permission.generic``) lets only ``root`` or an account with the ``admin``
attribute update, move, reduce or delete rules, add subscriptions and set RSE limits and
quotas, so the account needs ``admin``. These verbs create it; ``steward dev up`` and the test
harness call them as ``root``.
"""

from __future__ import annotations

from typing import Final, Literal

from rucio.common import exception as rucio_errors

from steward.exceptions import RucioPermanentError
from steward.storage.rucio.callpath import RucioCallPath, caused_by

__all__ = ["ADMIN_ATTRIBUTE", "AccountClient"]

ADMIN_ATTRIBUTE: Final = "admin"
"""Account attribute Rucio's generic permission policy checks for rule and RSE management."""


class AccountClient(RucioCallPath):
    """Accounts, their attributes and userpass identities (an administrator's verbs)."""

    def ensure_account(
        self,
        name: str,
        *,
        email: str,
        admin: bool = False,
        account_type: Literal["USER", "GROUP", "SERVICE"] = "SERVICE",
    ) -> bool:
        """Create account ``name`` unless it exists, with ``admin`` if asked; True if created."""
        try:
            self._rpc("add_account", name, account_type, email)
            created = True
        except RucioPermanentError as error:
            if not caused_by(error, rucio_errors.Duplicate):
                raise
            created = False
        if admin and not self.is_admin(name):
            self._rpc("add_account_attribute", name, ADMIN_ATTRIBUTE, "True")
        return created

    def is_admin(self, name: str) -> bool:
        """Whether account ``name`` carries the ``admin`` attribute."""
        rows = self._call(
            "list_account_attributes", lambda c: list(c.list_account_attributes(name))
        )
        # Rucio answers one JSON list of {key, value}, which the client may yield whole.
        flat = [row for item in rows for row in (item if isinstance(item, list) else [item])]
        attributes = {row["key"]: row["value"] for row in flat}
        return str(attributes.get(ADMIN_ATTRIBUTE, "")).lower() in {"true", "1"}

    def ensure_userpass_identity(
        self, account: str, username: str, password: str, *, email: str
    ) -> bool:
        """Let ``username``/``password`` log in as ``account``; False if it already could."""
        identities = self._call("list_identities", lambda c: list(c.list_identities(account)))
        if any(row.get("identity") == username for row in identities):
            return False
        self._call(
            "add_identity",
            lambda c: c.add_identity(
                account=account,
                identity=username,
                authtype="USERPASS",
                email=email,
                password=password,
            ),
        )
        return True

    def set_quota(self, account: str, rse: str, limit: int | None = None) -> None:
        """Set ``account``'s quota on ``rse`` in bytes; None: unlimited."""
        self._rpc("set_local_account_limit", account, rse, -1 if limit is None else limit)
