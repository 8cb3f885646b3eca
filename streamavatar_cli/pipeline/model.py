"""A renderable model: config + DiT + VAE (+ how to compute its audio features), loaded once.

`load_model` reads a StreamAvatar model folder (config.json, dit.safetensors, vae.safetensors or
Wan2.2_VAE.pth) found by `hub.resolve_model`, or builds `random-tiny`: the tiny architecture with
seeded random weights, an honest smoke test until the bundled trained model exists.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from streamavatar_cli.audio import FeatureExtractor, load_feature_extractor
from streamavatar_cli.config import MODEL_PRESETS, ModelConfig
from streamavatar_cli.errors import ModelError
from streamavatar_cli.models import WanDiT, WanVAE, load_dit, load_vae, save_dit
from streamavatar_cli.models.dit import compile_blocks

log = logging.getLogger(__name__)

RANDOM_TINY = "random-tiny"
VAE_FILES = ("vae.safetensors", "Wan2.2_VAE.pth")


@dataclass
class StreamAvatarModel:
    config: ModelConfig
    dit: WanDiT
    vae: WanVAE
    source: str
    untrained: bool = False  # random weights: the video shows the pipeline, not a person
    _features: FeatureExtractor | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def features(self) -> FeatureExtractor:
        """The audio feature extractor the model was trained with, loaded on first use and then
        kept (a batch renders many jobs with one wav2vec2)."""
        if self._features is None:
            self._features = load_feature_extractor(self.config.audio, device=self.dit.device)
        return self._features


def random_tiny_model(
    seed: int = 0, *, dit_device: str | torch.device = "cpu", vae_device: str | torch.device = "cpu"
) -> StreamAvatarModel:
    """The `tiny` architecture with seeded random weights (fp32), kind `student`."""
    base = MODEL_PRESETS["tiny"]
    config = dataclasses.replace(
        base,
        name=RANDOM_TINY,
        description="untrained: randomly initialised tiny model for smoke tests",
    )
    torch.manual_seed(seed)
    dit = WanDiT(config.dit).eval().requires_grad_(False).to(dit_device)
    vae = WanVAE(config.vae).eval().requires_grad_(False).to(vae_device)
    return StreamAvatarModel(config, dit, vae, source=RANDOM_TINY, untrained=True)


def find_vae_file(folder: Path) -> Path:
    for name in VAE_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ModelError(f"{folder}: no VAE weights ({' or '.join(VAE_FILES)})")


def load_model(
    folder: str | Path,
    *,
    dit_device: str | torch.device = "cpu",
    vae_device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> StreamAvatarModel:
    """Load a StreamAvatar model folder. The VAE always runs in fp32 unless dtype is bf16 on GPU."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(
            f"{folder} has no config.json: not a StreamAvatar model folder (Wan checkpoints must "
            "first be turned into a student with `streamavatar train`)"
        )
    try:
        config = ModelConfig.load(config_file)
    except ValueError as e:
        raise ModelError(str(e)) from e
    dit = load_dit(folder, config=config.dit, device=dit_device, dtype=dtype)
    vae_dtype = dtype if torch.device(vae_device).type == "cuda" else torch.float32
    vae = load_vae(find_vae_file(folder), config=config.vae, device=vae_device, dtype=vae_dtype)
    return StreamAvatarModel(config, dit, vae.eval().requires_grad_(False), source=str(folder))


def save_model(model: StreamAvatarModel, folder: str | Path) -> Path:
    """Write config.json, dit.safetensors and vae.safetensors (official VAE names)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_dit(model.dit, folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.vae.state_dict().items()}
    tmp = folder / ".vae.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(folder / "vae.safetensors")
    model.config.save(folder / "config.json")
    return folder


def check_renderable(model: StreamAvatarModel) -> list[str]:
    """Refuse checkpoints that cannot stream; return warnings for ones that can but are weak."""
    kind = model.config.kind
    what = {"teacher": "a bidirectional teacher", "base": "the Wan backbone, not distilled"}
    if kind != "student":
        raise ModelError(
            f"{model.source} is a {kind} checkpoint ({what.get(kind, kind)}): "
            "render needs a distilled streaming student. Make one with `streamavatar train` "
            "(ode-init, then distill), or pass a student folder to --model"
        )
    warnings = []
    if model.untrained:
        warnings.append(
            "random-tiny is an UNTRAINED, randomly initialised model: the video shows the "
            "pipeline working (frames, timing, audio), not a talking person"
        )
    elif model.config.domain == "puppet":
        warnings.append(
            f"{model.name} was trained on procedural puppets only: it knows puppets, not "
            "photographs, and renders a photo as a puppet-like blur (its model card says more)"
        )
    elif not model.config.audio_trained:
        warnings.append(
            f"{model.name}: its audio modules were never trained, so lips and listening motion "
            "will not follow the audio"
        )
    return warnings


def open_model(
    spec: str | None,
    *,
    dit_device: str | torch.device = "cpu",
    vae_device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
) -> StreamAvatarModel:
    """`--model` to a loaded model: `random-tiny`, a folder path, or a name in the weights dirs
    (None: $STREAMAVATAR_MODEL, then the bundled `streamavatar-tiny`). `compile` runs the DiT's
    blocks through `torch.compile` (eager fallback; worth it on GPUs, slower on CPUs)."""
    from streamavatar_cli import hub

    if (spec or os.environ.get("STREAMAVATAR_MODEL")) == RANDOM_TINY:
        model = random_tiny_model(dit_device=dit_device, vae_device=vae_device)
    else:
        folder = hub.resolve_model(spec)
        model = load_model(folder, dit_device=dit_device, vae_device=vae_device, dtype=dtype)
    if compile:
        compile_blocks(model.dit)
    return model
