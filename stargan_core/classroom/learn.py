"""Watch it learn: a small StarGAN trained on the shapes world in a couple of minutes, watched while it trains.

``lesson_config`` is the small recipe (the networks and settings a 2-core CPU trains in minutes); ``Lesson`` runs
it with the project's one training loop (``training.loop.train``) in a background thread and, through its ``monitor``
hook, keeps a ``Progress`` that a page or a notebook reads at any time: the three terms of G's objective as
curves, the paper's figure (fixed inputs translated to every domain) and the analytic checker's accuracy per
domain (``shapes.judge``). One ``Lesson`` serves a whole server: a second start while a run trains is refused
with how long it has left, and anyone can watch or stop the run. The web tab (``demo/learn_tab.py``), notebook 03
and the learning test (``tests/test_learn.py``) all use this file.

Why D has 4 stride-2 convs here (``d_repeat_num=4``): with 3, G learnt to draw small marks on the image's border,
which D's classifier (a conv whose kernel spans the whole last map with separate weights per cell, most of them on
the border of a 4x4 map) read as a colour, and some seeds stalled; on a 2x2 last map, as in the paper's D at 128 px,
every cell sees the shape. The checks skip the reconstruction passes of ``shapes.judge``, which the page does not
show. The seed studies and the recipes that did not help: ``docs/EXPERIMENTS.md``.
"""
from __future__ import annotations

import copy
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..config import TrainConfig
from ..data.datasets import load_datasets
from ..domains import DomainSchema
from ..edit.images import grid
from ..nets.model import Generator
from ..nets.translate import translate_domains
from ..training.loop import train
from .shapes import ShapeWorld, judge

SIZE = 32  # px: big enough for three forms and two sizes, small enough for a CPU
# The knobs a teacher changes, with what each does (shown next to the controls).
KNOB_HELP = {
    "lambda_cls": "Weight of the domain classification loss: how hard G is pushed to reach the target domain "
                  "(paper: 1; this short lesson: 2).",
    "lambda_rec": "Weight of the reconstruction (cycle) loss: how hard G must keep what the label does not "
                  "mention, such as where the shape is (paper: 10). Set it to 0 and the shapes wander.",
    "n_critic": "Discriminator updates per generator update (paper: 5, for a long run; 1 learns faster in a "
                "short one).",
    "steps": "Training steps; each trains D (and G) once on each of the two datasets. The paper trains 200,000 "
             "steps on a GPU; here one step takes a few hundredths of a second.",
}


@dataclass
class Knobs:
    """What a teacher may change (see ``KNOB_HELP``); everything else is the small recipe of ``lesson_config``."""

    lambda_cls: float = 2.0  # twice the paper's: with 1, some seeds' colours stall in 1,000 steps (docs/EXPERIMENTS.md)
    lambda_rec: float = 10.0
    n_critic: int = 1
    steps: int = 1000
    seed: int = 0


def lesson_config(work: Path, knobs: Knobs, num_threads: int = 1, **overrides) -> TrainConfig:
    """The small recipe: both shapes datasets written under ``work`` (once) and tiny nets; see the module docstring.

    One thread: on a busy 2-core machine it is faster than two for nets this small, and leaves a core to the page.
    """
    world, data = ShapeWorld(SIZE), []
    for which, seed in (("shapes", 1), ("forms", 2)):
        folder = work / which
        data.append(str(folder) if (folder / "labels.csv").is_file() else world.write(folder, which, 400, seed))
    recipe = dict(csv_dirs=data, image_size=SIZE, g_conv_dim=8, d_conv_dim=16, g_repeat_num=2, d_repeat_num=4,
                       batch_size=8, n_critic=knobs.n_critic, g_lr=1e-3, d_lr=1e-3, lambda_cls=knobs.lambda_cls,
                       lambda_rec=knobs.lambda_rec, num_iters=knobs.steps, num_iters_decay=knobs.steps // 2,
                       seed=knobs.seed, num_workers=0, num_threads=num_threads, log_every=50,
                       sample_every=10**9, ckpt_every=10**9, out_dir=str(work / f"run-{time.time_ns()}"),
                       test_split=8)
    return TrainConfig(**{**recipe, **overrides})


@dataclass
class Progress:
    """What a watcher sees; ``Lesson.progress()`` returns a copy, safe to read while training goes on."""

    state: str = "idle"  # idle | training | done | stopped | failed
    step: int = 0
    steps: int = 0
    seconds: float = 0.0  # since the start (data written, nets built)
    knobs: Knobs = field(default_factory=Knobs)
    losses: list[dict] = field(default_factory=list)  # {"step", "loss", "value"} rows, G's three terms
    accuracy: dict[str, float] = field(default_factory=dict)  # "dataset: domain" -> share judged correct
    checks: list[tuple[float, int, float]] = field(default_factory=list)  # (seconds, step, mean accuracy)
    reached_90: tuple[float, int] | None = None  # (seconds, step) of the first check with mean >= 90%
    figure: Image.Image | None = None  # the paper's figure of the fixed inputs, at the last check
    message: str = ""

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy.values()) / len(self.accuracy) if self.accuracy else 0.0

    def seconds_left(self) -> float:
        """A guess from the pace so far (0 when not training)."""
        if self.state != "training" or self.step == 0:
            return 0.0 if self.state != "training" else 60.0
        return self.seconds / self.step * (self.steps - self.step)


TERMS = {"adversarial": "G/loss_fake", "classification": "G/loss_cls", "reconstruction": "G/loss_rec"}


class Lesson:
    """One training run at a time, in a background thread; ``start``, ``stop``, ``progress``, ``wait``."""

    def __init__(self, check_every: float = 4.0, loss_every: int = 10, n_judge: int = 60) -> None:
        self.check_every, self.loss_every, self.n_judge = check_every, loss_every, n_judge
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread: threading.Thread | None = None
        self._progress = Progress()

    def start(self, knobs: Knobs, work: Path | None = None) -> str | None:
        """Start a run; None when started, else a sentence saying why not (another run is training)."""
        with self._lock:
            if self._progress.state == "training":
                left = self._progress.seconds_left()
                return f"A class is training right now: wait about {left:.0f} s, or watch it with everyone else."
            self._stop.clear()
            self._progress = Progress(state="training", steps=knobs.steps, knobs=knobs, message="starting")
            self._thread = threading.Thread(target=self._run, args=(knobs, work), name="lesson", daemon=True)
            self._thread.start()
        return None

    def stop(self) -> None:
        """Ask the run to stop after its current step (its last check is kept)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> Progress:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.progress()

    def progress(self) -> Progress:
        with self._lock:
            return copy.copy(self._progress)  # lists are replaced, never mutated in place, so a shallow copy holds

    def run(self, knobs: Knobs, work: Path | None = None) -> Progress:
        """Train in this thread's stead and return the final progress (notebooks and tests)."""
        refused = self.start(knobs, work)
        if refused:
            raise RuntimeError(refused)
        return self.wait()

    # ----- the training thread ---------------------------------------------------------------------------------
    def _run(self, knobs: Knobs, work: Path | None) -> None:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="stargan-lesson-") as tmp:
            try:
                cfg = lesson_config(Path(work or tmp), knobs)
                watch = _Watch(self, load_datasets(cfg)[0], t0)
                result = train(cfg, monitor=watch)
                watch.check(result.step, result.G, final=True)
                state = "stopped" if self._stop.is_set() else "done"
                self._update(state=state, message=f"{state} after {result.step} steps")
            except Exception as e:  # shown on the page; the server goes on
                self._update(state="failed", message=f"training failed: {type(e).__name__}: {e}")

    def _update(self, **changes) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self._progress, k, v)


class _Watch:
    """The ``monitor`` given to ``train``: records losses each few steps, judges and draws each few seconds."""

    def __init__(self, lesson: Lesson, schema: DomainSchema, t0: float) -> None:
        self.lesson, self.schema, self.t0, self.last_check = lesson, schema, t0, time.perf_counter()
        self.world = ShapeWorld(SIZE)
        self.fixed = fixed_inputs(self.world)

    def __call__(self, step: int, G: Generator, logs: dict) -> bool:
        lesson = self.lesson
        if step % lesson.loss_every == 0:
            rows = [{"step": step, "loss": term, "value": _mean(logs, key)} for term, key in TERMS.items()
                    if any(k.startswith(key) for k in logs)]
            with lesson._lock:
                lesson._progress.losses = lesson._progress.losses + rows
        lesson._update(step=step, seconds=time.perf_counter() - self.t0, message="training")
        if time.perf_counter() - self.last_check >= lesson.check_every:
            self.check(step, G)
        return lesson._stop.is_set()

    def check(self, step: int, G: Generator, final: bool = False) -> None:
        """Judge every domain (``shapes.judge``) and draw the figure with the weights of ``step``."""
        lesson, was_training = self.lesson, G.training
        G.eval()  # no running-stat updates (outputs do not depend on the mode, see model.py)
        try:
            schema, accuracy = self.schema, {}
            for which in ("shapes", "forms"):
                scores, _ = judge(self.world, G, schema, which, n=lesson.n_judge, reconstruction=False)
                accuracy |= {f"{which}: {k.split(':')[1]}": v for k, v in scores.items() if k.startswith(which)}
            figure = paper_figure(G, schema, self.fixed)
        finally:
            G.train(was_training)
        seconds = time.perf_counter() - self.t0
        mean = sum(accuracy.values()) / len(accuracy)
        with lesson._lock:
            p = lesson._progress
            p.accuracy, p.figure, p.checks = accuracy, figure, p.checks + [(seconds, step, mean)]
            if p.reached_90 is None and mean >= 0.9:
                p.reached_90 = (seconds, step)
        self.last_check = time.perf_counter()


def _mean(logs: dict, key: str) -> float:
    """The mean of one loss over the datasets (logs hold ``key/shapes`` and ``key/forms``)."""
    values = [float(v) for k, v in logs.items() if k == key or k.startswith(key + "/")]
    return sum(values) / len(values)


def fixed_inputs(world: ShapeWorld, per_dataset: int = 4, seed: int = 7) -> list[tuple[str, torch.Tensor, list]]:
    """The figure's inputs: the same few images of each dataset at every check (dataset, x (n, 3, S, S), labels)."""
    g, out = torch.Generator().manual_seed(seed), []
    for which in ("shapes", "forms"):
        xs, labels = zip(*(world.sample(which, g) for _ in range(per_dataset)), strict=True)
        out.append((which, torch.stack(xs), list(labels)))
    return out


@torch.inference_mode()
def paper_figure(G: Generator, schema: DomainSchema, fixed: list, scale: int = 3) -> Image.Image:
    """One row per fixed input: the input, then its translation to every domain of both datasets (named)."""
    blocks, names = [], ["input"]
    for which, x, labels in fixed:
        c_org = torch.zeros(len(x), schema.cls_dim)
        c_org[:, schema.dataset_slice(which)] = torch.tensor(labels, dtype=torch.float32)
        columns = translate_domains(G, x, c_org, schema)
        names = ["input", *(name.lower() for name, _ in columns)]
        blocks.append([x, *(y for _, y in columns)])  # each (n, 3, S, S)
    return grid(names, [torch.cat(column) for column in zip(*blocks, strict=True)], scale)
