"""`clipmerge make-world` on tiny counts: it writes a world, replaces a previous one, rejects bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from clipmerge.cli import main

TINY_FLAGS = ["--pretrain", "10", "--train-per-class", "2", "--test-per-class", "1", "--shift-per-class", "1"]


def test_make_world_writes_a_world_and_replaces_a_previous_one(tmp_path):
    out = tmp_path / "data"
    assert main(["make-world", "--out", str(out), "--seed", "3", "--image-size", "40", *TINY_FLAGS]) == 0
    manifest = json.loads((out / "world.json").read_text())
    assert manifest["seed"] == 3 and manifest["image_size"] == 40
    assert manifest["splits"]["train"]["n"] == 20 and manifest["splits"]["pretrain"]["n"] == 10
    with Image.open(out / "train" / "star" / "000001.png") as image:
        assert image.size == (40, 40)

    assert main(["make-world", "--out", str(out), "--seed", "4", *TINY_FLAGS]) == 0
    assert json.loads((out / "world.json").read_text())["seed"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging or old copy left behind


def test_make_world_replaces_a_world_whose_declared_outputs_snakemake_removed(tmp_path):
    # Before rerunning make_world, Snakemake deletes its outputs (world.json, templates.txt); the world's
    # marker still tells the folder is one make-world wrote, so the rerun may replace it.
    out = tmp_path / "data"
    assert main(["make-world", "--out", str(out), "--seed", "3", *TINY_FLAGS]) == 0
    (out / "world.json").unlink()
    (out / "templates.txt").unlink()
    assert main(["make-world", "--out", str(out), "--seed", "4", *TINY_FLAGS]) == 0
    assert json.loads((out / "world.json").read_text())["seed"] == 4 and (out / "templates.txt").is_file()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--train-per-class", "0"), ("--pretrain", "-1"), ("--image-size", "8"), ("--seed", "-2")],
)
def test_make_world_rejects_bad_flags(tmp_path, capsys, flag, value):
    assert main(["make-world", "--out", str(tmp_path / "data"), *TINY_FLAGS, flag, value]) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_make_world_refuses_to_overwrite_something_else(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["make-world", "--out", str(out), *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and str(out) in err
    assert (out / "precious.txt").read_text() == "keep me"
