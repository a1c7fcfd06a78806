"""Memory layouts of activations: a layout is the memory order of a value's logical dims (a
permutation; () = row-major), the tensor being dense in that order. Views (reshape, transpose)
change the logical shape without moving bytes when the layouts allow it; otherwise the lowering
inserts an `npu.copy`. Dims of size 1 never matter, so layouts are compared on the non-unit dims.
"""

from __future__ import annotations

from collections.abc import Sequence

Layout = tuple[int, ...]
NHWC: Layout = (0, 2, 3, 1)


def full(perm: Sequence[int], rank: int) -> Layout:
    """The explicit permutation (row-major when perm is empty)."""
    return tuple(perm) if perm else tuple(range(rank))


def nonunit(perm: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    """The logical axes of size > 1 in memory order: two layouts with the same result store the
    tensor identically."""
    return tuple(a for a in full(perm, len(shape)) if shape[a] != 1)


def same(p: Sequence[int], q: Sequence[int], shape: Sequence[int]) -> bool:
    return nonunit(p, shape) == nonunit(q, shape)


def is_rowmajor(perm: Sequence[int], shape: Sequence[int]) -> bool:
    axes = nonunit(perm, shape)
    return list(axes) == sorted(axes)


def canonical(perm: Sequence[int], shape: Sequence[int]) -> Layout:
    """() for any row-major-equivalent layout, else the explicit permutation."""
    return () if is_rowmajor(perm, shape) else full(perm, len(shape))


def transposed(perm: Sequence[int], t: Sequence[int], shape_out: Sequence[int]) -> Layout:
    """Layout of y = x.transpose(t) when x is stored with memory order perm (a free view):
    memory dim i holds x's axis perm[i], which is y's axis t^-1[perm[i]]."""
    inv = [0] * len(t)
    for i, a in enumerate(t):
        inv[a] = i
    return canonical(tuple(inv[a] for a in full(perm, len(t))), shape_out)


def mem_shape(shape: Sequence[int], perm: Sequence[int]) -> tuple[int, ...]:
    """The dims in memory order."""
    return tuple(shape[a] for a in full(perm, len(shape)))


def byte_strides(shape: Sequence[int], perm: Sequence[int], item: int) -> tuple[int, ...]:
    """Byte stride of every logical dim of a dense tensor stored in memory order perm."""
    order = full(perm, len(shape))
    out = [0] * len(shape)
    acc = item
    for a in reversed(order):
        out[a] = acc
        acc *= max(shape[a], 1)
    return tuple(out)


def size(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def periodic(b_shape: Sequence[int], out_shape: Sequence[int], perm: Sequence[int]) -> bool:
    """True if b (broadcast to out_shape) read in out's memory order repeats with period
    b.size: b's non-unit dims are exactly the innermost memory dims of out, at full extent."""
    rank = len(out_shape)
    b_full = (1,) * (rank - len(b_shape)) + tuple(b_shape)
    order = full(perm, rank)
    inner = True
    for a in reversed(order):
        if out_shape[a] == 1:
            continue
        if b_full[a] == out_shape[a]:
            if not inner:
                return False
        elif b_full[a] == 1:
            inner = False
        else:
            return False
    return True


def concat_view(shape: Sequence[int], perm: Sequence[int], axis: int) -> tuple[int, int]:
    """(outer, inner) of a concat along `axis` in memory order: the result is [outer][axis *
    inner] and each operand [outer][n_i * inner] with the same outer and inner."""
    order = full(perm, len(shape))
    pos = order.index(axis)
    return size([shape[a] for a in order[:pos]]), size([shape[a] for a in order[pos + 1:]])
