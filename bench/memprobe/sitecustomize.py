"""Where a benchmarked process's memory goes: loaded by ``bench/reconcile.py --memory-probe``.

Python imports ``sitecustomize`` at start-up from its path; the bench puts this directory on
the operator's ``PYTHONPATH`` and sets ``STEWARD_BENCH_MEMORY_DIR``, so the operator runs
unchanged. On SIGUSR2 (the bench sends it once the operator answers, before any resource)
`tracemalloc` starts recording where each block is allocated: what start-up allocated is
not traced, what the resources cost is (tracing every import made the operator too slow to
start on a loaded machine; tracing slows allocation and adds its own memory: for finding
why, not for the RSS figure).
On SIGUSR1 the process writes ``memory-PID-N.txt`` there: its RSS beside the heap Python's
allocators hold live (RSS minus that is fragmentation, freed memory not returned, and what
C code allocates outside Python), what glibc's ``malloc_trim`` returns, what kopf keeps
per object, live objects by type, and the biggest allocation sites, by line and by call
stack. (pymalloc's own arena statistics are not available while tracemalloc traces.)

With ``STEWARD_BENCH_MEMORY_TRACE=0`` nothing is traced (the operator runs at full speed)
and the report has instead pymalloc's arena statistics (``sys._debugmallocstats``: the
arenas' memory against the blocks in use in them, i.e. what pymalloc holds free) and the
live objects' sizes by type, each container counted with the strings, numbers and bytes it
refers to.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

_DIR = os.environ.get("STEWARD_BENCH_MEMORY_DIR")
_FRAMES = int(os.environ.get("STEWARD_BENCH_MEMORY_FRAMES", "5"))
_TRACE = os.environ.get("STEWARD_BENCH_MEMORY_TRACE", "1") != "0"
_reports = 0


def _status(field: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return "?"


def _json_size(value: object) -> int:
    """Bytes of a parsed JSON value (dicts, lists, strings, numbers), its contents included."""
    size, todo = 0, [value]
    while todo:
        item = todo.pop()
        size += sys.getsizeof(item)
        if isinstance(item, dict):
            todo += item.keys()
            todo += item.values()
        elif isinstance(item, list):
            todo += item
    return size


def _kopf_objects() -> list[str]:
    """What kopf keeps per object: the last-seen body (with its managedFields) and the memo."""
    memories = [o for o in gc.get_objects() if type(o).__name__ == "ResourceMemories"]
    bodies = managed = memos = count = 0
    for container in memories:
        for memory in container.iter_all_memories():
            count += 1
            body = memory.daemons_memory.live_fresh_body
            raw = None if body is None else body._src  # noqa: SLF001
            if isinstance(raw, dict):
                if count == 1:
                    Path(_DIR or ".", f"body-{os.getpid()}.json").write_text(json.dumps(raw))
                bodies += _json_size(raw)
                managed += _json_size(raw.get("metadata", {}).get("managedFields"))
            memos += sum(_json_size(v) for k, v in dict(memory.memo).items() if k != "context")
    tasks = sum(1 for o in gc.get_objects() if type(o).__name__ in {"Task", "_asyncio.Task"})
    return [
        (
            f"kopf: {count} object memories; last-seen bodies {bodies / 2**20:.1f} MiB "
            f"(managedFields {managed / 2**20:.1f} MiB); memo values but the context "
            f"{memos / 2**20:.1f} MiB; {tasks} asyncio tasks"
        ),
    ]


def _pymalloc_stats() -> list[str]:
    """The summary lines of ``sys._debugmallocstats`` (it writes to the C stderr)."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()  # noqa: SLF001
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    keep = ("# arenas", "# bytes in", "Total", "bytes lost", "# times")
    lines = [line for line in text.splitlines() if line.startswith(keep) or "unused pools" in line]
    return ["pymalloc:", *(f"  {line}" for line in lines)]


def _sizes_by_type() -> list[str]:
    """Live objects' bytes by type; untracked leaves (str, int, bytes) count to their owner."""
    sizes: Counter[str] = Counter()
    seen: set[int] = set()
    for obj in gc.get_objects():
        name = type(obj).__name__
        size = sys.getsizeof(obj)
        for ref in gc.get_referents(obj):
            if not gc.is_tracked(ref) and id(ref) not in seen:
                seen.add(id(ref))
                size += sys.getsizeof(ref)
        sizes[name] += size
    return [
        f"live objects by type, with their untracked leaves: {sum(sizes.values()) / 2**20:.1f} MiB",
        *(f"  {size / 2**20:9.2f} MiB {name}" for name, size in sizes.most_common(30)),
    ]


def _dict_shapes() -> list[str]:
    """Live dicts grouped by their first keys (sorted): which kind of dict grows per resource.

    Counted with their untracked leaves like `_sizes_by_type`, and with the type of one
    object referring to a dict of each shape, as a hint of its owner.
    """
    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    example: dict[str, dict[object, object]] = {}
    for obj in gc.get_objects():
        if type(obj) is not dict:
            continue
        shape = ",".join(sorted(str(k) for k in obj)[:5]) or "(empty)"
        size = sys.getsizeof(obj) + sum(
            sys.getsizeof(ref) for ref in gc.get_referents(obj) if not gc.is_tracked(ref)
        )
        sizes[shape] += size
        counts[shape] += 1
        example.setdefault(shape, obj)
    lines = ["live dicts by their first five keys, with their untracked leaves:"]
    for shape, size in sizes.most_common(25):
        owners = {type(r).__name__ for r in gc.get_referrers(example[shape])[:5]}
        lines.append(
            f"  {size / 2**20:8.2f} MiB {counts[shape]:8d} [{shape[:100]}] "
            f"<- {','.join(sorted(owners))[:80]}"
        )
    return lines


def _counts_by_type() -> list[str]:
    types = Counter(type(o).__name__ for o in gc.get_objects())
    return ["live objects by type (count):", *(f"  {c:9d} {n}" for n, c in types.most_common(30))]


def _report(_signum: int, _frame: FrameType | None) -> None:
    global _reports  # noqa: PLW0603 - one counter per process
    _reports += 1
    gc.collect()
    if not _TRACE:
        lines = [
            f"VmRSS {_status('VmRSS')}, VmHWM {_status('VmHWM')} (not traced)",
            *_kopf_objects(),
            *_pymalloc_stats(),
            *_sizes_by_type(),
            *_counts_by_type(),
            *_dict_shapes(),
        ]
        _write(lines)
        return
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
    )
    current, peak = tracemalloc.get_traced_memory()
    lines = [
        f"VmRSS {_status('VmRSS')}, VmHWM {_status('VmHWM')}",
        (
            f"traced live {current / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB), "
            f"tracemalloc's own {tracemalloc.get_tracemalloc_memory() / 2**20:.1f} MiB"
        ),
        *_kopf_objects(),
        "",
        *_counts_by_type(),
    ]
    for key, top in (("filename", 25), ("lineno", 60)):
        lines += ["", f"by {key}:"]
        lines += [
            f"  {s.size / 2**20:8.2f} MiB {s.count:9d} {s.traceback[0]}"
            for s in snapshot.statistics(key)[:top]
        ]
    lines += ["", "by call stack:"]
    for stat in snapshot.statistics("traceback")[:40]:
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} blocks")
        lines += [f"    {frame}" for frame in stat.traceback.format(most_recent_first=True)]
    # Last, as it changes the RSS: what glibc holds free (returned by malloc_trim) is not
    # in use; what stays is live, or pymalloc arenas kept by a few live objects each.
    before = _status("VmRSS")
    ctypes.CDLL(None).malloc_trim(0)
    lines.insert(1, f"after malloc_trim(0): VmRSS {_status('VmRSS')} (was {before})")
    _write(lines)


def _write(lines: list[str]) -> None:
    if not _TRACE:
        before = _status("VmRSS")
        ctypes.CDLL(None).malloc_trim(0)
        lines.insert(1, f"after malloc_trim(0): VmRSS {_status('VmRSS')} (was {before})")
    assert _DIR is not None
    partial = Path(_DIR) / f".memory-{os.getpid()}-{_reports}.txt"
    partial.write_text("\n".join(lines) + "\n")
    partial.rename(partial.with_name(partial.name[1:]))


def _start(_signum: int, _frame: FrameType | None) -> None:
    if _TRACE:
        tracemalloc.start(_FRAMES)


if _DIR:
    with contextlib.suppress(ValueError):  # not the main thread: no report, no harm
        signal.signal(signal.SIGUSR2, _start)
        signal.signal(signal.SIGUSR1, _report)
