// SPDX-License-Identifier: MIT
/*
 * Paged prefill attention on CUDA (sm_80 and later; built for sm_80 and
 * sm_90a), on the tensor cores: mma.sync m16n8k16 with fp32 accumulation,
 * the online softmax of FlashAttention-2.
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
 * launch picks one by the size of the grid (pick_variant()). A pool of
 * head_dim 128 on a device that runs the wgmma kernel of prefill_sm90.cu
 * (wgmma_ready()) goes to it instead; both share prefill.cuh (the
 * sequence checks, the rows' online softmax, the stores).
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
#include <type_traits>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/attn.cuh"
#include "kernels/cuda/prefill.cuh"

/*
 * Kernel variant, for measuring: 0 tiles of 64 tokens, registers as the
 * compiler likes (2 CTAs per SM at head_dim 128); 1 the same capped for 3
 * CTAs per SM; 2 tiles of 32 tokens, 3 CTAs per SM; 3 tiles of 32 tokens,
 * 4 CTAs per SM; 4 two m-tiles (32 rows) per warp with the queries in
 * shared memory, tiles of 32 tokens, 2 CTAs per SM; 5 the same uncapped;
 * 6 as 0 with 3 stages of K/V in flight instead of 2; 7 as 2 with 4
 * stages; 8 as 4 with 4 stages; 9 as 4 with tiles of 64 tokens; 12 the
 * warp-specialized wgmma kernel of prefill_sm90.cu where wgmma_ready()
 * and head_dim is 128 (elsewhere 6). Negative: pick_variant() chooses 6,
 * 8 or 12. (10, 11 and 13 named wgmma kernels that measured slower and
 * were removed; they now run 12. Other unknown numbers run 0.)
 */
int kv_cuda_prefill_variant = -1;

/*
 * Query tiles per CTA of the wgmma kernel (prefill_sm90.cu, ws_ipc()),
 * for measuring: 1, or an even number (an odd one above 1 runs one less);
 * 0 or negative: the launch's choice.
 */
int kv_cuda_prefill_ipc;

/* gridDim.y is the kv heads that a valid geometry allows */
static_assert(KV_MAX_KV_HEADS <= 65535, "kv heads fit a grid's y");

namespace {

constexpr int kWarps = 4;
constexpr int kRows = 16 * kWarps;	/* (query, head) rows per CTA */
using namespace kv_prefill;

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(kv_smem_addr(p)));
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(kv_smem_addr(p)));
}

/* byte offset of 16-byte chunk @c of row @r in a swizzled [tokens][HD] tile */
template <int HD>
__device__ __forceinline__ uint32_t swz(uint32_t r, uint32_t c)
{
	return r * HD * 2 + ((c ^ (r & 7)) << 4);
}

/*
 * Copy K and V of tokens [t, t + TK) into a stage; tokens outside [lo, hi)
 * are zeros. Each thread moves 16-byte chunks of token rows.
 */
template <int HD, int TK>
__device__ __forceinline__ void load_tile(const params &p, const uint32_t *table,
					  uint64_t koff, uint32_t t, uint32_t lo,
					  uint32_t hi, char *sk, char *sv)
{
	constexpr int chunks = HD / 8;

	for (int i = threadIdx.x; i < TK * chunks; i += kWarps * 32) {
		uint32_t r = i / chunks, c = i % chunks, tok = t + r;
		bool ok = tok >= lo && tok < hi;
		const char *src = p.kv.arena;

		if (ok)
			src = k_row<HD>(p, table, koff, tok) + c * 16;
		cp_async16(sk + swz<HD>(r, c), src, ok);
		cp_async16(sv + swz<HD>(r, c), ok ? src + p.kv.voff : src, ok);
	}
}

/*
 * load_tile() of a quantized pool: the tile's K and V widened into the
 * stage as binary16 rows; @sk_off: the head's K scales in a frame. A
 * thread's chunks go in batches of up to 8 (K and V each), every load of
 * a batch issued before the first is widened.
 */
template <int HD, int TK, int DT>
__device__ __forceinline__ void load_tile_q(const params &p, const uint32_t *table,
					    uint64_t koff, uint64_t sk_off, uint32_t t,
					    uint32_t lo, uint32_t hi, char *sk, char *sv)
{
	constexpr int chunks = HD / 8, N = TK * chunks / (kWarps * 32), B = N < 8 ? N : 8;
	constexpr uint32_t rowb = HD * (DT == KV_DTYPE_INT4 ? 4 : 8) / 8;
	const uint64_t sv_off = sk_off + p.kv_heads * p.hsb;
	static_assert(N * kWarps * 32 == TK * chunks && N % B == 0, "whole batches");

#pragma unroll
	for (int b = 0; b < N; b += B) {
		qchunk kq[B], vq[B];

#pragma unroll
		for (int j = 0; j < B; j++) {
			const uint32_t i = threadIdx.x + (b + j) * kWarps * 32;
			const uint32_t r = i / chunks, c = i % chunks, tok = t + r;

			kq[j] = vq[j] = qchunk{ make_uint2(0, 0), 0 };
			if (tok >= lo && tok < hi) {
				uint32_t tib, blk = block_of(p, tok, tib);
				const char *fb = p.kv.arena + table[blk] * p.kv.frame_bytes;
				const char *row = fb + koff + (uint64_t)tib * rowb;

				kq[j] = qchunk_load<HD, DT>(fb, sk_off, tib, row, c);
				vq[j] = qchunk_load<HD, DT>(fb, sv_off, tib, row + p.kv.voff, c);
			}
		}
#pragma unroll
		for (int j = 0; j < B; j++) {
			const uint32_t i = threadIdx.x + (b + j) * kWarps * 32;
			const uint32_t r = i / chunks, c = i % chunks;

			*reinterpret_cast<uint4 *>(sk + swz<HD>(r, c)) = qchunk_widen<DT>(kq[j]);
			*reinterpret_cast<uint4 *>(sv + swz<HD>(r, c)) = qchunk_widen<DT>(vq[j]);
		}
	}
}

/* Q rows [0, rows) of this CTA into swizzled shared memory; others zero */
template <typename T, int HD>
__device__ __forceinline__ void load_q(const params &p, const seq &sn,
				       uint32_t nrows, int rows, char *sq)
{
	constexpr int chunks = HD / 8;

	for (int i = threadIdx.x; i < rows * chunks; i += kWarps * 32) {
		uint32_t r = i / chunks, c = i % chunks;
		bool ok = r < nrows;

		cp_async16(sq + swz<HD>(r, c), ok ? q_row<T, HD>(p, sn, r) + c * 8 : p.q, ok);
	}
}

/* a stage's K (first half) and V (second half) of the tile at @t */
template <int HD, int TK, int DT>
__device__ __forceinline__ void load_stage(const params &p, const uint32_t *table,
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
kv_prefill_kernel(const params p)
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

	for (uint32_t b = blockIdx.z; b < p.batch; b += gridDim.z) {
		seq sn;

		if (!seq_begin(p, b, kWarps * 32, sn))
			continue;
		const uint32_t nrows = min(p.qpc, sn.nq - sn.q0) * p.group;
		/* this thread's rows: g and g + 8 of each of its warp's m-tiles */
		row_state rs[MT][2];
#pragma unroll
		for (int mt = 0; mt < MT; mt++)
#pragma unroll
			for (int e = 0; e < 2; e++)
				row_init(p, sn, nrows, (warp * MT + mt) * 16 + g + 8 * e, rs[mt][e]);
		uint32_t lo, hi;
		const uint32_t first = cta_span(p, sn, nrows, lo, hi);

		/* without QS: queries as A fragments, rows g and g + 8, dims 16ks + 2c (+8) */
		uint32_t qa[QS ? 1 : kt][4];
		if (!QS) {
#pragma unroll
			for (int e = 0; e < 2; e++) {
				const bool in = rs[0][e].live && sn.ok;
				const T *qrow = q_row<T, HD>(p, sn, in ? rs[0][e].row : 0);
#pragma unroll
				for (int ks = 0; ks < (QS ? 1 : kt); ks++) {
					qa[ks][e] = in ? q_pair<T, DT>(qrow + ks * 16 + 2 * c) : 0u;
					qa[ks][2 + e] = in ? q_pair<T, DT>(qrow + ks * 16 + 8 + 2 * c) : 0u;
				}
			}
		}

		float o[MT][HD / 8][4];
#pragma unroll
		for (int mt = 0; mt < MT; mt++)
#pragma unroll
			for (int dt = 0; dt < HD / 8; dt++)
				o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.f;

		const uint64_t koff = p.kv.koff + sn.h * p.kv.head_bytes;
		const uint64_t sk_off = p.soff + sn.h * p.hsb;
		uint32_t t0;
		const int ntiles = cta_tiles(sn, lo, hi, kTokens, t0);

		/* NS stages: tiles it + 1 .. it + NS - 1 load while tile it is computed */
		if (QS && ntiles)
			load_q<T, HD>(p, sn, nrows, kWarps * 16 * MT, sq);
#pragma unroll
		for (int j = 0; j < NS - 1; j++) {
			if (j < ntiles)
				load_stage<HD, TK, DT>(p, sn.table, koff, sk_off, t0 + j * kTokens,
						       lo, hi, smem + j * stage);
			cp_async_commit();
		}
		for (int it = 0; it < ntiles; it++) {
			const uint32_t t = t0 + it * kTokens;
			char *sk = smem + (it % NS) * stage, *sv = sk + stage / 2;
			const int nx = it + NS - 1;

			if (nx < ntiles)
				load_stage<HD, TK, DT>(p, sn.table, koff, sk_off, t0 + nx * kTokens,
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
					for (int j = 0; j < 2; j++)
#pragma unroll
						for (int mt = 0; mt < MT; mt++)
							kv_mma<M>::mma(s[mt][nt], qf[mt][j], kb[2 * j],
								       kb[2 * j + 1]);
				}
			}

			/* mask, then the online softmax of each row */
			uint32_t pa[MT][kTokens / 16][4];
#pragma unroll
			for (int mt = 0; mt < MT; mt++) {
				float corr[2];

				if (t + kTokens > first + 1 || p.window)
					softmax_tile<M, kTokens / 8, true>(p, s[mt], rs[mt], pa[mt],
									   corr, t, true);
				else
					softmax_tile<M, kTokens / 8, false>(p, s[mt], rs[mt], pa[mt],
									    corr, t, false);
				rescale<HD>(o[mt], corr);
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
		for (int mt = 0; mt < MT; mt++)
			store_rows<T, HD>(p, sn, rs[mt], o[mt]);
		__syncthreads();
	}
}

template <typename T, int HD, int TK, int MT, int MINB, int NS = 2, int DT = 0>
int launch(const params &p, cudaStream_t st)
{
	/* NS stages of K and V, and the queries when they wait in smem */
	constexpr size_t smem = NS * 2 * TK * HD * 2 + (MT > 1 ? kWarps * 16 * MT * HD * 2 : 0);
	static bool attr_set[KV_CUDA_MAX_DEVICES];

	return launch_grid(kv_prefill_kernel<T, HD, TK, MT, MINB, NS, DT>, p, kRows * MT,
			   kWarps * 32, smem, attr_set, nullptr, st);
}

/*
 * The default, from the variants measured on an H100
 * (Documentation/performance.md): queries not 16-byte aligned, variant 6
 * (the only one reading them 4 bytes at a time); where the wgmma kernel
 * runs (@hd128 and wgmma_ready()), variant 12; else where the grid has
 * enough CTAs to fill the SMs twice over, variant 8 (32 rows per warp, 4
 * stages of 32-token tiles); else, as in a chunked prefill (a long context
 * for few queries), variant 6 (16 rows per warp, no register cap, 3 stages
 * of 64 tokens): more CTAs per SM cannot help a grid that small. A forced
 * 12 where the wgmma kernel cannot run is 6.
 */
static int pick_variant(const params &p, bool hd128)
{
	const uint32_t qpc = kRows / p.group;
	uint64_t ctas = ((uint64_t)p.max_q + qpc - 1) / qpc * (p.q_heads / p.group) * p.batch;
	struct kv_cuda_dev d;
	bool dev = !kv_cuda_device(&d), wgmma = dev && hd128 && wgmma_ready(d);
	int v = kv_cuda_prefill_variant;

	/* every kernel but variant 6 loads queries 16 bytes at a time */
	if ((uintptr_t)p.q & 15)
		return 6;
	if (v == 10 || v == 11 || v == 13)
		v = 12;		/* removed wgmma kernels: the one that stays */
	if (v >= 0)
		return v == 12 && !wgmma ? 6 : v;
	if (wgmma)
		return 12;
	if (!dev)
		return 0;
	return ctas >= 3ull * d.sms * 2 ? 8 : 6;
}

/*
 * A quantized pool: where pick_variant() says 12, the warp-specialized
 * wgmma kernel; where it says 8 (a grid of at least 6 CTAs per SM), the
 * shape of variant 7; else (variant 6, or any other forced) that of
 * variant 6. Queries stay in registers in both mma.sync shapes.
 */
template <typename T, int HD, int DT>
int launch_quant(const params &p, cudaStream_t st)
{
	const int v = pick_variant(p, HD == 128);

	if (HD == 128 && v == 12)
		return launch_sm90<T>(p, DT, st);
	if (v == 8)
		return launch<T, HD, 32, 1, 3, 4, DT>(p, st);
	return launch<T, HD, 64, 1, 1, 3, DT>(p, st);
}

template <typename T, int HD>
int launch_dt(const params &p, uint32_t dtype, cudaStream_t st)
{
	switch (dtype) {
	case KV_DTYPE_INT8:
		return launch_quant<T, HD, KV_DTYPE_INT8>(p, st);
	case KV_DTYPE_FP8_E4M3:
		return launch_quant<T, HD, KV_DTYPE_FP8_E4M3>(p, st);
	default:
		return launch_quant<T, HD, KV_DTYPE_INT4>(p, st);
	}
}

template <typename T, int HD>
int launch_var(const params &p, cudaStream_t st)
{
	switch (pick_variant(p, HD == 128)) {
	case 1:
		return launch<T, HD, 64, 1, 3>(p, st);
	case 2:
		return launch<T, HD, 32, 1, 3>(p, st);
	case 3:
		return launch<T, HD, 32, 1, 4>(p, st);
	case 4:
		return launch<T, HD, 32, 2, 2>(p, st);
	case 5:
		return launch<T, HD, 32, 2, 1>(p, st);
	case 6:
		return launch<T, HD, 64, 1, 1, 3>(p, st);
	case 7:
		return launch<T, HD, 32, 1, 3, 4>(p, st);
	case 8:
		return launch<T, HD, 32, 2, 2, 4>(p, st);
	case 9:
		return launch<T, HD, 64, 2, 2, 2>(p, st);
	case 12:	/* pick_variant() says 12 only where the wgmma kernel runs */
		if constexpr (HD == 128)
			return launch_sm90<T>(p, 0, st);
		[[fallthrough]];
	default:
		return launch<T, HD, 64, 1, 1>(p, st);
	}
}

} /* namespace */

/**
 * kv_prefill_cuda() - paged prefill attention on CUDA
 * @a: arguments (see struct kv_prefill_args; device-accessible pointers)
 *
 * Return: 0 once launched, -EINVAL for bad arguments (among them @q or
 * @out not 4-byte aligned), -EOPNOTSUPP for a dtype or head_dim the CUDA
 * kernel does not cover (fp32 KV; head_dim other than 64 and 128; a GQA
 * group of more than 64 query heads), -ENODEV without a usable device,
 * -EIO when the launch fails.
 */
extern "C" int kv_prefill_cuda(const struct kv_prefill_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	params p = {};
	int err = kv_prefill_check(a);

	if (err)
		return err;
	if (g->dtype == KV_DTYPE_FP32)
		return -EOPNOTSUPP;
	if (g->head_dim != 64 && g->head_dim != 128)
		return -EOPNOTSUPP;
	if (a->q_heads / g->kv_heads > (uint32_t)kRows)
		return -EOPNOTSUPP;
	if (((uintptr_t)a->q | (uintptr_t)a->out) & 3)
		return -EINVAL;		/* every kernel moves pairs of values */
	if ((uintptr_t)a->arena.base & 15)
		return -EINVAL;		/* K/V rows are read 16 bytes at a time */
	if (!a->batch || !a->tokens)
		return 0;

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
	p.block_tokens = g->block_tokens;
	p.bt_shift = kv_bt_shift(g->block_tokens);
	p.stride = a->table_stride;
	p.window = a->window;
	p.scale_log2 = a->scale * 1.4426950408889634f;
	p.max_q = a->max_q_len ? a->max_q_len : a->tokens;

	cudaStream_t st = static_cast<cudaStream_t>(a->stream);
	if (kv_dtype_quantized(g->dtype)) {
		if (kv_io_dtype(g, a->io_dtype) == KV_DTYPE_BF16)
			return g->head_dim == 64 ?
				launch_dt<__nv_bfloat16, 64>(p, g->dtype, st) :
				launch_dt<__nv_bfloat16, 128>(p, g->dtype, st);
		return g->head_dim == 64 ? launch_dt<__half, 64>(p, g->dtype, st) :
					   launch_dt<__half, 128>(p, g->dtype, st);
	}
	if (g->dtype == KV_DTYPE_BF16)
		return g->head_dim == 64 ? launch_var<__nv_bfloat16, 64>(p, st) :
					   launch_var<__nv_bfloat16, 128>(p, st);
	return g->head_dim == 64 ? launch_var<__half, 64>(p, st) :
				   launch_var<__half, 128>(p, st);
}
