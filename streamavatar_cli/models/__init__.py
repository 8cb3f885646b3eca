"""Models: the Wan2.2 DiT with StreamAvatar audio modules, the Wan2.2 VAE, and their loaders."""

from streamavatar_cli.config import DiTConfig, VAEConfig
from streamavatar_cli.models.dit import WanDiT
from streamavatar_cli.models.dit_io import load_dit, save_dit
from streamavatar_cli.models.vae import StreamingDecoder, WanVAE
from streamavatar_cli.models.vae_io import load_vae

__all__ = [
    "DiTConfig",
    "WanDiT",
    "load_dit",
    "save_dit",
    "VAEConfig",
    "WanVAE",
    "StreamingDecoder",
    "load_vae",
]
