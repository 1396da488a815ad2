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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from steward.services.validation import Problem, Severity, check_resource
from steward.storage.kubernetes import KubeResources

__all__ = ["AdmissionService", "Review", "review"]

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


def _refuses(problem: Problem) -> bool:
    mutual = problem.kind == "Site" and problem.message.startswith(_MUTUAL)
    return problem.severity is Severity.ERROR and not mutual


def review(body: Mapping[str, Any], sites: Sequence[Mapping[str, Any]]) -> Review:
    """Review one resource against the live Sites (pure: tests call it directly).

    The checks are `steward.services.validation.check_resource`'s, with the live Sites as
    context (the live version of a Site under review is replaced by it).
    """
    refusals: list[str] = []
    warnings: list[str] = []
    for problem in check_resource(body, sites):
        (refusals if _refuses(problem) else warnings).append(problem.format())
    return Review(refusals, warnings)


@dataclass
class AdmissionService:
    """Reviews resources for the validating webhook, reading the live Sites."""

    kube: KubeResources

    def review(self, body: Mapping[str, Any]) -> Review:
        """Review ``body`` against the Sites in the cluster now."""
        return review(body, self.kube.list("Site"))
