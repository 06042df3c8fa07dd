"""The fine-tuning loop on a tiny learnable task: determinism, learning, accumulation, resumption, NaN."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from clipmerge.errors import ClipmergeError
from clipmerge.models.classifier import load_classifier
from clipmerge.models.clip import TINY_ARCH, preprocess_cfg
from clipmerge.training import resume
from clipmerge.training.augment import SeededAugmentation
from clipmerge.training.recipe import Recipe
from clipmerge.training.trainer import NonFiniteLoss, SeedRun, TrainData, Trainer, make_deterministic
from fixtures.training import make_tiny_task

CPU = torch.device("cpu")
# Noisy colour patches: learnable in a few steps by the tiny ViT.
FAST = {"batch_size": 8, "warmup_steps": 2, "lr": 1e-3, "epochs": 1}


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict:
    make_deterministic(CPU)
    return make_tiny_task(tmp_path_factory.mktemp("task"))


def make_trainer(task, state_dir, seed=0, checkpoint_every=0, **recipe) -> tuple[Trainer, SeedRun]:
    recipe = Recipe(**{**FAST, **recipe})
    data = TrainData.load(task["train"], task["heldout"], preprocess_cfg(TINY_ARCH), recipe)
    run = SeedRun(f"seed{seed}", seed, load_classifier(task["init"]), data, CPU, workers=0)
    fingerprint = {"recipe": recipe.to_json(), "seed": seed}
    return Trainer([run], state_dir, checkpoint_every, fingerprint), run


def train(task, tmp_path, seed=0, **recipe) -> tuple[dict[str, torch.Tensor], list[dict]]:
    trainer, run = make_trainer(task, tmp_path / f"state{seed}", seed, **recipe)
    assert trainer.fit()
    return run.model.state_dict(), [json.loads(line) for line in trainer.history]


def save_checkpoint(state_dir, step, weights, info, history):
    """A checkpoint as one process writes it (Trainer.save without ranks)."""
    path = resume.checkpoint_path(state_dir, step)
    resume.start_checkpoint(path)
    resume.write_checkpoint_weights(path, weights)
    resume.complete_checkpoint(state_dir, path, step, info, history)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_augmentation_depends_on_seed_epoch_and_index_only(task):
    data = TrainData.load(task["train"], task["heldout"], preprocess_cfg(TINY_ARCH), Recipe(**FAST, randaugment_ops=2))
    view = SeededAugmentation(data.dataset, data.transform, seed=0)
    first = view[(0, 5)][0]
    torch.manual_seed(123)  # the global RNG state must not matter ...
    state = torch.get_rng_state()
    assert torch.equal(view[(0, 5)][0], first)
    assert torch.equal(torch.get_rng_state(), state)  # ... nor be changed
    assert not torch.equal(view[(1, 5)][0], first)
    assert not torch.equal(SeededAugmentation(data.dataset, data.transform, seed=1)[(0, 5)][0], first)
    assert first.shape == (3, 32, 32) and first.dtype == torch.float32


def test_same_seed_same_weights_other_seed_other_weights(task, tmp_path):
    recipe = {"mixup_alpha": 0.4, "randaugment_ops": 1, "steps": 6}
    a, history = train(task, tmp_path / "a", seed=0, **recipe)
    b, _ = train(task, tmp_path / "b", seed=0, **recipe)
    c, _ = train(task, tmp_path / "c", seed=1, **recipe)
    assert_same(a, b)
    assert not torch.equal(a["head.weight"], c["head.weight"])
    assert [h["step"] for h in history] == list(range(1, 7))
    assert set(history[0]) == {"step", "epoch", "loss", "lr", "train_top1", "images_per_s", "elapsed_s"}
    assert history[-1]["epoch"] == 1  # 5 steps per epoch


def test_training_reduces_the_loss(task, tmp_path):
    _, history = train(task, tmp_path, epochs=6)
    losses = [h["loss"] for h in history]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, (first, last)
    assert np.mean([h["train_top1"] for h in history[-5:]]) > 60


def test_gradient_accumulation_matches_the_full_batch(task, tmp_path):
    full, full_history = train(task, tmp_path / "full", steps=4, batch_size=8)
    accum, accum_history = train(task, tmp_path / "accum", steps=4, batch_size=8, accum_steps=2)
    for key in full:
        a, f = accum[key], full[key]
        if key.endswith("attn.in_proj_bias"):
            # The key bias cancels in the softmax: its true gradient is 0, so AdamW turns rounding noise
            # (which differs with the summation order) into lr-sized steps. Compare the q and v biases.
            q, _, v = a.chunk(3)
            fq, _, fv = f.chunk(3)
            a, f = torch.cat([q, v]), torch.cat([fq, fv])
        torch.testing.assert_close(a, f, rtol=1e-4, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}")
    for f, a in zip(full_history, accum_history, strict=True):
        assert a["loss"] == pytest.approx(f["loss"], rel=1e-5)
        assert a["train_top1"] == f["train_top1"]


def test_stopped_and_resumed_run_is_bit_identical(task, tmp_path):
    recipe = {"steps": 9, "accum_steps": 2, "mixup_alpha": 0.4, "randaugment_ops": 2, "label_smoothing": 0.1,
              "no_decay_1d": True}
    reference, reference_history = train(task, tmp_path / "ref", **recipe)

    state_dir = tmp_path / "state"
    trainer, _ = make_trainer(task, state_dir, checkpoint_every=2, **recipe)
    assert not trainer.fit(stop_requested=lambda: len(trainer.history) == 5)
    assert resume.latest_step(state_dir) == 5
    assert len((state_dir / resume.HISTORY_FILE).read_text().splitlines()) == 5

    trainer, run = make_trainer(task, state_dir, checkpoint_every=2, **recipe)
    assert trainer.fit()
    assert_same(run.model.state_dict(), reference)
    history = [json.loads(line) for line in trainer.history]
    assert [h["step"] for h in history] == list(range(1, 10))
    assert [h["loss"] for h in history] == [h["loss"] for h in reference_history]


def test_resuming_with_another_recipe_is_refused(task, tmp_path):
    trainer, _ = make_trainer(task, tmp_path, steps=3)
    assert not trainer.fit(stop_requested=lambda: True)
    trainer, _ = make_trainer(task, tmp_path, steps=3, lr=2e-3)
    with pytest.raises(ClipmergeError, match="different settings.*recipe"):
        trainer.fit()


def test_nan_loss_names_the_step_and_keeps_the_last_checkpoint(task, tmp_path):
    trainer, _ = make_trainer(task, tmp_path, checkpoint_every=1, lr=1e30, warmup_steps=0, grad_clip=0, steps=10)
    with pytest.raises(NonFiniteLoss, match=r"(loss|gradient norm) is (nan|inf) at step \d+") as error:
        trainer.fit()
    step = int(re.search(r"at step (\d+)", str(error.value)).group(1))
    assert step == len(trainer.history) + 1 >= 2
    assert f"last good checkpoint (step {step - 1})" in str(error.value)
    assert resume.latest_step(tmp_path) == step - 1


def test_optimizer_state_round_trips_through_safetensors(task, tmp_path):
    trainer, run = make_trainer(task, tmp_path, steps=2, no_decay_1d=True)
    assert trainer.fit()
    tensors, groups = resume.optimizer_state(run.optimizer, run.param_names)
    assert "exp_avg/head.weight" in tensors and "exp_avg_sq/visual.conv1.weight" in tensors
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    save_checkpoint(tmp_path / "ckpt", 2, {"opt": tensors}, {"groups": groups}, [])
    saved = resume.load_latest_checkpoint(tmp_path / "ckpt")
    fresh, _ = make_trainer(task, tmp_path / "other", steps=2, no_decay_1d=True)
    other = fresh.runs[0]
    resume.load_optimizer_state(other.optimizer, other.param_names, saved.weights["opt"], saved.info["groups"])
    again, again_groups = resume.optimizer_state(other.optimizer, other.param_names)
    assert_same(again, tensors)
    assert json.dumps(again_groups, sort_keys=True) == json.dumps(groups, sort_keys=True, default=list)


def test_only_complete_checkpoints_count_and_older_ones_go(tmp_path):
    weights = {"w": {"x": torch.ones(2)}}
    save_checkpoint(tmp_path, 3, weights, {}, ["a"])
    (tmp_path / "step_000000009").mkdir()  # a save killed before state.json
    assert resume.latest_step(tmp_path) == 3
    save_checkpoint(tmp_path, 6, weights, {"k": 1}, ["a", "b"])
    assert sorted(p.name for p in Path(tmp_path).glob("step_*")) == ["step_000000006"]
    latest = resume.load_latest_checkpoint(tmp_path)
    assert (latest.step, latest.info["k"], latest.history) == (6, 1, ["a", "b"])
    resume.clear_state(tmp_path)
    assert not tmp_path.exists()
