"""What a run starts from and which recipe it trains with: --init-from a release (fresh optimisers at the given step,
--lambda-keep pinning G to the release, and the surgery that converts up-convs or widens G on the way in), and the
StarGAN line's documented improvements as options (resize up-convs, the non-saturating loss with R1) from the flags to
a release that the pipeline runs."""
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

import stargan_core.training.loop as train_mod
from conftest import run_state, tiny_cfg
from stargan_core.config import TrainConfig
from stargan_core.training.loop import learning_rate, train
from stargan_core.weights.formats import CKPT_NAME, load_generator, save_release


# ----- going on from a release: --init-from, --lambda-keep, surgery ---------------------------------------------------
def test_a_run_goes_on_from_a_release_with_fresh_optimisers_at_the_given_step(tmp_path, monkeypatch):
    first = train(tiny_cfg(tmp_path / "a"))
    release = save_release(first.G, load_generator(tmp_path / "a" / "run" / CKPT_NAME)[1], tmp_path / "release",
                           dtype=torch.float32, D=first.D)
    seen, real_update = [], train_mod.update

    def spy(nets, d_opt, g_opt, *args, **kw):  # what the first update of the new run starts from
        if not seen:
            seen.append(({k: v.clone() for k, v in nets.G.state_dict().items()},
                         {k: v.clone() for k, v in nets.D.state_dict().items()}, d_opt.param_groups[0]["lr"],
                         len(d_opt.state)))
        return real_update(nets, d_opt, g_opt, *args, **kw)

    monkeypatch.setattr(train_mod, "update", spy)
    cfg = tiny_cfg(tmp_path / "b", init_from=str(release), init_step=4, num_iters=6, num_iters_decay=4)
    result = train(cfg)
    g0, d0, lr, n_opt_state = seen[0]
    assert result.step == 6 and run_state(cfg.out_dir)["step"] == 6
    assert all(torch.equal(v, first.G.state_dict()[k]) for k, v in g0.items())
    assert all(torch.equal(v, first.D.state_dict()[k]) for k, v in d0.items())
    assert lr == pytest.approx(learning_rate(cfg.d_lr, 4, 6, 4)) and n_opt_state == 0  # schedule at step 4, fresh Adam


def test_lambda_keep_pins_g_to_the_release_on_the_release_datasets_only(tmp_path, monkeypatch):
    from stargan_core.training.state import init_from_release
    one = tiny_cfg(tmp_path / "a")
    first = train(replace(one, csv_dirs=one.csv_dirs[:1]))  # a release that knows "shapes" only
    release = save_release(first.G, load_generator(tmp_path / "a" / "run" / CKPT_NAME)[1], tmp_path / "release",
                           dtype=torch.float32, D=first.D)
    seen, real_update = [], train_mod.update

    def spy(nets, d_opt, g_opt, batch, cfg, g_step, *args, **kw):
        seen.append((g_step, batch.c_trg[0, -2:].tolist(), batch.x_real, batch.c_trg, batch.x_keep))
        return real_update(nets, d_opt, g_opt, batch, cfg, g_step, *args, **kw)

    monkeypatch.setattr(train_mod, "update", spy)
    cfg = tiny_cfg(tmp_path / "b", init_from=str(release), init_step=4, num_iters=6, lambda_keep=5.0)
    result = train(cfg)
    joint = load_generator(Path(cfg.out_dir) / CKPT_NAME)[1]  # the run's model config (both datasets)
    teacher = train_mod.build_generator(joint).eval()
    init_from_release(str(release), teacher, None, joint)
    kept = [(mask, x, c, keep) for g_step, mask, x, c, keep in seen if keep is not None]
    assert [mask for mask, *_ in kept] == [[1.0, 0.0]]  # one G step, on the release's dataset only
    assert all(keep is None for g_step, mask, *_, keep in seen if not g_step or mask == [0.0, 1.0])
    _, x, c, keep = kept[0]
    with torch.no_grad():
        assert torch.allclose(keep, teacher(x, c), atol=1e-6)
    # G has not moved before its first step, so the release and G agree: the loss is 0 and grows after
    assert float(result.logs["G/loss_keep/shapes"]) == pytest.approx(0.0, abs=1e-6)
    assert "G/loss_keep/forms" not in result.logs
    with pytest.raises(ValueError, match="--init-from"):
        train(tiny_cfg(tmp_path / "c", num_iters=1, lambda_keep=1.0))


def test_init_from_refuses_another_architecture_and_starts_d_fresh_without_one(tmp_path, capsys):
    first = train(tiny_cfg(tmp_path / "a", num_iters=1))
    cfg0 = load_generator(tmp_path / "a" / "run" / CKPT_NAME)[1]
    save_release(first.G, cfg0, tmp_path / "g_only")
    with pytest.raises(ValueError, match="differs from this run"):
        train(tiny_cfg(tmp_path / "b", init_from=str(tmp_path / "g_only"), g_repeat_num=2, num_iters=1))
    train(tiny_cfg(tmp_path / "c", init_from=str(tmp_path / "g_only"), num_iters=1))
    assert "the discriminator starts from scratch" in capsys.readouterr().out


def test_init_from_a_deconv_release_with_upsample_resize_converts_its_up_convs(tmp_path, capsys):
    first = train(tiny_cfg(tmp_path / "a", num_iters=1))
    cfg0 = load_generator(tmp_path / "a" / "run" / CKPT_NAME)[1]
    release = save_release(first.G, cfg0, tmp_path / "rel", dtype=torch.float32, D=first.D)
    result = train(tiny_cfg(tmp_path / "b", init_from=str(release), init_step=4, num_iters=5, upsample="resize"))
    assert "transposed convs became nearest-resize 3x3 convs" in capsys.readouterr().out
    G, cfg = load_generator(tmp_path / "b" / "run" / CKPT_NAME)
    assert result.step == 5 and cfg.upsample == "resize" and cfg == replace(cfg0, upsample="resize")
    assert G.main[-5][1].weight.shape[-2:] == (3, 3)  # the last up conv is a 3x3 after a resize


def test_init_from_with_a_wider_g_conv_dim_widens_the_release_and_trains(tmp_path, capsys):
    first = train(tiny_cfg(tmp_path / "a", num_iters=1))
    cfg0 = load_generator(tmp_path / "a" / "run" / CKPT_NAME)[1]
    release = save_release(first.G, cfg0, tmp_path / "rel", dtype=torch.float32, D=first.D)
    train(tiny_cfg(tmp_path / "b", init_from=str(release), init_step=4, num_iters=6, g_conv_dim=12))
    assert "G widened from 8 to 12 base channels" in capsys.readouterr().out
    G, cfg = load_generator(tmp_path / "b" / "run" / CKPT_NAME)
    assert cfg == replace(cfg0, g_conv_dim=12) and G.main[0].weight.shape[0] == 12
    assert not torch.equal(G.main[0].weight[:8], first.G.main[0].weight)  # it trained on from the release's



# ----- the documented improvements from the StarGAN line, as options ----------------------------------------------
def test_resize_and_ns_r1_flags_reach_the_config_and_bad_values_are_refused(capsys):
    from stargan_core.cli import build_parser, dataclass_from_args
    args = build_parser().parse_args(["train", "--upsample", "resize", "--adv-loss", "ns-r1", "--lambda-r1", "0.5"])
    cfg, _ = dataclass_from_args(TrainConfig, args)
    assert (cfg.upsample, cfg.adv_loss, cfg.lambda_r1) == ("resize", "ns-r1", 0.5)
    assert (TrainConfig().upsample, TrainConfig().adv_loss) == ("deconv", "wgan-gp")  # the paper's recipe
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--upsample", "bilinear"])
    assert "invalid choice: 'bilinear' (choose from 'deconv', 'resize')" in capsys.readouterr().err


def test_a_resize_ns_r1_run_trains_exports_and_its_release_runs_through_load_model_and_the_pipeline(tmp_path):
    from stargan_core.edit.inference import MAX_ERROR, fp32, mean_error, onnxruntime, onnxruntime_int8_blocks
    from stargan_core.edit.pipeline import StarGANPipeline
    from stargan_core.weights.card import model_card
    from stargan_core.weights.formats import export_run
    from stargan_core.weights.hub import load_model

    cfg = tiny_cfg(tmp_path, image_size=32, g_repeat_num=2, upsample="resize", adv_loss="ns-r1", num_iters=4,
                   sample_every=100)
    result = train(cfg)
    assert result.step == 4 and {"D/loss_r1/shapes", "D/loss_real/forms", "G/loss_fake/shapes"} <= set(result.logs)
    assert not any("loss_gp" in k for k in result.logs) and all(map(torch.isfinite, map(torch.tensor,
                                                                                       result.logs.values())))
    release = export_run(cfg.out_dir, tmp_path / "release")
    assert json.loads((release / "config.json").read_text())["upsample"] == "resize"
    loaded = load_model(str(release))  # a local release folder: G strictly, D beside it
    assert loaded.config.upsample == "resize" and loaded.D is not None
    assert isinstance(loaded.G.main[11][0], torch.nn.Upsample)  # 9 + 2 residual blocks: the first up stage
    x, c = torch.rand(2, 3, 32, 32) * 2 - 1, torch.eye(9)[:2]
    with torch.no_grad():  # the release is the trained G, in fp16
        assert (loaded.G(x, c) - result.G.cpu().eval()(x, c)).abs().max() < 0.02
    ref = fp32(loaded.G, x, c)(x, c)
    assert mean_error(onnxruntime(loaded.G, x, c)(x, c), ref) < 0.01  # ONNX export (Resize op) in fp32
    # the cautious int8 recipe, for nets whose ranges int8 does not hold (a 4-step net is near random): it finds
    # the residual blocks after the first (main.10 here) by name
    assert mean_error(onnxruntime_int8_blocks(loaded.G, x, c)(x, c), ref) < MAX_ERROR
    pipe = StarGANPipeline(loaded.G, loaded.config, loaded.D, path="fp32")
    figure = pipe.all_domains(Image.new("RGB", (40, 40), (200, 120, 90)), whole_image=True)
    assert figure.width == 32 * (1 + 7) and figure.height > 32  # the input, then 4 shapes + 3 forms domains
    assert "nearest-neighbour resize + 3x3 convolution" in model_card(release)


# ----- a run given minutes (a lent GPU's few): it plans its end from its speed and ends with the lr decayed ---------
def test_a_budget_plans_the_end_from_the_measured_speed_and_stops_when_time_is_up():
    from stargan_core.training.budget import Budget
    t = [0.0]
    budget = Budget(1.0, 10_000, clock=lambda: t[0])  # 60 s from t = 0
    done, end, ends = 0, 10_000, []
    while done < end:  # as the loop: a step, then the plan
        done += 1
        t[0] += 10.0 if done <= 2 else 1.0  # two slow first steps (compilation), then 1 s a step
        end = budget.end(done)
        ends.append(end)
    assert ends[:3] == [10_000] * 3  # not measured while warming up
    assert ends[3] == 4 + int(38 * 0.97)  # 1 step/s measured, 38 s left, 3% kept in hand
    assert done == 41 and t[0] == 59.0  # the last step that fits
    t[0] = 61.0
    assert budget.end(50) == 50  # time is up: stop now
    capped = Budget(1.0, 20, clock=lambda: t[0] - 61)
    assert max(capped.end(k) for k in range(1, 10)) == 20  # never beyond num_iters


def test_a_run_given_minutes_ends_in_time_with_its_lr_decayed_and_its_config_saying_where(tmp_path, monkeypatch):
    from stargan_core.training import budget as budget_mod
    from stargan_core.training.state import resume_config
    ticks = iter(range(10_000))  # a clock that advances 1 s each time it is read: once at the start, once a step
    monkeypatch.setattr(train_mod, "Budget", lambda m, n: budget_mod.Budget(m, n, clock=lambda: float(next(ticks))))
    lrs, real_update = [], train_mod.update

    def spy(nets, d_opt, g_opt, *args, **kw):
        lrs.append(d_opt.param_groups[0]["lr"])
        return real_update(nets, d_opt, g_opt, *args, **kw)

    monkeypatch.setattr(train_mod, "update", spy)
    cfg = tiny_cfg(tmp_path, num_iters=1000, num_iters_decay=4, minutes=0.2, sample_every=1000)  # 12 s: ~11 steps
    result = train(cfg)
    assert 8 <= result.step <= 12 and run_state(cfg.out_dir)["step"] == result.step  # saved where it ended
    saved = json.loads((Path(cfg.out_dir) / "train_config.json").read_text())
    assert saved["num_iters"] == result.step and saved["minutes"] == 0.2  # a --resume knows the schedule ended
    again = resume_config(replace(cfg, resume=True, num_iters=result.step + 5), {"out_dir", "resume", "num_iters"})
    assert again.minutes == 0 and again.num_iters == result.step + 5  # the deadline was that session's, not the run's
    per_step = lrs[::2]  # two datasets: two updates a step
    assert per_step[0] == cfg.d_lr and per_step[-1] == pytest.approx(cfg.d_lr / 4)  # decayed to its last step's
    assert per_step[-4:] == pytest.approx([cfg.d_lr * k / 4 for k in (4, 3, 2, 1)])
