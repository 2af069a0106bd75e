import dataclasses

import pytest

from taynode.cli import main
from taynode.experiments import toy


def test_cli_errors_are_one_line(capsys):
    assert main(["train", "mnist", "--preset", "smoke", "--reg", "taylor", "--lam", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "taynode: error: lam must be a number >= 0, got -1.0"
    assert main(["train", "mnist", "--preset", "nope"]) == 2
    assert "preset must be one of" in capsys.readouterr().err
    for cmd in (["eval", "mnist", "no/such/run.json"], ["penalties", "mnist", "no/such/run.json"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert err == "taynode: error: no/such/run.json does not exist: pass a run record (.json) or a checkpoint directory"


def test_cli_unknown_command_exits():
    with pytest.raises(SystemExit):
        main(["frobnicate"])


@pytest.mark.parametrize("field,value,match", [("steps", 0, "steps must be an int >= 1"),
                                               ("lam", -0.5, "lam must be >= 0"),
                                               ("lr", 0.0, "lr must be a positive number")])
def test_toy_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(toy.PRESETS["smoke"], **{field: value})


def test_write_json_creates_parent_and_leaves_no_temporary(tmp_path):
    import json

    from taynode.paths import write_json

    path = write_json(tmp_path / "a" / "b" / "rec.json", {"x": [1, 2.5], "s": "λ"})
    assert json.loads(path.read_text()) == {"x": [1, 2.5], "s": "λ"}
    write_json(path, {"x": 3})  # overwrite in place
    assert json.loads(path.read_text()) == {"x": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["rec.json"]
