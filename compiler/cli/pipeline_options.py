"""Command-line options that choose and instrument the pass pipeline (`ocrc compile`,
`ocrc opt`): --passes, --print-ir-after-all, --print-ir-after/-before=NAME, --dump-ir DIR,
--time-passes, --verify-each. The IR dumps and the timing table go to stderr."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes import (
    PASSES,
    DumpIR,
    Instrument,
    Pass,
    PassContext,
    PrintIR,
    TimePasses,
    run_passes,
)
from ocrc.compiler.pipeline import DEFAULT, PIPELINES, build_pipeline

log = logging.getLogger(__name__)


def add_pipeline_options(p: argparse.ArgumentParser, default: str = DEFAULT,
                         short: bool = False) -> None:
    """Add --passes, --print-ir-after-all, --dump-ir, ... to a subcommand's parser."""
    g = p.add_argument_group("pass pipeline")
    names = ["-p", "--passes"] if short else ["--passes"]
    g.add_argument(*names, dest="passes", default=default, metavar="PIPELINE",
                   help="pass pipeline text, e.g. 'canonicalize,fold-bn,fuse-act{into_epilogue="
                        f"false}}', or a named pipeline ({', '.join(PIPELINES)}); "
                        f"default: {default!r}")
    g.add_argument("--print-ir-after-all", action="store_true",
                   help="print the IR after every pass (stderr)")
    g.add_argument("--print-ir-after", action="append", default=[], metavar="NAME",
                   help="print the IR after each run of pass NAME (stderr; repeatable)")
    g.add_argument("--print-ir-before", action="append", default=[], metavar="NAME",
                   help="print the IR before each run of pass NAME (stderr; repeatable)")
    g.add_argument("--dump-ir", type=Path, metavar="DIR",
                   help="write NN-pass.ir (+ .npz) after every pass into DIR")
    g.add_argument("--time-passes", action="store_true",
                   help="print a table of the time spent in each pass (stderr)")
    g.add_argument("--verify-each", action="store_true",
                   help="verify the IR after every pass")
    add_quant_options(p)
    add_compression_options(p)


def _check_names(option: str, names: list[str]) -> tuple[str, ...]:
    for n in names:
        if n not in PASSES:
            raise PassError(f"{option}={n}: unknown pass '{n}'; valid passes: "
                            f"{', '.join(sorted(PASSES))}")
    return tuple(names)


def run_pipeline(graph: Graph, args: argparse.Namespace, verify_each: bool = False) -> Graph:
    """Run the pipeline the options select on `graph`, with the instruments they ask for."""
    return run_pipeline_ctx(graph, args, verify_each)[0]


def run_pipeline_ctx(graph: Graph, args: argparse.Namespace,
                     verify_each: bool = False) -> tuple[Graph, PassContext]:
    """`run_pipeline`, also returning the PassContext (the quantiser leaves its QuantResult
    and prepared float graph in ctx.options for the ONNX exporter)."""
    passes = build_pipeline(args.passes)
    after = _check_names("--print-ir-after", args.print_ir_after)
    before = _check_names("--print-ir-before", args.print_ir_before)
    instruments: list[Instrument] = []
    if args.print_ir_after_all or after or before:
        instruments.append(PrintIR(sys.stderr, args.print_ir_after_all, after, before))
    if args.dump_ir is not None:
        instruments.append(DumpIR(args.dump_ir))
    timer = TimePasses() if args.time_passes else None
    if timer is not None:
        instruments.append(timer)
    ctx = PassContext(instruments=instruments, verify_each=verify_each or args.verify_each,
                      target=_pass_target(args))
    share = share_passes(graph, args)  # first: its error beats '--calib needs --quant int8'
    pre, post = compression_passes(graph, args, ctx)
    passes = pre + passes + post + quant_passes(graph, args, ctx) + share
    out = run_passes(graph, passes, ctx)
    if timer is not None:
        sys.stderr.write(timer.table())
    report_quant(args, ctx)
    return out, ctx


# --- quantisation options (owned by the quantiser, compiler/quant) ------------------------------
def add_quant_options(p: argparse.ArgumentParser) -> None:
    """Add --quant, --calib, --quant-method, --quant-equalize and --quant-report
    (docs/quantization.md)."""
    from ocrc.compiler.quant.observers import METHODS

    g = p.add_argument_group("quantisation")
    g.add_argument("--quant", choices=("int8", "none"), default="none",
                   help="int8: append the `quantize` pass to the pipeline (needs --calib)")
    g.add_argument("--calib", type=Path, metavar="DIR|FILE.npz",
                   help="calibration inputs: a directory of .npy files (one input tensor each) "
                        "or an .npz archive")
    g.add_argument("--quant-method", choices=METHODS, default=None,
                   help="how activation ranges are chosen (default: minmax)")
    g.add_argument("--quant-percentile", type=float, default=None, metavar="P",
                   help="the percentile of --quant-method percentile (and of auto's "
                        "candidate), in (50, 100] (default: 99.99)")
    g.add_argument("--quant-layer-method", action="append", default=None,
                   metavar="LAYER=METHOD",
                   help="a range method for one layer (its node name, or a value name) over "
                        "--quant-method; repeatable, e.g. --quant-layer-method Conv_0=minmax")
    g.add_argument("--quant-equalize", action="store_true",
                   help="cross-layer equalisation before calibration (per-channel tables; "
                        "with --quant-method mse the best int8 setting on ddddocr and PP-OCR)")
    g.add_argument("--quant-gptq", action="store_true",
                   help="round the int8 weights with error feedback (GPTQ) on calibration "
                        "data instead of to nearest, centred (each layer's mean error into "
                        "its bias)")
    g.add_argument("--quant-gptq-plain", action="store_true",
                   help="--quant-gptq without centring (better on ddddocr; centring is what "
                        "PP-OCRv2 rec's near-cancelling kernels need)")
    g.add_argument("--quant-bias-correction", action="store_true",
                   help="shift each conv/dense int32 bias by its output's mean error on "
                        "calibration data, layer by layer on the corrected model (sequential "
                        "empirical bias correction)")
    g.add_argument("--quant-int16", default="none", metavar="auto|front|none|all|LAYER+LAYER",
                   help="mixed precision: keep int16 activations for the layers whose "
                        "single-mode SQNR is below --int16-threshold (auto), the earliest "
                        "layers within --int16-budget (front), every layer (all) or the named "
                        "ones, where the target declares an int16 MAC mode (default: none)")
    g.add_argument("--int16-threshold", type=float, default=None, metavar="DB",
                   help="SQNR threshold of --quant-int16 auto (default: 30 dB)")
    g.add_argument("--int16-budget", type=float, default=None, metavar="X",
                   help="--quant-int16 auto/front stops before the MAC cycles exceed (1 + X) "
                        "times the all-int8 ones (default: no limit; front needs it)")
    g.add_argument("--quant-report", type=Path, metavar="FILE.json",
                   help="write per-layer SQNR/cosine vs float (entire and single modes, worst "
                        "first) and print the worst layers (stderr)")


def quant_passes(graph: Graph, args: argparse.Namespace, ctx: PassContext) -> list[Pass]:
    """The `quantize` pass --quant int8 asks for (none otherwise), its data in ctx.options."""
    from ocrc.compiler.quant.calibrate import load_calibration_set

    quant = getattr(args, "quant", "none")
    if quant != "int8":
        for opt in ("calib", "quant_report"):
            if opt == "calib" and "calibration" in ctx.options:
                continue  # the compression options use it (compression_passes loaded it)
            if getattr(args, opt, None) is not None:
                raise PassError(f"--{opt.replace('_', '-')} needs --quant int8")
        if (getattr(args, "quant_int16", "none") or "none") != "none":
            raise PassError("--quant-int16 needs --quant int8")
        for opt in ("quant_method", "quant_percentile", "quant_layer_method"):
            if getattr(args, opt, None) is not None:
                raise PassError(f"--{opt.replace('_', '-')} needs --quant int8")
        for opt in ("quant_equalize", "quant_gptq", "quant_gptq_plain", "quant_bias_correction"):
            if getattr(args, opt, False):
                raise PassError(f"--{opt.replace('_', '-')} needs --quant int8")
        return []
    if args.calib is None:
        raise PassError("--quant int8 needs calibration data: --calib DIR|FILE.npz")
    if "calibration" not in ctx.options:
        ctx.options["calibration"] = load_calibration_set(args.calib, graph)
    if args.quant_report is not None:
        ctx.options["quant_report"] = args.quant_report
    # equalisation and bias correction run as passes of their own around quantize (the same
    # steps as its equalize/bias_correction options), so IR dumps show each step's graph
    before = "equalize," if getattr(args, "quant_equalize", False) else ""
    after = ",bias-correct" if getattr(args, "quant_bias_correction", False) else ""
    opts = ""
    if getattr(args, "quant_gptq", False) or getattr(args, "quant_gptq_plain", False):
        opts += ",gptq=true" + (",gptq_center=false" if getattr(args, "quant_gptq_plain", False)
                                else "")
    opts += _range_options(args)
    method = getattr(args, "quant_method", None) or "minmax"
    return build_pipeline(f"{before}quantize{{method={method}{opts}"
                          f"{_int16_options(args)}}}{after}")


def _range_options(args: argparse.Namespace) -> str:
    """The quantize pass's percentile and layer_methods options from --quant-percentile and
    --quant-layer-method LAYER=METHOD (each checked here, one line per mistake)."""
    from ocrc.compiler.quant.observers import METHODS

    out = ""
    p = getattr(args, "quant_percentile", None)
    if p is not None:
        if not 50.0 < p <= 100.0:
            raise PassError(f"--quant-percentile {p:g}: expected a percentile in (50, 100]")
        out += f",percentile={p!r}"
    items = []
    for item in getattr(args, "quant_layer_method", None) or []:
        name, sep, method = item.rpartition("=")
        if not sep or not name or any(c in name for c in "+{},= "):
            raise PassError(f"--quant-layer-method {item!r}: expected LAYER=METHOD with a "
                            "layer or value name (e.g. Conv_0=minmax)")
        if method not in METHODS:
            raise PassError(f"--quant-layer-method {item!r}: method {method!r} is not one of "
                            f"{', '.join(METHODS)}")
        items.append(f"{name}:{method}")
    if items:
        out += f",layer_methods={'+'.join(items)}"
    return out


def _pass_target(args: argparse.Namespace) -> object | None:
    """The target the passes see (lowrank rounds ranks to its MAC-array width): -t npu's,
    else --target-config's where the command has that option."""
    target = getattr(args, "npu_target", None)
    if target is None and getattr(args, "target_config", None):
        from ocrc.runtime.target import load_target
        target = load_target(args.target_config)
    return target


def _int16_options(args: argparse.Namespace) -> str:
    """The quantize pass's int16 options from --quant-int16/--int16-threshold/--int16-budget;
    int16 only where the target (--target-config) declares an int16 MAC mode."""
    from ocrc.compiler.quant.mixed import parse_int16

    spec = getattr(args, "quant_int16", "none") or "none"
    mode, _ = parse_int16(spec)
    if mode == "none":
        for opt in ("int16_threshold", "int16_budget"):
            if getattr(args, opt, None) is not None:
                raise PassError(f"--{opt.replace('_', '-')} needs --quant-int16 auto")
        return ""
    target = _pass_target(args)
    rate = ""
    if target is not None:
        if not target.int16:
            if mode in ("auto", "front"):
                log.warning("--quant-int16 %s: target %s declares no int16 MAC mode "
                            "(mac.int16 = false); every activation stays int8", mode, target.name)
                return ""
            raise PassError(f"--quant-int16 {spec}: target {target.name} declares no int16 MAC "
                            "mode (mac.int16 = false)")
        rate = f",int16_rate={target.int16_rate}"
    out = f",int16={spec}{rate}"
    if args.int16_threshold is not None:
        out += f",int16_threshold={args.int16_threshold}"
    if args.int16_budget is not None:
        out += f",int16_budget={args.int16_budget}"
    return out


def report_quant(args: argparse.Namespace, ctx: PassContext, worst: int = 10) -> None:
    plan = ctx.options.get("int16_plan")
    if plan is not None and plan.values:
        sys.stderr.write(f"mixed precision: {plan.summary()}: {', '.join(plan.layers)}\n")
    rep = ctx.options.get("quant_report_table")
    if rep is not None:
        sys.stderr.write(f"quantisation report ({args.quant_report}), {worst} worst layers:\n")
        sys.stderr.write(rep.table(worst))


# --- compression options (owned by the compression passes, compiler/compress) --------------------
def add_compression_options(p: argparse.ArgumentParser) -> None:
    """Add --prune, --prune-masks, --low-rank and --share-weights (docs in the passes prune,
    prune-structured, lowrank, compress-auto and share-weights)."""
    g = p.add_argument_group("compression")
    g.add_argument("--prune", metavar="SPEC",
                   help="after the float passes: SPARSITY (magnitude, e.g. 0.5), N:M (e.g. 2:4), "
                        "structured{sparsity=0.25,criterion=l1|gm|entropy|std,"
                        "compensate=mean|lsq|none} "
                        "(mean, the default with --calib: removed channels replaced by their "
                        "calibration mean; lsq: by a fit on the kept ones), auto{budget=POINTS} "
                        "(needs --calib), or prune options k=v,... (e.g. "
                        "sparsity=0.5,ops=dense+lstm,scope=global)")
    g.add_argument("--prune-masks", type=Path, metavar="FILE.npz",
                   help="0/1 masks keyed by ONNX initializer names, applied before the float "
                        "passes (for models pruned during training)")
    g.add_argument("--low-rank", metavar="SPEC",
                   help="after the float passes: ENERGY (e.g. 0.9), auto{budget=POINTS} (needs "
                        "--calib), or lowrank options k=v,... (e.g. energy=0.9,ops=dense)")
    g.add_argument("--share-weights", metavar="SPEC",
                   help="after quantize (needs --quant int8, implied by -t npu): share-weights "
                        "options k=v,... (e.g. centroids=16 or centroids=16,exclude=Gemm_97), "
                        "or just CENTROIDS (16 or 256); each int8 weight keeps that many values")


def _spec_text(spec: str, option: str, plain: str, number_key: str) -> str:
    spec = spec.strip()
    head, brace, rest = spec.partition("{")
    opts = rest[:-1] if brace and rest.endswith("}") else None
    if brace and opts is None:
        raise PassError(f"{option} {spec!r}: unbalanced braces")
    if head == "auto":
        kind = "prune=true" if plain == "prune" else "prune=false,lowrank=true"
        return "compress-auto{" + ",".join(x for x in (kind, opts) if x) + "}"
    if head == "structured" and plain == "prune":
        return "prune-structured" + ("{" + opts + "}" if opts else "")
    if head in (plain, "magnitude") and brace:
        return f"{plain}{{{opts}}}"
    if plain == "prune" and ":" in spec and "=" not in spec:
        return f"prune{{nm={spec}}}"
    try:
        float(spec)
        return f"{plain}{{{number_key}={spec}}}"
    except ValueError:
        pass
    if "=" in spec and not brace:
        return f"{plain}{{{spec}}}"
    raise PassError(f"{option} {spec!r}: expected a number, " +
                    ("N:M, structured{...}, " if plain == "prune" else "") +
                    "auto{budget=...} or options k=v,...")


def compression_passes(graph: Graph, args: argparse.Namespace,
                       ctx: PassContext) -> tuple[list[Pass], list[Pass]]:
    """The passes --prune-masks (before the float pipeline), --low-rank and --prune (after it)
    ask for; loads --calib into ctx.options when one of them needs data."""
    from ocrc.compiler.passes.prune import Prune
    from ocrc.compiler.quant.calibrate import load_calibration_set

    pre: list[Pass] = []
    if getattr(args, "prune_masks", None) is not None:
        if not args.prune_masks.exists():
            raise PassError(f"--prune-masks {args.prune_masks}: no such file")
        pre.append(Prune(masks=str(args.prune_masks)))
    texts = []
    if getattr(args, "low_rank", None):
        texts.append(_spec_text(args.low_rank, "--low-rank", "lowrank", "energy"))
    if getattr(args, "prune", None):
        texts.append(_spec_text(args.prune, "--prune", "prune", "sparsity"))
    post = build_pipeline(",".join(texts)) if texts else []
    needs = any(p.name == "compress-auto" or getattr(p, "whiten", False) or
                getattr(p, "criterion", "") in ("activation", "entropy", "std") or
                getattr(p, "compensate", "") in ("mean", "lsq") for p in post)
    wants = any(p.name == "prune-structured" for p in post)  # compensate=mean by default
    if needs and getattr(args, "calib", None) is None:
        raise PassError("--prune/--low-rank auto, whiten=true, criterion=activation|entropy|std "
                        "and compensate=mean|lsq need calibration data: --calib DIR|FILE.npz")
    if (needs or wants and getattr(args, "calib", None) is not None) and \
            "calibration" not in ctx.options:
        ctx.options["calibration"] = load_calibration_set(args.calib, graph)
    return pre, post


def share_passes(graph: Graph, args: argparse.Namespace) -> list[Pass]:
    """The `share-weights` pass --share-weights asks for, after quantize: it needs --quant int8
    (implied by -t npu) or an already quantised graph (`ocrc opt` on an int8 .ir)."""
    from ocrc.compiler.compress.storage import weight_values

    spec = (getattr(args, "share_weights", None) or "").strip()
    if not spec:
        return []
    if getattr(args, "quant", "none") != "int8" and not weight_values(graph):
        raise PassError("--share-weights needs a quantised graph: --quant int8 (implied by "
                        "-t npu) or a quantised .ir")
    head, brace, rest = spec.partition("{")
    if head == "share-weights" and brace and rest.endswith("}"):
        spec = rest[:-1]
    elif brace or "}" in spec:
        raise PassError(f"--share-weights {spec!r}: expected CENTROIDS (16 or 256) or options "
                        "k=v,... (e.g. centroids=16,exclude=Gemm_97)")
    if spec.isdigit():
        spec = f"centroids={spec}"
    elif "=" not in spec:
        raise PassError(f"--share-weights {spec!r}: expected CENTROIDS (16 or 256) or options "
                        "k=v,... (e.g. centroids=16,exclude=Gemm_97)")
    return build_pipeline(f"share-weights{{{spec}}}")
