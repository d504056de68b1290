/* attention_fwd.cuh — the forward kernel of attention.cu's flash attention: one block per (query
 * tile, head), 64-key tiles streamed through shared memory, the online softmax in registers.
 * attention.cu launches it; kept apart so that each file reads as one pass. */
#pragma once
#include "attention_mma.cuh"

namespace llmc_attn {

/* Online-softmax step for one 16-row m-tile: s (scores of this key tile) becomes P,
 * m (running max, log2 units), l (per-thread partial row sums) and o are rescaled.
 * LAZY: the rescale (a multiply per accumulator) is skipped while no row of the warp
 * exceeds its running max by more than kLazy; the decision is warp-uniform. */
template <int N, int HS, bool LAZY>
__device__ __forceinline__ void softmax_step(float (&s)[N][4], float (&m)[2], float (&l)[2], float (&o)[HS / 8][4],
                                             float sl2) {
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < N; ++nt) {
        mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
        mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    mx0 *= sl2;
    mx1 *= sl2;
    /* key 0 is in the first tile, visible to every row: the max is finite from then on */
    const bool grow = !LAZY || __any_sync(0xffffffffu, mx0 > m[0] + kLazy || mx1 > m[1] + kLazy);
    if (grow) {
        const float n0 = fmaxf(m[0], mx0), n1 = fmaxf(m[1], mx1);
        const float a0 = ex2(m[0] - n0), a1 = ex2(m[1] - n1);
        m[0] = n0;
        m[1] = n1;
        l[0] *= a0;
        l[1] *= a1;
#pragma unroll
        for (int nt = 0; nt < HS / 8; ++nt) {
            o[nt][0] *= a0;
            o[nt][1] *= a0;
            o[nt][2] *= a1;
            o[nt][3] *= a1;
        }
    }
    float r0 = 0.f, r1 = 0.f;
#pragma unroll
    for (int nt = 0; nt < N; ++nt) {
        s[nt][0] = ex2(fmaf(s[nt][0], sl2, -m[0]));
        s[nt][1] = ex2(fmaf(s[nt][1], sl2, -m[0]));
        s[nt][2] = ex2(fmaf(s[nt][2], sl2, -m[1]));
        s[nt][3] = ex2(fmaf(s[nt][3], sl2, -m[1]));
        r0 += s[nt][0] + s[nt][1];
        r1 += s[nt][2] + s[nt][3];
    }
    l[0] += r0;
    l[1] += r1;
}

/* NW warps, each owning MT m-tiles (16*MT query rows): a block covers 16*MT*NW rows.
 * More rows per warp = each K/V fragment read from shared memory feeds more MMAs. */
template <int HS, class TL>
__global__ void __launch_bounds__(TL::NW * 32, TL::MINB)
    fwd_kernel(bf16 *__restrict__ out, float *__restrict__ lse, const bf16 *__restrict__ qkv, int B, int T, int NH,
               float sl2) {
    constexpr int NW = TL::NW, MT = TL::MT, BC = TL::BC;
    constexpr int WR = 16 * MT, BR = WR * NW, LD = HS + kPad, NT = NW * 32;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = reinterpret_cast<bf16 *>(smem);
    bf16 *sK = sQ + BR * LD;     /* 2 buffers */
    bf16 *sV = sK + 2 * BC * LD; /* 2 buffers */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BR; /* longest rows first */
    const int wq = q0 + warp * WR;
    const int C = NH * HS;
    const long rs = 3L * C;

    for (int bh = blockIdx.y; bh < B * NH; bh += gridDim.y) {
        const int b = bh / NH, h = bh - b * NH;
        const bf16 *gQ = qkv + (long)b * T * rs + (long)h * HS;
        const bf16 *gK = gQ + C, *gV = gQ + 2 * C;
        const int nkt = (min(q0 + BR, T) - 1) / BC + 1;

        load_rows<BR, HS, NT>(sQ, gQ + q0 * rs, rs, T - q0, tid);
        load_rows<BC, HS, NT>(sK, gK, rs, T, tid);
        load_rows<BC, HS, NT>(sV, gV, rs, T, tid);
        cp_commit();

        uint32_t qf[MT][HS / 16][4];
        float o[MT][HS / 8][4], m[MT][2], l[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            zero_acc(o[mt]);
            m[mt][0] = m[mt][1] = -INFINITY;
            l[mt][0] = l[mt][1] = 0.f;
        }

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
            if (j == 0) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int kk = 0; kk < HS / 16; ++kk)
                        ldsm_x4(qf[mt][kk], frag_a<LD>(sQ, warp * WR + mt * 16, kk * 16, lane));
            }
            const int k0 = j * BC;
            if (k0 <= wq + WR - 1) { /* else the whole tile is in the future of this warp's rows */
                const bf16 *cK = sK + (j & 1) * BC * LD, *cV = sV + (j & 1) * BC * LD;
                float s[MT][BC / 8][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
                    zero_acc(s[mt]);
#pragma unroll
                for (int kk = 0; kk < HS / 16; ++kk) {
#pragma unroll
                    for (int np = 0; np < BC / 16; ++np) {
                        uint32_t bb[4];
                        ldsm_x4(bb, frag_b_nk<LD>(cK, np * 16, kk * 16, lane));
#pragma unroll
                        for (int mt = 0; mt < MT; ++mt) {
                            mma(s[mt][2 * np], qf[mt][kk], bb[0], bb[1]);
                            mma(s[mt][2 * np + 1], qf[mt][kk], bb[2], bb[3]);
                        }
                    }
                }
                if (k0 + BC - 1 > wq) { /* tile crosses the diagonal: hide future keys */
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                        for (int nt = 0; nt < BC / 8; ++nt)
#pragma unroll
                            for (int e = 0; e < 4; ++e)
                                if (k0 + nt * 8 + 2 * t4 + (e & 1) > wq + mt * 16 + g + (e >> 1) * 8)
                                    s[mt][nt][e] = -INFINITY;
                }
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
                    softmax_step<BC / 8, HS, TL::LAZY>(s[mt], m[mt], l[mt], o[mt], sl2);
#pragma unroll
                for (int kk = 0; kk < BC / 16; ++kk) {
                    uint32_t pa[MT][4];
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt)
                        acc_to_a(pa[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
                    for (int np = 0; np < HS / 16; ++np) {
                        uint32_t bb[4];
                        ldsm_x4_t(bb, frag_b_kn<LD>(cV, kk * 16, np * 16, lane));
#pragma unroll
                        for (int mt = 0; mt < MT; ++mt) {
                            mma(o[mt][2 * np], pa[mt], bb[0], bb[1]);
                            mma(o[mt][2 * np + 1], pa[mt], bb[2], bb[3]);
                        }
                    }
                }
            }
            __syncthreads();
        }

        bf16 *sO = sQ + warp * WR * LD; /* this warp's own Q rows, already in registers */
        float *gl = lse + (long)bh * T;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            float l0 = l[mt][0], l1 = l[mt][1];
            l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
            l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
            l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
            l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
            stage_acc<HS>(sO + mt * 16 * LD, o[mt], 1.f / l0, 1.f / l1, lane);
            const int r = wq + mt * 16 + g;
            if (t4 == 0) {
                if (r < T) gl[r] = (m[mt][0] + __log2f(l0)) * kLn2;
                if (r + 8 < T) gl[r + 8] = (m[mt][1] + __log2f(l1)) * kLn2;
            }
        }
        __syncwarp();
        store_rows<WR, HS>(out + ((long)b * T + wq) * C + (long)h * HS, C, sO, T - wq, lane);
        __syncthreads(); /* shared tiles are reused by the next head */
    }
}

} /* namespace llmc_attn */
