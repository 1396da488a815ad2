"""A real Kubernetes control plane on 127.0.0.1 for tests and the local stack.

`ControlPlane` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as
child processes, the way envtest and kwokctl do: free loopback ports, certificates made for the
run, an admin kubeconfig, health endpoints polled against deadlines. With the controller manager
and the scheduler running, Jobs create pods, pods are bound to nodes and garbage collection
works; kwok stands in for the kubelet of every fake node and walks pods through Running to
Succeeded, so workloads behave as on a cluster without running any container.

Every child is started in its own session with ``PR_SET_PDEATHSIG`` set to SIGKILL, so the
kernel kills it when the thread that started it dies, even by SIGKILL; `ControlPlane.stop` (also
run at exit and, when nothing else handles it, on SIGTERM) stops the children in reverse order,
TERM first and KILL after a grace period. Start and stop the control plane from a thread that
lives as long as it (the main thread in practice): the death signal follows that thread.

Examples
--------
>>> with ControlPlane() as plane:  # doctest: +SKIP
...     plane.create_nodes(2)
...     plane.install_crds(Path("crds"))
...     print(plane.kubeconfig)
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Final, Self

import yaml

from steward.storage.files import write_private
from steward.testing.certs import SERVICE_CLUSTER_IP_RANGE, Pki, create_pki
from steward.testing.k8sbuild import KWOK_STAGES, Binaries, ensure_binaries

__all__ = [
    "KWOK_NODE_ANNOTATION",
    "ComponentInfo",
    "ControlPlane",
    "ControlPlaneError",
    "is_healthy",
    "process_alive",
]

KWOK_NODE_ANNOTATION: Final = ("kwok.x-k8s.io/node", "fake")
"""Annotation that hands a Node to kwok (``--manage-nodes-with-annotation-selector``)."""

CAMPAIGN_STAGES: Final = Path(__file__).with_name("campaign-stages.yaml")
"""Steward's own kwok Stages: campaign pods succeed (reporting outputs), fail with an exit
code, are OOM-killed, or end on SIGTERM when deleted, as their annotations say."""

POD_CIDR: Final = "10.244.0.1/16"
"""Pod IPs kwok hands out; apart from `SERVICE_CLUSTER_IP_RANGE` so the two never collide."""

FIELD_MANAGER: Final = "steward-testing"
"""Server-side apply field manager of what the harness creates."""

_POLL_SECONDS: Final = 0.2
_STOP_GRACE_SECONDS: Final = 10.0
_LOG_TAIL_LINES: Final = 40
_PR_SET_PDEATHSIG: Final = 1


class ControlPlaneError(RuntimeError):
    """A component failed to start, died, or a condition was not met before its deadline."""


@dataclass(frozen=True)
class ComponentInfo:
    """What a running component is, for status reports from another process."""

    name: str
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler or kwok."""

    pid: int
    """Process id (also its process group id: each component leads its own session)."""

    health_url: str
    """Endpoint answering 200 while the component is healthy."""

    log: Path
    """File receiving the component's standard output and error."""


def process_alive(pid: int) -> bool:
    """Whether PID is a live process (zombies count as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


def _ssl_context(pki: Pki) -> ssl.SSLContext:
    """Trust only the run's CA; present the admin certificate."""
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return context


def is_healthy(url: str, pki: Pki | None, timeout: float = 2.0) -> bool:
    """Whether URL answers 200; HTTPS trusts PKI's CA and presents its admin certificate."""
    context = _ssl_context(pki) if pki is not None and url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310 - our own https/http URLs
            return bool(response.status == 200)  # noqa: PLR2004 - HTTP OK
    except (OSError, urllib.error.URLError):
        return False


def _free_ports(count: int) -> list[int]:
    """COUNT distinct free loopback ports.

    All sockets stay bound until every port is chosen, so the ports are distinct; another
    process could still take one before the component binds it, which then fails to start
    with its log saying so.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _die_with_parent(parent: int) -> Callable[[], None]:
    """``preexec_fn`` asking the kernel to SIGKILL the child when its parent thread ends."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


@dataclass
class _Process:
    """One component: how to run it, how to tell it is healthy, its process and log."""

    name: str
    args: list[str]
    health_url: str
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    _log_handle: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log_handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - only prctl and getppid
        )

    def exited(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        return "\n".join(f"    {line}" for line in lines)

    def stop(self) -> None:
        """TERM the component's process group, KILL it after the grace period, reap it."""
        if self.popen is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, sig)
                try:
                    self.popen.wait(timeout=_STOP_GRACE_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    continue
            self.popen.wait()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


class _Api:
    """The few REST calls the harness needs, over urllib with the admin certificate.

    The harness avoids the kubernetes client library so that ``steward dev`` (a CLI command,
    which the import contract keeps away from kubernetes) can use it.
    """

    def __init__(self, server: str, pki: Pki) -> None:
        self._server = server
        self._context = _ssl_context(pki)

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        content_type: str = "application/json",
    ) -> Any:  # noqa: ANN401 - decoded JSON
        """Send a request; return the decoded JSON answer, or None for 404."""
        request = urllib.request.Request(  # noqa: S310 - https to our own API server
            self._server + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30, context=self._context) as answer:  # noqa: S310
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:  # noqa: PLR2004 - HTTP Not Found
                return None
            detail = error.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail)["message"]  # a Status: its message says it all
            raise ControlPlaneError(f"{method} {path}: HTTP {error.code}: {detail}") from error

    def apply(self, path: str, name: str, manifest: Mapping[str, Any]) -> Any:  # noqa: ANN401
        """Server-side apply MANIFEST as NAME under collection PATH (creates or updates)."""
        return self.request(
            "PATCH",
            f"{path}/{name}?fieldManager={FIELD_MANAGER}&force=true",
            manifest,
            content_type="application/apply-patch+yaml",  # JSON is YAML
        )


def _condition(obj: Mapping[str, Any] | None, kind: str) -> str | None:
    """Status of condition KIND of OBJ, or None."""
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


class ControlPlane:
    """etcd, API server, controller manager, scheduler and kwok, started for one run.

    Parameters
    ----------
    binaries
        Executables; by default `ensure_binaries` builds or reuses them.
    run_dir
        Directory for certificates, kubeconfigs, etcd data and one log per component. By
        default a temporary directory, removed by `stop`; a given directory is kept (the
        logs are what one reads after a failure).
    start_timeout
        Seconds each component may take to become healthy.
    stages
        kwok Stage files to run beside kwok's own fast stages (e.g. pods that run for a
        while before they succeed).
    controller_args
        More flags for the controller manager. ``bench/kueue.py`` raises its client rate
        (``--kube-api-qps``: Kubernetes' default of 20 holds the Job controller to about ten
        pods a second, a create and a finalizer patch each plus its Events) and the grace
        before a silent node is NotReady (under heavy load kwok's heartbeats come late, and
        the node lifecycle controller then marks pods unready and evicts them).
    """

    def __init__(
        self,
        *,
        binaries: Binaries | None = None,
        run_dir: Path | None = None,
        start_timeout: float = 60.0,
        stages: Sequence[Path] = (),
        controller_args: Sequence[str] = (),
    ) -> None:
        self._stages = tuple(stages)
        self._controller_args = tuple(controller_args)
        self._binaries = binaries
        self._given_run_dir = run_dir
        self._start_timeout = start_timeout
        self._processes: list[_Process] = []
        self._run_dir: Path | None = None
        self._pki: Pki | None = None
        self._api: _Api | None = None
        self._server = ""
        self._previous_sigterm: Any = None

    # --- what a started control plane offers --------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """Directory holding certificates, kubeconfigs, data and logs."""
        return self._started()[0]

    @property
    def pki(self) -> Pki:
        """The run's certificates and keys."""
        return self._started()[1]

    @property
    def server(self) -> str:
        """URL of the API server, ``https://127.0.0.1:<port>``."""
        self._started()
        return self._server

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (user ``steward-admin`` in ``system:masters``)."""
        return self.run_dir / "admin.kubeconfig"

    def components(self) -> list[ComponentInfo]:
        """Describe the running components, in start order."""
        return [
            ComponentInfo(p.name, p.popen.pid, p.health_url, p.log)
            for p in self._processes
            if p.popen is not None
        ]

    def _started(self) -> tuple[Path, Pki, _Api]:
        if self._run_dir is None or self._pki is None or self._api is None:
            raise ControlPlaneError("the control plane is not started: call start() first")
        return self._run_dir, self._pki, self._api

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component and wait until each is healthy.

        Raises
        ------
        ControlPlaneError
            A component exited or stayed unhealthy past ``start_timeout``; the message names it
            and quotes the end of its log. Whatever had started is stopped again.
        """
        if self._run_dir is not None:
            raise ControlPlaneError("the control plane is already started")
        binaries = self._binaries or ensure_binaries()
        if self._given_run_dir is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix="steward-k8s-"))
        elif self._given_run_dir.exists() and any(self._given_run_dir.iterdir()):
            raise ControlPlaneError(f"run directory {self._given_run_dir} is not empty")
        else:
            self._run_dir = self._given_run_dir
            self._run_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        self._handle_sigterm()
        try:
            self._start(binaries)
        except BaseException:
            self.stop()
            raise

    def _start(self, binaries: Binaries) -> None:
        run_dir = self._require_run_dir()
        pki = self._pki = create_pki(run_dir / "pki")
        etcd_client, etcd_peer, apiserver, kcm, scheduler, kwok = _free_ports(6)
        self._server = f"https://127.0.0.1:{apiserver}"
        self._api = _Api(self._server, pki)
        etcd = self._process(
            "etcd",
            [
                str(binaries.etcd),
                "--name=steward",
                f"--data-dir={run_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=steward=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",  # throw-away data: no fsync makes writes cheap
            ],
            f"http://127.0.0.1:{etcd_client}/health",
        )
        self._launch([etcd])
        kube_apiserver = self._process(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={apiserver}",
                f"--cert-dir={run_dir / 'kube-apiserver'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-issuer={self._server}",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # The lease reconciler would publish 127.0.0.1 as the `kubernetes` Service's
                # endpoint, which the API server refuses (loopback); nothing here needs one.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
            f"{self._server}/readyz",
        )
        self._launch([kube_apiserver])
        self._write_kubeconfig(
            self.kubeconfig,
            {
                "client-certificate-data": _b64(pki.admin_cert),
                "client-key-data": _b64(pki.admin_key),
            },
        )
        self._launch(
            [
                self._process(
                    "kube-controller-manager",
                    [
                        str(binaries.kube_controller_manager),
                        *self._client_flags(kcm),
                        f"--service-account-private-key-file={pki.service_account_key}",
                        f"--root-ca-file={pki.ca_cert}",
                        f"--cluster-signing-cert-file={pki.ca_cert}",
                        f"--cluster-signing-key-file={pki.ca_key}",
                        *self._controller_args,
                    ],
                    f"https://127.0.0.1:{kcm}/healthz",
                ),
                self._process(
                    "kube-scheduler",
                    [str(binaries.kube_scheduler), *self._client_flags(scheduler)],
                    f"https://127.0.0.1:{scheduler}/readyz",
                ),
                self._process(
                    "kwok",
                    [
                        str(binaries.kwok),
                        f"--kubeconfig={self.kubeconfig}",
                        f"--config={KWOK_STAGES}",
                        f"--config={CAMPAIGN_STAGES}",
                        *(f"--config={path}" for path in self._stages),
                        "--manage-all-nodes=false",
                        "--manage-nodes-with-annotation-selector={}={}".format(
                            *KWOK_NODE_ANNOTATION
                        ),
                        f"--cidr={POD_CIDR}",
                        f"--server-address=127.0.0.1:{kwok}",
                    ],
                    f"http://127.0.0.1:{kwok}/healthz",
                ),
            ]
        )
        # The controller manager answers /healthz before its controllers act; the default
        # ServiceAccount appearing shows the service-account controller is at work.
        self.wait_for_service_account("default")

    def _require_run_dir(self) -> Path:
        if self._run_dir is None:
            raise ControlPlaneError("the control plane is not started: call start() first")
        return self._run_dir

    def _client_flags(self, port: int) -> list[str]:
        """Build the flags the controller manager and the scheduler share: clients, serving."""
        pki = self.pki
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            # Trust the run's CA directly rather than looking up the API server's front-proxy
            # CA, which this control plane does not configure (the lookup only logs errors).
            f"--client-ca-file={pki.ca_cert}",
            "--authentication-skip-lookup=true",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            "--leader-elect=false",
        ]

    def _process(self, name: str, args: list[str], health_url: str) -> _Process:
        return _Process(name, args, health_url, self._require_run_dir() / f"{name}.log")

    def _launch(self, processes: list[_Process]) -> None:
        """Start PROCESSES together, then wait until every one of them is healthy."""
        for process in processes:
            self._processes.append(process)
            process.start()
        deadline = time.monotonic() + self._start_timeout
        for process in processes:
            self._wait(
                f"{process.name} healthy at {process.health_url}",
                lambda p=process: is_healthy(p.health_url, self.pki),  # type: ignore[misc]
                deadline,
                blame=process,
            )

    def _wait(
        self,
        what: str,
        condition: Callable[[], bool],
        deadline: float,
        *,
        blame: _Process | None = None,
    ) -> None:
        """Poll CONDITION until it holds; fail at DEADLINE or as soon as a component exits.

        Parameters
        ----------
        what
            The awaited state, for the error message.
        condition
            Checked every `_POLL_SECONDS`.
        deadline
            `time.monotonic` value after which waiting is an error.
        blame
            The component whose log explains a timeout; every component is checked for exit.
        """
        while not condition():
            for process in self._processes:
                code = process.exited()
                if code is not None:
                    raise ControlPlaneError(
                        f"{process.name} exited with status {code} while waiting for {what}; "
                        f"end of {process.log}:\n{process.log_tail()}"
                    )
            if time.monotonic() > deadline:
                message = f"timed out waiting for {what}"
                if blame is not None:
                    message += f"; end of {blame.log}:\n{blame.log_tail()}"
                raise ControlPlaneError(message)
            time.sleep(_POLL_SECONDS)

    def stop(self) -> None:
        """Stop every component (reverse order) and remove a temporary run directory.

        Safe to call more than once, and called at interpreter exit if the caller did not.
        """
        while self._processes:
            self._processes.pop().stop()
        atexit.unregister(self.stop)
        if self._previous_sigterm is not None:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if self._given_run_dir is None and self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
        self._run_dir = self._pki = self._api = None

    def _handle_sigterm(self) -> None:
        """Turn SIGTERM into `SystemExit` so context managers and atexit stop the children.

        Only when SIGTERM still has its default action, which would end Python without
        running either; a program with its own handler keeps it.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def terminate(signum: int, _frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        self._previous_sigterm = signal.signal(signal.SIGTERM, terminate)

    # --- cluster operations -------------------------------------------------------------------

    def _write_kubeconfig(self, path: Path, user: Mapping[str, str]) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "steward",
                    "cluster": {
                        "server": self._server,
                        "certificate-authority-data": _b64(self.pki.ca_cert),
                    },
                }
            ],
            "users": [{"name": "steward", "user": dict(user)}],
            "contexts": [{"name": "steward", "context": {"cluster": "steward", "user": "steward"}}],
            "current-context": "steward",
        }
        write_private(path, yaml.safe_dump(config, sort_keys=False))

    def wait_for_service_account(
        self, namespace: str, name: str = "default", timeout: float = 30.0
    ) -> None:
        """Wait until ServiceAccount NAME exists in NAMESPACE.

        Pods are rejected by admission until their namespace's ``default`` ServiceAccount
        exists, which the controller manager creates shortly after the namespace.
        """
        api = self._started()[2]
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}"
        self._wait(
            f"ServiceAccount {namespace}/{name}",
            lambda: api.request("GET", path) is not None,
            time.monotonic() + timeout,
            blame=self._find("kube-controller-manager"),
        )

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:  # noqa: ANN401 - decoded JSON
        """Send one REST request to the API server as the admin.

        Returns
        -------
        Any
            The decoded JSON answer, or None for 404.

        Raises
        ------
        ControlPlaneError
            Any other HTTP error; the message carries the API server's own.
        """
        return self._started()[2].request(method, path, body)

    def request_text(self, path: str) -> str:
        """GET PATH as the admin and return the body as text (``/metrics``)."""
        self._started()
        request = urllib.request.Request(self._server + path)  # noqa: S310 - our API server
        with urllib.request.urlopen(request, timeout=30, context=_ssl_context(self.pki)) as answer:  # noqa: S310
            return str(answer.read().decode())

    def apply(self, collection: str, manifest: Mapping[str, Any]) -> Any:  # noqa: ANN401
        """Server-side apply MANIFEST (named by its ``metadata.name``) into COLLECTION.

        COLLECTION is the REST path of the kind's collection, e.g. ``/api/v1/namespaces`` or
        ``/api/v1/namespaces/NS/secrets``; applying twice changes nothing.
        """
        api = self._started()[2]
        return api.apply(collection, manifest["metadata"]["name"], manifest)

    def _find(self, name: str) -> _Process | None:
        return next((p for p in self._processes if p.name == name), None)

    def create_nodes(
        self,
        count: int,
        *,
        prefix: str = "kwok-node-",
        timeout: float = 60.0,
        labels: Mapping[str, str] | None = None,
        cpu: str = "32",
    ) -> list[str]:
        """Create COUNT kwok nodes (or keep existing ones) and wait until they are Ready.

        Each node has room for 110 pods, CPU cores (32 by default) and 256 GiB, like a
        typical worker, and carries LABELS besides the usual ones (a node pool's); kwok
        marks it Ready and renews its lease, and the controller manager lifts the not-ready
        taint, after which the scheduler places pods on it.

        Returns
        -------
        list of str
            The node names, ``<prefix>0`` to ``<prefix><count-1>``.
        """
        api = self._started()[2]
        resources = {"cpu": cpu, "memory": "256Gi", "pods": "110"}
        names = [f"{prefix}{index}" for index in range(count)]
        for name in names:
            api.apply(
                "/api/v1/nodes",
                name,
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1]},
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                            **(labels or {}),
                        },
                    },
                    "status": {"capacity": resources, "allocatable": resources},
                },
            )

        def schedulable(name: str) -> bool:
            node = api.request("GET", f"/api/v1/nodes/{name}")
            taints = (node or {}).get("spec", {}).get("taints", [])
            return _condition(node, "Ready") == "True" and not any(
                taint["key"].startswith("node.kubernetes.io/") for taint in taints
            )

        deadline = time.monotonic() + timeout
        for name in names:
            self._wait(
                f"node {name} Ready and untainted",
                lambda n=name: schedulable(n),  # type: ignore[misc]
                deadline,
                blame=self._find("kwok"),
            )
        return names

    def install_crds(self, *paths: Path, timeout: float = 60.0) -> list[str]:
        """Apply the CustomResourceDefinitions in PATHS and wait until they are Established.

        Server-side apply makes this idempotent: installing the same files twice changes
        nothing, and a changed file updates its CRD.

        Parameters
        ----------
        *paths
            YAML files, or directories whose ``*.yaml`` files are all read.
        timeout
            Seconds the CRDs may take to be Established.

        Returns
        -------
        list of str
            Names of the CRDs, e.g. ``sites.steward.lsst.io``.

        Raises
        ------
        ControlPlaneError
            A file holds something other than a CRD, the API server rejected one, or one was
            not Established in time.
        """
        api = self._started()[2]
        collection = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        names = []
        files = [
            p for path in paths for p in (sorted(path.glob("*.yaml")) if path.is_dir() else [path])
        ]
        for path in files:
            for document in yaml.safe_load_all(path.read_text()):
                if document is None:
                    continue
                if document.get("kind") != "CustomResourceDefinition":
                    raise ControlPlaneError(f"{path}: expected only CustomResourceDefinitions")
                name = document["metadata"]["name"]
                try:
                    api.apply(collection, name, document)
                except ControlPlaneError as error:
                    raise ControlPlaneError(f"{path}: CRD {name} not installed: {error}") from None
                names.append(name)
        deadline = time.monotonic() + timeout
        for name in names:
            self._wait(
                f"CRD {name} Established",
                lambda n=name: (
                    _condition(api.request("GET", f"{collection}/{n}"), "Established")  # type: ignore[misc]
                    == "True"
                ),
                deadline,
                blame=self._find("kube-apiserver"),
            )
        return names

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600
    ) -> Path:
        """Write a kubeconfig acting as ServiceAccount NAMESPACE/NAME and return its path.

        The token comes from the TokenRequest API, as a pod's projected token would, so RBAC
        rules written for the operator's ServiceAccount can be tested as that account.
        """
        api = self._started()[2]
        self.wait_for_service_account(namespace, name)
        answer = api.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        path = self.run_dir / f"sa-{namespace}-{name}.kubeconfig"
        self._write_kubeconfig(path, {"token": answer["status"]["token"]})
        return path


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
