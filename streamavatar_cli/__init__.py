"""streamavatar: streaming talking-and-listening avatars (StreamAvatar) on a Wan2.2 backbone.

Public API (stable; the CLI is a thin layer over it):

    from streamavatar_cli.models import DiTConfig, WanDiT, VAEConfig, WanVAE, load_dit, load_vae
    from streamavatar_cli.config import StreamConfig, ModelConfig
"""

__version__ = "0.1.0"
