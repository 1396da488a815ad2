"""Kueue in the local stack (``steward dev up --kueue``): the manager and the worker sites.

The stack's control plane becomes a MultiKueue manager with Kueue on it. Every Site of
``sites/`` that declares batch capacity and a ``kubeconfigSecret`` (NCSA and IN2P3) gets a
control plane of its own, with two kwok nodes of its first node pool and Kueue, the way each
site has its own cluster; the manager holds each worker's kubeconfig in that Secret.

In a deployment each worker site runs its own Steward, which renders the site's queues and
the LocalQueues multi-site campaigns' copies land in. The local stack runs one operator, on
the manager, so the stack renders the workers' side itself with the same service
(`QueueingService.reconcile_site`, `ensure_worker_queue`) for the namespace ``steward`` and
every order a campaign's ``sites`` may list them in, without the staging AdmissionCheck: no
Steward runs at a worker to answer it, so a multi-site campaign's inputs are not staged per
shard in the local stack.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from steward.models.site import Site
from steward.services.queueing import QueueingService
from steward.storage.kubernetes import api_client
from steward.storage.kueue import KueueStorage
from steward.storage.yamlfile import load_documents
from steward.testing.controlplane import ComponentInfo, ControlPlane
from steward.testing.k8sbuild import Binaries, ensure_kueue
from steward.testing.kueue import KUEUE_NAMESPACE, Kueue, worker_kubeconfig_secret

__all__ = ["KueueSites", "worker_sites"]

_WORKER_NODES: Final = 2


def worker_sites(repo_root: Path | None) -> list[Site]:
    """The Sites of ``sites/`` MultiKueue can send work to, in file order."""
    if repo_root is None or not (repo_root / "sites").is_dir():
        return []
    found = []
    for path in sorted((repo_root / "sites").glob("*.yaml")):
        for document in load_documents(path):
            if document.data.get("kind") != "Site":
                continue
            site = Site.model_validate(document.data)
            if site.spec.batch is not None and site.spec.batch.kubeconfig_secret:
                found.append(site)
    return found


def _orders(names: list[str]) -> list[tuple[str, ...]]:
    """Every order of two or more of NAMES a campaign's ``sites`` may list (up to three)."""
    return [
        order
        for size in range(2, min(len(names), 3) + 1)
        for order in itertools.permutations(names, size)
    ]


@dataclass
class KueueSites:
    """Kueue on the stack's control plane, and the worker sites' control planes."""

    manager: Kueue
    workers: dict[str, tuple[ControlPlane, Kueue]] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        plane: ControlPlane,
        binaries: Binaries,
        repo_root: Path | None,
        run_dir: Path,
        namespace: str,
    ) -> KueueSites:
        """Start Kueue on PLANE and every worker site; connect and render the workers."""
        build = ensure_kueue()
        started = cls(Kueue(plane, build=build))
        try:
            started.manager.start()
            sites = worker_sites(repo_root)
            order = [site.metadata.name for site in sites]
            for site in sites:
                worker = ControlPlane(binaries=binaries, run_dir=run_dir / site.metadata.name)
                worker.start()
                kueue = Kueue(worker, build=build)
                started.workers[site.metadata.name] = (worker, kueue)
                assert site.spec.batch is not None  # noqa: S101 - worker_sites chose it
                pool = site.spec.batch.node_pools[0]
                worker.create_nodes(_WORKER_NODES, labels=pool.node_labels)
                kueue.start()
                secret = site.spec.batch.kubeconfig_secret or ""
                plane.apply(
                    f"/api/v1/namespaces/{KUEUE_NAMESPACE}/secrets",
                    worker_kubeconfig_secret(secret, worker),
                )
                worker.apply(
                    "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                )
                api = api_client(worker.kubeconfig)
                try:
                    queueing = QueueingService(KueueStorage(api))
                    queueing.reconcile_site(site)
                    for listed in _orders(order):
                        if site.metadata.name in listed:
                            queueing.ensure_worker_queue(site, listed, namespace, staging=False)
                finally:
                    api.close()  # type: ignore[no-untyped-call]
        except BaseException:
            started.stop()
            raise
        return started

    def stop(self) -> None:
        """Stop the workers, then the manager's Kueue."""
        for plane, kueue in self.workers.values():
            with contextlib.suppress(Exception):
                kueue.stop()
            plane.stop()
        self.manager.stop()

    def components(self) -> list[tuple[ComponentInfo, Path | None]]:
        """Kueue's process and every worker's (``<site>/<component>``), with the PKI to probe.

        A worker's components answer health probes over HTTPS with their own control plane's
        CA, so each comes with that plane's PKI directory (None for plain HTTP).
        """
        infos: list[tuple[ComponentInfo, Path | None]] = []
        manager = self.manager
        if manager.pid is not None:
            infos.append((ComponentInfo("kueue", manager.pid, manager.health_url, manager.log),
                          None))  # fmt: skip
        for site, (plane, kueue) in self.workers.items():
            infos += [
                (ComponentInfo(f"{site}/{i.name}", i.pid, i.health_url, i.log), plane.pki.directory)
                for i in plane.components()
            ]
            if kueue.pid is not None:
                infos.append(
                    (ComponentInfo(f"{site}/kueue", kueue.pid, kueue.health_url, kueue.log), None)
                )
        return infos

    def summary(self) -> list[str]:
        """Where the workers are."""
        lines = ["Kueue on the control plane (MultiKueue manager)"]
        lines += [
            f"worker site {site}: API server {plane.server}, kubeconfig {plane.kubeconfig}"
            for site, (plane, _) in self.workers.items()
        ]
        return lines
