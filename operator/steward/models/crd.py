"""Build CustomResourceDefinitions from the models, so the CRDs can never disagree with them.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema: no
``$ref``, a type on every node (unless ``x-kubernetes-int-or-string`` or
``x-kubernetes-preserve-unknown-fields``), ``nullable`` instead of ``anyOf [X, null]``, no
``additionalProperties: false`` beside ``properties``, and boolean ``exclusiveMinimum``.
Cross-field rules that belong at admission are attached as CEL ``x-kubernetes-validations``
from each model's ``CEL`` class variable.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from steward.constants import CATEGORY, GROUP, VERSION

from . import KINDS, KindInfo
from .common import NAME_MAX_LENGTH, NAME_PATTERN

__all__ = ["build_crd", "build_crds", "openapi_schema"]

Schema = dict[str, Any]

_DROP = {"title", "additionalProperties", "$defs"}


def _cel_rules(model: type[BaseModel]) -> dict[str, list[dict[str, str]]]:
    """Map each model class reachable from ``model`` to its CEL rules, by schema name."""
    rules: dict[str, list[dict[str, str]]] = {}
    seen: set[type[BaseModel]] = set()

    def walk(cls: type[BaseModel]) -> None:
        if cls in seen:
            return
        seen.add(cls)
        cel = getattr(cls, "CEL", None)
        if cel:
            rules[cls.__name__] = list(cel)
        for field in cls.model_fields.values():
            for arg in _model_args(field.annotation):
                walk(arg)

    walk(model)
    return rules


def _model_args(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()):
        found.extend(_model_args(arg))
    return found


class _Converter:
    """Turns one pydantic JSON schema into a structural OpenAPI v3.0 schema."""

    def __init__(self, schema: Schema, rules: dict[str, list[dict[str, str]]]) -> None:
        self.defs: dict[str, Schema] = schema.get("$defs", {})
        self.rules = rules

    def convert(self, node: Schema) -> Schema:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            target = dict(self.defs[name])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            converted = self.convert(target | extra)
            if name in self.rules:
                converted["x-kubernetes-validations"] = self.rules[name]
            return converted
        if "anyOf" in node:
            return self._any_of(node)
        out: Schema = {}
        for key, value in node.items():
            if key not in _DROP:
                out.update(self._keyword(key, value))
        if isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = self.convert(node["additionalProperties"])
        return out

    def _keyword(self, key: str, value: Any) -> Schema:  # noqa: ANN401 - any JSON value
        """Translate one JSON Schema keyword into its OpenAPI v3.0 equivalent."""
        if key == "properties":
            return {key: {k: self.convert(v) for k, v in value.items()}}
        if key == "items":
            return {key: self.convert(value)}
        if key == "const":
            return {"enum": [value]}
        if key in {"exclusiveMinimum", "exclusiveMaximum"}:
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            return {bound: value, key: True}
        if key == "default" and (value is None or isinstance(value, dict | list)):
            return {}
        return {key: value}

    def _any_of(self, node: Schema) -> Schema:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            out = self.convert(options[0] | rest)
        elif {o.get("type") for o in options} == {"string", "integer"}:
            out = self.convert(rest) | {"x-kubernetes-int-or-string": True}
        else:
            out = self.convert(rest) | {"x-kubernetes-preserve-unknown-fields": True}
        if nullable:
            out["nullable"] = True
        return out


def openapi_schema(info: KindInfo) -> Schema:
    """Return the structural ``openAPIV3Schema`` of a kind."""
    model = info.model
    raw = model.model_json_schema(by_alias=True, mode="validation")
    converter = _Converter(raw, _cel_rules(model))
    props = raw["properties"]
    spec = converter.convert(props["spec"])
    status = converter.convert(props["status"])
    status.pop("nullable", None)
    status["x-kubernetes-preserve-unknown-fields"] = True
    _mark_condition_lists(status)
    return {
        "type": "object",
        "description": model.__doc__ or "",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"size(self.metadata.name) <= {NAME_MAX_LENGTH}"
                f" && self.metadata.name.matches('{NAME_PATTERN}')",
                "message": f"metadata.name must be at most {NAME_MAX_LENGTH} characters and match "
                + NAME_PATTERN,
            }
        ],
    }


def _mark_condition_lists(node: Schema) -> None:
    conditions = node.get("properties", {}).get("conditions")
    if conditions is not None:
        conditions["x-kubernetes-list-type"] = "map"
        conditions["x-kubernetes-list-map-keys"] = ["type"]


def build_crd(info: KindInfo) -> Schema:
    """Return the CustomResourceDefinition of a kind."""
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"description": c.description} if c.description else {}),
            **({"priority": c.priority} if c.priority else {}),
        }
        for c in info.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "scope": info.scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema(info)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def build_crds() -> dict[str, Schema]:
    """Return every CRD by file name (``site.yaml``, ...)."""
    return {f"{info.singular}.yaml": build_crd(info) for info in KINDS}
