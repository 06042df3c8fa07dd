"""The resumable data order: micro-batches of (epoch, index) keys for a range of optimizer steps.

Step ``s`` takes batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``'s shuffled order, split
into ``accum_steps`` micro-batches. Starting at any step therefore needs no skipping: the sampler
computes that epoch's order and begins at the right offset. Under data-parallel training a rank yields
only its share of each step's micro-batches (``micros``), so what a step sees is independent of the
number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler

from clipmerge.training.streams import epoch_order


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for optimizer steps ``start`` to ``end - 1``, their micro-batches of (epoch, index) keys.

    Keys carry the epoch so that the dataset can seed each sample's augmentation with (epoch, index)
    without any shared state with its worker processes.
    """

    def __init__(self, size: int, seed: int, batch_size: int, accum_steps: int, start: int, end: int,
                 micros: range | None = None):
        self.size, self.seed = size, seed
        self.batch_size, self.accum_steps = batch_size, accum_steps
        self.start, self.end = start, end
        self.micros = range(accum_steps) if micros is None else micros
        self.steps_per_epoch = size // batch_size  # incomplete last batch dropped (see schedule.py)

    def __len__(self) -> int:
        return (self.end - self.start) * len(self.micros)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        micro = self.batch_size // self.accum_steps
        epoch, order = None, None
        for step in range(self.start, self.end):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                order = epoch_order(self.seed, epoch, self.size).tolist()
            offset = (step % self.steps_per_epoch) * self.batch_size
            for m in self.micros:
                first = offset + m * micro
                yield [(epoch, i) for i in order[first : first + micro]]
