"""Element types and tensor types of the IR. Shapes are static (all ints) after import."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    """Element types; the value is the text spelling used by the printer and the parser."""

    F32 = "f32"
    F64 = "f64"
    I8 = "i8"
    U8 = "u8"
    I16 = "i16"
    I32 = "i32"
    I64 = "i64"
    BOOL = "bool"

    @property
    def np(self) -> np.dtype:
        return np.dtype(_TO_NP[self])

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.F64)

    @staticmethod
    def from_np(dtype: np.dtype | type) -> DType:
        dt = np.dtype(dtype)
        for k, v in _TO_NP.items():
            if np.dtype(v) == dt:
                return k
        raise TypeError(f"no IR dtype for numpy dtype {dt}")


_TO_NP = {
    DType.F32: "float32", DType.F64: "float64", DType.I8: "int8", DType.U8: "uint8",
    DType.I16: "int16", DType.I32: "int32", DType.I64: "int64", DType.BOOL: "bool",
}


@dataclass(frozen=True)
class TensorType:
    """A tensor type: element type and a static shape (a tuple of non-negative ints)."""

    dtype: DType
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not all(isinstance(d, int) and d >= 0 for d in self.shape):
            raise TypeError(f"TensorType shape must be non-negative ints, got {self.shape}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"

    @staticmethod
    def of(array: np.ndarray) -> TensorType:
        return TensorType(DType.from_np(array.dtype), tuple(int(d) for d in array.shape))
