"""Target 4: are compact networks faster in proportion to their MACs? Inference latency of
networks at about 30/50/70% of full MACs against the full network, eager PyTorch on CPU
(optionally torch.compile and ONNX Runtime), batch 1 and 256, interleaved.

    python benchmarks/compact_latency.py [--depth 20] [--arch runs/search/found.json ...]
        [--compile] [--onnx]

efficiency = (speedup over full) / (full MACs / network MACs); 1.0 means perfectly proportional.
Odd channel counts can run slower than their MACs suggest on oneDNN: the "x8" rows round every
width of the uniform network down to a multiple of 8 (at least 8) to show the effect.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch

import tas
from benchmarks.common import interleaved, setup, table


def random_in_band(space: tas.SearchSpace, ratio: float, seed: int) -> tas.Arch:
    """A random network of the search space within +-2% of ratio x full MACs: each draw picks a
    size level t, then every width and depth index at random around t (uniform draws alone
    almost never reach 70% of full MACs)."""
    full = tas.Arch.full(space).macs
    rng = random.Random(seed)

    def pick(options: tuple[int, ...], t: float) -> int:
        i = round(t * (len(options) - 1) + rng.gauss(0, 1))
        return options[min(len(options) - 1, max(0, i))]

    for _ in range(100_000):
        t = rng.random()
        blocks = tuple(pick(stage.depth_choices, t) for stage in space.stages)
        widths = {c.name: pick(c.candidates, t) for c in space.kept_convs(blocks)}
        arch = tas.Arch(space, blocks, widths, {"method": "random"})
        if abs(arch.macs / full - ratio) <= 0.02:
            return arch
    raise RuntimeError(f"no random network near {ratio} found")


def rounded(arch: tas.Arch, multiple: int) -> tas.Arch:
    widths = {
        n: min(arch.space.conv(n).channels, max(multiple, w // multiple * multiple))
        for n, w in arch.widths.items()
    }
    return tas.Arch(
        arch.space, arch.blocks, widths, {"method": f"{arch.search.get('method')} x{multiple}"}
    )


def runner(arch: tas.Arch, batch: int, backend: str):
    torch.manual_seed(0)
    model = tas.build_model(arch).eval()
    x = torch.randn(batch, 3, 32, 32)
    if backend == "compile":
        model = torch.compile(model)
    if backend == "onnx":
        import onnxruntime as ort

        path = Path(tempfile.mkdtemp()) / "m.onnx"
        torch.onnx.export(
            model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        return lambda: sess.run(None, feed)

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--arch", nargs="*", default=[], help="found.json files to include")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--onnx", action="store_true")
    ap.add_argument("--only", default="", help="keep the networks whose name contains this")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(setup(args.threads))
    space = tas.SearchSpace.cifar_resnet(args.depth)
    archs = {}
    for ratio in (0.3, 0.5, 0.7):
        uni = tas.Arch.uniform(space, ratio)
        archs[f"uniform {ratio}"] = uni
        archs[f"uniform {ratio} x8"] = rounded(uni, 8)
        archs[f"random {ratio}"] = random_in_band(space, ratio, seed=int(ratio * 10))
    for path in args.arch:
        archs[Path(path).parent.name or path] = tas.Arch.load(path)
    archs = {name: arch for name, arch in archs.items() if args.only in name}
    backends = ["eager"] + (["compile"] if args.compile else []) + (["onnx"] if args.onnx else [])
    rows = []
    for backend in backends:
        for batch in args.batches:
            repeats = args.repeats if batch == 1 else max(3, args.repeats // 3)
            for name, arch in archs.items():
                base = tas.Arch.full(arch.space)  # each network against its own full one
                t = interleaved(
                    {"full": runner(base, batch, backend), "arch": runner(arch, batch, backend)},
                    repeats,
                )
                speedup = t["full"] / t["arch"]
                reduction = base.macs / arch.macs
                rows.append(
                    [
                        backend,
                        batch,
                        name,
                        f"{arch.macs / 1e6:.2f}",
                        f"{1e3 * t['full']:.2f}",
                        f"{1e3 * t['arch']:.2f}",
                        f"{speedup:.2f}x",
                        f"{reduction:.2f}x",
                        f"**{speedup / reduction:.2f}**",
                    ]
                )
                print(rows[-1], flush=True)
    print(
        table(
            [
                "backend",
                "batch",
                "network",
                "MACs (M)",
                "full ms",
                "network ms",
                "speedup",
                "MAC reduction",
                "efficiency",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
