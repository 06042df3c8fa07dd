"""`clipmerge merge` on tiny real classifier checkpoints: outputs load, and meta/merge JSON keep the contract."""

import pytest
import torch

from clipmerge.cli import main
from clipmerge.files import read_json, write_json
from clipmerge.models.classifier import load_classifier, new_classifier, save_classifier
from clipmerge.weights.checkpoint import load_weights

ARCH = "clipmerge-tiny"


def save(model, models_dir, name, pretrained="pretrained/model.safetensors"):
    path = models_dir / name / "model.safetensors"
    save_classifier(model, path, ARCH)
    write_json(path.with_name("meta.json"), {"model": name, "pretrained": pretrained})
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """zeroshot + three 'fine-tunes' = zeroshot moved along a shared direction plus seed noise."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    zeroshot = new_classifier(ARCH, 10)
    save(zeroshot, root, "zeroshot")
    shared = {k: torch.randn_like(v) for k, v in zeroshot.state_dict().items()}
    for seed in range(3):
        model = new_classifier(ARCH, 10)
        g = torch.Generator().manual_seed(seed)
        state = {k: v + 0.01 * (shared[k] + torch.randn(v.shape, generator=g))
                 for k, v in zeroshot.state_dict().items()}
        model.load_state_dict(state)
        save(model, root, f"finetune_seed{seed}")
    return root


def ckpt(models_dir, name):
    return str(models_dir / name / "model.safetensors")


def test_model_stock_writes_a_loadable_classifier_and_the_contract_files(models_dir, tmp_path):
    out = tmp_path / "model_stock" / "model.safetensors"
    inputs = [ckpt(models_dir, f"finetune_seed{s}") for s in range(3)]
    assert main(["merge", "--method", "model_stock", "--inputs", *inputs,
                 "--anchor", ckpt(models_dir, "zeroshot"), "--out", str(out)]) == 0

    model = load_classifier(out)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    meta = read_json(out.with_name("meta.json"))
    assert meta == {
        "model": "model_stock", "method": "model_stock", "arch": ARCH,
        "pretrained": "pretrained/model.safetensors", "seed": None,
        "ingredients": ["finetune_seed0", "finetune_seed1", "finetune_seed2"],
        "hparams": {"average": "angles", "clamp_negative": True, "anchor": "zeroshot"},
        "git_sha": meta["git_sha"],
    }
    diag = read_json(out.with_name("merge.json"))
    keys = set(load_weights(out))
    assert set(diag["tensors"]) == keys and diag["n_tensors"] == len(keys)
    assert diag["anchor"] == ckpt(models_dir, "zeroshot") and diag["inputs"] == inputs
    # Deltas share a direction with per-seed noise of equal size: cos about 1/2, t = 3c/(1+2c) about 3/4.
    for key, d in diag["tensors"].items():
        assert d["guard"] is None and 0.3 < d["cos"] < 0.7 and 0.5 < d["t"] < 0.9, key
    assert diag["summary"]["guarded"] == {} and diag["summary"]["n_merged"] == len(keys)
    assert "head.weight" in diag["tensors"]  # the head is merged like every other tensor


def test_uniform_soup_is_the_average_and_wise_ft_zero_is_the_anchor(models_dir, tmp_path):
    inputs = [ckpt(models_dir, f"finetune_seed{s}") for s in range(3)]
    soup = tmp_path / "uniform_soup" / "model.safetensors"
    assert main(["merge", "--method", "uniform_soup", "--inputs", *inputs, "--out", str(soup)]) == 0
    states = [load_weights(p) for p in inputs]
    merged = load_weights(soup)
    for key in merged:
        torch.testing.assert_close(merged[key], sum(s[key] for s in states) / 3)
    assert read_json(soup.with_name("meta.json"))["hparams"] == {}

    wise = tmp_path / "wise_ft_a0.0" / "model.safetensors"
    assert main(["merge", "--method", "wise_ft", "--inputs", inputs[0], "--anchor", ckpt(models_dir, "zeroshot"),
                 "--alpha", "0", "--model-id", "wise_ft_a0.0", "--out", str(wise)]) == 0
    anchor = load_weights(ckpt(models_dir, "zeroshot"))
    assert all(torch.equal(v, anchor[k]) for k, v in load_weights(wise).items())
    meta = read_json(wise.with_name("meta.json"))
    assert meta["hparams"] == {"alpha": 0.0, "anchor": "zeroshot"} and meta["ingredients"] == ["finetune_seed0"]
    assert read_json(wise.with_name("merge.json"))["method"] == "wise_ft"


def test_mismatched_inputs_fail_cleanly_and_keep_existing_outputs(models_dir, tmp_path, capsys):
    other = save(new_classifier(ARCH, 5), tmp_path, "five_classes")
    out = tmp_path / "uniform_soup" / "model.safetensors"
    out.parent.mkdir()
    out.write_bytes(b"earlier result")
    code = main(["merge", "--method", "uniform_soup", "--inputs", ckpt(models_dir, "finetune_seed0"), str(other),
                 "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "tensor 'head.bias'" in err and "finetune_seed0" in err and "five_classes" in err
    assert out.read_bytes() == b"earlier result"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.safetensors"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "uniform_soup", "--alpha", "0.5"], "--alpha applies to wise_ft"),
        (["--method", "wise_ft", "--alpha", "1.5", "--anchor", "ZS"], "alpha must be in"),
        (["--method", "uniform_soup", "--average", "cosines"], "apply to model_stock"),
        (["--method", "model_stock"], "needs an anchor"),
        (["--method", "dare", "--density", "0.5", "--anchor", "ZS"], "--density applies to ties, not dare"),
        (["--method", "uniform_soup", "--scale", "0.5"], "--scale applies to task_arithmetic, ties, dare"),
        (["--method", "wise_ft", "--t", "0.5", "--anchor", "ZS"], "--t applies to slerp, not wise_ft"),
        (["--method", "ties", "--density", "0", "--anchor", "ZS"], "ties: density must be in (0, 1]"),
        (["--method", "dare", "--drop-rate", "1", "--anchor", "ZS"], "dare: drop_rate must be in [0, 1)"),
        (["--method", "slerp", "--t", "1.5", "--anchor", "ZS"], "slerp: t must be in [0, 1]"),
        (["--method", "ties"], "needs an anchor"),
    ],
)
def test_flag_errors_exit_2(models_dir, tmp_path, capsys, extra, message):
    extra = [ckpt(models_dir, "zeroshot") if a == "ZS" else a for a in extra]
    out = tmp_path / "m" / "model.safetensors"
    code = main(["merge", "--inputs", ckpt(models_dir, "finetune_seed0"), ckpt(models_dir, "finetune_seed1"),
                 "--out", str(out), *extra])
    assert code == 2 and message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("method, n, flags, hparams", [
    ("task_arithmetic", 3, [], {"scale": 0.3}),
    ("ties", 3, ["--density", "0.5"], {"density": 0.5, "scale": 1.0}),
    ("dare", 3, [], {"drop_rate": 0.9, "scale": 1.0, "mask_seed": 0}),
    ("dare_ties", 3, ["--mask-seed", "4", "--scale", "0.5"], {"drop_rate": 0.9, "scale": 0.5, "mask_seed": 4}),
    ("slerp", 2, ["--t", "0.25"], {"t": 0.25, "space": "task_vectors"}),
])
def test_task_vector_merges_write_a_classifier_and_record_their_options(models_dir, tmp_path, method, n, flags,
                                                                      hparams):
    out = tmp_path / method / "model.safetensors"
    inputs = [ckpt(models_dir, f"finetune_seed{s}") for s in range(n)]
    assert main(["merge", "--method", method, "--inputs", *inputs, "--anchor", ckpt(models_dir, "zeroshot"),
                 *flags, "--out", str(out)]) == 0
    assert load_classifier(out)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    meta = read_json(out.with_name("meta.json"))
    assert meta["model"] == meta["method"] == method
    assert meta["hparams"] == {**hparams, "anchor": "zeroshot"}
    assert meta["ingredients"] == [f"finetune_seed{s}" for s in range(n)]
    diag = read_json(out.with_name("merge.json"))
    assert diag["method"] == method and diag["options"] == hparams
    assert ("tensors" in diag) == (method == "slerp")  # SLERP records each tensor's angle


def test_slerp_of_three_fine_tunes_exits_2(models_dir, tmp_path, capsys):
    out = tmp_path / "slerp" / "model.safetensors"
    code = main(["merge", "--method", "slerp", "--inputs", *[ckpt(models_dir, f"finetune_seed{s}") for s in range(3)],
                 "--anchor", ckpt(models_dir, "zeroshot"), "--out", str(out)])
    assert code == 2 and "slerp needs 2..2 input checkpoints, got 3" in capsys.readouterr().err and not out.exists()
