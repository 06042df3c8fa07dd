"""fetch-pretrained (local file) -> zeroshot -> evaluate, through the real CLI."""

import json

import pytest
import torch

from clipmerge.cli import main
from clipmerge.files import read_json
from clipmerge.weights.checkpoint import load_weights


@pytest.fixture
def zeroshot_model(tmp_path, tiny_clip_file, image_folder):
    fetched = tmp_path / "pretrained" / "model.safetensors"
    assert main(["fetch-pretrained", "--arch", "clipmerge-tiny", "--pretrained", str(tiny_clip_file),
                 "--out", str(fetched)]) == 0
    assert all(torch.equal(a, b) for a, b in zip(load_weights(fetched).values(),
                                                   load_weights(tiny_clip_file).values(), strict=True))
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\nfox\n")
    out = tmp_path / "models" / "zeroshot" / "model.safetensors"
    assert main(["zeroshot", "--pretrained", str(fetched), "--classnames", str(classes),
                 "--templates", "a photo of a {}.", "--out", str(out)]) == 0
    return out


def test_zeroshot_meta_follows_the_contract(zeroshot_model):
    meta = read_json(zeroshot_model.with_name("meta.json"))
    assert meta["model"] == "zeroshot" and meta["arch"] == "clipmerge-tiny" and meta["seed"] is None
    assert meta["hparams"] == {"num_classes": 3, "num_templates": 1}


def test_evaluate_writes_counts_and_accuracies(tmp_path, zeroshot_model, image_folder):
    out = tmp_path / "eval" / "zeroshot" / "test.json"
    assert main(["evaluate", "--model", str(zeroshot_model), "--model-id", "zeroshot", "--eval-set", "test",
                 "--adapter", "imagefolder", "--root", str(image_folder), "--classnames", str(tmp_path / "classes.txt"),
                 "--workers", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 18 and result["top5"] == 100.0  # 3 classes: every label is in the top 5
    assert 0.0 <= result["top1"] <= 100.0 and result["top1"] * 18 / 100 == pytest.approx(round(result["top1"] * 0.18))


def test_evaluate_on_unknown_classes_fails_cleanly(tmp_path, zeroshot_model, image_folder, capsys):
    (tmp_path / "other.txt").write_text("ant\nbee\ncow\n")
    out = tmp_path / "x.json"
    code = main(["evaluate", "--model", str(zeroshot_model), "--model-id", "zeroshot", "--eval-set", "test",
                 "--adapter", "imagefolder", "--root", str(image_folder), "--classnames", str(tmp_path / "other.txt"),
                 "--workers", "0", "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "class folders ['cat', 'dog', 'fox'] are not classes of the head" in capsys.readouterr().err
