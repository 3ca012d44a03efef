/* SPDX-License-Identifier: MIT */
/*
 * What the CUDA prefill kernels share (prefill.cu: mma.sync, any sm_80+;
 * prefill_sm90.cu: the two wgmma kernels, sm_90a): the launch parameters,
 * the sequence checks, the rows a thread owns, the online softmax of one
 * tile of scores held as m16n8 accumulators, the output stores, the
 * launch.
 *
 * Both kernels give a thread the same fragments: rows g and g + 8 of its
 * warp's 16 (g = lane / 4), columns 2c and 2c + 1 (c = lane % 4) of each
 * n8 tile, the layout of mma.sync m16n8 and of wgmma m64nN accumulators.
 */
#ifndef _KVMEM_KERNELS_CUDA_PREFILL_CUH
#define _KVMEM_KERNELS_CUDA_PREFILL_CUH

#include <errno.h>
#include <stdint.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include "kernels/cuda/attn.cuh"
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/widen.cuh"

namespace kv_prefill {

struct params {
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
	uint32_t qtiles;	/* query tiles of a sequence: max_q over qpc, rounded up */
	uint32_t ipc;		/* prefill_sm90.cu: query tiles per CTA, 1 or even */
	uint32_t block_tokens, stride, window;
	int32_t bt_shift;	/* log2(block_tokens) when a power of two, else -1 */
	float scale_log2;
};

constexpr uint32_t kMaxZ = 65535;	/* gridDim.z: sequences per pass */

/* 16 bytes global -> shared; @ok false writes zeros and reads nothing */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool ok)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
		     :: "r"(kv_smem_addr(dst)), "l"(src), "r"(ok ? 16 : 0) : "memory");
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

/* the span [lo, hi) a query at position @pos attends to */
__device__ __forceinline__ void span(const params &p, uint32_t pos, uint32_t &lo, uint32_t &hi)
{
	lo = p.window && pos + 1 > p.window ? pos + 1 - p.window : 0;
	hi = pos + 1;
}

/* the block of the table holding token @tok, and the token's slot in it */
__device__ __forceinline__ uint32_t block_of(const params &p, uint32_t tok, uint32_t &tib)
{
	return kv_block_of(tok, p.block_tokens, p.bt_shift, tib);
}

/* where token @tok's K row of the head at @koff starts in the arena */
template <int HD>
__device__ __forceinline__ const char *k_row(const params &p, const uint32_t *table,
					     uint64_t koff, uint32_t tok)
{
	uint32_t tib, blk = block_of(p, tok, tib);

	return p.kv.arena + table[blk] * p.kv.frame_bytes + koff + (uint64_t)tib * HD * 2;
}

/* the binary16 @h (its bits) in both halves of a pair, for widen8() */
__device__ __forceinline__ uint32_t h2_both(uint16_t h)
{
	return h | (uint32_t)h << 16;
}

/* a float scale as a pair of binary16 for widen8() */
__device__ __forceinline__ uint32_t scale_h2(float s)
{
	return h2_both(__half_as_ushort(__float2half_rn(s)));
}

/*
 * INT4: the two nibbles of byte @j of @w (low first) as binary16 values
 * less 8, exactly: the byte under 0x64 in both halves, the low nibble kept
 * in one (1024 + n) and the high one in the other (1024 + 16 n), then
 * (x - 1032) and (x / 16 - 72) in one FMA.
 */
__device__ __forceinline__ uint32_t u4pair_h2(uint32_t w, int j)
{
	uint32_t x = __byte_perm(w, 0x64646464u, 0x4040 | j | j << 8) & 0xfff0ff0fu;

	return h2_fma(x, 0x2c003c00u, 0xd480e408u);
}

/*
 * Eight quantized values times their scale @s2 (a binary16 pair, both
 * halves alike: scale_h2(), or INT4's group scale as stored) as binary16:
 * INT4, the nibbles of @w.x (low first); INT8 and FP8, the bytes of @w.
 * The values are widened exactly without conversion instructions (INT8,
 * INT4: widen.cuh's magic binary16; FP8: cvt of pairs), then one binary16
 * multiply rounds each product once. INT8/FP8 scales are rounded to
 * binary16 first (half an ulp, 2^-12 relative, far under the
 * quantization's step); INT4's already are, so it gives the products
 * exactly as float math rounded to binary16 would.
 */
template <int DT>
__device__ __forceinline__ uint4 widen8(uint2 w, uint32_t s2)
{
	uint4 r;

	if constexpr (DT == KV_DTYPE_INT4) {
		r = make_uint4(u4pair_h2(w.x, 0), u4pair_h2(w.x, 1), u4pair_h2(w.x, 2),
			       u4pair_h2(w.x, 3));
	} else if constexpr (DT == KV_DTYPE_INT8) {
		uint32_t u0 = w.x ^ 0x80808080u, u1 = w.y ^ 0x80808080u;

		r = make_uint4(i8x2_h2(u0, 0x5140), i8x2_h2(u0, 0x7362),
			       i8x2_h2(u1, 0x5140), i8x2_h2(u1, 0x7362));
	} else {
		r = make_uint4(e4m3x2_h2(w.x), e4m3x2_h2(w.x >> 16), e4m3x2_h2(w.y),
			       e4m3x2_h2(w.y >> 16));
	}
	return make_uint4(h2_mul(r.x, s2), h2_mul(r.y, s2), h2_mul(r.z, s2), h2_mul(r.w, s2));
}

/*
 * struct qchunk - dims 8c .. 8c + 7 of a quantized row as loaded, before
 * qchunk_widen(): @w the values (INT4: in @w.x), @s the scale's bits
 * (INT8/FP8: the block's float; INT4: the group's binary16)
 */
struct qchunk {
	uint2 w;
	uint32_t s;
};

/*
 * Load dims 8c .. 8c + 7 of the row at @row (values; @fb: its frame, @sc:
 * the head's scales in it, @tib: the token in the block) and their scale.
 */
template <int HD, int DT>
__device__ __forceinline__ qchunk qchunk_load(const char *fb, uint64_t sc, uint32_t tib,
					      const char *row, uint32_t c)
{
	if constexpr (DT == KV_DTYPE_INT4)
		return { make_uint2(__ldg(reinterpret_cast<const uint32_t *>(row + c * 4)), 0),
			 __ldg(reinterpret_cast<const unsigned short *>(
				fb + sc + (uint64_t)tib * (HD / 16)) + c / 4) };
	return { __ldg(reinterpret_cast<const uint2 *>(row + c * 8)),
		 __ldg(reinterpret_cast<const uint32_t *>(fb + sc)) };
}

/* the chunk @q (qchunk_load()) times its scale as binary16 (widen8()) */
template <int DT>
__device__ __forceinline__ uint4 qchunk_widen(const qchunk &q)
{
	if constexpr (DT == KV_DTYPE_INT4)
		return widen8<DT>(q.w, h2_both((uint16_t)q.s));
	return widen8<DT>(q.w, scale_h2(__uint_as_float(q.s)));
}

/*
 * struct seq - the sequence a CTA works on in this pass
 * @b: its index; @h: the kv head; @q0: the CTA's first query of it; @nq:
 * its new tokens; @ctx: its context; @table: its block table; @ok: it
 * passed seq_ok()
 */
struct seq {
	uint32_t b, h, q0, nq, ctx;
	const uint32_t *table;
	bool ok;
};

/*
 * sequence @b's q_start entries are in range: it has rows to write; the
 * first sequence's start at 0, the last one's end at tokens (as the CPU
 * implementation checks)
 */
__device__ __forceinline__ bool seq_rows(const params &p, uint32_t b)
{
	return p.q_start[b] <= p.q_start[b + 1] && p.q_start[b + 1] <= p.tokens &&
	       (b || !p.q_start[0]) && (b + 1 < p.batch || p.q_start[b + 1] == p.tokens);
}

/*
 * Sequence @b is sound: q_start in range, its queries fit its context and
 * the grid, its context fits its table, every frame it reads is in the
 * arena. Each of the @nt threads (this one @tid) checks a share of the
 * frames.
 */
__device__ __forceinline__ bool seq_ok(const params &p, const seq &s, uint32_t tid, uint32_t nt)
{
	uint32_t lo, hi, end, top = 0;

	if (!seq_rows(p, s.b) || s.nq > s.ctx || s.nq > p.max_q ||
	    (uint64_t)s.ctx > (uint64_t)p.stride * p.block_tokens)
		return false;
	if (!s.nq)
		return true;
	span(p, s.ctx - s.nq, lo, hi);
	end = (s.ctx - 1) / p.block_tokens;
	/* no exit inside: the loads of a thread's share are in flight together */
#pragma unroll 4
	for (uint32_t i = lo / p.block_tokens + tid; i <= end; i += nt)
		top = max(top, __ldg(s.table + i));
	return top < p.kv.frames;
}

/* the fields of @s for sequence @b, kv head @h, queries from @qt * qpc */
__device__ __forceinline__ void seq_init(const params &p, uint32_t b, uint32_t h, uint32_t qt,
					 seq &s)
{
	s.b = b;
	s.h = h;
	s.q0 = qt * p.qpc;
	s.nq = p.q_start[b + 1] - p.q_start[b];
	s.ctx = p.ctx_lens[b];
	s.table = p.table + (size_t)b * p.stride;
}

/*
 * Sequence @s (seq_init() done) once the threads that set it up have
 * voted @ok on seq_ok(); @report: this thread sets the status of a
 * sequence that failed (one thread of the sequence's first CTA).
 *
 * Return: false when the caller has no rows of the sequence to write.
 */
__device__ __forceinline__ bool seq_enter(const params &p, seq &s, bool ok, bool report)
{
	s.ok = ok;
	if (!ok && report && p.status)
		atomicExch(p.status, -EINVAL);
	if (!ok && !seq_rows(p, s.b))
		return false;
	return s.q0 < s.nq;
}

/*
 * Set up sequence @b for this CTA (of @nt threads; all of them call it).
 * The CTAs of a sequence take its queries last first (the longest spans
 * first: a shorter tail). A sequence that fails seq_ok() has its status
 * set and its rows poisoned with NaN by the CTAs that own them.
 *
 * Return: false when this CTA has no rows of the sequence to write.
 */
__device__ __forceinline__ bool seq_begin(const params &p, uint32_t b, uint32_t nt, seq &s)
{
	seq_init(p, b, blockIdx.y, gridDim.x - 1 - blockIdx.x, s);
	return seq_enter(p, s, __syncthreads_and(seq_ok(p, s, threadIdx.x, nt)),
			 threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0);
}

/*
 * struct row_state - one (query, head) row a thread holds
 * @row: its index in the CTA; @live: it exists (@row < the CTA's rows);
 * @lo, @hi: the span of tokens it attends to; @m: its running maximum
 * (log2 units, scale applied); @l: this thread's share of its sum
 */
struct row_state {
	uint32_t row, lo, hi;
	bool live;
	float m, l;
};

__device__ __forceinline__ void row_init(const params &p, const seq &s, uint32_t nrows,
					 uint32_t row, row_state &r)
{
	r.row = row;
	r.live = row < nrows;
	span(p, s.ctx - s.nq + s.q0 + (r.live ? row / p.group : 0), r.lo, r.hi);
	r.m = -INFINITY;
	r.l = 0.f;
}

/*
 * The tokens the CTA's @nrows rows need: [lo, hi), and the position of its
 * first query.
 */
__device__ __forceinline__ uint32_t cta_span(const params &p, const seq &s, uint32_t nrows,
					     uint32_t &lo, uint32_t &hi)
{
	const uint32_t first = s.ctx - s.nq + s.q0;
	uint32_t end;

	span(p, first, lo, end);
	span(p, first + nrows / p.group - 1, end, hi);
	return first;
}

/*
 * The CTA's K/V tiles of @tk tokens over [@lo, @hi): their count (none for
 * a sequence that failed its checks), the first starting at @t0, the
 * multiple of @tk at or below @lo.
 */
__device__ __forceinline__ int cta_tiles(const seq &s, uint32_t lo, uint32_t hi, uint32_t tk,
					 uint32_t &t0)
{
	t0 = lo / tk * tk;
	return s.ok && hi > t0 ? (int)((hi - t0 + tk - 1) / tk) : 0;
}

/*
 * The online softmax of a tile of scores @s (tokens @t .. @t + 8 NT - 1 of
 * the thread's two rows @r) into binary16/bf16 A fragments @pa of P, and
 * the factors @corr by which the rows' outputs so far are to be rescaled
 * (rescale()). @edge: some token of the tile may be masked for some row
 * (the tile reaches past the first row's position, or a window is set);
 * other tiles skip the masks. MASK false: @edge is known false, and the
 * code has no masks at all (a runtime @edge alone leaves the compiler
 * computing every mask and selecting by @edge: four instructions a score).
 * The scale is applied to the rows' maximum and folded into the
 * exponent's argument (one FFMA per score); a scale that is not positive
 * is applied to the scores first instead.
 */
template <typename M, int NT, bool MASK = true>
__device__ __forceinline__ void softmax_tile(const params &p, float (&s)[NT][4],
					     row_state (&r)[2], uint32_t (&pa)[NT / 2][4],
					     float (&corr)[2], uint32_t t, bool edge)
{
	const int c = threadIdx.x & 3;
	float sl = p.scale_log2, mx[2] = { -INFINITY, -INFINITY }, ref[2];

	if (!(sl > 0.f)) {
#pragma unroll
		for (int nt = 0; nt < NT; nt++)
#pragma unroll
			for (int i = 0; i < 4; i++)
				s[nt][i] *= sl;
		sl = 1.f;
	}
#pragma unroll
	for (int nt = 0; nt < NT; nt++) {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			const row_state &ri = r[i >> 1];
			uint32_t tok = t + nt * 8 + 2 * c + (i & 1);

			if (MASK && edge && (!ri.live || tok < ri.lo || tok >= ri.hi))
				s[nt][i] = -INFINITY;
			mx[i >> 1] = fmaxf(mx[i >> 1], s[nt][i]);
		}
	}
#pragma unroll
	for (int e = 0; e < 2; e++) {
		mx[e] = fmaxf(mx[e], __shfl_xor_sync(0xffffffff, mx[e], 1));
		mx[e] = fmaxf(mx[e], __shfl_xor_sync(0xffffffff, mx[e], 2));
		float mn = fmaxf(r[e].m, mx[e] * sl);	/* sl > 0: -inf stays -inf */

		ref[e] = mn == -INFINITY ? 0.f : mn;
		corr[e] = exp2f(r[e].m - ref[e]);
		r[e].m = mn;
		r[e].l *= corr[e];
	}
#pragma unroll
	for (int nt = 0; nt < NT; nt++) {
		float x[4];
#pragma unroll
		for (int i = 0; i < 4; i++) {
			x[i] = exp2_ftz(fmaf(s[nt][i], sl, -ref[i >> 1]));
			r[i >> 1].l += x[i];
		}
		pa[nt / 2][(nt & 1) * 2] = kv_mma<M>::pack(x[0], x[1]);
		pa[nt / 2][(nt & 1) * 2 + 1] = kv_mma<M>::pack(x[2], x[3]);
	}
}

/* the outputs @o of the thread's two rows times @corr (softmax_tile()) */
template <int HD>
__device__ __forceinline__ void rescale(float (&o)[HD / 8][4], const float (&corr)[2])
{
	/* once the rows' maxima settle, most tiles change none */
	if (__any_sync(0xffffffff, corr[0] != 1.f || corr[1] != 1.f)) {
#pragma unroll
		for (int dt = 0; dt < HD / 8; dt++) {
			o[dt][0] *= corr[0];
			o[dt][1] *= corr[0];
			o[dt][2] *= corr[1];
			o[dt][3] *= corr[1];
		}
	}
}

/*
 * Row @r's outputs (@e: 0 for the thread's row g, 1 for g + 8): @o over
 * the row's sum, NaN for a sequence that failed its checks.
 */
template <typename T, int HD>
__device__ __forceinline__ void store_row(const params &p, const seq &s, const row_state &r,
					  const float (&o)[HD / 8][4], int e)
{
	const int c = threadIdx.x & 3;
	float sum = r.l;

	sum += __shfl_xor_sync(0xffffffff, sum, 1);
	sum += __shfl_xor_sync(0xffffffff, sum, 2);
	if (!r.live)
		return;
	float inv = !s.ok ? NAN : sum > 0.f ? 1.f / sum : 0.f;
	T *orow = static_cast<T *>(p.out) +
		((size_t)(p.q_start[s.b] + s.q0 + r.row / p.group) * p.q_heads +
		 s.h * p.group + r.row % p.group) * HD;
#pragma unroll
	for (int dt = 0; dt < HD / 8; dt++)
		kv_mma<T>::store2(orow + dt * 8 + 2 * c, o[dt][2 * e] * inv, o[dt][2 * e + 1] * inv);
}

/* both rows @r of the thread: store_row() */
template <typename T, int HD>
__device__ __forceinline__ void store_rows(const params &p, const seq &s,
					   const row_state (&r)[2], const float (&o)[HD / 8][4])
{
	store_row<T, HD>(p, s, r[0], o, 0);
	store_row<T, HD>(p, s, r[1], o, 1);
}

/* where row @row's query vector starts */
template <typename T, int HD>
__device__ __forceinline__ const T *q_row(const params &p, const seq &s, uint32_t row)
{
	return static_cast<const T *>(p.q) +
		((size_t)(p.q_start[s.b] + s.q0 + row / p.group) * p.q_heads +
		 s.h * p.group + row % p.group) * HD;
}

/*
 * Launch @kern (@threads threads, @smem bytes of dynamic shared memory)
 * over the grid of query tiles of @rows (query, head) rows (p.max_q
 * queries of a sequence at most), kv heads and sequences; @attr_set: per
 * device, whether @kern's shared memory limit was raised (the caller's,
 * one per kernel); @pick_ipc: query tiles per CTA from the query tiles
 * of a sequence and the device (1, or an even number of them in pairs,
 * cta_qtile()), NULL for one. Return: 0, -EINVAL for more query tiles
 * than a grid holds, -ENODEV, or -EIO.
 */
template <typename K>
int launch_grid(K kern, const params &p0, uint32_t rows, int threads, size_t smem,
		bool *attr_set,
		uint32_t (*pick_ipc)(const params &, uint64_t, const struct kv_cuda_dev &),
		cudaStream_t st)
{
	params p = p0;
	struct kv_cuda_dev d;
	uint64_t tiles;

	p.qpc = rows / p.group;
	tiles = ((uint64_t)p.max_q + p.qpc - 1) / p.qpc;
	if (tiles > 0x7fffffffu)
		return -EINVAL;
	if (kv_cuda_device(&d))
		return -ENODEV;
	p.qtiles = (uint32_t)tiles;
	p.ipc = pick_ipc ? pick_ipc(p, tiles, d) : 1;
	if (p.ipc > 1)	/* pairs of tiles, ipc / 2 of them per CTA */
		tiles = ((tiles + 1) / 2 + p.ipc / 2 - 1) / (p.ipc / 2);
	if (!__atomic_load_n(&attr_set[d.id], __ATOMIC_ACQUIRE)) {
		if (smem > 48 * 1024 &&
		    cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
					 (int)smem) != cudaSuccess)
			return -EIO;
		__atomic_store_n(&attr_set[d.id], true, __ATOMIC_RELEASE);
	}
	dim3 grid((uint32_t)tiles, p.q_heads / p.group, p.batch < kMaxZ ? p.batch : kMaxZ);
	kern<<<grid, threads, smem, st>>>(p);
	return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}

/*
 * wgmma_ready() - device @d runs the wgmma kernel of prefill_sm90.cu: it is
 * of compute capability 9.0, and the library holds sm_90a code for it (a
 * build without it runs an empty kernel there).
 */
bool wgmma_ready(const struct kv_cuda_dev &d);

/*
 * launch_sm90() - launch the warp-specialized wgmma kernel
 * (prefill_sm90.cu) for a pool of head_dim 128 on a device where
 * wgmma_ready(); for a quantized @dtype its copying warpgroup widens the
 * tiles; T is the type of the queries and outputs. Return: as
 * launch_grid().
 */
template <typename T>
int launch_sm90(const params &p, uint32_t dtype, cudaStream_t st);

} /* namespace kv_prefill */

#endif /* _KVMEM_KERNELS_CUDA_PREFILL_CUH */
