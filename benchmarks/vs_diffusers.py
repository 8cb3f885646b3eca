"""Ours against diffusers with the same weights: DiT forward time, VAE decode time, VAE decode
memory for n and 2n latent frames (issue 7, item 3). Needs diffusers (pip install -e '.[test]')."""

from streamavatar_cli.bench import script_main

if __name__ == "__main__":
    script_main(["dit_vs_diffusers", "vae_vs_diffusers", "vae_memory"], __doc__)
