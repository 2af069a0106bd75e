"""Prediction time of trained models, interleaved in one run: what fewer evaluations buy at test time.

A run record's `eval_time_s` times its whole evaluation (every metric, compilation included) on a
machine that other runs may have shared. This benchmark times only the solves that make the
predictions, for several trained models in one run: for each record, the model's unregularised
dynamics are solved at the evaluation tolerance (the paper's 1.4e-8, in the evaluation dtype) on the
test examples the record's joint NFE is measured on (`Experiment.eval_arrays`, the first
`nfe_examples`), in joint batches of the training batch size, exactly as `taynode.evaluation`
solves them. Every model is compiled first; then `--rounds` rounds over the models, each the median
of `--repeats` passes over the examples, or of as many as fill half a second (block_until_ready); the
value is the median of the rounds.
Each model's time is divided by the time of the unregularised model of its seed, measured in the
same run.

    python benchmarks/predict_time.py --experiment physionet            # seed-0 models, results/bench/
    python benchmarks/predict_time.py --experiment physionet --records results/physionet/heuristics/*.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from taynode.evaluation import _sharded, final_state, for_evaluation  # noqa: E402
from taynode.experiment import batch_size_of, batch_slice  # noqa: E402
from taynode.experiments import REGISTRY  # noqa: E402
from taynode.records import cpu_clock, cpu_use, provenance, save_record  # noqa: E402
from taynode.runner import load_run  # noqa: E402
from taynode.verdicts import method_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def default_records(name: str, seed: int = 0) -> list[Path]:
    """The finished models of one seed: the chapter's own runs and chapter 08's sweep (diverged runs have none)."""
    results = ROOT / "results" / name
    return sorted(results.glob(f"{name}_cpu_*_seed{seed}.json")) + sorted(
        (results / "heuristics").glob(f"{name}_cpu_*_seed{seed}.json"))


def predictor(exp, path, data_cache):
    """`(call, info)`: a compiled call that solves every joint batch of the record's NFE examples."""
    cfg, params, record = load_run(exp, path)
    cfg, params = for_evaluation(cfg, params)
    key = json.dumps([exp.data_provenance(cfg), cfg.dtype], sort_keys=True, default=str)
    if key not in data_cache:
        data_cache[key] = exp.load_data(cfg, progress=False)
    data = data_cache[key]
    x = exp.eval_arrays(cfg, data)
    n = min(cfg.nfe_examples, batch_size_of(x))
    bs = cfg.batch_size
    batches = [_sharded(cfg, params, batch_slice(x, i, i + bs)) for i in range(0, n - bs + 1, bs)]
    if not batches:
        raise ValueError(f"{path}: fewer NFE examples ({n}) than one batch ({bs}); nothing to time")

    def call():
        return [final_state(exp, cfg, p, b) for p, b in batches]

    t = time.perf_counter()
    jax.block_until_ready(call())
    compile_s = time.perf_counter() - t
    family, weight = method_of(record["config"])
    info = {"run": record["run"], "record": str(Path(path).relative_to(ROOT)) if Path(path).is_relative_to(ROOT)
            else str(path), "git_commit": record["git_commit"], "family": family, "weight": weight,
            "seed": record["config"]["seed"], "examples": len(batches) * bs, "batch": bs,
            "test_nfe": record["metrics"].get("test_nfe"), "compile_and_first_s": compile_s,
            "eval_rtol": cfg.eval_rtol, "eval_dtype": cfg.eval_dtype}
    return call, info


def _median(call, repeats, min_seconds=0.5):
    """The median of at least `repeats` timed calls, and of as many more as fill `min_seconds` (fast models)."""
    times = []
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < 1000):
        t = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="physionet", choices=sorted(REGISTRY))
    ap.add_argument("--records", nargs="+", default=None,
                    help="run records (.json) of trained models (default: every seed-0 model of the experiment)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --repeats passes each")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    for field in ("repeats", "rounds"):
        if getattr(a, field) < 1:
            raise SystemExit(f"--{field} must be at least 1, got {getattr(a, field)}")
    exp = REGISTRY[a.experiment]
    paths = [Path(p) for p in a.records] if a.records else default_records(exp.name)
    if not paths:
        raise SystemExit(f"no run records of {exp.name} found: pass --records")
    built, data_cache = {}, {}
    for p in paths:
        call, info = predictor(exp, p, data_cache)
        built[info["run"]] = (call, info)
        print(f"compiled {info['run']:<48} {info['compile_and_first_s']:6.1f} s", flush=True)
    samples = {run: [] for run in built}
    load_before = os.getloadavg()[0]
    clock = cpu_clock()  # what this process and every other one kept busy during the timed calls
    for _ in range(a.rounds):
        for run, (call, _) in built.items():
            samples[run].append(_median(call, a.repeats))
    use = cpu_use(clock)
    rows = []
    for run, (_, info) in built.items():
        rows.append({**info, "predict_s": statistics.median(samples[run]), "rounds": samples[run]})
    base = {r["seed"]: r["predict_s"] for r in rows if r["family"] == "unregularised"}
    print(f"\n{exp.name}: {rows[0]['examples']} test examples in joint batches of {rows[0]['batch']}, "
          f"rtol = atol = {rows[0]['eval_rtol']:g} in {rows[0]['eval_dtype']}; other processes kept "
          f"{use['other_processes_cores_used']} of {use['cores']} cores busy")
    print(f"{'run':<48} {'test NFE':>9} {'predict (ms)':>13} {'÷ unreg.':>9}")
    for r in rows:
        r["over_unregularised"] = r["predict_s"] / base[r["seed"]] if r["seed"] in base else None
        ratio = f"{r['over_unregularised']:9.2f}" if r["over_unregularised"] is not None else f"{'—':>9}"
        nfe = f"{r['test_nfe']:9.1f}" if r["test_nfe"] is not None else f"{'—':>9}"
        print(f"{r['run']:<48} {nfe} {1e3 * r['predict_s']:13.4g} {ratio}")
    out = Path(a.out or ROOT / "results" / "bench" / f"predict_time_{exp.name}.json")
    save_record(out, {
        **provenance(), "benchmark": "predict_time", "experiment": exp.name,
        "protocol": f"each model compiled first; {a.rounds} interleaved rounds over the models, each the median "
                    f"of {a.repeats} passes over the examples or as many as fill 0.5 s (block_until_ready); the "
                    "value is the median of the rounds",
        "what": "the unregularised dynamics solved at the evaluation tolerance on the test examples of the "
                "joint NFE, in joint batches of the training batch size",
        "load_before": load_before, "load_after": os.getloadavg()[0], "cores": use["cores"],
        "own_cores_used": use["own_cores_used"], "other_processes_cores_used": use["other_processes_cores_used"],
        "rows": rows,
    })
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
