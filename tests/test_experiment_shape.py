"""The shared experiment machinery: regularisation choice, records, committed records."""

import json
import subprocess

import jax.numpy as jnp
import pytest

from taynode.experiments import REGISTRY
from taynode.paths import RESULTS
from taynode.records import SCHEMA, cpu_clock, cpu_use, load_record, save_record, source_state
from taynode.regularization import Regularization


@pytest.mark.parametrize("reg,regs,name,label,penalty", [
    (Regularization(), (), "none", "unregularised", 0.0),
    (Regularization("taylor", order=2, lam=0.5), ("R2",), "taylor_K2_lam0.5", "$R_2$, λ = 0.5", 0.5 * 2.0),
    (Regularization("rnode", lam_kin=0.1, lam_fro=1.0), ("kinetic", "frobenius"), "rnode_kin0.1_fro1",
     "RNODE, λ_kin = 0.1, λ_fro = 1", 0.1 * 3.0 + 1.0 * 4.0),
    (Regularization("ernode", lam=0.5), ("ernode",), "ernode_lam0.5", "ERNODE, λ = 0.5", 0.5 * 5.0),
    (Regularization("srnode", lam=2.0), ("srnode",), "srnode_lam2", "SRNODE, λ = 2", 2.0 * 1.5),
    (Regularization("steer", steer_b=0.25), (), "steer_b0.25", "STEER, b = 0.25", 0.0),
])
def test_regularization_turns_into_regularisers_penalty_name_and_label(key, reg, regs, name, label, penalty):
    assert tuple(r.name for r in reg.regularizers(key)) == regs
    assert all(r.part == 0 for r in reg.regularizers(key, part=0))
    values = {"R2": jnp.array([1.0, 3.0]), "kinetic": jnp.array([2.0, 4.0]), "frobenius": jnp.array([4.0, 4.0]),
              "ernode": jnp.array([4.0, 6.0]), "srnode": jnp.array([1.0, 2.0])}
    assert float(reg.penalty(values)) == pytest.approx(penalty)
    assert reg.name == name and reg.label == label


@pytest.mark.parametrize("kw,match", [
    ({"kind": "l2"}, "reg must be one of"),
    ({"kind": "taylor"}, "lam must be > 0 with reg='taylor'"),
    ({"kind": "none", "lam": 0.1}, "lam only applies to reg in"),
    ({"kind": "ernode"}, "lam must be > 0 with reg='ernode'"),
    ({"kind": "srnode", "lam": -1.0}, "lam must be a number >= 0"),
    ({"kind": "steer"}, "steer_b must be > 0 with reg='steer'"),
    ({"kind": "steer", "steer_b": 0.5, "lam": 1.0}, "lam only applies to reg in"),
    ({"kind": "taylor", "lam": 1.0, "steer_b": 0.5}, "steer_b only applies to reg='steer'"),
    ({"kind": "steer", "steer_b": float("inf")}, "steer_b must be finite"),
    ({"kind": "taylor", "lam": 1.0, "lam_fro": 1.0}, "lam_kin/lam_fro only apply to reg='rnode'"),
    ({"kind": "rnode"}, "lam_kin or lam_fro must be > 0"),
    ({"kind": "taylor", "lam": 1.0, "order": 0}, "order must be an int >= 1"),
])
def test_regularization_rejects_bad_choices(kw, match):
    with pytest.raises(ValueError, match=match):
        Regularization(**kw)


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_source_state_names_the_files_that_differ(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("n\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = source_state(tmp_path)
    assert clean["source_dirty"] is False and clean["dirty_paths"] == [] and len(clean["git_commit"]) == 40
    (tmp_path / "src" / "a.py").write_text("x = 2\n")
    (tmp_path / "src" / "new.py").write_text("")
    (tmp_path / "scratch.txt").write_text("")  # untracked outside src/: not a source change
    (tmp_path / "results" / "r.json").write_text('{"new": 1}\n')  # a record, not source
    (tmp_path / "notes.txt").write_text("m\n")  # a tracked file outside src/: a change
    dirty = source_state(tmp_path)
    assert dirty["source_dirty"] is True and dirty["dirty_paths"] == ["notes.txt", "src/a.py", "src/new.py"]
    assert dirty["git_commit"] == clean["git_commit"]


def test_save_and_load_record_check_the_schema(tmp_path):
    with pytest.raises(ValueError, match="record lacks"):
        save_record(tmp_path / "r.json", {"experiment": "x"})
    (tmp_path / "old.json").write_text(json.dumps({"experiment": "toy"}))
    with pytest.raises(ValueError, match="schema 1, this taynode reads schema 2"):
        load_record(tmp_path / "old.json")


def test_cpu_use_counts_the_cores_this_process_kept_busy():
    import os
    import time

    # the reference: this process's CPU time by time.process_time over the wall-clock by time.perf_counter,
    # each read just before and just after cpu_clock/cpu_use, so the value cpu_use gives must lie between
    # the least and the most the two readings allow, however the scheduler interleaves other processes
    # (os.times counts CPU time in ticks: one tick of slack per reading)
    tick = 1 / os.sysconf("SC_CLK_TCK")

    def bracket(before, after, reading):
        (t_a, p_a), (t_b, p_b) = before, after
        cpu = (max(0.0, p_a - reading[1][1] - 2 * tick), p_b - reading[0][1] + 2 * tick)
        wall = (t_a - reading[1][0], t_b - reading[0][0])
        return cpu[0] / wall[1] - 1e-3, cpu[1] / wall[0] + 1e-3  # cpu_use rounds to 3 decimals

    def now():
        return time.perf_counter(), time.process_time()

    s0 = now()
    start = cpu_clock()
    s1 = now()
    p0 = s1[1]
    while time.process_time() - p0 < 0.2:  # one thread busy for 0.2 s of CPU time
        pass
    b0 = now()
    use = cpu_use(start)
    b1 = now()
    low, high = bracket(b0, b1, (s0, s1))
    assert use["cores"] == len(os.sched_getaffinity(0))
    assert low <= use["own_cores_used"] <= high
    assert high > 0  # the bracket is not vacuous: 0.2 s of CPU time went into it
    time.sleep(0.2)  # idle: the CPU time stays, the wall-clock grows
    i0 = now()
    idle = cpu_use(start)
    i1 = now()
    low_i, high_i = bracket(i0, i1, (s0, s1))
    assert low_i <= idle["own_cores_used"] <= high_i
    for u in (use, idle):
        assert u["other_processes_cores_used"] is None or 0 <= u["other_processes_cores_used"] <= u["cores"]


RECORDS = sorted(p for name in REGISTRY for p in (RESULTS / name).rglob(f"{name}_*.json"))
# runs whose training loss became non-finite (`runner.diverged_path`): no model, a record of the failure
DIVERGED = [p for p in RECORDS if p.parent.name == "diverged"]
COMMITTED = [p for p in RECORDS if p.parent.name != "diverged"]


def test_every_committed_record_is_current_and_names_its_tree():
    assert len(COMMITTED) >= 30
    for path in COMMITTED:
        record = load_record(path)
        assert record["schema"] == SCHEMA
        assert record["run"] == path.stem and (path.parent / record["params_file"]).exists()
        assert isinstance(record["source_dirty"], bool), path
        assert len(record["git_commit"]) == 40, path


def test_every_diverged_record_names_its_run_step_and_tree_and_has_no_model():
    import math

    from taynode.configs import config_from_dict

    for path in DIVERGED:
        record = load_record(path)
        assert record["schema"] == SCHEMA and record["run"] == path.stem, path
        exp = REGISTRY[record["experiment"]]
        assert exp.run_name(config_from_dict(exp.Config, record["config"])) == path.stem
        d = record["diverged"]
        assert isinstance(d["step"], int) and d.get("cause", "loss") in ("loss", "gradient", "solver"), path
        if d.get("cause", "loss") == "loss":  # a non-finite loss; records before `cause` are of this kind
            assert not math.isfinite(float(d["loss"])), path
        elif d["cause"] == "gradient":  # a finite loss whose gradient was not
            assert math.isfinite(float(d["loss"])) and "gradient became non-finite" in d["message"], path
        else:  # the training solve reached its max_steps
            assert d["loss"] == "None" and "max_steps" in d["message"], path
        assert not (path.parent.parent / f"{path.stem}.json").exists()  # no finished run of the same name
        assert isinstance(record["source_dirty"], bool) and len(record["git_commit"]) == 40, path


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
@pytest.mark.slow
def test_every_committed_record_loads_into_its_experiment(path):
    from taynode.runner import load_run

    record = load_record(path)
    exp = REGISTRY[record["experiment"]]
    cfg, params, _ = load_run(exp, path)
    assert exp.run_name(cfg) == record["run"]
    assert jax_tree_size(params) == jax_tree_size(init_shapes(exp, cfg))


def init_shapes(exp, cfg):
    """The shapes of `exp.init_params(cfg, key)`, traced without running it (`jax.eval_shape`)."""
    import jax

    return jax.eval_shape(lambda key: exp.init_params(cfg, key), jax.random.PRNGKey(0))


def jax_tree_size(tree):
    import jax

    return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def test_run_names_carry_a_solver_that_is_not_the_default():
    exp = REGISTRY["toy"]
    assert exp.run_name(exp.config("cpu")) == "toy_cpu_none_seed0"
    assert exp.run_name(exp.config("cpu", solver="bosh3", reg="taylor", order=2, lam=0.1)) == (
        "toy_cpu_bosh3_taylor_K2_lam0.1_seed0")
