"""A run that must end by a wall-clock deadline (``train --minutes``), with its schedule finished.

A lent GPU comes for a few minutes, and how many steps fit depends on the card, the batch and the compiler, none
known before it starts. A fixed ``--num-iters`` either ends early (minutes wasted) or is killed mid-schedule, its
learning rate never decayed (a joint run's CelebA targets swung by several points every hundred steps at a
constant rate: ``docs/EXPERIMENTS.md``). So the run measures its own speed and brings ``num_iters`` forward to the
step it reaches in time; the lr schedule (``loop.learning_rate``) decays to 0 over the last ``num_iters_decay``
steps before it, as it would for a run given that ``num_iters``.
"""
from __future__ import annotations

import time
from collections.abc import Callable

WARM_STEPS = 3  # not measured: compilation and cuDNN's search make the first steps far slower than the rest
SAFETY = 0.97  # of the time left is planned for: the last save and a slower step or two still fit


class Budget:
    """The end of a run given ``minutes`` of wall clock from this object's creation: ``end(done)``, called after
    each step with the steps done so far, is the step the run should stop at (``done`` itself once time is up),
    never beyond ``num_iters``."""

    def __init__(self, minutes: float, num_iters: int, clock: Callable[[], float] = time.monotonic):
        if minutes <= 0:
            raise ValueError(f"--minutes must be more than 0 (0, the default: no deadline); got {minutes}")
        self.clock, self.num_iters = clock, num_iters
        self.deadline = clock() + 60 * minutes
        self.seen, self.ref = 0, None  # steps seen; (done, time) where the measurement starts

    def end(self, done: int) -> int:
        """The step to stop at: ``done`` plus the steps the speed measured since warm-up fits into the time left."""
        now = self.clock()
        left = self.deadline - now
        if left <= 0:
            return done
        self.seen += 1
        if self.ref is None:
            if self.seen >= WARM_STEPS:
                self.ref = (done, now)
            return self.num_iters
        steps, secs = done - self.ref[0], now - self.ref[1]
        if steps <= 0 or secs <= 0:
            return self.num_iters
        return min(self.num_iters, done + int(left * SAFETY * steps / secs))
