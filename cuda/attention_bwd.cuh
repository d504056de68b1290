/* attention_bwd.cuh — the backward kernels of attention.cu's flash attention: D = dO . O per row,
 * dK/dV per key block, dQ per query tile (deterministic: no atomics, every sum in a fixed order).
 * attention.cu launches them; kept apart so that each file reads as one pass. */
#pragma once
#include "attention_mma.cuh"

namespace llmc_attn {

/* D[b,h,t] = sum_d dO[b,t,h,d] * O[b,t,h,d]; HS/8 threads per row, 16 bytes each. */
template <int HS>
__global__ void rowdot_kernel(float *__restrict__ D, const bf16 *__restrict__ dout, const bf16 *__restrict__ out, int B,
                              int T, int NH) {
    constexpr int TPR = HS / 8;
    const long n = ((long)blockIdx.x * blockDim.x + threadIdx.x) / TPR; /* row (b,t,h) */
    const int part = threadIdx.x % TPR;
    const long N = (long)B * T * NH;
    float acc = 0.f;
    if (n < N) {
        const int4 u = *reinterpret_cast<const int4 *>(dout + n * HS + part * 8);
        const int4 v = *reinterpret_cast<const int4 *>(out + n * HS + part * 8);
        const __nv_bfloat162 *a = reinterpret_cast<const __nv_bfloat162 *>(&u);
        const __nv_bfloat162 *c = reinterpret_cast<const __nv_bfloat162 *>(&v);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 x = __bfloat1622float2(a[i]), y = __bfloat1622float2(c[i]);
            acc = fmaf(x.x, y.x, acc);
            acc = fmaf(x.y, y.y, acc);
        }
    }
#pragma unroll
    for (int o = TPR / 2; o > 0; o >>= 1)
        acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (n < N && part == 0) {
        const int h = (int)(n % NH);
        const long bt = n / NH;
        const int t = (int)(bt % T), b = (int)(bt / T);
        D[((long)b * NH + h) * T + t] = acc;
    }
}

/* dK, dV for one block of 64*MK keys (4 warps x 16*MK keys), looping over query tiles of BR rows.
 * REGS: keep the warp's K, V fragments in registers instead of re-reading shared memory. */
template <int HS, class TL>
__global__ void __launch_bounds__(TL::NW * 32, TL::MINB)
    dkdv_kernel(bf16 *__restrict__ dqkv, const bf16 *__restrict__ dout, const bf16 *__restrict__ qkv,
                const float *__restrict__ lse, const float *__restrict__ Dv, int B, int T, int NH, float sl2,
                float scale) {
    constexpr int MK = TL::MK, BR = TL::BR, NW = TL::NW;
    constexpr bool REGS = TL::REGS;
    constexpr int WK = 16 * MK, BC = NW * WK, LD = HS + kPad, NT = NW * 32;
    constexpr int RM = REGS ? MK : 1, RK = REGS ? HS / 16 : 1;
    static_assert(BR % 16 == 0 && BR <= 64 && BC % BR == 0 && NT >= 128, "query tile must divide the key block");
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sK = reinterpret_cast<bf16 *>(smem);
    bf16 *sV = sK + BC * LD;
    bf16 *sQ = sV + BC * LD;                                 /* 2 buffers */
    bf16 *sO = sQ + 2 * BR * LD;                             /* dO, 2 buffers */
    float *sL = reinterpret_cast<float *>(sO + 2 * BR * LD); /* lse, 2 buffers */
    float *sD = sL + 2 * BR;                                 /* D, 2 buffers */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int k0 = blockIdx.x * BC; /* block 0 has the most query tiles: it starts first */
    const int wk = k0 + warp * WK;
    const int C = NH * HS;
    const long rs = 3L * C;

    for (int bh = blockIdx.y; bh < B * NH; bh += gridDim.y) {
        const int b = bh / NH, h = bh - b * NH;
        const bf16 *gQ = qkv + (long)b * T * rs + (long)h * HS;
        const bf16 *gK = gQ + C, *gV = gQ + 2 * C;
        const bf16 *gO = dout + (long)b * T * C + (long)h * HS;
        const float *gL = lse + (long)bh * T, *gD = Dv + (long)bh * T;
        const int nqt = (T - k0 + BR - 1) / BR;

        auto load_q = [&](int i, int buf) {
            const int q = k0 + i * BR;
            load_rows<BR, HS, NT>(sQ + buf * BR * LD, gQ + q * rs, rs, T - q, tid);
            load_rows<BR, HS, NT>(sO + buf * BR * LD, gO + (long)q * C, C, T - q, tid);
            if (tid < BR) {
                const bool ok = q + tid < T;
                cp_async4(sL + buf * BR + tid, gL + (ok ? q + tid : 0), ok);
            } else if (tid >= 64 && tid < 64 + BR) {
                const int r = tid - 64;
                const bool ok = q + r < T;
                cp_async4(sD + buf * BR + r, gD + (ok ? q + r : 0), ok);
            }
        };
        load_rows<BC, HS, NT>(sK, gK + k0 * rs, rs, T - k0, tid);
        load_rows<BC, HS, NT>(sV, gV + k0 * rs, rs, T - k0, tid);
        load_q(0, 0);
        cp_commit();

        float dk[MK][HS / 8][4], dv[MK][HS / 8][4];
#pragma unroll
        for (int mk = 0; mk < MK; ++mk) {
            zero_acc(dk[mk]);
            zero_acc(dv[mk]);
        }
        uint32_t kf[RM][RK][4], vf[RM][RK][4];

        for (int i = 0; i < nqt; ++i) {
            const int buf = i & 1, q0 = k0 + i * BR;
            if (i + 1 < nqt) {
                load_q(i + 1, buf ^ 1);
                cp_commit();
                cp_wait<1>();
            } else {
                cp_wait<0>();
            }
            __syncthreads();
            if (REGS && i == 0) {
#pragma unroll
                for (int mk = 0; mk < RM; ++mk)
#pragma unroll
                    for (int kk = 0; kk < RK; ++kk) {
                        ldsm_x4(kf[mk][kk], frag_a<LD>(sK, warp * WK + mk * 16, kk * 16, lane));
                        ldsm_x4(vf[mk][kk], frag_a<LD>(sV, warp * WK + mk * 16, kk * 16, lane));
                    }
            }
            const bf16 *cQ = sQ + buf * BR * LD, *cO = sO + buf * BR * LD;
            const float *cL = sL + buf * BR, *cD = sD + buf * BR;
            if (q0 + BR - 1 >= wk) { /* else no query of this tile sees this warp's keys */
                float s[MK][BR / 8][4], dp[MK][BR / 8][4];
#pragma unroll
                for (int mk = 0; mk < MK; ++mk) {
                    zero_acc(s[mk]);
                    zero_acc(dp[mk]);
                }
                /* S^T = K Q^T and dP^T = V dO^T (rows: this warp's keys, cols: the tile's queries) */
#pragma unroll
                for (int kk = 0; kk < HS / 16; ++kk) {
                    uint32_t ka[MK][4], va[MK][4];
#pragma unroll
                    for (int mk = 0; mk < MK; ++mk) {
                        if constexpr (REGS) {
#pragma unroll
                            for (int e = 0; e < 4; ++e) {
                                ka[mk][e] = kf[REGS ? mk : 0][REGS ? kk : 0][e];
                                va[mk][e] = vf[REGS ? mk : 0][REGS ? kk : 0][e];
                            }
                        } else {
                            ldsm_x4(ka[mk], frag_a<LD>(sK, warp * WK + mk * 16, kk * 16, lane));
                            ldsm_x4(va[mk], frag_a<LD>(sV, warp * WK + mk * 16, kk * 16, lane));
                        }
                    }
#pragma unroll
                    for (int np = 0; np < BR / 16; ++np) {
                        uint32_t bb[4];
                        ldsm_x4(bb, frag_b_nk<LD>(cQ, np * 16, kk * 16, lane));
#pragma unroll
                        for (int mk = 0; mk < MK; ++mk) {
                            mma(s[mk][2 * np], ka[mk], bb[0], bb[1]);
                            mma(s[mk][2 * np + 1], ka[mk], bb[2], bb[3]);
                        }
                        ldsm_x4(bb, frag_b_nk<LD>(cO, np * 16, kk * 16, lane));
#pragma unroll
                        for (int mk = 0; mk < MK; ++mk) {
                            mma(dp[mk][2 * np], va[mk], bb[0], bb[1]);
                            mma(dp[mk][2 * np + 1], va[mk], bb[2], bb[3]);
                        }
                    }
                }
                /* P^T from lse, dS^T = P^T (dP^T - D); zero where the key is after the query or the row is past T */
                const bool edge = (q0 < wk + WK - 1) || (q0 + BR > T);
#pragma unroll
                for (int mk = 0; mk < MK; ++mk)
#pragma unroll
                    for (int n = 0; n < BR / 8; ++n)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            const int qc = n * 8 + 2 * t4 + (e & 1);
                            float p = ex2(fmaf(s[mk][n][e], sl2, -cL[qc] * kLog2e));
                            if (edge) {
                                const int q = q0 + qc, k = wk + mk * 16 + g + (e >> 1) * 8;
                                if (q < k || q >= T) p = 0.f;
                            }
                            s[mk][n][e] = p;
                            dp[mk][n][e] = p * (dp[mk][n][e] - cD[qc]);
                        }
                        /* dV += P^T dO,  dK += dS^T Q */
#pragma unroll
                for (int kk = 0; kk < BR / 16; ++kk) {
                    uint32_t pa[MK][4], da[MK][4];
#pragma unroll
                    for (int mk = 0; mk < MK; ++mk) {
                        acc_to_a(pa[mk], s[mk][2 * kk], s[mk][2 * kk + 1]);
                        acc_to_a(da[mk], dp[mk][2 * kk], dp[mk][2 * kk + 1]);
                    }
#pragma unroll
                    for (int np = 0; np < HS / 16; ++np) {
                        uint32_t bb[4];
                        ldsm_x4_t(bb, frag_b_kn<LD>(cO, kk * 16, np * 16, lane));
#pragma unroll
                        for (int mk = 0; mk < MK; ++mk) {
                            mma(dv[mk][2 * np], pa[mk], bb[0], bb[1]);
                            mma(dv[mk][2 * np + 1], pa[mk], bb[2], bb[3]);
                        }
                        ldsm_x4_t(bb, frag_b_kn<LD>(cQ, kk * 16, np * 16, lane));
#pragma unroll
                        for (int mk = 0; mk < MK; ++mk) {
                            mma(dk[mk][2 * np], da[mk], bb[0], bb[1]);
                            mma(dk[mk][2 * np + 1], da[mk], bb[2], bb[3]);
                        }
                    }
                }
            }
            __syncthreads();
        }
        /* each warp only ever read its own rows of sK/sV: reuse them for staging */
        bf16 *stK = sK + warp * WK * LD, *stV = sV + warp * WK * LD;
#pragma unroll
        for (int mk = 0; mk < MK; ++mk) {
            stage_acc<HS>(stK + mk * 16 * LD, dk[mk], scale, scale, lane);
            stage_acc<HS>(stV + mk * 16 * LD, dv[mk], 1.f, 1.f, lane);
        }
        __syncwarp();
        bf16 *gdK = dqkv + ((long)b * T + wk) * rs + C + (long)h * HS;
        store_rows<WK, HS>(gdK, rs, stK, T - wk, lane);
        store_rows<WK, HS>(gdK + C, rs, stV, T - wk, lane);
        __syncthreads();
    }
}

/* dQ for one tile of 64*MT queries (4 warps x 16*MT rows), looping over key tiles of BC.
 * REGS: keep the warp's Q, dO fragments in registers. */
template <int HS, class TL>
__global__ void __launch_bounds__(TL::NW * 32, TL::MINB)
    dq_kernel(bf16 *__restrict__ dqkv, const bf16 *__restrict__ dout, const bf16 *__restrict__ qkv,
              const float *__restrict__ lse, const float *__restrict__ Dv, int B, int T, int NH, float sl2,
              float scale) {
    constexpr int MT = TL::MT, BC = TL::BC, NW = TL::NW;
    constexpr bool REGS = TL::REGS;
    constexpr int WR = 16 * MT, BR = NW * WR, LD = HS + kPad, NT = NW * 32;
    constexpr int RM = REGS ? MT : 1, RK = REGS ? HS / 16 : 1;
    static_assert(BC % 16 == 0, "key tile");
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = reinterpret_cast<bf16 *>(smem);
    bf16 *sO = sQ + BR * LD;
    bf16 *sK = sO + BR * LD;     /* 2 buffers */
    bf16 *sV = sK + 2 * BC * LD; /* 2 buffers */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BR;
    const int wq = q0 + warp * WR;
    const int C = NH * HS;
    const long rs = 3L * C;

    for (int bh = blockIdx.y; bh < B * NH; bh += gridDim.y) {
        const int b = bh / NH, h = bh - b * NH;
        const bf16 *gQ = qkv + (long)b * T * rs + (long)h * HS;
        const bf16 *gK = gQ + C, *gV = gQ + 2 * C;
        const bf16 *gO = dout + (long)b * T * C + (long)h * HS;
        const int nkt = (min(q0 + BR, T) - 1) / BC + 1;

        load_rows<BR, HS, NT>(sQ, gQ + q0 * rs, rs, T - q0, tid);
        load_rows<BR, HS, NT>(sO, gO + (long)q0 * C, C, T - q0, tid);
        load_rows<BC, HS, NT>(sK, gK, rs, T, tid);
        load_rows<BC, HS, NT>(sV, gV, rs, T, tid);
        cp_commit();
        float L[MT][2], Dr[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int r = wq + mt * 16 + g + hh * 8;
                L[mt][hh] = r < T ? lse[(long)bh * T + r] * kLog2e : 0.f;
                Dr[mt][hh] = r < T ? Dv[(long)bh * T + r] : 0.f;
            }

        float dq[MT][HS / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
            zero_acc(dq[mt]);
        uint32_t qf[RM][RK][4], of[RM][RK][4];

        for (int j = 0; j < nkt; ++j) {
            if (j + 1 < nkt) {
                const int nb = (j + 1) & 1, kn = (j + 1) * BC;
                load_rows<BC, HS, NT>(sK + nb * BC * LD, gK + kn * rs, rs, T - kn, tid);
                load_rows<BC, HS, NT>(sV + nb * BC * LD, gV + kn * rs, rs, T - kn, tid);
                cp_commit();
                cp_wait<1>();
            } else {
                cp_wait<0>();
            }
            __syncthreads();
            if (REGS && j == 0) {
#pragma unroll
                for (int mt = 0; mt < RM; ++mt)
#pragma unroll
                    for (int kk = 0; kk < RK; ++kk) {
                        ldsm_x4(qf[mt][kk], frag_a<LD>(sQ, warp * WR + mt * 16, kk * 16, lane));
                        ldsm_x4(of[mt][kk], frag_a<LD>(sO, warp * WR + mt * 16, kk * 16, lane));
                    }
            }
            const int k0 = j * BC;
            if (k0 <= wq + WR - 1) {
                const bf16 *cK = sK + (j & 1) * BC * LD, *cV = sV + (j & 1) * BC * LD;
                float s[MT][BC / 8][4], dp[MT][BC / 8][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    zero_acc(s[mt]);
                    zero_acc(dp[mt]);
                }
                /* S = Q K^T and dP = dO V^T */
#pragma unroll
                for (int kk = 0; kk < HS / 16; ++kk) {
                    uint32_t qa[MT][4], oa[MT][4];
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        if constexpr (REGS) {
#pragma unroll
                            for (int e = 0; e < 4; ++e) {
                                qa[mt][e] = qf[REGS ? mt : 0][REGS ? kk : 0][e];
                                oa[mt][e] = of[REGS ? mt : 0][REGS ? kk : 0][e];
                            }
                        } else {
                            ldsm_x4(qa[mt], frag_a<LD>(sQ, warp * WR + mt * 16, kk * 16, lane));
                            ldsm_x4(oa[mt], frag_a<LD>(sO, warp * WR + mt * 16, kk * 16, lane));
                        }
                    }
#pragma unroll
                    for (int np = 0; np < BC / 16; ++np) {
                        uint32_t bb[4];
                        ldsm_x4(bb, frag_b_nk<LD>(cK, np * 16, kk * 16, lane));
#pragma unroll
                        for (int mt = 0; mt < MT; ++mt) {
                            mma(s[mt][2 * np], qa[mt], bb[0], bb[1]);
                            mma(s[mt][2 * np + 1], qa[mt], bb[2], bb[3]);
                        }
                        ldsm_x4(bb, frag_b_nk<LD>(cV, np * 16, kk * 16, lane));
#pragma unroll
                        for (int mt = 0; mt < MT; ++mt) {
                            mma(dp[mt][2 * np], oa[mt], bb[0], bb[1]);
                            mma(dp[mt][2 * np + 1], oa[mt], bb[2], bb[3]);
                        }
                    }
                }
                const bool diag = k0 + BC - 1 > wq;
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int n = 0; n < BC / 8; ++n)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            const int hh = e >> 1;
                            float p = ex2(fmaf(s[mt][n][e], sl2, -L[mt][hh]));
                            if (diag && k0 + n * 8 + 2 * t4 + (e & 1) > wq + mt * 16 + g + hh * 8) p = 0.f;
                            s[mt][n][e] = p * (dp[mt][n][e] - Dr[mt][hh]); /* dS */
                        }
                        /* dQ += dS K */
#pragma unroll
                for (int kk = 0; kk < BC / 16; ++kk) {
                    uint32_t da[MT][4];
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt)
                        acc_to_a(da[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
                    for (int np = 0; np < HS / 16; ++np) {
                        uint32_t bb[4];
                        ldsm_x4_t(bb, frag_b_kn<LD>(cK, kk * 16, np * 16, lane));
#pragma unroll
                        for (int mt = 0; mt < MT; ++mt) {
                            mma(dq[mt][2 * np], da[mt], bb[0], bb[1]);
                            mma(dq[mt][2 * np + 1], da[mt], bb[2], bb[3]);
                        }
                    }
                }
            }
            __syncthreads();
        }
        bf16 *st = sQ + warp * WR * LD; /* own rows only */
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
            stage_acc<HS>(st + mt * 16 * LD, dq[mt], scale, scale, lane);
        __syncwarp();
        store_rows<WR, HS>(dqkv + ((long)b * T + wq) * rs + (long)h * HS, rs, st, T - wq, lane);
        __syncthreads();
    }
}

} /* namespace llmc_attn */
