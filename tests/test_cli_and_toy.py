"""The CLI built from the experiment registry, and the toy through the shared loop."""

import dataclasses
import json

import pytest

from taynode.cli import build_parser, main
from taynode.experiments import REGISTRY

TOY = REGISTRY["toy"]


def test_cli_errors_are_one_line(capsys):
    assert main(["train", "mnist", "--preset", "smoke", "--reg", "taylor", "--lam", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "taynode: error: lam must be a number >= 0, got -1.0"
    assert main(["train", "mnist", "--preset", "nope"]) == 2
    assert "preset must be one of" in capsys.readouterr().err
    for cmd in (["eval", "mnist", "no/such/run.json"], ["penalties", "mnist", "no/such/run.json"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert err == ("taynode: error: no/such/run.json does not exist: pass a run record (.json) "
                       "or a checkpoint directory")
    assert main(["sweep", "toy", "--runs", "nope"]) == 2
    assert capsys.readouterr().err.strip() == ("taynode: error: runs must be one of ['full', 'heuristics', 'rq2', "
                                               "'rq2_seeds'] for toy, got 'nope'")


def test_cli_unknown_command_exits():
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_help_lists_every_experiment():
    lines = [line.split() for line in build_parser().format_help().splitlines()]
    for name, exp in REGISTRY.items():
        assert [name, *exp.description.split()] in lines


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_train_flags_are_the_config_fields(name):
    exp = REGISTRY[name]
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["train"]._subparsers._group_actions[0].choices[name]
    flags = {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
    fields = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(exp.Config)}
    assert flags - {"--help"} == fields | {"--resume", "--out", "--ckpt-root", "--no-progress"}
    # every field flag parses into that field's override, typed like its default
    a = parser.parse_args(["train", name, "--lr", "0.5", "--epochs", "3", "--lr-values", "0.1", "0.01",
                           "--lr-boundaries", "1"])
    assert (a.lr, a.epochs, a.lr_values, a.lr_boundaries) == (0.5, 3, [0.1, 0.01], [1.0])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_default_config_is_its_preset(name):
    exp = REGISTRY[name]
    cfg = exp.Config()
    assert cfg == exp.config(cfg.preset) == exp.config()
    assert set(exp.presets) == {"smoke", "cpu", "gpu", "paper"}
    for preset in exp.presets:
        assert exp.config(preset).preset == preset


@pytest.mark.parametrize("field,value,match", [("epochs", 0, "epochs must be an int >= 1"),
                                               ("lam", -0.5, "lam must be a number >= 0"),
                                               ("lr", 0.0, "lr must be a positive number"),
                                               ("width", 0, "width must be an int >= 1")])
def test_toy_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        TOY.config("smoke", **{field: value})


@pytest.mark.slow
def test_toy_trains_evaluates_and_sweeps_through_the_cli(tmp_path, capsys):
    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    args = ["--reg", "taylor", "--lam", "1e-2", "--epochs", "20", "--eval-rtol", "1e-6", "--eval-atol", "1e-6"]
    assert main(["train", "toy", "--preset", "smoke", *args, "--out", out, "--ckpt-root", ckpt, "--no-progress"]) == 0
    path = tmp_path / "out" / "toy_smoke_taylor_K3_lam0.01_seed0.json"
    record = json.loads(path.read_text())
    assert record["experiment"] == "toy" and record["config"]["epochs"] == 20
    assert record["eval_time_s"] > 0  # the prediction time of the test split
    assert record["cpu_use"]["own_cores_used"] > 0 and record["cpu_use"]["cores"] >= 1  # what else ran beside it
    # the data it saw: the 32 evenly spaced points of the smoke preset in [-1, 1], no files
    cfg = TOY.config("smoke", reg="taylor", lam=1e-2, epochs=20, eval_rtol=1e-6, eval_atol=1e-6)
    assert record["data"] == TOY.data_provenance(cfg)
    assert record["data"]["files"] == {} and record["data"]["settings"] == {"train_size": 32, "z_range": 1.0}
    assert [h["step"] for h in record["history"]] == [2 * i for i in range(1, 11)]
    capsys.readouterr()
    assert main(["eval", "toy", str(path)]) == 0
    assert "matches the record" in capsys.readouterr().out

    # check-records: the same re-evaluation over a folder, as a table that a second call does not redo
    table = tmp_path / "checks.json"
    assert main(["check-records", out, "--out", str(table), "--no-progress"]) == 0
    assert "1 of 1 records reproduced (1 exactly, 0 to rtol)" in capsys.readouterr().out
    (row,) = json.loads(table.read_text())["rows"]
    assert (row["path"], row["same"], row["rtol"], row["differences"]) == (str(path), True, 0.0, [])
    assert row["data"] == record["data"]  # the data the check evaluated on, as the loader describes it
    assert main(["check-records", out, "--out", str(table), "--no-progress"]) == 0
    assert json.loads(table.read_text())["rows"] == [row]  # unchanged record: its row is kept as it was
    # a record whose metric was edited is checked again and fails, naming the metric and both values
    edited = json.loads(path.read_text())
    edited["metrics"]["mse"] *= 1.5
    path.write_text(json.dumps(edited))
    assert main(["check-records", out, "--out", str(table), "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert f"differs: {path}: mse: {record['metrics']['mse']!r} here, {edited['metrics']['mse']!r}" \
        in printed and "0 of 1 records reproduced" in printed
    (row,) = json.loads(table.read_text())["rows"]
    assert not row["same"] and row["n_differences"] == 1 and row["differences"][0]["rel"] == pytest.approx(1 / 3)
    assert main(["eval", "toy", str(path), "--check"]) == 2
    assert "mse: " in capsys.readouterr().out


def test_sweep_skips_finished_runs(tmp_path, capsys):
    from taynode.runner import sweep, sweep_configs

    cfgs = sweep_configs(TOY, "smoke", "full", seeds=[4])
    assert [(c.reg, c.lam, c.seed) for c in cfgs] == [("none", 0.0, 4)] + [("taylor", lam, 4)
                                                                          for lam in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)]
    for c in cfgs:  # every run already has a record
        (tmp_path / f"{TOY.run_name(c)}.json").write_text("{}")
    done = sweep(TOY, "smoke", "full", seeds=[4], out_dir=tmp_path, progress=False)
    assert [p.name for p in done] == [f"{TOY.run_name(c)}.json" for c in cfgs]
    assert capsys.readouterr().out.count("exists, skipped") == 6


@pytest.mark.slow
def test_a_diverged_run_leaves_a_record_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    import jax.numpy as jnp

    from taynode import runner

    real = runner.make_train_step

    def loss_nan_at_step_3(exp, cfg, opt, *args):
        step = real(exp, cfg, opt, *args)

        def wrapped(state, batch, key, i):
            new, m = step(state, batch, key, i)
            return new, {**m, "loss": jnp.where(i == 3, jnp.nan, m["loss"])}

        return wrapped

    monkeypatch.setattr(runner, "make_train_step", loss_nan_at_step_3)
    cfgs = runner.sweep_configs(TOY, "smoke", "full", seeds=[4])
    for c in cfgs[1:]:  # every run but the first is finished
        (tmp_path / f"{TOY.run_name(c)}.json").write_text("{}")
    kw = dict(seeds=[4], out_dir=tmp_path, ckpt_root=tmp_path / "ckpt", progress=False)
    done = runner.sweep(TOY, "smoke", "full", **kw)
    name = TOY.run_name(cfgs[0])
    record = json.loads(runner.diverged_path(tmp_path, name).read_text())
    assert runner.diverged_path(tmp_path, name) == tmp_path / "diverged" / f"{name}.json"
    assert record["run"] == name and record["config"]["seed"] == 4 and "git_commit" in record
    assert record["diverged"]["step"] == 3 and record["diverged"]["loss"] == "nan"
    assert record["resumed_from"] is None  # trained from scratch
    assert not (tmp_path / f"{name}.json").exists()
    assert [p.name for p in done] == [f"{TOY.run_name(c)}.json" for c in cfgs[1:]]  # the sweep went on
    capsys.readouterr()
    runner.sweep(TOY, "smoke", "full", **kw)  # and a later sweep does not train it again
    assert "diverged before, skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_a_training_solve_that_reaches_max_steps_is_recorded_as_diverged(tmp_path):
    """A real solver failure (max_steps too small for the toy's solve), not an injected one."""
    from taynode import runner
    from taynode.train import TrainingDiverged

    cfg = TOY.config("smoke", max_steps=2)
    with pytest.raises(TrainingDiverged, match="training solve failed at step 0") as info:
        runner.train(TOY, cfg, out_dir=tmp_path, ckpt_root=tmp_path / "ckpt", progress=False)
    assert info.value.cause == "solver" and info.value.loss is None and info.value.last_good is None
    record = json.loads(runner.diverged_path(tmp_path, TOY.run_name(cfg)).read_text())
    d = record["diverged"]
    assert d["cause"] == "solver" and d["step"] == 0 and d["epoch"] == 0 and "max_steps=2" in d["message"]
    assert record["data"] == TOY.data_provenance(cfg)
    assert not (tmp_path / f"{TOY.run_name(cfg)}.json").exists()


def test_write_json_creates_parent_and_leaves_no_temporary(tmp_path):
    from taynode.paths import write_json

    path = write_json(tmp_path / "a" / "b" / "rec.json", {"x": [1, 2.5], "s": "λ"})
    assert json.loads(path.read_text()) == {"x": [1, 2.5], "s": "λ"}
    write_json(path, {"x": 3})  # overwrite in place
    assert json.loads(path.read_text()) == {"x": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["rec.json"]


@pytest.mark.parametrize("spec,want", [
    ("mnist:reg=none", ("mnist", {"reg": "none"})),
    ("mnist:reg=taylor,order=2,lam=1", ("mnist", {"reg": "taylor", "order": "2", "lam": "1"})),
    ("toy", ("toy", {})),
])
def test_gpu_run_specs_parse(spec, want):
    from taynode.gpu_runner import parse_run

    assert parse_run(spec) == want


@pytest.mark.parametrize("spec", [":reg=none", "mnist:reg", "mnist:=1"])
def test_bad_gpu_run_spec_is_a_one_line_error(spec):
    from taynode.gpu_runner import parse_run

    with pytest.raises(ValueError, match="runs: "):
        parse_run(spec)


@pytest.mark.slow
def test_rq2_lambdas_put_weight_c_on_the_initial_penalty():
    """λ_K = c / R_K(θ0): RK_INIT against R_K of the seed-0 initial field, recomputed."""
    import jax

    from taynode.evaluation import penalty_values
    from taynode.experiments.toy import RK_INIT, RQ2_C, SWEEPS, rq2_lam
    from taynode.runner import enable_dtype

    cfg = TOY.config("cpu")
    enable_dtype(cfg)
    params = TOY.init_params(cfg, jax.random.PRNGKey(cfg.seed))
    values = penalty_values(TOY, cfg, params, TOY.load_data(cfg), orders=tuple(RK_INIT))
    for k, r0 in RK_INIT.items():
        assert values[f"R{k}"] == pytest.approx(r0, rel=2e-3), k
        for c in RQ2_C:
            assert 0.5 <= rq2_lam(k, c) * values[f"R{k}"] / c <= 1.5, (k, c)
    runs = SWEEPS["rq2"]
    assert len({tuple(sorted(r.items())) for r in runs}) == len(runs) == 4 + 4 * 6 * len(RQ2_C)


def test_toy_nfe_is_null_where_the_solver_runs_out_of_steps():
    import jax

    from taynode.runner import enable_dtype

    cfg = TOY.config("cpu", solver="heun", max_steps=200, eval_rtol=1e-3, eval_atol=1e-3)
    enable_dtype(cfg)
    params = TOY.init_params(cfg, jax.random.PRNGKey(0))
    nfe = TOY.metrics(cfg, params, TOY.load_data(cfg))["nfe_by_tol"]
    assert isinstance(nfe["0.0001"], int) and 2 < nfe["0.0001"] <= 2 * 200 + 1
    assert nfe["1e-10"] is None


def _rq2_record(solver, order, c, mse, nfe):
    from taynode.experiments.toy import RK_INIT, rq2_lam

    reg = dict(reg="none", order=3, lam=0.0) if order == 0 else dict(reg="taylor", order=order, lam=rq2_lam(order, c))
    tols = {"0.0001": nfe // 4, "1e-06": nfe // 2, "1.4e-08": nfe if solver != "heun" else None,
            "1e-10": 2 * nfe if solver == "dopri5" else None}
    assert RK_INIT
    return {"experiment": "toy", "config": {"solver": solver, **reg},
            "metrics": {"mse": mse, "test_nfe": nfe // 3, "nfe_by_tol": tols}}


def test_rq2_frame_judges_each_solver_at_its_tightest_tolerance_and_finds_the_best_k():
    from taynode.verdicts import best_orders, rq2_frame

    recs = [_rq2_record("heun", 0, 0, 1e-5, 400), _rq2_record("heun", 2, 0.1, 1e-5, 80),
            _rq2_record("heun", 3, 0.1, 1e-5, 80), _rq2_record("heun", 1, 0.1, 5e-3, 40),
            _rq2_record("dopri5", 0, 0, 1e-5, 100), _rq2_record("dopri5", 5, 1e-3, 1e-5, 60),
            _rq2_record("dopri5", 2, 0.1, 1e-5, 70)]
    frame = rq2_frame(recs)
    assert dict(zip(frame["solver"], frame["tol"])) == {"heun": 1e-6, "dopri5": 1e-10}
    assert list(frame["weight"]) == [0.0, 0.1, 0.1, 0.1, 0.0, 1e-3, 0.1]
    assert list(frame["nfe"]) == [200, 40, 40, 20, 200, 120, 140]
    best = best_orders(frame, fit_max=1e-3)
    assert best.loc["heun", "best_k"] == (2, 3) and best.loc["heun", "best_nfe"] == 40  # K=1 does not fit
    assert best.loc["dopri5", "best_k"] == (5,) and best.loc["dopri5", "unreg_nfe"] == 200
    with pytest.raises(ValueError, match="records is empty"):
        rq2_frame([])
    with pytest.raises(ValueError, match="one unregularised row for heun"):
        best_orders(frame[frame["order"] > 0], fit_max=1e-3)


def test_rq2_seed_sweep_repeats_the_best_orders_of_the_committed_grid():
    """RQ2_BEST (the settings repeated at seeds 1 and 2) is what the committed seed-0 grid says is best."""
    from taynode.experiments.toy import RQ2_BEST, RQ2_C, weight_c
    from taynode.paths import RESULTS
    from taynode.records import load_record
    from taynode.verdicts import best_orders, rq2_frame

    recs = [load_record(p) for p in sorted((RESULTS / "toy" / "rq2").glob("toy_*seed0.json"))]
    frame = rq2_frame(recs)
    best = best_orders(frame, fit_max=1e-3)
    assert {s: tuple(best.loc[s, "best_k"]) for s in best.index} == RQ2_BEST
    fits = frame[(frame["order"] > 0) & (frame["fit"] <= 1e-3)]
    for s in RQ2_BEST:
        winners = fits[(fits["solver"] == s) & (fits["nfe"] == best.loc[s, "best_nfe"])]
        assert set(winners["weight"]) == {RQ2_C[0]}
    cfgs = sweep_configs_of("rq2_seeds")
    assert sorted({c.seed for c in cfgs}) == [1, 2] and len(cfgs) == 2 * (4 + 5)
    assert all(weight_c(dataclasses.asdict(c)) in (0.0, RQ2_C[0]) for c in cfgs)


def sweep_configs_of(runs):
    from taynode.runner import sweep_configs

    return sweep_configs(TOY, "cpu", runs)


def test_compare_with_record_exact_only_on_the_records_cpu():
    """A record is reproduced exactly on a CPU of its own model and vector instruction sets; elsewhere (XLA
    compiles for the host's instruction set) a last-bit difference passes at METHOD_RTOL, with the reason,
    and a real one fails; metrics that agree exactly are reported exact anywhere."""
    from taynode.evaluation import METHOD_RTOL
    from taynode.machine import machine_info
    from taynode.runner import compare_with_record

    cfg = TOY.config("smoke")
    here = machine_info()
    recorded = {"mse": 0.49834588857278755, "test_nfe": 26.0}
    last_bit = {"mse": 0.4983458885727876, "test_nfe": 26.0}  # 1.1e-16 apart, as two CPUs gave
    assert last_bit["mse"] != recorded["mse"]

    def record(**machine):
        return {"config": dataclasses.asdict(cfg), "metrics": recorded, "machine": machine}

    mine = dict(cpu=here["cpu"], isa=here["isa"])
    same = compare_with_record(cfg, last_bit, record(**mine))
    assert (same["same"], same["rtol"], same["why"]) == (False, 0.0, "")
    assert same["differences"][0]["key"] == "mse"
    for machine, why in (
        (dict(cpu="Another CPU model", isa=here["isa"]),
         f"evaluated on {here['cpu']!r}, the record on 'Another CPU model'"),
        (dict(cpu=here["cpu"]), "the record does not name its CPU's vector instruction sets"),
        (dict(cpu=here["cpu"], isa=["avx", "avx512f"]),
         f"evaluated with {' '.join(here['isa'] or ['?'])}, the record with avx avx512f"),
    ):
        other = compare_with_record(cfg, last_bit, record(**machine))
        assert (other["same"], other["rtol"], other["why"]) == (True, METHOD_RTOL, why)
        far = compare_with_record(cfg, {**last_bit, "mse": recorded["mse"] * (1 + 10 * METHOD_RTOL)}, record(**machine))
        assert not far["same"] and far["differences"][0]["key"] == "mse"
        exact = compare_with_record(cfg, dict(recorded), record(**machine))
        assert (exact["same"], exact["rtol"], exact["why"]) == (True, 0.0, "")
