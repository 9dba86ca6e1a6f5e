"""Typed configuration: ``ModelConfig`` travels with released weights, ``TrainConfig`` with a training run.

``ModelConfig`` holds everything needed to rebuild the networks (architecture + the domain schema) and is saved
as ``config.json`` next to ``model.safetensors``. It carries a ``version`` so that files written by older code
can be read by newer code (``ModelConfig.from_dict`` migrates them). ``TrainConfig`` holds loss weights,
optimiser settings, the schedule, data paths and the seed; the training loop saves it in the run folder and the
command line is derived from its fields.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .domains import CELEBA5, CELEBA5_ATTRS, DomainSchema

CONFIG_VERSION = 1
UPSAMPLES = ("deconv", "resize")  # G's up-sampling: the paper's 4x4 stride-2 transposed conv, or resize + 3x3 conv
ADV_LOSSES = ("wgan-gp", "ns-r1")  # the paper's WGAN-GP, or StarGAN v2's non-saturating loss with R1


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Refuse a value outside ``allowed`` with a sentence that names the allowed ones."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, not {value!r}")


@dataclass
class ModelConfig:
    """Architecture of G and D plus the label schema (paper appendix defaults: 128 px, 64 channels, 6 blocks)."""

    schema: DomainSchema = CELEBA5
    image_size: int = 128
    g_conv_dim: int = 64
    d_conv_dim: int = 64
    g_repeat_num: int = 6  # residual blocks in G
    d_repeat_num: int = 6  # stride-2 convs in D
    upsample: str = field(default="deconv", metadata={"choices": UPSAMPLES})  # files without it: the paper's deconv
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        check_choice("upsample", self.upsample, UPSAMPLES)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["schema"] = self.schema.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Read a config written by this or an older version (unknown newer versions are refused)."""
        d = dict(d)
        version = d.pop("version", 1)
        if version > CONFIG_VERSION:
            raise ValueError(f"config version {version} is newer than this code understands ({CONFIG_VERSION}); "
                             "upgrade stargan_core")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["schema"] = DomainSchema.from_dict(d["schema"]) if "schema" in d else CELEBA5
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class TrainConfig:
    """One training run (paper section 4 / appendix defaults). The CLI exposes every field as a flag."""

    # data: one or several datasets; several train jointly through the mask vector
    celeba_dir: str = ""  # folder holding list_attr_celeba.txt and images/ (or img_align_celeba/)
    attrs: list[str] = field(default_factory=lambda: list(CELEBA5_ATTRS))
    rafd_dir: str = ""  # folder with one sub-folder per expression
    csv_dirs: list[str] = field(default_factory=list)  # generic folders with labels.csv (+ schema.json)
    # share of the last dataset's batches drawn from CelebA's training images labelled by their Smiling attribute
    # (0 = none): a two-class neutral/smiling set of a few hundred studio photos gets faces in the wild too
    celeba_smiling_share: float = 0.0
    test_split: float = 0.0  # held out: >=1 a count, <1 a ratio; 0 = official 2,000 (10% for sets < 20,000)
    flip: bool = True  # random horizontal flip (official preprocessing)
    image_size: int = 128
    batch_size: int = 16  # per process under torchrun
    num_workers: int = 2
    cache: bool = True  # decode every image once into uint8 at image_size (run folder); False = decode per step
    # model
    g_conv_dim: int = 64
    d_conv_dim: int = 64
    g_repeat_num: int = 6
    d_repeat_num: int = 6
    # G's up-sampling: deconv (the paper) or resize (nearest x2 + 3x3 conv, against checkerboard; Odena et al. 2016)
    upsample: str = field(default="deconv", metadata={"choices": UPSAMPLES})
    # loss: wgan-gp (the paper, with lambda_gp) or ns-r1 (StarGAN v2: non-saturating + R1 on real, with lambda_r1)
    adv_loss: str = field(default="wgan-gp", metadata={"choices": ADV_LOSSES})
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_gp: float = 10.0
    lambda_r1: float = 1.0
    # identity loss |G(x, c_org) - x|_1 (CycleGAN's identity mapping, Zhu et al. 2017; not in StarGAN: 0 = off). It
    # keeps G's colours where no change is asked, the drift the app's blend would otherwise carry into edits
    lambda_id: float = 0.0
    # keep loss |G(x, c) - G0(x, c)|_1 on the datasets of the --init-from release G0 (Learning without Forgetting,
    # Li & Hoiem 2016; not in StarGAN: 0 = off): a second dataset learnt without losing the release's own edits
    lambda_keep: float = 0.0
    # optimisation
    num_iters: int = 200_000
    num_iters_decay: int = 100_000  # lr decays linearly to 0 over the last num_iters_decay steps
    warmup_iters: int = 0  # lr ramps up linearly over the first steps (after --init-step): gentler on trained weights
    # wall-clock budget in minutes (0 = off): the run measures its speed and brings num_iters forward to the step it
    # reaches by then, so a lent GPU's few minutes end with the lr decayed and a checkpoint saved (training/budget.py)
    minutes: float = 0.0
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    n_critic: int = 5
    beta1: float = 0.5
    beta2: float = 0.999
    # run
    out_dir: str = "runs/stargan"
    resume: bool = False  # continue out_dir/checkpoint.pt with its train_config.json (flags given override it)
    init_from: str = ""  # a release folder: start from its G (and D) weights, with fresh optimisers (new machine)
    init_step: int = 0  # with init_from: the step the run starts at (lr schedule and data order go on from there)
    seed: int = 0
    device: str = "auto"  # auto = cuda > mps > cpu
    num_threads: int = 0  # CPU threads for torch (0 = torch's default; 1 is far faster on a busy machine)
    bf16: bool = False  # bf16 autocast (CUDA only)
    compile: bool = False  # torch.compile the generator (CUDA or CPU; on CPU it needs a C compiler)
    log_every: int = 10
    sample_every: int = 1000
    n_samples: int = 8  # held-out images in each sample grid
    ckpt_every: int = 10_000

    def __post_init__(self) -> None:
        check_choice("upsample", self.upsample, UPSAMPLES)
        check_choice("adv_loss", self.adv_loss, ADV_LOSSES)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
