"""Explicit SIMD vectors for the numba kernel: a vector type and load / store / fma intrinsics.

LLVM's loop vectoriser cannot keep a matrix product's accumulators in registers when the lanes
are the innermost loop and the reduction length is only known at run time (it vectorises the
innermost loop only, and must re-check aliasing on every entry), so the kernel spells the
vectors out: :class:`Vec` is an LLVM ``<WIDTH x float>`` (or ``double``) value, one lane per
prompt of a block; :func:`vload` / :func:`vstore` move ``WIDTH`` consecutive array elements,
:func:`vfma` is ``llvm.fma`` (one rounding, the same bits whatever the vector width the machine
has). Values of this type live in registers as ordinary SSA values, so a register tile of
accumulators stays in registers across a reduction loop of any length.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

WIDTH = 16
"""Lanes (prompts) per vector: one AVX-512 register of float32, two of float64."""


class Vec(types.Type):
    """``WIDTH`` numbers of one dtype, held as one LLVM vector value."""

    def __init__(self, dtype: types.Type) -> None:
        self.dtype = dtype
        super().__init__(name=f"Vec{WIDTH}({dtype})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):  # noqa: ANN001
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), WIDTH))


def _ptr(context, builder, aryty, ary, idx):  # noqa: ANN001, ANN202
    arr = context.make_array(aryty)(context, builder, ary)
    return builder.gep(arr.data, [idx])


@intrinsic
def vload(typingctx, arr, idx):  # noqa: ANN001, ANN201
    """``arr[idx : idx + WIDTH]`` as a vector (``arr`` 1-D contiguous; no bounds check)."""
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        lt = context.get_value_type(vt)
        p = _ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(p, lt.as_pointer()), align=arr.dtype.bitwidth // 8)

    return vt(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):  # noqa: ANN001, ANN201
    """``arr[idx : idx + WIDTH] = v``."""

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        p = _ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(p, args[2].type.as_pointer()), align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(arr, idx, v), codegen


@intrinsic
def vzero(typingctx, arr):  # noqa: ANN001, ANN201
    """The zero vector of ``arr``'s dtype."""
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr), codegen


@intrinsic
def vsplat(typingctx, arr, x):  # noqa: ANN001, ANN201
    """``x`` (a scalar of ``arr``'s dtype) in every lane."""
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        lt = context.get_value_type(vt)
        val = context.cast(builder, args[1], sig.args[1], arr.dtype)
        v = builder.insert_element(ir.Constant(lt, ir.Undefined), val, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, ir.Constant(lt, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH))

    return vt(arr, x), codegen


@intrinsic
def vfma(typingctx, a, b, c):  # noqa: ANN001, ANN201
    """``a * b + c`` lane by lane with one rounding (``llvm.fma``)."""
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        vt = args[0].type
        name = "llvm.fma.v%d%s" % (vt.count, "f32" if isinstance(vt.element, ir.FloatType) else "f64")
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]), name)
        return builder.call(fn, list(args))

    return a(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):  # noqa: ANN001, ANN201
    """``a + b`` lane by lane."""
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vmul(typingctx, a, b):  # noqa: ANN001, ANN201
    """``a * b`` lane by lane."""
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return builder.fmul(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vsub(typingctx, a, b):  # noqa: ANN001, ANN201
    """``a - b`` lane by lane."""
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return builder.fsub(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vdiv(typingctx, a, b):  # noqa: ANN001, ANN201
    """``a / b`` lane by lane."""
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return builder.fdiv(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vmax(typingctx, a, b):  # noqa: ANN001, ANN201
    """``a if a > b else b`` lane by lane."""
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vwhere_pos(typingctx, k, x):  # noqa: ANN001, ANN201
    """``x if k > 0 else 0`` lane by lane (ReLU is ``vwhere_pos(s, s)``, its derivative
    ``vwhere_pos(K, dK)``)."""
    if not (isinstance(k, Vec) and k == x):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered(">", args[0], zero), args[1], zero)

    return k(k, x), codegen


@intrinsic
def vgather(typingctx, arr, idx, stride):  # noqa: ANN001, ANN201
    """``[arr.flat[idx + p * stride] for p < WIDTH]`` as a vector: lane ``p`` reads the element
    ``p * stride`` after ``idx``, in elements from the start of ``arr``'s data (one gather
    instruction, ``llvm.masked.gather``, where the machine has it; a copy, so the same bits)."""
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        lt = context.get_value_type(vt)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        vi = ir.VectorType(i64, WIDTH)
        size = arr.dtype.bitwidth // 8

        def splat(x):  # noqa: ANN001, ANN202
            v = builder.insert_element(ir.Constant(vi, ir.Undefined), x, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, ir.Constant(vi, ir.Undefined),
                                          ir.Constant(ir.VectorType(i32, WIDTH), [0] * WIDTH))

        base = builder.ptrtoint(_ptr(context, builder, sig.args[0], args[0], args[1]), i64)
        step = builder.mul(context.cast(builder, args[2], sig.args[2], types.int64), ir.Constant(i64, size))
        addr = builder.add(splat(base), builder.mul(splat(step), ir.Constant(vi, list(range(WIDTH)))))
        pty = ir.VectorType(lt.element.as_pointer(), WIDTH)
        mt = ir.VectorType(ir.IntType(1), WIDTH)
        name = "llvm.masked.gather.v%d%s.v%dp0" % (WIDTH, "f32" if isinstance(lt.element, ir.FloatType) else "f64", WIDTH)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lt, [pty, i32, mt, lt]), name)
        return builder.call(fn, [builder.inttoptr(addr, pty), ir.Constant(i32, size), ir.Constant(mt, [1] * WIDTH),
                                 ir.Constant(lt, ir.Undefined)])

    return vt(arr, idx, stride), codegen
