"""MNIST experiment: model shapes, a training step, config validation, record round trip."""

import json

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from taynode.evaluation import evaluate, penalty_values
from taynode.experiments import REGISTRY
from taynode.models import MNISTDynamics, MNISTHead
from taynode.objective import make_train_step
from taynode.optim import make_optimizer
from taynode.runner import load_run, penalty_table, train

EXP = REGISTRY["mnist"]


def synthetic(n_train=200, n_test=100, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n_train + n_test).astype(np.uint8)
    # images with a label-dependent bright stripe, so the classes are learnable
    images = rng.integers(0, 60, (n_train + n_test, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 + 2 * c : 4 + 2 * c, :] = 255
    return {"train_images": images[:n_train], "train_labels": labels[:n_train],
            "test_images": images[n_train:], "test_labels": labels[n_train:]}


def tiny(**kw):
    base = dict(epochs=1, train_size=200, batch_size=20, eval_test_size=100, eval_train_size=100,
                nfe_examples=40, nfe_per_example=3, reg_examples=40, rtol=1e-4, atol=1e-4,
                eval_rtol=1e-6, eval_atol=1e-6, checkpoint_every=5)
    return EXP.config("smoke", **{**base, **kw})


def test_model_shapes_and_size():
    cfg = tiny()
    params = EXP.init_params(cfg, jr.PRNGKey(0))
    x = jnp.zeros((7, 784))
    assert MNISTDynamics().apply(params["dyn"], 0.5, x).shape == (7, 784)
    assert MNISTHead().apply(params["head"], x).shape == (7, 10)
    n = sum(p.size for p in jax.tree_util.tree_leaves(params))
    # dynamics (785·100 + 100) + (101·784 + 784), head 784·10 + 10
    assert n == (785 * 100 + 100) + (101 * 784 + 784) + (784 * 10 + 10)


@pytest.mark.parametrize("reg,kw", [("none", {}), ("taylor", {"lam": 1e-2, "order": 2}),
                                     ("rnode", {"lam_kin": 1e-2, "lam_fro": 1e-2})])
def test_one_step_lowers_loss_on_fixed_batch(reg, kw):
    cfg = tiny(reg=reg, optimizer="sgd", lr=0.05, lr_values=(), lr_boundaries=(), **kw)
    data = synthetic()
    x = jnp.asarray(data["train_images"][:20].reshape(20, 784) / 255.0)
    y = jnp.asarray(data["train_labels"][:20].astype(np.int32))
    opt = make_optimizer(cfg)
    params = EXP.init_params(cfg, jr.PRNGKey(0))
    state = {"params": params, "opt_state": opt.init(params)}
    step = make_train_step(EXP, cfg, opt)
    key, i = jr.PRNGKey(1), jnp.asarray(0)
    state1, m0 = step(state, (x, y), key, i)
    _, m1 = step(state1, (x, y), key, i)
    assert float(m1["loss"]) < float(m0["loss"])
    if reg != "none":
        assert float(m0["reg"]) > 0


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"preset": "nope"}, "preset must be one of"),
        ({"reg": "taylor", "lam": -1.0}, "lam must be a number >= 0"),
        ({"reg": "taylor", "lam": 1.0, "order": 0}, "order must be an int >= 1"),
        ({"solver": "rk45"}, "solver must be one of"),
        ({"reg": "l2"}, "reg must be one of"),
        ({"reg": "taylor"}, "lam must be > 0 with reg='taylor'"),
        ({"lam": 0.1}, r"lam only applies to reg in \('taylor', 'ernode', 'srnode'\)"),
        ({"reg": "rnode", "lam_kin": -2.0}, "lam_kin must be a number >= 0"),
        ({"rtol": 0.0}, "rtol must be a positive number"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"rtol": 1e-8, "atol": 1e-8}, "need dtype='float64'"),
        ({"lr": 0.05}, r"lr \(0.05\) must equal lr_values\[0\] \(0.1\)"),
        ({"bogus_field": 1}, "unknown config field"),
    ],
)
def test_config_validation(kw, match):
    kw = dict(kw)
    preset = kw.pop("preset", "cpu")
    with pytest.raises(ValueError, match=match):
        EXP.config(preset, **kw)


@pytest.mark.slow
def test_train_evaluate_and_reload(tmp_path):
    cfg = tiny(reg="taylor", lam=1e-3, order=2, optimizer="adam", lr=1e-2, lr_values=(), lr_boundaries=())
    data = synthetic()
    record = train(EXP, cfg, data=data, out_dir=tmp_path / "out", ckpt_root=tmp_path / "ckpt", progress=False)
    m = record["metrics"]
    for key in ("train_acc", "test_acc", "test_loss", "test_nfe", "test_nfe_per_example"):
        assert np.isfinite(m[key]), key
    assert sorted(m["penalties"]) == ["R2", "R3", "frobenius", "kinetic"]
    assert all(np.isfinite(v) and v > 0 for v in m["penalties"].values())
    assert all(n >= 8 and (n - 2) % 6 == 0 for n in m["test_nfe_batches"])  # Dopri5: 2 + 6 · steps
    on_disk = json.loads((tmp_path / "out" / f"{record['run']}.json").read_text())
    for key in ("schema", "git_commit", "source_dirty", "dirty_paths", "machine", "versions", "wall_time_s",
                "train_time_s", "iter_time_s", "config", "metrics", "history"):
        assert key in on_disk
    assert on_disk["config"]["reg"] == "taylor" and on_disk["config"]["lam"] == 1e-3
    cfg2, params, _ = load_run(EXP, tmp_path / "out" / f"{record['run']}.json")
    assert cfg2 == cfg
    again = json.loads(json.dumps(evaluate(EXP, cfg2, params, data)))
    assert again == on_disk["metrics"]  # every metric reproduced exactly from the saved parameters
    # the checkpoint directory can be evaluated too
    cfg3, params3, _ = load_run(EXP, tmp_path / "ckpt" / record["run"])
    assert evaluate(EXP, cfg3, params3, data)["test_acc"] == m["test_acc"]
    # the penalty table evaluates the same penalties of the saved model in the same way
    table = penalty_table(EXP, [tmp_path / "out" / f"{record['run']}.json"], orders=(3, 2), data=data,
                          progress=False)
    assert table["orders"] == [2, 3] and table["rows"][0]["run"] == record["run"]
    for k in ("R2", "R3", "kinetic", "frobenius"):
        assert table["rows"][0][k] == m["penalties"][k]


def test_penalty_values_match_quadrature_of_a_dense_solution():
    """R_2, kinetic and Frobenius of a model against Simpson quadrature of a plain diffrax solution."""
    import diffrax

    from taynode.models import as_field
    from taynode.regularizers import JacobianFrobenius

    cfg = tiny(eval_rtol=1e-10, eval_atol=1e-10)
    params = EXP.init_params(cfg, jr.PRNGKey(3))
    params = jax.tree_util.tree_map(lambda p: 3.0 * p, params)  # livelier dynamics than at init
    data = synthetic(n_train=10, n_test=5)
    vals = penalty_values(EXP, cfg, params, data, orders=(2,), n=5)
    assert vals["n"] == 5

    x = jnp.asarray(data["test_images"].reshape(5, 784) / 255.0)
    f = as_field(MNISTDynamics())
    ts = jnp.linspace(0.0, 1.0, 201)
    sol = diffrax.diffeqsolve(diffrax.ODETerm(f), diffrax.Dopri5(), 0.0, 1.0, 0.01, x, args=params["dyn"],
                              saveat=diffrax.SaveAt(ts=ts),
                              stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-11))
    eps = JacobianFrobenius(jr.PRNGKey(0)).epsilon(x)

    def integrands(t, z):
        fz = f(t, z, params["dyn"])
        # z'' = ∂f/∂t + ∂f/∂z · f, by one jvp in (t, z) along (1, f)
        _, z2 = jax.jvp(lambda tt, zz: f(tt, zz, params["dyn"]), (t, z), (jnp.ones_like(t), fz))
        _, jeps = jax.jvp(lambda zz: f(t, zz, params["dyn"]), (z,), (eps,))
        return jnp.stack([jnp.mean(z2**2), jnp.mean(fz**2), jnp.mean(jeps**2)])

    g = jax.vmap(integrands)(ts, sol.ys)  # (201, 3), each a mean over examples and dimensions
    h = ts[1] - ts[0]
    simpson = h / 3 * (g[0] + g[-1] + 4 * g[1:-1:2].sum(0) + 2 * g[2:-1:2].sum(0))
    np.testing.assert_allclose([vals["R2"], vals["kinetic"], vals["frobenius"]], np.asarray(simpson), rtol=1e-6)
    assert vals["R2"] > 1e-6  # the check is not trivially 0 = 0


@pytest.mark.parametrize("kw,match", [({"orders": ()}, "orders"), ({"orders": (0,)}, "orders"), ({"n": 0}, "n must")])
def test_penalty_values_rejects_bad_arguments(kw, match):
    cfg = tiny()
    params = EXP.init_params(cfg, jr.PRNGKey(0))
    with pytest.raises(ValueError, match=match):
        penalty_values(EXP, cfg, params, synthetic(n_train=10, n_test=5), **kw)


@pytest.mark.slow
def test_rq2_lambdas_are_one_over_the_unregularised_penalties():
    """λ_K = 1 / R_K of the committed unregularised cpu model: RK_UNREG recomputed on MNIST."""
    import dataclasses

    from taynode.experiments.mnist import RK_UNREG, SWEEPS
    from taynode.paths import RESULTS

    cfg, params, _ = load_run(EXP, RESULTS / "mnist" / "short" / "mnist_cpu_none_seed0.json")
    cfg = dataclasses.replace(cfg, eval_rtol=1e-6, eval_atol=1e-6)
    values = penalty_values(EXP, cfg, params, EXP.load_data(cfg, progress=False), orders=tuple(RK_UNREG), n=100)
    for k, r in RK_UNREG.items():
        assert values[f"R{k}"] == pytest.approx(r, rel=2e-3), k
    for run in SWEEPS["rq2"]:
        if run["reg"] == "taylor":
            assert 0.5 <= run["lam"] * RK_UNREG[run["order"]] <= 1.5, run


def test_rq2_best_marks_the_cheapest_accurate_order_per_solver():
    from taynode.verdicts import rq2_best

    def rec(solver, order, nfe, acc):
        reg = {"reg": "none", "order": 3, "lam": 0.0} if order == 0 else {"reg": "taylor", "order": order, "lam": 1.0}
        return {"experiment": "mnist", "config": {"solver": solver, **reg},
                "metrics": {"test_nfe": nfe, "test_acc": acc}}

    df = rq2_best([rec("bosh3", 0, 100, 0.87), rec("bosh3", 2, 50, 0.87), rec("bosh3", 3, 40, 0.85),
                   rec("bosh3", 4, 50, 0.868), rec("dopri5", 0, 40, 0.87), rec("dopri5", 2, 20, 0.87)])
    best = df[df["best"]]
    assert list(zip(best["solver"], best["order"])) == [("bosh3", 2), ("bosh3", 4), ("dopri5", 2)]
    assert df.loc[(df["solver"] == "bosh3") & (df["order"] == 3), "ratio"].item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="one unregularised dopri5"):
        rq2_best([rec("dopri5", 2, 20, 0.87)])


def test_the_short_sweep_plans_the_settings_of_the_committed_2_epoch_records():
    """`taynode sweep mnist --runs short --out results/mnist/short` makes the records chapter 5's 2-epoch table
    reads: one planned config per record, equal on every field the record holds (older records lack the
    fields added since, e.g. the Taylor method)."""
    import dataclasses

    from taynode.paths import RESULTS
    from taynode.runner import sweep_configs

    planned = {EXP.run_name(c): dataclasses.asdict(c) for c in sweep_configs(EXP, "cpu", "short")}
    records = {p.stem: json.loads(p.read_text())["config"]
               for p in (RESULTS / "mnist" / "short").glob("mnist_cpu_*_seed*.json")}
    assert len(planned) == 16 and set(planned) == set(records)
    for run, cfg in records.items():
        plan = json.loads(json.dumps(planned[run]))  # tuples as the record's lists
        assert {k: v for k, v in cfg.items() if k in plan} == {k: plan[k] for k in cfg if k in plan}, run


def test_whole_split_nfe_counts_every_test_image_once_against_a_counting_field():
    from helpers import Counter

    from taynode.evaluation import nfe_values, whole_split_nfe
    from taynode.solve import solve

    cfg = tiny(dtype="float32", eval_dtype="float64")  # trained in float32, judged in float64
    data = synthetic(n_test=90)  # 4 joint batches of 20 and a last one of 10
    # black images in the second batch and the last one: their joint solves need other step counts, so a
    # batch taken from the wrong slice of the test images shows
    data["test_images"] = np.random.default_rng(1).integers(0, 256, (90, 28, 28)).astype(np.uint8)
    data["test_images"][20:40] = 0
    data["test_images"][80:] = 0
    params = EXP.init_params(cfg, jr.PRNGKey(3))
    params = {**params, "dyn": jax.tree_util.tree_map(lambda a: 8 * a, params["dyn"])}  # a rougher field
    got = whole_split_nfe(EXP, cfg, params, data)
    assert (got["examples"], got["batch"], len(got["batches"]), got["remainder"]["examples"]) == (90, 20, 4, 10)
    # reference: the paper's dynamics, counted as they are called, on each slice of the test images
    p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params["dyn"])
    field = Counter(lambda t, y, a: MNISTDynamics().apply(a, t, y))
    images = jnp.asarray(data["test_images"].reshape(90, 784) / 255.0, jnp.float64)
    counts = []
    for lo, hi in ((0, 20), (20, 40), (40, 60), (60, 80), (80, 90)):
        field.count = 0
        jax.block_until_ready(solve(field, images[lo:hi], p64, rtol=cfg.eval_rtol, atol=cfg.eval_atol,
                                    max_steps=cfg.max_steps, batched=True).y1)
        counts.append(field.count)
    assert len(set(counts)) > 1  # the slices pose different systems
    assert got["batches"] == counts[:4] and got["remainder"]["nfe"] == counts[4]
    assert got["mean"] == pytest.approx(np.mean(counts[:4])) and got["max"] == max(counts[:4])
    # the records' own joint NFE is the first cfg.nfe_examples of it
    assert nfe_values(EXP, cfg, params, data)["test_nfe_batches"] == got["batches"][:2]
    assert whole_split_nfe(EXP, cfg, params, data, examples=40)["remainder"] is None
    for bad, match in ((0, "positive integer"), (91, "exceeds the 90"), (10, "smaller than one batch")):
        with pytest.raises(ValueError, match=match):
            whole_split_nfe(EXP, cfg, params, data, examples=bad)
