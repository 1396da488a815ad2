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
from support.waiting import until

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

    # The API server's RBAC authorizer reads Roles through an informer: a moment after create.
    until("the Role in force", lambda: allowed("get", "ncsa-kubeconfig"))
    assert allowed("get", "in2p3-kubeconfig")
    assert not allowed("get", "kueue-webhook-server-cert")
    assert not allowed("list", "")
    assert not allowed("patch", "ncsa-kubeconfig")
    assert not allowed("get", "ncsa-kubeconfig", where="default")


# -- at a worker: the account its manager acts as -------------------------------------------

MANAGER_ACCOUNT = "steward-multikueue-manager"
MANAGER = f"system:serviceaccount:kueue-system:{MANAGER_ACCOUNT}"
"""The identity the rendered worker binding names (``multiKueue.namespace`` kueue-system)."""
WORKER_ROLE = ("ClusterRole", "steward-multikueue-worker")


def _worker(site="ncsa", account=MANAGER_ACCOUNT):
    values = load_values(
        DEPLOY / "values.yaml",
        DEPLOY / f"values-{site}.yaml",
        {"multiKueue": {"managerServiceAccount": account}},
    )
    return render(load_site(ROOT / "sites", site), values, kopf_rules())


def _named(documents):
    return {(d["kind"], d["metadata"]["name"]): d for d in documents.values()}


def test_a_site_that_is_no_worker_renders_no_account_for_a_manager():
    rendered = _named(_render({"multiKueue": {"managerServiceAccount": None}}))
    assert WORKER_ROLE not in rendered
    assert ("ClusterRoleBinding", "steward-multikueue-worker") not in rendered
    assert not [key for key in rendered if MANAGER_ACCOUNT in key[1]]


def test_a_worker_renders_the_managers_account_its_token_and_exactly_its_calls():
    rendered = _named(_worker())
    account = rendered["ServiceAccount", MANAGER_ACCOUNT]
    assert account["metadata"]["namespace"] == "kueue-system"
    token = rendered["Secret", f"{MANAGER_ACCOUNT}-token"]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": MANAGER_ACCOUNT
    }
    rules = {
        (rule["apiGroups"][0], rule["resources"][0]): rule["verbs"]
        for rule in rendered[WORKER_ROLE]["rules"]
    }
    assert rules == {
        # Kueue v0.19.2's MultiKueue, batch/Job integration
        ("batch", "jobs"): ["create", "delete", "get", "list", "watch"],
        ("batch", "jobs/status"): ["get"],
        ("kueue.x-k8s.io", "workloads"): ["create", "delete", "get", "list", "update", "watch"],
        ("kueue.x-k8s.io", "workloads/status"): ["get", "patch", "update"],
        # Steward at the manager: its campaigns' pods and its shard ConfigMap copies
        ("", "pods"): ["list", "patch"],
        ("", "configmaps"): ["create", "deletecollection", "get", "patch"],
    }
    assert all("resourceNames" not in rule for rule in rendered[WORKER_ROLE]["rules"])
    binding = rendered["ClusterRoleBinding", "steward-multikueue-worker"]
    assert binding["roleRef"]["name"] == "steward-multikueue-worker"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": MANAGER_ACCOUNT, "namespace": "kueue-system"}
    ]
    # the operator's own bindings still name the operator
    operator = rendered["ClusterRoleBinding", "steward"]
    assert operator["subjects"] == [
        {"kind": "ServiceAccount", "name": "steward", "namespace": "steward"}
    ]


@pytest.mark.parametrize("site", ["ncsa", "in2p3"])
def test_the_worker_sites_values_name_the_managers_account(site):
    values = load_values(DEPLOY / "values.yaml", DEPLOY / f"values-{site}.yaml")
    assert values.multi_kueue.manager_service_account == MANAGER_ACCOUNT


def test_a_manager_account_that_is_not_a_name_is_refused():
    with pytest.raises(RenderError, match="managerServiceAccount"):
        _worker(account="Not_A_Name")


@pytest.mark.kube
def test_the_api_server_lets_the_managers_account_do_what_multikueue_and_steward_call(
    kube_api, namespace
):
    account = f"manager-{namespace}"[:63]
    rendered = _named(_worker(account=account))
    role = rendered[WORKER_ROLE]
    binding = rendered["ClusterRoleBinding", "steward-multikueue-worker"]
    # cluster-scoped: unique names for this test, removed afterwards
    role["metadata"]["name"] = binding["metadata"]["name"] = binding["roleRef"]["name"] = account
    binding["subjects"][0]["namespace"] = namespace
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_api)
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding(binding)
    authorization = kubernetes.client.AuthorizationV1Api(kube_api)
    user = f"system:serviceaccount:{namespace}:{account}"

    def allowed(verb, resource, group="", where="drp"):
        subresource = ""
        if "/" in resource:
            resource, subresource = resource.split("/")
        review = authorization.create_subject_access_review(
            {
                "spec": {
                    "user": user,
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                    "resourceAttributes": {
                        "namespace": where,
                        "verb": verb,
                        "group": group,
                        "resource": resource,
                        "subresource": subresource,
                    },
                }
            }
        )
        return review.status.allowed

    try:
        until("the ClusterRole in force", lambda: allowed("get", "jobs", "batch"))
        # MultiKueue: copies of Jobs and Workloads in any campaign namespace, watched cluster-wide
        for verb in ("create", "delete", "get", "list", "watch"):
            assert allowed(verb, "jobs", "batch")
            assert allowed(verb, "workloads", "kueue.x-k8s.io", where="other-namespace")
        assert allowed("list", "jobs", "batch", where="")
        assert allowed("watch", "workloads", "kueue.x-k8s.io", where="")
        assert allowed("update", "workloads", "kueue.x-k8s.io")
        assert allowed("update", "workloads/status", "kueue.x-k8s.io")
        assert allowed("get", "jobs/status", "batch")
        # Steward: record the pods, copy and remove the shard ConfigMaps
        assert allowed("list", "pods")
        assert allowed("patch", "pods")
        for verb in ("create", "get", "patch", "deletecollection"):
            assert allowed(verb, "configmaps")
        # and nothing else
        assert not allowed("patch", "jobs", "batch")
        assert not allowed("update", "jobs/status", "batch")
        assert not allowed("delete", "pods")
        assert not allowed("create", "pods")
        assert not allowed("update", "configmaps")
        assert not allowed("delete", "configmaps")
        assert not allowed("get", "secrets")
        assert not allowed("list", "secrets", where="kueue-system")
        assert not allowed("patch", "clusterqueues", "kueue.x-k8s.io", where="")
        assert not allowed("create", "localqueues", "kueue.x-k8s.io")
    finally:
        rbac.delete_cluster_role_binding(account)
        rbac.delete_cluster_role(account)
