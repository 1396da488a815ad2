"""What kopf will do in the API server for the handlers registered here, as RBAC rules.

``steward render`` writes the operator's ClusterRole from this, so the role follows the code:
a handler added for a new kind adds its ``list``/``watch``/``patch`` rules at the next render,
and ``steward render --check`` fails in CI until the manifests are regenerated. What Steward's
own code calls outside kopf is listed, with the code that calls it, in
`steward.services.render`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import kopf

import steward.handlers  # noqa: F401 - registers every handler with kopf's default registry
from steward.models import KINDS
from steward.services.render import PolicyRule

__all__ = ["kopf_rules"]

_WATCH = frozenset({"list", "watch"})
_WRITE = frozenset({"patch"})


def _plural(selector: Any) -> str:  # noqa: ANN401 - kopf does not export its Selector
    """The plural name a selector stands for (kopf keeps ``any_name`` when not told which)."""
    name = selector.plural or selector.any_name or ""
    for info in KINDS:
        if name in {info.kind, info.singular, info.plural, *info.short_names}:
            return info.plural
    return name


def kopf_rules(registry: kopf.OperatorRegistry | None = None) -> list[PolicyRule]:
    """RBAC rules for kopf's own calls on behalf of the registered handlers.

    - Every resource with a change, timer, daemon, event or index handler is listed and
      watched.
    - Change, timer and daemon handlers (kopf's "changing" and "spawning" registries) patch
      the object (the finalizer) and its status subresource (Steward's CRDs all have one;
      kopf's progress and last handled spec live there too, `startup.diffbase_storage`).
    - kopf posts Events about handlers (``create`` on core events, in the object's namespace
      or ``default`` for cluster-scoped objects, hence cluster-wide).
    - Admission handlers need nothing: the API server calls them.
    """
    registry = registry if registry is not None else kopf.get_default_registry()
    verbs: dict[tuple[str, str], set[str]] = defaultdict(set)
    watching = [
        *registry._indexing.get_all_handlers(),  # noqa: SLF001 - kopf has no public listing
        *registry._watching.get_all_handlers(),  # noqa: SLF001
    ]
    changing = [
        *registry._changing.get_all_handlers(),  # noqa: SLF001
        *registry._spawning.get_all_handlers(),  # noqa: SLF001
    ]
    for handler in [*watching, *changing]:
        if handler.selector is not None:
            verbs[handler.selector.group or "", _plural(handler.selector)] |= _WATCH
    for handler in changing:
        if handler.selector is not None:
            group, plural = handler.selector.group or "", _plural(handler.selector)
            verbs[group, plural] |= _WRITE
            verbs[group, f"{plural}/status"] |= _WRITE
    rules = [
        PolicyRule(
            api_groups=(group,),
            resources=(resource,),
            verbs=tuple(sorted(found)),
            reason="kopf: watch the handled kind; patch finalizers, annotations and status",
        )
        for (group, resource), found in sorted(verbs.items())
    ]
    if verbs:
        rules.append(
            PolicyRule(
                api_groups=("",),
                resources=("events",),
                verbs=("create",),
                reason="kopf: post Events about handlers on the objects they handle",
            )
        )
    return rules
