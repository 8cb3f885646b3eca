"""Loading and saving the DiT: official Wan folders, diffusers folders, our own checkpoints.

Three layouts are read:
- official (`Wan-AI/Wan2.2-TI2V-5B`): `config.json` (`_class_name: WanModel`) and
  `diffusion_pytorch_model*.safetensors`, sharded with an index json;
- diffusers (`Wan-AI/Wan2.2-TI2V-5B-Diffusers`): a `transformer/` folder (or that folder
  itself) with a `WanTransformer3DModel` config; keys renamed by `diffusers_to_official_key`;
- ours: `config.json` with `format: streamavatar` and `dit.safetensors` (official names plus
  the audio modules and `prompt_context`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from streamavatar_cli.config import CONFIG_FORMAT, DiTConfig, ModelConfig
from streamavatar_cli.errors import ModelError
from streamavatar_cli.models.dit import WanDiT, is_audio_param, is_fp32_param
from streamavatar_cli.models.weights import (
    assign_state_dict,
    iter_safetensors,
    materialize_,
    safetensors_files,
)

log = logging.getLogger(__name__)

DIT_FILE_STEM = "dit"
OFFICIAL_FILE_STEM = "diffusion_pytorch_model"
PROMPT_KEY = "prompt_context"


@dataclass(frozen=True)
class DiTLoadReport:
    """What `load_dit` found: which layout, and whether audio/prompt weights were present."""

    layout: str  # "official" | "diffusers" | "streamavatar"
    path: Path
    audio_weights: bool
    prompt_context: bool


# ---- key mapping (wan22-backbone.md 2.3) --------------------------------------------------

# Ordered (diffusers pattern, official replacement) pairs, applied to the whole key with
# re.fullmatch; the first pattern that matches wins. The norm2/norm3 swap is explicit.
_DIFFUSERS_TO_OFFICIAL = [
    (r"condition_embedder\.time_embedder\.linear_1\.(.*)", r"time_embedding.0.\1"),
    (r"condition_embedder\.time_embedder\.linear_2\.(.*)", r"time_embedding.2.\1"),
    (r"condition_embedder\.text_embedder\.linear_1\.(.*)", r"text_embedding.0.\1"),
    (r"condition_embedder\.text_embedder\.linear_2\.(.*)", r"text_embedding.2.\1"),
    (r"condition_embedder\.time_proj\.(.*)", r"time_projection.1.\1"),
    (r"scale_shift_table", r"head.modulation"),
    (r"proj_out\.(.*)", r"head.head.\1"),
    (r"patch_embedding\.(.*)", r"patch_embedding.\1"),
    (r"blocks\.(\d+)\.scale_shift_table", r"blocks.\1.modulation"),
    (r"blocks\.(\d+)\.ffn\.net\.0\.proj\.(.*)", r"blocks.\1.ffn.0.\2"),
    (r"blocks\.(\d+)\.ffn\.net\.2\.(.*)", r"blocks.\1.ffn.2.\2"),
    (r"blocks\.(\d+)\.norm2\.(.*)", r"blocks.\1.norm3.\2"),  # affine cross-attention norm
    (r"blocks\.(\d+)\.attn1\.to_out\.0\.(.*)", r"blocks.\1.self_attn.o.\2"),
    (r"blocks\.(\d+)\.attn1\.to_([qkv])\.(.*)", r"blocks.\1.self_attn.\2.\3"),
    (r"blocks\.(\d+)\.attn1\.(norm_[qk])\.(.*)", r"blocks.\1.self_attn.\2.\3"),
    (r"blocks\.(\d+)\.attn2\.to_out\.0\.(.*)", r"blocks.\1.cross_attn.o.\2"),
    (r"blocks\.(\d+)\.attn2\.to_([qkv])\.(.*)", r"blocks.\1.cross_attn.\2.\3"),
    (r"blocks\.(\d+)\.attn2\.(norm_[qk])\.(.*)", r"blocks.\1.cross_attn.\2.\3"),
]
_OFFICIAL_TO_DIFFUSERS = [
    (r"time_embedding\.0\.(.*)", r"condition_embedder.time_embedder.linear_1.\1"),
    (r"time_embedding\.2\.(.*)", r"condition_embedder.time_embedder.linear_2.\1"),
    (r"text_embedding\.0\.(.*)", r"condition_embedder.text_embedder.linear_1.\1"),
    (r"text_embedding\.2\.(.*)", r"condition_embedder.text_embedder.linear_2.\1"),
    (r"time_projection\.1\.(.*)", r"condition_embedder.time_proj.\1"),
    (r"head\.modulation", r"scale_shift_table"),
    (r"head\.head\.(.*)", r"proj_out.\1"),
    (r"patch_embedding\.(.*)", r"patch_embedding.\1"),
    (r"blocks\.(\d+)\.modulation", r"blocks.\1.scale_shift_table"),
    (r"blocks\.(\d+)\.ffn\.0\.(.*)", r"blocks.\1.ffn.net.0.proj.\2"),
    (r"blocks\.(\d+)\.ffn\.2\.(.*)", r"blocks.\1.ffn.net.2.\2"),
    (r"blocks\.(\d+)\.norm3\.(.*)", r"blocks.\1.norm2.\2"),
    (r"blocks\.(\d+)\.self_attn\.o\.(.*)", r"blocks.\1.attn1.to_out.0.\2"),
    (r"blocks\.(\d+)\.self_attn\.([qkv])\.(.*)", r"blocks.\1.attn1.to_\2.\3"),
    (r"blocks\.(\d+)\.self_attn\.(norm_[qk])\.(.*)", r"blocks.\1.attn1.\2.\3"),
    (r"blocks\.(\d+)\.cross_attn\.o\.(.*)", r"blocks.\1.attn2.to_out.0.\2"),
    (r"blocks\.(\d+)\.cross_attn\.([qkv])\.(.*)", r"blocks.\1.attn2.to_\2.\3"),
    (r"blocks\.(\d+)\.cross_attn\.(norm_[qk])\.(.*)", r"blocks.\1.attn2.\2.\3"),
]


def _rename(key: str, rules: list[tuple[str, str]], what: str) -> str:
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(replacement)
    raise ModelError(f"{what}: no mapping for tensor {key!r}")


def diffusers_to_official_key(key: str) -> str:
    return _rename(key, _DIFFUSERS_TO_OFFICIAL, "diffusers transformer")


def official_to_diffusers_key(key: str) -> str:
    return _rename(key, _OFFICIAL_TO_DIFFUSERS, "official Wan DiT")


# ---- config mapping -----------------------------------------------------------------------


def official_config_to_dit(data: dict, base: DiTConfig | None = None) -> DiTConfig:
    """Official `WanModel` config.json -> DiTConfig (audio fields from `base` or defaults)."""
    if tuple(data.get("window_size", (-1, -1))) != (-1, -1):
        raise ModelError(f"window_size={data['window_size']}: only global attention is supported")
    fields = ("dim", "ffn_dim", "freq_dim", "in_dim", "out_dim", "num_heads", "num_layers",
              "text_len", "text_dim", "eps")  # fmt: skip
    overrides = {k: data[k] for k in fields if k in data}
    if "patch_size" in data:
        overrides["patch_size"] = tuple(data["patch_size"])
    return _replace(base or DiTConfig(), overrides)


def diffusers_config_to_dit(data: dict, base: DiTConfig | None = None) -> DiTConfig:
    """diffusers `WanTransformer3DModel` config -> DiTConfig (audio fields from `base`)."""
    if data.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads" or not data.get(
        "cross_attn_norm", True
    ):
        raise ModelError(
            "only qk_norm='rms_norm_across_heads' with cross_attn_norm=true is supported"
        )
    if data.get("added_kv_proj_dim") or data.get("image_dim"):
        # A known third-party mirror sets these although the weights have no image layers; any
        # such tensors would be reported as unexpected below.
        log.warning("ignoring added_kv_proj_dim/image_dim in the diffusers config (TI2V has none)")
    heads = data["num_attention_heads"]
    overrides = {
        "dim": heads * data["attention_head_dim"],
        "num_heads": heads,
        "in_dim": data["in_channels"],
        "out_dim": data.get("out_channels") or data["in_channels"],
        "text_dim": data["text_dim"],
        "freq_dim": data["freq_dim"],
        "ffn_dim": data["ffn_dim"],
        "num_layers": data["num_layers"],
        "eps": data.get("eps", 1e-6),
        "patch_size": tuple(data.get("patch_size", (1, 2, 2))),
    }
    return _replace(base or DiTConfig(), overrides)


def _replace(cfg: DiTConfig, overrides: dict) -> DiTConfig:
    import dataclasses

    try:
        return dataclasses.replace(cfg, **overrides).validate()
    except (TypeError, ValueError) as e:
        raise ModelError(f"DiT config: {e}") from e


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: cannot read JSON ({e})") from e


# ---- layout detection and loading ---------------------------------------------------------


def detect_dit_layout(path: Path) -> tuple[str, Path, dict]:
    """-> (layout, folder holding the weights, its config dict)."""
    if not path.exists():
        raise ModelError(f"model path {path} does not exist")
    if not path.is_dir():
        raise ModelError(f"{path}: expected a model folder (with config.json)")
    if (path / "transformer" / "config.json").is_file():
        return "diffusers", path / "transformer", _read_json(path / "transformer" / "config.json")
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{path}: no config.json (nor transformer/config.json); not a model folder"
        )
    data = _read_json(path / "config.json")
    if data.get("format") == CONFIG_FORMAT:
        return "streamavatar", path, data
    if data.get("_class_name") == "WanTransformer3DModel":
        return "diffusers", path, data
    if data.get("_class_name") == "WanModel" or ("dim" in data and "num_heads" in data):
        return "official", path, data
    raise ModelError(
        f"{path}/config.json: not a Wan DiT config (no WanModel/WanTransformer3DModel)"
    )


def load_dit(
    path: str | Path,
    *,
    config: DiTConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WanDiT:
    """Load a DiT from any of the three layouts, building on meta and assigning tensors.

    `config` overrides what the folder says (its audio fields matter for Wan folders, which
    carry no audio modules). Floating tensors are converted to `dtype` while loading, except the
    time embedding and modulation, which stay fp32. A checkpoint without audio weights (a base
    Wan checkpoint) leaves the audio modules freshly initialised with zero output projections:
    the model then computes exactly the base Wan output. The report is `model.load_report`.
    """
    layout, folder, data = detect_dit_layout(Path(path))
    if layout == "streamavatar":
        cfg = config or ModelConfig.from_dict(data).dit
        files, rename = safetensors_files(folder, DIT_FILE_STEM), None
    elif layout == "diffusers":
        cfg = config or diffusers_config_to_dit(data)
        files, rename = safetensors_files(folder, OFFICIAL_FILE_STEM), diffusers_to_official_key
    else:
        cfg = config or official_config_to_dit(data)
        files, rename = safetensors_files(folder, OFFICIAL_FILE_STEM), None
    with torch.device("meta"):
        model = WanDiT(cfg)
    tensors = iter_safetensors(files)
    if rename is not None:
        tensors = ((rename(k), t) for k, t in tensors)
    missing = assign_state_dict(
        model,
        tensors,
        device=device,
        dtype=dtype,
        keep_fp32=is_fp32_param,
        allow_missing=lambda k: is_audio_param(k) or k == PROMPT_KEY,
        source=str(folder),
    )
    audio_missing = [k for k in missing if is_audio_param(k)]
    expected_audio = [k for k in model.state_dict() if is_audio_param(k)]
    if audio_missing and len(audio_missing) != len(expected_audio):
        raise ModelError(
            f"{folder}: some audio-module tensors are missing, e.g. {audio_missing[0]!r}"
        )
    materialize_(model, device, dtype)
    if audio_missing:
        model.init_audio_modules_()
        log.warning(
            "%s has no audio-module weights: the talk/listen modules are zero-initialised, so "
            "the model ignores audio until it is trained (streamavatar train)",
            folder,
        )
    model.load_report = DiTLoadReport(layout, folder, not audio_missing, PROMPT_KEY not in missing)
    return model.eval().requires_grad_(False)


def save_dit(model: WanDiT, folder: str | Path) -> Path:
    """Write `dit.safetensors` (official names + audio modules + prompt_context) into folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    target = folder / f"{DIT_FILE_STEM}.safetensors"
    tmp = folder / f".{DIT_FILE_STEM}.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": CONFIG_FORMAT})
    tmp.replace(target)
    return target
