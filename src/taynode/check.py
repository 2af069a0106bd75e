"""Re-evaluate run records and say which reproduce: `taynode check-records`.

Every run record keeps its final parameters beside it, so every number it reports can be recomputed:
`check_records` loads each record's model, evaluates it as `taynode eval --check` does (same metrics,
the validation loss too where the run kept its best one) and compares with the record, exactly where
R_K is computed by the record's Taylor method on a CPU of the record's model and to `METHOD_RTOL` where
it is not. The table of
results (one row per record: its commit and tree state, whether it reproduced, the differing metrics,
seconds) is written after every record, so a long check can be stopped and continued: a record whose
file has not changed since its row was written is not checked again (`redo` checks it anyway).

    taynode check-records                      # every record under results/, table in results/checks/records.json
    taynode check-records results/toy          # one folder (or files)
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import time
from pathlib import Path

import jax

from .experiments import REGISTRY
from .records import provenance, save_record

__all__ = ["record_paths", "check_records", "is_run_record", "DEFAULT_OUT"]

#: where `taynode check-records` writes its table unless told otherwise
DEFAULT_OUT = Path("results/checks/records.json")
_SKIP_DIRS = {"bench", "carry", "checks", "diverged"}


def is_run_record(path) -> bool:
    """Whether `path` is a run record with saved parameters (not a benchmark, penalty table or diverged run)."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (isinstance(record, dict) and all(k in record for k in ("experiment", "config", "metrics", "run"))
            and bool(record.get("params_file")) and (path.parent / record["params_file"]).is_file())


def record_paths(roots) -> list[Path]:
    """The run records in `roots` (files, or folders searched recursively outside bench/, carry/, checks/ and
    diverged/), sorted. **Raises** `ValueError` naming a root that does not exist or a file that is no run record."""
    found = set()
    for root in map(Path, roots):
        if not root.exists():
            raise ValueError(f"{root} does not exist: pass run records (.json) or folders holding them")
        if root.is_file():
            if not is_run_record(root):
                raise ValueError(f"{root} is not a run record with its parameters beside it")
            found.add(root)
            continue
        for p in root.rglob("*.json"):
            if not _SKIP_DIRS & set(p.relative_to(root).parts[:-1]) and is_run_record(p):
                found.add(p)
    return sorted(found)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_one(exp, path: Path, data_cache: dict, devices: int) -> dict:
    from .runner import compare_with_record, load_run, reevaluate

    cfg, params, record = load_run(exp, path)
    cfg = dataclasses.replace(cfg, devices=devices)
    data_used = exp.data_provenance(cfg)
    key = json.dumps([exp.name, data_used, cfg.dtype, cfg.eval_dtype], sort_keys=True, default=str)
    if key not in data_cache:
        data_cache[key] = exp.load_data(cfg, progress=False)
    metrics = reevaluate(exp, cfg, params, record, data_cache[key])
    return {**compare_with_record(cfg, metrics, record), "data": data_used}


def check_records(paths, out=DEFAULT_OUT, *, redo: bool = False, progress: bool = True, devices: int = 0) -> dict:
    """Re-evaluate every record of `paths` and compare it with its metrics; write the table to `out`.

    **Arguments**
    - `paths`: run records (`record_paths` finds them).
    - `out`: the table's JSON file, rewritten after every record; its rows of records that still exist are
      kept, and a record whose file is unchanged since its row was written is not checked again unless `redo`.
    - `devices`: devices the evaluation is sharded over (0: as `taynode eval`).

    **Returns** the table: this tree's provenance and `rows`, one per record (of `paths` and of the
    previous table), sorted by path, each with `path`, `experiment`, `run`, `record_sha256`, the record's
    `git_commit`, `source_dirty` and `taylor_method`, `checked_with` (the commit, tree state and date of
    the check), then `same`, `rtol`, `why` (why not exactly), `differences` (up to five, as `metrics_diff`
    gives them), `n_differences`, `error` (the error's type and one-line reason where the evaluation
    failed, else None), `data` (`Experiment.data_provenance` of the data the check evaluated on: for a
    record made before records carried their own `data`, a row with `same` says which data reproduce
    it) and `seconds`.
    """
    from tqdm.auto import tqdm

    from .configs import config_from_dict
    from .runner import error_line

    out = Path(out)
    # rows of records outside `paths` are kept (checking one folder leaves the others' rows in the table)
    rows = {}
    if out.exists():
        rows = {row["path"]: row for row in json.loads(out.read_text()).get("rows", []) if Path(row["path"]).exists()}
    head = provenance()
    checked_with = {"git_commit": head["git_commit"], "source_dirty": head["source_dirty"], "date": head["date"]}
    data_cache = {}
    for path in tqdm(list(paths), desc="check-records", disable=not progress):
        path = Path(path)
        sha = _sha256(path)
        if not redo and rows.get(str(path), {}).get("record_sha256") == sha:
            continue
        record = json.loads(path.read_text())
        exp = REGISTRY.get(record["experiment"])
        method = config_from_dict(exp.Config, record["config"]).taylor_method if exp is not None else None
        row = {"path": str(path), "experiment": record["experiment"], "run": record["run"], "record_sha256": sha,
               "git_commit": record.get("git_commit"), "source_dirty": record.get("source_dirty"),
               "taylor_method": method, "checked_with": checked_with}
        start = time.perf_counter()
        try:
            if exp is None:
                raise ValueError(f"experiment {record['experiment']!r} is not registered "
                                 f"(one of {', '.join(REGISTRY)})")
            found = _check_one(exp, path, data_cache, devices)
            row.update(same=found["same"], rtol=found["rtol"], why=found["why"],
                       differences=found["differences"][:5], n_differences=len(found["differences"]), error=None,
                       data=found["data"])
        except Exception as e:  # noqa: BLE001 — every failure is a row of the table, named by its type and reason
            row.update(same=False, rtol=None, why="", differences=[], n_differences=0,
                       error=f"{type(e).__name__}: {error_line(e)}")
        row["seconds"] = round(time.perf_counter() - start, 2)
        # free this record's compiled functions: XLA's CPU code stays mapped until then, and a few hundred
        # records would exhaust the process's memory maps (vm.max_map_count) and end in a crash
        jax.clear_caches()
        gc.collect()
        rows[str(path)] = row
        save_record(out, {**head, "rows": [rows[k] for k in sorted(rows)]})
    return {**head, "rows": [rows[k] for k in sorted(rows)]}
