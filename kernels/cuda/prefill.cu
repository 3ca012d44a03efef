// SPDX-License-Identifier: MIT
/*
 * Paged prefill attention on CUDA (sm_80 and later; built for sm_90a), on
 * the tensor cores: mma.sync m16n8k16 with fp32 accumulation, the online
 * softmax of FlashAttention-2.
 *
 * One CTA of four warps takes one (sequence, kv head, tile of queries). Its
 * 64 or 128 rows are (query, query head) pairs of that kv head's GQA group,
 * query major, so every K and V tile it loads serves all the heads of the
 * group: rows / group queries per CTA (at 64 rows: 64 at 1:1, 16 at 4:1, 8
 * at 8:1). A warp owns 16 or 32 rows (one or two m-tiles). The context is
 * taken in tiles of 32 or 64 tokens: K and V of a tile are copied into
 * shared memory with cp.async, two to four tiles in flight ahead of the one
 * being computed, each token's row found through the block table (any
 * block_tokens). Rows are stored with their 16-byte chunks XOR-swizzled by
 * the row index so that the ldmatrix reads of S = Q K^T and of O += P V
 * (ldmatrix.trans) hit distinct banks. With one m-tile Q stays in
 * registers as A fragments; with two it waits in shared memory and is read
 * per k-step. P goes from the S accumulators to A fragments in registers.
 * The shapes (kv_cuda_prefill_variant) were measured on an H100; the
 * launch picks one by the size of the grid (pick_variant()).
 * Tokens a row may not see (after its position, before its window) are
 * masked in the tiles that have any; tokens outside every row's span are
 * loaded as zeros.
 *
 * Quantized pools (DT, their dtype, a template argument): each thread
 * loads 8 dims of a row (8 or 4 bytes), widens them times their scale to
 * binary16 and stores them in the stage where a 16-bit pool's row would
 * be, so the rest of the kernel is the same, in binary16 (the queries are
 * converted once). These loads are not asynchronous: the tiles ahead are
 * loaded before the current one is computed, by the same threads.
 */
#include <errno.h>
#include <stdint.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <type_traits>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/attn.cuh"

/*
 * Kernel variant, for measuring: 0 tiles of 64 tokens, registers as the
 * compiler likes (2 CTAs per SM at head_dim 128); 1 the same capped for 3
 * CTAs per SM; 2 tiles of 32 tokens, 3 CTAs per SM; 3 tiles of 32 tokens,
 * 4 CTAs per SM; 4 two m-tiles (32 rows) per warp with the queries in
 * shared memory, tiles of 32 tokens, 2 CTAs per SM; 5 the same uncapped;
 * 6 as 0 with 3 stages of K/V in flight instead of 2; 7 as 2 with 4
 * stages; 8 as 4 with 4 stages.
 * Negative: pick_variant() chooses 6 or 8.
 */
int kv_cuda_prefill_variant = -1;

namespace {

constexpr int kWarps = 4;
constexpr int kRows = 16 * kWarps;	/* (query, head) rows per CTA */
constexpr uint32_t kMaxY = 65535;

struct prefill_params {
	kv_layer_ref kv;	/* the layer's K and V in the arena */
	uint64_t soff;		/* quantized: the layer's K scales of head 0 */
	uint64_t hsb;		/* quantized: one head's scales in a block */
	uint32_t kv_heads;
	const void *q;
	void *out;
	const uint32_t *q_start;
	const uint32_t *table;
	const uint32_t *ctx_lens;
	int32_t *status;
	uint32_t batch, tokens, q_heads, group, qpc;	/* qpc: queries per CTA */
	uint32_t max_q;		/* most queries of a sequence the grid covers */
	uint32_t block_tokens, stride, window;
	float scale_log2;
};

__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared; @ok false writes zeros and reads nothing */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool ok)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
		     :: "r"(smem_u32(dst)), "l"(src), "r"(ok ? 16 : 0) : "memory");
}

__device__ __forceinline__ void cp_async_commit(void)
{
	asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void cp_async_wait(void)
{
	asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

/* byte offset of 16-byte chunk @c of row @r in a swizzled [tokens][HD] tile */
template <int HD>
__device__ __forceinline__ uint32_t swz(uint32_t r, uint32_t c)
{
	return r * HD * 2 + ((c ^ (r & 7)) << 4);
}

/* the span [lo, hi) a query at position @pos attends to */
__device__ __forceinline__ void span(const prefill_params &p, uint32_t pos,
				     uint32_t &lo, uint32_t &hi)
{
	lo = p.window && pos + 1 > p.window ? pos + 1 - p.window : 0;
	hi = pos + 1;
}

/*
 * Copy K and V of tokens [t, t + TK) into a stage; tokens outside [lo, hi)
 * are zeros. Each thread moves 16-byte chunks of token rows.
 */
template <int HD, int TK>
__device__ __forceinline__ void load_tile(const prefill_params &p, const uint32_t *table,
					  uint64_t koff, uint32_t t, uint32_t lo,
					  uint32_t hi, char *sk, char *sv)
{
	constexpr int chunks = HD / 8;

	for (int i = threadIdx.x; i < TK * chunks; i += kWarps * 32) {
		uint32_t r = i / chunks, c = i % chunks, tok = t + r;
		bool ok = tok >= lo && tok < hi;
		const char *src = p.kv.arena;

		if (ok) {
			uint32_t blk = tok / p.block_tokens;

			src = p.kv.arena + table[blk] * p.kv.frame_bytes + koff +
			      (uint64_t)(tok - blk * p.block_tokens) * HD * 2 + c * 16;
		}
		cp_async16(sk + swz<HD>(r, c), src, ok);
		cp_async16(sv + swz<HD>(r, c), ok ? src + p.kv.voff : src, ok);
	}
}

/* 8 floats as four binary16 pairs */
__device__ __forceinline__ uint4 pack8(const float (&f)[8])
{
	return make_uint4(kv_mma<__half>::pack(f[0], f[1]), kv_mma<__half>::pack(f[2], f[3]),
			  kv_mma<__half>::pack(f[4], f[5]), kv_mma<__half>::pack(f[6], f[7]));
}

/*
 * Dims 8c .. 8c + 7 of the row at @row (values; @fb: its frame, @sc: the
 * head's scales in it, @tib: the token in the block) times their scale.
 */
template <int HD, int DT>
__device__ __forceinline__ uint4 dequant8(const char *fb, uint64_t sc, uint32_t tib,
					  const char *row, uint32_t c)
{
	float f[8];

	if constexpr (DT == KV_DTYPE_INT4) {
		uint32_t w = __ldg(reinterpret_cast<const uint32_t *>(row + c * 4));
		float s = __half2float(reinterpret_cast<const __half *>(
			fb + sc + (uint64_t)tib * (HD / 16))[c / 4]);
#pragma unroll
		for (int i = 0; i < 8; i++)
			f[i] = (float)((int)((w >> (4 * i)) & 15) - 8) * s;
	} else {
		uint2 w = __ldg(reinterpret_cast<const uint2 *>(row + c * 8));
		float s = __ldg(reinterpret_cast<const float *>(fb + sc));
#pragma unroll
		for (int i = 0; i < 8; i++) {
			uint8_t q = (uint8_t)((i < 4 ? w.x : w.y) >> (8 * (i & 3)));

			if constexpr (DT == KV_DTYPE_INT8)
				f[i] = (float)(int8_t)q * s;
			else
				f[i] = __half2float(__half(__nv_cvt_fp8_to_halfraw(q, __NV_E4M3))) * s;
		}
	}
	return pack8(f);
}

/*
 * load_tile() of a quantized pool: the tile's K and V widened into the
 * stage as binary16 rows; @sk_off: the head's K scales in a frame.
 */
template <int HD, int TK, int DT>
__device__ __forceinline__ void load_tile_q(const prefill_params &p, const uint32_t *table,
					    uint64_t koff, uint64_t sk_off, uint32_t t,
					    uint32_t lo, uint32_t hi, char *sk, char *sv)
{
	constexpr int chunks = HD / 8;
	constexpr uint32_t rowb = HD * (DT == KV_DTYPE_INT4 ? 4 : 8) / 8;
	const uint64_t sv_off = sk_off + p.kv_heads * p.hsb;

	for (int i = threadIdx.x; i < TK * chunks; i += kWarps * 32) {
		uint32_t r = i / chunks, c = i % chunks, tok = t + r;
		uint4 kx = make_uint4(0, 0, 0, 0), vx = kx;

		if (tok >= lo && tok < hi) {
			uint32_t blk = tok / p.block_tokens, tib = tok - blk * p.block_tokens;
			const char *fb = p.kv.arena + table[blk] * p.kv.frame_bytes;
			const char *row = fb + koff + (uint64_t)tib * rowb;

			kx = dequant8<HD, DT>(fb, sk_off, tib, row, c);
			vx = dequant8<HD, DT>(fb, sv_off, tib, row + p.kv.voff, c);
		}
		*reinterpret_cast<uint4 *>(sk + swz<HD>(r, c)) = kx;
		*reinterpret_cast<uint4 *>(sv + swz<HD>(r, c)) = vx;
	}
}

/*
 * Sequence @b is sound: q_start in range, its queries fit its context and
 * the grid, its context fits its table, every frame it reads is in the
 * arena. Each thread checks a share of the frames.
 */
__device__ bool seq_ok(const prefill_params &p, uint32_t b, uint32_t nq,
		       uint32_t ctx, const uint32_t *table)
{
	uint32_t lo, hi;

	if (p.q_start[b] > p.q_start[b + 1] || p.q_start[b + 1] > p.tokens || nq > ctx ||
	    nq > p.max_q || (uint64_t)ctx > (uint64_t)p.stride * p.block_tokens)
		return false;
	if (!nq)
		return true;
	span(p, ctx - nq, lo, hi);
	for (uint32_t i = lo / p.block_tokens + threadIdx.x;
	     i <= (ctx - 1) / p.block_tokens; i += kWarps * 32)
		if (table[i] >= p.kv.frames)
			return false;
	return true;
}

/* Q rows [0, rows) of this CTA into swizzled shared memory; others zero */
template <typename T, int HD>
__device__ __forceinline__ void load_q(const prefill_params &p, uint32_t b, uint32_t q0,
				       uint32_t h, uint32_t nrows, int rows, char *sq)
{
	constexpr int chunks = HD / 8;

	for (int i = threadIdx.x; i < rows * chunks; i += kWarps * 32) {
		uint32_t r = i / chunks, c = i % chunks;
		bool ok = r < nrows;
		const T *src = static_cast<const T *>(p.q);

		if (ok)
			src += ((size_t)(p.q_start[b] + q0 + r / p.group) * p.q_heads +
				h * p.group + r % p.group) * HD + c * 8;
		cp_async16(sq + swz<HD>(r, c), src, ok);
	}
}

/* a stage's K (first half) and V (second half) of the tile at @t */
template <int HD, int TK, int DT>
__device__ __forceinline__ void load_stage(const prefill_params &p, const uint32_t *table,
					   uint64_t koff, uint64_t sk_off, uint32_t t,
					   uint32_t lo, uint32_t hi, char *stage)
{
	char *sv = stage + TK * HD * 2;

	if constexpr (DT == 0)
		load_tile<HD, TK>(p, table, koff, t, lo, hi, stage, sv);
	else
		load_tile_q<HD, TK, DT>(p, table, koff, sk_off, t, lo, hi, stage, sv);
}

/* two queries of type T at @q, as the mma type's pair */
template <typename T, int DT>
__device__ __forceinline__ uint32_t q_pair(const T *q)
{
	uint32_t x = *reinterpret_cast<const uint32_t *>(q);

	if constexpr (DT == 0 || std::is_same<T, __half>::value)
		return x;
	else
		return kv_mma<__half>::pack(static_cast<float>(q[0]), static_cast<float>(q[1]));
}

/*
 * TK tokens per K/V tile; MT m-tiles of 16 rows per warp (with MT 2 the
 * queries wait in shared memory and are read per k-step, as
 * FlashAttention-2 does, to leave registers for twice the outputs); MINB
 * CTAs per SM asked of the register allocator (see kv_cuda_prefill_variant).
 */
template <typename T, int HD, int TK, int MT, int MINB, int NS, int DT>
__global__ void __launch_bounds__(kWarps * 32, MINB)
kv_prefill_kernel(const prefill_params p)
{
	static_assert(DT == 0 || MT == 1, "quantized: the queries stay in registers");
	typedef typename std::conditional<DT == 0, T, __half>::type M;	/* mma type */
	constexpr int kTokens = TK;
	constexpr bool QS = MT > 1;		/* queries in shared memory */
	extern __shared__ __align__(128) char smem[];
	constexpr int kt = HD / 16;		/* k-steps of S = Q K^T */
	constexpr int stage = 2 * kTokens * HD * 2;
	char *const sq = smem + NS * stage;	/* [kWarps * 16 * MT][HD] when QS */
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int g = lane >> 2, c = lane & 3;
	const uint32_t h = blockIdx.y;
	const uint32_t *table;
	uint32_t b, nq, ctx, q0, nrows;
	bool ok;

	for (b = blockIdx.z; b < p.batch; b += gridDim.z) {
		q0 = blockIdx.x * p.qpc;
		nq = p.q_start[b + 1] - p.q_start[b];
		ctx = p.ctx_lens[b];
		table = p.table + (size_t)b * p.stride;
		ok = __syncthreads_and(seq_ok(p, b, nq, ctx, table));
		if (!ok && threadIdx.x == 0 && blockIdx.x == 0 && h == 0 && p.status)
			atomicExch(p.status, -EINVAL);
		if (ok && q0 >= nq)
			continue;
		if (!ok && (p.q_start[b] > p.q_start[b + 1] || p.q_start[b + 1] > p.tokens ||
			    q0 >= nq))
			continue;		/* no rows of its own to poison */

		nrows = min(p.qpc, nq - q0) * p.group;
		/* this thread's rows: g and g + 8 of each of its warp's m-tiles */
		uint32_t row[MT][2], rlo[MT][2], rhi[MT][2];
		bool live[MT][2];
#pragma unroll
		for (int mt = 0; mt < MT; mt++) {
#pragma unroll
			for (int e = 0; e < 2; e++) {
				row[mt][e] = (warp * MT + mt) * 16 + g + 8 * e;
				live[mt][e] = row[mt][e] < nrows;
				span(p, ctx - nq + q0 + (live[mt][e] ? row[mt][e] / p.group : 0),
				     rlo[mt][e], rhi[mt][e]);
			}
		}
		const uint32_t first = ctx - nq + q0;		/* first query's position */
		const uint32_t last = first + nrows / p.group - 1;
		uint32_t lo, hi, end;
		span(p, first, lo, end);
		span(p, last, end, hi);

		/* without QS: queries as A fragments, rows g and g + 8, dims 16ks + 2c (+8) */
		uint32_t qa[QS ? 1 : kt][4];
		if (!QS) {
#pragma unroll
			for (int e = 0; e < 2; e++) {
				const T *qrow = static_cast<const T *>(p.q) +
					((size_t)(p.q_start[b] + q0 + row[0][e] / p.group) * p.q_heads +
					 h * p.group + row[0][e] % p.group) * HD;
#pragma unroll
				for (int ks = 0; ks < (QS ? 1 : kt); ks++) {
					qa[ks][e] = live[0][e] && ok ? q_pair<T, DT>(qrow + ks * 16 + 2 * c) : 0u;
					qa[ks][2 + e] = live[0][e] && ok ?
						q_pair<T, DT>(qrow + ks * 16 + 8 + 2 * c) : 0u;
				}
			}
		}

		float o[MT][HD / 8][4], m[MT][2], l[MT][2];
#pragma unroll
		for (int mt = 0; mt < MT; mt++) {
			m[mt][0] = m[mt][1] = -INFINITY;
			l[mt][0] = l[mt][1] = 0.f;
#pragma unroll
			for (int dt = 0; dt < HD / 8; dt++)
				o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.f;
		}

		const uint64_t koff = p.kv.koff + h * p.kv.head_bytes;
		const uint64_t sk_off = p.soff + h * p.hsb;
		const uint32_t t0 = lo / kTokens * kTokens;
		const int ntiles = ok && hi > t0 ? (int)((hi - t0 + kTokens - 1) / kTokens) : 0;

		/* NS stages: tiles it + 1 .. it + NS - 1 load while tile it is computed */
		if (QS && ntiles)
			load_q<T, HD>(p, b, q0, h, nrows, kWarps * 16 * MT, sq);
#pragma unroll
		for (int j = 0; j < NS - 1; j++) {
			if (j < ntiles)
				load_stage<HD, TK, DT>(p, table, koff, sk_off, t0 + j * kTokens,
						       lo, hi, smem + j * stage);
			cp_async_commit();
		}
		for (int it = 0; it < ntiles; it++) {
			const uint32_t t = t0 + it * kTokens;
			char *sk = smem + (it % NS) * stage, *sv = sk + stage / 2;
			const int nx = it + NS - 1;

			if (nx < ntiles)
				load_stage<HD, TK, DT>(p, table, koff, sk_off, t0 + nx * kTokens,
						       lo, hi, smem + (nx % NS) * stage);
			cp_async_commit();
			cp_async_wait<NS - 1>();
			__syncthreads();

			/* S = Q K^T: 16 * MT rows x TK tokens per warp */
			float s[MT][kTokens / 8][4];
#pragma unroll
			for (int mt = 0; mt < MT; mt++)
#pragma unroll
				for (int nt = 0; nt < kTokens / 8; nt++)
					s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
			for (int ks = 0; ks < kt; ks += 2) {
				uint32_t qf[MT][2][4];

#pragma unroll
				for (int mt = 0; mt < MT; mt++) {
#pragma unroll
					for (int j = 0; j < 2; j++) {
						if (QS)
							ldsm_x4(qf[mt][j], sq + swz<HD>(
								(warp * MT + mt) * 16 + (lane & 7) +
								((lane >> 3) & 1) * 8,
								2 * (ks + j) + (lane >> 4)));
						else
#pragma unroll
							for (int r = 0; r < 4; r++)
								qf[mt][j][r] = qa[QS ? 0 : ks + j][r];
					}
				}
#pragma unroll
				for (int nt = 0; nt < kTokens / 8; nt++) {
					uint32_t kb[4];

					ldsm_x4(kb, sk + swz<HD>(nt * 8 + (lane & 7),
								 ks * 2 + (lane >> 3)));
#pragma unroll
					for (int mt = 0; mt < MT; mt++) {
						kv_mma<M>::mma(s[mt][nt], qf[mt][0], kb[0], kb[1]);
						kv_mma<M>::mma(s[mt][nt], qf[mt][1], kb[2], kb[3]);
					}
				}
			}

			/* mask, then the online softmax of each row */
			uint32_t pa[MT][kTokens / 16][4];
			float corr[MT][2];
#pragma unroll
			for (int mt = 0; mt < MT; mt++) {
				const bool edge = t + kTokens > first + 1 || t < rlo[mt][0] ||
						  t < rlo[mt][1] || p.window;
				float mx[2] = { -INFINITY, -INFINITY };
#pragma unroll
				for (int nt = 0; nt < kTokens / 8; nt++) {
#pragma unroll
					for (int i = 0; i < 4; i++) {
						int e = i >> 1;
						uint32_t tok = t + nt * 8 + 2 * c + (i & 1);
						float x = s[mt][nt][i] * p.scale_log2;

						if (edge && (!live[mt][e] || tok < rlo[mt][e] ||
							     tok >= rhi[mt][e]))
							x = -INFINITY;
						s[mt][nt][i] = x;
						mx[e] = fmaxf(mx[e], x);
					}
				}
#pragma unroll
				for (int e = 0; e < 2; e++) {
					mx[e] = fmaxf(mx[e], __shfl_xor_sync(0xffffffff, mx[e], 1));
					mx[e] = fmaxf(mx[e], __shfl_xor_sync(0xffffffff, mx[e], 2));
					float mn = fmaxf(m[mt][e], mx[e]);
					float ref = mn == -INFINITY ? 0.f : mn;

					corr[mt][e] = exp2f(m[mt][e] - ref);
					m[mt][e] = mn;
					l[mt][e] *= corr[mt][e];
				}
#pragma unroll
				for (int nt = 0; nt < kTokens / 8; nt++) {
					float x[4];
#pragma unroll
					for (int i = 0; i < 4; i++) {
						int e = i >> 1;
						float ref = m[mt][e] == -INFINITY ? 0.f : m[mt][e];

						x[i] = exp2f(s[mt][nt][i] - ref);
						l[mt][e] += x[i];
					}
					pa[mt][nt / 2][(nt & 1) * 2] = kv_mma<M>::pack(x[0], x[1]);
					pa[mt][nt / 2][(nt & 1) * 2 + 1] = kv_mma<M>::pack(x[2], x[3]);
				}
#pragma unroll
				for (int dt = 0; dt < HD / 8; dt++) {
					o[mt][dt][0] *= corr[mt][0];
					o[mt][dt][1] *= corr[mt][0];
					o[mt][dt][2] *= corr[mt][1];
					o[mt][dt][3] *= corr[mt][1];
				}
			}

			/* O += P V: k = tokens, n = dims; V^T fragments by ldmatrix.trans */
#pragma unroll
			for (int kk = 0; kk < kTokens / 16; kk++) {
#pragma unroll
				for (int dt = 0; dt < HD / 8; dt += 2) {
					uint32_t vb[4];

					ldsm_x4_t(vb, sv + swz<HD>(kk * 16 + (lane & 7) +
								   ((lane >> 3) & 1) * 8,
								   dt + (lane >> 4)));
#pragma unroll
					for (int mt = 0; mt < MT; mt++) {
						kv_mma<M>::mma(o[mt][dt], pa[mt][kk], vb[0], vb[1]);
						kv_mma<M>::mma(o[mt][dt + 1], pa[mt][kk], vb[2], vb[3]);
					}
				}
			}
			__syncthreads();	/* the stage is refilled next */
		}
		cp_async_wait<0>();

		/* rows' sums over the 4 lanes of a row, then the outputs */
#pragma unroll
		for (int mt = 0; mt < MT; mt++) {
#pragma unroll
			for (int e = 0; e < 2; e++) {
				float sum = l[mt][e];

				sum += __shfl_xor_sync(0xffffffff, sum, 1);
				sum += __shfl_xor_sync(0xffffffff, sum, 2);
				if (!live[mt][e])
					continue;
				float inv = !ok ? NAN : sum > 0.f ? 1.f / sum : 0.f;
				T *orow = static_cast<T *>(p.out) +
					((size_t)(p.q_start[b] + q0 + row[mt][e] / p.group) *
					 p.q_heads + h * p.group + row[mt][e] % p.group) * HD;
#pragma unroll
				for (int dt = 0; dt < HD / 8; dt++)
					kv_mma<T>::store2(orow + dt * 8 + 2 * c, o[mt][dt][2 * e] * inv,
						       o[mt][dt][2 * e + 1] * inv);
			}
		}
		__syncthreads();
	}
}

template <typename T, int HD, int TK, int MT, int MINB, int NS = 2, int DT = 0>
int launch(const prefill_params &p0, uint32_t max_q, cudaStream_t st)
{
	/* NS stages of K and V, and the queries when they wait in smem */
	constexpr size_t smem = NS * 2 * TK * HD * 2 + (MT > 1 ? kWarps * 16 * MT * HD * 2 : 0);
	auto kern = kv_prefill_kernel<T, HD, TK, MT, MINB, NS, DT>;
	prefill_params p = p0;
	static bool attr_set[KV_CUDA_MAX_DEVICES];

	p.qpc = kRows * MT / p.group;
	int dev = 0;

	if (cudaGetDevice(&dev) != cudaSuccess || dev >= KV_CUDA_MAX_DEVICES)
		return -ENODEV;
	if (!attr_set[dev]) {
		if (smem > 48 * 1024 &&
		    cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
					 (int)smem) != cudaSuccess)
			return -EIO;
		attr_set[dev] = true;
	}
	dim3 grid((uint32_t)(((uint64_t)max_q + p.qpc - 1) / p.qpc), p.q_heads / p.group,
		  p.batch < kMaxY ? p.batch : kMaxY);
	kern<<<grid, kWarps * 32, smem, st>>>(p);
	return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}

/*
 * The default, from the variants measured on an H100
 * (Documentation/performance.md): where the grid has enough CTAs to fill
 * the SMs twice over, variant 8 (32 rows per warp, 4 stages of 32-token
 * tiles); else, as in a chunked prefill (a long context for few queries),
 * variant 6 (16 rows per warp, no register cap, 3 stages of 64 tokens):
 * more CTAs per SM cannot help a grid that small.
 */
static int pick_variant(const prefill_params &p, uint32_t max_q)
{
	uint64_t ctas = ((uint64_t)max_q + p.qpc - 1) / p.qpc * (p.q_heads / p.group) * p.batch;
	int dev = 0, sms = 0;

	if (kv_cuda_prefill_variant >= 0)
		return kv_cuda_prefill_variant;
	if (cudaGetDevice(&dev) != cudaSuccess ||
	    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
		return 0;
	return ctas >= 3ull * sms * 2 ? 8 : 6;
}

/*
 * A quantized pool: the shapes of variants 6 and 7 (queries in registers),
 * 7 where the grid fills the SMs several times over.
 */
template <typename T, int HD, int DT>
int launch_quant(const prefill_params &p, uint32_t max_q, cudaStream_t st)
{
	if (pick_variant(p, max_q) == 8)
		return launch<T, HD, 32, 1, 3, 4, DT>(p, max_q, st);
	return launch<T, HD, 64, 1, 1, 3, DT>(p, max_q, st);
}

template <typename T, int HD>
int launch_dt(const prefill_params &p, uint32_t dtype, uint32_t max_q, cudaStream_t st)
{
	switch (dtype) {
	case KV_DTYPE_INT8:
		return launch_quant<T, HD, KV_DTYPE_INT8>(p, max_q, st);
	case KV_DTYPE_FP8_E4M3:
		return launch_quant<T, HD, KV_DTYPE_FP8_E4M3>(p, max_q, st);
	default:
		return launch_quant<T, HD, KV_DTYPE_INT4>(p, max_q, st);
	}
}

template <typename T, int HD>
int launch_var(const prefill_params &p, uint32_t max_q, cudaStream_t st)
{
	switch (pick_variant(p, max_q)) {
	case 1:
		return launch<T, HD, 64, 1, 3>(p, max_q, st);
	case 2:
		return launch<T, HD, 32, 1, 3>(p, max_q, st);
	case 3:
		return launch<T, HD, 32, 1, 4>(p, max_q, st);
	case 4:
		return launch<T, HD, 32, 2, 2>(p, max_q, st);
	case 5:
		return launch<T, HD, 32, 2, 1>(p, max_q, st);
	case 6:
		return launch<T, HD, 64, 1, 1, 3>(p, max_q, st);
	case 7:
		return launch<T, HD, 32, 1, 3, 4>(p, max_q, st);
	case 8:
		return launch<T, HD, 32, 2, 2, 4>(p, max_q, st);
	default:
		return launch<T, HD, 64, 1, 1>(p, max_q, st);
	}
}

} /* namespace */

/**
 * kv_prefill_cuda() - paged prefill attention on CUDA
 * @a: arguments (see struct kv_prefill_args; device-accessible pointers)
 *
 * Return: 0 once launched, -EINVAL for bad arguments, -EOPNOTSUPP for a
 * dtype or head_dim the CUDA kernel does not cover (fp32 KV; head_dim
 * other than 64 and 128; a GQA group of more than 64 query heads), -EIO
 * when the launch fails.
 */
extern "C" int kv_prefill_cuda(const struct kv_prefill_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	prefill_params p = {};
	uint32_t max_q;
	int err = kv_prefill_check(a);

	if (err)
		return err;
	if (g->dtype == KV_DTYPE_FP32)
		return -EOPNOTSUPP;
	if (g->head_dim != 64 && g->head_dim != 128)
		return -EOPNOTSUPP;
	if (a->q_heads / g->kv_heads > (uint32_t)kRows)
		return -EOPNOTSUPP;
	if (!a->batch || !a->tokens)
		return 0;
	if (g->kv_heads > 65535)
		return -EINVAL;

	p.kv = kv_layer_of(&a->arena, a->layer);
	if (kv_dtype_quantized(g->dtype)) {
		p.soff = kv_scale_offset(g, a->layer, KV_K, 0);
		p.hsb = kv_head_scale_bytes(g);
	}
	p.kv_heads = g->kv_heads;
	p.q = a->q;
	p.out = a->out;
	p.q_start = a->q_start;
	p.table = a->block_table;
	p.ctx_lens = a->ctx_lens;
	p.status = a->status;
	p.batch = a->batch;
	p.tokens = a->tokens;
	p.q_heads = a->q_heads;
	p.group = a->q_heads / g->kv_heads;
	p.qpc = kRows / p.group;
	p.block_tokens = g->block_tokens;
	p.stride = a->table_stride;
	p.window = a->window;
	p.scale_log2 = a->scale * 1.4426950408889634f;
	max_q = a->max_q_len ? a->max_q_len : a->tokens;
	p.max_q = max_q;
	if (((uint64_t)max_q + p.qpc - 1) / p.qpc > 0x7fffffffu)
		return -EINVAL;

	cudaStream_t st = static_cast<cudaStream_t>(a->stream);
	if (kv_dtype_quantized(g->dtype)) {
		if (kv_io_dtype(g, a->io_dtype) == KV_DTYPE_BF16)
			return g->head_dim == 64 ?
				launch_dt<__nv_bfloat16, 64>(p, g->dtype, max_q, st) :
				launch_dt<__nv_bfloat16, 128>(p, g->dtype, max_q, st);
		return g->head_dim == 64 ? launch_dt<__half, 64>(p, g->dtype, max_q, st) :
					   launch_dt<__half, 128>(p, g->dtype, max_q, st);
	}
	if (g->dtype == KV_DTYPE_BF16)
		return g->head_dim == 64 ? launch_var<__nv_bfloat16, 64>(p, max_q, st) :
					   launch_var<__nv_bfloat16, 128>(p, max_q, st);
	return g->head_dim == 64 ? launch_var<__half, 64>(p, max_q, st) :
				   launch_var<__half, 128>(p, max_q, st);
}
