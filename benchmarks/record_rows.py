"""The incremental table the model-scoring benchmarks share (`train_mse.py`, `test_nfe.py`).

Each writes one row per run record to a JSON table; a record whose file has not changed since its row
was written is not scored again, rows of records that no longer exist are dropped, and the table is
rewritten after every record, so an interrupted run loses nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from taynode.records import save_record
from taynode.runner import load_run
from taynode.verdicts import method_of

ROOT = Path(__file__).resolve().parents[1]


def record_name(path: Path) -> str:
    """A record's path as the table names it: relative to the repository where it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def checked_paths(paths, experiment: str) -> list[Path]:
    """`paths` as `Path`s; exits with a one-line error when there are none or one is not a file."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise SystemExit(f"no {experiment} run records found: pass --records")
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"--records: {p} is not a file; pass {experiment} run records (.json)")
    return paths


def previous_rows(out: Path) -> dict:
    """The rows of the table at `out` whose records still exist, by record name."""
    if not out.is_file():
        return {}
    return {r["record"]: r for r in json.loads(out.read_text())["rows"] if (ROOT / r["record"]).is_file()}


def records_to_score(exp, paths, rows: dict, *, redo: bool):
    """For each record of `paths` whose row in `rows` is missing or older than its file (every one with
    `redo`): `(name, sha256, cfg, params, record, data)`, the data loaded once per distinct provenance.
    Exits with a one-line error for a record `load_run` refuses (another experiment's, say)."""
    data_cache = {}
    for p in paths:
        name, sha = record_name(p), hashlib.sha256(Path(p).read_bytes()).hexdigest()
        if not redo and rows.get(name, {}).get("record_sha256") == sha:
            continue
        try:
            cfg, params, record = load_run(exp, p)
        except ValueError as e:  # another experiment's record, or one without its parameters
            raise SystemExit(f"--records: {e}") from None
        key = json.dumps(exp.data_provenance(cfg), sort_keys=True, default=str)
        if key not in data_cache:
            data_cache[key] = exp.load_data(cfg, progress=False)
        yield name, sha, cfg, params, record, data_cache[key]


def row_head(name: str, sha: str, record: dict) -> dict:
    """The columns every row starts with: the record, its file's sha256, run, commit, method and seed."""
    family, weight = method_of(record["config"])
    return {"record": name, "record_sha256": sha, "run": record["run"], "git_commit": record["git_commit"],
            "family": family, "weight": weight, "seed": record["config"]["seed"]}


def save_table(out: Path, prov: dict, rows: dict, **about) -> None:
    """The table, rewritten: `prov` (this run's provenance), `about` (benchmark, experiment, what), the rows."""
    save_record(out, {**prov, **about, "rows": sorted(rows.values(), key=lambda r: r["record"])})
