"""Target 1 (and 2, 5): one search iteration (weight step + architecture step, exactly
`tas.search_step`, the code the Lightning system runs) against one plain training step of the
full network (forward, loss, backward, SGD), same batch size, measured interleaved, each in the
NCHW and the channels-last layout; the ratio divides the faster search by the faster plain
step (what a user would otherwise run). Prints the CPU, its ISA flags and oneDNN's dispatch.

    python -m benchmarks.search_step                       # ResNet-20/56, batch 64/256, fp32
    python -m benchmarks.search_step --depths 20 56 110 --batches 256 --precisions fp32 bf16

``--official`` also times the authors' published search network (``xautodl``, AutoDL-Projects:
``pip install --no-deps xautodl``, or ``--official-src DIR`` for a checkout holding
``xautodl/``) at the same depth, batch and threads, interleaved in the same run, and adds a
table of its iteration time and official / ours (ours: our faster layout). Their code is
imported at run time, never copied here; the loop driving it is `official_fn`'s. Without
xautodl it prints one line and exits 2.

    python -m benchmarks.search_step --official --depths 20 56 --batches 64 256
    python -m benchmarks.search_step --official --official-src ~/AutoDL-Projects

``--profile`` runs torch.profiler over ``--profile-iters`` iterations of the search and of the
plain step (each in its faster layout) at the first depth and batch and prints self CPU time
per category (`categorize`) as ms per iteration and % of the total, search beside plain (and
the authors' network with ``--official``), with search - 2 x plain per category: what stands
between the measured ratio and the 2.0x target.

    python -m benchmarks.search_step --profile --depths 20 --batches 64
    python -m benchmarks.search_step --profile --official --depths 56 --batches 256
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

import tas
from benchmarks.common import interleaved, setup, table

TARGET = 0.5  # the MACs target, a fraction of the full network's (both networks)
TOLERANCE = 0.05  # the band around it, a fraction of the full network's MACs (both networks)
COST_WEIGHT = 2.0  # the cost loss's weight: tas.search_step's default and their CIFAR script's


def _amp(precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "bf16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_fns(
    depth: int, batch: int, precision: str, official: types.SimpleNamespace | None = None
) -> dict[str, Callable[[], None]]:
    """The plain step and the search iteration, each in the NCHW and channels-last layouts;
    with ``official`` (`import_official`), also the authors' search iteration ("official")."""
    torch.manual_seed(0)
    space = tas.SearchSpace.cifar_resnet(depth)
    full_macs = tas.Arch.full(space).macs
    budget = tas.MacsBudget(TARGET * full_macs, TOLERANCE * full_macs)
    amp = _amp(precision)
    fns = {}
    for layout, fmt in (("nchw", torch.contiguous_format), ("cl", torch.channels_last)):
        net = tas.Supernet(space)
        net.set_tau(1.0)
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9, nesterov=True)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=1e-3, betas=(0.5, 0.999))
        full = tas.build_model(tas.Arch.full(space)).to(memory_format=fmt)
        p_opt = torch.optim.SGD(full.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        xw, xa = _batches(batch, fmt)

        def search(net=net, w_opt=w_opt, a_opt=a_opt, xw=xw, xa=xa) -> None:
            with amp():
                tas.search_step(net, w_opt, a_opt, xw, xa, budget, COST_WEIGHT)

        def plain(full=full, p_opt=p_opt, xw=xw) -> None:
            with amp():
                loss = F.cross_entropy(full(xw[0]), xw[1])
            p_opt.zero_grad(set_to_none=True)
            loss.backward()
            p_opt.step()

        fns[f"search_{layout}"], fns[f"plain_{layout}"] = search, plain
    if official is not None:
        fns["official"] = official_fn(official, depth, batch, precision)
    return fns


def _batches(
    batch: int, fmt: torch.memory_format = torch.contiguous_format
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A weight batch and an architecture batch of random CIFAR-sized images and labels."""
    return [
        (torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt),
         torch.randint(0, 10, (batch,)))
        for _ in range(2)
    ]  # fmt: skip


# ----------------------------------------------------------------- the authors' network

MISSING = (
    "--official: the authors' code (xautodl, AutoDL-Projects) is not importable{where}: {err}; "
    "install it with `pip install --no-deps xautodl` (its metadata pins numpy<=1.19.5), or "
    "pass --official-src DIR, the folder that holds xautodl/"
)


def import_official(src: str | None = None) -> types.SimpleNamespace:
    """The authors' CIFAR shape-search network and the helpers their search script uses,
    imported at run time (from ``src``, put first on sys.path, when given). Without them:
    one line on stderr and exit status 2."""
    if src is not None:
        if not (Path(src) / "xautodl" / "__init__.py").is_file():
            # an installed copy would otherwise be imported in its place, unnoticed
            print(MISSING.format(where="", err=f"{src} holds no xautodl/"), file=sys.stderr)
            raise SystemExit(2)
        sys.path.insert(0, src)
    try:
        import xautodl
        from xautodl.models import change_key
        from xautodl.models.shape_searchs.SearchCifarResNet import SearchShapeCifarResNet
        from xautodl.procedures.search_main_v2 import get_flop_loss
        from xautodl.utils import get_model_infos
    except ImportError as err:
        where = f" (--official-src {src} first on sys.path)" if src is not None else ""
        print(MISSING.format(where=where, err=err), file=sys.stderr)
        raise SystemExit(2) from None
    return types.SimpleNamespace(
        version=getattr(xautodl, "version", lambda: "?")(),
        path=getattr(xautodl, "__file__", None) or "?",
        SearchShapeCifarResNet=SearchShapeCifarResNet,
        change_key=change_key,
        get_flop_loss=get_flop_loss,
        get_model_infos=get_model_infos,
    )


def official_fn(
    ox: types.SimpleNamespace, depth: int, batch: int, precision: str = "fp32"
) -> Callable[[], None]:
    """One search iteration of the authors' ResNet-``depth`` search network (NCHW, the layout
    they run), the loop written here from the paper's algorithm and what their released CIFAR
    search (exps/TAS/search-transformable.py, procedure search-v2) does each step:

    * weight step: zero the base optimiser's gradients, forward a batch (logits and expected
      FLOPs), cross-entropy, backward, SGD step on the base parameters;
    * architecture step: zero the architecture optimiser's gradients, forward another batch,
      the argmax network's FLOPs (``get_flop("genotype")``), their FLOP loss of the expected
      FLOPs against the target and tolerance (``get_flop_loss``), cross-entropy + 2 x that,
      backward, Adam step on the width and depth logits.

    Their network draws I = 2 widths per conv (fixed in their code, ours: ``num_samples=2``);
    target 50% of the full network's FLOPs, tolerance 5% of it, weight 2, tau 1, the same
    optimiser settings as ours in `make_fns` (their config adds weight decay: 5e-4 on the
    weights, 1e-3 on the logits).

    What their loop does that ours (`tas.search_step`) does not:
    * nothing is frozen: the weight step's backward also computes the logits' gradients (thrown
      away by the architecture step's zero_grad), and the architecture step's backward also
      computes every weight gradient, convs and BNs included (thrown away by the next weight
      step's zero_grad); ours switches off requires_grad on the other group, so each backward
      computes only the gradients its step uses;
    * the weight step's forward also builds the expected-FLOPs graph;
    * each conv zero-pads its input to the full input width and runs the full-width conv, then
      slices the sampled widths; CWI is adaptive average pooling over channels also where it
      widens (ours: two gathers); each forward moves the picks to the host and calls .tolist()
      per layer; the architecture step walks the argmax network's FLOPs in Python.
    Left out of both: their per-step accuracy and loss meters (.item() calls) and learning-rate
    scheduler update, and their torch.nn.DataParallel/.cuda() moves (their network itself runs
    on the CPU as is, no CUDA call to patch).
    """
    amp = _amp(precision)
    torch.manual_seed(0)
    model = ox.SearchShapeCifarResNet("ResNetBasicblock", depth, 10)
    # their script measures the full network first (get_model_infos); that plain forward also
    # records each conv's feature-map size, which the search forward's expected FLOPs read
    max_flop, _ = ox.get_model_infos(model, (1, 3, 32, 32))
    model.apply(ox.change_key("search_mode", "search"))
    model.train()
    model.set_tau(1.0, 1.0, 0.0)  # tau_min + (tau_max - tau_min) * ... = 1
    base_opt = torch.optim.SGD(model.base_parameters(), lr=0.01, momentum=0.9, nesterov=True)
    arch_opt = torch.optim.Adam(model.arch_parameters(), lr=1e-3, betas=(0.5, 0.999))
    need, tolerant = TARGET * max_flop, TOLERANCE * max_flop
    (xw, yw), (xa, ya) = _batches(batch)

    def official() -> None:
        with amp():
            base_opt.zero_grad()
            logits, _ = model(xw)
            F.cross_entropy(logits, yw).backward()
            base_opt.step()
            arch_opt.zero_grad()
            logits, expected_flop = model(xa)
            flop_cur = model.get_flop("genotype", None, None)
            flop_loss, _ = ox.get_flop_loss(expected_flop, flop_cur, need, tolerant)
            (F.cross_entropy(logits, ya) + COST_WEIGHT * flop_loss).backward()
            arch_opt.step()

    return official


# ----------------------------------------------------------------- where the time goes

CONV_FWD = "conv forward"
CONV_BWD = "conv backward"
BN = "batch norm fwd/bwd"
CWI = "CWI gather / adaptive pool"
MIX = "elementwise mix add/mul"
SLICE = "channel slice / zero-pad"  # picking a width's first channels, padded shortcut sums
RELU = "relu"
ARCH = "softmax / gumbel / arch-side"  # sampling, the cost model, small-tensor bookkeeping
OPTIM = "optimizer"
OTHER = "other"
PYTHON = "Python between ops"
CATEGORIES = (CONV_FWD, CONV_BWD, BN, CWI, MIX, SLICE, RELU, ARCH, OPTIM, OTHER, PYTHON)

ITERATION = "benchmark.iteration"  # the profiler range around one iteration: its self time
# is what no op accounts for (the Python of the model and the loop)

# (category, lower-case substrings of an op name); anything inside an optimizer's step or
# zero_grad counts as optimizer, anything inside a gradient's accumulation into .grad as other
SCOPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (OPTIM, ("optimizer.",)),
    (OTHER, ("accumulategrad",)),
)
# first match wins; an op takes the category of the innermost op on its call chain that
# matches (an allocation inside a convolution is convolution time, the sum inside MulBackward0
# is the mix's backward)
OPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (CONV_BWD, ("convolution_backward", "convolutionbackward", "conv2d_backward")),
    (CONV_FWD, ("conv",)),
    (BN, ("batch_norm", "batchnorm")),
    (CWI, ("index_select", "indexselect", "index_add", "adaptive_avg_pool", "adaptiveavgpool")),
    (SLICE, ("aten::slice", "slicebackward", "constant_pad_nd", "aten::cat", "catbackward",
             "copyslices")),
    (ARCH, ("softmax", "exponential", "multinomial", "gumbel", "masked_fill", "aten::log",
            "logbackward", "isinf", "isnan", "cumsum", "aten::diff", "aten::dot", "matmul",
            "select_backward", "selectbackward", "squeezebackward", "unbindbackward")),
    (RELU, ("relu", "threshold_backward", "clamp_min")),
    (OTHER, ("addmm", "aten::linear", "aten::mm")),
    (MIX, ("aten::mul", "aten::add", "mulbackward", "addbackward")),
)  # fmt: skip


def categorize(chain: str | Sequence[str], batched: bool | None = None) -> str:
    """The category of an op from its name and its callers' (``chain``: innermost first).

    ``batched``: whether the op's input carries the batch (None: unknown). A multiply or add
    on tensors without the batch is arch-side (the cost model, a folded mixing weight), as is
    an op no pattern names (masks, index bookkeeping), and a softmax on a batch of logits is
    the loss's (other)."""
    names = [chain] if isinstance(chain, str) else list(chain)
    if names[0] == ITERATION:
        return PYTHON
    lower = [n.lower() for n in names]
    for category, patterns in SCOPES:
        if any(p in n for n in lower for p in patterns):
            return category
    for name in lower:
        for category, patterns in OPS:
            if any(p in name for p in patterns):
                if category == MIX and batched is False:
                    return ARCH
                if category == ARCH and batched is True:
                    return OTHER
                return category
    return ARCH if batched is False else OTHER


def group_times(ops: Iterable[tuple]) -> dict[str, float]:
    """Total time per category (every category present, 0 where none). ``ops``: (chain,
    seconds) or (chain, seconds, batched), as `categorize` takes them."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for op in ops:
        chain, seconds, *batched = op
        totals[categorize(chain, *batched)] += seconds
    return totals


def profile_ops(fn: Callable[[], None], iters: int, batch: int) -> list[tuple]:
    """(call chain, self CPU seconds, batched) of every op of ``iters`` calls of ``fn``."""
    from torch.profiler import ProfilerActivity, profile, record_function

    fn()  # warm
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(iters):
            with record_function(ITERATION):
                fn()
    ops = []
    for event in prof.events():
        chain, up = [], event
        while up is not None:
            chain.append(up.name)
            up = up.cpu_parent
        shapes = [s for s in event.input_shapes or [] if isinstance(s, list) and s]
        batched = any(len(s) >= 2 and s[0] == batch for s in shapes) if shapes else None
        ops.append((tuple(chain), event.self_cpu_time_total / 1e6, batched))
    return ops


def profile_table(per_iter: dict[str, dict[str, float]]) -> str:
    """ms per iteration and % per category for each profiled function ("search", "plain",
    optionally "official"), and search - 2 x plain."""
    names = list(per_iter)
    header = ["category"]
    for name in names:
        header += [f"{name} ms/it", f"{name} %"]
    header.append("search - 2 x plain ms")
    columns = {name: {**per_iter[name], "total": sum(per_iter[name].values())} for name in names}
    rows = []
    for category in [*CATEGORIES, "total"]:
        row: list[object] = [category]
        for name in names:
            t = columns[name][category]
            row += [f"{1e3 * t:.2f}", f"{100 * t / columns[name]['total']:.1f}"]
        excess = columns["search"][category] - 2 * columns["plain"][category]
        row.append(f"{1e3 * excess:+.2f}")
        rows.append(row)
    return table(header, rows)


def run_profile(
    depth: int,
    batch: int,
    precision: str,
    repeats: int,
    iters: int,
    official: types.SimpleNamespace | None = None,
) -> None:
    fns = make_fns(depth, batch, precision, official)
    t = interleaved(fns, repeats)
    search = min(("search_nchw", "search_cl"), key=t.__getitem__)
    plain = min(("plain_nchw", "plain_cl"), key=t.__getitem__)
    print(
        f"ResNet-{depth}, batch {batch}, {precision}: timed ({repeats} repeats) search "
        f"{t[search]:.3f} s ({search}), plain {t[plain]:.3f} s ({plain}), ratio "
        f"{t[search] / t[plain]:.2f}"
        + (f", official {t['official']:.3f} s" if official is not None else "")
    )
    chosen = {"search": fns[search], "plain": fns[plain]}
    if official is not None:
        chosen["official"] = fns["official"]
    per_iter = {}
    for name, fn in chosen.items():
        grouped = group_times(profile_ops(fn, iters, batch))
        per_iter[name] = {c: s / iters for c, s in grouped.items()}
    print(
        f"self CPU time over {iters} profiled iterations each (profiler overhead included, so "
        "the totals exceed the timed medians):"
    )
    print(profile_table(per_iter))


def onednn() -> str:
    """What oneDNN / ATen dispatch to on this CPU."""
    cap = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return f"oneDNN (mkldnn) {'on' if torch.backends.mkldnn.is_available() else 'off'}, ATen CPU capability {cap}"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--official",
        action="store_true",
        help="also time the authors' search network (xautodl), interleaved in the same run",
    )
    ap.add_argument(
        "--official-src", metavar="DIR", help="put DIR (holding xautodl/) first on sys.path"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="profile the first depth, batch and precision: self CPU time per category",
    )
    ap.add_argument("--profile-iters", type=int, default=3)
    args = ap.parse_args(argv)
    if args.official_src is not None and not args.official:
        ap.error("--official-src goes with --official")
    official = import_official(args.official_src) if args.official else None
    print(setup(args.threads))
    print(onednn())
    if official is not None:
        print(f"official: xautodl {official.version} from {official.path}")
    if args.profile:
        run_profile(
            args.depths[0],
            args.batches[0],
            args.precisions[0],
            args.repeats,
            args.profile_iters,
            official,
        )
        return
    rows, official_rows = [], []
    for depth in args.depths:
        for batch in args.batches:
            for precision in args.precisions:
                t = interleaved(make_fns(depth, batch, precision, official), args.repeats)
                plain, search = (
                    min(t["plain_nchw"], t["plain_cl"]),
                    min(t["search_nchw"], t["search_cl"]),
                )
                rows.append(
                    [
                        f"ResNet-{depth}",
                        batch,
                        precision,
                        f"{t['plain_nchw']:.3f}",
                        f"{t['plain_cl']:.3f}",
                        f"{t['search_nchw']:.3f}",
                        f"{t['search_cl']:.3f}",
                        f"**{search / plain:.2f}**",
                    ]
                )
                print(rows[-1], flush=True)
                if official is not None:
                    official_rows.append(
                        [
                            f"ResNet-{depth}",
                            batch,
                            precision,
                            f"{search:.3f}",
                            f"{t['official']:.3f}",
                            f"**{t['official'] / search:.2f}**",
                        ]
                    )
                    print(official_rows[-1], flush=True)
    print(
        table(
            [
                "network",
                "batch",
                "precision",
                "plain NCHW s",
                "plain channels-last s",
                "search NCHW s",
                "search channels-last s",
                "fastest search / fastest plain",
            ],
            rows,
        )
    )
    if official_rows:
        print()
        print(
            table(
                [
                    "network",
                    "batch",
                    "precision",
                    "ours (fastest search) s",
                    "official search s",
                    "official / ours",
                ],
                official_rows,
            )
        )


if __name__ == "__main__":
    main()
