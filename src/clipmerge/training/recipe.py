"""The fine-tuning recipe: every hyper-parameter that defines a fine-tuned model, in one frozen dataclass.

Defaults are wise-ft's end-to-end ViT-B/32 recipe (AdamW lr 3e-5, wd 0.1, batch 512, 10 epochs,
500 warm-up steps, cosine decay, gradient clipping 1.0, no label smoothing, RandomResizedCrop
scale 0.9-1.0). Model-soups' sweep adds mixup, label smoothing and RandAugment, all off here by default.
Things that do not change the result (workers, device choice, checkpoint frequency) are not in the recipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from clipmerge.errors import ClipmergeError


def _hp(default, help_text: str, parse=None):
    return field(default=default, metadata={"help": help_text, "parse": parse})


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one fine-tune (the same for every seed and for periodic Model Stock)."""

    lr: float = _hp(3e-5, "AdamW peak learning rate")
    weight_decay: float = _hp(0.1, "AdamW decoupled weight decay")
    # wise-ft/model-soups decay every parameter; open_clip's trainer exempts gains and biases. Default: all.
    no_decay_1d: bool = _hp(False, "exempt 1-D parameters (biases, LayerNorm gains, class embedding) from decay")
    adam_beta1: float = _hp(0.9, "AdamW beta1 (torch default, as wise-ft)")
    adam_beta2: float = _hp(0.999, "AdamW beta2 (torch default, as wise-ft)")
    adam_eps: float = _hp(1e-8, "AdamW epsilon (torch default, as wise-ft)")
    warmup_steps: int = _hp(500, "linear warm-up steps before the cosine decay")
    epochs: int = _hp(10, "passes over the training set")
    steps: int | None = _hp(None, "total optimizer steps; overrides --epochs", parse=int)
    batch_size: int = _hp(512, "images per optimizer step")
    accum_steps: int = _hp(1, "micro-batches per optimizer step (gradient accumulation); divides --batch-size")
    grad_clip: float = _hp(1.0, "max global gradient norm; 0 = no clipping")
    label_smoothing: float = _hp(0.0, "label smoothing of the cross-entropy")
    mixup_alpha: float = _hp(0.0, "mixup Beta(alpha, alpha); 0 = off")
    randaugment_ops: int = _hp(0, "torchvision RandAugment num_ops; 0 = off")
    randaugment_magnitude: int = _hp(9, "torchvision RandAugment magnitude (0-30)")
    crop_scale_min: float = _hp(0.9, "RandomResizedCrop minimum area scale (maximum 1.0)")

    def __post_init__(self) -> None:
        checks = {
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "adam_beta1": 0 <= self.adam_beta1 < 1,
            "adam_beta2": 0 <= self.adam_beta2 < 1,
            "adam_eps": self.adam_eps > 0,
            "warmup_steps": self.warmup_steps >= 0,
            "epochs": self.epochs >= 1,
            "steps": self.steps is None or self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "accum_steps": self.accum_steps >= 1 and self.batch_size % self.accum_steps == 0,
            "grad_clip": self.grad_clip >= 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "mixup_alpha": self.mixup_alpha >= 0,
            "randaugment_ops": self.randaugment_ops >= 0,
            # torchvision's RandAugment has 31 magnitude bins: 0..30.
            "randaugment_magnitude": 0 <= self.randaugment_magnitude <= 30,
            "crop_scale_min": 0 < self.crop_scale_min <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            hint = " (accum_steps must divide batch_size)" if "accum_steps" in bad else ""
            raise ClipmergeError(f"invalid fine-tuning recipe: {values}{hint}")

    def check_split(self, ranks: int) -> None:
        """Data-parallel training deals each step's ``accum_steps`` micro-batches out to ``ranks`` ranks.

        Raises:
            ClipmergeError: they do not split evenly.
        """
        if self.accum_steps % ranks:
            raise ClipmergeError(
                f"batch_size {self.batch_size} in accum_steps {self.accum_steps} micro-batches cannot be split "
                f"over {ranks} ranks: set accum_steps to a multiple of {ranks} (each rank then computes "
                f"accum_steps / {ranks} micro-batches of batch_size / accum_steps images per step)")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.accum_steps

    def to_json(self) -> dict:
        return asdict(self)


def rand_augment_name(hparams: dict) -> str | None:
    """A fine-tune's RandAugment: an imported model's ``augment`` record as its hparams file writes it
    (model-soups: timm's ``rand-mM-nN`` or "none"), else the recipe's in that notation, marked as
    torchvision's: ``tv-rand-m<magnitude>-n<ops>`` ("none" with 0 ops; None without RandAugment keys).
    The magnitude is torchvision's bin (0-30, timm's 0-10 scale times 3), so it is not timm's number.
    """
    if hparams.get("augment") is not None:
        return str(hparams["augment"])
    if "randaugment_ops" not in hparams:
        return None
    ops = hparams["randaugment_ops"]
    magnitude = hparams.get("randaugment_magnitude", Recipe.randaugment_magnitude)
    return "none" if ops == 0 else f"tv-rand-m{magnitude}-n{ops}"
