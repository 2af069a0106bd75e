"""Run records: one schema, one save, one load, for experiment runs and benchmarks alike.

A record is one JSON file. Every record carries its provenance (`provenance()`): the commit,
whether the working tree differed from it and which files did, the machine and the library
versions, and the date. A run record adds the experiment, the run name, the full config,
timings, metrics, the training history and the file of its final parameters (written beside
it with `flax.serialization`), and the data it saw, `data` (`Experiment.data_provenance`):
`source`, `files` (`{raw file name: sha256}`: the pinned checksums the loader verifies, or the
file's own where none is pinned), `settings` (every config field and loader constant that changes
the data: sizes, seeds, cleaning rules) and, where the loader caches derived data, `cache_key`. A
diverged run's record carries `data` and `resumed_from` (the checkpoint step it restarted from, None
for a run from scratch) too. `load_average` and `cpu_use` (`cpu_use()`: the mean cores busy
with the run and with everything else) say whether its timings had the machine to themselves.
Records written before `data` (or `cpu_use`) existed lack it; they are still schema 2.

Schema 2 (current). Records of schema 1 were migrated on disk: their `source_dirty` is
`true` with `dirty_paths: null` where the commit carried a `-dirty` suffix, because schema 1
did not say which files differed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from .machine import machine_info, versions
from .paths import ROOT, write_json

__all__ = ["SCHEMA", "provenance", "source_state", "save_record", "load_record", "cpu_clock", "cpu_use"]

SCHEMA = 2


def source_state(path=None) -> dict:
    """The commit of the repository and whether the tree differs from it.

    **Returns** `{"git_commit": sha or None, "source_dirty": bool or None, "dirty_paths": [...]}`:
    tracked files with changes and untracked files under `src/`, as `git status` names them. Files
    under `results/` are the records and benchmarks this code writes, not its source: a record made
    while an earlier record of the same session waits to be committed is still made from a clean tree.
    """
    cwd = Path(path or ROOT)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=cwd,
                                capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "source_dirty": None, "dirty_paths": None}
    paths = []
    for line in status:
        code, name = line[:2], line[3:]
        if (code == "??" and not name.startswith("src/")) or name.startswith("results/"):
            continue
        paths.append(name)
    return {"git_commit": head, "source_dirty": bool(paths), "dirty_paths": sorted(paths)}


def provenance() -> dict:
    """Schema, commit and tree state, machine, library versions and date: the head of every record."""
    return {"schema": SCHEMA, **source_state(), "machine": machine_info(), "versions": versions(),
            "date": time.strftime("%Y-%m-%d")}


def cpu_clock() -> dict:
    """Now, for `cpu_use`: wall seconds, this process's CPU seconds (user + system, its threads included) and
    the CPU seconds the whole machine has been busy (`/proc/stat`; None where it cannot be read)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = None
    t = os.times()
    return {"wall": time.perf_counter(), "own": t.user + t.system, "busy": busy}


def cpu_use(start: dict) -> dict:
    """The mean number of cores busy with this process and with every other one since `start` (a `cpu_clock()`).

    **Returns** `{"cores", "own_cores_used", "other_processes_cores_used"}` (`cores`: those this process may
    use; the last None where `/proc/stat` cannot be read). Timings compare only between runs that had the
    machine to themselves: `other_processes_cores_used` near 0.
    """
    now = cpu_clock()
    wall = max(now["wall"] - start["wall"], 1e-9)
    own = (now["own"] - start["own"]) / wall
    other = (None if now["busy"] is None or start["busy"] is None
             else max(0.0, (now["busy"] - start["busy"]) / wall - own))
    return {"cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "own_cores_used": round(own, 3), "other_processes_cores_used": None if other is None else round(other, 3)}


def save_record(path, record: dict) -> Path:
    """Write a record (atomically); it must carry the provenance keys."""
    missing = [k for k in ("schema", "git_commit", "source_dirty", "machine", "versions", "date") if k not in record]
    if missing:
        raise ValueError(f"record lacks {missing}: start it from taynode.records.provenance()")
    return write_json(path, record)


def load_record(path) -> dict:
    """A record from its JSON file.

    **Raises** `ValueError` if the file is missing or not of the current schema.
    """
    path = Path(path)
    if not path.exists() or path.suffix != ".json":
        raise ValueError(f"{path} does not exist: pass a run record (.json) or a checkpoint directory")
    record = json.loads(path.read_text())
    if record.get("schema") != SCHEMA:
        raise ValueError(f"{path} is a record of schema {record.get('schema', 1)}, this taynode reads schema {SCHEMA}")
    return record
