"""A MultiKueue manager's one grant in Kueue's namespace: get on the worker kubeconfigs.

The pure test reads the rendered Role; the other applies it to the real API server and asks
RBAC (a SubjectAccessReview) what the operator's ServiceAccount may then do.
"""

from pathlib import Path

import kubernetes
import pytest

from steward.cli.render import load_site
from steward.handlers.rbac import kopf_rules
from steward.services.render import RenderError, load_values, render

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OPERATOR = "system:serviceaccount:steward:steward"
"""The identity the rendered bindings name (values ``namespace: steward``)."""


def _render(overrides=None):
    values = load_values(DEPLOY / "values.yaml", DEPLOY / "values-base.yaml", overrides)
    return render(load_site(ROOT / "sites", "base"), values, kopf_rules())


def _in(documents, namespace):
    return {
        (d["kind"], d["metadata"]["name"]): d
        for d in documents.values()
        if d["metadata"].get("namespace") == namespace
    }


def _manager(namespace="kueue-system"):
    secrets = ["ncsa-kubeconfig", "in2p3-kubeconfig"]
    return _render({"multiKueue": {"namespace": namespace, "workerSecrets": secrets}})


def test_without_worker_secrets_nothing_is_rendered_in_kueues_namespace():
    assert _in(_render(), "kueue-system") == {}


def test_a_manager_gets_the_worker_kubeconfigs_by_name_and_nothing_else():
    rendered = _in(_manager(), "kueue-system")
    assert set(rendered) == {("Role", "steward-multikueue"), ("RoleBinding", "steward-multikueue")}
    assert rendered["Role", "steward-multikueue"]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": ["in2p3-kubeconfig", "ncsa-kubeconfig"],
        }
    ]
    binding = rendered["RoleBinding", "steward-multikueue"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "steward-multikueue",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "steward", "namespace": "steward"}
    ]


def test_a_worker_secret_name_that_is_not_a_name_is_refused():
    with pytest.raises(RenderError, match="workerSecrets"):
        _render({"multiKueue": {"workerSecrets": ["Not A Name"]}})


@pytest.mark.kube
def test_the_api_server_lets_the_operator_read_exactly_the_worker_kubeconfigs(kube_api, namespace):
    rendered = _in(_manager(namespace), namespace)
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(namespace, rendered["Role", "steward-multikueue"])
    rbac.create_namespaced_role_binding(namespace, rendered["RoleBinding", "steward-multikueue"])
    authorization = kubernetes.client.AuthorizationV1Api(kube_api)

    def allowed(verb, name, where=namespace):
        review = authorization.create_subject_access_review(
            {
                "spec": {
                    "user": OPERATOR,
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:steward"],
                    "resourceAttributes": {
                        "namespace": where,
                        "verb": verb,
                        "resource": "secrets",
                        "name": name,
                    },
                }
            }
        )
        return review.status.allowed

    assert allowed("get", "ncsa-kubeconfig")
    assert allowed("get", "in2p3-kubeconfig")
    assert not allowed("get", "kueue-webhook-server-cert")
    assert not allowed("list", "")
    assert not allowed("patch", "ncsa-kubeconfig")
    assert not allowed("get", "ncsa-kubeconfig", where="default")
