"""Training dtype and evaluation dtype, the default Taylor method, and comparing evaluations."""

import dataclasses

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from taynode.configs import config_from_dict
from taynode.evaluation import cast_floats, evaluate, for_evaluation, metrics_diff, metrics_match
from taynode.experiments import REGISTRY
from taynode.regularization import Regularization
from taynode.regularizers import TaylorRK
from taynode.taylor import solution_derivatives

TOY = REGISTRY["toy"]


@pytest.mark.parametrize("kw,match", [
    (dict(dtype="float64", eval_dtype="float32", eval_rtol=1e-5, eval_atol=1e-5), "eval_dtype='float32' would round"),
    (dict(dtype="float32", rtol=1e-8), "rtol and atol below 1e-6 need dtype='float64'"),
    (dict(dtype="float32", eval_dtype="float32"), "eval_rtol and eval_atol below 1e-6 need eval_dtype='float64'"),
    (dict(eval_dtype="float16"), "eval_dtype must be 'float32' or 'float64'"),
])
def test_impossible_dtype_combinations_are_one_line_errors(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        TOY.config("smoke", **kw)
    assert "\n" not in str(e.value)


def test_float32_training_with_float64_evaluation_is_a_valid_config():
    cfg = TOY.config("smoke", dtype="float32", rtol=1e-5, atol=1e-5, eval_dtype="float64")
    assert (cfg.dtype, cfg.eval_dtype, cfg.eval_rtol) == ("float32", "float64", 1.4e-8)


def test_records_written_before_the_fields_existed_load_as_they_were_made():
    old = {k: v for k, v in dataclasses.asdict(TOY.config("smoke", dtype="float32", rtol=1e-5, atol=1e-5,
                                                          eval_rtol=1e-5, eval_atol=1e-5,
                                                          eval_dtype="float32")).items()
           if k not in ("taylor_method", "eval_dtype")}
    cfg = config_from_dict(TOY.Config, old)
    assert cfg.taylor_method == "jet" and cfg.eval_dtype == "float32"
    new = config_from_dict(TOY.Config, dataclasses.asdict(TOY.config("smoke")))
    assert new.taylor_method == "taylor" and new.eval_dtype == "float64"


def test_float32_parameters_are_judged_in_float64_exactly_as_a_float64_model_holding_their_values():
    """The float64 evaluation of float32-trained parameters equals the evaluation of a float64 model."""
    cfg32 = TOY.config("smoke", dtype="float32", rtol=1e-5, atol=1e-5, eval_dtype="float64",
                       nfe_examples=32, nfe_per_example=4, reg_examples=32)
    cfg64 = dataclasses.replace(cfg32, dtype="float64", rtol=1e-5, atol=1e-5)
    p32 = cast_floats(TOY.init_params(cfg32, jr.PRNGKey(3)), "float32")
    # perturb so that the float32 values are not exactly representable in fewer bits
    p32 = jax.tree_util.tree_map(lambda a: (a * np.float32(1.1)).astype(jnp.float32), p32)
    p64 = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(np.float64), p32)
    data = TOY.load_data(cfg32, progress=False)
    assert metrics_match(evaluate(TOY, cfg32, p32, data), evaluate(TOY, cfg64, p64, data))
    cfg_eval, p_eval = for_evaluation(cfg32, p32)
    assert cfg_eval.dtype == "float64" and all(a.dtype == jnp.float64 for a in jax.tree_util.tree_leaves(p_eval))


def test_training_in_float32_keeps_float32_when_float64_is_enabled():
    from taynode.objective import make_loss

    cfg = TOY.config("smoke", dtype="float32", rtol=1e-5, atol=1e-5, reg="taylor", order=2, lam=0.1)
    params = cast_floats(TOY.init_params(cfg, jr.PRNGKey(0)), "float32")
    data = TOY.load_data(cfg, progress=False)
    batch = jax.tree_util.tree_map(lambda a: jnp.asarray(a[: cfg.batch_size]), TOY.train_arrays(cfg, data))
    (loss, aux), grads = jax.value_and_grad(make_loss(TOY, cfg), has_aux=True)(params, batch, jr.PRNGKey(0), 0)
    assert loss.dtype == jnp.float32
    assert {g.dtype for g in jax.tree_util.tree_leaves(grads)} == {jnp.dtype(jnp.float32)}


def test_the_incremental_taylor_mode_is_the_default_everywhere():
    f = lambda t, y, a: jnp.tanh(a * y) + t  # noqa: E731
    y = jnp.array([0.3, -0.7])
    assert TaylorRK(2).method == "taylor" and Regularization("taylor", 2, 1.0).method == "taylor"
    assert TOY.config("smoke", reg="taylor", order=2, lam=1.0).regularization.regularizers(None)[0].method == "taylor"
    default = solution_derivatives(f, 0.2, y, 1.5, 4)
    for method in ("jet", "jvp"):
        np.testing.assert_allclose(default[-1], solution_derivatives(f, 0.2, y, 1.5, 4, method=method)[-1],
                                   rtol=1e-12)
    with pytest.raises(ValueError, match="taylor_method must be one of"):
        TOY.config("smoke", reg="taylor", order=2, lam=1.0, taylor_method="series")


@pytest.mark.parametrize("a,b,rtol,same,keys", [
    ({"x": 1.0, "n": [3, 4]}, {"x": 1.0, "n": [3, 4]}, 0.0, True, []),
    ({"x": 1.0}, {"x": 1.0 + 1e-12}, 0.0, False, ["x"]),
    ({"x": 1.0}, {"x": 1.0 + 1e-12}, 1e-6, True, []),
    ({"x": 1.0}, {"x": 1.01}, 1e-6, False, ["x"]),
    ({"n": [3, 4]}, {"n": [3, 5]}, 1e-6, False, ["n[1]"]),
    ({"x": 1.0}, {"x": 1.0, "y": 2.0}, 1e-6, False, ["y"]),
    ({"n": [3]}, {"n": [3, 4]}, 1e-6, False, ["n"]),
    ({"s": "a"}, {"s": "b"}, 1e-6, False, ["s"]),
    ({"p": {"R2": 2.0, "R3": 5.0}, "q": 1}, {"p": {"R2": 2.5, "R3": 5.0}, "q": 2}, 1e-6, False, ["p.R2", "q"]),
])
def test_metrics_match(a, b, rtol, same, keys):
    assert metrics_match(a, b, rtol) is same
    diff = metrics_diff(a, b, rtol)  # the differing leaves, by the same rule
    assert [d["key"] for d in diff] == keys
    if keys == ["p.R2", "q"]:
        assert diff[0] == {"key": "p.R2", "got": 2.0, "recorded": 2.5, "rel": 0.2}
        assert diff[1]["rel"] == 0.5
