"""streamavatar: streaming talking-and-listening avatars (StreamAvatar) on a Wan2.2 backbone.

Public API (stable; the CLI is a thin layer over it):

    from streamavatar_cli.models import DiTConfig, WanDiT, VAEConfig, WanVAE, load_dit, load_vae
    from streamavatar_cli.config import StreamConfig, ModelConfig
    from streamavatar_cli.pipeline import StreamingGenerator
    from streamavatar_cli.pipeline.model import open_model, load_model, save_model
    from streamavatar_cli.pipeline.render import RenderJob, render
    from streamavatar_cli.audio import load_audio, compute_speak_mask, load_feature_extractor
    from streamavatar_cli.video import load_reference_image, Mp4Writer, probe_media
"""

__version__ = "0.1.0"
