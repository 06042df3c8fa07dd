"""Counter-based random streams: every random draw of a run is a pure function of (seed, stream, counters).

Data order depends on (seed, epoch), augmentation on (seed, epoch, sample index), mixup on (seed, step,
micro-batch) and the global torch RNG (dropout, if an architecture has any) on (seed, step). So:

- the seed changes only these draws: the initial weights and the recipe are the same for every seed;
- a resumed run needs no RNG state, only the step, and continues bit-identically;
- augmentation does not depend on the number of DataLoader workers or which worker loads a sample;
- seed runs trained in one process (periodic Model Stock) do not perturb each other's streams.

Seeds are mixed with numpy's SeedSequence, so nearby seeds and counters give independent streams.
"""

from __future__ import annotations

import numpy as np
import torch

from clipmerge.errors import ClipmergeError

# Stream ids: fixed forever, or the same seed would draw different numbers after an upgrade.
ORDER, AUGMENT, MIXUP, TORCH_GLOBAL = 1, 2, 3, 4


def derive_seed(seed: int, stream: int, *counters: int) -> int:
    """A 63-bit seed for ``stream`` at position ``counters`` of the run seeded with ``seed``."""
    if seed < 0:
        raise ClipmergeError(f"seeds must be >= 0, got {seed}")
    state = np.random.SeedSequence([seed, stream, *counters]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def epoch_order(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The shuffled order of ``size`` sample indices in ``epoch``."""
    generator = torch.Generator().manual_seed(derive_seed(seed, ORDER, epoch))
    return torch.randperm(size, generator=generator)


def seed_global_rng(seed: int, step: int) -> None:
    """Seed torch's global RNGs (CPU and CUDA) for optimizer step ``step`` (dropout and the like)."""
    torch.manual_seed(derive_seed(seed, TORCH_GLOBAL, step))
