"""The operator signs audit checkpoints into its namespace: at start, as rows accrue, at stop.

Real API server, real Rucio, the real operator process; the checkpoints are then checked with
``steward audit verify --from-cluster`` as an auditor would.
"""

import json
import subprocess

import kubernetes
import pytest

from steward.services.checkpoint import CHECKPOINTS_CONFIGMAP, KEY_CONFIGMAP, Checkpoint
from steward.testing.operatorprocess import OperatorProcess
from support.operator import STEWARD
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio]


def _checkpoints(kube_api, namespace):
    core = kubernetes.client.CoreV1Api(kube_api)
    try:
        data = core.read_namespaced_config_map(CHECKPOINTS_CONFIGMAP, namespace).data or {}
    except kubernetes.client.exceptions.ApiException as error:
        if error.status == 404:
            return []
        raise
    return sorted(
        (Checkpoint.from_json(json.loads(v)) for v in data.values()), key=lambda c: c.number
    )


def test_operator_signs_checkpoints_and_an_auditor_verifies_them(
    operator_env, tmp_path, kube_api, namespace, custom_objects, control_plane
):
    env = {**operator_env, "STEWARD_AUDIT_CHECKPOINT_ENTRIES": "1"}
    process = OperatorProcess(env, tmp_path / "operator.log")
    process.start(timeout=60)
    try:
        first = until("the start-up checkpoint", lambda: _checkpoints(kube_api, namespace))[0]
        assert (first.number, first.prev) == (1, "0" * 64)
        key = kubernetes.client.CoreV1Api(kube_api).read_namespaced_config_map(
            KEY_CONFIGMAP, namespace
        )
        assert key.data["key-id"] == first.key_id
        # Registering the Site's RSE is an audited action.
        suffix = namespace[-6:]
        custom_objects.create(
            "sites",
            {
                "apiVersion": "steward.lsst.io/v1alpha1",
                "kind": "Site",
                "metadata": {"name": f"audit-{suffix}"},
                "spec": {
                    "facility": f"A{suffix}".upper(),
                    "rses": [
                        {
                            "name": f"A{suffix}_DISK".upper(),
                            "type": "DISK",
                            "protocols": [
                                {
                                    "scheme": "mock",
                                    "hostname": "localhost",
                                    "port": 0,
                                    "prefix": f"/steward-mock/audit-{suffix}",
                                    "impl": "rucio.rse.protocols.mock.Default",
                                }
                            ],
                        }
                    ],
                },
            },
        )
        until(
            "a checkpoint after the Site's audit rows",
            lambda: any(c.seq >= 1 for c in _checkpoints(kube_api, namespace)),
            timeout=60,
        )
    finally:
        process.stop()
        custom_objects.delete("sites", f"audit-{suffix}")
    signed = _checkpoints(kube_api, namespace)
    final = signed[-1]
    assert final.number > signed[-2].number  # the shutdown checkpoint
    cli_env = {**env, "KUBECONFIG": str(control_plane.kubeconfig)}
    done = subprocess.run(
        [str(STEWARD), "audit", "verify", "--from-cluster"],
        env=cli_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"rows, head {final.head}" in done.stdout
    assert f"the newest #{final.number} at row {final.seq}" in done.stdout
