"""Train, evaluate, reload and sweep any registered experiment (the verbs of the CLI)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu

from . import parallel
from .configs import config_from_dict
from .evaluation import METHOD_RTOL, PENALTY_ORDERS, cast_floats, evaluate, for_evaluation, metrics_diff, penalty_values
from .experiment import Experiment
from .machine import machine_info
from .objective import make_train_step
from .optim import make_optimizer
from .records import cpu_clock, cpu_use, load_record, provenance, save_record
from .train import LoopConfig, TrainingDiverged, equinox_message, fit, restore_checkpoint

__all__ = ["train", "diverged_path", "step_cost", "load_run", "sweep", "sweep_configs", "penalty_table",
           "summary_line", "enable_dtype", "evaluate_run", "error_line", "reevaluate", "compare_with_record"]


def enable_dtype(cfg) -> None:
    """Turn on float64 when the config trains or evaluates in it (the paper's tolerance needs it)."""
    if "float64" in (cfg.dtype, cfg.eval_dtype) and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def error_line(error: BaseException) -> str:
    """The one-line reason of an error: an equinox run-time error's own message (its text also holds stack
    traces and advice), else the first line of the error's text."""
    found = equinox_message(error)
    if found:
        return found
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def evaluate_run(exp: Experiment, cfg, params, data, validation: bool = False) -> dict:
    """`evaluate`, with `validation` also the validation loss (as `val_loss`, where the experiment has one).

    A model that cannot be evaluated (a run-time failure of an evaluation solve: max_steps reached, a
    non-finite state) gives `{"eval_failed": "<one-line reason>"}` instead, so that the training results
    of its run are still recorded.
    """
    try:
        metrics = evaluate(exp, cfg, params, data)
        val = exp.validation_loss(*for_evaluation(cfg, parallel.local_copy(params)), data) if validation else None
    except RuntimeError as e:
        return {"eval_failed": error_line(e)}
    if val is not None:
        metrics["val_loss"] = val
    return metrics


def train(exp: Experiment, cfg, *, data=None, out_dir=None, ckpt_root="checkpoints", resume: bool = False,
          progress: bool = True) -> dict:
    """Train, evaluate on the test split, and write the run record and final parameters.

    Checkpoints go to `ckpt_root/<run name>` every `cfg.checkpoint_every` steps; `resume`
    continues from the newest one exactly as the uninterrupted run would have.

    With several processes (`taynode.parallel.initialize_distributed`), every process runs this with
    the same arguments: each trains on its shards, all take part in the checkpoints (and every one can
    resume from them), each evaluates the model, and process 0 alone writes the record and the
    parameters.

    The record's `data` field is `exp.data_provenance(cfg)`: where the data come from, the raw
    files' sha256 and the settings that change the data. With `data` given, it still describes
    what `exp.load_data(cfg)` loads (as `sweep` passes); the given data are not inspected.

    **Returns** the run record (also written to `out_dir/<run name>.json`, default
    `results/<experiment>`, with the final parameters in `<run name>.msgpack` beside it).
    """
    enable_dtype(cfg)
    parallel.maybe_initialize_distributed()
    n_devices = parallel.device_count(cfg.devices, cfg.batch_size)
    mesh = parallel.make_mesh(n_devices)
    out_dir = Path(out_dir or Path("results") / exp.name)
    data = exp.load_data(cfg, progress=progress) if data is None else data
    data_used = exp.data_provenance(cfg)  # the data: source, raw files' sha256, the settings that change it
    t_wall = time.perf_counter()
    load_start, clock_start = os.getloadavg(), cpu_clock()
    head = provenance()  # the code that trains, even if the tree changes during the run
    arrays = exp.train_arrays(cfg, data)
    opt = make_optimizer(cfg)
    params = cast_floats(exp.init_params(cfg, jr.PRNGKey(cfg.seed)), cfg.dtype)
    state = parallel.replicate({"params": params, "opt_state": opt.init(params)}, mesh)
    step = make_train_step(exp, cfg, opt)
    name = exp.run_name(cfg)
    loop = LoopConfig(num_steps=cfg.num_steps, steps_per_epoch=cfg.steps_per_epoch, seed=cfg.seed,
                      log_every=max(1, min(10, cfg.num_steps // 10)), eval_every=cfg.eval_every,
                      checkpoint_every=cfg.checkpoint_every)

    ckpt_dir = Path(ckpt_root) / name
    main = parallel.is_main_process()
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / "config.json").write_text(json.dumps({"experiment": exp.name, **dataclasses.asdict(cfg)},
                                                         indent=2))
    eval_seconds = {}  # id(metrics) -> wall-clock of that evaluation (every reported metric, compilation included)

    def timed_eval(params, validation):
        t = time.perf_counter()
        metrics = evaluate_run(exp, cfg, params, data, validation=validation)
        eval_seconds[id(metrics)] = time.perf_counter() - t
        return metrics

    try:
        state, history, info = fit(
            state, step, lambda idx: parallel.shard_batch(jtu.tree_map(lambda a: a[idx], arrays), mesh),
            cfg.train_size, cfg.batch_size, loop, ckpt_dir=ckpt_dir, resume=resume,
            eval_fn=(lambda s: timed_eval(s["params"], True)) if cfg.eval_every else None,
            select="val_loss", progress=progress, desc=name,
        )
    except TrainingDiverged as e:
        if main:  # the failure is a result too: `diverged/<run name>.json` beside the records
            save_record(diverged_path(out_dir, name), {
                **head, "experiment": exp.name, "run": name, "wall_time_s": time.perf_counter() - t_wall,
                "diverged": {"cause": e.cause, "step": e.step, "epoch": e.epoch, "loss": str(e.loss),
                             "last_good_checkpoint": e.last_good, "message": str(e)},
                "resumed_from": e.resumed_from,
                "config": dataclasses.asdict(cfg),
                "data": data_used,
            })
        raise
    metrics = info["final_eval"] or timed_eval(state["params"], False)
    if info["best"] is not None:  # model selection: the evaluation with the lowest validation loss (checkpointed)
        state = {**state, "params": info["best"]["params"]}
        metrics = info["best"]["metrics"]
    params = parallel.local_copy(state["params"])
    params_path = out_dir / f"{name}.msgpack"
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        params_path.write_bytes(flax.serialization.to_bytes(params))
    record = {
        **head,
        "experiment": exp.name,
        "run": name,
        "wall_time_s": time.perf_counter() - t_wall,
        "train_time_s": info["train_time_s"],
        "iter_time_s": info["iter_time_s"],
        # wall-clock of the evaluation whose metrics are reported (None where it ran before a resume)
        "eval_time_s": eval_seconds.get(id(metrics)),
        "resumed_from": info["resumed_from"],
        "devices_used": n_devices,
        "processes": jax.process_count(),
        # model selection: the step whose parameters and metrics are reported (None: the final ones)
        "selected_step": info["best"]["step"] if info["best"] is not None else None,
        # 1-, 5- and 15-minute load averages when training started and ended: timings are only
        # comparable between runs that had the machine to themselves
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        # the mean cores busy with this run and with everything else while it trained and evaluated (this
        # process only: a resumed run's earlier part is not in it)
        "cpu_use": cpu_use(clock_start),
        "config": dataclasses.asdict(cfg),
        "data": data_used,
        "metrics": metrics,
        "history": history,
        "params_file": params_path.name,
    }
    record["cost"] = step_cost(exp, cfg, params, arrays, record)
    if main:
        save_record(out_dir / f"{name}.json", record)
    return record


def step_cost(exp: Experiment, cfg, params, arrays, record, repeats: int = 21) -> dict:
    """A training step's cost in f-evaluation units: `iter_time_s` over one evaluation of the field.

    The unit `f_eval_s` is the median time of one jitted forward evaluation of the experiment's
    field on the first training batch with the final parameters, measured in the training
    process right after training. `iter_f_units_per_nfe` divides by the mean training NFE of the
    logged steps: what one counted evaluation really cost, backward pass and regulariser included.
    """
    batch = jtu.tree_map(lambda a: jnp.asarray(a[: cfg.batch_size]), arrays)
    problem = exp.problem(cfg, params, exp.training_batch(cfg, batch, jr.PRNGKey(0)))
    field = jax.jit(lambda y, args: problem.field(problem.t0, y, args))
    jax.block_until_ready(field(problem.y0, problem.args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(field(problem.y0, problem.args))
        times.append(time.perf_counter() - t)
    f_eval_s = sorted(times)[len(times) // 2]
    nfes = [h["nfe"] for h in record["history"] if "nfe" in h]
    units = record["iter_time_s"] / f_eval_s
    return {"f_eval_s": f_eval_s, "iter_f_units": units,
            "train_nfe_mean": sum(nfes) / len(nfes) if nfes else None,
            "iter_f_units_per_nfe": units / (sum(nfes) / len(nfes)) if nfes else None}


def load_run(exp: Experiment, path):
    """`(config, params, record)` from a run record (.json) or a checkpoint directory (record None)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist: pass a run record (.json) or a checkpoint directory")
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.exists():
            raise ValueError(f"{path} has no config.json: pass a run record (.json) or a checkpoint directory "
                             "written by taynode train")
        values = json.loads(config_file.read_text())
        _check_experiment(exp, values.pop("experiment", exp.name), path)
        cfg = config_from_dict(exp.Config, values)
        enable_dtype(cfg)
        params = cast_floats(exp.init_params(cfg, jr.PRNGKey(0)), cfg.dtype)
        opt = make_optimizer(cfg)
        state, _ = restore_checkpoint(path, {"params": params, "opt_state": opt.init(params)})
        return cfg, state["params"], None
    if path.suffix != ".json":
        raise ValueError(f"{path}: expected a run record (.json) or a checkpoint directory")
    record = load_record(path)
    _check_experiment(exp, record["experiment"], path)
    cfg = config_from_dict(exp.Config, record["config"])
    enable_dtype(cfg)
    template = exp.init_params(cfg, jr.PRNGKey(0))
    params = flax.serialization.from_bytes(template, (path.parent / record["params_file"]).read_bytes())
    return cfg, params, record


def reevaluate(exp: Experiment, cfg, params, record, data) -> dict:
    """The metrics of a saved model as its record has them: `evaluate`, plus the validation loss where the
    record kept one (a run with model selection). **Raises** `RuntimeError` if an evaluation solve fails."""
    if record is not None and "val_loss" in record["metrics"]:
        metrics = evaluate_run(exp, cfg, params, data, validation=True)
        if "eval_failed" in metrics:
            raise RuntimeError(f"the evaluation of {record['run']} failed: {metrics['eval_failed']}")
        return metrics
    return evaluate(exp, cfg, params, data)


def compare_with_record(cfg, metrics: dict, record: dict) -> dict:
    """How re-evaluated `metrics` compare with a record's.

    Exactly (rtol 0) when R_K is computed by the record's Taylor method, on the record's device and process
    layout, on a CPU of the record's model and vector instruction sets; else to `METHOD_RTOL`, with the
    reason (XLA compiles for the host's instruction set, so another CPU may vectorise a sum differently
    and round its last bit otherwise; a record made before records named the instruction sets counts as
    made on another CPU). Metrics that agree exactly are reported so whatever the reason.
    **Returns** `{"same", "rtol", "why", "differences"}`, `differences` as `metrics_diff` gives them
    (empty when `same`).
    """
    recorded = config_from_dict(type(cfg), record["config"]).taylor_method
    devices, recorded_devices = parallel.device_count(cfg.devices, cfg.batch_size), record.get("devices_used", 1)
    # reductions across processes (gloo) round differently from those inside one process
    same_layout = devices == recorded_devices and record.get("processes", 1) == jax.process_count()
    here, there = machine_info(), record.get("machine", {})
    same_cpu = (here["cpu"], here["isa"]) == (there.get("cpu"), there.get("isa"))
    metrics = json.loads(json.dumps(metrics))
    exact = metrics_diff(metrics, record["metrics"])
    if not exact or (recorded == cfg.taylor_method and same_layout and same_cpu):
        return {"same": not exact, "rtol": 0.0, "why": "", "differences": exact}
    why = (f"R_K by {cfg.taylor_method}, the record's by {recorded}" if recorded != cfg.taylor_method else
           f"sharded over {devices} device(s) in {jax.process_count()} process(es), the record's over "
           f"{recorded_devices} in {record.get('processes', 1)}" if not same_layout else
           f"evaluated on {here['cpu']!r}, the record on {there.get('cpu')!r}" if here["cpu"] != there.get("cpu") else
           "the record does not name its CPU's vector instruction sets" if there.get("isa") is None else
           f"evaluated with {' '.join(here['isa'] or ['?'])}, the record with {' '.join(there['isa'])}")
    differences = metrics_diff(metrics, record["metrics"], METHOD_RTOL)
    return {"same": not differences, "rtol": METHOD_RTOL, "why": why, "differences": differences}


def _check_experiment(exp, name, path):
    if name != exp.name:
        raise ValueError(f"{path} is a {name} run, not {exp.name}: use taynode eval {name} {path}")


def summary_line(exp: Experiment, run: str, metrics: dict) -> str:
    """One console line: task metrics, NFE and penalties (or why the evaluation failed)."""
    if "eval_failed" in metrics:
        return f"{run}: evaluation failed (training results recorded): {metrics['eval_failed']}"
    pen = metrics["penalties"]
    nfe = metrics["test_nfe"]
    return (f"{run}: {exp.summary(metrics)}  test NFE {nfe:.1f} (joint, batch {metrics['eval_sizes']['nfe_batch']}) / "
            f"{metrics['test_nfe_per_example']:.1f} (per example)  "
            + "  ".join(f"{k} {v:.4g}" for k, v in pen.items()))


def diverged_path(out_dir, run_name: str) -> Path:
    """Where the record of a run whose loss or gradient became non-finite, or whose training solve failed, goes:
    `<out_dir>/diverged/<run name>.json` (a folder of its own, so that the finished runs'
    `<out_dir>/*.json` do not include it)."""
    return Path(out_dir) / "diverged" / f"{run_name}.json"


def sweep_configs(exp: Experiment, preset: str, runs: str, seeds=None) -> list:
    """The configs of sweep `runs` of `exp` at `preset` (`seeds` replaces the sweep's own seeds)."""
    if runs not in exp.sweeps:
        raise ValueError(f"runs must be one of {sorted(exp.sweeps)} for {exp.name}, got {runs!r}")
    overrides = exp.sweeps[runs]
    if seeds is not None:
        base = [{k: v for k, v in o.items() if k != "seed"} for o in overrides]
        unique = [dict(t) for t in dict.fromkeys(tuple(sorted(o.items())) for o in base)]
        overrides = [{**o, "seed": s} for s in seeds for o in unique]
    return [exp.config(preset, **o) for o in overrides]


def sweep(exp: Experiment, preset: str = "cpu", runs: str = "full", seeds=None, out_dir=None,
          ckpt_root="checkpoints", progress: bool = True) -> list[Path]:
    """Train every run of a sweep in turn; skip those whose record exists, resume the rest.

    Safe to kill and restart: finished runs are kept, the interrupted one resumes from its
    newest checkpoint. A run whose loss or gradient becomes non-finite, or whose training solve fails
    (it reaches its `max_steps`), leaves `diverged/<run name>.json` and the sweep goes on; a later sweep skips it
    (delete that record to try it again).
    **Returns** the paths of the finished runs' records.
    """
    out_dir = Path(out_dir or Path("results") / exp.name)
    data = None
    done = []
    for cfg in sweep_configs(exp, preset, runs, seeds):
        path = out_dir / f"{exp.run_name(cfg)}.json"
        diverged = diverged_path(out_dir, exp.run_name(cfg))
        if path.exists():
            print(f"{path}: exists, skipped", flush=True)
        elif diverged.exists():
            print(f"{diverged}: this run diverged before, skipped (delete that record to try it again)", flush=True)
            continue
        else:
            enable_dtype(cfg)
            data = exp.load_data(cfg, progress=progress) if data is None else data
            try:
                record = train(exp, cfg, data=data, out_dir=out_dir, ckpt_root=ckpt_root, resume=True,
                               progress=progress)
            except TrainingDiverged as e:
                print(f"{exp.run_name(cfg)}: {e}; record: {diverged}", flush=True)
                continue
            print(summary_line(exp, record["run"], record["metrics"]), flush=True)
        done.append(path)
    return done


def penalty_table(exp: Experiment, paths, orders=PENALTY_ORDERS, n: int | None = None, data=None,
                  progress: bool = True) -> dict:
    """`penalty_values` of the final model of every run record in `paths`, as one comparable table.

    Returns a record (provenance, one row per run) ready for `save_record`.
    """
    from tqdm.auto import tqdm

    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError(f"paths: no run records given; pass results/{exp.name}/<run>.json")
    for p in paths:
        if not p.exists():
            raise ValueError(f"{p} does not exist: pass a run record (.json) or a checkpoint directory")
    head = provenance()
    rows, t0 = [], time.perf_counter()
    for p in tqdm(paths, desc="penalties", disable=not progress):
        cfg, params, record = load_run(exp, p)
        cfg = dataclasses.replace(cfg, devices=0)  # this machine's devices, not those the run trained on
        data = exp.load_data(cfg, progress=False) if data is None else data
        vals = penalty_values(exp, cfg, params, data, orders=orders, n=n)
        rows.append({"run": record["run"] if record else str(p), "record": p.name,
                     "test_nfe": record["metrics"]["test_nfe"] if record else None, **vals})
    return {**head, "experiment": f"{exp.name}_penalties", "wall_time_s": time.perf_counter() - t0,
            "orders": sorted({int(k) for k in orders}), "rows": rows}

