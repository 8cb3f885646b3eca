"""The puppet domain: procedural talking/listening people, synthetic conversations, metrics.

identity = identity_from_seed(7)                      # frozen Identity (colours, shapes, props)
conv = synth_conversation(7, 20.0)                    # agent/user float32 16 kHz + int8 mask
state = behaviour(conv.agent, conv.user, conv.mask, seed=7)   # PuppetState, one row per frame
frames = render_frames(identity, state, (256, 256))   # uint8 [n, H, W, 3]
ref = render_reference(identity, (256, 256))          # the neutral frame
clip = sample_clip(7, seconds=4.0, size=(128, 128))   # all of the above in one sample
for clip in iter_samples(0, worker=i, n_workers=n, seconds=4.0, size=(128, 128)): ...
scores = metrics.score_video(frames, agent, user, mask, ref)  # from pixels only

A test bench for the project's own training (ARCHITECTURE section 9); nothing in models/ or
pipeline/ imports it.
"""

from streamavatar_cli.puppet.behaviour import behaviour, speech_envelope
from streamavatar_cli.puppet.conversation import Conversation, espeak_available, synth_conversation
from streamavatar_cli.puppet.identity import MOUTH_INTERIOR, Identity, identity_from_seed
from streamavatar_cli.puppet.render import render_frames, render_reference
from streamavatar_cli.puppet.sample import PuppetClip, clip_seed, iter_samples, sample_clip
from streamavatar_cli.puppet.state import CHANNELS, PuppetState, neutral_state

__all__ = [
    "CHANNELS",
    "MOUTH_INTERIOR",
    "Conversation",
    "Identity",
    "PuppetClip",
    "PuppetState",
    "behaviour",
    "clip_seed",
    "espeak_available",
    "identity_from_seed",
    "iter_samples",
    "neutral_state",
    "render_frames",
    "render_reference",
    "sample_clip",
    "speech_envelope",
    "synth_conversation",
]
