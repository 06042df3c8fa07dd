"""fetch-pretrained (local file) -> zeroshot -> evaluate, through the real CLI."""

import json

import pytest
import torch

from clipmerge.cli import main
from clipmerge.evaluation.predictions import read_predictions
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


def evaluate(tmp_path, model, *args):
    return main(["evaluate", "--model", str(model), "--model-id", "zeroshot", "--classnames",
                 str(tmp_path / "classes.txt"), "--workers", "0", *map(str, args)])


def test_evaluate_writes_counts_and_accuracies(tmp_path, zeroshot_model, image_folder):
    out = tmp_path / "eval" / "zeroshot" / "test.json"
    assert evaluate(tmp_path, zeroshot_model, "--set", "test", "imagefolder", image_folder, out) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 18 and result["classes"] == 3 and result["top5"] == 100.0  # all 3 are in the top 5
    assert 0.0 <= result["top1"] <= 100.0 and result["top1"] * 18 / 100 == pytest.approx(round(result["top1"] * 0.18))
    # The predictions beside it: the logits of every image, their top-1 is the JSON's, the image order recorded.
    pred = read_predictions(tmp_path / "eval" / "zeroshot" / "test.predictions.safetensors", logits=True)
    assert pred.logits.shape == (18, 3) and pred.samples == sorted(pred.samples) and len(pred.samples) == 18
    assert 100 * pred.correct.mean() == pytest.approx(result["top1"], abs=1e-4)


def test_one_process_evaluates_several_sets_each_into_its_own_file(tmp_path, zeroshot_model, image_folder):
    """One job per model: every set's JSON equals the one a job for that set alone writes."""
    alone = tmp_path / "alone.json"
    assert evaluate(tmp_path, zeroshot_model, "--set", "test", "imagefolder", image_folder, alone) == 0
    outs = [tmp_path / "eval" / "zeroshot" / f"{name}.json" for name in ("test", "copy")]
    assert evaluate(tmp_path, zeroshot_model, "--set", "test", "imagefolder", image_folder, outs[0],
                    "--set", "copy", "imagefolder", image_folder, outs[1]) == 0
    first, second = (json.loads(o.read_text()) for o in outs)
    assert first == json.loads(alone.read_text())
    assert second == {**first, "eval_set": "copy"}


def test_a_cached_set_gives_the_same_result_file(tmp_path, zeroshot_model, image_folder):
    decoded, cached = tmp_path / "decoded.json", tmp_path / "cached.json"
    cache = tmp_path / "cache" / "test.safetensors"
    assert evaluate(tmp_path, zeroshot_model, "--set", "test", "imagefolder", image_folder, decoded) == 0
    assert main(["cache-eval-set", "--weights", str(zeroshot_model), "--adapter", "imagefolder", "--root",
                 str(image_folder), "--classnames", str(tmp_path / "classes.txt"), "--workers", "0",
                 "--out", str(cache)]) == 0
    built = cache.stat().st_mtime_ns
    assert evaluate(tmp_path, zeroshot_model, "--set", "test", "imagefolder", image_folder, cached,
                    "--cache", "test", cache) == 0
    assert cached.read_bytes() == decoded.read_bytes()
    assert cache.stat().st_mtime_ns == built  # read, not rebuilt


def test_a_cache_for_an_unknown_set_is_refused(tmp_path, zeroshot_model, image_folder, capsys):
    out = tmp_path / "x.json"
    assert evaluate(tmp_path, zeroshot_model, "--set", "test", "imagefolder", image_folder, out,
                    "--cache", "tset", tmp_path / "c.safetensors") == 2
    assert not out.exists() and "--cache names sets ['tset'] that no --set names" in capsys.readouterr().err


def test_evaluate_on_unknown_classes_fails_cleanly(tmp_path, zeroshot_model, image_folder, capsys):
    (tmp_path / "other.txt").write_text("ant\nbee\ncow\n")
    out = tmp_path / "x.json"
    code = main(["evaluate", "--model", str(zeroshot_model), "--model-id", "zeroshot", "--classnames",
                 str(tmp_path / "other.txt"), "--workers", "0", "--set", "test", "imagefolder", str(image_folder),
                 str(out)])
    assert code == 2 and not out.exists()
    assert "class folders ['cat', 'dog', 'fox'] are not classes of the head" in capsys.readouterr().err
