"""A site deployed from ``steward render`` output onto a control plane of its own.

The deployment tests apply cluster-wide objects (a ValidatingWebhookConfiguration that fails
closed, ClusterRoles, PriorityClasses, the peering object) that must not reach the session's
shared control plane, so they get a second one for the module. `SiteDeployment` applies
manifests/base/ with kubectl as docs/deploy.md says, points the webhook at the operator's
loopback address (the operator runs here, not in a pod: kwok runs no container), and starts
operators whose only credential is a token minted for the rendered ServiceAccount.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from steward.cli._generated import dump_yaml
from steward.cli.render import load_site
from steward.handlers.rbac import kopf_rules
from steward.services.checkpoint import SigningKey
from steward.services.render import load_values, render
from steward.storage.database import make_engine, upgrade
from steward.storage.files import write_private
from steward.testing.childprocess import free_port
from steward.testing.controlplane import ControlPlane
from steward.testing.operatorprocess import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests" / "base"
WEBHOOKS = (
    MANIFESTS / "15-validatingwebhookconfiguration-steward.yaml",
    MANIFESTS / "16-mutatingwebhookconfiguration-steward.yaml",
)
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
NAMESPACE = "steward"
SERVICE_ACCOUNT = "steward"


class SiteDeployment:
    """manifests/base applied to a fresh control plane, and operators run as its identity."""

    def __init__(self, plane: ControlPlane, kubectl: Path, rucio_server: Any, tmp: Path) -> None:
        self.plane = plane
        self.kubectl_path = kubectl
        self.rucio_server = rucio_server
        self.tmp = tmp
        self.webhook_port = free_port()
        self.webhook_url = f"https://127.0.0.1:{self.webhook_port}"
        self.local = render(
            load_site(ROOT / "sites", "base"),
            load_values(
                ROOT / "deploy" / "values.yaml",
                ROOT / "deploy" / "values-base.yaml",
                {"webhook": {"url": self.webhook_url}},
            ),
            kopf_rules(),
        )
        self.token_kubeconfig: Path | None = None
        self.applied = ""
        """What kubectl said when the manifests were applied."""
        self.api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl (the admin's by default) and return what it did."""
        config = kubeconfig or self.plane.kubeconfig
        result = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(config), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply_manifests(self) -> str:
        """docs/deploy.md's commands: namespace and CRDs, wait, then everything; return what
        kubectl said.

        The webhook configurations as rendered call the in-cluster Service, which has no pod
        here and whose ClusterIP routes nowhere on this machine: they are checked by the API
        server (``--dry-run=server``) but not stored, so no request ever leaves for that
        address; `point_webhook_here` installs the loopback versions instead.
        """
        first = sorted(MANIFESTS.glob("0[01]-*.yaml"))
        self.kubectl("apply", "--server-side", *(f"-f={p}" for p in first))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        rest = [p for p in sorted(MANIFESTS.glob("*.yaml")) if p not in WEBHOOKS]
        applied = self.kubectl("apply", "--server-side", *(f"-f={p}" for p in rest)).stdout
        checked = self.kubectl(
            "apply", "--server-side", "--dry-run=server", *(f"-f={p}" for p in WEBHOOKS)
        )
        return applied + checked.stdout

    def point_webhook_here(self) -> None:
        """Re-apply the webhook configurations rendered with this loopback URL."""
        for kind in WEBHOOK_KINDS:
            (configuration,) = [d for d in self.local.values() if d["kind"] == kind]
            path = self.tmp / f"{kind.lower()}.yaml"
            path.write_text(dump_yaml(configuration))
            self.kubectl("apply", "--server-side", f"-f={path}")

    def identity(self) -> Path:
        """A kubeconfig whose only credential is a token of the rendered ServiceAccount."""
        if self.token_kubeconfig is None:
            self.token_kubeconfig = self.plane.service_account_kubeconfig(
                NAMESPACE, SERVICE_ACCOUNT
            )
        return self.token_kubeconfig

    def settings(self) -> dict[str, str]:
        """The rendered ConfigMap's settings (with the loopback webhook host)."""
        (config,) = [d for d in self.local.values() if d["kind"] == "ConfigMap"]
        return dict(config["data"])

    def operator(self, name: str, *, database: str | None = None) -> OperatorProcess:
        """An operator process (not started) as the deployed one runs, from the rendered
        settings; only what differs on this machine is replaced: Rucio's address and account
        (the test server's), the audit database, the ports, shorter intervals."""
        rucio = self.rucio_server.settings()
        password = self.tmp / "rucio-password"
        write_private(password, rucio.rucio_secret().get_secret_value())
        signing_key = self.tmp / "audit-signing.key"
        if not signing_key.exists():  # one key for every process: they sign one trail
            write_private(signing_key, SigningKey.generate().pem())
        if database is None:
            database = f"sqlite:///{self.tmp / 'audit.db'}"
            engine = make_engine(database)
            upgrade(engine)
            engine.dispose()
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("STEWARD_") and k != "KUBECONFIG"
        }
        env = {
            **base,
            **self.settings(),
            "POD_ID": name,
            "KUBECONFIG": str(self.identity()),
            "STEWARD_RUCIO_HOST": str(rucio.rucio_host),
            "STEWARD_RUCIO_ACCOUNT": rucio.rucio_account,
            "STEWARD_RUCIO_USERNAME": str(rucio.rucio_username),
            "STEWARD_RUCIO_PASSWORD_FILE": str(password),
            "STEWARD_RUCIO_CALLS_PER_SECOND": "1000",
            "STEWARD_DATABASE_URL": database,
            "STEWARD_REFRESH_INTERVAL": "3",
            "STEWARD_PEERING_LIFETIME": "10",
            "STEWARD_METRICS_PORT": str(free_port()),
            "STEWARD_METRICS_ADDRESS": "127.0.0.1",
            "STEWARD_WEBHOOK_ADDRESS": "127.0.0.1",
            "STEWARD_WEBHOOK_PORT": str(self.webhook_port),
            # Signing checkpoints writes ConfigMaps: a verb the rendered Role lacks shows as 403.
            "STEWARD_AUDIT_SIGNING_KEY_FILE": str(signing_key),
        }
        return OperatorProcess(env, self.tmp / f"{name}.log", standalone=False)


def metrics_of(process: OperatorProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape the process's /metrics over HTTP: (sample name, sorted labels) -> value."""
    url = f"http://127.0.0.1:{process.env['STEWARD_METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def families_of(process: OperatorProcess) -> set[str]:
    """Names of the metric families the process exposes."""
    url = f"http://127.0.0.1:{process.env['STEWARD_METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return {f.name for f in text_string_to_metric_families(response.read().decode())}


def total(samples: dict[Any, float], metric: str, /, **labels: str) -> float:
    """Sum of the samples of ``metric`` whose labels include ``labels``."""
    return sum(
        value
        for (sample, found), value in samples.items()
        if sample == metric and set(labels.items()) <= set(found)
    )


@pytest.fixture(scope="module")
def site_deployment(
    kube_binaries, rucio_server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SiteDeployment]:
    """manifests/base/ on a control plane of its own, the webhook pointed at loopback."""
    with ControlPlane(
        binaries=kube_binaries, run_dir=tmp_path_factory.mktemp("site-plane")
    ) as plane:
        deployment = SiteDeployment(
            plane, kube_binaries.bin_dir / "kubectl", rucio_server, tmp_path_factory.mktemp("site")
        )
        deployment.applied = deployment.apply_manifests()
        deployment.point_webhook_here()
        yield deployment
        deployment.api.close()


def load_yaml(text: str) -> list[dict[str, Any]]:
    """Documents of a YAML text (kubectl -o yaml output)."""
    return [d for d in yaml.safe_load_all(text) if d]
