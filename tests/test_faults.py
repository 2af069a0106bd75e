"""Faults a run must survive: a trained model that cannot be evaluated still leaves its record."""

import json

import pytest

from taynode.cli import main


@pytest.mark.slow
def test_unevaluable_model_is_recorded_with_a_one_line_reason(tmp_path, capsys):
    """A relu field trains at 1e-5 but its evaluation at 1.4e-8 reaches max_steps: the record is written, its
    metrics say why evaluation failed, and the console gets one line about it (not equinox's traceback)."""
    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    argv = ["train", "toy", "--preset", "smoke", "--activation", "relu", "--epochs", "3", "--max-steps", "200",
            "--out", out, "--ckpt-root", ckpt, "--no-progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    record = json.loads((tmp_path / "out" / "toy_smoke_none_seed0.json").read_text())
    reason = record["metrics"]["eval_failed"]
    assert list(record["metrics"]) == ["eval_failed"]
    assert reason.startswith("the solver reached max_steps=200 before t1 at rtol=1.4e-08") and "\n" not in reason
    assert (tmp_path / "out" / record["params_file"]).exists() and record["history"]
    assert f"toy_smoke_none_seed0: evaluation failed (training results recorded): {reason}" in captured.out
    assert "Traceback" not in captured.out + captured.err and "EQX_ON_ERROR" not in captured.out + captured.err

    # re-evaluating it is a one-line error too
    assert main(["eval", "toy", str(tmp_path / "out" / "toy_smoke_none_seed0.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("taynode: error: the solver reached max_steps=200") and "\n" not in err
