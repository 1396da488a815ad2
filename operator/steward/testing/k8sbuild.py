"""Build, or reuse, the Kubernetes control-plane binaries from pinned Go modules.

No release download is reachable from the project's machines, only the Go module proxy, so the
control plane used by the tests and by ``steward dev`` is compiled from source: kube-apiserver,
kube-controller-manager, kube-scheduler and kubectl from ``k8s.io/kubernetes``, etcd from
``go.etcd.io/etcd/server/v3`` at the version that Kubernetes release pins, kwok from
``sigs.k8s.io/kwok``, and Kueue (the batch queueing controller campaigns are admitted by) from
``sigs.k8s.io/kueue``. Each lives in its own Go module under ``gobuild/`` so that Go's version
selection for one can never raise a dependency of another (kubernetes#129869).

The pins below are the one place where versions are chosen. The ``go.mod``/``go.sum`` files and
the kwok stages under ``gobuild/`` are generated from them by ``generate`` and committed, so
every build resolves exactly the same modules. ``build`` (the default command) compiles into
``${STEWARD_CACHE_DIR:-~/.cache/steward}/k8s/<version>/bin`` and Kueue into
``.../kueue/<version>/bin`` (beside it its CRDs and webhook manifests, copied from the module, so
they stay out of git), and reuses each directory while its inputs are unchanged; a file lock
makes concurrent callers wait for one build. Kueue has its own stamp, so changing its pin never
rebuilds the control plane.

Usage::

    python -m steward.testing.k8sbuild             # build or reuse; print the bin directory
    python -m steward.testing.k8sbuild generate    # rewrite gobuild/ after changing a pin
    python -m steward.testing.k8sbuild check       # exit 1 when gobuild/ disagrees with the pins
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from steward.constants import CACHE_DIR_ENV

__all__ = [
    "GOBUILD_DIR",
    "KUBERNETES_VERSION",
    "KUEUE_VERSION",
    "KWOK_STAGES",
    "KWOK_VERSION",
    "Binaries",
    "BuildError",
    "KueueBuild",
    "cache_root",
    "check_generated",
    "ensure_binaries",
    "ensure_kueue",
    "generate",
]

KUBERNETES_VERSION: Final = "v1.37.2"
"""Release of ``k8s.io/kubernetes``; every staging module must resolve at ``v0.<minor>.<patch>``.

v1.37.2 is the newest release the proxy serves whose staging modules all resolve; etcd follows
from it (``go.etcd.io/etcd/server/v3`` as pinned in that release's go.mod).
"""

KWOK_VERSION: Final = "v0.8.0"
"""Release of ``sigs.k8s.io/kwok``: the newest that builds with Go 1.26 (its main needs 1.27)."""

KUEUE_VERSION: Final = "v0.19.2"
"""Release of ``sigs.k8s.io/kueue``.

The first releases whose Indexed Jobs stop holding quota for indexes that failed for good
(``status.failedIndexes`` under ``backoffLimitPerIndex``; kueue#13482, fixed on main by PR
#13486) are v0.19.1 (cherry-pick #13717) and v0.18.5 (#13718), per the release's
CHANGELOG/CHANGELOG-0.19.md. v0.19.2 is the newest the module proxy serves (v0.18.6 is refused);
it builds with Go 1.26 against k8s.io/api v0.36.
"""

GOBUILD_DIR: Final = Path(__file__).with_name("gobuild")
"""The committed Go modules, one directory per upstream project."""

KWOK_STAGES: Final = GOBUILD_DIR / "kwok" / "stages.yaml"
"""kwok Stage documents, copied from the pinned kwok module by ``generate``."""

BUILD_FORMAT: Final = 1
"""Bump when the way binaries are built changes, so cached binaries are rebuilt."""

_VERSION_PKG: Final = "k8s.io/component-base/version"

_STAGE_FILES: Final = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
"""Stages under ``kustomize/stage/`` of the kwok module that the harness runs.

Nodes become Ready and keep their lease; pods become Running, pods owned by a Job succeed,
and deleted pods go away. These are kwok's own "fast" stages, unchanged.
"""


class BuildError(RuntimeError):
    """A Go command failed, Go is missing, or ``gobuild/`` is stale."""


@dataclass(frozen=True)
class _GoModule:
    """One module under ``gobuild/``: what it requires and which binaries it builds."""

    directory: str
    """Directory under ``gobuild/`` holding go.mod and go.sum."""

    requirement: str
    """The upstream module built from."""

    binaries: Mapping[str, str]
    """Binary name to Go package path."""

    def path(self) -> Path:
        """Directory of the module."""
        return GOBUILD_DIR / self.directory


_KUBERNETES = _GoModule(
    "kubernetes",
    "k8s.io/kubernetes",
    {
        name: f"k8s.io/kubernetes/cmd/{name}"
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    },
)
_ETCD = _GoModule("etcd", "go.etcd.io/etcd/server/v3", {"etcd": "go.etcd.io/etcd/server/v3"})
_KWOK = _GoModule("kwok", "sigs.k8s.io/kwok", {"kwok": "sigs.k8s.io/kwok/cmd/kwok"})
_MODULES: Final = (_KUBERNETES, _ETCD, _KWOK)
_KUEUE = _GoModule("kueue", "sigs.k8s.io/kueue", {"kueue": "sigs.k8s.io/kueue/cmd/kueue"})

_KUEUE_MANIFESTS: Final = {
    "crd": "config/components/crd",
    "webhook": "config/components/webhook",
}
"""Directories of the Kueue module copied beside its binary: the CRDs with the kustomization
naming which of them convert through the webhook, and the webhook configurations."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the built executables."""

    bin_dir: Path
    """Directory holding every binary."""

    @property
    def etcd(self) -> Path:
        """The etcd server."""
        return self.bin_dir / "etcd"

    @property
    def kube_apiserver(self) -> Path:
        """The Kubernetes API server."""
        return self.bin_dir / "kube-apiserver"

    @property
    def kube_controller_manager(self) -> Path:
        """The controller manager (namespaces, service accounts, Jobs, node lifecycle)."""
        return self.bin_dir / "kube-controller-manager"

    @property
    def kube_scheduler(self) -> Path:
        """The scheduler, which binds pods to the kwok nodes."""
        return self.bin_dir / "kube-scheduler"

    @property
    def kubectl(self) -> Path:
        """Kubectl of the same release, for developers and tests."""
        return self.bin_dir / "kubectl"

    @property
    def kwok(self) -> Path:
        """kwok, which plays the kubelet of every fake node."""
        return self.bin_dir / "kwok"


@dataclass(frozen=True)
class KueueBuild:
    """Paths of the built Kueue manager and the manifests copied from its module."""

    root: Path
    """``<cache>/kueue/<KUEUE_VERSION>``."""

    @property
    def kueue(self) -> Path:
        """The Kueue manager (``cmd/kueue``): controllers, scheduler and webhooks in one."""
        return self.root / "bin" / "kueue"

    @property
    def crds(self) -> Path:
        """Kueue's CustomResourceDefinitions (``config/components/crd/bases``)."""
        return self.root / "crd" / "bases"

    @property
    def crd_kustomization(self) -> Path:
        """``config/components/crd/kustomization.yaml``: its patches turn on conversion."""
        return self.root / "crd" / "kustomization.yaml"

    @property
    def crd_patches(self) -> Path:
        """The kustomize patches the kustomization lists."""
        return self.root / "crd"

    @property
    def webhook_manifests(self) -> Path:
        """Kueue's webhook configurations (``config/components/webhook/manifests.yaml``)."""
        return self.root / "webhook" / "manifests.yaml"


def cache_root() -> Path:
    """Steward's cache directory: ``$STEWARD_CACHE_DIR`` or ``~/.cache/steward``."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "steward"


def _ldflags(module: _GoModule) -> list[str]:
    """Linker flags: strip symbols; stamp the Kubernetes version, which would be v0.0.0 else."""
    flags = ["-s", "-w"]
    if module is _KUBERNETES:
        major, minor, _ = KUBERNETES_VERSION.removeprefix("v").split(".")
        flags += [
            f"-X {_VERSION_PKG}.gitVersion={KUBERNETES_VERSION}",
            f"-X {_VERSION_PKG}.gitMajor={major}",
            f"-X {_VERSION_PKG}.gitMinor={minor}",
            f"-X {_VERSION_PKG}.gitTreeState=clean",
        ]
    if module is _KUEUE:
        flags.append(f"-X sigs.k8s.io/kueue/pkg/version.GitVersion={KUEUE_VERSION}")
    return flags


def _inputs_digest(modules: tuple[_GoModule, ...] = _MODULES) -> str:
    """Hash of everything that determines the binaries: go.mod, go.sum, flags, build format."""
    digest = hashlib.sha256(f"format={BUILD_FORMAT}\n".encode())
    for module in modules:
        digest.update(f"{module.directory} {' '.join(_ldflags(module))}\n".encode())
        for name in ("go.mod", "go.sum"):
            digest.update((module.path() / name).read_bytes())
    return digest.hexdigest()


def _go_env() -> dict[str, str]:
    """Environment for Go: the installed toolchain only, static binaries."""
    return {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}


def _go(args: list[str], *, cwd: Path, nice: bool = False) -> str:
    """Run ``go ARGS`` in CWD and return its standard output.

    Raises
    ------
    BuildError
        Go is not installed or the command failed; the message carries Go's own error.
    """
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "`go` is not on PATH: install Go >= 1.26 to build the control plane "
            "(binaries are cached, so this is needed once per pin)"
        )
    command = [go, *args]
    if nice:
        command = ["nice", "-n", "10", *command]
    result = subprocess.run(
        command, cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"`go {' '.join(args)}` failed in {cwd}:\n{result.stderr.strip()}")
    return result.stdout


def _default_binary_name(package: str) -> str:
    """Name ``go build -o DIR/`` gives a package's binary (a ``/vN`` suffix is skipped)."""
    parts = package.split("/")
    if len(parts) > 1 and re.fullmatch(r"v[0-9]+", parts[-1]):
        return parts[-2]
    return parts[-1]


def _build_module(module: _GoModule, out_dir: Path, jobs: int) -> None:
    """Compile one module's binaries into OUT_DIR under their final names."""
    scratch = out_dir / f".{module.directory}"
    scratch.mkdir()
    _go(
        [
            "build",
            "-mod=readonly",
            "-buildvcs=false",
            "-trimpath",
            f"-p={jobs}",
            f"-ldflags={' '.join(_ldflags(module))}",
            f"-o={scratch}/",
            *module.binaries.values(),
        ],
        cwd=module.path(),
        nice=True,
    )
    for name, package in module.binaries.items():
        (scratch / _default_binary_name(package)).rename(out_dir / name)
    scratch.rmdir()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on PATH, so two processes never build into one cache at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stamp_matches(stamp: Path, digest: str, outputs: list[Path]) -> bool:
    if not stamp.is_file():
        return False
    recorded = json.loads(stamp.read_text())
    return recorded.get("inputs") == digest and all(path.exists() for path in outputs)


def _build_into(
    root: Path,
    modules: tuple[_GoModule, ...],
    *,
    jobs: int,
    log: Callable[[str], None] | None,
    announce: str,
) -> None:
    """Build MODULES into ``ROOT/bin`` unless the stamp is current.

    The binaries are compiled into a staging directory and renamed into place, so a reader
    never sees a half-built ``bin``; the stamp is written last.
    """
    bin_dir = root / "bin"
    stamp = root / "build.json"
    digest = _inputs_digest(modules)
    outputs = [bin_dir / name for module in modules for name in module.binaries]
    if _stamp_matches(stamp, digest, outputs):
        return
    with _locked(root / ".lock"):
        if _stamp_matches(stamp, digest, outputs):  # another process built it meanwhile
            return
        staging = root / f"bin.new-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        started = time.monotonic()
        if log:
            log(announce.format(bin_dir=bin_dir))
        try:
            for module in modules:
                if log:
                    log(f"  go build {', '.join(module.binaries)} ({module.path()})")
                _build_module(module, staging, jobs)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        retired = root / f"bin.old-{os.getpid()}"
        if bin_dir.exists():
            bin_dir.rename(retired)
        staging.rename(bin_dir)
        shutil.rmtree(retired, ignore_errors=True)
        seconds = round(time.monotonic() - started)
        go_version = _go(["env", "GOVERSION"], cwd=GOBUILD_DIR).strip()
        stamp.write_text(
            json.dumps({"inputs": digest, "go": go_version, "seconds": seconds}, indent=2) + "\n"
        )
        if log:
            log(f"built in {seconds} s into {bin_dir}")


def ensure_binaries(
    *, cache_dir: Path | None = None, jobs: int = 2, log: Callable[[str], None] | None = None
) -> Binaries:
    """Return the control-plane binaries, building them first unless the cache is current.

    Parameters
    ----------
    cache_dir
        Steward's cache directory; `cache_root` by default. Binaries go to
        ``<cache_dir>/k8s/<KUBERNETES_VERSION>/bin``.
    jobs
        Go's ``-p``: packages compiled in parallel. Two fits the project's two-core machines.
    log
        Receives progress messages (a cold build takes tens of minutes, so say so).

    Returns
    -------
    Binaries
        Paths of the executables.

    Raises
    ------
    BuildError
        Go is missing, a module does not resolve, or the compiler failed.
    """
    root = (cache_dir or cache_root()) / "k8s" / KUBERNETES_VERSION
    _build_into(
        root,
        _MODULES,
        jobs=jobs,
        log=log,
        announce=(
            "building the control plane into {bin_dir}: about 15 minutes on two "
            "cores the first time, seconds once Go's build cache is warm"
        ),
    )
    return Binaries(root / "bin")


def _copy_kueue_manifests(root: Path) -> None:
    """Copy Kueue's CRDs, CRD patches and webhook manifests from the module cache into ROOT."""
    listed = json.loads(_go(["list", "-m", "-json", _KUEUE.requirement], cwd=_KUEUE.path()))
    directory = Path(listed["Dir"])
    for name, relative in _KUEUE_MANIFESTS.items():
        target = root / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(directory / relative, target)
        for path in target.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)  # the module cache is read-only


def ensure_kueue(
    *, cache_dir: Path | None = None, jobs: int = 2, log: Callable[[str], None] | None = None
) -> KueueBuild:
    """Return the Kueue manager and its manifests, building them first unless cached.

    Kueue is built like the control plane, into the same cache under its own stamp and lock:
    ``<cache_dir>/kueue/<KUEUE_VERSION>``. Its CRDs and webhook manifests are copied from the
    pinned module, so the version of the objects always matches the binary.

    Raises
    ------
    BuildError
        Go is missing, the module does not resolve, or the compiler failed.
    """
    root = (cache_dir or cache_root()) / "kueue" / KUEUE_VERSION
    build = KueueBuild(root)
    _build_into(
        root,
        (_KUEUE,),
        jobs=jobs,
        log=log,
        announce="building Kueue into {bin_dir}: several minutes on two cores the first time",
    )
    manifests = (build.crd_kustomization, build.webhook_manifests)
    if not all(path.is_file() for path in manifests):
        with _locked(root / ".lock"):
            if not all(path.is_file() for path in manifests):
                _copy_kueue_manifests(root)
    return build


# --- generating gobuild/ from the pins ----------------------------------------------------------


@dataclass(frozen=True)
class _UpstreamGoMod:
    """The parts of an upstream go.mod that a consuming module has to carry over."""

    go: str
    godebug: tuple[str, ...]
    requires: Mapping[str, str]
    replaces: Mapping[str, str]
    directory: Path


def _download(module: str, version: str) -> _UpstreamGoMod:
    """Fetch MODULE@VERSION into the module cache and parse its go.mod."""
    info = json.loads(_go(["mod", "download", "-json", f"{module}@{version}"], cwd=GOBUILD_DIR))
    text = Path(info["GoMod"]).read_text()
    go_line = re.search(r"^go (\S+)$", text, re.MULTILINE)
    if go_line is None:
        raise BuildError(f"{module}@{version}: go.mod has no `go` line")
    return _UpstreamGoMod(
        go=go_line.group(1),
        godebug=tuple(re.findall(r"^godebug (\S+)$", text, re.MULTILINE)),
        requires=dict(re.findall(r"^\s*(?:require\s+)?(\S+) (v\S+)", text, re.MULTILINE)),
        replaces=dict(
            re.findall(r"^\s*(?:replace\s+)?(\S+)(?: v\S+)? => (.+?)\s*$", text, re.MULTILINE)
        ),
        directory=Path(info["Dir"]),
    )


def _staging_replacements(upstream: _UpstreamGoMod) -> dict[str, str]:
    """``replace`` lines pointing Kubernetes' staging modules at their published versions.

    The release's go.mod replaces every ``k8s.io/<name>`` it requires with
    ``./staging/src/k8s.io/<name>``, which a consumer cannot see; the same code is published as
    ``k8s.io/<name> v0.<minor>.<patch>`` (kubernetes#79384). Staging modules the release does not
    require (the samples) are left out: they are not built and some are not published.
    """
    published = "v0." + KUBERNETES_VERSION.removeprefix("v").split(".", 1)[1]
    replacements: dict[str, str] = {}
    for module, target in upstream.replaces.items():
        if target == f"./staging/src/{module}":
            if module in upstream.requires:
                _download(module, published)  # fails early, naming the missing module
                replacements[module] = f"{module} {published}"
        elif target.startswith((".", "/")):
            raise BuildError(f"k8s.io/kubernetes replaces {module} with a local path {target}")
        else:
            replacements[module] = target
    return replacements


def _write_go_mod(
    module: _GoModule, version: str, upstream: _UpstreamGoMod, replaces: Mapping[str, str]
) -> None:
    lines = [
        "// Generated by `python -m steward.testing.k8sbuild generate`; do not edit.",
        f"module steward.lsst.io/gobuild/{module.directory}",
        "",
        f"go {upstream.go}",
        "",
        *(f"godebug {setting}" for setting in upstream.godebug),
        "",
        "tool (",
        *(f"\t{package}" for package in module.binaries.values()),
        ")",
        "",
        f"require {module.requirement} {version}",
    ]
    if replaces:
        lines += ["", "replace (", *(f"\t{m} => {t}" for m, t in sorted(replaces.items())), ")"]
    (module.path() / "go.mod").write_text("\n".join(lines) + "\n")
    (module.path() / "go.sum").unlink(missing_ok=True)
    _go(["mod", "tidy"], cwd=module.path())


def _write_stages(kwok: _UpstreamGoMod) -> None:
    parts = [
        (
            "# Generated by `python -m steward.testing.k8sbuild generate` from "
            f"sigs.k8s.io/kwok@{KWOK_VERSION}/kustomize/stage; do not edit.\n"
        )
    ]
    for name in _STAGE_FILES:
        text = (kwok.directory / "kustomize" / "stage" / name).read_text()
        parts.append(f"---\n# {name}\n{text.removeprefix('---').lstrip()}")
    KWOK_STAGES.write_text("".join(parts))


def generate() -> None:
    """Rewrite go.mod, go.sum and the kwok stages under ``gobuild/`` from the pins.

    Raises
    ------
    BuildError
        A pinned module or one of Kubernetes' staging modules does not resolve, or an upstream
        go.mod carries a local ``replace`` a consumer cannot reproduce.
    """
    kubernetes = _download(_KUBERNETES.requirement, KUBERNETES_VERSION)
    _write_go_mod(_KUBERNETES, KUBERNETES_VERSION, kubernetes, _staging_replacements(kubernetes))
    etcd_version = kubernetes.requires[_ETCD.requirement]
    _write_go_mod(_ETCD, etcd_version, _download(_ETCD.requirement, etcd_version), {})
    kwok = _download(_KWOK.requirement, KWOK_VERSION)
    if any(not target.startswith((".", "/")) for target in kwok.replaces.values()):
        raise BuildError(f"kwok {KWOK_VERSION} replaces modules; carry them over by hand")
    _write_go_mod(_KWOK, KWOK_VERSION, kwok, {})
    _write_stages(kwok)
    kueue = _download(_KUEUE.requirement, KUEUE_VERSION)
    if any(not target.startswith((".", "/")) for target in kueue.replaces.values()):
        raise BuildError(f"kueue {KUEUE_VERSION} replaces modules; carry them over by hand")
    _write_go_mod(_KUEUE, KUEUE_VERSION, kueue, {})


def _required_version(module: _GoModule) -> str | None:
    text = (module.path() / "go.mod").read_text()
    pattern = rf"^\s*(?:require\s+)?{re.escape(module.requirement)} (v\S+)"
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1) if match else None


def check_generated() -> list[str]:
    """Say where ``gobuild/`` disagrees with the pins; empty when it is current.

    Only reads files, so it needs no Go and runs in the fast test suite.
    """
    problems = []
    pins = ((_KUBERNETES, KUBERNETES_VERSION), (_KWOK, KWOK_VERSION), (_KUEUE, KUEUE_VERSION))
    for module, pin in pins:
        found = _required_version(module)
        if found != pin:
            problems.append(
                f"{module.path()}/go.mod requires {module.requirement} {found}, pin {pin}"
            )
    if f"@{KWOK_VERSION}/" not in KWOK_STAGES.read_text():
        problems.append(f"{KWOK_STAGES} was not generated from kwok {KWOK_VERSION}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command line: ``build`` (default), ``generate`` or ``check``."""
    parser = argparse.ArgumentParser(prog="python -m steward.testing.k8sbuild")
    parser.add_argument(
        "command", nargs="?", default="build", choices=["build", "generate", "check"]
    )
    parser.add_argument("--jobs", type=int, default=2, help="Go's -p (default: 2)")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)  # noqa: T201 - progress for a human

    try:
        if args.command == "generate":
            generate()
            log(f"regenerated {GOBUILD_DIR}; rebuild with `python -m steward.testing.k8sbuild`")
            return 0
        problems = check_generated()
        for problem in problems:
            log(f"{problem}: run `python -m steward.testing.k8sbuild generate`")
        if problems or args.command == "check":
            return 1 if problems else 0
        binaries = ensure_binaries(jobs=args.jobs, log=log)
        ensure_kueue(jobs=args.jobs, log=log)
    except BuildError as error:
        log(str(error))
        return 1
    print(binaries.bin_dir)  # noqa: T201 - the command's output, for scripts
    return 0


if __name__ == "__main__":
    sys.exit(main())
