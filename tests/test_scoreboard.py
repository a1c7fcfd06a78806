"""The scoreboard's core (benchmarks/scoreboard) on a tiny configuration: the untrained demo
CRNN, three rendered images, one preset, one compression variant; then its tables, plots and
the RESULTS.md header writer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes
from ocrc.frontend.bundled import BundledModel
from ocrc.frontend.demo import build_demo_crnn

from benchmarks.ocr.datasets import generate
from benchmarks.ocr.report import write_section
from benchmarks.scoreboard.engine import OcrcModel, graph_macs
from benchmarks.scoreboard.evaluate import (
    OCRC_FLOAT,
    OCRC_INT8,
    ORT_FP32,
    ORT_INT8,
    Unit,
    UnitRun,
)
from benchmarks.scoreboard.models import (
    REAL,
    STRUCTURED,
    Compression,
    Config,
    Limits,
    ModelSpec,
    crnn_task,
    quantize_text,
)
from benchmarks.scoreboard.plots import make_plots
from benchmarks.scoreboard.runner import run_all
from benchmarks.scoreboard.tables import (
    HEADER_END,
    HEADER_START,
    SECTION,
    section_body,
    write_header,
)

PRUNE = "int8 + 50% unstructured (LSTM + dense)"


@pytest.fixture()
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelSpec, Config, dict]:
    monkeypatch.setenv("OCRC_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "demo.onnx"
    onnx.save(build_demo_crnn(), str(path))
    meta = {"charset": "0123456789abcdefghijklmnopqrstuvwxyz", "input_height": 32,
            "width_multiple": 4, "input": {"name": "image"}}
    model = BundledModel(path, meta)
    spec = ModelSpec("crnn-tiny", "untrained demo CRNN", "crnn", lambda: path,
                     lambda: crnn_task(model, "crnn-tiny"), (("tiny", "tiny-calib"),), 64,
                     (Compression(PRUNE, "prune{sparsity=0.5,ops=dense+lstm}"),))
    cfg = Config("test", ("crnn-tiny",), presets=("npu",),
                 limits={"crnn": Limits(images=3, vm_images=3, float_images=2,
                                        golden_images=3, calib_images=2)},
                 latency_runs=2, vm_runs=1)
    data = {"tiny": generate("clean", 3, 5), "tiny-calib": generate("clean", 2, 6)}
    return spec, cfg, data


def test_scoreboard_core(tiny: tuple[ModelSpec, Config, dict], tmp_path: Path) -> None:
    spec, cfg, data = tiny
    (res,) = run_all(cfg, [spec], jobs=1, load=lambda name: data[name])
    assert res.notes == []
    variants = [a.variant for a in res.accuracy]
    assert variants == [ORT_FP32, ORT_INT8, OCRC_FLOAT, OCRC_INT8, PRUNE]
    for a in res.accuracy:
        assert a.n == (2 if a.variant == OCRC_FLOAT else 3)
        assert 0.0 <= a.accuracy <= 1.0 and 0.0 <= a.agreement <= 1.0
    fp32 = res.accuracy[0]
    assert fp32.agreement == 1.0
    for a in res.accuracy[3:]:
        assert a.golden == "3/3"  # the VM is bit-exact with the golden interpreter
        assert a.nbytes > 0 and a.compact_bytes and a.npu_ms and a.npu_ms > 0
    # Pruning half of the LSTM and dense weights shrinks the compact storage.
    assert res.accuracy[4].compact_bytes < res.accuracy[3].compact_bytes
    assert [(p.variant, p.preset) for p in res.perf] == [(OCRC_INT8, "npu"), (PRUNE, "npu")]
    for p in res.perf:
        assert p.cycles > 0 and 0 < p.utilisation <= 1 and p.vm_wall_ms > 0
        assert Path(p.program).is_file()
    assert [c.variant for c in res.cpu] == [ORT_FP32, ORT_INT8]
    assert res.layers and sum(s.macs for s in res.layers) == res.perf[0].macs

    body = section_body([res], cfg, "python benchmarks/run.py", 1.0, "3 images")
    for heading in ("### Accuracy and size", "### NPU, per preset", "### CPU latency",
                    "### The compression study, compiled"):
        assert heading in body
    assert f"| {spec.label} | tiny | {OCRC_INT8} | 3 |" in body
    plots = make_plots([res], cfg, tmp_path / "plots")
    assert set(plots) == {"accuracy", "latency", "layers", "roofline"}
    assert all(p.stat().st_size > 0 for p in plots.values())


def test_header_and_section(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# results\n\nintro\n\n## Baselines\n\nold numbers\n")
    write_header("first run", md)
    write_section(SECTION, "table 1", md)
    write_header("second run", md)
    write_section(SECTION, "table 2", md)
    text = md.read_text()
    assert text.count(HEADER_START) == 1 and text.count(HEADER_END) == 1
    assert "second run" in text and "first run" not in text
    assert text.count(f"## {SECTION}\n") == 1 and "table 2" in text and "table 1" not in text
    # The header and the scoreboard come first; the other sections are kept as they were.
    assert text.index("intro") < text.index(HEADER_START) < text.index(f"## {SECTION}") \
        < text.index("## Baselines")
    assert text.endswith("## Baselines\n\nold numbers\n")


def _int8_weights(m: OcrcModel, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The int8 conv and dense weights of m's int8 graph, by value name."""
    return {n.outputs[0].name: n.attrs["value"] for n in m.quant_graph(shape).nodes
            if n.op.name == "const" and n.outputs[0].type.rank in (2, 4)
            and n.attrs["value"].dtype == np.int8}


def _flag_reaches_the_run(tiny: tuple[ModelSpec, Config, dict], flag: str
                          ) -> tuple[Path, list[np.ndarray], list[tuple[int, ...]]]:
    """ModelSpec.<flag> = True reaches the base and variant OcrcModels of a run; returns the
    model path and calibration inputs of several widths (and those widths)."""
    spec, cfg, data = tiny
    run = UnitRun(replace(spec, **{flag: True}), cfg, Unit(spec.key, 0, OCRC_INT8),
                  lambda name: data[name])
    assert getattr(run.base, flag) and getattr(run.variant_model(spec.compressions[0]), flag)
    task = spec.task()
    calib = [task.preprocess(s.image) for s in generate("clean", 4, 6)]
    shapes = sorted({x.shape for x in calib})
    assert len(shapes) > 1
    return spec.path(), calib, shapes


def test_gptq_reaches_the_int8_graph_and_the_npu(
        tiny: tuple[ModelSpec, Config, dict]) -> None:
    """ModelSpec.gptq reaches every OcrcModel of the run; GPTQ's weights (one set, from the
    most common calibration width) change every conv and dense weight of the int8 graph at
    every width, pruned weights stay zero, and the VM still matches the golden interpreter."""
    path, calib, shapes = _flag_reaches_the_run(tiny, "gptq")
    for passes in ("", "prune{sparsity=0.5,ops=dense+lstm}"):
        plain = OcrcModel(path, passes, name="t")
        gptq = OcrcModel(path, passes, name="t", gptq=True)
        plain.calibrate(calib)
        gptq.calibrate(calib)
        # 3 convs and the dense layer, each weight and (centred) bias
        assert len(gptq.gptq_w) == 8 and not plain.gptq_w
        for shape in shapes:
            wp, wg = _int8_weights(plain, shape), _int8_weights(gptq, shape)
            assert wp.keys() == wg.keys() and len(wg) == 4
            assert all(not np.array_equal(wp[k], wg[k]) for k in wg)
            assert gptq.program_path(shape, "npu") != plain.program_path(shape, "npu")
        if passes:
            assert (wg["logits.w"] == 0).mean() >= 0.5  # pruned: still at least half zeros
        x = calib[0]
        outs, _, _ = gptq.run_vm(x, "npu")
        gold = gptq.run_golden(x)
        assert all(np.array_equal(outs[k], v) for k, v in gold.items())


def _int32_biases(m: OcrcModel, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The int32 biases of m's int8 convs and dense layers, by layer output name."""
    g = m.quant_graph(shape)
    return {n.outputs[0].name: g.const_value(n.inputs[2]) for n in g.nodes
            if n.op.name in ("qconv", "qdense")}


def test_bias_correction_reaches_every_width_and_the_npu(
        tiny: tuple[ModelSpec, Config, dict]) -> None:
    """ModelSpec.bias_correction reaches the OcrcModels of the run; the corrections, measured
    once, move the int32 biases of the int8 graph at every width, key the program cache, and
    the VM still matches the golden interpreter."""
    path, calib, shapes = _flag_reaches_the_run(tiny, "bias_correction")
    plain, fixed = OcrcModel(path, name="t"), OcrcModel(path, name="t", bias_correction=True)
    plain.calibrate(calib)
    fixed.calibrate(calib)
    assert fixed.bias_errors and not plain.bias_errors
    for shape in shapes:
        bp, bf = _int32_biases(plain, shape), _int32_biases(fixed, shape)
        assert bp.keys() == bf.keys() and bp
        assert any(not np.array_equal(bp[k], bf[k]) for k in bf)
        assert fixed.program_path(shape, "npu") != plain.program_path(shape, "npu")
    x = calib[0]
    outs, _, _ = fixed.run_vm(x, "npu")
    assert all(np.array_equal(outs[k], v) for k, v in fixed.run_golden(x).items())


def test_quantize_text_of_the_real_models() -> None:
    """The calibration the scoreboard's text names, as pass text the pipeline parser takes:
    plain GPTQ on ddddocr, centred on PP-OCRv2 rec, both bias-corrected (benchmarks/RESULTS.md,
    Quantisation)."""
    for spec in REAL.values():
        parse_pipeline(quantize_text(spec))
    assert quantize_text(REAL["ddddocr"]) == \
        "quantize{method=mse,equalize=true,gptq=true,gptq_center=false,bias_correction=true}"
    assert quantize_text(REAL["ppocr-v2-rec"]) == \
        "quantize{method=mse,equalize=true,gptq=true,bias_correction=true}"


def test_structured_variant_prunes_every_width_alike(
        tiny: tuple[ModelSpec, Config, dict]) -> None:
    """The real models' structured variant reads channel moments (criterion=std,
    compensate=lsq); pooled over the calibration inputs of every width, they make every
    width's graph lose the same filters; they are in the program cache key; the VM still
    matches the golden interpreter."""
    spec, cfg, data = tiny
    for real in REAL.values():
        assert STRUCTURED in real.compressions
    assert STRUCTURED.moments and "criterion=std,compensate=lsq" in STRUCTURED.passes
    run = UnitRun(replace(spec, compressions=(STRUCTURED,)), cfg,
                  Unit(spec.key, 0, STRUCTURED.name), lambda name: data[name])
    m = run.variant_model(STRUCTURED)
    assert m.moments and m.passes == STRUCTURED.passes
    task = spec.task()
    calib = [task.preprocess(s.image) for s in generate("clean", 4, 6)]
    shapes = sorted({x.shape for x in calib})
    assert len(shapes) > 1
    with pytest.raises(RuntimeError, match="calibrate"):
        m.float_graph(shapes[0])
    m.calibrate(calib)
    got = m.pass_options["channel_moments"]
    assert got and all(np.asarray(cov).shape == (len(mean), len(mean))
                       for mean, cov in got.values())
    filters = []
    for shape in shapes:
        ctx = PassContext(options=dict(m.pass_options))
        run_passes(m.plain_graph(shape), parse_pipeline(m.passes), ctx)
        filters.append([r.filters for r in ctx.options["reports"]["prune-structured"]])
        assert graph_macs(m.float_graph(shape)) < graph_macs(m.plain_graph(shape))
    assert filters[0] == filters[1] and any(f for f in filters[0])
    key = m.cache_key(shapes[0], "npu")
    m.moments_digest = "other"
    assert m.cache_key(shapes[0], "npu") != key
    m.calibrate(calib)
    assert m.cache_key(shapes[0], "npu") == key  # deterministic
    x = calib[0]
    outs, _, _ = m.run_vm(x, "npu")
    assert all(np.array_equal(outs[k], v) for k, v in m.run_golden(x).items())


def test_int16_threshold_reaches_the_plan(tiny: tuple[ModelSpec, Config, dict]) -> None:
    """Compression.int16_threshold reaches the OcrcModel of its variant and bounds the
    selection: a higher bound promotes at least as many layers, and the variant's pass text
    names it."""
    spec, cfg, data = tiny
    task, path = spec.task(), spec.path()
    comp = Compression("mixed", int16="auto", int16_threshold=80.0)
    run = UnitRun(spec, cfg, Unit(spec.key, 0, OCRC_INT8), lambda name: data[name])
    assert run.variant_model(comp).int16_threshold == 80.0
    calib = [task.preprocess(s.image) for s in generate("clean", 4, 6)]
    plans = {}
    for t in (-1000.0, 80.0):
        m = OcrcModel(path, name="t", int16="auto", int16_threshold=t)
        m.calibrate(calib)
        plans[t] = m.plan
    assert not plans[-1000.0].layers and plans[80.0].layers
    m = OcrcModel(path, name="t", int16="auto", int16_threshold=80.0)
    m.plan = plans[80.0]
    assert UnitRun.int16_text(m).startswith("quantize{int16=auto,int16_threshold=80}: ")
