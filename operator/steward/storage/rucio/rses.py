"""Rucio's RSE verbs (its ``RSEClient``): a Site's declaration made true in Rucio."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from rucio.common import exception as rucio_errors
from rucio.common.constants import TransferLimitDirection

from steward.exceptions import RucioNotFoundError, RucioPermanentError
from steward.models.site import RSE, Protocol, Site
from steward.storage.rucio.callpath import (
    DEFAULT_BATCH,
    RucioCallPath,
    canonical_expression,
    caused_by,
)
from steward.storage.rucio.types import Availability, SiteRegistration

__all__ = ["MANAGED_ATTRIBUTES", "SAME_SITE_DISTANCE", "RSEClient", "RSEInfo"]

MANAGED_ATTRIBUTES: Final = "steward_managed_attributes"
"""RSE attribute listing the attributes Steward set, so it can remove ones no longer declared."""

SAME_SITE_DISTANCE: Final = 1
"""Distance between two RSEs of one site (transfers within a facility need a distance too)."""


@dataclass(frozen=True, slots=True)
class RSEInfo:
    """What Rucio knows of one RSE."""

    name: str
    type: str
    """``DISK`` or ``TAPE`` (Rucio's storage types)."""
    deterministic: bool
    """Whether Rucio derives each file's path from its name (``lfn2pfn``)."""
    attributes: Mapping[str, str]
    """Attributes as text, booleans in lower case (as RSE expressions compare them)."""

    def flag(self, key: str) -> bool:
        """Whether a boolean attribute such as ``custodial`` is set."""
        return self.attributes.get(key) in {"true", "1"}


class RSEClient(RucioCallPath):
    """RSEs: register a Site's declaration, availability, expression evaluation."""

    def register_site(
        self,
        site: Site,
        *,
        peers: Iterable[Site] = (),
        availability: Mapping[str, Availability] | None = None,
    ) -> SiteRegistration:
        """Register or update a Site's RSEs until Rucio matches the declaration.

        Idempotent: a second call on an unchanged Site changes nothing. Per RSE: type,
        flags, protocols, limits, our account's quota. Per site: transfer limits, and
        distances both ways between its RSEs and the registered RSEs of ``peers``: to them
        as ``spec.distances`` declares, from them as each peer's ``spec.distances``
        declares (RSEs of one site are `SAME_SITE_DISTANCE` apart). Last, per RSE,
        attributes (declared plus ``site`` and ``type``; ones Steward set before and no
        longer declared are removed).

        The order is what keeps a new RSE from swallowing rules: an RSE expression such as
        ``site=IN2P3&dac`` selects an RSE by its attributes, so until they are set no rule
        can choose it; once they are, Rucio can already route transfers to it from every
        registered peer. Setting only outgoing distances left the incoming ones to each
        peer's next reconcile, and a rule created meanwhile had its transfers marked
        ``NO_SOURCES`` by the conveyor, its locks STUCK, and Rucio's judge-repairer retries
        those only hours later (``rucio.core.rule_grouping.__is_retry_required``).

        Parameters
        ----------
        site
            The declaration.
        peers
            The other Sites, for distances; a distance to a site not given or not yet
            registered is reported in ``pending`` (one a peer declares towards this site's
            RSEs is that peer's to report, and set by whichever registers last).
        availability
            Flags per RSE name overriding the declared ones (a downtime in force).
        """
        changes: list[str] = []
        for rse in site.spec.rses:
            flags = (availability or {}).get(rse.name) or Availability(
                rse.availability_read, rse.availability_write, rse.availability_delete
            )
            changes += self._ensure_rse(rse, flags)
            changes += self._ensure_protocols(rse)
            changes += self._ensure_limits(rse)
            changes += self._ensure_quota(rse)
        changes += self._ensure_transfer_limits(site)
        distance_changes, pending = self._ensure_distances(site, peers)
        for rse in site.spec.rses:
            changes += self._ensure_attributes(rse, site.spec.facility)
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
        """Distances from this site's RSEs (its declaration) and to them (the peers').

        Returns the changes and what is pending: this site's declared distances whose peer
        is unknown or not registered yet. A peer's distance towards this site whose RSEs
        are not registered yet is not pending here: the peer sets it when it registers.
        """
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
        incoming = {
            (r.name, a): declared.distance
            for peer in by_name.values()
            for declared in peer.spec.distances
            if declared.site == site.metadata.name
            for r in peer.spec.rses
            for a in own
        }
        changes = []
        for (source, destination), distance in sorted({**incoming, **pairs}.items()):
            try:
                changes += self._ensure_distance(source, destination, distance)
            except RucioNotFoundError:
                if (source, destination) in pairs:
                    pending.append(f"distance {source} -> {destination}: RSE not registered yet")
        return changes, pending

    def _ensure_distance(self, source: str, destination: str, distance: int) -> list[str]:
        current = self._call("get_distance", lambda c: c.get_distance(source, destination))
        if current and current[0].get("distance") == distance:
            return []
        verb = "update_distance" if current else "add_distance"
        try:
            self._call(
                verb,
                lambda c: getattr(c, verb)(source, destination, {"distance": distance}),
            )
        except RucioPermanentError as error:
            # Both ends' Sites set a distance between them: the other one may have added it
            # since it was read. Compare with what it set.
            if current or not caused_by(error, rucio_errors.Duplicate):
                raise
            return self._ensure_distance(source, destination, distance)
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

    def rse_usage(self, rse: str) -> dict[str, dict[str, int | None]]:
        """Usage of an RSE by source (``storage``, ``rucio``...): ``used``, ``free``, ``files``.

        The reaper reads the sources the RSE attributes ``source_for_used_space`` and
        ``source_for_total_space`` name (``storage`` by default).
        """
        rows = self._call("get_rse_usage", lambda c: list(c.get_rse_usage(rse)))
        return {
            str(row["source"]): {
                "used": row.get("used"),
                "free": row.get("free"),
                "files": row.get("files"),
            }
            for row in rows
        }

    def set_rse_usage(self, rse: str, source: str, *, used: int, free: int) -> None:
        """Record an RSE's usage from a source (a storage dump, a monitoring probe)."""
        self._rpc("set_rse_usage", rse, source, used, free)

    def rse_attributes(self, rse: str) -> dict[str, Any]:
        """An RSE's attributes as Rucio has them."""
        attributes: dict[str, Any] = self._rpc("list_rse_attributes", rse)
        return attributes

    def list_rses(self, rse_expression: str = "*") -> list[str]:
        """Names of the RSEs an expression selects (Rucio's own evaluation); maybe none."""
        expression = canonical_expression(rse_expression)
        rows = self._call("list_rses", lambda c: _selected(c, expression))
        return sorted(row["rse"] for row in rows)

    def get_rse_info(self, name: str) -> RSEInfo:
        """An RSE's storage type and attributes, as Rucio has them.

        Raises
        ------
        RucioNotFoundError
            If the RSE is not registered.
        """
        rse = self._get_rse(name)
        if rse is None:
            msg = f"RSE {name} is not registered in Rucio"
            raise RucioNotFoundError(msg)
        attributes = self._rpc("list_rse_attributes", name)
        return RSEInfo(
            name=name,
            type=str(rse.get("rse_type") or ""),
            deterministic=bool(rse.get("deterministic")),
            attributes={key: _attribute(value) for key, value in attributes.items()},
        )

    def expected_pfns(self, rse: str, dids: Sequence[str]) -> dict[str, str]:
        """Where a deterministic RSE keeps each file (Rucio's ``lfn2pfn``), by DID.

        This is where the bytes of a file registered there must be.
        """
        pfns: dict[str, str] = {}
        for batch in _query_batches(dids):
            pfns.update(self._rpc("lfns2pfns", rse, batch))
        return pfns


_QUERY_BUDGET: Final = 3000
"""Characters of DIDs one ``lfns2pfns`` request carries. Rucio's client puts them in the URL's
query string (``lfns=scope:name&lfns=...``), and its server (gunicorn) refuses a request line
over 4094 bytes with HTTP 414; this leaves room for the path and the escaping of ``:``."""


def _query_batches(dids: Sequence[str]) -> Iterator[list[str]]:
    """Consecutive batches of at most `DEFAULT_BATCH` DIDs and `_QUERY_BUDGET` characters."""
    batch: list[str] = []
    size = 0
    for did in dids:
        cost = len(did) + len("&lfns=") + 2  # ':' is escaped as %3A
        if batch and (size + cost > _QUERY_BUDGET or len(batch) == DEFAULT_BATCH):
            yield batch
            batch, size = [], 0
        batch.append(did)
        size += cost
    if batch:
        yield batch


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


def _selected(client: Any, expression: str) -> list[dict[str, Any]]:  # noqa: ANN401 - Rucio's client
    """The rows of the RSEs ``expression`` selects; none when it selects nothing.

    Rucio raises InvalidRSEExpression for "selects nothing" too, which is an answer: it is
    turned into one here, inside the call, so the call path counts it as a call that
    succeeded and not in ``steward_rucio_errors_total`` (a custodial expression that
    matches nothing at a site without tape was most of that counter's list_rses errors,
    docs/replication.md "At scale").
    """
    try:
        return list(client.list_rses(expression))
    except rucio_errors.InvalidRSEExpression as error:
        if "empty set" in str(error):
            return []
        raise
