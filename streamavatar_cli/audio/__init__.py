"""Audio: loading, per-frame features, the speak/listen mask, and the DiT's audio conditioning.

wave = load_audio("agent.wav")                 # float32 mono 16 kHz, loudness-normalised
mask = compute_speak_mask(wave, user_wave)     # int8 per 25 fps frame, 1 = avatar talks
feats = load_feature_extractor(audio_config)   # wave -> [n_frames, layers, dim]
cond = build_audio_conditioning(feats, mask, wave, user_wave)
talk = latent_windows(cond.talk, num_latent_frames(cond.n_frames))
"""

from streamavatar_cli.audio.conditioning import (
    AudioConditioning,
    build_audio_conditioning,
    latent_windows,
    num_latent_frames,
)
from streamavatar_cli.audio.features import (
    FeatureExtractor,
    MelFeatures,
    load_feature_extractor,
)
from streamavatar_cli.audio.frames import SAMPLES_PER_FRAME, num_video_frames
from streamavatar_cli.audio.load import load_audio, mix_tracks, normalize_loudness
from streamavatar_cli.audio.mask import (
    format_timeline,
    load_mask_file,
    mask_to_segments,
    save_mask_file,
    segments_to_mask,
)
from streamavatar_cli.audio.vad import compute_speak_mask, smooth_mask
from streamavatar_cli.audio.wav2vec2 import Wav2Vec2Features, load_wav2vec2_model

__all__ = [
    "SAMPLES_PER_FRAME",
    "AudioConditioning",
    "FeatureExtractor",
    "MelFeatures",
    "Wav2Vec2Features",
    "build_audio_conditioning",
    "compute_speak_mask",
    "format_timeline",
    "latent_windows",
    "load_audio",
    "load_feature_extractor",
    "load_mask_file",
    "load_wav2vec2_model",
    "mask_to_segments",
    "mix_tracks",
    "normalize_loudness",
    "num_latent_frames",
    "num_video_frames",
    "save_mask_file",
    "segments_to_mask",
    "smooth_mask",
]
