"""Trained models' joint-batch NFE on the whole test split, beside the records' NFE on its first examples.

A run record's `test_nfe` is the mean joint-batch NFE over the first `nfe_examples` test examples (MNIST's
trained tier: the first 1000 of 10,000 images, 10 batches of 100). This script loads each record's final
parameters and solves every test example the same way (`taynode.evaluation.whole_split_nfe`: the
unregularised dynamics, Dopri5 at the evaluation tolerance in the evaluation dtype, consecutive joint
batches of the training batch size), and records the mean, spread and range over the batches, so that
a chapter can read its verdicts against the whole split. Not a timing: it may run beside other work.

The table is rewritten after every record; a record whose file has not changed since its row was
written is not solved again, so new records are added by running the script again.

    python benchmarks/test_nfe.py                                   # MNIST: chapter 5's trained runs
    python benchmarks/test_nfe.py --experiment mnist --records results/mnist/heuristics/*.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from record_rows import ROOT, checked_paths, previous_rows, records_to_score, row_head, save_table  # noqa: E402

from taynode.evaluation import whole_split_nfe  # noqa: E402
from taynode.experiments import REGISTRY  # noqa: E402
from taynode.records import provenance  # noqa: E402


def default_records(experiment: str) -> list[Path]:
    """The trained models of the experiment's chapter and of chapter 8's sweep (diverged runs have none)."""
    results = ROOT / "results" / experiment
    return sorted(results.glob(f"{experiment}_*.json")) + sorted((results / "heuristics").glob(f"{experiment}_*.json"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="mnist", choices=sorted(REGISTRY))
    ap.add_argument("--records", nargs="+", default=None,
                    help="run records (.json) with their parameters beside them (default: every one directly "
                         "under results/<experiment> and results/<experiment>/heuristics)")
    ap.add_argument("--out", default=None, help="default: results/bench/test_nfe_<experiment>.json")
    ap.add_argument("--redo", action="store_true", help="solve records whose rows are up to date too")
    a = ap.parse_args(argv)
    exp = REGISTRY[a.experiment]
    paths = checked_paths(a.records if a.records else default_records(a.experiment), a.experiment)
    out = Path(a.out) if a.out else ROOT / "results" / "bench" / f"test_nfe_{a.experiment}.json"
    rows, prov = previous_rows(out), provenance()
    for name, sha, cfg, params, record, data in records_to_score(exp, paths, rows, redo=a.redo):
        t = time.perf_counter()
        got = whole_split_nfe(exp, cfg, params, data)
        m = record["metrics"]
        rows[name] = {**row_head(name, sha, record), **got,
                      "record_test_nfe": m["test_nfe"],
                      "record_nfe_examples": len(m["test_nfe_batches"]) * got["batch"],
                      "eval_rtol": cfg.eval_rtol, "eval_dtype": cfg.eval_dtype, "seconds": time.perf_counter() - t,
                      "solved_with": {"git_commit": prov["git_commit"], "source_dirty": prov["source_dirty"]}}
        r = rows[name]
        rest = f", last {r['remainder']['examples']}: {r['remainder']['nfe']}" if r["remainder"] else ""
        print(f"{r['run']:<44} whole split ({r['examples']} in {len(r['batches'])} batches of {r['batch']}{rest}): "
              f"NFE {r['mean']:.1f} ± {r['sd']:.1f} [{r['min']}, {r['max']}]  record (first "
              f"{r['record_nfe_examples']}): {r['record_test_nfe']:.1f}  {r['seconds']:.0f} s", flush=True)
        save_table(out, prov, rows, benchmark="test_nfe", experiment=a.experiment,
                   what="each record's model: joint-batch NFE of the unregularised dynamics at the evaluation "
                        "tolerance on every test example (taynode.evaluation.whole_split_nfe), beside the "
                        "record's own test_nfe")
    print(f"{len(rows)} records in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
