"""Model registry, download with verification, and finding model folders on disk.

A download is only useful if the folder it leaves behind loads, so `download` ends with
`verify_download`, which checks what a loader would trip over later (missing or empty files,
unreadable safetensors headers, index shards that are absent, truncated or fake .pth files)
and names the file. Network failures are turned into one actionable line instead of a retry
loop: a dead network should cost seconds, not minutes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamavatar_cli.config import CONFIG_FORMAT, ModelConfig
from streamavatar_cli.errors import DownloadError, InputError, ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "streamavatar-tiny"
"""The model `render` uses without --model: the small bundled model (ARCHITECTURE section 9)."""
DEFAULT_WEIGHTS_DIR = Path("weights")
HUB_TIMEOUT_S = 10.0
"""Seconds to wait for the hub's first answer; a dead network fails after this, once."""
MIN_TORCH_FILE_BYTES = 256
"""Smaller than any real checkpoint; catches git-lfs pointers and error pages saved as .pth."""

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRUE = {"1", "ON", "YES", "TRUE"}
_INDEX_SUFFIX = ".safetensors.index.json"  # as in models.weights, which would pull in torch
_TORCH_SUFFIXES = (".pth", ".pt", ".bin")

Requirement = tuple[str, ...]
"""Alternative glob patterns: at least one must match a file of the folder."""


@dataclass(frozen=True)
class RegistryEntry:
    """A downloadable model: which files of which hub repo, and what must be there afterwards.

    `prefer` lists alternative weight files best first: only the first one the repo has is
    downloaded (safetensors over a pickle). `min_bytes` and `sha256` are per relative path.
    """

    name: str
    repo_id: str
    description: str
    allow: tuple[str, ...]
    required: tuple[Requirement, ...]
    next_step: str
    prefer: tuple[str, ...] = ()
    text_encoder_allow: tuple[str, ...] = ()
    text_encoder_required: tuple[Requirement, ...] = ()
    min_bytes: Mapping[str, int] = field(default_factory=dict)
    sha256: Mapping[str, str] = field(default_factory=dict)
    streamavatar_format: bool = False

    @property
    def spec(self) -> str:
        """What to pass to `streamavatar download` to get this entry again."""
        return self.repo_id if self.streamavatar_format else self.name

    def patterns(self, with_text_encoder: bool) -> tuple[str, ...]:
        extra = self.text_encoder_allow if with_text_encoder else ()
        return self.allow + self.prefer + extra

    def requirements(self, with_text_encoder: bool) -> tuple[Requirement, ...]:
        groups = self.required + ((self.prefer,) if self.prefer else ())
        return groups + (self.text_encoder_required if with_text_encoder else ())


_WAN_DIT = ("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors")
_WAN_NEXT = "backbone with untrained audio modules: the base for `streamavatar train` ({path})"
_WAV2VEC2_NEXT = "set audio.model to {path} in a model's config.json to use this copy offline"

REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        RegistryEntry(
            name="wan2.2-ti2v-5b",
            repo_id="Wan-AI/Wan2.2-TI2V-5B",
            description="Wan2.2-TI2V-5B backbone, official layout (DiT shards + Wan2.2_VAE.pth)",
            allow=(
                "config.json",
                "diffusion_pytorch_model*.safetensors",
                _WAN_DIT[0],
                "Wan2.2_VAE.pth",
            ),
            required=(("config.json",), _WAN_DIT, ("Wan2.2_VAE.pth",)),
            text_encoder_allow=("models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/*"),
            text_encoder_required=(("models_t5_umt5-xxl-enc-bf16.pth",), ("google/umt5-xxl/*",)),
            # Sizes from wan22-backbone.md section 2.1 (VAE 704.7 M params, T5 11.4 GB), with margin.
            min_bytes={
                "Wan2.2_VAE.pth": 1_000_000_000,
                "models_t5_umt5-xxl-enc-bf16.pth": 10_000_000_000,
            },
            next_step=_WAN_NEXT,
        ),
        RegistryEntry(
            name="wan2.2-ti2v-5b-diffusers",
            repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            description="Wan2.2-TI2V-5B backbone, diffusers layout (transformer/ + vae/)",
            allow=("model_index.json", "transformer/*", "vae/*"),
            required=(
                ("model_index.json",),
                ("transformer/config.json",),
                tuple(f"transformer/{n}" for n in _WAN_DIT),
                ("vae/config.json",),
                ("vae/diffusion_pytorch_model.safetensors",),
            ),
            text_encoder_allow=("text_encoder/*", "tokenizer/*"),
            text_encoder_required=(
                ("text_encoder/config.json",),
                ("text_encoder/*.safetensors",),
                ("tokenizer/*",),
            ),
            next_step=_WAN_NEXT,
        ),
        RegistryEntry(
            name="wav2vec2-base-960h",
            repo_id="facebook/wav2vec2-base-960h",
            description="wav2vec2 audio encoder (English), the default audio features",
            allow=("config.json", "preprocessor_config.json"),
            required=(("config.json",), ("preprocessor_config.json",)),
            prefer=("model.safetensors", "pytorch_model.bin"),
            next_step=_WAV2VEC2_NEXT,
        ),
        RegistryEntry(
            name="chinese-wav2vec2-base",
            repo_id="TencentGameMate/chinese-wav2vec2-base",
            description="wav2vec2 audio encoder pretrained on Mandarin (WenetSpeech)",
            # The repo also holds a 1.1 GB fairseq checkpoint (.pt) that transformers cannot read.
            allow=("config.json", "preprocessor_config.json"),
            required=(("config.json",), ("preprocessor_config.json",)),
            prefer=("model.safetensors", "pytorch_model.bin"),
            next_step=_WAV2VEC2_NEXT,
        ),
    )
}


_OWN_ALLOW = ("config.json", "dit*.safetensors", "dit.safetensors.index.json")
_OWN_REQUIRED = (("config.json",), ("dit.safetensors.index.json", "dit.safetensors"))
_OWN_VAE = ("vae.safetensors", "Wan2.2_VAE.pth")


def _streamavatar_entry(repo_id: str) -> RegistryEntry:
    """Any other hub repo is read as a StreamAvatar checkpoint (docs/design.md)."""
    return RegistryEntry(
        name=repo_id.split("/")[1],
        repo_id=repo_id,
        description="StreamAvatar checkpoint",
        allow=_OWN_ALLOW,
        required=_OWN_REQUIRED,
        prefer=_OWN_VAE,
        next_step="render with `streamavatar render --model {path} ...`",
        streamavatar_format=True,
    )


def entry_for(name_or_repo: str) -> RegistryEntry:
    """The registry entry for a name or repo id; other `owner/name` ids are StreamAvatar repos."""
    if name_or_repo in REGISTRY:
        return REGISTRY[name_or_repo]
    for entry in REGISTRY.values():
        if entry.repo_id.lower() == name_or_repo.lower():
            return entry
    if _REPO_ID.fullmatch(name_or_repo):
        return _streamavatar_entry(name_or_repo)
    hint = (
        " (it is bundled, not downloaded: see weights/README.md)"
        if name_or_repo == DEFAULT_MODEL
        else ""
    )
    raise InputError(
        f"unknown model {name_or_repo!r}{hint}; known: {', '.join(REGISTRY)}, "
        "or a hub repo id owner/name holding a StreamAvatar checkpoint"
    )


# --------------------------------------------------------------------------------------
# Download


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids network access."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.upper() in _TRUE


def download(
    name_or_repo: str,
    *,
    dest_dir: Path = DEFAULT_WEIGHTS_DIR,
    revision: str | None = None,
    local_files_only: bool = False,
    with_text_encoder: bool = False,
    progress: bool = True,
    force: bool = False,
    cache_dir: Path | None = None,
) -> Path:
    """Fetch a model into `dest_dir/<entry name>` and verify it; returns that folder.

    Online, files go straight into the folder (no second copy in the hub cache). With
    `local_files_only`, or when HF_HUB_OFFLINE is set, the files come from the hub cache
    (`cache_dir`, default HF_HUB_CACHE), hard-linked where possible; if the cache lacks the
    repo, an already complete folder still verifies. `force` downloads again (repairs a
    corrupt file). Raises `DownloadError` with one line saying what failed and what to do.
    """
    entry = entry_for(name_or_repo)
    if with_text_encoder and not entry.text_encoder_allow:
        raise InputError(f"{entry.name} has no text encoder; drop --with-text-encoder")
    target = Path(dest_dir) / entry.name
    if local_files_only or hub_offline():
        reason = "--local-files-only" if local_files_only else "HF_HUB_OFFLINE is set"
        _copy_from_cache(entry, target, revision, with_text_encoder, cache_dir, reason)
    else:
        with _progress_bars(progress):
            _fetch(entry, target, revision, with_text_encoder, force, cache_dir)
    verify_download(target, entry, with_text_encoder=with_text_encoder)
    log.info("%s verified in %s", entry.repo_id, target)
    return target


def _fetch(
    entry: RegistryEntry,
    target: Path,
    revision: str | None,
    with_text_encoder: bool,
    force: bool,
    cache_dir: Path | None,
) -> None:
    from huggingface_hub import HfApi, snapshot_download

    try:
        # One short-timeout call first: it fails fast on a dead network and pins the commit.
        info = HfApi().model_info(entry.repo_id, revision=revision, timeout=HUB_TIMEOUT_S)
        available = [s.rfilename for s in info.siblings or []]
        files = _select(entry, available, with_text_encoder)
        missing = _missing(files, entry.requirements(with_text_encoder))
        if missing:
            raise DownloadError(
                f"{entry.repo_id} has no {', '.join(missing)}: it is not a "
                f"{entry.description}; check the repo id"
            )
        log.info("downloading %d files of %s@%s to %s", len(files), entry.repo_id, info.sha, target)
        snapshot_download(
            entry.repo_id,
            revision=info.sha,
            allow_patterns=files,
            local_dir=target,
            cache_dir=cache_dir,
            etag_timeout=HUB_TIMEOUT_S,
            force_download=force,
        )
    except _hub_errors() as e:
        raise DownloadError(_explain(e, entry, revision, target)) from e


def _copy_from_cache(
    entry: RegistryEntry,
    target: Path,
    revision: str | None,
    with_text_encoder: bool,
    cache_dir: Path | None,
    reason: str,
) -> None:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    # `prefer` files stay out of the patterns: the cache may hold only one of the alternatives.
    patterns = entry.allow + (entry.text_encoder_allow if with_text_encoder else ())
    try:
        snapshot = Path(
            snapshot_download(
                entry.repo_id,
                revision=revision,
                allow_patterns=list(patterns),
                local_files_only=True,
                cache_dir=cache_dir,
            )
        )
    except IncompleteSnapshotError as e:
        raise DownloadError(
            f"the hub cache holds only part of {entry.repo_id} ({_first_line(e)[:160]}); "
            "download it with network access"
        ) from e
    except LocalEntryNotFoundError as e:
        if _files(target):
            log.info("%s is not in the hub cache; checking the existing %s", entry.repo_id, target)
            return
        where = cache_dir or constants.HF_HUB_CACHE
        raise DownloadError(
            f"{entry.repo_id} is not in the hub cache ({where}) and downloads are off ({reason}): "
            "run again with network access, or pass a local model folder to --model"
        ) from e
    for rel in _select(entry, _files(snapshot), with_text_encoder):
        _link_or_copy(snapshot / rel, target / rel)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link a cached file into place (no second copy on disk), else copy; atomic rename."""
    real = src.resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(real, dst):
        return
    partial = dst.with_name(dst.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(real, partial)
    except OSError:
        shutil.copyfile(real, partial)
    os.replace(partial, dst)


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    if enabled or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def _hub_errors() -> tuple[type[BaseException], ...]:
    """OSError covers the hub's HTTP, offline and cache errors; add the HTTP client's own."""
    errors: list[type[BaseException]] = [OSError]  # requests' errors are OSErrors too
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _explain(e: BaseException, entry: RegistryEntry, revision: str | None, target: Path) -> str:
    """One line: what failed and what the user can do about it."""
    from huggingface_hub import errors as hf

    repo = entry.repo_id
    if isinstance(e, hf.GatedRepoError):
        return (
            f"{repo} is gated: accept its terms at https://huggingface.co/{repo} "
            "and set HF_TOKEN (or run `hf auth login`)"
        )
    if isinstance(e, hf.RepositoryNotFoundError):
        return f"{repo} was not found on the hub (a private repo needs HF_TOKEN); check the name"
    if isinstance(e, hf.RevisionNotFoundError):
        return f"revision {revision!r} does not exist in {repo}; check --revision"
    if isinstance(e, hf.HfHubHTTPError):
        status = getattr(e.response, "status_code", None)
        if status in (401, 403):
            return f"the hub refused access to {repo} (HTTP {status}): set HF_TOKEN"
        return f"the hub answered HTTP {status} for {repo}: try again later"
    if isinstance(e, OSError) and not isinstance(
        e, (ConnectionError, TimeoutError, hf.LocalEntryNotFoundError)
    ):
        return f"cannot write {target}: {_first_line(e)}; check the folder and free disk space"
    return (
        f"cannot reach the Hugging Face hub for {repo} ({type(e).__name__}: "
        f"{_first_line(e)[:120]}): check the network (and HF_ENDPOINT/proxy), use "
        "--local-files-only if the hub cache has it, or pass a local folder to --model"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --------------------------------------------------------------------------------------
# Verification


def verify_download(path: Path, entry: RegistryEntry, *, with_text_encoder: bool = False) -> None:
    """Check a downloaded folder the way its loader will read it; `DownloadError` if not.

    Required files present and non-empty; safetensors headers readable (this also catches a
    truncated file: the header's offsets must cover the file); index shards present; .pth/.bin
    files a zip with its end record or a pickle, not tiny; sha256 where the registry has one;
    and for StreamAvatar repos a valid config.json.
    """
    path = Path(path)
    redo = f"run `streamavatar download {entry.spec} --force` to fetch it again"
    files = _files(path)
    missing = _missing(files, entry.requirements(with_text_encoder))
    if missing:
        raise DownloadError(f"{path}: missing {', '.join(missing)}; {redo}")
    checked = [f for f in files if _matches(f, entry.patterns(with_text_encoder=True))]
    for rel in checked:
        problem = _file_problem(path / rel, rel, entry)
        if problem:
            raise DownloadError(f"{path / rel}: {problem}; {redo}")
    if entry.streamavatar_format:
        try:
            ModelConfig.load(path / "config.json")
        except ValueError as e:
            raise DownloadError(f"{e}; {redo}") from e


def _file_problem(file: Path, rel: str, entry: RegistryEntry) -> str | None:
    size = file.stat().st_size
    if size == 0:
        return "file is empty"
    if size < entry.min_bytes.get(rel, 0):
        return f"{size} bytes, a complete file has at least {entry.min_bytes[rel]}"
    if rel.endswith(".safetensors") or rel.endswith(_INDEX_SUFFIX):
        from streamavatar_cli.models.weights import safetensors_files, safetensors_keys

        try:
            shards = safetensors_files(file)
            if rel.endswith(".safetensors"):
                safetensors_keys(shards)
        except ModelError as e:
            return f"unreadable ({e})"
    elif rel.endswith(_TORCH_SUFFIXES):
        problem = _torch_file_problem(file, size)
        if problem:
            return problem
    if rel in entry.sha256 and _sha256(file) != entry.sha256[rel].lower():
        return "sha256 does not match the registry (corrupt or changed upstream)"
    return None


def _torch_file_problem(file: Path, size: int) -> str | None:
    """A torch.save file is a zip (its end-of-directory record is last) or a raw pickle."""
    if size < MIN_TORCH_FILE_BYTES:
        return f"only {size} bytes: not a real checkpoint"
    with file.open("rb") as f:
        head = f.read(64)
        if head.startswith(b"PK\x03\x04"):
            f.seek(max(0, size - 65_557))  # the end record sits in the last 64 KiB + 22 bytes
            return None if b"PK\x05\x06" in f.read() else "zip end record missing: truncated"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return None
    if head.startswith(b"version https://git-lfs"):
        return "a git-lfs pointer, not the file"
    return f"not a torch checkpoint (starts with {head[:8]!r})"


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        while chunk := f.read(1 << 23):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    """Relative posix paths of the files under `root`, without the hub's `.cache/` metadata."""
    if not root.is_dir():
        return []
    found = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(f for f in found if not f.startswith(".cache/") and not f.endswith(".partial"))


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def _select(entry: RegistryEntry, names: list[str], with_text_encoder: bool) -> list[str]:
    """The files of `names` to fetch: the allow patterns, plus the best `prefer` file present."""
    allow = entry.allow + (entry.text_encoder_allow if with_text_encoder else ())
    chosen = {n for n in names if _matches(n, allow)}
    chosen.update(next(([p] for p in entry.prefer if p in names), []))
    return sorted(chosen)


def _missing(files: list[str], groups: tuple[Requirement, ...]) -> list[str]:
    return [" or ".join(g) for g in groups if not any(_matches(f, g) for f in files)]


# --------------------------------------------------------------------------------------
# Finding and describing model folders


@dataclass(frozen=True)
class ModelSummary:
    """One model folder as `info` shows it."""

    name: str
    path: Path
    kind: str
    size_bytes: int
    note: str = ""


def _checkout_weights_dir() -> Path | None:
    """`weights/` next to the package when running from a source checkout or editable install."""
    root = Path(__file__).resolve().parent.parent
    return root / "weights" if (root / "pyproject.toml").is_file() else None


def weights_dirs() -> list[Path]:
    """Where named models are looked up, in order: $STREAMAVATAR_WEIGHTS, ./weights, checkout."""
    env = os.environ.get("STREAMAVATAR_WEIGHTS")
    candidates = [Path(env).expanduser()] if env else []
    candidates.append(Path.cwd() / DEFAULT_WEIGHTS_DIR)
    checkout = _checkout_weights_dir()
    if checkout is not None:
        candidates.append(checkout)
    unique: dict[Path, Path] = {}
    for d in candidates:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def resolve_model(spec: str | None) -> Path:
    """The model folder for `--model SPEC`.

    None (or "") means $STREAMAVATAR_MODEL, else `streamavatar-tiny`. An existing path is used as is.
    A name (registry name, or hub repo id, looked up by its folder name) is searched in
    `weights_dirs()`; `ModelError` lists where it looked and how to get the model. The special
    spec `random-tiny` (an untrained model built in memory) is handled by `render` before it
    calls this; here it would be an ordinary folder name.
    """
    if not spec:
        spec = os.environ.get("STREAMAVATAR_MODEL") or DEFAULT_MODEL
    given = Path(spec).expanduser()
    if given.exists():
        return given
    name = _folder_name(spec)
    if "/" in name or os.sep in name or given.is_absolute():
        raise ModelError(f"no model folder at {given}: check the path given to --model")
    candidates = [d / name for d in weights_dirs()]
    for folder in candidates:
        if folder.is_dir():
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise ModelError(f"model {spec!r} not found (looked in {looked}); {_how_to_get(spec)}")


def _folder_name(spec: str) -> str:
    """The folder `download` would create for `spec`; other text is taken as a folder name."""
    try:
        return entry_for(spec).name
    except InputError:
        return spec


def _how_to_get(spec: str) -> str:
    if spec == DEFAULT_MODEL:
        return (
            "the bundled small model is missing from this checkout: restore weights/"
            f"{DEFAULT_MODEL} with git, rebuild it with `make train-tiny`, or use "
            "--model random-tiny for an untrained smoke-test model"
        )
    if spec in REGISTRY or _REPO_ID.fullmatch(spec):
        return f"run `streamavatar download {spec}`, or pass a model folder to --model"
    return "pass a model folder to --model, or set STREAMAVATAR_WEIGHTS to the folder holding it"


def describe_model_folder(path: Path) -> ModelSummary:
    """Kind, size and a short note (missing files, untrained audio) of a model folder."""
    path = Path(path)
    files = _files(path)
    size = sum((path / f).stat().st_size for f in files)
    kind, note = _classify(path, files)
    return ModelSummary(name=path.name, path=path, kind=kind, size_bytes=size, note=note)


def _classify(path: Path, files: list[str]) -> tuple[str, str]:
    config = _read_json(path / "config.json")
    if config.get("format") == CONFIG_FORMAT:
        try:
            cfg = ModelConfig.load(path / "config.json")
        except ValueError as e:
            return "unknown", f"invalid config.json: {_first_line(e)}"
        notes = _missing_note(files, _OWN_REQUIRED + (_OWN_VAE,))
        notes += [] if cfg.audio_trained else ["audio untrained"]
        return f"streamavatar {cfg.kind}", "; ".join(notes)
    if config.get("_class_name") == "WanModel" or config.get("model_type") == "ti2v":
        return "wan2.2 official", "; ".join(_missing_note(files, _requirements("wan2.2-ti2v-5b")))
    if "model_index.json" in files or {"transformer", "vae"} <= {f.split("/")[0] for f in files}:
        missing = _missing_note(files, _requirements("wan2.2-ti2v-5b-diffusers"))
        return "wan2.2 diffusers", "; ".join(missing)
    if config.get("model_type") == "wav2vec2":
        return "wav2vec2", "; ".join(_missing_note(files, _requirements("wav2vec2-base-960h")))
    return "unknown", "config.json not recognised" if config else "no readable config.json"


def _requirements(name: str) -> tuple[Requirement, ...]:
    return REGISTRY[name].requirements(with_text_encoder=False)


def _missing_note(files: list[str], groups: tuple[Requirement, ...]) -> list[str]:
    missing = _missing(files, groups)
    return [f"missing {', '.join(missing)}"] if missing else []


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def list_models(weights_dir: Path) -> list[ModelSummary]:
    """Every model folder directly inside `weights_dir` (none if it does not exist)."""
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        return []
    folders = (p for p in sorted(weights_dir.iterdir()) if p.is_dir() and p.name[0] != ".")
    return [describe_model_folder(p) for p in folders]


def human_size(n_bytes: int) -> str:
    """Decimal units, as the hub shows file sizes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"
