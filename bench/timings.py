"""Timings the tests used to assert and now only measure: print them, judge them by eye.

Tests assert behaviour (an alias bomb is refused; the rate cap asks for the right pauses; the
dev stack converges); how long that takes depends on the machine and its load, so it is
measured here. Run ``.venv/bin/python bench/timings.py`` (``--dev-stack`` also brings the local
stack up, which takes minutes and needs the built binaries).

alias bomb
    seconds to refuse a document expanding to 9**10 nodes (the old test said: under 5 s).
rate cap
    seconds for 9 token-bucket acquisitions at 4 a second on the real clock (expected: 1.25 s,
    a burst of 4 then one every 0.25 s; the old test said: at least 1.125 s).
dev stack
    seconds from ``steward dev up`` to the first ReplicationRule Ready with Rucio rules OK (the
    old test said: within 180 s), then ``dev down``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steward.storage.rucio import TokenBucket
from steward.storage.yamlfile import YAMLLoadError, load_text
from steward.testing import devstack


def alias_bomb() -> float:
    """Seconds to refuse the billion-laughs document."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    started = time.monotonic()
    try:
        list(load_text(Path("bomb.yaml"), "\n".join(lines)))
    except YAMLLoadError:
        return time.monotonic() - started
    msg = "the alias bomb was not refused"
    raise AssertionError(msg)


def rate_cap() -> float:
    """Seconds for 9 acquisitions of a 4-per-second bucket."""
    bucket = TokenBucket(4)
    started = time.monotonic()
    for _ in range(9):
        bucket.acquire()
    return time.monotonic() - started


def dev_stack() -> float:
    """Seconds from ``dev up`` to a ReplicationRule Ready with Rucio rules OK."""
    steward = Path(sys.executable).with_name("steward")
    with tempfile.TemporaryDirectory() as state:
        option = ["--state-dir", state]
        started = time.monotonic()
        subprocess.run([steward, "dev", "up", *option], check=True, capture_output=True)
        try:
            stack = devstack.read_state(Path(state))
            assert stack is not None, "dev up wrote no state"
            kubeconfig = stack.env["KUBECONFIG"]
            kubectl = Path(stack.bin_dir) / "kubectl"
            while True:
                listed = subprocess.run(
                    [kubectl, "--kubeconfig", kubeconfig, "get", "rr", "-A", "-o", "json"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                for rule in json.loads(listed)["items"]:
                    status = rule.get("status") or {}
                    ready = any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in status.get("conditions", [])
                    )
                    if ready and (status.get("counts") or {}).get("OK", 0) > 0:
                        return time.monotonic() - started
                time.sleep(1)
        finally:
            subprocess.run([steward, "dev", "down", *option], check=False, capture_output=True)


def main() -> None:
    """Print each timing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev-stack", action="store_true", help="also time steward dev up")
    args = parser.parse_args()
    print(f"alias bomb refused in {alias_bomb():.3f} s")
    print(f"rate cap: 9 calls at 4/s took {rate_cap():.3f} s (expected 1.25)")
    if args.dev_stack:
        print(f"dev stack: first rule Ready {dev_stack():.0f} s after up began")


if __name__ == "__main__":
    main()
