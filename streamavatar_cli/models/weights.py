"""Reading checkpoint tensors and assigning them to a module built on the meta device.

Why this shape: a 5B model in fp32 is 20 GB. Building the module on `meta` and assigning each
tensor as it is read (converted to the target dtype/device one at a time) keeps the peak at
one copy of the model plus one tensor, never two copies.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from streamavatar_cli.errors import ModelError

log = logging.getLogger(__name__)

SAFETENSORS_INDEX_SUFFIX = ".safetensors.index.json"


def safetensors_files(path: Path, stem: str | None = None) -> list[Path]:
    """The safetensors file(s) of a checkpoint: one file, or the shards an index json lists.

    `path` is a file or a folder; in a folder, `stem` selects `stem.safetensors` or
    `stem.safetensors.index.json` (e.g. "diffusion_pytorch_model", "dit").
    """
    path = Path(path)
    if path.is_file():
        if path.name.endswith(SAFETENSORS_INDEX_SUFFIX):
            return _shards_from_index(path)
        return [path]
    if stem is None:
        raise ModelError(f"{path}: expected a .safetensors file")
    single = path / f"{stem}.safetensors"
    index = path / f"{stem}{SAFETENSORS_INDEX_SUFFIX}"
    if index.is_file():
        return _shards_from_index(index)
    if single.is_file():
        return [single]
    raise ModelError(f"{path}: neither {single.name} nor {index.name} found")


def _shards_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{index}: not a safetensors index (needs a 'weight_map' object)") from e
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise ModelError(f"{index}: shard(s) listed but not present: {missing}")
    return [index.parent / s for s in shards]


def iter_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (key, tensor) from safetensors files without loading a whole file at once."""
    from safetensors import SafetensorError, safe_open

    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    yield key, f.get_tensor(key)
        except (SafetensorError, OSError) as e:
            raise ModelError(
                f"{file}: cannot read safetensors ({e}); the file may be truncated: "
                "download it again"
            ) from e


def safetensors_keys(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Key -> shape from the headers only (cheap: reads no tensor data)."""
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except (SafetensorError, OSError) as e:
            raise ModelError(
                f"{file}: cannot read safetensors header ({e}); the file may be truncated: "
                "download it again"
            ) from e
    return shapes


def pickle_refused(file: Path | str, error: BaseException) -> ModelError | None:
    """A `ModelError` if `error` is torch's `weights_only` unpickler refusing an object other
    than tensors and containers (a pickle that could run code), else None."""
    if not isinstance(error, pickle.UnpicklingError) or "weights only" not in str(error).lower():
        return None
    return ModelError(
        f"{file}: refused to load: besides tensors the file holds Python objects whose "
        "unpickling could run code; only plain state dicts of tensors are read. Use the "
        "official checkpoint (or a .safetensors file) from a source you trust"
    )


def _describe(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def assign_state_dict(
    module: nn.Module,
    tensors: Iterator[tuple[str, torch.Tensor]],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    keep_fp32: Callable[[str], bool] = lambda key: False,
    allow_missing: Callable[[str], bool] = lambda key: False,
    source: str = "checkpoint",
) -> list[str]:
    """Assign `tensors` to `module` (built on meta), converting dtype/device per tensor.

    Floating tensors become `dtype` unless `keep_fp32(key)`; shapes must match exactly, and
    so must the kind of dtype: any float width (fp64 ... fp8) is converted, but an integer,
    bool or complex tensor where the model has floating weights is refused (it is not a
    checkpoint of this model; converting it would load garbage). Unexpected keys, mismatches
    and missing keys (other than those `allow_missing` accepts) raise `ModelError` naming the
    keys. Returns the allowed missing keys, which are still on meta: the caller initialises them.
    """
    state = module.state_dict(keep_vars=True)
    expected = {k: tuple(v.shape) for k, v in state.items()}
    loaded: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in tensors:
        if key not in expected:
            unexpected.append(key)
            continue
        if tuple(tensor.shape) != expected[key]:
            raise ModelError(
                f"{source}: tensor {key!r} has shape {tuple(tensor.shape)}, the model expects "
                f"{expected[key]}: the config does not match these weights"
            )
        if tensor.is_floating_point() != state[key].is_floating_point():
            raise ModelError(
                f"{source}: tensor {key!r} is {str(tensor.dtype).removeprefix('torch.')}, the "
                f"model expects {str(state[key].dtype).removeprefix('torch.')}: not a checkpoint "
                "of this model, or a damaged one; download or convert it again"
            )
        if tensor.is_floating_point():
            target = torch.float32 if keep_fp32(key) else (dtype or tensor.dtype)
            tensor = tensor.to(device=device, dtype=target)
        else:
            tensor = tensor.to(device=device)
        loaded[key] = tensor
    if unexpected:
        raise ModelError(
            f"{source}: unexpected tensor(s) {_describe(sorted(unexpected))}: the config does "
            "not match these weights"
        )
    missing = sorted(k for k in expected if k not in loaded)
    fatal = [k for k in missing if not allow_missing(k)]
    if fatal:
        raise ModelError(
            f"{source}: missing tensor(s) {_describe(fatal)}: the checkpoint is incomplete or "
            "the config does not match it"
        )
    module.load_state_dict(loaded, strict=False, assign=True)
    return missing


def materialize_(module: nn.Module, device: torch.device | str, dtype: torch.dtype) -> None:
    """Give every parameter still on meta uninitialised storage, every meta buffer zeros."""
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            if param.is_meta:
                real = torch.empty(param.shape, device=device, dtype=dtype)
                setattr(sub, name, nn.Parameter(real, requires_grad=param.requires_grad))
        for name, buf in list(sub.named_buffers(recurse=False)):
            if buf is not None and buf.is_meta:
                sub._buffers[name] = torch.zeros(buf.shape, device=device, dtype=dtype)
