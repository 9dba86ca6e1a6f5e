"""The training loop: lr schedule, exact resume, atomic checkpoints, the NaN guard, 2-process DDP, a learning test
on synthetic shapes judged from pixels, and a short real run through the CLI."""
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

import stargan_core.train as train_mod
from stargan_core.checkpoint import CKPT_NAME, load_generator, save_training_state
from stargan_core.config import TrainConfig
from stargan_core.train import learning_rate, train

REPO = Path(__file__).resolve().parents[1]
COLOURS, FORMS = ("red", "green", "blue"), ("square", "hbar", "vbar")


# ----- a synthetic two-dataset world whose domains can be read off the pixels --------------------------------------
def draw(colour: int, w: int, h: int, dx: int, dy: int, size: int) -> torch.Tensor:
    """A w x h rectangle of a pure colour (0 red, 1 green, 2 blue) on grey, centred + (dx, dy): (3, S, S)."""
    x = torch.zeros(3, size, size)
    rgb = -torch.ones(3)
    rgb[colour] = 1
    top, left = size // 2 - h // 2 + dy, size // 2 - w // 2 + dx
    x[:, top:top + h, left:left + w] = rgb.view(3, 1, 1)
    return x


class World:
    """'shapes': squares labelled by colour (exclusive group) and size (binary 'big'); 'forms': shapes of any
    colour labelled only by their form (categorical). The two are trained jointly through the mask vector."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.small, self.big = (size // 4, size // 2)  # 4 and 8 px sides at 16 px
        self.forms = [(7, 7), (11, 4), (4, 11)] if size == 16 else [(12, 12), (18, 6), (6, 18)]
        self.area_big = (self.small ** 2 + self.big ** 2) / 2  # area threshold between small and big

    def sample(self, which: str, g: torch.Generator) -> tuple[torch.Tensor, list[int]]:
        colour = int(torch.randint(3, (1,), generator=g))
        dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
        if which == "shapes":
            big = int(torch.randint(2, (1,), generator=g))
            side = self.big if big else self.small
            return draw(colour, side, side, dx, dy, self.size), [int(k == colour) for k in range(3)] + [big]
        form = int(torch.randint(3, (1,), generator=g))
        return draw(colour, *self.forms[form], dx, dy, self.size), [int(k == form) for k in range(3)]

    def write(self, folder: Path, which: str, n: int, seed: int) -> str:
        """An on-disk CSV dataset (PNG files + labels.csv + schema.json) for ``train``."""
        folder.mkdir(parents=True)
        g, rows = torch.Generator().manual_seed(seed), []
        for i in range(n):
            x, labels = self.sample(which, g)
            Image.fromarray(((x + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
            rows.append([f"{i}.png", *labels])
        header = ["filename", *COLOURS, "big"] if which == "shapes" else ["filename", *FORMS]
        with open(folder / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
        groups = ([{"name": "colour", "kind": "exclusive", "labels": list(COLOURS)},
                   {"name": "size", "kind": "binary", "labels": ["big"], "on": "big", "off": "small"}]
                  if which == "shapes" else [{"name": "form", "kind": "categorical", "labels": list(FORMS)}])
        (folder / "schema.json").write_text(json.dumps({"name": which, "groups": groups}))
        return str(folder)

    def measure(self, y: torch.Tensor) -> dict:
        """Read colour, area, form and centre off an image (3, S, S) in [-1, 1]: the analytic checker."""
        bg = torch.cat([y[:, 0], y[:, -1], y[:, :, 0], y[:, :, -1]], 1).median(1).values  # (3,) border colour
        fg = (y - bg.view(3, 1, 1)).abs().amax(0) > 0.5  # (S, S) pixels far from the background
        if fg.sum() < 3:
            return dict(colour=None, big=None, form=None, cx=-99.0, cy=-99.0)
        h, w = int((fg.sum(1) >= 2).sum()), int((fg.sum(0) >= 2).sum())  # rows / columns the shape spans
        ys, xs = fg.nonzero(as_tuple=True)
        return dict(colour=int(y[:, fg].mean(1).argmax()), big=bool(fg.sum() > self.area_big),
                    form="hbar" if w > 1.6 * h else "vbar" if h > 1.6 * w else "square",
                    cx=float(xs.float().mean()), cy=float(ys.float().mean()))


def tiny_cfg(tmp_path: Path, **kw) -> TrainConfig:
    """Two tiny on-disk datasets (so the mask alternation runs too) and the smallest nets."""
    world = World(16)
    dirs = [world.write(tmp_path / "shapes", "shapes", 24, 1), world.write(tmp_path / "forms", "forms", 24, 2)]
    base = dict(csv_dirs=dirs, image_size=16, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=2,
                batch_size=4, num_workers=0, n_critic=2, num_iters=6, num_iters_decay=4, log_every=1,
                sample_every=3, n_samples=2, ckpt_every=100, out_dir=str(tmp_path / "run"), test_split=4,
                num_threads=1)  # one thread: reproducible, and far faster than two on a shared machine
    return TrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()  # train(num_threads=1) sets it for the process
    yield
    torch.set_num_threads(n)


def _state(run_dir) -> dict:
    return torch.load(Path(run_dir) / CKPT_NAME, weights_only=True)


# ----- schedule, resume, atomic writes, NaN guard ------------------------------------------------------------------
def test_learning_rate_is_constant_then_linear_to_zero():
    lrs = [learning_rate(1e-4, s, num_iters=200_000, num_iters_decay=100_000) for s in (0, 100_000, 150_000, 199_999)]
    assert lrs == pytest.approx([1e-4, 1e-4, 5e-5, 1e-9])


def test_run_writes_checkpoint_samples_config_and_logs(tmp_path):
    cfg = tiny_cfg(tmp_path)
    result = train(cfg)
    run = Path(cfg.out_dir)
    state = _state(run)
    assert result.step == state["step"] == 6
    assert set(state) == {"G", "D", "g_opt", "d_opt", "step", "model_config", "train_config", "rng"}
    assert json.loads((run / "train_config.json").read_text())["csv_dirs"] == cfg.csv_dirs
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["000003-forms.jpg", "000003-shapes.jpg",
                                                                   "000006-forms.jpg", "000006-shapes.jpg"]
    with Image.open(run / "samples" / "000006-shapes.jpg") as im:  # 2 rows; input + 3 + 1 + 3 domains
        assert im.size == (16 * 8, 16 * 2)
    assert any((run / "logs").iterdir())
    assert {"D/loss_gp/shapes", "G/loss_rec/forms"} <= set(result.logs)
    assert state["g_opt"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * (6 - 5) / 4)  # lr of the last step
    G, mcfg = load_generator(run / CKPT_NAME)
    assert mcfg.schema.c_dim == 4 + 3 + 2 and torch.equal(G.state_dict()["main.0.weight"],
                                                            result.G.state_dict()["main.0.weight"])
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)


def test_ctrl_c_saves_and_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    full = train(tiny_cfg(tmp_path / "a"))
    calls, real_update = [], train_mod.update

    def update_then_ctrl_c(*args, **kw):  # Ctrl-C during step 3's first dataset (of 6 steps x 2 datasets)
        calls.append(1)
        if len(calls) == 5:
            signal.raise_signal(signal.SIGINT)
        return real_update(*args, **kw)

    cfg = tiny_cfg(tmp_path / "b")
    monkeypatch.setattr(train_mod, "update", update_then_ctrl_c)
    stopped = train(cfg)
    assert stopped.step == 3 and _state(cfg.out_dir)["step"] == 3 and len(calls) == 6  # the step was finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    monkeypatch.setattr(train_mod, "update", real_update)
    resumed = train(TrainConfig(**{**cfg.to_dict(), "resume": True}))
    assert resumed.step == 6 and resumed.logs == full.logs
    a, b = _state(tmp_path / "a" / "run"), _state(cfg.out_dir)
    for net in ("G", "D"):
        for k, v in a[net].items():
            assert torch.equal(v, b[net][k]), (net, k)
    for opt in ("g_opt", "d_opt"):
        for i, s in a[opt]["state"].items():
            assert all(torch.equal(s[k], b[opt]["state"][i][k]) for k in s), (opt, i)


def test_resume_refuses_another_architecture(tmp_path):
    cfg = tiny_cfg(tmp_path, num_iters=1)
    train(cfg)
    with pytest.raises(ValueError, match="another model or data schema"):
        train(TrainConfig(**{**cfg.to_dict(), "resume": True, "g_conv_dim": 16, "num_iters": 2}))


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / CKPT_NAME
    script = f"""
        import os, signal, torch
        from stargan_core.checkpoint import save_training_state
        save_training_state({str(path)!r}, {{"step": 1, "w": torch.ones(1000)}})
        def dying_save(obj, f, *a, **k):  # the process is killed in the middle of writing
            f.write(b"half a checkpoint" * 1000); f.flush(); os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        save_training_state({str(path)!r}, {{"step": 2, "w": torch.zeros(1000)}})
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(1000))
    assert len(list(tmp_path.glob(".*.tmp"))) == 1  # the dead writer's temp file, never the checkpoint itself
    save_training_state(path, {"step": 3})  # and the next save still works
    assert torch.load(path, weights_only=True) == {"step": 3}


def test_a_failing_save_raises_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = save_training_state(tmp_path / CKPT_NAME, {"step": 1})

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_training_state(path, {"step": 2})
    assert torch.load(path, weights_only=True) == {"step": 1} and not list(tmp_path.glob(".*.tmp"))


def test_nan_loss_stops_with_a_message_and_the_last_good_checkpoint_intact(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path, num_iters=8, ckpt_every=3, log_every=100, n_critic=1, sample_every=100)
    calls, real_g_loss = [], train_mod.g_loss

    def g_loss_nan_at_step_5(nets, batch, w):
        calls.append(1)
        loss, logs = real_g_loss(nets, batch, w)
        return (loss * float("nan"), logs) if len(calls) == 9 else (loss, logs)  # step 5, first dataset

    monkeypatch.setattr(train_mod, "g_loss", g_loss_nan_at_step_5)
    with pytest.raises(FloatingPointError, match=r"step 6: .*NaN.*last good checkpoint .*is intact"):
        train(cfg)
    state = _state(cfg.out_dir)
    assert state["step"] == 3  # the save at step 6 was refused: weights were already NaN
    assert all(v.isfinite().all() for v in state["G"].values() if v.is_floating_point())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_two_process_gloo_ddp_replicas_hold_identical_weights(tmp_path):
    cfg = tiny_cfg(tmp_path, num_iters=4, sample_every=2, num_threads=1)
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from stargan_core.config import TrainConfig
        from stargan_core.train import train
        result = train(TrainConfig(**{cfg.to_dict()!r}))
        # parameters (InstanceNorm's running stats are buffers: DDP broadcasts rank 0's at every forward,
        # each rank then updates its own copy; they never change an output, see model.py)
        params = lambda net: {{k: v.detach() for k, v in net.named_parameters()}}
        torch.save({{"G": params(result.G), "D": params(result.D), "step": result.step}},
                   {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.pt")
    """))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] == 4 and len(r0["G"]) == 22  # every conv weight and IN affine
    for net in ("G", "D"):
        for k, v in r0[net].items():
            assert torch.equal(v, r1[net][k]), (net, k)
    torch.manual_seed(cfg.seed)  # the initial weights, as train() draws them
    init = train_mod.build_generator(load_generator(Path(cfg.out_dir) / CKPT_NAME)[1])
    assert not torch.equal(init.state_dict()["main.0.weight"], r0["G"]["main.0.weight"])  # it did train
    assert _state(cfg.out_dir)["step"] == 4 and (Path(cfg.out_dir) / "samples" / "000004-shapes.jpg").is_file()
