"""load_model's lookup order (local files and folders, then the Hub cache), offline behaviour, the shipped fallback and
the error when nothing is there, through real huggingface_hub; and the model card that publishing writes.

The Hub cache is built in a temporary HF_HOME with the documented layout (``models--owner--name/blobs``,
``snapshots/<commit>/<file>`` links, ``refs/<branch>``) and checked with ``scan_cache_dir``. A Hub that answers
(downloads and its errors) is test_hub_online.py's. Nothing reaches the network.
"""
import json
import socket

import pytest
import torch
from huggingface_hub import ModelCard, constants, hf_hub_download, scan_cache_dir

from conftest import TINY
from hub_files import COMMIT_A, COMMIT_B, REPO, C, X, fill_cache, g_output, lornatang_files, official_files, release
from official_layout import official_g_state_dict, reference_generator
from stargan_core.nets.model import build_discriminator, build_generator
from stargan_core.weights import hub
from stargan_core.weights.card import model_card
from stargan_core.weights.formats import CheckpointError, save_release

pytestmark = pytest.mark.usefixtures("hf_home")  # a fresh, empty, offline HF_HOME for every test


# ----- local files and folders (steps 1 and 2) -------------------------------------------------------------
def test_our_cache_layout_is_the_one_huggingface_hub_reads(hf_home, tmp_path):
    g, d, _ = official_files(tmp_path / "w")
    snap = fill_cache(hf_home, REPO, {"200000-G.ckpt": g, "200000-D.ckpt": d})
    info = scan_cache_dir(hf_home / "hub")
    assert [r.repo_id for r in info.repos] == [REPO] and not info.warnings
    assert hf_hub_download(REPO, "200000-G.ckpt", cache_dir=hf_home / "hub", local_files_only=True) == \
        str(snap / "200000-G.ckpt")


@pytest.mark.parametrize("fmt", ["official", "lornatang", "training", "release"])
def test_every_format_loads_from_a_local_file_with_its_discriminator(tmp_path, fmt):
    if fmt == "official":
        path, _, sd = official_files(tmp_path)
    elif fmt == "lornatang":
        path, _, sd = lornatang_files(tmp_path)
    else:
        sd = official_g_state_dict(conv_dim=8, c_dim=5, repeat_num=1)
        G = build_generator(TINY)
        G.load_state_dict(sd)
        if fmt == "training":
            path = tmp_path / "checkpoint.pt"
            torch.save({"G": sd, "D": build_discriminator(TINY).state_dict(), "model_config": TINY.to_dict(),
                        "step": 7}, path)
        else:
            path = save_release(G, TINY, tmp_path, dtype=torch.float32, D=build_discriminator(TINY)) / \
                "model.safetensors"
    loaded = hub.load_model(path)
    assert loaded.D is not None and loaded.config.image_size == 32  # D fixes the size, even for g_...-128x128
    assert torch.allclose(g_output(loaded), reference_generator(sd, X, C, 1), atol=1e-5)
    assert loaded.status == f"Loaded {path}, with its discriminator to estimate each face's attributes."


def test_local_folders_release_official_and_training_run(tmp_path):
    assert hub.load_model(release(tmp_path / "rel")).source == str(tmp_path / "rel")
    official_files(tmp_path / "off")
    torch.save(official_g_state_dict(8, 5, 1, seed=3), tmp_path / "off" / "90000-G.ckpt")
    assert hub.load_model(tmp_path / "off").source.endswith("200000-G.ckpt")  # latest step, not lexical order
    (tmp_path / "empty").mkdir()
    with pytest.raises(hub.HubError, match="holds no model: expected config.json"):
        hub.load_model(tmp_path / "empty")


def test_release_without_discriminator_says_attributes_are_asked(tmp_path):
    loaded = hub.load_model(release(tmp_path / "rel", with_d=False))
    assert loaded.D is None and "without a discriminator, so mark each face's current attributes" in loaded.status


def test_a_broken_discriminator_is_skipped_and_said(tmp_path):
    g, d, _ = official_files(tmp_path)
    d.write_bytes(b"not a checkpoint")
    loaded = hub.load_model(g)
    assert loaded.D is None and "its discriminator was skipped" in loaded.status and "200000-D.ckpt" in loaded.status


def test_local_path_wins_over_a_hub_id_with_the_same_name(hf_home, tmp_path, monkeypatch):
    fill_cache(hf_home, REPO, {"config.json": release(tmp_path / "hubrel", seed=1) / "config.json",
                               "model.safetensors": tmp_path / "hubrel" / "model.safetensors"})
    monkeypatch.chdir(tmp_path)
    release(tmp_path / REPO, seed=2)  # ./owner/stargan-tiny
    assert hub.load_model(REPO).source == REPO and "Hub" not in hub.load_model(REPO).status


def test_source_defaults_to_stargan_model(tmp_path, monkeypatch):
    monkeypatch.setenv("STARGAN_MODEL", str(release(tmp_path / "rel")))
    assert hub.load_model().source == str(tmp_path / "rel")


def test_a_source_that_is_neither_path_nor_repo_id_is_refused():
    with pytest.raises(hub.HubError, match="neither a file or folder on this computer nor a Hub model"):
        hub.load_model("no/such/folder/model.pt")


# ----- the Hub cache (step 3), offline ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["official", "lornatang", "release"])
def test_every_format_loads_offline_from_the_hub_cache(hf_home, tmp_path, fmt):
    if fmt == "release":
        rel = release(tmp_path / "rel")
        files, source, sd = {p.name: p for p in rel.iterdir()}, REPO, None
    else:
        g, d, sd = (official_files if fmt == "official" else lornatang_files)(tmp_path / "w")
        files, source = {g.name: g, d.name: d}, f"{REPO}:{g.name}"
    fill_cache(hf_home, REPO, files)
    loaded = hub.load_model(source)
    assert loaded.D is not None and not loaded.fallback
    assert loaded.status.startswith(f"Loaded {REPO}:") and "aaaaaaa from the Hub cache, with its discriminator" \
        in loaded.status
    if sd is not None:
        assert torch.allclose(g_output(loaded), reference_generator(sd, X, C, 1), atol=1e-5)


def test_the_default_model_and_its_discriminator_come_from_the_cache(hf_home, tmp_path):
    g, d, sd = lornatang_files(tmp_path / "w")
    fill_cache(hf_home, "goodfellowliu/StarGAN-PyTorch", {g.name: g, d.name: d})
    loaded = hub.load_model()
    assert loaded.source == f"{hub.DEFAULT_MODEL} @ aaaaaaa" and loaded.D is not None
    assert torch.allclose(g_output(loaded), reference_generator(sd, X, C, 1), atol=1e-5)


def test_a_missing_discriminator_is_optional_offline(hf_home, tmp_path):
    g, _, _ = official_files(tmp_path / "w")
    fill_cache(hf_home, REPO, {g.name: g})
    assert hub.load_model(f"{REPO}:{g.name}").D is None


def test_revision_pins_a_branch_or_commit(hf_home, tmp_path):
    g_a, _, sd_a = official_files(tmp_path / "a", seed=0)
    g_b, _, sd_b = official_files(tmp_path / "b", seed=1)
    fill_cache(hf_home, REPO, {g_a.name: g_a}, COMMIT_A, "main")
    fill_cache(hf_home, REPO, {g_b.name: g_b}, COMMIT_B, "v2")
    source = f"{REPO}:200000-G.ckpt"
    for revision, sd in [(None, sd_a), ("v2", sd_b), (COMMIT_B, sd_b), (COMMIT_A, sd_a)]:
        loaded = hub.load_model(source, revision=revision)
        assert torch.allclose(g_output(loaded), reference_generator(sd, X, C, 1), atol=1e-5), revision
    assert hub.load_model(source, revision="v2").source.endswith("@ bbbbbbb")


def test_hf_hub_cache_env_is_read_at_call_time(tmp_path, monkeypatch):
    g, _, _ = official_files(tmp_path / "w")
    fill_cache(tmp_path / "elsewhere", REPO, {g.name: g})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere" / "hub"))
    assert hub.load_model(f"{REPO}:{g.name}").source.endswith("@ aaaaaaa")


# ----- the shipped fallback and the error when nothing is there ------------------------------------------
def test_offline_and_not_cached_falls_back_to_the_shipped_release_in_one_sentence(tmp_path):
    shipped = release(tmp_path / "checkpoints" / "celeba-64")
    loaded = hub.load_model(f"{REPO}:g.pth")
    assert loaded.fallback and loaded.source == str(shipped)
    assert loaded.status == (f"{REPO}:g.pth could not be fetched because HF_HUB_OFFLINE is set, so the model shipped "
                             "with the app (celeba-64) is used instead, with its discriminator to estimate each "
                             "face's attributes.")
    assert loaded.status.count(". ") == 0 and loaded.status.endswith(".")


def test_no_network_falls_back_at_once_without_trying(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(hub, "hf_hub_download", None)  # never reached: calling it would fail the test
    release(tmp_path / "checkpoints" / "celeba-64")
    loaded = hub.load_model(f"{REPO}:g.pth")
    assert loaded.fallback and "because this computer has no network connection, so the model shipped" in \
        loaded.status


def test_a_hub_model_asked_for_without_fallback_says_it_needs_the_internet_once(tmp_path):
    release(tmp_path / "checkpoints" / "celeba-64")
    with pytest.raises(hub.HubError, match="is not in this computer's Hub cache and cannot be downloaded now because "
                       "HF_HUB_OFFLINE is set; it needs the internet once"):
        hub.load_model(f"{REPO}:g.pth", fallback=False)
    assert not hub.hub_cached(f"{REPO}:g.pth") and not hub.hub_reachable()


def test_nothing_available_says_what_to_do():
    with pytest.raises(hub.HubError) as e:
        hub.load_model()
    msg = str(e.value)
    assert hub.DEFAULT_MODEL in msg and "HF_HUB_OFFLINE is set" in msg and "no release is shipped" in msg
    assert "Connect to the internet" in msg and "--model or STARGAN_MODEL" in msg
    assert isinstance(e.value, CheckpointError)  # one exception type for a UI to catch


# ----- publishing: the card is generated offline; the upload itself is not exercised -----------------------
def test_model_card_has_schema_data_licence_and_metrics(tmp_path):
    rel = release(tmp_path / "rel")
    (rel / "metrics.json").write_text(json.dumps({"target_accuracy": {"hair": 0.8123456}, "l1_rec": 0.05}))
    (rel / "MODEL_CARD.md").write_text("Trained 200k steps on 2,000 CelebA images.\n")
    text = model_card(rel, "me/stargan-celeba")
    card = ModelCard(text)
    assert card.data.license == "other" and "image-to-image" in card.data.tags
    assert "| celeba | `hair` | exclusive | Black, Blond, Brown |" in text
    assert "| celeba | `gender` | binary | Male, Female |" in text
    assert "non-commercial research purposes only" in text
    assert "| target_accuracy/hair | 0.8123 |" in text and "| l1_rec | 0.05 |" in text
    assert "Trained 200k steps on 2,000 CelebA images." in text
    assert 'StarGANPipeline.from_pretrained("me/stargan-celeba")' in text and "discriminator.safetensors" in text


def test_model_card_without_metrics_says_so(tmp_path):
    assert "No evaluation was shipped with this release." in model_card(release(tmp_path / "rel", with_d=False))


def test_push_refuses_a_folder_that_is_not_a_release(tmp_path):
    with pytest.raises(hub.HubError, match="is not a release"):
        hub.push_to_hub(tmp_path, "me/x")
