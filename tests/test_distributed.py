"""Two processes × two forced CPU devices each (coordinator on 127.0.0.1) train, checkpoint, resume and
evaluate the toy exactly as one process on four forced devices does."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

TIMEOUT_S = 900  # the whole of one stage (both processes); killed beyond it
RUN = "toy_smoke_none_seed0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    for var in ("TAYNODE_COORDINATOR", "TAYNODE_NUM_PROCESSES", "TAYNODE_PROCESS_ID", "TAYNODE_DISTRIBUTED"):
        env.pop(var, None)
    return env


def _train_args(epochs, out, ckpt, *extra, distributed=()):
    return [sys.executable, "-m", "taynode.cli", *distributed, "train", "toy", "--preset", "smoke", "--epochs",
            str(epochs), "--devices", "4", "--checkpoint-every", "2", "--eval-rtol", "1e-6", "--eval-atol", "1e-6",
            "--nfe-per-example", "8", "--out", out, "--ckpt-root", ckpt, "--no-progress", *extra]


def _run_processes(commands, cwd, env):
    """Start every command at once; wait for all (bounded); kill them all whatever happens."""
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for c in commands]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outs.append(out)
        for p, out in zip(procs, outs):
            assert p.returncode == 0, out[-4000:]
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _two_processes(epochs, tmp_path, *extra):
    port = _free_port()
    commands = [_train_args(epochs, "out2", "ckpt2", *extra, distributed=(
        "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i))) for i in range(2)]
    return _run_processes(commands, tmp_path, _env(2))


@pytest.mark.slow
def test_two_processes_match_one_process_on_four_devices(tmp_path):
    # two processes: 2 steps, then a second start of both resumes from the step-2 checkpoint to step 4
    _two_processes(2, tmp_path)
    first = json.loads((tmp_path / "out2" / f"{RUN}.json").read_text())
    assert first["processes"] == 2 and first["devices_used"] == 4
    outs = _two_processes(4, tmp_path, "--resume")
    assert "record: out2/" in outs[0] and "record:" not in outs[1]  # process 0 writes the record
    two = json.loads((tmp_path / "out2" / f"{RUN}.json").read_text())
    assert two["resumed_from"] == 2 and two["processes"] == 2

    # one process on four devices, uninterrupted
    _run_processes([_train_args(4, "out1", "ckpt1")], tmp_path, _env(4))
    one = json.loads((tmp_path / "out1" / f"{RUN}.json").read_text())
    assert one["processes"] == 1 and one["devices_used"] == 4 and one["resumed_from"] is None

    train2 = [h for h in two["history"] if "loss" in h]
    train1 = [h for h in one["history"] if "loss" in h]
    assert [h["step"] for h in train2] == [h["step"] for h in train1] == [1, 2, 3, 4]
    for h1, h2 in zip(train1, train2):
        assert h1["nfe"] == h2["nfe"]
        assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-12)
    m1, m2 = one["metrics"], two["metrics"]
    assert m1["test_nfe_batches"] == m2["test_nfe_batches"] and m1["nfe_by_tol"] == m2["nfe_by_tol"]
    assert m1["test_nfe_per_example"] == m2["test_nfe_per_example"]
    assert m1["mse"] == pytest.approx(m2["mse"], rel=1e-12)
    for k, v in m1["penalties"].items():
        assert m2["penalties"][k] == pytest.approx(v, rel=1e-12), k
