"""evaluate-expression: each held-out face is edited to the other expression and judged by a Smiling classifier."""
import torch
from PIL import Image

from stargan_core.config import ModelConfig
from stargan_core.data.datasets import ImageLabels
from stargan_core.domains import JOINT_LONDON, DatasetSpec, DomainSchema, Group
from stargan_core.evaluation.classifier import AttributeClassifier, build_classifier, load_classifier, save_classifier
from stargan_core.evaluation.expression import evaluate_expression, expression_group, smiling_faces
from stargan_core.nets.model import build_discriminator, build_generator
from stargan_core.weights.formats import save_release


def test_smiling_and_neutral_edits_are_counted_and_judged_as_an_independent_computation_says(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(schema=JOINT_LONDON, image_size=16, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1,
                      d_repeat_num=2)
    G = build_generator(cfg)
    save_release(G, cfg, tmp_path / "model", dtype=torch.float32, D=build_discriminator(cfg))
    spec = DatasetSpec("celeba", (Group("Smiling", "binary", ("Smiling",), "Smiling", "Not smiling"),))
    clf = AttributeClassifier(build_classifier("small", 1), spec, 16,
                              {"arch": "small", "image_size": 16, "dataset": DomainSchema((spec,)).to_dict()[
                                  "datasets"][0]})
    with torch.no_grad():  # a judge with an opinion: its single output follows the image's red channel
        clf.net[-1].weight.normal_(0, 3.0)
    save_classifier(clf, tmp_path / "judge")
    london = tmp_path / "london"  # a prepared folder: 10 people, 8 held out
    (london / "images").mkdir(parents=True)
    rows, rng = ["filename,neutral,smiling,split,person"], torch.Generator().manual_seed(1)
    for p in range(10):
        for k, e in enumerate(("neutral", "smiling")):
            noise = (torch.rand(218, 178, 3, generator=rng) * 255).byte().numpy()
            Image.fromarray(noise).save(london / "images" / f"{e}_{p}.png")
            rows.append(f"images/{e}_{p}.png,{1 - k},{k},{'test' if p >= 2 else 'train'},{p}")
    (london / "labels.csv").write_text("\n".join(rows) + "\n")
    (london / "schema.json").write_text('{"name": "london", "groups": [{"name": "expression", "kind": '
                                        '"categorical", "labels": ["neutral", "smiling"]}]}')
    faces = smiling_faces(london, 16)
    assert isinstance(faces, ImageLabels) and len(faces) == 16 and not {p.stem for p, _ in faces.records} & {
        "neutral_0", "smiling_0", "neutral_1", "smiling_1"}
    report = evaluate_expression(tmp_path / "model", [london], tmp_path / "judge")["folders"][str(london)]
    # the same, computed here: the expression one-hot at its place after CelebA's five, the London mask on
    G2, judge = build_generator(cfg), load_classifier(tmp_path / "judge")
    G2.load_state_dict(G.state_dict())
    want = {}
    for target, start, smiling_wanted in (("to_smiling", "neutral", True), ("to_neutral", "smiling", False)):
        x = torch.stack([faces[i][0] for i, (p, _) in enumerate(faces.records) if p.stem.startswith(start)])
        c = torch.zeros(len(x), 9)
        c[:, 5 + int(smiling_wanted)] = 1  # London's [neutral, smiling] after CelebA's five
        c[:, 8] = 1  # mask: london
        with torch.no_grad():
            want[target] = ((judge.probs(G2.eval()(x, c))[:, 0] > 0.5) == smiling_wanted).float().mean().item()
    assert report["n"] == 16 and report["to_smiling_n"] == report["to_neutral_n"] == 8
    assert 0 < want["to_smiling"] < 1 or 0 < want["to_neutral"] < 1  # the judge does not answer the same always
    assert (report["to_smiling"], report["to_neutral"]) == (want["to_smiling"], want["to_neutral"])
    assert report["discriminator_on_inputs"] is not None and expression_group(JOINT_LONDON).name == "expression"
