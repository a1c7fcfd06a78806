"""The demo CRNN in PyTorch: a Conv-BN-ReLU backbone with max pools, the CNN-to-RNN bridge, a
bidirectional LSTM and a linear CTC head; its ONNX export; its prunable weights.

Input [N, 1, 32, W] (grayscale /255), output [W/4, N, 37] logits (CTC blank + [0-9a-z]).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from benchmarks.train.data import CHARSET, HEIGHT

NUM_CLASSES = len(CHARSET) + 1
# (out channels, pool kernel) per conv stage; pools take the height 32 -> 2, the width W -> W/4.
STAGES: tuple[tuple[int, tuple[int, int] | None], ...] = (
    (32, (2, 2)), (64, (2, 2)), (96, None), (96, (2, 1)), (128, (2, 1)))
HIDDEN = 128
OPSET = 13


class CRNN(nn.Module):
    """Conv(3x3)-BN-ReLU stages, bridge [N, C, 2, T] -> [T, N, 2C], BiLSTM, Linear."""

    def __init__(self, stages=STAGES, hidden: int = HIDDEN) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, height = 1, HEIGHT
        for cout, pool in stages:
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
            if pool is not None:
                layers.append(nn.MaxPool2d(pool, pool))
                height //= pool[0]
            cin = cout
        self.backbone = nn.Sequential(*layers)
        self.features = cin * height
        self.rnn = nn.LSTM(self.features, hidden, bidirectional=True)
        self.head = nn.Linear(2 * hidden, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backbone(x)  # [N, C, H, T]
        y = y.permute(3, 0, 1, 2).flatten(2)  # [T, N, C*H]
        y, _ = self.rnn(y)
        return self.head(y)


def prunable(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights the pruning acts on: conv kernels, LSTM input/recurrent matrices, the head
    (not BN, not biases), by parameter name, in module order."""
    return {name: p for name, p in model.named_parameters()
            if p.dim() > 1 and not name.endswith("bias")}


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _positive_zeros(model: onnx.ModelProto) -> None:
    """Turn -0.0 into +0.0 in float initializers (BN folding can flip the sign of a pruned 0)."""
    for i, init in enumerate(model.graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        arr = onnx.numpy_helper.to_array(init)
        if np.signbit(arr[arr == 0]).any():
            fixed = np.where(arr == 0, np.float32(0.0), arr).astype(np.float32)
            model.graph.initializer[i].CopyFrom(onnx.numpy_helper.from_array(fixed, init.name))


def export_onnx(model: CRNN, path: Path, example_width: int = 128) -> None:
    """Export with the legacy TorchScript exporter (opset 13): input 'image' [1, 1, 32,
    'width'], output 'logits' [T, 1, 37]. Eval mode, constant folding on (BN is folded into the
    convs). Pruned weights stay exact zeros."""
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.ones(1, 1, HEIGHT, example_width)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        # The legacy exporter is deprecated, and warns about LSTM batch sizes (we export 1).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size")
        torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=["logits"],
                          do_constant_folding=True,
                          dynamic_axes={"image": {3: "width"}, "logits": {0: "T"}})
    proto = onnx.load(str(tmp))
    tmp.unlink()
    _positive_zeros(proto)
    # The exporter names the batch dim of the output symbolically; the model has batch 1.
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    out_dims[1].Clear()
    out_dims[1].dim_value = 1
    proto.producer_name = "ocrc-train"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def macs(model: CRNN, width: int = 128) -> int:
    """Multiply-accumulates of one [1, 1, 32, width] inference, counting every weight (dense)."""
    total, h, w = 0, HEIGHT, width
    for m in model.backbone:
        if isinstance(m, nn.Conv2d):
            total += m.out_channels * m.in_channels * 9 * h * w
        elif isinstance(m, nn.MaxPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
            h, w = h // k[0], w // k[1]
    hidden = model.rnn.hidden_size
    total += w * 2 * 4 * hidden * (model.features + hidden)
    return total + w * model.head.in_features * model.head.out_features
