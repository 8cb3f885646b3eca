"""How much lip-sync do a model's audio features carry? A ridge probe from each latent's talk
window (exactly what the DiT's audio adapter sees for that latent) to the ground truth's 4
per-frame mouth openings, fitted on training-seed puppets and scored on held-out ones with the
evaluation's lip-sync metric (`puppet.metrics.lip_sync`, from pixels).

Two numbers per ridge strength: the probe's per-frame mouth, and the same held at each latent's
mean (what a DiT can show through a VAE that keeps only the latent's mean). A linear probe is a
floor on what the features hold, not a ceiling: the DiT is nonlinear. Next to them the truth
and the truth held at its latent means (the hold bound).

    python benchmarks/audio_probe.py [--model weights/streamavatar-tiny] [--train 60] [--test 10]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from streamavatar_cli.audio import build_audio_conditioning, latent_windows
from streamavatar_cli.config import VAE_TEMPORAL_STRIDE
from streamavatar_cli.pipeline.model import load_model
from streamavatar_cli.puppet.evaluate import EVAL_SEED_BASE, puppet_case
from streamavatar_cli.puppet.metrics import (
    latent_hold,
    lip_sync,
    mouth_openings,
    whole_latent_frames,
)

SIZE = (128, 128)


def probe_rows(model, seed: int, seconds: float):
    """(case, X [L, window * layers * dim], Y [L, 4], the truth's mouth [1 + 4 L])."""
    case = puppet_case(seed, seconds, SIZE)
    cond = build_audio_conditioning(model.features, case.mask, case.agent, case.user)
    n = whole_latent_frames(case.n_frames)
    n_latent = (n - 1) // VAE_TEMPORAL_STRIDE
    x = latent_windows(cond.talk, n_latent, model.config.dit.audio_frames).flatten(1).numpy()
    mouth = mouth_openings(case.truth[:n], case.reference)
    return case, x, mouth[1:].reshape(n_latent, VAE_TEMPORAL_STRIDE), mouth


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float):
    """Standardised ridge regression; returns predict(x) -> y."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    a = (x - mu) / sd
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y - y.mean(0)))
    return lambda z: ((z - mu) / sd) @ w + y.mean(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="weights/streamavatar-tiny", help="whose audio features")
    p.add_argument("--train", type=int, default=60, help="training-seed puppets (8 s each)")
    p.add_argument("--test", type=int, default=10, help="evaluation-seed puppets (20 s each)")
    p.add_argument(
        "--lambdas", type=float, nargs="+", default=[1.0, 10.0, 100.0, 1000.0],
        help="ridge strengths, one line each",
    )  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    train = [probe_rows(model, seed, 8.0) for seed in range(args.train)]
    test = [probe_rows(model, EVAL_SEED_BASE + k, 20.0) for k in range(args.test)]
    x = np.concatenate([r[1] for r in train])
    y = np.concatenate([r[2] for r in train])
    print(f"{len(x)} training latents x {x.shape[1]} features; {args.test} held-out puppets")

    def mean_sync(mouths) -> float:
        return float(np.mean([lip_sync(m, c.agent, c.mask[: len(m)])[0] for c, m in mouths]))

    truth = [(c, m) for c, _, _, m in test]
    truth_held = mean_sync([(c, latent_hold(m)) for c, m in truth])
    print(f"truth {mean_sync(truth):.3f}, held at latent means {truth_held:.3f}")
    for lam in args.lambdas:
        predict = fit_ridge(x, y, lam)
        probe = [(c, np.concatenate([[0.0], predict(xt).reshape(-1)])) for c, xt, _, _ in test]
        held = [(c, latent_hold(m)) for c, m in probe]
        print(f"ridge {lam:g}: probe lip-sync {mean_sync(probe):.3f}, "
              f"held at latent means {mean_sync(held):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
