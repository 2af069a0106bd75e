"""The generic training loop: resume after SIGKILL, NaN handling, deterministic order."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from taynode.train import LoopConfig, TrainingDiverged, epoch_order, fit, latest_checkpoint, restore_checkpoint

# A tiny least-squares problem: the loop is what is tested here, not the model.
PROBLEM = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5)); Y = X @ rng.normal(size=(5,)) + 0.1 * rng.normal(size=64)
    opt = optax.adam(0.05)

    def init():
        p = jnp.zeros(5)
        return {"params": p, "opt_state": opt.init(p)}

    @jax.jit
    def step(state, batch, key, step_index):
        x, y = batch
        noise = 1e-3 * jax.random.normal(key, (5,))  # uses the per-step key
        loss, g = jax.value_and_grad(lambda p: jnp.mean((x @ p - y) ** 2))(state["params"])
        u, s = opt.update(g + noise, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], u), "opt_state": s}, {"loss": loss, "nfe": 0}

    get_batch = lambda idx: (jnp.asarray(X[idx]), jnp.asarray(Y[idx]))
    """
)


def _ns():
    ns = {}
    exec(PROBLEM, ns)
    return ns


def test_epoch_order_is_deterministic_permutation():
    a, b = epoch_order(10, 3, 2), epoch_order(10, 3, 2)
    np.testing.assert_array_equal(a, b)
    assert sorted(a) == list(range(10))
    assert not np.array_equal(epoch_order(10, 3, 2), epoch_order(10, 3, 3))


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    ns = _ns()
    loop = LoopConfig(num_steps=12, steps_per_epoch=4, seed=1, log_every=1, checkpoint_every=3)
    ref_state, ref_hist, _ = fit(ns["init"](), ns["step"], ns["get_batch"], 64, 16, loop,
                                 ckpt_dir=tmp_path / "ref", progress=False)

    # the same run in a subprocess that SIGKILLs itself during step 8 (checkpoint at step 6 exists)
    script = PROBLEM + textwrap.dedent(
        f"""
        import os, signal
        from taynode.train import LoopConfig, fit
        calls = [0]
        def killing_step(state, batch, key, step_index):
            calls[0] += 1
            if calls[0] == 8:
                os.kill(os.getpid(), signal.SIGKILL)
            return step(state, batch, key, step_index)
        loop = LoopConfig(num_steps=12, steps_per_epoch=4, seed=1, log_every=1, checkpoint_every=3)
        fit(init(), killing_step, get_batch, 64, 16, loop, ckpt_dir={str(tmp_path / "run")!r}, progress=False)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert latest_checkpoint(tmp_path / "run") == 6

    state, hist, info = fit(ns["init"](), ns["step"], ns["get_batch"], 64, 16, loop,
                            ckpt_dir=tmp_path / "run", resume=True, progress=False)
    assert info["resumed_from"] == 6
    np.testing.assert_array_equal(np.asarray(state["params"]), np.asarray(ref_state["params"]))
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    ns = _ns()
    calls = [0]

    def step(state, batch, key, step_index):
        calls[0] += 1
        new, m = ns["step"](state, batch, key, step_index)
        if calls[0] == 5:
            m = {**m, "loss": jnp.nan}
        return new, m

    loop = LoopConfig(num_steps=10, steps_per_epoch=4, log_every=1, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 4 .*last good checkpoint \(step 4") as e:
        fit(ns["init"](), step, ns["get_batch"], 64, 16, loop, ckpt_dir=tmp_path, progress=False)
    assert e.value.resumed_from is None  # a run from scratch
    assert latest_checkpoint(tmp_path) == 4
    state, meta = restore_checkpoint(tmp_path, ns["init"]())
    assert np.all(np.isfinite(np.asarray(state["params"])))
    assert meta["step"] == 4
    # resumed from that checkpoint, the run diverges again (its 3rd step, step 6) and says where it started
    calls[0] = 2
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 6 ") as e:
        fit(ns["init"](), step, ns["get_batch"], 64, 16, loop, ckpt_dir=tmp_path, resume=True, progress=False)
    assert e.value.resumed_from == 4 and e.value.step == 6 and e.value.last_good == 6


def test_a_non_finite_gradient_stops_before_its_update_and_keeps_the_last_good_checkpoint(tmp_path):
    ns = _ns()
    calls = [0]

    def step(state, batch, key, step_index):  # the step's update made from a NaN gradient
        calls[0] += 1
        new, m = ns["step"](state, batch, key, step_index)
        if calls[0] == 5:
            new = {**new, "params": new["params"] * jnp.nan}
            m = {**m, "grads_finite": 0.0}
        return new, m

    loop = LoopConfig(num_steps=10, steps_per_epoch=4, log_every=1, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"gradient became non-finite at step 4 .*checkpoint \(step 4") as e:
        fit(ns["init"](), step, ns["get_batch"], 64, 16, loop, ckpt_dir=tmp_path, progress=False)
    assert e.value.cause == "gradient" and np.isfinite(e.value.loss) and e.value.step == 4
    assert latest_checkpoint(tmp_path) == 4


def test_the_train_step_reports_a_non_finite_gradient():
    """A loss whose value is finite and whose gradient is not: mse + sqrt(c · mse) with c = 0 at step 1,
    d/dp = ... · 0/0; at step 0 (c = 1) the same compiled step has a finite gradient."""
    import jax.random as jr

    from taynode.experiments import REGISTRY
    from taynode.objective import make_train_step
    from taynode.optim import make_optimizer

    toy = REGISTRY["toy"]

    class NaNGradientAtStep1(type(toy)):
        def loss(self, cfg, params, batch, sol, key, step):
            mse, aux = super().loss(cfg, params, batch, sol, key, step)
            return mse + jnp.sqrt(jnp.where(step == 0, 1.0, 0.0) * mse), aux

    cfg = toy.config("smoke")
    data = toy.load_data(cfg, progress=False)
    batch = toy.train_arrays(cfg, data)
    params = toy.init_params(cfg, jr.PRNGKey(0))
    opt = make_optimizer(cfg)
    state = {"params": params, "opt_state": opt.init(params)}
    train_step = make_train_step(NaNGradientAtStep1(), cfg, opt)  # one compilation: `step` is traced
    for step, finite in ((0, 1.0), (1, 0.0)):
        new, m = train_step(state, batch, jr.PRNGKey(1), step)
        assert np.isfinite(float(m["loss"])) and float(m["grads_finite"]) == finite
        params_finite = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(new["params"]))
        assert params_finite == (finite == 1.0)
    assert train_step._cache_size() == 1


def test_loop_config_validation():
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        LoopConfig(num_steps=0, steps_per_epoch=1)
    with pytest.raises(ValueError, match="eval_every must be an int >= 0"):
        LoopConfig(num_steps=1, steps_per_epoch=1, eval_every=-1)


def test_resume_of_a_finished_run_returns_its_state(tmp_path):
    """A run killed after its last checkpoint (e.g. during the run's metrics) resumes without training."""
    ns = _ns()
    loop = LoopConfig(num_steps=8, steps_per_epoch=4, seed=1, log_every=1, checkpoint_every=4)
    evals = []

    def eval_fn(state):
        evals.append(1)
        return {"p0": float(state["params"][0])}

    ref_state, ref_hist, ref_info = fit(ns["init"](), ns["step"], ns["get_batch"], 64, 16, loop,
                                        ckpt_dir=tmp_path, progress=False, eval_fn=eval_fn)
    calls = [0]

    def counting_step(*a):
        calls[0] += 1
        return ns["step"](*a)

    state, hist, info = fit(ns["init"](), counting_step, ns["get_batch"], 64, 16, loop,
                            ckpt_dir=tmp_path, resume=True, progress=False, eval_fn=eval_fn)
    assert calls[0] == 0 and len(evals) == 1
    assert info["resumed_from"] == 8 and info["final_eval"] == ref_info["final_eval"]
    np.testing.assert_array_equal(np.asarray(state["params"]), np.asarray(ref_state["params"]))
    assert hist == ref_hist


def test_selected_parameters_survive_a_resume(tmp_path):
    """Model selection (`select`) keeps the best evaluation's parameters across an interruption."""
    ns = _ns()
    loop = LoopConfig(num_steps=10, steps_per_epoch=4, seed=1, log_every=1, eval_every=2, checkpoint_every=4)

    def eval_fn(state):  # lowest at the first evaluation: the parameters move away from 0 as they train
        return {"val_loss": float(jnp.sum(state["params"] ** 2))}

    ref_state, _, ref_info = fit(ns["init"](), ns["step"], ns["get_batch"], 64, 16, loop, ckpt_dir=tmp_path / "ref",
                                 eval_fn=eval_fn, select="val_loss", progress=False)
    assert ref_info["best"]["step"] == 2

    calls = [0]

    def failing_step(*a):  # dies during step 9; the checkpoint of step 8 is kept
        calls[0] += 1
        if calls[0] == 9:
            raise KeyboardInterrupt
        return ns["step"](*a)

    with pytest.raises(KeyboardInterrupt):
        fit(ns["init"](), failing_step, ns["get_batch"], 64, 16, loop, ckpt_dir=tmp_path / "run", eval_fn=eval_fn,
            select="val_loss", progress=False)
    assert latest_checkpoint(tmp_path / "run") == 8
    state, _, info = fit(ns["init"](), ns["step"], ns["get_batch"], 64, 16, loop, ckpt_dir=tmp_path / "run",
                         resume=True, eval_fn=eval_fn, select="val_loss", progress=False)
    assert info["resumed_from"] == 8
    assert info["best"]["step"] == 2 and info["best"]["metrics"] == ref_info["best"]["metrics"]
    np.testing.assert_array_equal(np.asarray(info["best"]["params"]), np.asarray(ref_info["best"]["params"]))
    np.testing.assert_array_equal(np.asarray(state["params"]), np.asarray(ref_state["params"]))


@pytest.mark.slow
def test_resumed_run_reports_the_selected_model(tmp_path):
    """A run with a validation loss, interrupted after its step-8 checkpoint and resumed, reports the model the
    uninterrupted run selects (step 2), not its final one."""
    import jax.random as jr

    from taynode.experiments.toy import Toy
    from taynode.runner import train

    class Interrupted(Exception):
        pass

    class ToyWithValidation(Toy):
        fail_at = None  # the evaluation (1, 2, ...) that is interrupted

        def __init__(self):
            self.calls = 0

        def validation_loss(self, cfg, params, data):
            self.calls += 1
            if self.calls == self.fail_at:
                raise Interrupted
            init = self.init_params(cfg, jr.PRNGKey(cfg.seed))
            return float(sum(jnp.sum((a - b) ** 2) for a, b in
                             zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(init))))

    cfg = Toy().config("smoke", epochs=10, eval_every=2, checkpoint_every=4, eval_rtol=1e-5, eval_atol=1e-5,
                       nfe_per_example=4, reg_examples=8)
    ref = train(ToyWithValidation(), cfg, out_dir=tmp_path / "ref", ckpt_root=tmp_path / "ref_ckpt", progress=False)
    assert ref["selected_step"] == 2

    exp = ToyWithValidation()
    exp.fail_at = 5  # the final evaluation (step 10): the newest checkpoint is step 8's
    with pytest.raises(Interrupted):
        train(exp, cfg, out_dir=tmp_path / "run", ckpt_root=tmp_path / "run_ckpt", progress=False)
    rec = train(ToyWithValidation(), cfg, out_dir=tmp_path / "run", ckpt_root=tmp_path / "run_ckpt", resume=True,
                progress=False)
    assert rec["resumed_from"] == 8 and rec["selected_step"] == 2
    assert rec["metrics"] == ref["metrics"]
    assert (tmp_path / "run" / f"{rec['run']}.msgpack").read_bytes() == (
        tmp_path / "ref" / f"{ref['run']}.msgpack").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_toy_parameters_are_trained_and_saved_in_the_config_dtype(tmp_path, dtype):
    """The toy's initialiser makes float32 arrays; a float64 config trains (and saves) float64 parameters."""
    import flax.serialization

    from taynode.experiments.toy import Toy
    from taynode.runner import train

    exp = Toy()
    cfg = exp.config("smoke", epochs=2, dtype=dtype, eval_rtol=1e-5, eval_atol=1e-5, nfe_per_example=4)
    rec = train(exp, cfg, out_dir=tmp_path, ckpt_root=tmp_path / "ckpt", progress=False)
    saved = flax.serialization.msgpack_restore((tmp_path / rec["params_file"]).read_bytes())
    leaves = jax.tree_util.tree_leaves(saved)
    assert leaves and {np.asarray(a).dtype for a in leaves} == {np.dtype(dtype)}
