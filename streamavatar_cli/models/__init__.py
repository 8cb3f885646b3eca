"""Models: the Wan2.2 DiT with StreamAvatar audio modules, the Wan2.2 VAE, and their loaders."""

from streamavatar_cli.config import DiTConfig
from streamavatar_cli.models.dit import WanDiT
from streamavatar_cli.models.dit_io import load_dit, save_dit

__all__ = ["DiTConfig", "WanDiT", "load_dit", "save_dit"]
