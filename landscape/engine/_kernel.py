"""The numba kernel of :mod:`landscape.engine.fused` (imported only when numba is installed).

Module-level functions, so that numba's on-disk cache (``cache=True``) finds them again in the
next process: the kernel is compiled once per dtype and machine, not once per run.
"""

import math

import numba
import numpy as np

BL = 64  # = landscape.engine.fused.BLOCK (see there for the measurement)
jit = numba.njit(cache=True, fastmath={"contract"}, nogil=True)



@jit
def proj(flat, s, off, D, X, out, cols):
    # out[a, j, :] = sum_r W[a, r] X[r, j, :] for j < cols, W = flat[s, off:off+D*D] (D, D)
    for a in range(D):
        for j in range(cols):
            for p in range(BL):
                out[a, j, p] = 0.0
        for r in range(D):
            w = flat[s, off + a * D + r]
            if w != 0.0:
                for j in range(cols):
                    for p in range(BL):
                        out[a, j, p] += w * X[r, j, p]

@jit
def proj_t_add(flat, s, off, D, dY, out, cols):
    # out[r, j, :] += sum_a W[a, r] dY[a, j, :]
    for a in range(D):
        for r in range(D):
            w = flat[s, off + a * D + r]
            if w != 0.0:
                for j in range(cols):
                    for p in range(BL):
                        out[r, j, p] += w * dY[a, j, p]

@jit
def outer_acc(gacc, off, D, dY, X, cols):
    # gacc[off + a*D + r, :] += sum_j dY[a, j, :] X[r, j, :]
    for a in range(D):
        for r in range(D):
            k = off + a * D + r
            for j in range(cols):
                for p in range(BL):
                    gacc[k, p] += dY[a, j, p] * X[r, j, p]

@jit
def activate(code, gamma, Sc, n, cols):
    # in place: K = h(S) over (n, cols); softmax normalised over the n sources per column
    if code == 2:
        for i in range(n):
            for j in range(cols):
                for p in range(BL):
                    v = Sc[i, j, p]
                    Sc[i, j, p] = v if v > 0.0 else 0.0
    elif code == 3:
        for i in range(n):
            for j in range(cols):
                for p in range(BL):
                    Sc[i, j, p] = math.exp(gamma * Sc[i, j, p])
    elif code == 4:
        for j in range(cols):
            mx = np.empty(BL, Sc.dtype)
            for p in range(BL):
                mx[p] = Sc[0, j, p]
            for i in range(1, n):
                for p in range(BL):
                    v = Sc[i, j, p]
                    mx[p] = v if v > mx[p] else mx[p]
            tot = np.zeros(BL, Sc.dtype)
            for i in range(n):
                for p in range(BL):
                    e = math.exp(Sc[i, j, p] - mx[p])
                    Sc[i, j, p] = e
                    tot[p] += e
            for i in range(n):
                for p in range(BL):
                    Sc[i, j, p] = Sc[i, j, p] / tot[p]

@jit
def activate_back(code, gamma, K, dK, n, cols):
    # in place: dK <- dS = h'(S)^T dK
    if code == 2:
        for i in range(n):
            for j in range(cols):
                for p in range(BL):
                    if not K[i, j, p] > 0.0:
                        dK[i, j, p] = 0.0
    elif code == 3:
        for i in range(n):
            for j in range(cols):
                for p in range(BL):
                    dK[i, j, p] = gamma * K[i, j, p] * dK[i, j, p]
    elif code == 4:
        for j in range(cols):
            dot = np.zeros(BL, K.dtype)
            for i in range(n):
                for p in range(BL):
                    dot[p] += K[i, j, p] * dK[i, j, p]
            for i in range(n):
                for p in range(BL):
                    dK[i, j, p] = K[i, j, p] * (dK[i, j, p] - dot[p])

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
    for s in range(S):
        Zst = np.zeros((L, D, N, BL), dt)
        Xb = np.zeros((L * H, D, n, BL), dt)   # b = B X (sources)
        Cr = np.zeros((L * H, D, N, BL), dt)   # c = C Z (receivers; last layer: query only)
        Kk = np.zeros((L * H, n, N, BL), dt)   # activated scores
        Ww = np.zeros((L * H, D, n, BL), dt)   # W = V X
        G = np.zeros((D, N, BL), dt)
        G2 = np.zeros((D, N, BL), dt)
        dW = np.zeros((D, n, BL), dt)
        dK = np.zeros((n, N, BL), dt)
        db = np.zeros((D, n, BL), dt)
        dc = np.zeros((D, N, BL), dt)
        gacc = np.zeros((P, BL), dt)
        out = np.zeros(BL, dt)
        wgt = np.zeros(BL, dt)
        lsum = 0.0
        for blk in range(nblocks):
            b0 = blk * BL
            nb = min(BL, B - b0)
            for p in range(BL):
                wgt[p] = 1.0 if p < nb else 0.0
            Z0 = Zst[0]
            for r in range(D):
                for c in range(N):
                    for p in range(BL):
                        Z0[r, c, p] = Z[s, b0 + p, r, c] if p < nb else 0.0
            # ---------------- forward, layers 0 .. L-2 (all columns)
            for l in range(L - 1):
                Zl = Zst[l]
                Zn = Zst[l + 1]
                for r in range(D):
                    for c in range(N):
                        for p in range(BL):
                            Zn[r, c, p] = Zl[r, c, p]
                for h in range(H):
                    k = l * H + h
                    code = codes[h]
                    o = offs[l, h]
                    bk, ck, Kh, Wh = Xb[k], Cr[k], Kk[k], Ww[k]
                    if code == 0:
                        for r in range(D):
                            for i in range(n):
                                for p in range(BL):
                                    bk[r, i, p] = Zl[r, i, p]
                        proj(flat, s, o + D * D, D, Zl, ck, N)
                    else:
                        proj(flat, s, o + D * D, D, Zl, bk, n)
                        proj(flat, s, o + 2 * D * D, D, Zl, ck, N)
                    for i in range(n):
                        for j in range(N):
                            for p in range(BL):
                                Kh[i, j, p] = bk[0, i, p] * ck[0, j, p]
                        r = 1
                        while r + 1 < D:  # two terms per pass: half the loads and stores of K
                            for j in range(N):
                                for p in range(BL):
                                    Kh[i, j, p] += bk[r, i, p] * ck[r, j, p] + bk[r + 1, i, p] * ck[r + 1, j, p]
                            r += 2
                        if r < D:
                            for j in range(N):
                                for p in range(BL):
                                    Kh[i, j, p] += bk[r, i, p] * ck[r, j, p]
                    activate(code, scales[h], Kh, n, N)
                    proj(flat, s, o, D, Zl, Wh, n)
                    for a in range(D):
                        for i in range(n):
                            for p in range(BL):
                                Wh[a, i, p] *= inv_n  # W = V X / n: the 1/n on the small factor
                        i = 0
                        while i + 1 < n:
                            for j in range(N):
                                for p in range(BL):
                                    Zn[a, j, p] += Wh[a, i, p] * Kh[i, j, p] + Wh[a, i + 1, p] * Kh[i + 1, j, p]
                            i += 2
                        if i < n:
                            for j in range(N):
                                for p in range(BL):
                                    Zn[a, j, p] += Wh[a, i, p] * Kh[i, j, p]
            # ---------------- forward, last layer: the query's label entry only
            l = L - 1
            Zl = Zst[l]
            for p in range(BL):
                out[p] = Zl[D - 1, n, p]
            for h in range(H):
                k = l * H + h
                code = codes[h]
                o = offs[l, h]
                bk, ck, Kh, Wh = Xb[k], Cr[k], Kk[k], Ww[k]
                if code == 0:
                    for r in range(D):
                        for i in range(n):
                            for p in range(BL):
                                bk[r, i, p] = Zl[r, i, p]
                    oc = o + D * D
                else:
                    proj(flat, s, o + D * D, D, Zl, bk, n)
                    oc = o + 2 * D * D
                for a in range(D):  # c_q = C z_q
                    for p in range(BL):
                        ck[a, 0, p] = 0.0
                    for r in range(D):
                        w = flat[s, oc + a * D + r]
                        for p in range(BL):
                            ck[a, 0, p] += w * Zl[r, n, p]
                for i in range(n):
                    for p in range(BL):
                        Kh[i, 0, p] = 0.0
                    for r in range(D):
                        for p in range(BL):
                            Kh[i, 0, p] += bk[r, i, p] * ck[r, 0, p]
                activate(code, scales[h], Kh, n, 1)
                for i in range(n):  # w_i = V[D-1, :] x_i
                    for p in range(BL):
                        Wh[0, i, p] = 0.0
                    for r in range(D):
                        w = flat[s, o + (D - 1) * D + r]
                        for p in range(BL):
                            Wh[0, i, p] += w * Zl[r, i, p]
                for i in range(n):
                    for p in range(BL):
                        out[p] += inv_n * Wh[0, i, p] * Kh[i, 0, p]
            # ---------------- loss and its derivative in the output
            for p in range(BL):
                res = (-out[p] - Y[s, b0 + p]) * wgt[p] if p < nb else 0.0
                lsum += res * res
                out[p] = -2.0 * inv_b * res  # d loss / d [Z_L]_{D,N}
            # ---------------- backward, last layer
            for r in range(D):
                for c in range(N):
                    for p in range(BL):
                        G[r, c, p] = 0.0
            for p in range(BL):
                G[D - 1, n, p] = out[p]
            for h in range(H):
                k = l * H + h
                code = codes[h]
                o = offs[l, h]
                bk, ck, Kh, Wh = Xb[k], Cr[k], Kk[k], Ww[k]
                for i in range(n):
                    for p in range(BL):
                        g = inv_n * out[p]
                        dW[0, i, p] = g * Kh[i, 0, p]
                        dK[i, 0, p] = g * Wh[0, i, p]
                vrow = o + (D - 1) * D
                for r in range(D):  # dV[D-1, r] and dX += V[D-1, r] dW
                    w = flat[s, vrow + r]
                    for i in range(n):
                        for p in range(BL):
                            gacc[vrow + r, p] += dW[0, i, p] * Zl[r, i, p]
                            G[r, i, p] += w * dW[0, i, p]
                activate_back(code, scales[h], Kh, dK, n, 1)
                for r in range(D):  # db = c_q dS^T, dc_q = b dS
                    for p in range(BL):
                        dc[r, 0, p] = 0.0
                    for i in range(n):
                        for p in range(BL):
                            db[r, i, p] = ck[r, 0, p] * dK[i, 0, p]
                            dc[r, 0, p] += bk[r, i, p] * dK[i, 0, p]
                if code == 0:
                    oc = o + D * D
                    for r in range(D):
                        for i in range(n):
                            for p in range(BL):
                                G[r, i, p] += db[r, i, p]
                else:
                    oc = o + 2 * D * D
                    outer_acc(gacc, o + D * D, D, db, Zl, n)
                    proj_t_add(flat, s, o + D * D, D, db, G, n)
                for a in range(D):  # dC = dc_q z_q^T, dz_q += C^T dc_q
                    for r in range(D):
                        w = flat[s, oc + a * D + r]
                        for p in range(BL):
                            gacc[oc + a * D + r, p] += dc[a, 0, p] * Zl[r, n, p]
                            G[r, n, p] += w * dc[a, 0, p]
            # ---------------- backward, layers L-2 .. 0
            for l in range(L - 2, -1, -1):
                Zl = Zst[l]
                need_dz = l > 0
                if need_dz:
                    for r in range(D):
                        for c in range(N):
                            for p in range(BL):
                                G2[r, c, p] = G[r, c, p]
                for h in range(H):
                    k = l * H + h
                    code = codes[h]
                    o = offs[l, h]
                    bk, ck, Kh, Wh = Xb[k], Cr[k], Kk[k], Ww[k]
                    # dW = (G/n) K^T, dK = W^T (G/n) (W holds the 1/n already); reductions two
                    # terms per pass
                    for a in range(D):
                        for i in range(n):
                            for p in range(BL):
                                dW[a, i, p] = 0.0
                            j = 0
                            while j + 1 < N:
                                for p in range(BL):
                                    dW[a, i, p] += G[a, j, p] * Kh[i, j, p] + G[a, j + 1, p] * Kh[i, j + 1, p]
                                j += 2
                            if j < N:
                                for p in range(BL):
                                    dW[a, i, p] += G[a, j, p] * Kh[i, j, p]
                            for p in range(BL):
                                dW[a, i, p] *= inv_n
                    for i in range(n):
                        for j in range(N):
                            for p in range(BL):
                                dK[i, j, p] = Wh[0, i, p] * G[0, j, p]
                        a = 1
                        while a + 1 < D:
                            for j in range(N):
                                for p in range(BL):
                                    dK[i, j, p] += Wh[a, i, p] * G[a, j, p] + Wh[a + 1, i, p] * G[a + 1, j, p]
                            a += 2
                        if a < D:
                            for j in range(N):
                                for p in range(BL):
                                    dK[i, j, p] += Wh[a, i, p] * G[a, j, p]
                    outer_acc(gacc, o, D, dW, Zl, n)
                    if need_dz:
                        proj_t_add(flat, s, o, D, dW, G2, n)
                    activate_back(code, scales[h], Kh, dK, n, N)
                    # db = c dS^T (D, n), dc = b dS (D, N)
                    for r in range(D):
                        for i in range(n):
                            for p in range(BL):
                                db[r, i, p] = 0.0
                            j = 0
                            while j + 1 < N:
                                for p in range(BL):
                                    db[r, i, p] += ck[r, j, p] * dK[i, j, p] + ck[r, j + 1, p] * dK[i, j + 1, p]
                                j += 2
                            if j < N:
                                for p in range(BL):
                                    db[r, i, p] += ck[r, j, p] * dK[i, j, p]
                        for j in range(N):
                            for p in range(BL):
                                dc[r, j, p] = 0.0
                        i = 0
                        while i + 1 < n:
                            for j in range(N):
                                for p in range(BL):
                                    dc[r, j, p] += bk[r, i, p] * dK[i, j, p] + bk[r, i + 1, p] * dK[i + 1, j, p]
                            i += 2
                        if i < n:
                            for j in range(N):
                                for p in range(BL):
                                    dc[r, j, p] += bk[r, i, p] * dK[i, j, p]
                    if code == 0:
                        oc = o + D * D
                        if need_dz:
                            for r in range(D):
                                for i in range(n):
                                    for p in range(BL):
                                        G2[r, i, p] += db[r, i, p]
                    else:
                        oc = o + 2 * D * D
                        outer_acc(gacc, o + D * D, D, db, Zl, n)
                        if need_dz:
                            proj_t_add(flat, s, o + D * D, D, db, G2, n)
                    outer_acc(gacc, oc, D, dc, Zl, N)
                    if need_dz:
                        proj_t_add(flat, s, oc, D, dc, G2, N)
                if need_dz:
                    for r in range(D):
                        for c in range(N):
                            for p in range(BL):
                                G[r, c, p] = G2[r, c, p]
        for q in range(P):
            acc = 0.0
            for p in range(BL):
                acc += gacc[q, p]
            grad[s, q] = acc
        loss[s] = lsum * inv_b

