/* attention_mma.cuh — building blocks of the flash-attention kernels in attention.cu:
 * tile-shape templates, cp.async / ldmatrix / mma.sync m16n8k16 wrappers and fragment
 * helpers. Kept apart so attention.cu reads as the algorithm. */
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

namespace llmc_attn {

typedef __nv_bfloat16 bf16;

/* bf16 of padding per shared row: rows land 16 bytes apart mod 128, so ldmatrix is conflict-free */
constexpr int kPad = 8;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
/* Lazy rescaling headroom, log2 units: probabilities relative to a stale max stay <= 2^8,
 * harmless for the fp32 sums and for bf16 (which keeps its relative precision at any scale). */
constexpr float kLazy = 8.f;

/* Tile shapes, as template arguments of the kernels (dev/cuda/attention.cu times the variants).
 * NW warps per block; MINB = minimum resident blocks per SM asked of the register allocator. */
template <int NW_, int MT_, int BC_ = 64, int MINB_ = 1, bool LAZY_ = false> struct FwdTiles {
    /* each warp owns MT 16-row m-tiles of queries; BC keys per shared tile;
     * LAZY: keep the running max until a row grows past it by kLazy (skips most rescales) */
    static constexpr int NW = NW_, MT = MT_, BC = BC_, MINB = MINB_;
    static constexpr bool LAZY = LAZY_;
};
template <int MK_, int BR_, bool REGS_, int NW_ = 4, int MINB_ = 1> struct KvTiles {
    /* each warp owns MK 16-key m-tiles; BR queries per step; REGS: K/V fragments kept in registers */
    static constexpr int MK = MK_, BR = BR_, NW = NW_, MINB = MINB_;
    static constexpr bool REGS = REGS_;
};
template <int MT_, int BC_, bool REGS_, int NW_ = 4, int MINB_ = 1> struct QTiles {
    /* each warp owns MT 16-query m-tiles; BC keys per step; REGS: Q/dO fragments kept in registers */
    static constexpr int MT = MT_, BC = BC_, NW = NW_, MINB = MINB_;
    static constexpr bool REGS = REGS_;
};

/* ---------------------------------------------------------------- PTX helpers */

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
/* 16-byte async copy; when !ok the destination is zero-filled and src is not read. */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(void *dst, const void *src, bool ok) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(ok ? 4 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
/* c += a (16x16, row) * b (16x8, col) */
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

/* Fragment addresses inside a shared tile with row stride LD (elements), for lane `l`.
 * A operand (16x16, rows r0.., cols c0..) of a row-major tile. */
template <int LD> __device__ __forceinline__ const bf16 *frag_a(const bf16 *s, int r0, int c0, int l) {
    return s + (r0 + (l & 15)) * LD + c0 + (l >> 4) * 8;
}
/* B operands of two n8 tiles (n0, n0+8) for k-step k0, from a tile stored [n][k]. */
template <int LD> __device__ __forceinline__ const bf16 *frag_b_nk(const bf16 *s, int n0, int k0, int l) {
    return s + (n0 + (l & 7) + (l >> 4) * 8) * LD + k0 + ((l >> 3) & 1) * 8;
}
/* Same from a tile stored [k][n] (use with ldsm_x4_t). */
template <int LD> __device__ __forceinline__ const bf16 *frag_b_kn(const bf16 *s, int k0, int n0, int l) {
    return s + (k0 + (l & 7) + ((l >> 3) & 1) * 8) * LD + n0 + (l >> 4) * 8;
}

/* ROWS rows of HS bf16 (global row stride `stride`) → shared (stride HS+kPad).
 * Rows >= nvalid are zero-filled. */
template <int ROWS, int HS, int NT>
__device__ __forceinline__ void load_rows(bf16 *s, const bf16 *g, long stride, int nvalid, int tid) {
    constexpr int CPR = HS / 8, LD = HS + kPad;
    static_assert((ROWS * CPR) % NT == 0, "tile not divisible among threads");
#pragma unroll
    for (int it = 0; it < ROWS * CPR / NT; ++it) {
        const int i = it * NT + tid, r = i / CPR, c = (i % CPR) * 8;
        const bool ok = r < nvalid;
        cp_async16(s + r * LD + c, g + (ok ? r : 0) * stride + c, ok);
    }
}
/* One warp copies ROWS shared rows to global, 16 bytes a lane; rows >= nvalid are skipped. */
template <int ROWS, int HS>
__device__ __forceinline__ void store_rows(bf16 *g, long stride, const bf16 *s, int nvalid, int lane) {
    constexpr int CPR = HS / 8, LD = HS + kPad;
#pragma unroll
    for (int it = 0; it < ROWS * CPR / 32; ++it) {
        const int i = it * 32 + lane, r = i / CPR, c = (i % CPR) * 8;
        if (r < nvalid) *reinterpret_cast<int4 *>(g + r * stride + c) = *reinterpret_cast<const int4 *>(s + r * LD + c);
    }
}
/* A 16xHS fp32 accumulator (C-fragment layout), scaled per row half → bf16 rows of shared tile s. */
template <int HS>
__device__ __forceinline__ void stage_acc(bf16 *s, const float (&acc)[HS / 8][4], float mul0, float mul1, int lane) {
    constexpr int LD = HS + kPad;
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int nt = 0; nt < HS / 8; ++nt) {
        *reinterpret_cast<uint32_t *>(s + g * LD + nt * 8 + 2 * t) = pack_bf16(acc[nt][0] * mul0, acc[nt][1] * mul0);
        *reinterpret_cast<uint32_t *>(s + (g + 8) * LD + nt * 8 + 2 * t) =
            pack_bf16(acc[nt][2] * mul1, acc[nt][3] * mul1);
    }
}
/* Accumulator tiles 2kk, 2kk+1 (16 x 16 block of C fragments) → the A operand of the next product. */
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}
template <int N> __device__ __forceinline__ void zero_acc(float (&c)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; ++i)
        c[i][0] = c[i][1] = c[i][2] = c[i][3] = 0.f;
}

}  // namespace llmc_attn
