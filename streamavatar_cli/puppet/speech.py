"""Speech-like audio without a TTS: harmonic syllables shaped by formants, noise consonants.

A `Voice` fixes a speaker's pitch range and timbre (formant scale, spectral tilt, breath);
`speak_turn` strings syllables into words and phrases with a falling pitch contour, and
`backchannel` makes a closed-mouth "mm-hm". Additive synthesis with numpy only: 20 s of two
speakers takes tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamavatar_cli.config import AUDIO_SAMPLE_RATE

SR = AUDIO_SAMPLE_RATE
VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410],
     [660, 1720, 2410], [440, 1020, 2240]],
    dtype=np.float64,
)  # fmt: skip
NASAL = np.array([250.0, 1150.0, 2200.0])
BANDWIDTHS = np.array([90.0, 110.0, 150.0])


@dataclass(frozen=True)
class Voice:
    f0: float  # median pitch, Hz
    formant_scale: float  # vocal tract length (timbre)
    tilt: float  # spectral tilt, dB per octave (negative = darker)
    breath: float  # noise mixed into voicing
    rate: float  # syllables per second


def random_voice(rng: np.random.Generator) -> Voice:
    female = rng.random() < 0.5
    return Voice(
        f0=float(rng.uniform(170, 250) if female else rng.uniform(90, 140)),
        formant_scale=float(rng.uniform(1.05, 1.2) if female else rng.uniform(0.88, 1.02)),
        tilt=float(rng.uniform(-9, -4)),
        breath=float(rng.uniform(0.02, 0.12)),
        rate=float(rng.uniform(3.8, 5.5)),
    )


def _envelope(n: int, attack: int, release: int) -> np.ndarray:
    env = np.ones(n)
    a, r = min(attack, n // 2), min(release, n // 2)
    if a:
        env[:a] = np.sin(np.linspace(0, np.pi / 2, a)) ** 2
    if r:
        env[n - r :] = np.cos(np.linspace(0, np.pi / 2, r)) ** 2
    return env


def _voiced(
    rng: np.random.Generator, voice: Voice, formants: np.ndarray, f0s: tuple[float, float], n: int
) -> np.ndarray:
    """Harmonics of a gliding f0, each weighted by the formant resonances and the tilt."""
    f0 = np.linspace(f0s[0], f0s[1], n) * (1 + 0.01 * np.sin(np.arange(n) * 2 * np.pi * 5.5 / SR))
    phase = 2 * np.pi * np.cumsum(f0) / SR + rng.uniform(0, 2 * np.pi)
    mean_f0 = float(f0.mean())
    k = np.arange(1, int(3800 // mean_f0) + 1)
    fk = k * mean_f0
    gain = (1.0 / (1.0 + ((fk[:, None] - formants[None]) / BANDWIDTHS[None]) ** 2)).sum(1)
    gain *= 10 ** (voice.tilt * np.log2(fk / 100.0) / 20)
    wave = gain @ np.sin(np.outer(k, phase))
    wave /= np.sqrt((gain**2).sum() / 2) + 1e-9
    return wave + voice.breath * rng.standard_normal(n)


def _noise_burst(rng: np.random.Generator, n: int) -> np.ndarray:
    """An unvoiced consonant: high-passed noise (s, t, k, f)."""
    noise = rng.standard_normal(n + 1)
    return np.diff(noise) * 0.35 * _envelope(n, n // 4, n // 3)


def _syllable(
    rng: np.random.Generator, voice: Voice, f0s: tuple[float, float], seconds: float
) -> np.ndarray:
    n_vowel = int(seconds * SR)
    formants = VOWELS[rng.integers(len(VOWELS))] * voice.formant_scale
    hump = np.sin(np.linspace(0, np.pi, n_vowel)) ** 0.8  # the jaw opens and closes per syllable
    vowel = _voiced(rng, voice, formants, f0s, n_vowel) * hump
    vowel *= rng.uniform(0.5, 1.0)
    if rng.random() < 0.45:
        burst = _noise_burst(rng, int(rng.uniform(0.03, 0.07) * SR))
        return np.concatenate([burst, vowel])
    return vowel


def speak_turn(rng: np.random.Generator, voice: Voice, seconds: float) -> np.ndarray:
    """About `seconds` of words and short pauses, pitch falling over each phrase."""
    pieces: list[np.ndarray] = []
    total = int(seconds * SR)
    length = 0
    phrase_pos = 0.0
    while length < total:
        n_syll = int(rng.integers(1, 4))
        for _ in range(n_syll):
            dur = float(np.clip(rng.normal(1.0 / voice.rate, 0.05), 0.08, 0.3))
            decl = 1.15 - 0.3 * min(phrase_pos / 2.0, 1.0)
            accent = 1 + (0.15 * rng.random() if rng.random() < 0.3 else 0.0)
            f_start = voice.f0 * decl * accent
            syl = _syllable(rng, voice, (f_start, f_start * rng.uniform(0.88, 1.05)), dur)
            pieces.append(syl)
            length += len(syl)
            phrase_pos += len(syl) / SR
        pause = rng.uniform(0.03, 0.12)
        if rng.random() < 0.15:
            pause, phrase_pos = rng.uniform(0.25, 0.45), 0.0
        if length + int(pause * SR) >= total:
            break
        pieces.append(np.zeros(int(pause * SR)))
        length += int(pause * SR)
    return np.concatenate(pieces)[:total] if pieces else np.zeros(0)


def backchannel(rng: np.random.Generator, voice: Voice) -> np.ndarray:
    """A quiet nasal "mm-hm" (closed mouth), about 0.45 s."""
    formants = NASAL * voice.formant_scale
    n1, n2 = int(0.17 * SR), int(0.2 * SR)
    mm = _voiced(rng, voice, formants, (voice.f0, voice.f0 * 0.95), n1) * _envelope(n1, 400, 800)
    hm = _voiced(rng, voice, formants, (voice.f0 * 0.9, voice.f0 * 1.15), n2) * _envelope(
        n2, 400, 1200
    )
    breath = _noise_burst(rng, int(0.04 * SR)) * 0.5
    return 0.35 * np.concatenate([mm, np.zeros(int(0.05 * SR)), breath, hm])
