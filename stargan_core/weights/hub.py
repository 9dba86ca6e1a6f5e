"""Finding a model: one loader with one lookup order, and publishing a release to the Hugging Face Hub.

``load_model(source)`` resolves ``source`` in this order and stops at the first hit: a local weights file, a local
folder (a release, an official ``NNNN-G.ckpt`` folder or a training run), the Hub cache, a Hub download. A Hub
source is ``repo_id`` (a release repo: ``config.json`` + ``model.safetensors``) or ``repo_id:filename`` (one
weights file in any layout ``checkpoint.py`` reads). The discriminator, which estimates a face's own attributes,
comes along when it sits beside the generator (``discriminator.safetensors``, ``NNNN-D.ckpt``, ``d_*`` next to
``g_*``, or inside a training checkpoint). ``HF_HUB_OFFLINE``, ``HF_HOME``/``HF_HUB_CACHE`` and ``HF_TOKEN`` are
read at call time (``huggingface_hub`` reads the first two once, at import). When the Hub cannot be reached the
release shipped under ``checkpoints/`` is used and ``LoadedModel.status`` says so in one sentence.

The default model's file name is not certain (the re-implementation's README says ``g_128x128-celeba.pth.tar``, its
download script ``g_celeba-128x128.pth.tar``): when the default file is not in the repo, the repo's files are listed
(from the Hub, or from the cached snapshot offline) and the 128 px CelebA generator is taken by ``DEFAULT_PATTERN``;
the status sentence names the file used.
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import HfApi, constants, errors, hf_hub_download, try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..config import ModelConfig
from ..nets.model import Discriminator, Generator
from .formats import CONFIG_NAME, D_WEIGHTS_NAME, WEIGHTS_NAME, CheckpointError, load_discriminator, load_generator

DEFAULT_MODEL = "goodfellowliu/StarGAN-PyTorch:g_celeba-128x128.pth.tar"
DEFAULT_PATTERN = re.compile(r"g_(celeba.*128|128.*celeba)[^/]*\.(pth|pth\.tar|pt|ckpt)", re.IGNORECASE)  # its G
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "checkpoints"  # releases shipped with the app


class HubError(CheckpointError):
    """No usable model could be found, fetched or uploaded; the message says what to do about it."""


class _Unreachable(Exception):
    """The Hub could not be asked (offline mode, no connection, server error); the text says why."""


class _NoSuchFile(HubError):
    """The Hub answered that the repo has no such file."""


@dataclass
class LoadedModel:
    """A loaded generator (and discriminator when one was found), where it came from, and a sentence for the UI."""

    G: Generator
    config: ModelConfig
    D: Discriminator | None
    source: str  # what was loaded, e.g. "goodfellowliu/StarGAN-PyTorch:g_...tar @ 1a2b3c4" or a path
    status: str  # one sentence a person can read
    fallback: bool = False  # True when the shipped release replaced an unreachable Hub model


def load_model(source: str | os.PathLike | None = None, revision: str | None = None,
               fallback: bool = True) -> LoadedModel:
    """Load ``source`` (path, ``repo_id`` or ``repo_id:filename``; default ``$STARGAN_MODEL`` or ``DEFAULT_MODEL``).

    ``revision`` pins a Hub branch, tag or commit. A cached copy wins over a download (an app starts without a
    network call; a branch that moved on is fetched only once its cached copy is removed or a new ``revision`` is
    asked for). A Hub model that cannot be reached is replaced by the shipped release unless ``fallback`` is False.
    Raises ``HubError``/``CheckpointError`` with a sentence saying what to do.
    """
    source = str(source or os.environ.get("STARGAN_MODEL") or DEFAULT_MODEL)
    path = Path(source).expanduser()
    if path.is_file():  # 1. a local file
        return _from_file(path, _sibling(path), str(path))
    if path.is_dir():  # 2. a local folder
        return _from_folder(path, str(path))
    repo_id, filename = _parse_hub_source(source)
    try:  # 3. the Hub cache, 4. a Hub download
        return _from_hub(repo_id, filename, revision)
    except (_Unreachable, _NoSuchFile) as e:
        found = _default_by_pattern(repo_id, filename, revision) if source == DEFAULT_MODEL else None
        if found is not None:
            return _from_hub(repo_id, found, revision, f" (the default file {filename} is not in the repo, so its "
                             "128 px CelebA generator was found by name)")
        if isinstance(e, _NoSuchFile):
            raise
        if not fallback:
            raise HubError(f"{source} is not in this computer's Hub cache and cannot be downloaded now because {e}; "
                           "it needs the internet once, then it is kept in the cache") from None
        return _shipped_fallback(source, str(e))


def hub_cached(source: str) -> bool:
    """Whether a Hub ``repo_id:filename`` is already in the local cache (so it loads without the internet)."""
    repo_id, _, filename = source.partition(":")
    return isinstance(try_to_load_from_cache(repo_id, filename or CONFIG_NAME, cache_dir=_cache_dir()), str)


def hub_reachable() -> bool:
    """Whether the Hub can be asked at all now (not offline by setting, and its host name resolves)."""
    return not _offline() and _resolvable()


def _default_by_pattern(repo_id: str, missing: str, revision: str | None) -> str | None:
    """The default repo's 128 px CelebA generator under another name than ``missing`` (None if there is none)."""
    names = sorted(n for n in _repo_files(repo_id, revision) if DEFAULT_PATTERN.fullmatch(os.path.basename(n)))
    return next((n for n in names if n != missing), None)


def _repo_files(repo_id: str, revision: str | None) -> list[str]:
    """The repo's file names: listed by the Hub when it can be reached, else those in the cached snapshot."""
    if not _offline() and _resolvable():
        try:
            return HfApi().list_repo_files(repo_id, revision=revision)
        except Exception:  # any Hub failure: fall back to what the cache knows, like every other lookup here
            pass
    repo = Path(_cache_dir()) / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / (revision or "main")
    snapshot = repo / "snapshots" / (ref.read_text().strip() if ref.is_file() else revision or "main")
    return [str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()] if snapshot.is_dir() else []


def _parse_hub_source(source: str) -> tuple[str, str | None]:
    repo_id, _, filename = source.partition(":")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(f"'{source}' is neither a file or folder on this computer nor a Hub model "
                       "('owner/name' or 'owner/name:file'); check the spelling") from None
    return repo_id, filename or None


# ----- local files and folders ----------------------------------------------------------------------------
def _companion(name: str) -> str | None:
    """The discriminator file that is conventionally saved next to generator file ``name``."""
    if name == WEIGHTS_NAME:
        return D_WEIGHTS_NAME
    if re.fullmatch(r".*-G\.ckpt", name):  # official 200000-G.ckpt -> 200000-D.ckpt
        return name[:-len("G.ckpt")] + "D.ckpt"
    if name.startswith("g_"):  # goodfellowliu g_celeba-128x128.pth.tar -> d_celeba-128x128.pth.tar
        return "d_" + name[2:]
    return None


def _sibling(path: Path) -> Path | None:
    name = _companion(path.name)
    if name is None:  # no naming convention: maybe a training checkpoint holding both nets
        return path
    return path.with_name(name) if path.with_name(name).is_file() else None


def _from_file(path: Path, d_path: Path | None, source: str, said: str = "") -> LoadedModel:
    """G from ``path`` and D from ``d_path``; the status sentence starts with ``said`` ("Loaded ...")."""
    G, cfg = load_generator(path)
    D, d_cfg, d_note = _discriminator(d_path, cfg, quiet=d_path == path)
    if d_cfg is not None:  # G is fully convolutional; D's classifier kernel fixes the size it was trained at
        cfg = replace(cfg, image_size=d_cfg.image_size, d_conv_dim=d_cfg.d_conv_dim, d_repeat_num=d_cfg.d_repeat_num)
    return LoadedModel(G.eval(), cfg, D, source, f"{said or f'Loaded {source}'}, {d_note}.")


def _discriminator(d_path: Path | None, cfg: ModelConfig,
                   quiet: bool) -> tuple[Discriminator | None, ModelConfig | None, str]:
    """Load D if it fits G's schema; otherwise say (in a clause of the status sentence) why attributes are asked."""
    no_d = "without a discriminator, so mark each face's current attributes yourself"
    if d_path is None:
        return None, None, no_d
    try:
        D, d_cfg = load_discriminator(d_path, schema=cfg.schema)
    except CheckpointError as e:
        return None, None, no_d if quiet else f"{no_d} (its discriminator was skipped: {e})"
    return D.eval(), d_cfg, "with its discriminator to estimate each face's attributes"


def _from_folder(folder: Path, source: str, said: str = "") -> LoadedModel:
    """A release folder, an official checkpoint folder (latest ``NNNN-G.ckpt``) or a training run."""
    if (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file():
        d = folder / D_WEIGHTS_NAME
        return _from_file(folder / WEIGHTS_NAME, d if d.is_file() else None, source, said)
    official = sorted(folder.glob("*-G.ckpt"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    if official:
        return _from_file(official[-1], _sibling(official[-1]), str(official[-1]), said)
    if (folder / "checkpoint.pt").is_file():
        return _from_file(folder / "checkpoint.pt", folder / "checkpoint.pt", source, said)
    raise HubError(f"{folder} holds no model: expected {CONFIG_NAME} + {WEIGHTS_NAME} (a release), "
                   "NNNN-G.ckpt files (the official code) or checkpoint.pt (a training run)")


def shipped_release() -> Path | None:
    """The first folder under ``checkpoints/`` holding a release (``config.json`` + ``model.safetensors``)."""
    found = sorted(p.parent for p in SHIPPED_DIR.rglob(CONFIG_NAME) if (p.parent / WEIGHTS_NAME).is_file())
    return found[0] if found else None


def _shipped_fallback(source: str, why: str) -> LoadedModel:
    shipped = shipped_release()
    if shipped is None:
        raise HubError(f"No model could be loaded: {source} is not in the Hub cache ({_cache_dir()}) and {why}, "
                       f"and no release is shipped under {SHIPPED_DIR}. Connect to the internet (and unset "
                       "HF_HUB_OFFLINE), or pass a local release folder or weights file with --model or "
                       "STARGAN_MODEL.")
    loaded = _from_folder(shipped, str(shipped), f"{source} could not be fetched because {why}, so the model "
                          f"shipped with the app ({shipped.name}) is used instead")
    loaded.fallback = True
    return loaded


# ----- the Hub --------------------------------------------------------------------------------------------
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"} or constants.HF_HUB_OFFLINE


def _cache_dir() -> str:
    """``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, as set *now* (``constants`` froze them at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return constants.HF_HUB_CACHE


def _resolvable() -> bool:
    """False when the Hub's host name cannot even be looked up (no network): fail now, not after ~25 s of retries.

    With a proxy configured the proxy resolves names, so this check is skipped."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.getaddrinfo(urlsplit(constants.ENDPOINT).hostname, 443)
    except (OSError, UnicodeError):
        return False
    return True


def _hub_file(repo_id: str, filename: str, revision: str | None, optional: bool = False) -> Path | None:
    """Path of ``filename`` from the cache, else downloaded. Optional files that do not exist give None."""
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=_cache_dir(), revision=revision)
    if isinstance(cached, str):  # 3. the Hub cache
        return Path(cached)
    if optional and cached is not None:  # the cache remembers that the Hub has no such file
        return None
    if _offline() or not _resolvable():
        if optional:
            return None
        raise _Unreachable("HF_HUB_OFFLINE is set" if _offline() else "this computer has no network connection")
    try:  # 4. a Hub download (HF_TOKEN is read by huggingface_hub itself)
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=_cache_dir()))
    except Exception as e:  # every Hub failure is translated by _hub_error; unknown ones are re-raised as is
        err = _hub_error(e, repo_id, filename, revision)
        if optional and (isinstance(e, errors.RemoteEntryNotFoundError) or isinstance(err, _Unreachable)):
            return None  # no discriminator beside this generator, or the connection dropped after G came
        raise err from None


def _hub_error(e: Exception, repo_id: str, filename: str, revision: str | None) -> Exception:
    """Turn a ``huggingface_hub`` exception into a message a person can act on."""
    url = f"https://huggingface.co/{repo_id}"
    if isinstance(e, errors.GatedRepoError):
        return HubError(f"{repo_id} is gated: accept its conditions at {url} and set HF_TOKEN to a token of that "
                        "account (https://huggingface.co/settings/tokens)")
    if isinstance(e, errors.RepositoryNotFoundError):
        return HubError(f"no Hub model {repo_id} (or it is private: set HF_TOKEN to a token that can read it)")
    if isinstance(e, errors.RevisionNotFoundError):
        return HubError(f"{repo_id} has no revision '{revision}'; see the branches and tags at {url}")
    if isinstance(e, errors.RemoteEntryNotFoundError):
        return _NoSuchFile(f"{repo_id} has no file '{filename}'; see its files at {url}/tree/{revision or 'main'}")
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        return HubError(f"the Hub refused access to {repo_id} (HTTP {status}): set HF_TOKEN to a valid token")
    if isinstance(e, (OSError, errors.HTTPError)):  # connection failures, timeouts, 5xx, LocalEntryNotFoundError
        why = f"HTTP {status}" if status else "no connection"
        return _Unreachable(f"the Hugging Face Hub could not be reached ({why})")
    return e


def _from_hub(repo_id: str, filename: str | None, revision: str | None, why: str = "") -> LoadedModel:
    cached = try_to_load_from_cache(repo_id, filename or CONFIG_NAME, cache_dir=_cache_dir(), revision=revision)
    if filename is None or filename.endswith(".safetensors"):  # a release: config.json beside the weights
        folder = os.path.dirname(filename or "")
        _hub_file(repo_id, os.path.join(folder, CONFIG_NAME), revision)
        filename = filename or WEIGHTS_NAME
    g_path = _hub_file(repo_id, filename, revision)
    companion = _companion(os.path.basename(filename))
    d_path = (_hub_file(repo_id, os.path.join(os.path.dirname(filename), companion), revision, optional=True)
              if companion else g_path)
    parts = g_path.parts  # .../models--owner--name/snapshots/<commit>/<filename>
    commit = parts[parts.index("snapshots") + 1][:7] if "snapshots" in parts else revision or "main"
    source = f"{repo_id}:{filename} @ {commit}"
    said = f"Loaded {source} from the {'Hub cache' if isinstance(cached, str) else 'Hugging Face Hub'}{why}"
    return _from_file(g_path, d_path, source, said)


# ----- publishing -----------------------------------------------------------------------------------------
def push_to_hub(release: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a release folder to ``repo_id`` in one commit, with a generated model card; returns the commit URL.

    The token comes from ``token``, ``HF_TOKEN`` or ``hf auth login``; it needs write access.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from .card import model_card

    release = Path(release)
    if not ((release / CONFIG_NAME).is_file() and (release / WEIGHTS_NAME).is_file()):
        raise HubError(f"{release} is not a release (no {CONFIG_NAME} + {WEIGHTS_NAME}); write one with "
                       "`python -m stargan_core export RUN_DIR OUT_DIR`")
    card = model_card(release, repo_id)
    files = [p for p in sorted(release.iterdir()) if p.is_file() and p.name != "README.md"]
    ops = [CommitOperationAdd(p.name, p) for p in files] + [CommitOperationAdd("README.md", card.encode())]
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, ops, commit_message=f"Upload StarGAN release {release.name}")
    except errors.HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status in (401, 403):
            raise HubError(f"the Hub refused the upload to {repo_id} (HTTP {status}): set HF_TOKEN to a token with "
                           "write access (https://huggingface.co/settings/tokens)") from None
        raise HubError(f"the upload to {repo_id} failed ({e}); try again later") from None
    except (OSError, errors.HTTPError) as e:
        raise HubError(f"the Hugging Face Hub could not be reached ({type(e).__name__}); check the connection "
                       "and that HF_HUB_OFFLINE is not set") from None
    return info.commit_url
