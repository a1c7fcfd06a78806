"""The CRNN compression study: recipes, cached checkpoints, ONNX export, evaluation with
onnxruntime, the study JSON and the RESULTS.md section, and the shipped demo models.

Recipes are data (seeds, step counts, learning rates); a checkpoint is cached under a hash of
its recipe, so a rerun reuses it and a changed recipe retrains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from ocrc.frontend.zoo import cache_dir, file_lock

from benchmarks.ocr.datasets import DATASETS, generate, load_dataset
from benchmarks.train import data, train
from benchmarks.train import model as crnn
from benchmarks.train.report import write_report
from benchmarks.train.structured import filter_prune, narrow_shape

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = ROOT / "frontend" / "models"
STUDY_JSON = Path(__file__).resolve().parent / "compression_study.json"
SHIPPED = {"dense": "crnn_dense", "mag78": "crnn_sparse78"}
VAL = ("clean", 200, 7)  # validation during training; the held-out test set is "clean"
CHECK = ("clean", 100, 1)  # the first 100 images of "clean": the shipped models' quick check

DENSE = {"seed": 0, "steps": 2000, "lr": 2e-3, "batch": 32, "seed_base": 1_000_000,
         "stages": [list(s) if s is None else [s[0], s[1]] for s in crnn.STAGES],
         "hidden": crnn.HIDDEN}
PRUNE = {"targets": [0.2, 0.5, 0.625, 0.78], "steps": 500, "lr": 5e-4, "batch": 32,
         "seed_base": 2_000_000, "criterion": "global magnitude"}
STRUCTURED = {"targets": [0.5, 0.625, 0.78], "keep": [0.7, 0.62, 0.45], "steps": 600,
              "lr": 1e-3, "batch": 32, "seed_base": 4_000_000,
              "criterion": "L1 filter norm, conv filters and LSTM hidden units"}
NM = {"n": 2, "m": 4, "steps": 600, "lr": 5e-4, "batch": 32, "seed_base": 3_000_000}


def _hash(recipe: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]


def _cache() -> Path:
    folder = cache_dir() / "train"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _load_or_none(path: Path, model: torch.nn.Module, fresh: bool) -> dict[str, Any] | None:
    if fresh or not path.is_file():
        return None
    ckpt = torch.load(path, weights_only=False)
    model.load_state_dict(ckpt["state"])
    log.info("reusing %s", path)
    return ckpt["info"]


def _save(path: Path, model: torch.nn.Module, info: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"state": model.state_dict(), "info": info}, tmp)
    tmp.replace(path)


def onnx_weight_stats(path: Path) -> dict[str, Any]:
    """Float bytes, and zeros of the weight initializers (conv, LSTM W/R, head MatMul)."""
    proto = onnx.load(str(path))
    float_bytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer
                      if t.data_type == onnx.TensorProto.FLOAT)
    total = zeros = 0
    per_init = {}
    for name, arr in data.weight_initializers(proto).items():
        total += arr.size
        zeros += int(np.count_nonzero(arr == 0))
        per_init[name] = {"shape": list(arr.shape),
                          "sparsity": round(float(np.mean(arr == 0)), 4)}
    return {"float_bytes": float_bytes, "weights": total, "zero_weights": zeros,
            "sparsity": zeros / total, "onnx_file_bytes": path.stat().st_size,
            "opset": proto.opset_import[0].version, "initializer_sparsity": per_init}


def _record(tag: str, model: crnn.CRNN, info: dict[str, Any]) -> dict[str, Any]:
    """Export `model` to the cache, evaluate it with onnxruntime, update the study JSON."""
    path = _cache() / f"crnn-{tag}.onnx"
    crnn.export_onnx(model, path)
    test = load_dataset("clean")
    rec = {"tag": tag, **info, **onnx_weight_stats(path),
           "torch_sparsity": train.sparsity(model), "params": crnn.param_count(model),
           "macs_w128": crnn.macs(model, 128),
           "test": {"dataset": "clean", "n": DATASETS["clean"].n, "seed": DATASETS["clean"].seed,
                    **data.onnx_scores(path, test)},
           "check": {"dataset": "clean", "n": CHECK[1], "seed": CHECK[2],
                     **data.onnx_scores(path, generate(*CHECK))}}
    log.info("%s: sparsity %.3f, test accuracy %.3f, CER %.4f", tag, rec["sparsity"],
             rec["test"]["accuracy"], rec["test"]["cer"])
    with file_lock(_cache() / ".study.lock"):  # stages may run in parallel
        study = json.loads(STUDY_JSON.read_text()) if STUDY_JSON.is_file() else {"models": {}}
        study["torch"] = torch.__version__
        study["models"][tag] = rec
        study["models"] = dict(sorted(study["models"].items(), key=lambda kv: _order(kv[0])))
        STUDY_JSON.write_text(json.dumps(study, indent=1) + "\n")
    if tag in SHIPPED:
        _ship(tag, path, rec)
    return rec


def _order(tag: str) -> tuple[int, str]:
    rank = {"dense": 0, "mag": 1, "str": 2, "nm2": 3}
    return (next((v for k, v in rank.items() if tag.startswith(k)), 9), tag)


def _ship(tag: str, path: Path, rec: dict[str, Any]) -> None:
    """Copy a model into frontend/models with its metadata JSON."""
    name = SHIPPED[tag]
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, MODELS_DIR / f"{name}.onnx")
    meta = {
        "model": f"{name}.onnx", "charset": data.CHARSET, "blank": 0,
        "classes": crnn.NUM_CLASSES, "input": {"name": "image", "shape": [1, 1, data.HEIGHT,
                                                                       "width"]},
        "output": {"name": "logits", "shape": ["T", 1, crnn.NUM_CLASSES]},
        "input_height": data.HEIGHT, "width_multiple": data.WIDTH_MULTIPLE,
        "preprocessing": data.PREPROCESSING,
        "training": {"command": "python -m benchmarks.train", "seed": DENSE["seed"],
                     "dense_recipe": DENSE, **({"prune_recipe": PRUNE} if tag != "dense" else {}),
                     "train_seconds": rec["train_seconds"],
                     "cumulative_train_seconds": rec.get("cumulative_train_seconds",
                                                         rec["train_seconds"])},
        "sparsity": round(rec["sparsity"], 4), "float_bytes": rec["float_bytes"],
        "initializer_sparsity": rec["initializer_sparsity"],
        "accuracy": rec["test"], "check": rec["check"],
    }
    (MODELS_DIR / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


def _dense_model(fresh: bool) -> tuple[crnn.CRNN, dict[str, Any]]:
    train.seed_everything(DENSE["seed"])
    model = crnn.CRNN()
    path = _cache() / f"dense-{_hash(DENSE)}.pt"
    info = _load_or_none(path, model, fresh)
    if info is None:
        sched = train.Schedule(DENSE["steps"], DENSE["lr"], DENSE["batch"],
                               seed_base=DENSE["seed_base"])
        seconds = train.train(model, sched, val=generate(*VAL))
        info = {"method": "dense", "target": 0.0, "steps": DENSE["steps"],
                "train_seconds": round(seconds, 1), "history": sched.history}
        _save(path, model, info)
    return model, info


def run_dense(fresh: bool = False) -> None:
    model, info = _dense_model(fresh)
    _record("dense", model, info)


def run_prune(fresh: bool = False) -> None:
    """Iterative pruning: each target starts from the previous one's fine-tuned weights."""
    model, dense_info = _dense_model(False)
    total = dense_info["train_seconds"]
    for i, target in enumerate(PRUNE["targets"]):
        tag = f"mag{target * 100:g}".replace(".", "_")
        recipe = {**PRUNE, "dense": _hash(DENSE), "upto": PRUNE["targets"][: i + 1]}
        path = _cache() / f"{tag}-{_hash(recipe)}.pt"
        train.seed_everything(DENSE["seed"] + 1 + i)
        info = _load_or_none(path, model, fresh)
        if info is None:
            masks = train.global_magnitude_masks(model, target)
            train.apply_masks(masks, crnn.prunable(model))
            before = train.evaluate(model, generate(*VAL), batch=50)
            sched = train.Schedule(PRUNE["steps"], PRUNE["lr"], PRUNE["batch"],
                                   seed_base=PRUNE["seed_base"] + 100_000 * i)
            seconds = train.train(model, sched, masks, val=generate(*VAL))
            info = {"method": "unstructured, global magnitude, iterative", "target": target,
                    "steps": PRUNE["steps"], "train_seconds": round(seconds, 1),
                    "val_before_finetune": before, "history": sched.history,
                    "per_layer_sparsity": {n: float((p == 0).float().mean())
                                           for n, p in crnn.prunable(model).items()}}
            _save(path, model, info)
        total += info["train_seconds"]
        _record(tag, model, {**info, "cumulative_train_seconds": round(total, 1)})


def run_nm(fresh: bool = False) -> None:
    """2:4 along the reduction axis, one shot from dense, then fine-tuned."""
    model, dense_info = _dense_model(False)
    recipe = {**NM, "dense": _hash(DENSE)}
    path = _cache() / f"nm24-{_hash(recipe)}.pt"
    train.seed_everything(DENSE["seed"] + 100)
    info = _load_or_none(path, model, fresh)
    if info is None:
        masks = train.nm_masks(model, NM["n"], NM["m"])
        train.apply_masks(masks, crnn.prunable(model))
        before = train.evaluate(model, generate(*VAL), batch=50)
        sched = train.Schedule(NM["steps"], NM["lr"], NM["batch"], seed_base=NM["seed_base"])
        seconds = train.train(model, sched, masks, val=generate(*VAL))
        info = {"method": "2:4, reduction axis", "target": 0.5,
                "steps": NM["steps"], "train_seconds": round(seconds, 1),
                "val_before_finetune": before, "history": sched.history}
        _save(path, model, info)
    _record("nm2_4", model, {**info, "cumulative_train_seconds":
                             round(dense_info["train_seconds"] + info["train_seconds"], 1)})


def run_structured(fresh: bool = False) -> None:
    """Iterative L1 filter pruning: each point narrows the previous one, then fine-tunes."""
    dense, dense_info = _dense_model(False)
    model, total = dense, dense_info["train_seconds"]
    for i, (target, keep) in enumerate(zip(STRUCTURED["targets"], STRUCTURED["keep"])):
        tag = f"struct{target * 100:g}".replace(".", "_")
        recipe = {**STRUCTURED, "dense": _hash(DENSE), "upto": STRUCTURED["keep"][: i + 1]}
        path = _cache() / f"{tag}-{_hash(recipe)}.pt"
        train.seed_everything(DENSE["seed"] + 200 + i)
        stages, hidden = narrow_shape(dense, keep)
        narrow = crnn.CRNN(stages, hidden)
        info = _load_or_none(path, narrow, fresh)
        if info is None:
            narrow = filter_prune(model, keep, reference=dense)
            before = train.evaluate(narrow, generate(*VAL), batch=50)
            sched = train.Schedule(STRUCTURED["steps"], STRUCTURED["lr"], STRUCTURED["batch"],
                                   seed_base=STRUCTURED["seed_base"] + 100_000 * i)
            seconds = train.train(narrow, sched, val=generate(*VAL))
            info = {"method": "structured, L1 filters + LSTM units, iterative",
                    "target": target, "keep": keep, "steps": STRUCTURED["steps"],
                    "train_seconds": round(seconds, 1), "val_before_finetune": before,
                    "history": sched.history,
                    "channels": [s[0] for s in stages], "hidden": hidden}
            _save(path, narrow, info)
        model = narrow
        total += info["train_seconds"]
        _record(tag, model, {**info, "cumulative_train_seconds": round(total, 1)})


__all__ = ["STUDY_JSON", "run_dense", "run_nm", "run_prune", "run_structured", "write_report"]
