"""Peak memory and step time of the DiT training steps, gradient checkpointing off and on (issue 12).

    python benchmarks/train_memory.py [--dim 384 --layers 12 --size 256 --batch 2]

Each measurement runs in a fresh process (peak RSS cannot be reset inside one): build the DiT,
run one warm-up step and three timed ones, then report the process's peak RSS (model,
optimizer state, activations, torch itself) and the median step time. Stages: `teacher` (bidirectional flow matching on 1 + 12 latent
frames) and `student` (the ode-init / distill forward: reference + context copies + query
copies under the block-causal mask). Random tensors: memory and time do not depend on values.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(stage: str, ckpt: bool, dim: int, layers: int, size: int, batch: int) -> dict:
    import torch

    from streamavatar_cli.config import DiTConfig, StreamConfig
    from streamavatar_cli.models import WanDiT
    from streamavatar_cli.train.common import bidirectional_v, student_forward

    torch.manual_seed(0)
    heads = dim // 32
    cfg = DiTConfig.from_dict({**DiTConfig.preset("tiny").to_dict(), "dim": dim,
                               "num_heads": heads, "num_layers": layers, "ffn_dim": 3 * dim})  # fmt: skip
    dit = WanDiT(cfg).train()
    dit.gradient_checkpointing = ckpt
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-4)
    h = w = size // 8
    n = 12
    c = cfg.in_dim
    audio = torch.randn(batch, n, cfg.audio_window, cfg.audio_feature_layers, cfg.audio_feature_dim)
    stream = StreamConfig.from_dict({"window_frames": 6})

    def step() -> None:
        ref = torch.randn(batch, c, 1, h, w)
        x = torch.randn(batch, c, n, h, w)
        if stage == "teacher":
            v = bidirectional_v(dit, ref, x, torch.rand(batch), audio, audio)
        else:
            v = student_forward(dit, stream, ref, x, 0.5, x, torch.rand(batch, n), audio, audio)
        v.pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # optimizer state and allocator warm
    times = []
    for _ in range(3):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    params = sum(p.numel() for p in dit.parameters())
    return {"stage": stage, "grad_checkpointing": ckpt, "params_m": params / 1e6,
            "peak_rss_mb": rss_mb(),
            "step_s": statistics.median(times)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--size", type=int, default=256, help="frame side in pixels (latent side / 8)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("STAGE", "CKPT"))
    args = p.parse_args()
    shape = (args.dim, args.layers, args.size, args.batch)
    if args.child:
        stage, ckpt = args.child[0], args.child[1] == "1"
        print(json.dumps(measure(stage, ckpt, *shape)))
        return
    print(f"DiT dim {args.dim}, {args.layers} layers, {args.size}x{args.size} frames "
          f"({(args.size // 16) ** 2} tokens per latent frame), batch {args.batch}, 1 + 12 latent frames")  # fmt: skip
    print("| stage | grad checkpointing | params | peak RSS | step |")
    print("|---|---|---|---|---|")
    for stage in ("teacher", "student"):
        rows = []
        for ckpt in ("0", "1"):
            cmd = [sys.executable, __file__, "--dim", str(args.dim), "--layers", str(args.layers),
                   "--size", str(args.size), "--batch", str(args.batch), "--child", stage, ckpt]  # fmt: skip
            rows.append(
                json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            )
        for r in rows:
            print(f"| {stage} | {'on' if r['grad_checkpointing'] else 'off'} | {r['params_m']:.1f} M "
                  f"| {r['peak_rss_mb']:.0f} MB | {r['step_s']:.2f} s |")  # fmt: skip
        off, on = rows
        print(f"| {stage}: on / off | | | {on['peak_rss_mb'] / off['peak_rss_mb']:.2f}x "
              f"| {on['step_s'] / off['step_s']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
