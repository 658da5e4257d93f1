"""Ship a trained compact network: found.json, a plain state_dict and an ONNX model in one folder.

    python export.py --arch runs/search/found.json --ckpt runs/distill/checkpoints/last.ckpt \
        --out exported/                    # [--torchscript] [--torch-export] [--batch 1]

OUT/found.json     the architecture (rebuilds the network: ``tas.build_model``)
OUT/weights.pt     the compact network's state_dict: tensors only, ``torch.load(weights_only=True)``
OUT/model.onnx     opset-17 ONNX, dynamic batch axis; checked against PyTorch with ONNX Runtime
OUT/model.ts       (--torchscript) a traced TorchScript module
OUT/model.pt2      (--torch-export) a ``torch.export`` program

In Python: ``model = tas.load_model("OUT/found.json", "OUT/weights.pt")``. The folder is written
beside OUT and renamed into place, so OUT holds a whole export or nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import tas
from lightning_modules.teacher import TeacherError, load_teacher

TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| on the logits of random inputs, fp32


def export(arch_path: str, ckpt: str, out: Path, torchscript: bool, torch_export: bool) -> str:
    """Write the export folder; returns a line describing what the ONNX check measured."""
    arch = tas.Arch.load(arch_path)
    model, ckpt_arch = load_teacher(ckpt)  # any train.py / distill.py checkpoint
    if ckpt_arch != arch:
        raise TeacherError(
            f"{ckpt} holds another network ({ckpt_arch.summary()}) than {arch_path} "
            f"({arch.summary()})"
        )
    model = model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        arch.save(tmp / "found.json")
        torch.save(model.state_dict(), tmp / "weights.pt")
        x = torch.randn(4, arch.space.in_channels, arch.space.input_size, arch.space.input_size)
        torch.onnx.export(
            model, (x,), str(tmp / "model.onnx"), input_names=["images"],
            output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
        check = check_onnx(tmp / "model.onnx", model, x)
        if torchscript:
            torch.jit.save(torch.jit.trace(model, x), str(tmp / "model.ts"))
        if torch_export:
            torch.export.save(torch.export.export(model, (x,)), str(tmp / "model.pt2"))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return check


def check_onnx(path: Path, model: torch.nn.Module, x: torch.Tensor) -> str:
    """Compare ONNX Runtime's logits with PyTorch's (another batch size than the traced one)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "ONNX Runtime not installed: the ONNX file was not checked"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(7, *x.shape[1:])
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {"images": x.numpy()})[0]
    diff = float(abs(got - ref).max())
    if diff > TOLERANCE:
        raise RuntimeError(f"ONNX Runtime's output differs from PyTorch's by {diff:.2e}")
    return f"ONNX Runtime matches PyTorch within {diff:.1e} (tolerance {TOLERANCE:.0e})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", required=True, help="the found.json the network was built from")
    p.add_argument("--ckpt", required=True, help="a train.py or distill.py checkpoint of it")
    p.add_argument("--out", required=True, type=Path, help="the folder to write")
    p.add_argument("--torchscript", action="store_true", help="also write model.ts")
    p.add_argument("--torch-export", action="store_true", help="also write model.pt2")
    args = p.parse_args(argv)
    try:
        check = export(args.arch, args.ckpt, args.out, args.torchscript, args.torch_export)
    except (ValueError, TeacherError, OSError) as err:
        print(f"export.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    files = ", ".join(sorted(f.name for f in args.out.iterdir()))
    print(f"{args.out}: {files}\n  {check}")


if __name__ == "__main__":
    main()
