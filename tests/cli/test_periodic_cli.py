"""Periodic Model Stock: merges make the runs identical and equal model_stock of the pre-merge weights;
`clipmerge periodic` writes its outputs and resumes bit-identically."""

import json

import pytest
import torch

from clipmerge.cli import main
from clipmerge.files import read_json
from clipmerge.layout import read_meta
from clipmerge.merging.model_stock import model_stock
from clipmerge.models.classifier import load_classifier
from clipmerge.models.clip import TINY_ARCH, preprocess_cfg
from clipmerge.training.periodic import PeriodicTrainer
from clipmerge.training.recipe import Recipe
from clipmerge.training.trainer import SeedRun, TrainData, make_deterministic
from clipmerge.weights.checkpoint import load_weights
from fixtures.training import make_tiny_task

CPU = torch.device("cpu")
RECIPE = Recipe(batch_size=8, warmup_steps=2, lr=1e-3, steps=7, mixup_alpha=0.4)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    make_deterministic(CPU)
    return make_tiny_task(tmp_path_factory.mktemp("task"))


def make_periodic(task, state_dir, seeds=(0, 1), period=3, anchor_mode="pretrained", reset=False):
    data = TrainData.load(task["train"], task["heldout"], preprocess_cfg(TINY_ARCH), RECIPE)
    runs = [SeedRun(f"seed{s}", s, load_classifier(task["init"]), data, CPU, workers=0) for s in seeds]
    fingerprint = {"recipe": RECIPE.to_json(), "seeds": list(seeds), "period": period, "anchor": anchor_mode}
    return PeriodicTrainer(runs, state_dir, 2, fingerprint, anchor=load_weights(task["init"]), period=period,
                           anchor_mode=anchor_mode, reset_optimizer=reset)


def states(trainer) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in run.model.state_dict().items()} for run in trainer.runs]


def test_a_merge_loads_model_stock_of_the_pre_merge_weights_into_every_run(task, tmp_path):
    trainer = make_periodic(task, tmp_path, seeds=(0, 1, 2))
    for run in trainer.runs:
        run.start(0)
    for step in range(3):
        for run in trainer.runs:
            run.train_step(step)
    before = states(trainer)
    trainer.merge(3)
    anchor = load_weights(task["init"])
    after = states(trainer)
    for key, w0 in anchor.items():
        expected, diagnostics = model_stock([s[key] for s in before], w0)
        assert all(torch.equal(s[key], expected) for s in after), key
        recorded = trainer.merge_history[-1]["tensors"][key]
        assert recorded["t"] == diagnostics.t and recorded["angle_deg"] == diagnostics.angle_deg
        # every seed's delta norm, in seed order
        assert recorded["norms"] == pytest.approx([float(torch.linalg.norm((s[key] - w0).double())) for s in before],
                                                  rel=1e-4, abs=1e-9)
    assert trainer.merge_history[-1]["step"] == 3

    # Before the first merge, seed k's run is exactly a solo fine-tune with seed k.
    solo = SeedRun("seed2", 2, load_classifier(task["init"]), trainer.data, CPU, workers=0)
    solo.start(0)
    for step in range(3):
        solo.train_step(step)
    solo_state = solo.model.state_dict()
    assert all(torch.equal(solo_state[k], before[2][k]) for k in solo_state)


@pytest.mark.parametrize(("anchor_mode", "reset"), [("pretrained", False), ("merged", True)])
def test_stopped_and_resumed_periodic_run_is_bit_identical(task, tmp_path, anchor_mode, reset):
    reference = make_periodic(task, tmp_path / "ref", anchor_mode=anchor_mode, reset=reset)
    assert reference.fit()
    # Stop right after the merge at step 3, whose state (and anchor) must come back.
    stopped = make_periodic(task, tmp_path / "state", anchor_mode=anchor_mode, reset=reset)
    assert not stopped.fit(stop_requested=lambda: len(stopped.history) == 2 * 3)
    resumed = make_periodic(task, tmp_path / "state", anchor_mode=anchor_mode, reset=reset)
    assert resumed.fit()
    assert [m["step"] for m in resumed.merge_history] == [m["step"] for m in reference.merge_history] == [3, 6, 7]
    for got, expected in zip(states(resumed), states(reference), strict=True):
        assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_periodic_cli_writes_the_last_merge_with_its_diagnostics(task, tmp_path):
    out = tmp_path / "models" / "model_stock_periodic" / "model.safetensors"
    code = main(["periodic", "--init", str(task["init"]), "--train-root", str(task["train"]),
                 "--heldout", str(task["heldout"]), "--seeds", "0", "1", "--out", str(out), "--device", "cpu",
                 "--batch-size", "8", "--warmup-steps", "2", "--lr", "1e-3", "--epochs", "2", "--workers", "0",
                 "--checkpoint-every", "3"])
    assert code == 0
    meta = read_meta(out)
    assert (meta["model"], meta["method"], meta["seed"], meta["ingredients"]) == (
        "model_stock_periodic", "model_stock_periodic", None, [])  # trained from the zero-shot model
    assert meta["hparams"]["seeds"] == [0, 1]
    assert meta["hparams"]["merge_every"] == "epoch" and meta["hparams"]["merge_period_steps"] == 5
    assert meta["hparams"]["anchor"] == "pretrained" and meta["hparams"]["reset_optimizer"] is False
    merges = read_json(out.with_name("merge_history.json"))
    assert [m["step"] for m in merges] == [5, 10]
    assert set(merges[0]["tensors"]) == set(load_weights(out))
    assert all(len(t["norms"]) == 2 and {"cos", "angle_deg", "t", "guard"} <= t.keys()
               for m in merges for t in m["tensors"].values())
    history = [json.loads(line) for line in out.with_name("history.jsonl").read_text().splitlines()]
    assert [(h["step"], h["seed"]) for h in history[:4]] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert len(history) == 20
    assert not (out.parent / "train_state").exists()


def test_periodic_needs_two_distinct_seeds(task, tmp_path, capsys):
    code = main(["periodic", "--init", str(task["init"]), "--train-root", str(task["train"]),
                 "--heldout", str(task["heldout"]), "--seeds", "0", "0", "--out", str(tmp_path / "m.safetensors")])
    assert code == 2
    assert "two distinct seeds" in capsys.readouterr().err
