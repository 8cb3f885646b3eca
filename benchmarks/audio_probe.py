"""How much of the ground truth do a model's audio features carry? A ridge probe from each
latent's audio window (exactly what the DiT's audio adapter sees for that latent) to the
ground truth's per-frame motion, fitted on training-seed puppets and scored on held-out ones.

`--target mouth` (default): the talk window -> the 4 per-frame mouth openings, scored with the
evaluation's lip-sync metric (`puppet.metrics.lip_sync`, from pixels). Two numbers per ridge
strength: the probe's per-frame mouth, and the same held at each latent's mean (what a DiT can
show through a VAE that keeps only the latent's mean); next to them the truth and the truth
held at its latent means (the hold bound).

`--target head`: the listen window -> the 4 frames' head offsets (`puppet.metrics.head_offsets`),
scored on settled listen frames as the correlation of the probe's vertical offset with the
truth's (the nods), and the probe's head motion (variance, as `listen_head_motion`).

`--windows SIZE ...` cuts the windows at other sizes (the look-ahead kept at the model's, the
rest memory before the latent) to ask what a DiT with a longer window would see. A linear
probe is a floor on what the features hold, not a ceiling: the DiT is nonlinear.

    python benchmarks/audio_probe.py [--model weights/streamavatar-tiny] [--target head]
        [--windows 8 16 24] [--train 60] [--test 10]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch

from streamavatar_cli.audio import build_audio_conditioning, latent_windows
from streamavatar_cli.config import VAE_TEMPORAL_STRIDE, AudioWindow
from streamavatar_cli.pipeline.model import load_model
from streamavatar_cli.puppet.evaluate import EVAL_SEED_BASE, Case, puppet_case
from streamavatar_cli.puppet.metrics import (
    head_offsets,
    latent_hold,
    lip_sync,
    mouth_openings,
    settled_listen,
    whole_latent_frames,
)

SIZE = (128, 128)


@dataclass
class Rows:
    """One puppet: the per-frame truth [1 + 4 L, c] and the windows of each probed size."""

    case: Case
    truth: np.ndarray
    x: dict[int, np.ndarray]  # window size -> [L, size * layers * dim]

    @property
    def y(self) -> np.ndarray:  # [L, 4 c]: the 4 frames of each latent
        return self.truth[1:].reshape((len(self.truth) - 1) // VAE_TEMPORAL_STRIDE, -1)


def probe_rows(model, seed: int, seconds: float, target: str, windows: list[AudioWindow]) -> Rows:
    case = puppet_case(seed, seconds, SIZE)
    cond = build_audio_conditioning(model.features, case.mask, case.agent, case.user)
    n = whole_latent_frames(case.n_frames)
    n_latent = (n - 1) // VAE_TEMPORAL_STRIDE
    if target == "mouth":
        audio, truth = cond.talk, mouth_openings(case.truth[:n], case.reference)[:, None]
    else:
        audio, truth = cond.listen, head_offsets(case.truth[:n], case.reference)
    x = {w.size: latent_windows(audio, n_latent, w).flatten(1).numpy() for w in windows}
    return Rows(case, truth, x)


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float):
    """Standardised ridge regression; returns predict(x) -> y."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    a = (x - mu) / sd
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y - y.mean(0)))
    return lambda z: ((z - mu) / sd) @ w + y.mean(0)


def predicted(predict, rows: Rows, size: int) -> np.ndarray:
    """The probe's per-frame estimate [1 + 4 L, c]; frame 0 (the reference) from the truth."""
    p = predict(rows.x[size]).reshape(-1, rows.truth.shape[1])
    return np.concatenate([rows.truth[:1], p])


def mean_sync(cases_and_mouths) -> float:
    return float(np.mean([lip_sync(m, c.agent, c.mask[: len(m)])[0] for c, m in cases_and_mouths]))


def report_mouth(test: list[Rows], predict, size: int) -> str:
    probe = [(r.case, predicted(predict, r, size)[:, 0]) for r in test]
    held = [(c, latent_hold(m)) for c, m in probe]
    return f"probe lip-sync {mean_sync(probe):.3f}, held at latent means {mean_sync(held):.3f}"


def report_head(test: list[Rows], predict, size: int) -> str:
    corr, motion = [], []
    for r in test:
        p = predicted(predict, r, size)
        settled = settled_listen(r.case.mask[: len(p)])
        corr.append(np.corrcoef(p[settled, 1], r.truth[settled, 1])[0, 1])
        motion.append(p[settled].var(axis=0).sum())
    return f"nod correlation {np.nanmean(corr):.3f}, head motion {np.mean(motion):.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="weights/streamavatar-tiny", help="whose audio features")
    p.add_argument("--target", choices=("mouth", "head"), default="mouth",
                   help="talk window -> mouth, or listen window -> head offsets")  # fmt: skip
    p.add_argument("--windows", type=int, nargs="+", default=None,
                   help="window sizes in video frames (default: the model's)")  # fmt: skip
    p.add_argument("--train", type=int, default=60, help="training-seed puppets (8 s each)")
    p.add_argument("--test", type=int, default=10, help="evaluation-seed puppets (20 s each)")
    p.add_argument(
        "--lambdas", type=float, nargs="+", default=[1.0, 10.0, 100.0, 1000.0],
        help="ridge strengths, one line each",
    )  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    own = model.config.dit.audio_frames
    windows = [AudioWindow(s, own.lookahead).validate() for s in args.windows or [own.size]]
    train = [probe_rows(model, s, 8.0, args.target, windows) for s in range(args.train)]
    test = [probe_rows(model, EVAL_SEED_BASE + k, 20.0, args.target, windows)
            for k in range(args.test)]  # fmt: skip
    y = np.concatenate([r.y for r in train])
    print(f"{len(y)} training latents; {args.test} held-out puppets; target {args.target}")
    if args.target == "mouth":
        truth = [(r.case, r.truth[:, 0]) for r in test]
        truth_held = mean_sync([(c, latent_hold(m)) for c, m in truth])
        print(f"truth {mean_sync(truth):.3f}, held at latent means {truth_held:.3f}")
    else:
        motion = np.mean([r.truth[settled_listen(r.case.mask[: len(r.truth)])].var(0).sum()
                          for r in test])  # fmt: skip
        print(f"truth head motion {motion:.2f}")
    report = report_mouth if args.target == "mouth" else report_head
    for w in windows:
        x = np.concatenate([r.x[w.size] for r in train])
        for lam in args.lambdas:
            predict = fit_ridge(x, y, lam)
            print(f"window {w.size} ({w.past} before, {w.lookahead} after), ridge {lam:g}: "
                  f"{report(test, predict, w.size)}")  # fmt: skip


if __name__ == "__main__":
    main()
