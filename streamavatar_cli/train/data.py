"""Training data: clips from a source, and the latent cache every DiT stage trains on.

One interface, `Clip` (reference frame, frames, agent/user audio, talk/listen mask), with two
sources: the procedural puppet generator (`puppet_clips`) and a folder of real clips
(`folder_clips`: `*/clip.mp4` + `agent.wav` [+ `user.wav`, `mask.json`, `reference.png`]; the
layout `streamavatar puppet sample` writes; a missing mask comes from the VAD).

The latent cache cuts each clip into windows of 1 + 4 W video frames starting at a multiple of
4, replaces the window's first frame by the clip's reference image, and encodes the window with
the VAE as one causal video. That is exactly what inference decodes: latent 0 is the reference,
latents 1..W follow it through the causal cache. The talk/listen audio windows of each latent
come from the whole clip's features (so the +-2 frame context is real audio, not a clamped
edge). Audio goes through the same loudness normalisation as `render`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from streamavatar_cli.audio import (
    FeatureExtractor,
    build_audio_conditioning,
    latent_windows,
    load_audio,
    load_mask_file,
    normalize_loudness,
)
from streamavatar_cli.config import DEFAULT_AUDIO_WINDOW, VAE_TEMPORAL_STRIDE, AudioWindow
from streamavatar_cli.models.vae import WanVAE
from streamavatar_cli.train.config import DataConfig

log = logging.getLogger(__name__)

INDEX = "index.json"


@dataclass
class Clip:
    reference: np.ndarray  # uint8 [H, W, 3], the neutral picture of the person
    frames: np.ndarray  # uint8 [n, H, W, 3], frame j at time j / 25 s
    agent: np.ndarray  # float32 16 kHz, loudness-normalised
    user: np.ndarray | None
    mask: np.ndarray  # int8 [n], 1 = the avatar talks
    name: str = ""


def to_video_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> float [1, 3, n, H, W] in [-1, 1] (the VAE's input)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(127.5).sub_(1.0)
    return x.permute(3, 0, 1, 2).unsqueeze(0)


def puppet_clips(cfg: DataConfig) -> Iterator[Clip]:
    from streamavatar_cli.puppet import sample_clip

    for seed in range(*cfg.seeds):
        c = sample_clip(seed, seconds=cfg.seconds, size=tuple(cfg.size))
        yield Clip(
            c.reference,
            c.frames,
            normalize_loudness(c.agent),
            normalize_loudness(c.user) if c.user is not None else None,
            np.asarray(c.mask, dtype=np.int8),
            name=f"puppet-{seed}",
        )


def folder_clips(cfg: DataConfig) -> Iterator[Clip]:
    from PIL import Image

    from streamavatar_cli.audio import compute_speak_mask
    from streamavatar_cli.video.probe import read_video_frames

    root = Path(cfg.path)
    folders = sorted(p.parent for p in root.glob("*/clip.mp4"))
    if not folders:
        raise ValueError(f"{root}: no clip folders (*/clip.mp4) found")
    width, height = cfg.size
    for folder in folders:
        frames = read_video_frames(folder / "clip.mp4")
        if frames.shape[1:3] != (height, width):
            frames = np.stack(
                [
                    np.asarray(Image.fromarray(f).resize((width, height), Image.LANCZOS))
                    for f in frames
                ]
            )
        ref_file = folder / "reference.png"
        reference = (
            np.asarray(Image.open(ref_file).convert("RGB").resize((width, height), Image.LANCZOS))
            if ref_file.is_file()
            else frames[0]
        )
        agent = load_audio(folder / "agent.wav")
        user = load_audio(folder / "user.wav") if (folder / "user.wav").is_file() else None
        n = len(frames)
        if (folder / "mask.json").is_file():
            mask = load_mask_file(folder / "mask.json", n)
        else:
            mask = compute_speak_mask(agent, user, n_frames=n)
        yield Clip(reference, frames, agent, user, np.asarray(mask, np.int8), name=folder.name)


def clips(cfg: DataConfig) -> Iterator[Clip]:
    return puppet_clips(cfg) if cfg.source == "puppet" else folder_clips(cfg)


def window_starts(n_frames: int, window_latents: int, count: int, seed: int) -> list[int]:
    """Up to `count` latent offsets m (window = video frames 4m .. 4m + 4W), spread over the clip
    with a seeded jitter."""
    last = (n_frames - 1 - VAE_TEMPORAL_STRIDE * window_latents) // VAE_TEMPORAL_STRIDE
    if last < 0:
        return []
    g = np.random.default_rng(seed)
    if last + 1 <= count:
        return list(range(last + 1))
    edges = np.linspace(0, last + 1, count + 1)
    return sorted(
        {
            int(g.integers(int(a), max(int(a) + 1, int(b))))
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        }
    )


@torch.no_grad()
def encode_windows(
    clip: Clip,
    vae: WanVAE,
    extractor: FeatureExtractor,
    cfg: DataConfig,
    seed: int,
    window: AudioWindow,
):
    """Latents [k, z, 1 + W, h, w] and talk/listen windows [k, W, window.size, L, D] of one
    clip."""
    n = len(clip.frames)
    mask = clip.mask[:n]
    cond = build_audio_conditioning(extractor, mask, clip.agent, clip.user)
    W = cfg.window_latents
    lat, talk, listen, starts = [], [], [], []
    for m in window_starts(min(n, cond.n_frames), W, cfg.windows_per_clip, seed):
        t0 = VAE_TEMPORAL_STRIDE * m
        video = np.concatenate([clip.reference[None], clip.frames[t0 + 1 : t0 + 1 + 4 * W]])
        lat.append(vae.encode(to_video_tensor(video))[0])
        talk.append(latent_windows(cond.talk, W, window, first=m + 1))
        listen.append(latent_windows(cond.listen, W, window, first=m + 1))
        starts.append(t0)
    if not lat:
        return None
    return torch.stack(lat), torch.stack(talk), torch.stack(listen), torch.tensor(starts)


class TensorShards:
    """A folder of safetensors shards, each a dict of tensors with the same first dimension,
    plus `index.json` (shard names, sample count, free-form metadata). Read fully into memory:
    at the tiny scale a cache is a few hundred MB."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        index = json.loads((self.folder / INDEX).read_text())
        self.meta = index.get("meta", {})
        parts = [load_file(str(self.folder / s)) for s in index["shards"]]
        self.tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        self.count = int(index["count"])

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    @staticmethod
    def exists(folder: Path) -> bool:
        return (Path(folder) / INDEX).is_file()


class ShardWriter:
    def __init__(self, folder: Path, shard_size: int, meta: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shard_size, self.meta = shard_size, meta
        self.pending: dict[str, list[torch.Tensor]] = {}
        self.shards: list[str] = []
        self.count = 0

    def add(self, **tensors: torch.Tensor) -> None:
        for k, v in tensors.items():
            self.pending.setdefault(k, []).append(v.detach().cpu().contiguous())
        if sum(len(x) for x in next(iter(self.pending.values()))) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        batch = {k: torch.cat(v) for k, v in self.pending.items()}
        name = f"shard-{len(self.shards):05d}.safetensors"
        tmp = self.folder / f".{name}.tmp"
        save_file(batch, str(tmp))
        tmp.replace(self.folder / name)
        self.shards.append(name)
        self.count += len(next(iter(batch.values())))
        self.pending = {}

    def close(self) -> None:
        """Write the index last: a cache without index.json is unfinished and gets rebuilt."""
        self._flush()
        index = {"shards": self.shards, "count": self.count, "meta": self.meta}
        tmp = self.folder / f".{INDEX}.tmp"
        tmp.write_text(json.dumps(index, indent=1))
        tmp.replace(self.folder / INDEX)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's weights (names, dtypes, shapes, bytes): a retrained VAE must not
    reuse the latents of the one before it. About a second per GB."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def latent_cache(
    cfg: DataConfig,
    vae: WanVAE,
    extractor: FeatureExtractor,
    folder: Path,
    window: AudioWindow = DEFAULT_AUDIO_WINDOW,
) -> TensorShards:
    """The cache in `folder`, built first if it is missing or was built from other data,
    another VAE or another audio window (the DiT's). The windows' positions depend on the clip
    only, so every stage of one chain shares one cache."""
    meta = {
        "source": cfg.source, "path": cfg.path, "seeds": list(cfg.seeds), "seconds": cfg.seconds,
        "size": list(cfg.size), "window_latents": cfg.window_latents,
        "windows_per_clip": cfg.windows_per_clip, "vae": weights_digest(vae),
    }  # fmt: skip
    if window != DEFAULT_AUDIO_WINDOW:  # caches of the default window predate the key
        meta["audio_window"] = [window.size, window.lookahead]
    if cfg.source == "puppet":
        from streamavatar_cli.puppet.sample import DOMAIN_VERSION

        meta["puppet_domain"] = DOMAIN_VERSION
    if TensorShards.exists(folder):
        cache = TensorShards(folder)
        if cache.meta == meta:
            return cache
        log.warning(
            "latent cache %s: other data settings, another VAE or another audio window; rebuilding",
            folder,
        )
    writer = ShardWriter(folder, shard_size=256, meta=meta)
    for i, clip in enumerate(clips(cfg)):
        out = encode_windows(clip, vae, extractor, cfg, seed=i, window=window)
        if out is None:
            log.warning("clip %s is too short for one window: skipped", clip.name)
            continue
        lat, talk, listen, starts = out
        writer.add(latents=lat, talk=talk, listen=listen, start=starts,
                   clip=torch.full((len(lat),), i, dtype=torch.long))  # fmt: skip
    writer.close()
    return TensorShards(folder)
