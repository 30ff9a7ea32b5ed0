"""The numba kernel of :mod:`landscape.engine.fused` (imported only when numba is installed).

Layout: a block of ``BL`` prompts; every per-prompt matrix ``M (rows, cols)`` of the block is a
1-D array with element ``M[r, c]`` of prompt ``p`` at ``(r * cols + c) * BL + p`` (the prompt
innermost), so one :class:`~landscape.engine._simd.Vec` holds an entry for all the prompts of the
block. Every matrix product of the forward and backward pass is one call of :func:`mm` with the
operands' strides; the per-seed weights are broadcast once per seed into lane vectors
(``wb``), so weights and activations enter :func:`mm` alike.

Module-level functions, so that numba's on-disk cache (``cache=True``) finds them again in the
next process: the kernel is compiled once per dtype and machine, not once per run.
"""

import math

import numba
import numpy as np

from landscape.engine._simd import (WIDTH, vadd, vdiv, vfma, vgather, vload, vmax, vmul, vsplat, vstore, vsub,
                                    vwhere_pos, vzero)

BL = WIDTH  # prompts per block = lanes per vector (= landscape.engine.fused.BLOCK)
jit = numba.njit(cache=True, fastmath={"contract"}, nogil=True, error_model="numpy")


@jit
def put(C, q, x, relu, Mk, dm):
    """Store an output ``x`` of :func:`mm` at ``C[q:][:BL]``: ``max(x, 0)`` with ``relu``
    (:func:`vwhere_pos`, as :func:`activate`), and with an array ``Mk`` only where
    ``Mk[q + dm:][:BL] > 0``, 0 elsewhere (``dS = [K > 0] dK``, as :func:`activate_back`)."""
    if relu:
        x = vwhere_pos(x, x)
    if Mk is not None:
        x = vwhere_pos(vload(Mk, q + dm), x)
    vstore(C, q, x)


@jit
def mm(A, ao, am, ar, B, bo, br, bk, C, co, cm, ck, M, K, R, acc, ci=-1, relu=False, Mk=None, mo=0):
    """``C[m, k] (+)= sum_r A[m, r] B[r, k]`` for every lane, ``m < M, k < K, r < R``.

    ``X[i, j]`` is the lane vector at ``X[xo + i * xi + j * xj :][:BL]`` (strides in elements), so
    transposes and sub-blocks are strides. Register tiles of 6 × 4 outputs in float32 (then 6 × 2,
    6 × 1 at the edge), 4 × 4 (then 4 × 1, 2 × 4, 2 × 1, 1 × 4, 1 × 1 at the edges); each output
    is the sum over ``r`` in increasing order, fused multiply-adds, started from ``C`` (``acc``)
    or from zero: the same bits every run. With
    ``acc`` and ``ci >= 0`` the start is read from offset ``ci`` instead of ``co`` (same strides):
    ``C[co:] = C[ci:] + A B`` without copying ``C[ci:]`` to ``C[co:]`` first. Each output is
    stored by :func:`put`: the ReLU of it with ``relu``, and with an array ``Mk`` only where
    ``Mk`` (same strides, offset ``mo``) is positive, so an activation or its derivative costs
    no pass of its own (the same bits as that pass).
    """
    dl = ci - co if ci >= 0 else 0
    dm = mo - co
    m = 0
    if C.itemsize == 4:  # 6 x 4 tiles: 24 float32 accumulators and their operands fit 32 registers
        while m + 6 <= M:
            c0 = co + m * cm
            c1 = c0 + cm
            c2 = c1 + cm
            c3 = c2 + cm
            c4 = c3 + cm
            c5 = c4 + cm
            k = 0
            while k + 4 <= K:
                if acc:
                    x00 = vload(C, dl + c0 + (k + 0) * ck)
                    x01 = vload(C, dl + c0 + (k + 1) * ck)
                    x02 = vload(C, dl + c0 + (k + 2) * ck)
                    x03 = vload(C, dl + c0 + (k + 3) * ck)
                    x10 = vload(C, dl + c1 + (k + 0) * ck)
                    x11 = vload(C, dl + c1 + (k + 1) * ck)
                    x12 = vload(C, dl + c1 + (k + 2) * ck)
                    x13 = vload(C, dl + c1 + (k + 3) * ck)
                    x20 = vload(C, dl + c2 + (k + 0) * ck)
                    x21 = vload(C, dl + c2 + (k + 1) * ck)
                    x22 = vload(C, dl + c2 + (k + 2) * ck)
                    x23 = vload(C, dl + c2 + (k + 3) * ck)
                    x30 = vload(C, dl + c3 + (k + 0) * ck)
                    x31 = vload(C, dl + c3 + (k + 1) * ck)
                    x32 = vload(C, dl + c3 + (k + 2) * ck)
                    x33 = vload(C, dl + c3 + (k + 3) * ck)
                    x40 = vload(C, dl + c4 + (k + 0) * ck)
                    x41 = vload(C, dl + c4 + (k + 1) * ck)
                    x42 = vload(C, dl + c4 + (k + 2) * ck)
                    x43 = vload(C, dl + c4 + (k + 3) * ck)
                    x50 = vload(C, dl + c5 + (k + 0) * ck)
                    x51 = vload(C, dl + c5 + (k + 1) * ck)
                    x52 = vload(C, dl + c5 + (k + 2) * ck)
                    x53 = vload(C, dl + c5 + (k + 3) * ck)
                else:
                    x00 = vzero(C)
                    x01 = x00
                    x02 = x00
                    x03 = x00
                    x10 = x00
                    x11 = x00
                    x12 = x00
                    x13 = x00
                    x20 = x00
                    x21 = x00
                    x22 = x00
                    x23 = x00
                    x30 = x00
                    x31 = x00
                    x32 = x00
                    x33 = x00
                    x40 = x00
                    x41 = x00
                    x42 = x00
                    x43 = x00
                    x50 = x00
                    x51 = x00
                    x52 = x00
                    x53 = x00
                pa = ao + m * am
                pb = bo + k * bk
                for _ in range(R):
                    b0 = vload(B, pb + 0 * bk)
                    b1 = vload(B, pb + 1 * bk)
                    b2 = vload(B, pb + 2 * bk)
                    b3 = vload(B, pb + 3 * bk)
                    a0 = vload(A, pa + 0 * am)
                    x00 = vfma(a0, b0, x00)
                    x01 = vfma(a0, b1, x01)
                    x02 = vfma(a0, b2, x02)
                    x03 = vfma(a0, b3, x03)
                    a1 = vload(A, pa + 1 * am)
                    x10 = vfma(a1, b0, x10)
                    x11 = vfma(a1, b1, x11)
                    x12 = vfma(a1, b2, x12)
                    x13 = vfma(a1, b3, x13)
                    a2 = vload(A, pa + 2 * am)
                    x20 = vfma(a2, b0, x20)
                    x21 = vfma(a2, b1, x21)
                    x22 = vfma(a2, b2, x22)
                    x23 = vfma(a2, b3, x23)
                    a3 = vload(A, pa + 3 * am)
                    x30 = vfma(a3, b0, x30)
                    x31 = vfma(a3, b1, x31)
                    x32 = vfma(a3, b2, x32)
                    x33 = vfma(a3, b3, x33)
                    a4 = vload(A, pa + 4 * am)
                    x40 = vfma(a4, b0, x40)
                    x41 = vfma(a4, b1, x41)
                    x42 = vfma(a4, b2, x42)
                    x43 = vfma(a4, b3, x43)
                    a5 = vload(A, pa + 5 * am)
                    x50 = vfma(a5, b0, x50)
                    x51 = vfma(a5, b1, x51)
                    x52 = vfma(a5, b2, x52)
                    x53 = vfma(a5, b3, x53)
                    pa += ar
                    pb += br
                put(C, c0 + (k + 0) * ck, x00, relu, Mk, dm)
                put(C, c0 + (k + 1) * ck, x01, relu, Mk, dm)
                put(C, c0 + (k + 2) * ck, x02, relu, Mk, dm)
                put(C, c0 + (k + 3) * ck, x03, relu, Mk, dm)
                put(C, c1 + (k + 0) * ck, x10, relu, Mk, dm)
                put(C, c1 + (k + 1) * ck, x11, relu, Mk, dm)
                put(C, c1 + (k + 2) * ck, x12, relu, Mk, dm)
                put(C, c1 + (k + 3) * ck, x13, relu, Mk, dm)
                put(C, c2 + (k + 0) * ck, x20, relu, Mk, dm)
                put(C, c2 + (k + 1) * ck, x21, relu, Mk, dm)
                put(C, c2 + (k + 2) * ck, x22, relu, Mk, dm)
                put(C, c2 + (k + 3) * ck, x23, relu, Mk, dm)
                put(C, c3 + (k + 0) * ck, x30, relu, Mk, dm)
                put(C, c3 + (k + 1) * ck, x31, relu, Mk, dm)
                put(C, c3 + (k + 2) * ck, x32, relu, Mk, dm)
                put(C, c3 + (k + 3) * ck, x33, relu, Mk, dm)
                put(C, c4 + (k + 0) * ck, x40, relu, Mk, dm)
                put(C, c4 + (k + 1) * ck, x41, relu, Mk, dm)
                put(C, c4 + (k + 2) * ck, x42, relu, Mk, dm)
                put(C, c4 + (k + 3) * ck, x43, relu, Mk, dm)
                put(C, c5 + (k + 0) * ck, x50, relu, Mk, dm)
                put(C, c5 + (k + 1) * ck, x51, relu, Mk, dm)
                put(C, c5 + (k + 2) * ck, x52, relu, Mk, dm)
                put(C, c5 + (k + 3) * ck, x53, relu, Mk, dm)
                k += 4
            if k + 2 <= K:
                if acc:
                    x00 = vload(C, dl + c0 + (k + 0) * ck)
                    x01 = vload(C, dl + c0 + (k + 1) * ck)
                    x10 = vload(C, dl + c1 + (k + 0) * ck)
                    x11 = vload(C, dl + c1 + (k + 1) * ck)
                    x20 = vload(C, dl + c2 + (k + 0) * ck)
                    x21 = vload(C, dl + c2 + (k + 1) * ck)
                    x30 = vload(C, dl + c3 + (k + 0) * ck)
                    x31 = vload(C, dl + c3 + (k + 1) * ck)
                    x40 = vload(C, dl + c4 + (k + 0) * ck)
                    x41 = vload(C, dl + c4 + (k + 1) * ck)
                    x50 = vload(C, dl + c5 + (k + 0) * ck)
                    x51 = vload(C, dl + c5 + (k + 1) * ck)
                else:
                    x00 = vzero(C)
                    x01 = x00
                    x10 = x00
                    x11 = x00
                    x20 = x00
                    x21 = x00
                    x30 = x00
                    x31 = x00
                    x40 = x00
                    x41 = x00
                    x50 = x00
                    x51 = x00
                pa = ao + m * am
                pb = bo + k * bk
                for _ in range(R):
                    b0 = vload(B, pb + 0 * bk)
                    b1 = vload(B, pb + 1 * bk)
                    a0 = vload(A, pa + 0 * am)
                    x00 = vfma(a0, b0, x00)
                    x01 = vfma(a0, b1, x01)
                    a1 = vload(A, pa + 1 * am)
                    x10 = vfma(a1, b0, x10)
                    x11 = vfma(a1, b1, x11)
                    a2 = vload(A, pa + 2 * am)
                    x20 = vfma(a2, b0, x20)
                    x21 = vfma(a2, b1, x21)
                    a3 = vload(A, pa + 3 * am)
                    x30 = vfma(a3, b0, x30)
                    x31 = vfma(a3, b1, x31)
                    a4 = vload(A, pa + 4 * am)
                    x40 = vfma(a4, b0, x40)
                    x41 = vfma(a4, b1, x41)
                    a5 = vload(A, pa + 5 * am)
                    x50 = vfma(a5, b0, x50)
                    x51 = vfma(a5, b1, x51)
                    pa += ar
                    pb += br
                put(C, c0 + (k + 0) * ck, x00, relu, Mk, dm)
                put(C, c0 + (k + 1) * ck, x01, relu, Mk, dm)
                put(C, c1 + (k + 0) * ck, x10, relu, Mk, dm)
                put(C, c1 + (k + 1) * ck, x11, relu, Mk, dm)
                put(C, c2 + (k + 0) * ck, x20, relu, Mk, dm)
                put(C, c2 + (k + 1) * ck, x21, relu, Mk, dm)
                put(C, c3 + (k + 0) * ck, x30, relu, Mk, dm)
                put(C, c3 + (k + 1) * ck, x31, relu, Mk, dm)
                put(C, c4 + (k + 0) * ck, x40, relu, Mk, dm)
                put(C, c4 + (k + 1) * ck, x41, relu, Mk, dm)
                put(C, c5 + (k + 0) * ck, x50, relu, Mk, dm)
                put(C, c5 + (k + 1) * ck, x51, relu, Mk, dm)
                k += 2
            while k < K:
                if acc:
                    x00 = vload(C, dl + c0 + k * ck)
                    x10 = vload(C, dl + c1 + k * ck)
                    x20 = vload(C, dl + c2 + k * ck)
                    x30 = vload(C, dl + c3 + k * ck)
                    x40 = vload(C, dl + c4 + k * ck)
                    x50 = vload(C, dl + c5 + k * ck)
                else:
                    x00 = vzero(C)
                    x10 = x00
                    x20 = x00
                    x30 = x00
                    x40 = x00
                    x50 = x00
                pa = ao + m * am
                pb = bo + k * bk
                for _ in range(R):
                    b0 = vload(B, pb + 0 * bk)
                    a0 = vload(A, pa + 0 * am)
                    x00 = vfma(a0, b0, x00)
                    a1 = vload(A, pa + 1 * am)
                    x10 = vfma(a1, b0, x10)
                    a2 = vload(A, pa + 2 * am)
                    x20 = vfma(a2, b0, x20)
                    a3 = vload(A, pa + 3 * am)
                    x30 = vfma(a3, b0, x30)
                    a4 = vload(A, pa + 4 * am)
                    x40 = vfma(a4, b0, x40)
                    a5 = vload(A, pa + 5 * am)
                    x50 = vfma(a5, b0, x50)
                    pa += ar
                    pb += br
                put(C, c0 + k * ck, x00, relu, Mk, dm)
                put(C, c1 + k * ck, x10, relu, Mk, dm)
                put(C, c2 + k * ck, x20, relu, Mk, dm)
                put(C, c3 + k * ck, x30, relu, Mk, dm)
                put(C, c4 + k * ck, x40, relu, Mk, dm)
                put(C, c5 + k * ck, x50, relu, Mk, dm)
                k += 1
            m += 6
    while m + 4 <= M:
        c0 = co + m * cm
        c1 = c0 + cm
        c2 = c1 + cm
        c3 = c2 + cm
        k = 0
        while k + 4 <= K:
            if acc:
                x00 = vload(C, dl + c0 + (k + 0) * ck)
                x01 = vload(C, dl + c0 + (k + 1) * ck)
                x02 = vload(C, dl + c0 + (k + 2) * ck)
                x03 = vload(C, dl + c0 + (k + 3) * ck)
                x10 = vload(C, dl + c1 + (k + 0) * ck)
                x11 = vload(C, dl + c1 + (k + 1) * ck)
                x12 = vload(C, dl + c1 + (k + 2) * ck)
                x13 = vload(C, dl + c1 + (k + 3) * ck)
                x20 = vload(C, dl + c2 + (k + 0) * ck)
                x21 = vload(C, dl + c2 + (k + 1) * ck)
                x22 = vload(C, dl + c2 + (k + 2) * ck)
                x23 = vload(C, dl + c2 + (k + 3) * ck)
                x30 = vload(C, dl + c3 + (k + 0) * ck)
                x31 = vload(C, dl + c3 + (k + 1) * ck)
                x32 = vload(C, dl + c3 + (k + 2) * ck)
                x33 = vload(C, dl + c3 + (k + 3) * ck)
            else:
                x00 = vzero(C)
                x01 = x00
                x02 = x00
                x03 = x00
                x10 = x00
                x11 = x00
                x12 = x00
                x13 = x00
                x20 = x00
                x21 = x00
                x22 = x00
                x23 = x00
                x30 = x00
                x31 = x00
                x32 = x00
                x33 = x00
            pa = ao + m * am
            pb = bo + k * bk
            for _ in range(R):
                a0 = vload(A, pa + 0 * am)
                a1 = vload(A, pa + 1 * am)
                a2 = vload(A, pa + 2 * am)
                a3 = vload(A, pa + 3 * am)
                b0 = vload(B, pb + 0 * bk)
                b1 = vload(B, pb + 1 * bk)
                b2 = vload(B, pb + 2 * bk)
                b3 = vload(B, pb + 3 * bk)
                x00 = vfma(a0, b0, x00)
                x01 = vfma(a0, b1, x01)
                x02 = vfma(a0, b2, x02)
                x03 = vfma(a0, b3, x03)
                x10 = vfma(a1, b0, x10)
                x11 = vfma(a1, b1, x11)
                x12 = vfma(a1, b2, x12)
                x13 = vfma(a1, b3, x13)
                x20 = vfma(a2, b0, x20)
                x21 = vfma(a2, b1, x21)
                x22 = vfma(a2, b2, x22)
                x23 = vfma(a2, b3, x23)
                x30 = vfma(a3, b0, x30)
                x31 = vfma(a3, b1, x31)
                x32 = vfma(a3, b2, x32)
                x33 = vfma(a3, b3, x33)
                pa += ar
                pb += br
            put(C, c0 + (k + 0) * ck, x00, relu, Mk, dm)
            put(C, c0 + (k + 1) * ck, x01, relu, Mk, dm)
            put(C, c0 + (k + 2) * ck, x02, relu, Mk, dm)
            put(C, c0 + (k + 3) * ck, x03, relu, Mk, dm)
            put(C, c1 + (k + 0) * ck, x10, relu, Mk, dm)
            put(C, c1 + (k + 1) * ck, x11, relu, Mk, dm)
            put(C, c1 + (k + 2) * ck, x12, relu, Mk, dm)
            put(C, c1 + (k + 3) * ck, x13, relu, Mk, dm)
            put(C, c2 + (k + 0) * ck, x20, relu, Mk, dm)
            put(C, c2 + (k + 1) * ck, x21, relu, Mk, dm)
            put(C, c2 + (k + 2) * ck, x22, relu, Mk, dm)
            put(C, c2 + (k + 3) * ck, x23, relu, Mk, dm)
            put(C, c3 + (k + 0) * ck, x30, relu, Mk, dm)
            put(C, c3 + (k + 1) * ck, x31, relu, Mk, dm)
            put(C, c3 + (k + 2) * ck, x32, relu, Mk, dm)
            put(C, c3 + (k + 3) * ck, x33, relu, Mk, dm)
            k += 4
        while k < K:
            if acc:
                x00 = vload(C, dl + c0 + k * ck)
                x10 = vload(C, dl + c1 + k * ck)
                x20 = vload(C, dl + c2 + k * ck)
                x30 = vload(C, dl + c3 + k * ck)
            else:
                x00 = vzero(C)
                x10 = x00
                x20 = x00
                x30 = x00
            pa = ao + m * am
            pb = bo + k * bk
            for _ in range(R):
                b0 = vload(B, pb)
                x00 = vfma(vload(A, pa + 0 * am), b0, x00)
                x10 = vfma(vload(A, pa + 1 * am), b0, x10)
                x20 = vfma(vload(A, pa + 2 * am), b0, x20)
                x30 = vfma(vload(A, pa + 3 * am), b0, x30)
                pa += ar
                pb += br
            put(C, c0 + k * ck, x00, relu, Mk, dm)
            put(C, c1 + k * ck, x10, relu, Mk, dm)
            put(C, c2 + k * ck, x20, relu, Mk, dm)
            put(C, c3 + k * ck, x30, relu, Mk, dm)
            k += 1
        m += 4
    while m + 2 <= M:
        c0 = co + m * cm
        c1 = c0 + cm
        k = 0
        while k + 4 <= K:
            if acc:
                x00 = vload(C, dl + c0 + k * ck)
                x01 = vload(C, dl + c0 + (k + 1) * ck)
                x02 = vload(C, dl + c0 + (k + 2) * ck)
                x03 = vload(C, dl + c0 + (k + 3) * ck)
                x10 = vload(C, dl + c1 + k * ck)
                x11 = vload(C, dl + c1 + (k + 1) * ck)
                x12 = vload(C, dl + c1 + (k + 2) * ck)
                x13 = vload(C, dl + c1 + (k + 3) * ck)
            else:
                x00 = vzero(C)
                x01 = x00
                x02 = x00
                x03 = x00
                x10 = x00
                x11 = x00
                x12 = x00
                x13 = x00
            pa = ao + m * am
            pb = bo + k * bk
            for _ in range(R):
                a0 = vload(A, pa)
                a1 = vload(A, pa + am)
                b0 = vload(B, pb)
                b1 = vload(B, pb + bk)
                b2 = vload(B, pb + 2 * bk)
                b3 = vload(B, pb + 3 * bk)
                x00 = vfma(a0, b0, x00)
                x01 = vfma(a0, b1, x01)
                x02 = vfma(a0, b2, x02)
                x03 = vfma(a0, b3, x03)
                x10 = vfma(a1, b0, x10)
                x11 = vfma(a1, b1, x11)
                x12 = vfma(a1, b2, x12)
                x13 = vfma(a1, b3, x13)
                pa += ar
                pb += br
            put(C, c0 + k * ck, x00, relu, Mk, dm)
            put(C, c0 + (k + 1) * ck, x01, relu, Mk, dm)
            put(C, c0 + (k + 2) * ck, x02, relu, Mk, dm)
            put(C, c0 + (k + 3) * ck, x03, relu, Mk, dm)
            put(C, c1 + k * ck, x10, relu, Mk, dm)
            put(C, c1 + (k + 1) * ck, x11, relu, Mk, dm)
            put(C, c1 + (k + 2) * ck, x12, relu, Mk, dm)
            put(C, c1 + (k + 3) * ck, x13, relu, Mk, dm)
            k += 4
        while k < K:
            if acc:
                x00 = vload(C, dl + c0 + k * ck)
                x10 = vload(C, dl + c1 + k * ck)
            else:
                x00 = vzero(C)
                x10 = x00
            pa = ao + m * am
            pb = bo + k * bk
            for _ in range(R):
                b0 = vload(B, pb)
                x00 = vfma(vload(A, pa), b0, x00)
                x10 = vfma(vload(A, pa + am), b0, x10)
                pa += ar
                pb += br
            put(C, c0 + k * ck, x00, relu, Mk, dm)
            put(C, c1 + k * ck, x10, relu, Mk, dm)
            k += 1
        m += 2
    if m < M:
        c0 = co + m * cm
        k = 0
        while k + 4 <= K:
            if acc:
                x00 = vload(C, dl + c0 + k * ck)
                x01 = vload(C, dl + c0 + (k + 1) * ck)
                x02 = vload(C, dl + c0 + (k + 2) * ck)
                x03 = vload(C, dl + c0 + (k + 3) * ck)
            else:
                x00 = vzero(C)
                x01 = x00
                x02 = x00
                x03 = x00
            pa = ao + m * am
            pb = bo + k * bk
            for _ in range(R):
                a0 = vload(A, pa)
                x00 = vfma(a0, vload(B, pb), x00)
                x01 = vfma(a0, vload(B, pb + bk), x01)
                x02 = vfma(a0, vload(B, pb + 2 * bk), x02)
                x03 = vfma(a0, vload(B, pb + 3 * bk), x03)
                pa += ar
                pb += br
            put(C, c0 + k * ck, x00, relu, Mk, dm)
            put(C, c0 + (k + 1) * ck, x01, relu, Mk, dm)
            put(C, c0 + (k + 2) * ck, x02, relu, Mk, dm)
            put(C, c0 + (k + 3) * ck, x03, relu, Mk, dm)
            k += 4
        while k < K:
            x00 = vload(C, dl + c0 + k * ck) if acc else vzero(C)
            pa = ao + m * am
            pb = bo + k * bk
            for _ in range(R):
                x00 = vfma(vload(A, pa), vload(B, pb), x00)
                pa += ar
                pb += br
            put(C, c0 + k * ck, x00, relu, Mk, dm)
            k += 1


@jit
def vcopy(src, so, dst, do, count):
    """``dst[do : do + count] = src[so : so + count]`` (``count`` a multiple of BL)."""
    for q in range(0, count, BL):
        vstore(dst, do + q, vload(src, so + q))


@jit
def vaxpy_rows(src, so, srs, dst, do, drs, rows, cols):
    """``dst[r, c] += src[r, c]`` for ``r < rows, c < cols`` (row strides ``srs, drs``)."""
    for r in range(rows):
        for c in range(cols):
            i = do + r * drs + c * BL
            vstore(dst, i, vadd(vload(dst, i), vload(src, so + r * srs + c * BL)))


@jit
def activate(code, gamma, K, ko, n, rs, cols):
    """In place ``K = h(S)`` over sources ``i < n`` (row stride ``rs``) and columns ``j < cols``;
    softmax normalised over the sources of each column."""
    if code == 2:
        for i in range(n):
            for c in range(cols):
                q = ko + i * rs + c * BL
                v = vload(K, q)
                vstore(K, q, vwhere_pos(v, v))
    elif code == 3:
        for i in range(n):
            for q in range(ko + i * rs, ko + i * rs + cols * BL):
                K[q] = math.exp(gamma * K[q])
    elif code == 4:
        for j in range(cols):
            q0 = ko + j * BL
            mx = vload(K, q0)
            for i in range(1, n):
                mx = vmax(vload(K, q0 + i * rs), mx)
            tot = vzero(K)
            for i in range(n):
                q = q0 + i * rs
                vstore(K, q, vsub(vload(K, q), mx))
                for p in range(q, q + BL):
                    K[p] = math.exp(K[p])
                tot = vadd(tot, vload(K, q))
            inv = vdiv(vsplat(K, 1.0), tot)
            for i in range(n):
                q = q0 + i * rs
                vstore(K, q, vmul(vload(K, q), inv))


@jit
def activate_back(code, gamma, K, ko, dK, do, n, rs, cols):
    """In place ``dK <- dS``, the score gradient, from the activated ``K`` (both ``(n, cols)`` with
    row stride ``rs``, at offsets ``ko`` and ``do``)."""
    if code == 2:
        for i in range(n):
            for c in range(cols):
                q = i * rs + c * BL
                vstore(dK, do + q, vwhere_pos(vload(K, ko + q), vload(dK, do + q)))
    elif code == 3:
        g = vsplat(K, gamma)
        for i in range(n):
            for c in range(cols):
                q = i * rs + c * BL
                vstore(dK, do + q, vmul(vmul(g, vload(K, ko + q)), vload(dK, do + q)))
    elif code == 4:
        for j in range(cols):
            dot = vzero(K)
            for i in range(n):
                q = i * rs + j * BL
                dot = vfma(vload(K, ko + q), vload(dK, do + q), dot)
            for i in range(n):
                q = i * rs + j * BL
                vstore(dK, do + q, vmul(vload(K, ko + q), vsub(vload(dK, do + q), dot)))


@jit
def seed_lanes(flat, s, wb, offs, L, H, D, inv_n):
    """``wb[q * BL + p] = flat[s, q]`` in every lane ``p``, the value matrices ``V`` scaled by ``inv_n``."""
    P = flat.shape[1]
    for q in range(P):
        w = flat[s, q]
        for p in range(BL):
            wb[q * BL + p] = w
    for l in range(L):
        for h in range(H):
            o = offs[l, h]
            for q in range(o * BL, (o + D * D) * BL):
                wb[q] = wb[q] * inv_n


@jit
def load_block(Z, s, b0, nb, Zs, D, N):
    """The ``nb <= BL`` prompts ``Z[s, b0 : b0 + nb]`` into the lanes of ``Zs`` (the rest zero).

    A full block is one gather per entry (lane ``p`` reads prompt ``b0 + p``: ``Z``'s strides);
    the scalar transposing copy it replaced took about an eighth of the kernel's time at d = 5,
    n = 20."""
    if nb == BL:
        isz = Z.itemsize
        base = (s * Z.strides[0] + b0 * Z.strides[1]) // isz
        ps, rs, cs = Z.strides[1] // isz, Z.strides[2] // isz, Z.strides[3] // isz
        for r in range(D):
            for c in range(N):
                vstore(Zs, (r * N + c) * BL, vgather(Z, base + r * rs + c * cs, ps))
        return
    for r in range(D):
        for c in range(N):
            q = (r * N + c) * BL
            for p in range(nb):
                Zs[q + p] = Z[s, b0 + p, r, c]
            for p in range(nb, BL):
                Zs[q + p] = 0.0


@jit
def forward_block(wb, Zs, Xb, Cr, Kk, Ww, out, codes, scales, offs, L, H, D, N):
    """Forward pass of one block whose input tokens are in ``Zs[:D * N * BL]``; ``wb`` the seed's
    weights in lanes (``V`` scaled by ``1/n``). Writes the tokens of every layer (``Zs``), the
    activations the backward pass reads (``Xb, Cr, Kk, Ww``) and ``out``, the lanes' last-layer
    entry ``[Z_L]_{D,N}`` (the prediction is ``-out``)."""
    n = N - 1
    DN, Dn, nN = D * N * BL, D * n * BL, n * N * BL
    rZ, rX = N * BL, n * BL
    # ---------------- forward, layers 0 .. L-2 (all columns)
    for l in range(L - 1):
        zo = l * DN
        zn = zo + DN
        for h in range(H):
            k = l * H + h
            code = codes[h]
            o = offs[l, h]
            xo, co_, ko = k * Dn, k * DN, k * nN
            if code == 0:  # linear attention: b = X (the sources themselves), c = Q Z
                barr, bo, brs = Zs, zo, rZ
                oc = o + D * D
            else:
                mm(wb, (o + D * D) * BL, D * BL, BL, Zs, zo, rZ, BL, Xb, xo, rX, BL, D, n, D, False)
                barr, bo, brs = Xb, xo, rX
                oc = o + 2 * D * D
            mm(wb, oc * BL, D * BL, BL, Zs, zo, rZ, BL, Cr, co_, rZ, BL, D, N, D, False)
            # S[i, j] = sum_r b[r, i] c[r, j]
            if code == 2:  # ReLU applied as the scores are stored
                mm(barr, bo, BL, brs, Cr, co_, rZ, BL, Kk, ko, rZ, BL, n, N, D, False, -1, True)
            else:
                mm(barr, bo, BL, brs, Cr, co_, rZ, BL, Kk, ko, rZ, BL, n, N, D, False)
                activate(code, scales[h], Kk, ko, n, rZ, N)
            # W = (V / n) X ; Z_{l+1} += W K
            mm(wb, o * BL, D * BL, BL, Zs, zo, rZ, BL, Ww, xo, rX, BL, D, n, D, False)
            mm(Ww, xo, rX, BL, Kk, ko, rZ, BL, Zs, zn, rZ, BL, D, N, n, True, zo if h == 0 else -1)
    # ---------------- forward, last layer: the query's label entry only
    l = L - 1
    zo = l * DN
    zq = zo + n * BL  # column n: the query
    for p in range(BL):
        out[p] = Zs[zo + (D - 1) * rZ + n * BL + p]
    for h in range(H):
        k = l * H + h
        code = codes[h]
        o = offs[l, h]
        xo, co_, ko = k * Dn, k * DN, k * nN
        if code == 0:
            barr, bo, brs = Zs, zo, rZ
            oc = o + D * D
        else:
            mm(wb, (o + D * D) * BL, D * BL, BL, Zs, zo, rZ, BL, Xb, xo, rX, BL, D, n, D, False)
            barr, bo, brs = Xb, xo, rX
            oc = o + 2 * D * D
        mm(wb, oc * BL, D * BL, BL, Zs, zq, rZ, BL, Cr, co_, rZ, BL, D, 1, D, False)  # c_q = C z_q
        if code == 2:  # s_i = b_i . c_q, activated as stored (ReLU) or after
            mm(barr, bo, BL, brs, Cr, co_, rZ, BL, Kk, ko, rZ, BL, n, 1, D, False, -1, True)
        else:
            mm(barr, bo, BL, brs, Cr, co_, rZ, BL, Kk, ko, rZ, BL, n, 1, D, False)
            activate(code, scales[h], Kk, ko, n, rZ, 1)
        # w_i = (V[D-1, :] / n) x_i ; out += sum_i w_i K_i
        mm(wb, (o + (D - 1) * D) * BL, 0, BL, Zs, zo, rZ, BL, Ww, xo, rX, BL, 1, n, D, False)
        mm(Ww, xo, 0, BL, Kk, ko, rZ, 0, out, 0, 0, 0, 1, 1, n, True)


@jit
def kernel(flat, Z, Y, codes, scales, offs, L, H, grad, loss):
    """Loss and gradient of seeds ``0 .. S-1`` (see landscape.engine.fused); writes ``grad, loss``."""
    S, B, D, N = Z.shape
    n = N - 1
    P = flat.shape[1]
    dt = flat.dtype
    inv_n = 1.0 / n
    inv_b = 1.0 / B
    nblocks = (B + BL - 1) // BL
    DN, Dn, nN = D * N * BL, D * n * BL, n * N * BL
    rZ, rX = N * BL, n * BL  # row strides of (D|n, N) and (D, n) matrices
    Zs = np.zeros(L * DN, dt)  # the tokens of every layer
    Xb = np.zeros(L * H * Dn, dt)  # b = B X (sources)
    Cr = np.zeros(L * H * DN, dt)  # c = C Z (receivers; last layer: query only)
    Kk = np.zeros(L * H * nN, dt)  # activated scores
    Ww = np.zeros(L * H * Dn, dt)  # W = (V / n) X
    G = np.zeros(DN, dt)
    G2 = np.zeros(DN, dt)
    dW = np.zeros(Dn, dt)
    dK = np.zeros(nN, dt)
    db = np.zeros(Dn, dt)
    dc = np.zeros(DN, dt)
    wb = np.zeros(P * BL, dt)  # the seed's weights, each in all lanes; V (P) scaled by 1/n
    gacc = np.zeros(P * BL, dt)  # per-lane gradient accumulators
    out = np.zeros(BL, dt)
    gout = np.zeros(BL, dt)
    for s in range(S):
        seed_lanes(flat, s, wb, offs, L, H, D, inv_n)
        gacc[:] = 0.0
        lsum = 0.0
        for blk in range(nblocks):
            b0 = blk * BL
            nb = min(BL, B - b0)
            load_block(Z, s, b0, nb, Zs, D, N)
            forward_block(wb, Zs, Xb, Cr, Kk, Ww, out, codes, scales, offs, L, H, D, N)
            l = L - 1
            zo = l * DN
            zq = zo + n * BL  # column n: the query
            # ---------------- loss and its derivative in the output
            for p in range(BL):
                res = -out[p] - Y[s, b0 + p] if p < nb else 0.0
                lsum += res * res
                gout[p] = -2.0 * inv_b * res  # d loss / d [Z_L]_{D,N}
            # ---------------- backward, last layer
            G[:] = 0.0
            for p in range(BL):
                G[(D - 1) * rZ + n * BL + p] = gout[p]
            need_dz = L > 1
            gv = vload(gout, 0)
            for h in range(H):
                k = l * H + h
                code = codes[h]
                o = offs[l, h]
                xo, co_, ko = k * Dn, k * DN, k * nN
                if code == 0:
                    barr, bo, brs = Zs, zo, rZ
                    oc = o + D * D
                else:
                    barr, bo, brs = Xb, xo, rX
                    oc = o + 2 * D * D
                for i in range(n):  # dw_i = g K_i, dK_i = g w_i
                    vstore(dW, i * BL, vmul(gv, vload(Kk, ko + i * rZ)))
                    vstore(dK, i * rZ, vmul(gv, vload(Ww, xo + i * BL)))
                vrow = o + (D - 1) * D
                # dV[D-1, r] += sum_i dw_i x_{r,i} ; dz_i += V[D-1, :]^T dw_i / n
                mm(dW, 0, 0, BL, Zs, zo, BL, rZ, gacc, vrow * BL, 0, BL, 1, D, n, True)
                if need_dz:
                    mm(wb, vrow * BL, BL, 0, dW, 0, 0, BL, G, 0, rZ, BL, D, n, 1, True)
                activate_back(code, scales[h], Kk, ko, dK, 0, n, rZ, 1)
                # db = c_q dS^T (D, n) ; dc_q = b dS (D, 1)
                mm(Cr, co_, rZ, 0, dK, 0, 0, rZ, db, 0, rX, BL, D, n, 1, False)
                mm(barr, bo, brs, BL, dK, 0, rZ, 0, dc, 0, rZ, 0, D, 1, n, False)
                if code == 0:
                    if need_dz:
                        vaxpy_rows(db, 0, rX, G, 0, rZ, D, n)
                else:
                    mm(db, 0, rX, BL, Zs, zo, BL, rZ, gacc, (o + D * D) * BL, D * BL, BL, D, D, n, True)
                    if need_dz:
                        mm(wb, (o + D * D) * BL, BL, D * BL, db, 0, rX, BL, G, 0, rZ, BL, D, n, D, True)
                # dC += dc_q z_q^T ; dz_q += C^T dc_q
                mm(dc, 0, rZ, 0, Zs, zq, 0, rZ, gacc, oc * BL, D * BL, BL, D, D, 1, True)
                if need_dz:
                    mm(wb, oc * BL, BL, D * BL, dc, 0, rZ, 0, G, n * BL, rZ, 0, D, 1, D, True)
            # ---------------- backward, layers L-2 .. 0
            for l in range(L - 2, -1, -1):
                zo = l * DN
                need_dz = l > 0
                if need_dz:
                    vcopy(G, 0, G2, 0, DN)
                for h in range(H):
                    k = l * H + h
                    code = codes[h]
                    o = offs[l, h]
                    xo, co_, ko = k * Dn, k * DN, k * nN
                    if code == 0:
                        barr, bo, brs = Zs, zo, rZ
                        oc = o + D * D
                    else:
                        barr, bo, brs = Xb, xo, rX
                        oc = o + 2 * D * D
                    # dW = G K^T (D, n) ; dK = W^T G (n, N)
                    mm(G, 0, rZ, BL, Kk, ko, BL, rZ, dW, 0, rX, BL, D, n, N, False)
                    if code == 2:  # dS = [K > 0] dK as it is stored
                        mm(Ww, xo, BL, rX, G, 0, rZ, BL, dK, 0, rZ, BL, n, N, D, False, -1, False, Kk, ko)
                    else:
                        mm(Ww, xo, BL, rX, G, 0, rZ, BL, dK, 0, rZ, BL, n, N, D, False)
                    # dV += dW X^T / n (the 1/n at the end) ; dX += (V / n)^T dW
                    mm(dW, 0, rX, BL, Zs, zo, BL, rZ, gacc, o * BL, D * BL, BL, D, D, n, True)
                    if need_dz:
                        mm(wb, o * BL, BL, D * BL, dW, 0, rX, BL, G2, 0, rZ, BL, D, n, D, True)
                    if code != 2:
                        activate_back(code, scales[h], Kk, ko, dK, 0, n, rZ, N)
                    # db = c dS^T (D, n) ; dc = b dS (D, N)
                    mm(Cr, co_, rZ, BL, dK, 0, BL, rZ, db, 0, rX, BL, D, n, N, False)
                    mm(barr, bo, brs, BL, dK, 0, rZ, BL, dc, 0, rZ, BL, D, N, n, False)
                    if code == 0:
                        if need_dz:
                            vaxpy_rows(db, 0, rX, G2, 0, rZ, D, n)
                    else:
                        mm(db, 0, rX, BL, Zs, zo, BL, rZ, gacc, (o + D * D) * BL, D * BL, BL, D, D, n, True)
                        if need_dz:
                            mm(wb, (o + D * D) * BL, BL, D * BL, db, 0, rX, BL, G2, 0, rZ, BL, D, n, D, True)
                    # dC += dc Z^T ; dZ += C^T dc
                    mm(dc, 0, rZ, BL, Zs, zo, BL, rZ, gacc, oc * BL, D * BL, BL, D, D, N, True)
                    if need_dz:
                        mm(wb, oc * BL, BL, D * BL, dc, 0, rZ, BL, G2, 0, rZ, BL, D, N, D, True)
                if need_dz:
                    G, G2 = G2, G
        for q in range(P):
            acc = 0.0
            for p in range(BL):
                acc += gacc[q * BL + p]
            grad[s, q] = acc
        for l in range(L):
            for h in range(H):
                o = offs[l, h]
                for q in range(o, o + D * D):
                    grad[s, q] = grad[s, q] * inv_n  # dV = d(V / n) / n
        loss[s] = lsum * inv_b


@jit
def predict_kernel(flat, Z, codes, scales, offs, L, H, pred):
    """Predictions ``pred[s, b] = TF_s(Z[s, b])`` of seeds ``0 .. S-1`` by the forward pass alone;
    ``Z`` is ``(S, B, D, N)`` or ``(1, B, D, N)`` (prompts shared by every seed)."""
    S, P = flat.shape
    shared = Z.shape[0] == 1
    B, D, N = Z.shape[1], Z.shape[2], Z.shape[3]
    n = N - 1
    dt = flat.dtype
    inv_n = 1.0 / n
    nblocks = (B + BL - 1) // BL
    DN, Dn, nN = D * N * BL, D * n * BL, n * N * BL
    Zs = np.zeros(L * DN, dt)
    Xb = np.zeros(L * H * Dn, dt)
    Cr = np.zeros(L * H * DN, dt)
    Kk = np.zeros(L * H * nN, dt)
    Ww = np.zeros(L * H * Dn, dt)
    wb = np.zeros(P * BL, dt)
    out = np.zeros(BL, dt)
    for s in range(S):
        seed_lanes(flat, s, wb, offs, L, H, D, inv_n)
        zs = 0 if shared else s
        for blk in range(nblocks):
            b0 = blk * BL
            nb = min(BL, B - b0)
            load_block(Z, zs, b0, nb, Zs, D, N)
            forward_block(wb, Zs, Xb, Cr, Kk, Ww, out, codes, scales, offs, L, H, D, N)
            for p in range(nb):
                pred[s, b0 + p] = -out[p]


exact = numba.njit(cache=True, nogil=True, error_model="numpy")  # no fast-math: every product and sum rounded


@exact
def linear_prompts(X, w, eps, noise, y, Z):
    """Linear-regression labels and the embedding, in one pass over ``X (B, d, m)``:
    ``y[b] = sum_k w[b, k] X[b, k]`` (products rounded and added in increasing ``k``, unfused: the
    bits of :func:`landscape.core.tasks.linear_labels`), plus ``eps * noise`` when ``noise > 0``
    (``eps`` is overwritten by the scaled noise, as ``eps.mul_(noise)`` does), and
    ``Z[b] = [X[b]; y[b] with its last entry 0]`` (:func:`landscape.core.tasks.embed`)."""
    B, d, m = X.shape
    for b in range(B):
        for j in range(m):
            y[b, j] = X[b, 0, j] * w[b, 0]
        for k in range(1, d):
            wk = w[b, k]
            for j in range(m):
                y[b, j] = y[b, j] + X[b, k, j] * wk
        if noise > 0:
            for j in range(m):
                e = eps[b, j] * noise
                eps[b, j] = e
                y[b, j] = y[b, j] + e
        for k in range(d):
            for j in range(m):
                Z[b, k, j] = X[b, k, j]
        for j in range(m - 1):
            Z[b, d, j] = y[b, j]
        Z[b, d, m - 1] = 0.0
