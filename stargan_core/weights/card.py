"""The model card of a release: what a model edits, what it was trained on (and that data's licence), how well.

``model_card(release)`` reads ``config.json`` (the domain schema and architecture), and when present the release's
``metrics.json`` (written by evaluation) and ``MODEL_CARD.md`` (free-form training notes), and returns the
``README.md`` text that ``hub.push_to_hub`` uploads: YAML metadata for the Hub, then plain Markdown sections.
Nothing here touches the network.
"""
from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..config import ModelConfig
from .formats import CONFIG_NAME, D_WEIGHTS_NAME

# What is known about the datasets a schema can name: (description, licence sentence, licence link).
DATASETS = {
    "celeba": ("CelebA (Liu et al., ICCV 2015), 202,599 aligned celebrity faces with 40 binary attributes",
               "CelebA is available for non-commercial research purposes only, so these weights are too",
               "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
    "rafd": ("RaFD, the Radboud Faces Database (Langner et al., 2010), 67 models posing 8 expressions",
             "RaFD may be used for non-commercial scientific research only, under its own licence agreement",
             "https://rafd.socsci.ru.nl/"),
    "london": ("the Face Research Lab London Set (DeBruine & Jones, 2017), 102 adults photographed neutral and "
               "smiling", "The London Set is CC BY 4.0; attribution: DeBruine, L., & Jones, B. (2017). Face Research "
               "Lab London Set (Version 5). figshare. https://doi.org/10.6084/m9.figshare.5047666.v5",
               "https://doi.org/10.6084/m9.figshare.5047666.v5"),
}
UPSAMPLING = {"deconv": "up-sampling by 4x4 transposed convolutions (the paper)",
              "resize": "up-sampling by nearest-neighbour resize + 3x3 convolution (Odena et al. 2016, against "
                        "checkerboard artifacts)"}
CITATION = """@inproceedings{choi2018stargan,
  title={StarGAN: Unified Generative Adversarial Networks for Multi-Domain Image-to-Image Translation},
  author={Choi, Yunjey and Choi, Minje and Kim, Munyoung and Ha, Jung-Woo and Kim, Sunghun and Choo, Jaegul},
  booktitle={CVPR}, year={2018}}"""


def model_card(release: str | Path, repo_id: str | None = None) -> str:
    """README.md text for the release folder ``release`` (to be published as ``repo_id``)."""
    release = Path(release)
    cfg = ModelConfig.load(release / CONFIG_NAME)
    names = [ds.name for ds in cfg.schema.datasets]
    data = ModelCardData(license="other", license_name="non-commercial-research", pipeline_tag="image-to-image",
                         library_name="pytorch", tags=["stargan", "gan", "face-editing", "image-to-image"],
                         license_link=next((DATASETS[n][2] for n in names if n in DATASETS), None))
    body = [f"# StarGAN{': ' + repo_id.split('/')[-1] if repo_id else ''}",
            "A StarGAN generator (Choi et al., CVPR 2018): one network that edits a face towards any of the "
            "domains below, released by StarGAN studio.",
            _controls(cfg), _architecture(cfg, (release / D_WEIGHTS_NAME).is_file()), _training_data(names),
            _metrics(release / "metrics.json"), _notes(release / "MODEL_CARD.md"), _usage(repo_id),
            f"## Citation\n\n```bibtex\n{CITATION}\n```"]
    text = f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(b for b in body if b) + "\n"
    ModelCard(text)  # parses the metadata back: a malformed card fails here, not on the Hub
    return text


def _controls(cfg: ModelConfig) -> str:
    rows = [f"| {cfg.schema.dataset_of(g.name)} | `{g.name}` | {g.kind} | {', '.join(g.options())} |"
            for g in cfg.schema.groups]
    return ("## What it edits\n\nEach control is set to `keep` or one of its options.\n\n"
            "| dataset | control | kind | options |\n|---|---|---|---|\n" + "\n".join(rows))


def _architecture(cfg: ModelConfig, has_d: bool) -> str:
    return (f"## Model\n\n- input and output: {cfg.image_size}x{cfg.image_size} RGB face crops in [-1, 1]\n"
            f"- generator: {cfg.g_conv_dim} base channels, {cfg.g_repeat_num} residual blocks, condition of "
            f"{cfg.schema.c_dim} values, {UPSAMPLING[cfg.upsample]} (`model.safetensors`)\n"
            + (f"- discriminator: {cfg.d_conv_dim} base channels; its classifier estimates a face's "
               f"{cfg.schema.cls_dim} attributes (`{D_WEIGHTS_NAME}`)" if has_d else
               "- no discriminator is shipped: a person marks a face's current attributes"))


def _training_data(names: list[str]) -> str:
    lines = [f"- **{n}**: {DATASETS[n][0]}. {DATASETS[n][1]} ({DATASETS[n][2]})." if n in DATASETS else
             f"- **{n}**: a custom dataset; see the training notes for its source and licence." for n in names]
    return "## Training data and licence\n\n" + "\n".join(lines)


def _metrics(path: Path) -> str:
    if not path.is_file():
        return "## Metrics\n\nNo evaluation was shipped with this release."
    rows = [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in _flatten(json.loads(path.read_text())).items()]
    return "## Metrics\n\n| metric | value |\n|---|---|\n" + "\n".join(rows)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _notes(path: Path) -> str:
    return f"## Training notes\n\n{path.read_text().strip()}" if path.is_file() else ""


def _usage(repo_id: str | None) -> str:
    return ("## Use\n\n```python\nfrom PIL import Image\nfrom stargan_core.pipeline import StarGANPipeline\n\n"
            f"pipe = StarGANPipeline.from_pretrained(\"{repo_id or 'path/to/release'}\")\n"
            "result = pipe(Image.open(\"photo.jpg\"), {\"hair\": \"blond\"})\nresult.image.save(\"edited.jpg\")\n```"
            f"\n\nor `python -m stargan_core translate photo.jpg --model {repo_id or 'path/to/release'} "
            "--hair blond`.")
