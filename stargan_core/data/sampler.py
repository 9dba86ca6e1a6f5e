"""The order of the training data: the batch indices of step ``k`` as a pure function of (seed, k).

A resumed run must see the very batches an uninterrupted one would have seen, so the sampler keeps no iterator
state to save: ``StepSampler.indices(step)`` computes them from the step, and under DDP each rank takes its own
slice of the global batch.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class StepSampler(Sampler[list[int]]):
    """Batch indices as a pure function of the step: epoch e is ``randperm(n)`` seeded by (seed, e).

    Starting at ``start_step`` reproduces exactly what an uninterrupted run would have drawn. Under DDP each
    rank takes its own ``batch_size`` slice of a global batch of ``batch_size * world`` indices.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.rank, self.world = start_step, rank, world

    def indices(self, step: int) -> list[int]:
        """The indices this rank uses at ``step``."""
        glob = self.batch_size * self.world
        first = step * glob + self.rank * self.batch_size  # position in the endless concatenation of epochs
        out: list[int] = []
        while len(out) < self.batch_size:
            epoch, pos = divmod(first + len(out), self.n)
            out += self._perm(epoch)[pos:pos + self.batch_size - len(out)]
        return out

    def _perm(self, epoch: int) -> list[int]:
        if getattr(self, "_cached", (None,))[0] != epoch:  # one permutation per epoch, computed once
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._cached = (epoch, torch.randperm(self.n, generator=g).tolist())
        return self._cached[1]

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.indices(step)
            step += 1
