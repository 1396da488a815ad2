"""Generated files are up to date: crds/ from the models, manifests/SITE/ from the templates.

The same checks as `make check-generated` (``steward crds --check``, ``steward render --site S
--check``), as tests, so a forgotten regeneration fails the suite too; and proof that
``--check`` does catch a hand edit and a stray file.
"""

from pathlib import Path

import pytest
from click.testing import CliRunner

from steward.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
SITES = sorted(p.stem.removeprefix("values-") for p in (ROOT / "deploy").glob("values-*.yaml"))


@pytest.fixture(autouse=True)
def _in_repository(monkeypatch):
    monkeypatch.chdir(ROOT)


def _run(*args):
    return CliRunner().invoke(cli, list(args))


def test_every_site_with_values_has_a_site_file():
    assert SITES, "deploy/values-*.yaml: no site to render"
    for site in SITES:
        assert (ROOT / "sites" / f"{site}.yaml").is_file(), site


def test_crds_are_up_to_date():
    result = _run("crds", "--check")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("site", SITES)
def test_manifests_are_up_to_date(site):
    result = _run("render", "--site", site, "--check")
    assert result.exit_code == 0, result.output


def test_check_catches_a_hand_edit_and_a_stray_file(tmp_path):
    out = tmp_path / "manifests"
    args = ["--values", str(ROOT / "deploy"), "--sites", str(ROOT / "sites"), "--out", str(out)]
    assert _run("render", "--site", "base", *args).exit_code == 0
    assert _run("render", "--site", "base", "--check", *args).exit_code == 0
    deployment = out / "base" / "11-deployment-steward.yaml"
    deployment.write_text(deployment.read_text().replace("replicas: 1", "replicas: 2"))
    (out / "base" / "99-extra.yaml").write_text("kind: ConfigMap\n")
    result = _run("render", "--site", "base", "--check", *args)
    assert result.exit_code == 1
    assert "11-deployment-steward.yaml: out of date" in result.output
    assert "99-extra.yaml: not generated" in result.output
    assert _run("render", "--site", "base", *args).exit_code == 0
    assert "replicas: 1" in deployment.read_text()
    assert not (out / "base" / "99-extra.yaml").exists()


def test_unknown_site_names_the_known_ones(tmp_path):
    result = _run("render", "--site", "atlantis", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "sites/atlantis.yaml: no such Site file (sites: base, in2p3, ncsa, summit)" in (
        result.output
    )
