"""The IR op table. Importing this package registers every op in `OPS`.

Each module declares a family of ops with `defop` (name, operands, attributes, type inference,
numpy reference semantics, doc). Module-level constants (`CONV`, `ADD`, ...) are the OpDefs;
compare ops by identity (`node.op is CONV`) or query `traits`.
"""

from __future__ import annotations

from ocrc.compiler.ir.opdef import OPS, AttrDef, OpDef, defop
from ocrc.compiler.ir.ops import elementwise, nn, pool, reduce, resize, rnn, tensor  # noqa: F401
from ocrc.compiler.ir.ops import qlstm, quant  # noqa: F401  (the quantised ops)
from ocrc.compiler.ir.ops import npu  # noqa: F401  (the NPU-level ops of compiler.backend)
from ocrc.compiler.ir.ops.elementwise import ACTIVATIONS, apply_activation

__all__ = ["OPS", "AttrDef", "OpDef", "defop", "ACTIVATIONS", "apply_activation"]
