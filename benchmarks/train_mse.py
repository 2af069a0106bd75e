"""PhysioNet models on their own training patients: the *train* MSE beside the records' test MSE.

A PhysioNet run record reports the test split only. This script loads each record's final parameters
and scores the patients the run trained on (the first `train_size` training patients) exactly as the
test MSE is scored (`taynode.experiments.physionet.train_split_mse`: every observed cell, the posterior
samples drawn with fixed keys, Dopri5 at the evaluation tolerance in the evaluation dtype), beside the
per-patient-mean baseline on the same patients. Not a timing: it may run beside other work.

The table is rewritten after every record; a record whose file has not changed since its row was
written is not scored again, so new records are added by running the script again.

    python benchmarks/train_mse.py                       # every PhysioNet record of chapters 6 and 8
    python benchmarks/train_mse.py --records results/physionet/heuristics/*.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from taynode.experiments import REGISTRY  # noqa: E402
from taynode.experiments.physionet import train_split_mse  # noqa: E402
from taynode.records import provenance, save_record  # noqa: E402
from taynode.runner import load_run  # noqa: E402
from taynode.verdicts import method_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench" / "train_mse_physionet.json"


def default_records() -> list[Path]:
    """Every finished PhysioNet model: chapter 6's runs and chapter 8's sweep (diverged runs have none)."""
    results = ROOT / "results" / "physionet"
    return sorted(results.glob("physionet_*.json")) + sorted((results / "heuristics").glob("physionet_*.json"))


def _name(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", nargs="+", default=None,
                    help="PhysioNet run records (.json) with their parameters beside them (default: every one "
                         "under results/physionet outside diverged/)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--redo", action="store_true", help="score records whose rows are up to date too")
    a = ap.parse_args(argv)
    exp = REGISTRY["physionet"]
    paths = [Path(p) for p in a.records] if a.records else default_records()
    if not paths:
        raise SystemExit("no PhysioNet run records found: pass --records")
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"--records: {p} is not a file; pass PhysioNet run records (.json)")
    out = Path(a.out)
    rows = {}
    if out.is_file():
        rows = {r["record"]: r for r in json.loads(out.read_text())["rows"] if (ROOT / r["record"]).is_file()}
    data_cache, prov = {}, provenance()
    for p in paths:
        name, sha = _name(p), hashlib.sha256(p.read_bytes()).hexdigest()
        if not a.redo and rows.get(name, {}).get("record_sha256") == sha:
            continue
        cfg, params, record = load_run(exp, p)
        if record["experiment"] != "physionet":
            raise SystemExit(f"--records: {p} is a {record['experiment']} record, not PhysioNet")
        key = json.dumps(exp.data_provenance(cfg), sort_keys=True, default=str)
        if key not in data_cache:
            data_cache[key] = exp.load_data(cfg, progress=False)
        t = time.perf_counter()
        got = train_split_mse(cfg, params, data_cache[key])
        family, weight = method_of(record["config"])
        m = record["metrics"]
        rows[name] = {"record": name, "record_sha256": sha, "run": record["run"], "git_commit": record["git_commit"],
                      "family": family, "weight": weight, "seed": record["config"]["seed"], **got,
                      "test_mse": m["test_mse"], "test_baseline_mse": m["baseline_mse"],
                      "test_patients": m["eval_sizes"]["test"], "seconds": time.perf_counter() - t,
                      "scored_with": {"git_commit": prov["git_commit"], "source_dirty": prov["source_dirty"]}}
        r = rows[name]
        print(f"{r['run']:<48} train MSE {r['train_mse']:.4e} ({r['train_mse_ratio']:.3f}× baseline, "
              f"{r['train_patients']} patients)  test MSE {r['test_mse']:.4e}  {r['seconds']:.0f} s", flush=True)
        save_record(out, {
            **prov, "benchmark": "train_mse", "experiment": "physionet",
            "what": "each record's model scored on the first train_size training patients as its test MSE is "
                    "scored (taynode.experiments.physionet.train_split_mse), beside the per-patient-mean baseline",
            "rows": sorted(rows.values(), key=lambda r: r["record"]),
        })
    print(f"{len(rows)} records in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
