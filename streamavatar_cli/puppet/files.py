"""Puppet clips on disk, scoring video files, and the contact sheet (the CLI's library side).

A sample folder holds reference.png, agent.wav, user.wav (16-bit, 16 kHz), mask.json (the
`render --mask` format), clip.mp4 (frames + the agent/user mix) and state.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from streamavatar_cli.errors import InputError, OutputError
from streamavatar_cli.puppet.identity import identity_from_seed
from streamavatar_cli.puppet.metrics import FrameEstimates, score_estimates
from streamavatar_cli.puppet.render import Size, render_frames, render_reference
from streamavatar_cli.puppet.sample import PuppetClip
from streamavatar_cli.puppet.state import neutral_state

log = logging.getLogger(__name__)
SAMPLE_FILES = ("reference.png", "agent.wav", "user.wav", "mask.json", "clip.mp4", "state.json")
CHUNK_FRAMES = 100


def write_sample(clip: PuppetClip, folder: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write the six files of a sample into `folder` (created if missing)."""
    import soundfile

    from streamavatar_cli.audio import mix_tracks, save_mask_file
    from streamavatar_cli.video.writer import Mp4Writer

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create folder {folder}: {e}") from e
    paths = [folder / name for name in SAMPLE_FILES]
    existing = [p.name for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputError(f"{folder} already holds {', '.join(existing)}; pass --overwrite")
    Image.fromarray(clip.reference).save(paths[0])
    soundfile.write(paths[1], clip.agent, 16000, subtype="PCM_16")
    soundfile.write(paths[2], clip.user, 16000, subtype="PCM_16")
    save_mask_file(paths[3], clip.mask)
    n, h, w = clip.frames.shape[:3]
    audio = mix_tracks(clip.agent, clip.user)
    with Mp4Writer(paths[4], w, h, audio=audio, total_frames=n, overwrite=True) as writer:
        writer.write(clip.frames)
    state = {"seed": clip.seed, "size": [w, h], "espeak": clip.espeak, **clip.state.to_dict()}
    paths[5].write_text(json.dumps(state), encoding="utf-8")
    return paths


def iter_video_chunks(path: str | Path, chunk: int = CHUNK_FRAMES) -> Iterator[np.ndarray]:
    """uint8 [<=chunk, H, W, 3] pieces of a video, so long videos are scored in bounded memory."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video {path} does not exist")
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    w, h = meta["size"]
    buffer: list[np.ndarray] = []
    for raw in reader:
        buffer.append(np.frombuffer(raw, np.uint8).reshape(h, w, 3))
        if len(buffer) == chunk:
            yield np.stack(buffer)
            buffer = []
    if buffer:
        yield np.stack(buffer)


def load_reference(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """The reference image as uint8 [H, W, 3], resized (area filter) to the video's size."""
    try:
        image = Image.open(path).convert("RGB")
    except OSError as e:
        raise InputError(f"cannot read reference image {path}: {e}") from e
    if image.size != size:
        image = image.resize(size, Image.BOX)
    return np.asarray(image)


def score_file(
    video: str | Path,
    agent: np.ndarray,
    user: np.ndarray | None,
    mask: np.ndarray | None,
    reference: str | Path | None = None,
) -> dict:
    """`metrics.score_video` over a video file, read in chunks. Without `reference`, the
    first frame is the reference (fine for clips that start neutral); without `mask`, the
    mask is the voice-activity mask of the two tracks."""
    from streamavatar_cli.audio import compute_speak_mask

    parts, ref = [], None
    for frames in iter_video_chunks(video):
        if ref is None:
            size = (frames.shape[2], frames.shape[1])
            ref = frames[0] if reference is None else load_reference(reference, size)
        parts.append(FrameEstimates.of(frames, ref))
    if not parts:
        raise InputError(f"video {video} has no frames")
    est = FrameEstimates.concat(parts)
    if mask is None:
        mask = compute_speak_mask(agent, user)
    return score_estimates(est, agent, user, mask)


def contact_sheet(seeds: list[int], size: Size = (256, 256), columns: int = 4) -> np.ndarray:
    """Reference frames of `seeds` above one talking pose each, tiled `columns` wide."""
    tiles = []
    for seed in seeds:
        identity = identity_from_seed(seed)
        pose = neutral_state(1)
        pose.mouth_open[:], pose.jaw[:], pose.pitch[:] = 0.8, 0.6, 0.3
        pose.roll[:], pose.brow[:], pose.hand_l_y[:], pose.hand_r_x[:] = 0.4, 0.8, 0.9, 0.6
        pose.hand_r_y[:], pose.gaze_x[:] = 0.4, 0.6
        tiles.append(
            np.concatenate(
                [render_reference(identity, size), render_frames(identity, pose, size)[0]], 1
            )
        )
    rows = [np.concatenate(tiles[i : i + columns], 1) for i in range(0, len(tiles), columns)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, 0)
