"""Admission: the checks of ``steward validate``, for one resource, against the live Sites.

The validating webhook refuses a change with the very message ``steward validate`` prints for
the same file, less its ``path:line:column`` (there is no file at admission): a policy that
passes validate in the policy repository's CI is admitted, and one refused at admission shows
the same words as validate. The live Sites stand in for ``sites/``.

Two differences, both deliberate:

- A Site naming an unknown site in ``spec.distances`` is admitted with a warning, not refused:
  Sites name each other (the Base names the Summit and the Summit the Base), so one of two must
  be created first, as ``kubectl apply -f sites/`` does.
- Checks across policies (two ReplicationRules needing one Rucio rule, a RetentionPolicy
  expiring what a rule keeps) need every policy, not only the Sites: they stay with
  ``steward validate`` and ``steward plan`` over the repository.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from steward.services.validation import Loaded, Problem, _CrossChecks, _load
from steward.storage.kubernetes import KubeResources
from steward.storage.yamlfile import Document

__all__ = ["AdmissionService", "Review", "review"]

_SOURCE: Final = Path("<admission>")
"""Stands for the file name in the checks' problems; never shown (positions are dropped)."""

_MUTUAL: Final = "spec.distances."
"""Site fields naming other Sites, which may legitimately not exist yet."""


@dataclass(frozen=True)
class Review:
    """What admission says about one resource."""

    refusals: list[str] = field(default_factory=list)
    """``Kind/name: message`` lines; any of them refuses the change."""
    warnings: list[str] = field(default_factory=list)
    """Shown by kubectl as ``Warning: ...``; the change is admitted."""

    @property
    def allowed(self) -> bool:
        """Whether the change is admitted."""
        return not self.refusals


def _document(body: Mapping[str, Any]) -> Document:
    data = {key: value for key, value in body.items() if key != "status"}
    return Document(_SOURCE, 0, data)


def _message(problem: Problem) -> str:
    """``Kind/name: message``: what validate prints after ``path:line:column: ``."""
    return problem.format().removeprefix(f"{problem.path}:{problem.line}:{problem.column}: ")


def _check_one(body: Mapping[str, Any], sites: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Every problem validate finds in ``body`` with ``sites`` as sites/.

    The one adapter over `steward.services.validation`: when validation offers a one-resource
    entry point, this body becomes that call.
    """
    loaded = _load(_document(body))
    if not isinstance(loaded, Loaded):
        return loaded
    kind, name = loaded.resource.kind, loaded.resource.metadata.name
    others: list[Loaded] = []
    for site in sites:
        if site.get("metadata", {}).get("name") == name and kind == "Site":
            continue  # the live version of the Site under review
        other = _load(_document(site))
        if isinstance(other, Loaded):
            others.append(other)
    if kind == "Site":
        # Last, so that a clash with a live Site is reported on the newcomer.
        problems = _CrossChecks([*others, loaded], []).run()
    else:
        problems = _CrossChecks([loaded], others).run()
    return [p for p in problems if (p.kind, p.name) == (kind, name)]


def review(body: Mapping[str, Any], sites: Sequence[Mapping[str, Any]]) -> Review:
    """Review one resource against the live Sites (pure: tests call it directly)."""
    refusals: list[str] = []
    warnings: list[str] = []
    for problem in _check_one(body, sites):
        mutual = problem.kind == "Site" and problem.message.startswith(_MUTUAL)
        (warnings if mutual else refusals).append(_message(problem))
    return Review(refusals, warnings)


@dataclass
class AdmissionService:
    """Reviews resources for the validating webhook, reading the live Sites."""

    kube: KubeResources

    def review(self, body: Mapping[str, Any]) -> Review:
        """Review ``body`` against the Sites in the cluster now."""
        return review(body, self.kube.list("Site"))
