"""The `taynode` command line, built from the experiment registry.

    taynode data fetch                    fill data/ (verified download cache)
    taynode train <experiment> [flags]    train one run and write its run record
    taynode sweep <experiment>            the runs a chapter shows, resumable
    taynode eval <experiment> RECORD      evaluate a saved model on the test split
    taynode penalties <experiment>        R_2, R_3, kinetic, Frobenius of saved models, one table
    taynode gpu-runs OUT                  canary, gpu-preset runs and benchmark for a GPU machine
    taynode info                          machine and library versions

Several processes: `taynode --coordinator HOST:PORT --num-processes N --process-id I train ...`, one
command per process (or the environment variables TAYNODE_COORDINATOR, TAYNODE_NUM_PROCESSES,
TAYNODE_PROCESS_ID); see `taynode.parallel`.

The flags of `train` are generated from the fields of the experiment's config (with their
help texts); `--preset` picks the starting point and every other flag overrides one field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .experiments import REGISTRY

TRAIN_OPTIONS = ("resume", "out", "ckpt_root", "no_progress")
DISTRIBUTED_VERBS = ("train", "sweep", "eval")  # the verbs that may run as one of several processes


def _is_eval_field(name: str) -> bool:
    return name.startswith("eval_") or name.startswith("nfe_") or name in ("reg_examples", "taylor_method")


def _add_field_flags(parser, config_cls, names=None) -> None:
    """One flag per config field (`--batch-size` for `batch_size`), typed by the field's default."""
    for f in dataclasses.fields(config_cls):
        if f.name == "preset" or (names is not None and f.name not in names):
            continue
        flag = "--" + f.name.replace("_", "-")
        kw = {"help": f.metadata.get("help", ""), "default": None, "dest": f.name}
        if isinstance(f.default, tuple):
            kw.update(nargs="*", type=float)
        elif isinstance(f.default, bool):
            kw.update(type=lambda s: s.lower() in ("1", "true", "yes"))
        else:
            kw.update(type=type(f.default))
        parser.add_argument(flag, **kw)


def _overrides(a, config_cls, names=None) -> dict:
    out = {}
    for f in dataclasses.fields(config_cls):
        if f.name == "preset" or (names is not None and f.name not in names):
            continue
        v = getattr(a, f.name, None)
        if v is not None:
            out[f.name] = tuple(v) if isinstance(f.default, tuple) else v
    return out


def _add_distributed_flags(parser) -> None:
    """The flags that make this process one of several (`taynode.parallel.initialize_distributed`)."""
    g = parser.add_argument_group("several processes (train, sweep, eval; one command per process, these flags "
                                  "before the verb, or $TAYNODE_COORDINATOR, $TAYNODE_NUM_PROCESSES, "
                                  "$TAYNODE_PROCESS_ID)")
    g.add_argument("--coordinator", default=None, help="host:port of process 0 (the same in every process)")
    g.add_argument("--num-processes", type=int, default=None, help="how many processes take part")
    g.add_argument("--process-id", type=int, default=None, help="this process's index, 0 .. num-processes - 1")


def _cmd_data(a) -> int:
    from .data import fetch_all

    paths = fetch_all(progress=True, data_dir=a.data_dir, mirror=a.mirror)
    for name, path in sorted(paths.items()):
        print(f"{name}: {path}")
    return 0


def _cmd_info(a) -> int:
    from .records import provenance

    print(json.dumps(provenance(), indent=2))
    return 0


def _cmd_train(a) -> int:
    from .parallel import is_main_process
    from .runner import summary_line, train

    exp = REGISTRY[a.experiment]
    cfg = exp.config(a.preset, **_overrides(a, exp.Config))
    record = train(exp, cfg, out_dir=a.out, ckpt_root=a.ckpt_root, resume=a.resume, progress=not a.no_progress)
    print(summary_line(exp, record["run"], record["metrics"]))
    if record["processes"] == 1 or is_main_process():
        print(f"record: {a.out or 'results/' + exp.name}/{record['run']}.json")
    return 0


def _cmd_sweep(a) -> int:
    from .runner import sweep

    exp = REGISTRY[a.experiment]
    sweep(exp, a.preset, runs=a.runs, seeds=a.seeds, out_dir=a.out, ckpt_root=a.ckpt_root,
          progress=not a.no_progress)
    return 0


def _cmd_eval(a) -> int:
    from .runner import compare_with_record, load_run, reevaluate, summary_line

    exp = REGISTRY[a.experiment]
    cfg, params, record = load_run(exp, a.path)
    names = [f.name for f in dataclasses.fields(exp.Config) if _is_eval_field(f.name)]
    # the evaluation chunks are sharded over this machine's devices, not over those the run trained on
    cfg = dataclasses.replace(cfg, devices=a.devices, **_overrides(a, exp.Config, names))
    data = exp.load_data(cfg, progress=False)
    if a.check and (record is None or a.no_compare):
        raise ValueError("--check compares with a run record: pass the record (.json), without --no-compare")
    metrics = reevaluate(exp, cfg, params, record, data)
    print(summary_line(exp, record["run"] if record else str(a.path), metrics))
    same = None
    if record is not None and not a.no_compare:
        found = compare_with_record(cfg, metrics, record)
        same, rtol = found["same"], found["rtol"]
        how = "exactly" if rtol == 0 else f"to rtol {rtol:g} ({found['why']})"
        print(f"matches the record {how}" if same else "differs from the record (other evaluation settings or code): "
              + "; ".join(_difference(d) for d in found["differences"][:5]))
    if a.json:
        print(json.dumps(metrics, indent=2))
    if a.check and not same:
        raise ValueError(f"--check: the metrics of {a.path} were not reproduced "
                         + ("exactly" if rtol == 0 else f"to rtol {rtol:g}"))
    return 0


def _difference(d: dict) -> str:
    rel = f" (relative {d['rel']:.2g})" if d["rel"] is not None else ""
    return f"{d['key']}: {d['got']!r} here, {d['recorded']!r} in the record{rel}"


def _cmd_check_records(a) -> int:
    from .check import check_records, record_paths

    paths = record_paths(a.paths or ["results"])
    if not paths:
        raise ValueError(f"no run records in {' '.join(a.paths or ['results'])}: pass run records (.json) or "
                         "folders holding them")
    table = check_records(paths, a.out, redo=a.redo, progress=not a.no_progress, devices=a.devices)
    wanted = {str(p) for p in paths}
    rows = [r for r in table["rows"] if r["path"] in wanted]
    failed = [r for r in rows if not r["same"]]
    for r in failed:
        why = r["error"] or "; ".join(_difference(d) for d in r["differences"][:3])
        print(f"differs: {r['path']}: {why}")
    exact = sum(r["same"] and r["rtol"] == 0 for r in rows)
    print(f"{len(rows) - len(failed)} of {len(rows)} records reproduced ({exact} exactly, "
          f"{len(rows) - len(failed) - exact} to rtol); table: {a.out}")
    return 1 if failed else 0


def _cmd_penalties(a) -> int:
    import glob

    from .records import save_record
    from .runner import penalty_table

    exp = REGISTRY[a.experiment]
    paths = sorted(a.records) if a.records else sorted(glob.glob(f"results/{exp.name}/{exp.name}_cpu_*.json"))
    table = penalty_table(exp, paths, orders=a.orders, n=a.n, progress=not a.no_progress)
    out = save_record(a.out or f"results/{exp.name}/penalties_cpu.json", table)
    keys = [f"R{k}" for k in table["orders"]] + ["kinetic", "frobenius"]
    print(f"{'run':<42} {'test NFE':>8} " + " ".join(f"{k:>10}" for k in keys))
    for r in table["rows"]:
        nfe = f"{r['test_nfe']:8.1f}" if r["test_nfe"] is not None else f"{'-':>8}"
        print(f"{r['run']:<42} {nfe} " + " ".join(f"{r[k]:10.4g}" for k in keys))
    print(f"written: {out}")
    return 0


def _cmd_gpu_runs(a) -> int:
    from .gpu_runner import gpu_runs

    summary = gpu_runs(a.out, runs=a.runs, budget_s=a.budget, preset=a.preset)
    print(f"written: {a.out}/gpu_runs.json")
    return 0 if summary["canary"]["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, REGISTRY))
    listing = "\n".join(f"  {name:<{width}}  {exp.description}" for name, exp in REGISTRY.items())
    p = argparse.ArgumentParser(
        prog="taynode",
        description="Taylor-mode regularised neural ODEs: data, training, evaluation.",
        epilog=f"experiments (taynode <verb> <experiment> --help for their flags):\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_distributed_flags(p)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="manage the data cache")
    dsub = d.add_subparsers(dest="data_command", required=True)
    fetch = dsub.add_parser("fetch", help="fetch and verify every obtainable data set into data/")
    fetch.add_argument("--data-dir", default=None, help="cache root (default $TAYNODE_DATA or <repo>/data)")
    fetch.add_argument("--mirror", default=None, help="mirror directory (default $TAYNODE_MIRROR)")
    fetch.set_defaults(func=_cmd_data)

    verbs = {
        "train": "train a model and write its run record",
        "sweep": "train the runs a chapter shows, one after another (skips finished runs, resumes the rest)",
        "eval": "evaluate a saved model (run record or checkpoint directory) on the test split",
        "penalties": "R_K at several K, kinetic and Frobenius of saved models, one table",
    }
    subs = {verb: sub.add_parser(verb, help=text).add_subparsers(dest="experiment", required=True)
            for verb, text in verbs.items()}
    for name, exp in REGISTRY.items():
        presets = tuple(exp.presets)
        tr = subs["train"].add_parser(name, help=exp.description)
        tr.add_argument("--preset", default=None, help=f"one of {presets} (default {exp.Config().preset})")
        _add_field_flags(tr, exp.Config)
        tr.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of this run")
        tr.add_argument("--out", default=None, help=f"directory of the run record (default results/{name})")
        tr.add_argument("--ckpt-root", default="checkpoints", help="root directory of checkpoints")
        tr.add_argument("--no-progress", action="store_true")
        tr.set_defaults(func=_cmd_train)

        sw = subs["sweep"].add_parser(name, help=f"{exp.description}; sweeps: {', '.join(exp.sweeps)}")
        sw.add_argument("--preset", default="cpu", help=f"one of {presets}")
        sw.add_argument("--runs", default="full", help=f"one of {sorted(exp.sweeps)}")
        sw.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the sweep's own seeds")
        sw.add_argument("--out", default=None, help=f"directory of the run records (default results/{name})")
        sw.add_argument("--ckpt-root", default="checkpoints")
        sw.add_argument("--no-progress", action="store_true")
        sw.set_defaults(func=_cmd_sweep)

        ev = subs["eval"].add_parser(name, help=f"evaluate a {name} run record (.json) or checkpoint directory")
        ev.add_argument("path")
        _add_field_flags(ev, exp.Config, [f.name for f in dataclasses.fields(exp.Config) if _is_eval_field(f.name)])
        ev.add_argument("--devices", type=int, default=0,
                        help="devices the evaluation chunks are sharded over (default 0: as many of this machine's "
                             "as divide the batch; the metrics do not depend on it beyond rounding)")
        ev.add_argument("--json", action="store_true", help="also print every metric as JSON")
        ev.add_argument("--no-compare", action="store_true", help="do not compare with the record's metrics")
        ev.add_argument("--check", action="store_true", help="exit with an error unless the record is reproduced")
        ev.set_defaults(func=_cmd_eval)

        pe = subs["penalties"].add_parser(name, help=f"every {name} run record given "
                                                     f"(default results/{name}/{name}_cpu_*.json)")
        pe.add_argument("records", nargs="*")
        pe.add_argument("--orders", type=int, nargs="+", default=[2, 3], help="the K of each R_K reported")
        pe.add_argument("--n", type=int, default=None, help="test examples (default: each record's reg_examples)")
        pe.add_argument("--out", default=None, help=f"default results/{name}/penalties_cpu.json")
        pe.add_argument("--no-progress", action="store_true")
        pe.set_defaults(func=_cmd_penalties)

    from .gpu_runner import DEFAULT_RUNS

    gr = sub.add_parser("gpu-runs", help="device, jet canary, then the gpu-preset runs and the taylor_cost "
                                         "benchmark, each within a time budget (for a GPU machine without network)")
    gr.add_argument("out", help="directory of the run records and gpu_runs.json")
    gr.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS),
                    help="experiment:field=value,... (default: %(default)s)")
    gr.add_argument("--budget", type=float, default=300.0, help="seconds per run (default 300)")
    gr.add_argument("--preset", default="gpu", help="preset of every run (default gpu; smoke to try it on a CPU)")
    gr.set_defaults(func=_cmd_gpu_runs)

    from .check import DEFAULT_OUT

    cr = sub.add_parser("check-records", help="re-evaluate run records and compare each with its metrics "
                                              "(as eval --check); exit 1 unless every one reproduces")
    cr.add_argument("paths", nargs="*", help="run records or folders (default: results)")
    cr.add_argument("--out", default=str(DEFAULT_OUT), help="the table (default %(default)s); its rows of "
                                                            "unchanged records are not checked again")
    cr.add_argument("--redo", action="store_true", help="check records whose row is already in the table")
    cr.add_argument("--devices", type=int, default=0, help="devices the evaluation is sharded over (as eval)")
    cr.add_argument("--no-progress", action="store_true")
    cr.set_defaults(func=_cmd_check_records)

    info = sub.add_parser("info", help="print machine facts and library versions")
    info.set_defaults(func=_cmd_info)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        if a.command in DISTRIBUTED_VERBS:  # before any JAX computation
            from .parallel import initialize_distributed

            initialize_distributed(a.coordinator, a.num_processes, a.process_id)
        return a.func(a)
    except (ValueError, RuntimeError) as e:
        from .runner import error_line

        # a run-time error of a compiled solve carries stack traces and advice around its one-line message
        print(f"taynode: error: {error_line(e) if isinstance(e, RuntimeError) else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
