"""Pure parts of fine-tuning: recipe, schedule, seeded streams, data order, mixup."""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from clipmerge.commands.training_args import add_recipe_args, recipe_from_args
from clipmerge.errors import ClipmergeError
from clipmerge.training.mixup import mixup, mixup_loss
from clipmerge.training.recipe import Recipe
from clipmerge.training.sampler import StepBatchSampler
from clipmerge.training.schedule import lr_at, steps_per_epoch, total_steps
from clipmerge.training.streams import AUGMENT, ORDER, derive_seed, epoch_order


def test_recipe_defaults_are_wise_ft():
    r = Recipe()
    assert (r.lr, r.weight_decay, r.batch_size, r.epochs, r.warmup_steps, r.grad_clip) == (3e-5, 0.1, 512, 10, 500, 1.0)
    assert (r.label_smoothing, r.mixup_alpha, r.randaugment_ops, r.crop_scale_min) == (0.0, 0.0, 0, 0.9)
    assert not r.no_decay_1d


@pytest.mark.parametrize(
    "bad", [{"lr": 0}, {"batch_size": 10, "accum_steps": 3}, {"label_smoothing": 1.0}, {"randaugment_magnitude": 31},
            {"steps": 0}, {"crop_scale_min": 0}],
)
def test_recipe_rejects_bad_values_naming_them(bad):
    with pytest.raises(ClipmergeError, match=next(iter(bad))):
        Recipe(**bad)


def test_recipe_flags_round_trip():
    parser = argparse.ArgumentParser()
    add_recipe_args(parser)
    assert recipe_from_args(parser.parse_args([])) == Recipe()
    args = parser.parse_args(["--lr", "1e-4", "--steps", "7", "--no-decay-1d", "--accum-steps", "4",
                              "--randaugment-ops", "2"])
    assert recipe_from_args(args) == Recipe(lr=1e-4, steps=7, no_decay_1d=True, accum_steps=4, randaugment_ops=2)


def test_lr_warmup_then_cosine_as_wise_ft():
    base, warmup, total = 1e-3, 4, 14
    assert lr_at(0, base, warmup, total) == pytest.approx(base / 4)
    assert lr_at(3, base, warmup, total) == pytest.approx(base)
    assert lr_at(4, base, warmup, total) == pytest.approx(base)  # cosine starts at its peak
    assert lr_at(9, base, warmup, total) == pytest.approx(base / 2)  # half-way through the decay
    assert lr_at(13, base, warmup, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 10)) * base)
    assert lr_at(0, base, 0, 10) == pytest.approx(base)
    lrs = [lr_at(s, base, warmup, total) for s in range(warmup, total)]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] > 0


def test_total_steps_drop_the_last_incomplete_batch():
    assert steps_per_epoch(44, 8) == 5
    assert total_steps(Recipe(batch_size=8, epochs=3), 44) == 15
    assert total_steps(Recipe(batch_size=8, epochs=3, steps=7), 44) == 7
    with pytest.raises(ClipmergeError, match="fewer than one batch"):
        steps_per_epoch(7, 8)


def test_derived_seeds_differ_by_seed_stream_and_counter():
    seeds = {derive_seed(s, st, c) for s in (0, 1) for st in (ORDER, AUGMENT) for c in (0, 1)}
    assert len(seeds) == 8
    assert derive_seed(3, ORDER, 5) == derive_seed(3, ORDER, 5)
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ClipmergeError):
        derive_seed(-1, ORDER)


def _flatten(sampler):
    return [key for micro in sampler for key in micro]


def test_sampler_epochs_are_permutations_and_resume_is_the_tail():
    size, batch, steps = 20, 6, 7  # 3 steps per epoch, 2 images dropped per epoch
    full = list(StepBatchSampler(size, seed=0, batch_size=batch, accum_steps=1, start=0, end=steps))
    assert len(full) == steps and all(len(b) == batch for b in full)
    epoch0 = [i for b in full[:3] for e, i in b]
    assert all(e == 0 for b in full[:3] for e, _ in b) and len(set(epoch0)) == 18
    assert epoch0 == epoch_order(0, 0, size).tolist()[:18]
    assert full[3][0][0] == 1 and full[6][0][0] == 2
    for start in (1, 3, 5):
        assert list(StepBatchSampler(size, 0, batch, 1, start, steps)) == full[start:]
    assert list(StepBatchSampler(size, 1, batch, 1, 0, steps)) != full


def test_sampler_accumulation_splits_each_batch_in_order():
    full = list(StepBatchSampler(20, 0, 6, 1, 0, 4))
    split = list(StepBatchSampler(20, 0, 6, 3, 0, 4))
    assert len(split) == 12 and all(len(m) == 2 for m in split)
    assert _flatten(split) == _flatten(full)


def test_mixup_mixes_with_the_reversed_batch():
    images, labels = torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    batch = mixup(images, labels, alpha=0.4, seed=7)
    assert 0.5 <= batch.lam <= 1.0
    assert torch.allclose(batch.images, batch.lam * images + (1 - batch.lam) * images.flip(0))
    assert torch.equal(batch.partner_labels, labels.flip(0))
    assert mixup(images, labels, 0.4, seed=7).lam == batch.lam
    assert len({mixup(images, labels, 0.4, seed=s).lam for s in range(5)}) == 5
    same = mixup(images, labels, 0.0, seed=7)
    assert same.images is images and same.lam == 1.0


def test_mixup_loss_is_cross_entropy_against_mixed_soft_targets():
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    batch = mixup(torch.zeros(6, 1), labels, alpha=1.0, seed=3)
    for smoothing in (0.0, 0.1):
        hard = F.one_hot(labels, 4).float()
        soft = batch.lam * hard + (1 - batch.lam) * hard.flip(0)
        soft = soft * (1 - smoothing) + smoothing / 4
        expected = -(soft * logits.log_softmax(dim=1)).sum(dim=1).mean()
        assert mixup_loss(logits, batch, smoothing) == pytest.approx(float(expected), rel=1e-6)
