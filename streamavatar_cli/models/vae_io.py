"""Loading the Wan2.2 VAE: official `.pth`, official-named safetensors, or a diffusers folder.

`load_vae` accepts a weight file (`Wan2.2_VAE.pth` or any torch-saved state dict, possibly
under "state_dict"; `.safetensors` or a shard index), a StreamAvatar model folder
(`vae.safetensors` or `Wan2.2_VAE.pth`), a diffusers `AutoencoderKLWan` folder (`config.json` +
`diffusion_pytorch_model.safetensors`, possibly sharded) or a diffusers pipeline root with a
`vae/` subfolder. Key names are told apart by content, not by file name. The model is built on
the meta device and every tensor is assigned as it is read (see `weights.py`). Diffusers names
are translated by the rule table below, which also runs backwards
(`official_to_diffusers_vae_keys`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from streamavatar_cli.config import VAEConfig
from streamavatar_cli.errors import ModelError
from streamavatar_cli.models.vae import WanVAE
from streamavatar_cli.models.weights import (
    SAFETENSORS_INDEX_SUFFIX,
    assign_state_dict,
    iter_safetensors,
    pickle_refused,
    safetensors_files,
    safetensors_keys,
)

log = logging.getLogger(__name__)

OFFICIAL_PTH = "Wan2.2_VAE.pth"
MODEL_FOLDER_STEM = "vae"  # vae.safetensors in a StreamAvatar model folder
DIFFUSERS_STEM = "diffusion_pytorch_model"
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors", SAFETENSORS_INDEX_SUFFIX)

# --------------------------------------------------------------------------------------
# Key names, diffusers <-> official

# (diffusers prefix, official prefix, is a residual block). `{e}` is encoder|decoder, `{i}`
# and `{j}` are block indices. Officially a resample is just the next index after a stage's
# residual blocks: `{Renc}` = num_res_blocks, `{Rdec}` = num_res_blocks + 1 (the decoder has
# one more residual block per stage). The resample rules therefore come first.
_BLOCK_RULES: tuple[tuple[str, str, bool], ...] = (
    ("encoder.down_blocks.{i}.downsampler.", "encoder.downsamples.{i}.downsamples.{Renc}.", False),
    ("encoder.down_blocks.{i}.resnets.{j}.", "encoder.downsamples.{i}.downsamples.{j}.", True),
    ("decoder.up_blocks.{i}.upsampler.", "decoder.upsamples.{i}.upsamples.{Rdec}.", False),
    ("decoder.up_blocks.{i}.resnets.{j}.", "decoder.upsamples.{i}.upsamples.{j}.", True),
    ("{e}.mid_block.resnets.0.", "{e}.middle.0.", True),
    ("{e}.mid_block.attentions.0.", "{e}.middle.1.", False),
    ("{e}.mid_block.resnets.1.", "{e}.middle.2.", True),
    ("{e}.conv_in.", "{e}.conv1.", False),
    ("{e}.norm_out.", "{e}.head.0.", False),
    ("{e}.conv_out.", "{e}.head.2.", False),
    ("quant_conv.", "conv1.", False),
    ("post_quant_conv.", "conv2.", False),
)

# Inside a residual block: diffusers layer -> official `residual.N` slot / `shortcut`.
_RESNET_LAYERS: tuple[tuple[str, str], ...] = (
    ("norm1.", "residual.0."),
    ("conv1.", "residual.2."),
    ("norm2.", "residual.3."),
    ("conv2.", "residual.6."),
    ("conv_shortcut.", "shortcut."),
)

_PLACEHOLDERS = {"e": "encoder|decoder", "i": r"\d+", "j": r"\d+"}


@functools.lru_cache(maxsize=8)
def _compiled_rules(num_res_blocks: int) -> list[tuple[re.Pattern, re.Pattern, str, str, bool]]:
    """Each rule as (diffusers regex, official regex, the two templates, is a residual block)."""
    rules = []
    for diffusers, official, is_resnet in _BLOCK_RULES:
        official = official.replace("{Renc}", str(num_res_blocks))
        official = official.replace("{Rdec}", str(num_res_blocks + 1))
        rules.append((_regex(diffusers), _regex(official), diffusers, official, is_resnet))
    return rules


def _regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, group in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{group})")
    return re.compile(pattern)


def _translate(key: str, num_res_blocks: int, to_official: bool) -> str:
    for diff_rx, off_rx, diff_tpl, off_tpl, is_resnet in _compiled_rules(num_res_blocks):
        match = (diff_rx if to_official else off_rx).match(key)
        if match is None:
            continue
        rest = key[match.end() :]
        if is_resnet:
            rest = _translate_resnet_layer(key, rest, to_official)
        return (off_tpl if to_official else diff_tpl).format(**match.groupdict()) + rest
    side = "diffusers" if to_official else "official"
    raise ModelError(f"VAE tensor {key!r} is not a Wan2.2 VAE {side} key")


def _translate_resnet_layer(key: str, rest: str, to_official: bool) -> str:
    for diffusers, official in _RESNET_LAYERS:
        src, dst = (diffusers, official) if to_official else (official, diffusers)
        if rest.startswith(src):
            return dst + rest[len(src) :]
    raise ModelError(f"VAE tensor {key!r}: unknown residual-block layer {rest!r}")


def diffusers_to_official_vae_keys(keys: Iterable[str], num_res_blocks: int) -> dict[str, str]:
    """{diffusers key: official key} for `AutoencoderKLWan` (is_residual) tensor names."""
    return {k: _translate(k, num_res_blocks, to_official=True) for k in keys}


def official_to_diffusers_vae_keys(keys: Iterable[str], num_res_blocks: int) -> dict[str, str]:
    """{official key: diffusers key}, the inverse of `diffusers_to_official_vae_keys`."""
    return {k: _translate(k, num_res_blocks, to_official=False) for k in keys}


def _has_diffusers_names(keys: Iterable[str]) -> bool:
    return any(
        k.startswith(("quant_conv.", "post_quant_conv.")) or ".mid_block." in k for k in keys
    )


# --------------------------------------------------------------------------------------
# Configs found next to the weights


def vae_config_from_diffusers(data: dict) -> VAEConfig:
    """`VAEConfig` from a diffusers `AutoencoderKLWan` config.json (Wan2.2 residual only)."""
    if not data.get("is_residual", False):
        raise ModelError(
            "this diffusers VAE is not the Wan2.2 residual VAE (is_residual is false, e.g. "
            "the Wan2.1 VAE); use the Wan2.2 VAE (Wan-AI/Wan2.2-TI2V-5B)"
        )
    if data.get("attn_scales"):
        raise ModelError(f"diffusers VAE attn_scales={data['attn_scales']} is not supported")
    required = ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample",
                "latents_mean", "latents_std")  # fmt: skip
    missing = [k for k in required if k not in data]
    if missing:
        raise ModelError(f"diffusers VAE config.json lacks {missing}")
    patch = data.get("patch_size") or 1
    try:
        config = VAEConfig(
            z_dim=data["z_dim"],
            base_dim=data["base_dim"],
            decoder_base_dim=data.get("decoder_base_dim") or data["base_dim"],
            dim_mult=tuple(data["dim_mult"]),
            num_res_blocks=data["num_res_blocks"],
            temporal_downsample=tuple(bool(t) for t in data["temperal_downsample"]),
            patch_size=patch,
            latents_mean=tuple(data["latents_mean"]),
            latents_std=tuple(data["latents_std"]),
        ).validate()
    except ValueError as e:
        raise ModelError(f"diffusers VAE config.json: {e}") from e
    for side in ("in_channels", "out_channels"):
        if data.get(side, 3 * patch**2) != 3 * patch**2:
            raise ModelError(
                f"diffusers VAE {side}={data[side]}; patch_size {patch} needs {3 * patch**2}"
            )
    return config


def _folder_config(folder: Path) -> VAEConfig | None:
    """The VAE config a folder's config.json gives: diffusers `AutoencoderKLWan` or ours."""
    file = folder / "config.json"
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        return None
    if data.get("_class_name") == "AutoencoderKLWan":
        return vae_config_from_diffusers(data)
    if data.get("format") == "streamavatar" and "vae" in data:
        try:
            return VAEConfig.from_dict(data["vae"])
        except ValueError as e:
            raise ModelError(f"{file}: {e}") from e
    return None  # e.g. the DiT's config.json beside Wan2.2_VAE.pth


# --------------------------------------------------------------------------------------
# Files


def _find_weights(path: Path) -> tuple[list[Path], VAEConfig | None]:
    """The weight file(s) `path` points at, and the config found beside them (if any)."""
    if path.is_file():
        if path.name.endswith(TORCH_SUFFIXES):
            return [path], _folder_config(path.parent)
        if path.name.endswith(SAFETENSORS_SUFFIXES):
            return safetensors_files(path), _folder_config(path.parent)
        raise ModelError(f"{path}: unknown weight format; expected .safetensors or .pth")
    if not path.is_dir():
        raise ModelError(f"{path}: no such file or folder")
    for stem in (DIFFUSERS_STEM, MODEL_FOLDER_STEM):
        if any((path / f"{stem}{suffix}").is_file() for suffix in SAFETENSORS_SUFFIXES):
            return safetensors_files(path, stem), _folder_config(path)
    if (path / OFFICIAL_PTH).is_file():
        return [path / OFFICIAL_PTH], _folder_config(path)
    if (path / "vae").is_dir():
        return _find_weights(path / "vae")
    raise ModelError(
        f"{path}: no VAE weights found; expected {MODEL_FOLDER_STEM}.safetensors, {OFFICIAL_PTH}, "
        f"a diffusers VAE ({DIFFUSERS_STEM}.safetensors + config.json) or a vae/ subfolder"
    )


def _read_pth(file: Path) -> dict[str, torch.Tensor]:
    """A torch-saved state dict (plain, or under "state_dict"), memory-mapped when possible.

    `weights_only=True`: torch's restricted unpickler builds tensors and containers only, so a
    file whose pickle would construct any other object (and could run code) is refused.
    """
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": the outcome is reported below, not as a warning
            warnings.simplefilter("ignore", UserWarning)
            # mmap needs the zip format; older torch.save files load without it.
            data = torch.load(
                file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file)
            )
    except Exception as e:  # RuntimeError, EOFError, UnpicklingError, KeyError, ...: all "bad file"
        raise pickle_refused(file, e) or _unreadable_pth(file, e) from e
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelError(f"{file}: not a state dict of tensors (keys -> tensors)")
    return data


def _unreadable_pth(file: Path, e: BaseException) -> ModelError:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return ModelError(
        f"{file}: cannot read the checkpoint ({type(e).__name__}: {first_line}); the file "
        "may be truncated or not a PyTorch state dict: download it again"
    )


def _open_tensors(files: list[Path]) -> tuple[list[str], Iterator[tuple[str, torch.Tensor]]]:
    """(all keys, a lazy (key, tensor) iterator) for one .pth file or safetensors file(s)."""
    if files[0].name.endswith(TORCH_SUFFIXES):
        state = _read_pth(files[0])
        return list(state), iter(state.items())
    return list(safetensors_keys(files)), iter_safetensors(files)


def load_vae(
    path: str | Path,
    *,
    config: VAEConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WanVAE:
    """Load a Wan2.2 VAE from a file or folder (the layouts are in the module docstring).

    `config=None` takes the config found beside the weights (a diffusers config.json or a
    StreamAvatar model config.json), else the `wan2.2` preset.
    """
    path = Path(path)
    files, found = _find_weights(path)
    config = config or found or VAEConfig.preset("wan2.2")
    keys, tensors = _open_tensors(files)
    if _has_diffusers_names(keys):
        names = diffusers_to_official_vae_keys(keys, config.num_res_blocks)
        tensors = ((names[k], t) for k, t in tensors)
    with torch.device("meta"):
        model = WanVAE(config)
    assign_state_dict(model, tensors, device=device, dtype=dtype, source=str(path))
    log.info("loaded VAE from %s (%d tensors, %s)", path, len(keys), dtype)
    return model.eval().requires_grad_(False)
