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
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from record_rows import ROOT, checked_paths, previous_rows, records_to_score, row_head, save_table  # noqa: E402

from taynode.experiments import REGISTRY  # noqa: E402
from taynode.experiments.physionet import train_split_mse  # noqa: E402
from taynode.records import provenance  # noqa: E402

OUT = ROOT / "results" / "bench" / "train_mse_physionet.json"


def default_records() -> list[Path]:
    """Every finished PhysioNet model: chapter 6's runs and chapter 8's sweep (diverged runs have none)."""
    results = ROOT / "results" / "physionet"
    return sorted(results.glob("physionet_*.json")) + sorted((results / "heuristics").glob("physionet_*.json"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", nargs="+", default=None,
                    help="PhysioNet run records (.json) with their parameters beside them (default: every one "
                         "under results/physionet outside diverged/)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--redo", action="store_true", help="score records whose rows are up to date too")
    a = ap.parse_args(argv)
    exp = REGISTRY["physionet"]
    paths = checked_paths(a.records if a.records else default_records(), "physionet")
    out = Path(a.out)
    rows, prov = previous_rows(out), provenance()
    for name, sha, cfg, params, record, data in records_to_score(exp, paths, rows, redo=a.redo):
        t = time.perf_counter()
        got = train_split_mse(cfg, params, data)
        m = record["metrics"]
        rows[name] = {**row_head(name, sha, record), **got,
                      "test_mse": m["test_mse"], "test_baseline_mse": m["baseline_mse"],
                      "test_patients": m["eval_sizes"]["test"], "seconds": time.perf_counter() - t,
                      "scored_with": {"git_commit": prov["git_commit"], "source_dirty": prov["source_dirty"]}}
        r = rows[name]
        print(f"{r['run']:<48} train MSE {r['train_mse']:.4e} ({r['train_mse_ratio']:.3f}× baseline, "
              f"{r['train_patients']} patients)  test MSE {r['test_mse']:.4e}  {r['seconds']:.0f} s", flush=True)
        save_table(out, prov, rows, benchmark="train_mse", experiment="physionet",
                   what="each record's model scored on the first train_size training patients as its test MSE "
                        "is scored (taynode.experiments.physionet.train_split_mse), beside the per-patient-mean "
                        "baseline")
    print(f"{len(rows)} records in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
