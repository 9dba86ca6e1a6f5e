"""The inference pipeline on every real photo, attribute estimation from a D with a known classifier, the CLI.

A tiny random generator (32 px, conv_dim 8) keeps this fast; the properties tested do not depend on training:
the output has the input's size and mode, pixels away from faces never change, an identity edit in detail mode
gives back the photo, and the labels that reach G are the ones the choices, strength and estimate say. Which
generator path the pipeline runs on (fp32, bf16, ONNX Runtime) is test_inference.py's.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, tiny_pipeline
from stargan_core.cli import main
from stargan_core.config import ModelConfig
from stargan_core.domains import JOINT, JOINT_LONDON
from stargan_core.edit import geometry, masks
from stargan_core.edit.classify import classify
from stargan_core.edit.faces import FaceDetector
from stargan_core.edit.geometry import align
from stargan_core.edit.images import ImageError, load_image
from stargan_core.edit.pipeline import NO_FACE, NoFaceError, StarGANPipeline
from stargan_core.nets.model import build_discriminator, build_generator
from stargan_core.weights.formats import save_release

TINY_JOINT = ModelConfig(schema=JOINT, image_size=32, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=5)
TINY_LONDON = ModelConfig(schema=JOINT_LONDON, image_size=32, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1,
                          d_repeat_num=5)


@pytest.fixture(scope="session")
def manifest(photos_dir: Path) -> list[dict]:
    return json.loads((photos_dir / "MANIFEST.json").read_text())


@pytest.fixture(scope="session")
def detected(photos_dir, manifest, detector) -> dict:
    """Each photo's faces, detected once for the whole session (detection is what is slow here)."""
    return {m["file"]: tiny_pipeline(detector=detector).detect(photos_dir / m["file"]) for m in manifest}


def footprints(faces, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: photo pixels that any face's crop covers (crop corners mapped back through the matrix)."""
    mask = np.zeros(size[::-1], bool)
    for f in faces:
        a = np.linalg.inv(f.matrix[:, :2])
        s = f.crop_size
        corners = (np.array([[0, 0], [s, 0], [0, s], [s, s]]) - f.matrix[:, 2]) @ a.T
        (x0, y0), (x1, y1) = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int)
        mask[max(y0 - 1, 0):max(y1 + 1, 0), max(x0 - 1, 0):max(x1 + 1, 0)] = True
    return mask


def pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im, np.int16)


# ----- every real photo ------------------------------------------------------------------------------------
@pytest.mark.data
def test_every_photo_keeps_size_mode_and_pixels_away_from_faces(photos_dir, manifest, detected):
    pipe = tiny_pipeline()
    for m in manifest:
        photo, faces = Image.open(photos_dir / m["file"]), detected[m["file"]]
        assert len(faces) == m["faces_expected"], m["file"]
        if not faces:
            with pytest.raises(NoFaceError, match="No face was found in this photo"):
                pipe(photo, {"hair": "blond"})
            continue
        result = pipe(photo, {"hair": "blond", "gender": "female"}, faces=faces)
        assert (result.image.size, result.image.mode) == (photo.size, photo.mode), m["file"]
        assert len(result.faces) == len(faces)
        before, after, away = pixels(photo), pixels(result.image), ~footprints(faces, photo.size)
        assert np.array_equal(before[away], after[away]), m["file"]
        assert np.abs(before[~away] - after[~away]).mean() > 0.5, m["file"]  # and the faces did change


@pytest.mark.data
@pytest.mark.parametrize("how", ["strength 0", "choices equal to the face's own labels"])
def test_identity_edit_in_detail_mode_returns_the_photo(photos_dir, manifest, detected, how):
    pipe = tiny_pipeline()
    own = {"hair": "Brown", "gender": "Female", "age": "Young"}
    for m in (m for m in manifest if m["faces_expected"]):
        photo = Image.open(photos_dir / m["file"])
        if how == "strength 0":
            result = pipe(photo, {"hair": "blond", "gender": "male"}, 0.0, faces=detected[m["file"]])
        else:  # the person says what each face is now and asks for exactly that
            result = pipe(photo, own, current=own, faces=detected[m["file"]])
        assert torch.equal(result.faces[0].c_trg, result.faces[0].c_org)
        assert np.abs(pixels(result.image) - pixels(photo)).max() <= 1, m["file"]


def test_no_face_error_is_friendly_and_whole_image_still_works(photos_dir, detected):
    pipe = tiny_pipeline()
    photo = photos_dir / "mtcnn_no-faces.jpg"
    with pytest.raises(NoFaceError) as e:
        pipe(photo, {"hair": "blond"}, faces=detected["mtcnn_no-faces.jpg"])
    assert str(e.value) == NO_FACE and isinstance(e.value, ImageError)
    result = pipe(photo, {"hair": "blond"}, whole_image=True)
    assert result.image.size == Image.open(photo).size and len(result.faces) == 1


def test_select_edits_only_the_chosen_faces(photos_dir, detected):
    pipe, faces = tiny_pipeline(), detected["fr_two_people.jpg"]
    photo = Image.open(photos_dir / "fr_two_people.jpg")
    result = pipe(photo, {"hair": "blond"}, faces=faces, select=[1])
    assert [f.index for f in result.faces] == [1]
    only_left = footprints(faces[:1], photo.size) & ~footprints(faces[1:], photo.size)
    assert np.array_equal(pixels(photo)[only_left], pixels(result.image)[only_left])
    with pytest.raises(ImageError, match="Choose faces between 1 and 2"):
        pipe(photo, {"hair": "blond"}, faces=faces, select=[2])


def test_batched_faces_equal_one_face_at_a_time(photos_dir, detected):
    pipe, faces = tiny_pipeline(), detected["facenet_multiface.jpg"]
    photo = photos_dir / "facenet_multiface.jpg"
    together = pipe(photo, {"hair": "blond"}, faces=faces)
    for i in (0, 5):
        alone = pipe(photo, {"hair": "blond"}, faces=faces, select=[i]).faces[0]
        assert np.abs(pixels(alone.after) - pixels(together.faces[i].after)).max() <= 1
        assert torch.allclose(alone.c_org, together.faces[i].c_org, atol=1e-5)


def test_all_domains_grid_has_a_row_per_face_and_a_column_per_domain(photos_dir, detected):
    pipe = tiny_pipeline()
    grid = pipe.all_domains(photos_dir / "fr_two_people.jpg", faces=detected["fr_two_people.jpg"])
    assert grid.size == (32 * (1 + 5), 14 + 32 * 2)  # input + Black, Blond, Brown, Male/Female, Young/Old
    crops = pipe(photos_dir / "fr_two_people.jpg", {}, faces=detected["fr_two_people.jpg"]).faces
    assert np.array_equal(np.asarray(grid)[14 + 32:14 + 64, :32], np.asarray(crops[1].before))


def test_the_pipeline_never_writes_files(photos_dir, detected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = tiny_pipeline()
    pipe(photos_dir / "mtcnn_ivan.jpg", {"age": "old"}, faces=detected["mtcnn_ivan.jpg"])
    pipe.all_domains(photos_dir / "mtcnn_ivan.jpg", faces=detected["mtcnn_ivan.jpg"])
    assert list(tmp_path.iterdir()) == []


# ----- labels: estimate, target, strength, datasets --------------------------------------------------------
def known_d(cfg: ModelConfig, logits: torch.Tensor):
    """A D whose classifier outputs ``logits`` for any image: the last trunk conv outputs the constant 1, and
    conv2 reads one weight of it per label."""
    D = build_discriminator(cfg)
    last = D.main[-2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(1.0)  # LeakyReLU(1) = 1 at every position
        D.conv2.weight.zero_()
        D.conv2.weight[:, 0, 0, 0] = logits
    return D


def test_attributes_come_from_a_known_discriminator():
    logits = torch.tensor([2.0, -1.0, 0.0, 3.0, -2.0,  # CelebA: sigmoid each
                           1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, -1.0])  # RaFD: softmax over the 8 expressions
    pipe = StarGANPipeline(build_generator(TINY_JOINT), TINY_JOINT, known_d(TINY_JOINT, logits))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    want = torch.cat([torch.sigmoid(logits[:5]), torch.exp(logits[5:]) / torch.exp(logits[5:]).sum()])
    assert torch.allclose(pipe.estimate(x), want.expand(2, -1), atol=1e-6)
    result = pipe(Image.new("RGB", (40, 40), "gray"), {"hair": "blond"}, whole_image=True)
    assert result.faces[0].attributes["Male"] == pytest.approx(float(torch.sigmoid(torch.tensor(3.0))))
    assert result.faces[0].attributes["happy"] == pytest.approx(float(want[5 + 4]))
    marked = pipe.estimate(x, current={"gender": "Female", "expression": "sad"})  # a person's word wins
    assert marked[0, 3] == 0 and marked[0, 5 + 6] == 1 and marked[0, 5:].sum() == 1 and marked[0, 0] == want[0]


def test_without_a_discriminator_labels_start_neutral():
    pipe = tiny_pipeline(TINY_JOINT, with_d=False)
    c_org = pipe.estimate(torch.zeros(1, 3, 32, 32))
    assert torch.allclose(c_org[0], torch.tensor([1 / 3] * 3 + [0.5, 0.5] + [1 / 8] * 8))


def test_strength_scales_each_group_and_keep_keeps():
    pipe = tiny_pipeline(with_d=False)
    face = pipe(Image.new("RGB", (32, 32)), {"hair": "blond", "gender": "male", "age": "keep"},
                {"hair": 0.5, "gender": 1.5}, current={"hair": "black", "gender": "female", "age": "young"},
                whole_image=True).faces[0]
    assert face.c_org.tolist() == [1, 0, 0, 0, 1]
    assert face.c_trg.tolist() == [0.5, 0.5, 0, 1.5, 1]  # halfway to blond, a little beyond male, age kept


def test_a_hair_colour_edit_leaves_the_face_alone_and_a_gender_edit_does_not():
    pipe = tiny_pipeline(with_d=False)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    face = FaceDetector.whole_image(photo, 32)
    u, v = geometry.crop_coords(face.matrix, (128, 128))  # the crop coordinates of every photo pixel
    in_face, on_hair = (masks.face_mask(face, u, v) == 1).numpy(), (masks.hair_mask(face, u, v) > 0.5).numpy()
    before = np.asarray(photo).astype(int)
    hair = np.asarray(pipe(photo, {"hair": "blond"}, current={"hair": "black"}, faces=[face]).image).astype(int)
    gender = np.asarray(pipe(photo, {"gender": "male"}, current={"gender": "female"}, faces=[face]).image)
    assert in_face.sum() > 1000 and on_hair.sum() > 1000
    assert np.array_equal(hair[in_face], before[in_face]) and np.abs(hair - before)[on_hair].mean() > 1
    assert np.abs(gender.astype(int) - before)[in_face].mean() > 1


def test_a_joint_model_runs_one_pass_per_changed_dataset_in_schema_order():
    pipe = tiny_pipeline(TINY_JOINT, with_d=False)
    seen = []
    pipe.G.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    pipe(Image.new("RGB", (32, 32)), {"expression": "happy", "hair": "blond"}, whole_image=True)
    assert [c.shape[0] for c in seen] == [2, 2]  # x_fake and x_ref batched together
    assert seen[0][:, -2:].tolist() == [[1, 0]] * 2 and seen[1][:, -2:].tolist() == [[0, 1]] * 2  # mask
    assert seen[0][0, 1] == 1 and seen[1][0, 5 + 4] == 1  # blond, then happy
    seen.clear()
    pipe(Image.new("RGB", (32, 32)), {"hair": "keep"}, whole_image=True)
    assert seen == []  # nothing asked, nothing run


@pytest.mark.data
def test_a_hair_and_smile_edit_chains_two_datasets_and_leaves_the_photo_outside_the_faces_untouched(photos_dir,
                                                                                                  detected):
    """Two datasets, two translations: x_fake = G(G(x, hair | celeba mask), smile | london mask), and x_ref goes
    through the same two with the face's own labels, so only what the edit changes reaches the photo."""
    pipe = tiny_pipeline(TINY_LONDON)
    seen = []
    pipe.G.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    photo, faces = Image.open(photos_dir / "fr_two_people.jpg"), detected["fr_two_people.jpg"]
    result = pipe(photo, {"hair": "Blond", "expression": "Smiling"}, faces=faces)
    assert [c[:, -2:].tolist() for c in seen] == [[[1, 0]] * 4, [[0, 1]] * 4]  # celeba, then london; x_fake + x_ref
    c_org = torch.stack([f.c_org for f in result.faces])
    assert seen[1][:2, 5:7].tolist() == [[0, 1], [0, 1]] and torch.allclose(seen[1][2:, 5:7], c_org[:, 5:7])
    before, after, away = pixels(photo), pixels(result.image), ~footprints(faces, photo.size)
    assert np.array_equal(before[away], after[away])
    assert np.abs(before[~away] - after[~away]).mean() > 0.5
    same = pipe(photo, {"hair": "keep", "expression": "keep"}, faces=faces).image  # nothing asked: the photo
    assert np.array_equal(pixels(same), before)


def count_rows(pipe: StarGANPipeline) -> list[int]:
    """Wrap the pipeline's generator path: the returned list gets each forward's batch size."""
    rows, run = [], pipe.generate
    pipe.generate = lambda x, c: rows.append(len(x)) or run(x, c)
    return rows


def test_a_re_edit_runs_exactly_one_generator_forward_per_face(photos_dir, detector):
    pipe = tiny_pipeline(detector=detector)
    rows = count_rows(pipe)
    faces = pipe.detect(photos_dir / "facenet_multiface.jpg")  # the photo arrives: x_ref computed here, once
    assert rows == [6]
    first = pipe(photos_dir / "facenet_multiface.jpg", {"hair": "blond"}, faces=faces)
    again = pipe(photos_dir / "facenet_multiface.jpg", {"hair": "black", "age": "old"}, 0.5, faces=faces)
    pipe(photos_dir / "facenet_multiface.jpg", {"gender": "male"}, faces=faces, select=[2, 4])
    assert rows == [6, 6, 6, 2]  # each edit: one forward of the chosen faces, x_fake only
    fresh = tiny_pipeline()  # the same weights, nothing kept: x_fake and x_ref computed together
    for result, choices, strength in ((first, {"hair": "blond"}, 1.0), (again, {"hair": "black", "age": "old"}, 0.5)):
        redo = fresh(photos_dir / "facenet_multiface.jpg", choices, strength, faces=[f for f in faces])
        assert np.array_equal(pixels(result.image), pixels(redo.image))
    with torch.no_grad():  # the kept D estimate is D's, computed on the aligned crops
        x_real = align(load_image(photos_dir / "facenet_multiface.jpg"), faces, 32)
        assert torch.allclose(torch.stack([f.c_org for f in first.faces]), torch.sigmoid(pipe.D(x_real)[1]),
                              atol=1e-5)


def test_whole_image_faces_keep_their_reference_too():
    pipe = tiny_pipeline(with_d=False)
    rows, photo = count_rows(pipe), Image.new("RGB", (40, 32), "gray")
    faces = pipe.detect(photo, whole_image=True)
    pipe(photo, {"hair": "blond"}, faces=faces, whole_image=True)
    pipe(photo, {"hair": "blond"}, faces=faces, whole_image=True, current={"hair": "black"})  # a new c_org
    pipe(photo, {"hair": "brown"}, faces=faces, whole_image=True, current={"hair": "black"})
    assert rows == [1, 1, 2, 1]  # detect; x_fake; x_fake + the new x_ref; x_fake


# ----- loading and the CLI ---------------------------------------------------------------------------------
def test_from_pretrained_takes_a_local_release(tmp_path):
    save_release(build_generator(TINY), TINY, tmp_path, D=build_discriminator(TINY))
    pipe = StarGANPipeline.from_pretrained(str(tmp_path))
    assert pipe.D is not None and pipe.config.image_size == 32 and pipe.status.startswith(f"Loaded {tmp_path}")


@pytest.mark.data
def test_translate_cli_edits_a_folder_and_draws_the_figure(photos_dir, tmp_path, capsys):
    save_release(build_generator(TINY), TINY, tmp_path / "model")
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("skimage_camera.png", "mtcnn_no-faces.jpg"):
        (photos / name).symlink_to(photos_dir / name)
    argv = ["translate", str(photos), "--model", str(tmp_path / "model"), "--hair", "blond", "--set", "age=old"]
    with pytest.raises(SystemExit) as e:  # the photo without a face is reported and counted, the other written
        main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "mtcnn_no-faces.jpg: No face was found" in err and "1 of 2 photo(s)" in err
    edited = Image.open(tmp_path / "out" / "skimage_camera.png")
    assert (edited.size, edited.mode) == ((512, 512), "L")
    assert main(["translate", str(photos / "skimage_camera.png"), "--model", str(tmp_path / "model"),
                 "--all-domains", "--out", str(tmp_path / "grid")]) == 0
    assert Image.open(tmp_path / "grid" / "skimage_camera_domains.png").size == (32 * 6, 14 + 32)


def test_translate_cli_refuses_an_unknown_control_once(tmp_path):
    save_release(build_generator(TINY), TINY, tmp_path / "model")
    with pytest.raises(SystemExit, match="this model has no 'expression' control; it has: hair, gender, age"):
        main(["translate", str(tmp_path), "--model", str(tmp_path / "model"), "--expression", "happy"])


@pytest.mark.parametrize("cfg", [TINY, ModelConfig()], ids=["tiny", "official 128 px"])
def test_classify_equals_the_discriminators_out_cls(cfg):
    torch.manual_seed(0)
    D = build_discriminator(cfg)
    for m in D.modules():  # weights large enough that the logits are far from 0
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=(2 / m.weight[0].numel()) ** 0.5)
    x = torch.rand(3, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        want = D(x)[1]
    assert want.abs().max() > 0.1 and torch.allclose(classify(D, x), want, rtol=1e-4, atol=1e-5)
