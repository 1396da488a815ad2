"""The Containerfile agrees with the package and the manifests it is deployed by.

No container is built here: this machine has no container engine and reaches no container
registry for the base image (docs/deploy.md, "The image"). What can be checked without one is:
the stages, the pin, the user, the entry point and ports against pyproject.toml and the
rendered Deployment, and that the wheel the first stage builds from this checkout carries
what the operator reads at run time (templates, migrations).
"""

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import click
import pytest
import yaml

from steward.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "Containerfile").read_text()
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make ", "cargo", "rustc", "-dev ")


def _instructions():
    """(instruction, argument) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", TEXT)
    lines = [line.strip() for line in joined.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def _stages():
    stages, current = [], None
    for instruction, argument in _instructions():
        if instruction == "FROM":
            current = [(instruction, argument)]
            stages.append(current)
        elif current is not None:
            current.append((instruction, argument))
    return stages


def _deployment():
    path = ROOT / "manifests" / "base" / "11-deployment-steward.yaml"
    return yaml.safe_load(path.read_text())["spec"]["template"]["spec"]


def test_base_is_pinned_to_exact_releases():
    (base,) = [a for i, a in _instructions() if i == "ARG" and a.startswith("BASE=")]
    image = base.removeprefix("BASE=")
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image
    assert [s[0][1].split()[0] for s in _stages()] == ["${BASE}", "${BASE}"]


def test_final_stage_has_no_compiler_and_only_installs_the_built_wheels():
    build, final = _stages()
    assert build[0][1] == "${BASE} AS build"
    final_text = " ".join(a for _, a in final)
    for compiler in COMPILERS:
        assert compiler not in final_text
    assert "apt-get" not in final_text
    assert ("COPY", "--from=build /wheels /wheels") in final
    (install,) = [a for i, a in final if i == "RUN" and "pip install" in a]
    assert "--no-index --find-links /wheels" in install
    build_text = " ".join(a for _, a in build)
    assert "python -m build --wheel" in build_text
    assert "--only-binary=:all:" in build_text


def test_runs_as_the_user_the_deployment_expects():
    (_, final) = _stages()
    users = [a for i, a in final if i == "USER"]
    assert users == ["10001:10001"]
    security = _deployment()["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (10001, 10001)


def test_entry_point_and_ports_match_the_package_and_the_deployment():
    instructions = dict(_instructions())
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = instructions["ENTRYPOINT"]
    assert entry == '["steward"]'
    assert scripts["steward"] == "steward.cli.main:main"
    assert instructions["CMD"] == '["operator"]'
    (container,) = _deployment()["containers"]
    assert container["args"][0] in cli.list_commands(click.Context(cli))
    exposed = {int(p) for p in instructions["EXPOSE"].split()}
    assert exposed == {p["containerPort"] for p in container["ports"]}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # As the image's first stage does: an isolated build with pyproject.toml's backend.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("steward-*.whl")
    return path


def test_the_wheel_carries_what_the_operator_reads_at_run_time(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    templates = {p.name for p in (ROOT / "operator/steward/templates").glob("*.yaml.jinja")}
    assert {n.rsplit("/", 1)[1] for n in names if "/templates/" in n} == templates
    assert any(n.startswith("steward/schema/migrations/versions/") for n in names)
    assert "steward = steward.cli.main:main" in scripts
