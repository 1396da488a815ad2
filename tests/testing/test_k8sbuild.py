"""Build-or-reuse: cached binaries are reused without Go; gobuild/ agrees with the pins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steward.testing import k8sbuild


def test_gobuild_matches_the_pins() -> None:
    assert k8sbuild.check_generated() == []


def test_staging_replacements_cover_every_required_staging_module() -> None:
    go_mod = (k8sbuild.GOBUILD_DIR / "kubernetes" / "go.mod").read_text()
    published = "v0." + k8sbuild.KUBERNETES_VERSION.removeprefix("v").split(".", 1)[1]
    for module in ("k8s.io/api", "k8s.io/apiserver", "k8s.io/client-go", "k8s.io/kubectl"):
        assert f"\t{module} => {module} {published}\n" in go_mod


def _fake_cache(cache_dir: Path, digest: str) -> Path:
    root = cache_dir / "k8s" / k8sbuild.KUBERNETES_VERSION
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        (bin_dir / name).touch()
    (bin_dir / "kubectl").touch()
    (bin_dir / "kwok").touch()
    (root / "build.json").write_text(json.dumps({"inputs": digest}))
    return bin_dir


def test_current_cache_is_reused_without_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _fake_cache(tmp_path, k8sbuild._inputs_digest())
    monkeypatch.setenv("PATH", "")  # any Go invocation would fail

    assert k8sbuild.ensure_binaries(cache_dir=tmp_path).bin_dir == bin_dir


def test_stale_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cache(tmp_path, "inputs of another pin")
    monkeypatch.setenv("PATH", "")

    with pytest.raises(k8sbuild.BuildError, match="`go` is not on PATH"):
        k8sbuild.ensure_binaries(cache_dir=tmp_path)
