"""Analytic FLOPs per streaming chunk (DiT) and per decoded latent frame (VAE), checked against
torch's FlopCounterMode on meta-device models, and the RTF they imply (issue 7, item 6).

Same as `streamavatar bench --flops`; e.g. `python benchmarks/flops.py --resolution 1280x704`.
"""

import argparse

from streamavatar_cli.bench import flops_report
from streamavatar_cli.video import parse_resolution

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="wan2.2-ti2v-5b", help="model preset")
    parser.add_argument("--resolution", default="928x704", help="W x H in pixels")
    parser.add_argument("--tflops", type=float, default=400.0, help="sustained TFLOP/s")
    args = parser.parse_args()
    report = flops_report(args.model, parse_resolution(args.resolution), args.tflops)
    print("\n".join(report.lines()))
