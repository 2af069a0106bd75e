"""The `taynode` command line.

    taynode data fetch            fill data/ (verified download cache)
    taynode toy --preset cpu ...  the Fig. 1 toy λ sweep (chapter 3)
    taynode train mnist ...       train an MNIST ODE-Net and write its run record
    taynode sweep mnist           the cpu-preset runs of chapter 05, resumable
    taynode eval mnist RECORD     evaluate a saved model on the test split
    taynode penalties mnist       R_2, R_3, kinetic, Frobenius of every cpu record (chapter 05)
    taynode info                  machine and library versions
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_data(a) -> int:
    from .data import fetch_all

    paths = fetch_all(progress=True, data_dir=a.data_dir, mirror=a.mirror)
    for name, path in sorted(paths.items()):
        print(f"{name}: {path}")
    return 0


def _cmd_info(a) -> int:
    from .machine import git_commit, machine_info, versions

    print(json.dumps({"machine": machine_info(), "versions": versions(), "git_commit": git_commit()}, indent=2))
    return 0


def _cmd_toy(a) -> int:
    from .experiments import toy

    toy.main(a.rest)
    return 0


def _cmd_train(a) -> int:
    if a.experiment == "mnist":
        from .experiments import mnist

        cfg = mnist.config_from_args(a)
        record = mnist.train(cfg, out_dir=a.out, ckpt_root=a.ckpt_root, resume=a.resume, progress=not a.no_progress)
        print(mnist.summary_line(record))
        print(f"record: {a.out}/{record['run']}.json")
        return 0
    raise ValueError(f"unknown experiment {a.experiment!r}")


def _cmd_sweep(a) -> int:
    from .experiments import mnist

    mnist.sweep(a.preset, runs=mnist.SWEEPS[a.runs], seed=a.seed, out_dir=a.out, ckpt_root=a.ckpt_root,
                progress=not a.no_progress)
    return 0


def _cmd_eval(a) -> int:
    import dataclasses

    import jax

    from .data import load_mnist
    from .experiments import mnist

    jax.config.update("jax_enable_x64", True)
    cfg, params, record = mnist.load_run(a.path)
    overrides = {k: v for k, v in (("eval_test_size", a.eval_test_size), ("eval_train_size", a.eval_train_size),
                                   ("eval_rtol", a.eval_rtol), ("eval_atol", a.eval_atol)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    metrics = mnist.evaluate(cfg, params, load_mnist(progress=False))
    print(mnist.summary_line({"run": record["run"] if record else str(a.path), "metrics": metrics}))
    if a.json:
        print(json.dumps(metrics, indent=2))
    return 0


def _cmd_penalties(a) -> int:
    import glob

    import jax

    from .experiments import mnist
    from .paths import write_json

    jax.config.update("jax_enable_x64", True)
    paths = sorted(a.records) if a.records else sorted(glob.glob("results/mnist/mnist_cpu_*.json"))
    table = mnist.penalty_table(paths, orders=a.orders, n=a.n, progress=not a.no_progress)
    out = write_json(a.out, table)
    keys = [f"R{k}" for k in table["orders"]] + ["kinetic", "frobenius"]
    print(f"{'run':<42} {'test NFE':>8} " + " ".join(f"{k:>10}" for k in keys))
    for r in table["rows"]:
        print(f"{r['run']:<42} {r['test_nfe']:8.1f} " + " ".join(f"{r[k]:10.4g}" for k in keys))
    print(f"written: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taynode", description="Taylor-mode regularised neural ODEs: data, training, evaluation.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="manage the data cache")
    dsub = d.add_subparsers(dest="data_command", required=True)
    fetch = dsub.add_parser("fetch", help="fetch and verify every obtainable data set into data/")
    fetch.add_argument("--data-dir", default=None, help="cache root (default $TAYNODE_DATA or <repo>/data)")
    fetch.add_argument("--mirror", default=None, help="mirror directory (default $TAYNODE_MIRROR)")
    fetch.set_defaults(func=_cmd_data)

    tr = sub.add_parser("train", help="train a model and write its run record")
    tsub = tr.add_subparsers(dest="experiment", required=True)
    from .experiments.mnist import add_train_arguments

    tm = tsub.add_parser("mnist", help="MNIST ODE-Net (none | taylor | rnode)")
    add_train_arguments(tm)
    tm.set_defaults(func=_cmd_train)

    sw = sub.add_parser("sweep", help="train the runs a chapter shows, one after another (resumable)")
    swsub = sw.add_subparsers(dest="experiment", required=True)
    sm = swsub.add_parser("mnist", help="unregularised, R_2, R_3 and RNODE runs (taynode.experiments.mnist.CPU_SWEEP)")
    sm.add_argument("--preset", default="cpu")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--runs", choices=["full", "repeat"], default="full",
                    help="full: every run of CPU_SWEEP; repeat: the headline runs of CPU_REPEAT (other seeds)")
    sm.add_argument("--out", default="results/mnist")
    sm.add_argument("--ckpt-root", default="checkpoints")
    sm.add_argument("--no-progress", action="store_true")
    sm.set_defaults(func=_cmd_sweep)

    ev = sub.add_parser("eval", help="evaluate a saved model on the test split")
    esub = ev.add_subparsers(dest="experiment", required=True)
    em = esub.add_parser("mnist", help="evaluate an MNIST run record (.json) or checkpoint directory")
    em.add_argument("path")
    em.add_argument("--eval-test-size", type=int)
    em.add_argument("--eval-train-size", type=int)
    em.add_argument("--eval-rtol", type=float)
    em.add_argument("--eval-atol", type=float)
    em.add_argument("--json", action="store_true", help="also print every metric as JSON")
    em.set_defaults(func=_cmd_eval)

    pe = sub.add_parser("penalties", help="R_K at several K, kinetic and Frobenius of saved models, one table")
    pesub = pe.add_subparsers(dest="experiment", required=True)
    pm = pesub.add_parser("mnist", help="every MNIST run record given (default results/mnist/mnist_cpu_*.json)")
    pm.add_argument("records", nargs="*")
    pm.add_argument("--orders", type=int, nargs="+", default=[2, 3], help="the K of each R_K reported")
    pm.add_argument("--n", type=int, default=None, help="test images (default: each record's reg_examples)")
    pm.add_argument("--out", default="results/mnist/penalties_cpu.json")
    pm.add_argument("--no-progress", action="store_true")
    pm.set_defaults(func=_cmd_penalties)

    info = sub.add_parser("info", help="print machine facts and library versions")
    info.set_defaults(func=_cmd_info)

    t = sub.add_parser("toy", help="the Fig. 1 toy sweep (see python -m taynode.experiments.toy --help)", add_help=False)
    t.add_argument("rest", nargs=argparse.REMAINDER)
    t.set_defaults(func=_cmd_toy)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.func(a)
    except (ValueError, RuntimeError) as e:
        print(f"taynode: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
