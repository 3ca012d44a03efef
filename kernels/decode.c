// SPDX-License-Identifier: MIT
/*
 * Paged decode attention on the CPU: one query token per sequence against
 * the K and V of one layer, read block by block through a block table.
 *
 * Work is split by (sequence, kv head): the query heads of one GQA group are
 * handled together, so each K and V vector is read from the arena once and
 * used by every query head of its group. Tokens are taken in tiles of 16,
 * widened to float once and folded into a running (online) softmax in
 * float arithmetic; the blocking is described below.
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/dtype.h"
#include "kernels/quant.h"
#include "kernels/simd.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

/*
 * Blocking. A work item is one (sequence, kv head); its context is taken in
 * tiles of 16 tokens (KV_LANES), which may span blocks. A tile's K and V
 * are widened to float once, into L1-resident scratch laid out as
 * [hdp / 16][16 tokens][16 dims] (hdp: head_dim rounded up to 16, the pad
 * zero): vector (c, t) holds dims 16c..16c+15 of token t. Then, for every
 * query head of the group, like a small GEMM:
 *
 *  - scores: one accumulator per token, a vector over 16 dims:
 *    acc[t] += K(c, t) * q(c), one query vector per c, all from L1.
 *    kv_v16_rowsums4() and kv_v16_rowsums_end() then sum and transpose the
 *    16 accumulators into one vector of the 16 scores.
 *  - softmax: one max, one rescale and one vector exponential per tile and
 *    head (the online softmax a tile at a time, not a token at a time).
 *  - P.V: a block of up to 8 heads x 2 output vectors (or 4 x 4) stays in
 *    registers over the 16 tokens; each V vector is loaded once for the
 *    heads of the block and each weight broadcast once for its vectors.
 *
 * With 32 zmm registers all 16 score accumulators and the 8 x 2 P.V block
 * are live at once; with 16 ymm (a kv_v16f is two of them) the scores go
 * in four passes of 4 tokens and P.V in blocks of at most 4 vectors (see
 * kv_tile_fold_regs()). While a tile is computed, the next one is
 * prefetched from the arena, a few lines per head. Accumulation is in
 * float throughout.
 */

/* Query heads whose outputs are updated together in the P.V pass. */
#define KV_HEADS_MAX	8u

struct kv_decode_job {
	const struct kv_decode_args *a;
	__u32 group;
	__u32 hdp;
	__u32 io;	/* dtype of q and out */
	_Atomic int err;
};

/* Scratch of one work item: float, 64-byte aligned, rows of hdp. */
struct kv_decode_scratch {
	float *q;	/* [group][hdp] queries times the softmax scale */
	float *o;	/* [group][hdp] unnormalized outputs */
	float *k;	/* the tile's K, [hdp / 16][16][16] */
	float *v;	/* the tile's V, the same */
	float *p;	/* [group][16] the tile's softmax weights */
	float *m;	/* [group] running max of the scores */
	float *l;	/* [group] running sum of the weights */
	float *c;	/* [group] rescale of o for this tile */
};

/*
 * Where the next tile starts: its first run of tokens inside one block, K
 * and V, @bytes each. kv_tile_fold() prefetches it a slice per query head
 * while it computes: each block of a sequence is a random frame, so the
 * hardware prefetchers only find it after it has been missed, and one
 * burst of prefetches stalls on the miss buffers as the loads would
 * (measured on the 2-core VM, one thread: one burst per tile gained
 * nothing, the slices took a quarter off).
 */
struct kv_next_tile {
	const char *k, *v;
	__u64 bytes;
};

/* Offset of vector (c, t) of a tile, with c given as its first dim d = 16c. */
static inline size_t kv_tile_at(__u32 d, __u32 t)
{
	return (size_t)d * KV_LANES + (size_t)t * KV_LANES;
}

typedef uint16_t kv_v16h __attribute__((vector_size(32)));

/* 16 elements of @dtype at @src as float. */
KV_INLINE kv_v16f kv_v16_widen(const void *src, __u32 dtype)
{
	kv_v16h h;
	kv_v16i x, o, r;

	if (dtype == KV_DTYPE_FP32)
		return kv_v16_load(src);
	memcpy(&h, src, sizeof(h));
	x = __builtin_convertvector(h, kv_v16i);
	if (dtype == KV_DTYPE_BF16)
		return (kv_v16f)(x << 16);
	/* kv_f16_to_f32(), 16 lanes at a time */
	o = (x & 0x7fff) << 13;
	r = (kv_v16i)((kv_v16f)o * 0x1p112f);
	r |= ((o & 0x0f800000) == 0x0f800000) & 0x7f800000;
	return (kv_v16f)(r | (x & 0x8000) << 16);
}

/*
 * bf16 rows of a multiple of 32 elements are widened 32 at a time from one
 * 64-byte load: as 16 ints, each holds an even element in its low half and
 * the next odd one in its high half, so x << 16 is the even ones as float
 * and x & 0xffff0000 the odd ones. The tile then holds each group of 32
 * dims as its 16 even dims, then its 16 odd dims; kv_dim_slot() gives that
 * order, which the queries and outputs of the work item follow too (a
 * score sums over all dims, a P.V output is per dim: neither cares).
 */
static inline int kv_bf16_pairs(__u32 dtype, __u32 hd)
{
	return dtype == KV_DTYPE_BF16 && hd % (2 * KV_LANES) == 0;
}

/* Position of dim @d in the rows of the tile, the queries and the outputs. */
static inline __u32 kv_dim_slot(__u32 dtype, __u32 hd, __u32 d)
{
	__u32 i = d % (2 * KV_LANES);

	if (!kv_bf16_pairs(dtype, hd))
		return d;
	return d - i + (i & 1) * KV_LANES + i / 2;
}

/*
 * Widen @r rows of @hd elements of @dtype at @src (rows contiguous, as in a
 * block) into tile rows from @dst (tile base + row index * 16).
 */
static KV_SIMD_CLONES void kv_widen_rows(float *restrict dst,
					 const void *restrict src, __u32 dtype,
					 __u32 r, __u32 hd)
{
	__u32 esz = kv_dtype_size(dtype), t, d;
	const char *s = src;

	if (kv_bf16_pairs(dtype, hd)) {
		for (t = 0; t < r; t++, s += (size_t)hd * esz) {
			for (d = 0; d < hd; d += 2 * KV_LANES) {
				kv_v16i x;

				memcpy(&x, s + (size_t)d * esz, sizeof(x));
				kv_v16_store(dst + kv_tile_at(d, t),
					     (kv_v16f)(x << 16));
				kv_v16_store(dst + kv_tile_at(d + KV_LANES, t),
					     (kv_v16f)(x & ~0xffff));
			}
		}
		return;
	}
	for (t = 0; t < r; t++, s += (size_t)hd * esz) {
		for (d = 0; d + KV_LANES <= hd; d += KV_LANES)
			kv_v16_store(dst + kv_tile_at(d, t),
				     kv_v16_widen(s + (size_t)d * esz, dtype));
		for (; d < hd; d++)
			dst[kv_tile_at(d & ~(KV_LANES - 1), t) + d % KV_LANES] =
				kv_load_f32(s, dtype, d);
	}
}

#if defined(__x86_64__) && defined(__GNUC__)
/*
 * fp16 with the F16C conversion instructions: the generic kv_v16_widen()
 * takes about ten operations per vector for what vcvtph2ps does in one.
 * Intrinsics cannot go in a target_clones function, hence these two,
 * picked at run time by kv_tile_widen().
 */
__attribute__((target("avx512f")))
static void kv_widen_rows_f16_avx512(float *restrict dst,
				     const uint16_t *restrict src, __u32 r,
				     __u32 hd)
{
	__u32 t, d;

	for (t = 0; t < r; t++, src += hd) {
		for (d = 0; d + KV_LANES <= hd; d += KV_LANES)
			_mm512_storeu_ps(dst + kv_tile_at(d, t), _mm512_cvtph_ps(
				_mm256_loadu_si256((const __m256i *)(src + d))));
		for (; d < hd; d++)
			dst[kv_tile_at(d & ~(KV_LANES - 1), t) + d % KV_LANES] =
				kv_f16_to_f32(src[d]);
	}
}

__attribute__((target("avx,f16c")))
static void kv_widen_rows_f16c(float *restrict dst,
			       const uint16_t *restrict src, __u32 r, __u32 hd)
{
	__u32 t, d;

	for (t = 0; t < r; t++, src += hd) {
		for (d = 0; d + KV_LANES <= hd; d += KV_LANES) {
			float *o = dst + kv_tile_at(d, t);

			_mm256_storeu_ps(o, _mm256_cvtph_ps(
				_mm_loadu_si128((const __m128i *)(src + d))));
			_mm256_storeu_ps(o + 8, _mm256_cvtph_ps(
				_mm_loadu_si128((const __m128i *)(src + d + 8))));
		}
		for (; d < hd; d++)
			dst[kv_tile_at(d & ~(KV_LANES - 1), t) + d % KV_LANES] =
				kv_f16_to_f32(src[d]);
	}
}
#endif

static void kv_tile_widen(float *dst, const void *src, __u32 dtype, __u32 r,
			  __u32 hd)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (dtype == KV_DTYPE_FP16 && __builtin_cpu_supports("avx512f")) {
		kv_widen_rows_f16_avx512(dst, src, r, hd);
		return;
	}
	if (dtype == KV_DTYPE_FP16 && __builtin_cpu_supports("f16c") &&
	    __builtin_cpu_supports("avx")) {
		kv_widen_rows_f16c(dst, src, r, hd);
		return;
	}
#endif
	kv_widen_rows(dst, src, dtype, r, hd);
}

/*
 * The 16 scores of query @q against the tile @k (see the blocking above).
 * The token accumulators are made @ng groups of 4 tokens at a time (tokens
 * g, g+4, g+8, g+12 for group g; the order kv_v16_rowsums4() wants), so
 * that 4 * ng of them fit in the registers with the query and a K vector.
 */
KV_INLINE kv_v16f kv_tile_head_scores(const float *k, const float *q,
				      __u32 hdp, const __u32 ng)
{
	kv_v16f y[4];
	__u32 g0, g, i, d;

	for (g0 = 0; g0 < 4; g0 += ng) {
		kv_v16f acc[4][4];

		KV_UNROLL(4)
		for (g = 0; g < ng; g++) {
			KV_UNROLL(4)
			for (i = 0; i < 4; i++)
				acc[g][i] = (kv_v16f){};
		}
		for (d = 0; d < hdp; d += KV_LANES) {
			const float *kc = k + kv_tile_at(d, g0);
			kv_v16f qv = kv_v16_load(q + d);

			KV_UNROLL(4)
			for (g = 0; g < ng; g++) {
				KV_UNROLL(4)
				for (i = 0; i < 4; i++)
					acc[g][i] += qv * kv_v16_load(kc +
						kv_tile_at(0, g + 4 * i));
			}
		}
		KV_UNROLL(4)
		for (g = 0; g < ng; g++)
			y[g0 + g] = kv_v16_rowsums4(acc[g][0], acc[g][1],
						    acc[g][2], acc[g][3]);
	}
	return kv_v16_rowsums_end(y[0], y[1], y[2], y[3]);
}

/*
 * Fold the scores @sc of head @j (lanes from @n on are past the context)
 * into its running max and sum; leave the weights in p and the factor for
 * the outputs so far in c. The outputs need no rescale (c = 1) unless the
 * tile raises the max, which after the first few tiles is rare.
 */
KV_INLINE void kv_tile_softmax(const struct kv_decode_scratch *s, __u32 j,
			       kv_v16f sc, __u32 n)
{
	const kv_v16i lane = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
	float mx, c = 1.0f;

	if (n < KV_LANES)
		sc = kv_v16_select(lane < (int)n, sc, (kv_v16f){} - INFINITY);
	mx = kv_v16_hmax(sc);
	if (mx > s->m[j]) {
		c = expf(s->m[j] - mx);
		s->m[j] = mx;
	}
	sc = kv_v16_exp(sc - s->m[j]);
	s->l[j] = s->l[j] * c + kv_v16_hsum(sc);
	s->c[j] = c;
	kv_v16_store(s->p + (size_t)j * KV_LANES, sc);
}

/*
 * o[j] = o[j] * c[j] + sum_t p[j][t] v[t] for @nh heads from @j0, on the
 * @cb vectors of dimensions from @d.
 */
KV_INLINE void kv_tile_pv_block(const struct kv_decode_scratch *s, __u32 j0,
				const __u32 nh, const __u32 cb, __u32 d,
				__u32 n, __u32 hdp)
{
	kv_v16f acc[KV_HEADS_MAX][4];
	const float *v = s->v + kv_tile_at(d, 0);
	__u32 t, j, c;

	KV_UNROLL(8)
	for (j = 0; j < nh; j++) {
		KV_UNROLL(4)
		for (c = 0; c < cb; c++)
			acc[j][c] = kv_v16_load(s->o + (size_t)(j0 + j) * hdp + d +
						c * KV_LANES) * s->c[j0 + j];
	}
	for (t = 0; t < n; t++, v += KV_LANES) {
		KV_UNROLL(8)
		for (j = 0; j < nh; j++) {
			float w = s->p[(size_t)(j0 + j) * KV_LANES + t];

			KV_UNROLL(4)
			for (c = 0; c < cb; c++)
				acc[j][c] += w * kv_v16_load(v +
						kv_tile_at(c * KV_LANES, 0));
		}
	}
	KV_UNROLL(8)
	for (j = 0; j < nh; j++) {
		KV_UNROLL(4)
		for (c = 0; c < cb; c++)
			kv_v16_store(s->o + (size_t)(j0 + j) * hdp + d + c * KV_LANES,
				     acc[j][c]);
	}
}

/* All of hdp for @nh heads, @cb vectors of dimensions at a time. */
KV_INLINE void kv_tile_pv(const struct kv_decode_scratch *s, __u32 j0,
			  const __u32 nh, const __u32 cb, __u32 n, __u32 hdp)
{
	__u32 d;

	for (d = 0; d + cb * KV_LANES <= hdp; d += cb * KV_LANES)
		kv_tile_pv_block(s, j0, nh, cb, d, n, hdp);
	for (; d < hdp; d += KV_LANES)
		kv_tile_pv_block(s, j0, nh, 1, d, n, hdp);
}

/* Prefetch @bytes of K from @k and of V from @v. */
KV_INLINE void kv_prefetch(const char *k, const char *v, __u64 bytes)
{
	__u64 off;

	for (off = 0; off < bytes; off += 64) {
		__builtin_prefetch(k + off);
		__builtin_prefetch(v + off);
	}
}

/*
 * Fold one tile of @n (<= 16) tokens, already widened into s->k and s->v,
 * into the state of all @group heads, keeping at most @regs kv_v16f
 * accumulators live: 16 where a kv_v16f is one of 32 zmm registers, 4 where
 * it is two of 16 ymm (or four of 16 xmm). For P.V the heads go in blocks
 * of 8 (with @regs 16), 4, 2, 1, each compiled with its size known and its
 * accumulators in registers, over as many output vectors as @regs allows.
 */
KV_INLINE void kv_tile_fold_regs(const struct kv_decode_scratch *s,
				 __u32 group, __u32 n, __u32 hdp,
				 const struct kv_next_tile *nt, const __u32 regs)
{
	__u64 step = (nt->bytes / group + 63) & ~(__u64)63, off = 0;
	__u32 j, nh;

	for (j = 0; j < group; j++, off += step) {
		const float *q = s->q + (size_t)j * hdp;

		kv_prefetch(nt->k + off, nt->v + off, off < nt->bytes ?
			    nt->bytes - off < step ? nt->bytes - off : step : 0);
		kv_tile_softmax(s, j, kv_tile_head_scores(s->k, q, hdp, regs / 4),
				n);
	}
	for (j = 0; j < group; j += nh) {
		nh = group - j >= 8 && regs >= 16 ? 8 : group - j >= 4 ? 4 :
		     group - j >= 2 ? 2 : 1;
		switch (nh) {
		case 8:
			kv_tile_pv(s, j, 8, regs / 8, n, hdp);
			break;
		case 4:
			kv_tile_pv(s, j, 4, regs / 4 < 4 ? regs / 4 : 4, n, hdp);
			break;
		case 2:
			kv_tile_pv(s, j, 2, regs / 2 < 4 ? regs / 2 : 4, n, hdp);
			break;
		default:
			kv_tile_pv(s, j, 1, 4, n, hdp);
		}
	}
}

/*
 * Whether kv_tile_fold() runs with 32 vector registers of 16 floats: in
 * its x86-64-v4 clone, which the loader picks where the CPU has it, or
 * where the whole build targets AVX-512.
 */
static inline int kv_have_zmm(void)
{
#if KV_SIMD_CLONED
	return __builtin_cpu_supports("x86-64-v4");
#elif defined(__AVX512F__)
	return 1;
#else
	return 0;
#endif
}

/* kv_tile_fold_regs() with the register budget of the running clone. */
static KV_SIMD_CLONES void kv_tile_fold(const struct kv_decode_scratch *s,
					__u32 group, __u32 n, __u32 hdp,
					const struct kv_next_tile *nt)
{
	if (kv_have_zmm())
		kv_tile_fold_regs(s, group, n, hdp, nt, 16);
	else
		kv_tile_fold_regs(s, group, n, hdp, nt, 4);
}

/*
 * Widen K or V (@kv) of kv head @h for tokens [t, t + n) of one sequence
 * into the tile @dst; the tokens may span blocks.
 */
static void kv_tile_load(const struct kv_decode_args *a, const __u32 *table,
			 __u32 kv, __u32 h, __u32 t, __u32 n, float *dst)
{
	const struct kv_geometry *g = &a->arena.g;
	__u32 bt = g->block_tokens, i = 0;
	__u64 fb = kv_frame_bytes(g);

	while (i < n) {
		__u32 tib = (t + i) % bt, r = bt - tib < n - i ? bt - tib : n - i;
		const char *block = (const char *)a->arena.base +
				    table[(t + i) / bt] * fb;

		if (kv_dtype_quantized(g->dtype))
			kv_dequant_rows(g, block, a->layer, kv, h, tib, r,
					dst + kv_tile_at(0, i), KV_LANES,
					(size_t)KV_LANES * KV_LANES);
		else
			kv_tile_widen(dst + kv_tile_at(0, i),
				      block + kv_elem_offset(g, a->layer, kv, h, tib),
				      g->dtype, r, g->head_dim);
		i += r;
	}
}

/* Fill @nt for the tile at token @t of kv head @h (none when @t is @end). */
static void kv_next_tile_find(const struct kv_decode_args *a,
			      const __u32 *table, __u32 h, __u32 t, __u32 end,
			      struct kv_next_tile *nt)
{
	const struct kv_geometry *g = &a->arena.g;
	__u32 bt = g->block_tokens, tib = t % bt;
	__u32 r = bt - tib < end - t ? bt - tib : end - t;

	nt->bytes = 0;
	if (t >= end)
		return;
	if (r > KV_LANES)
		r = KV_LANES;
	nt->k = (const char *)a->arena.base + table[t / bt] * kv_frame_bytes(g) +
		kv_elem_offset(g, a->layer, KV_K, h, tib);
	nt->v = nt->k + g->kv_heads * kv_head_bytes(g);
	nt->bytes = (__u64)r * kv_row_bytes(g);
}

/* Carve @s out of one zeroed allocation; NULL when out of memory. */
static void *kv_scratch_alloc(struct kv_decode_scratch *s, __u32 group,
			      __u32 hdp)
{
	size_t gp = (group + KV_LANES - 1) / KV_LANES * KV_LANES;
	size_t n = 2 * (size_t)group * hdp + 2 * KV_LANES * (size_t)hdp +
		   (size_t)group * KV_LANES + 3 * gp;
	float *f = aligned_alloc(64, n * sizeof(float));

	if (!f)
		return NULL;
	memset(f, 0, n * sizeof(float));
	s->q = f;
	s->o = s->q + (size_t)group * hdp;
	s->k = s->o + (size_t)group * hdp;
	s->v = s->k + (size_t)KV_LANES * hdp;
	s->p = s->v + (size_t)KV_LANES * hdp;
	s->m = s->p + (size_t)group * KV_LANES;
	s->l = s->m + gp;
	s->c = s->l + gp;
	return f;
}

/*
 * One (sequence, kv head) item: the context is taken in tiles of 16
 * tokens, each widened to float once (K and V into L1-resident scratch)
 * and then used by every query head of the group (see the blocking above).
 */
static void kv_decode_item(void *arg, uint64_t item)
{
	struct kv_decode_job *job = arg;
	const struct kv_decode_args *a = job->a;
	const struct kv_geometry *g = &a->arena.g;
	__u32 group = job->group, hd = g->head_dim, hdp = job->hdp, io = job->io;
	__u32 b = (__u32)(item / g->kv_heads), h = (__u32)(item % g->kv_heads);
	__u32 ctx = a->ctx_lens[b], t, j, d, n;
	__u32 start = a->window && ctx > a->window ? ctx - a->window : 0;
	__u64 qoff = ((__u64)b * a->q_heads + (__u64)h * group) * hd;
	const __u32 *table = a->block_table + (size_t)b * a->table_stride;
	struct kv_decode_scratch s;
	struct kv_next_tile nt;
	void *mem = kv_scratch_alloc(&s, group, hdp);

	if (!mem) {
		atomic_store(&job->err, -ENOMEM);
		return;
	}
	for (j = 0; j < group; j++) {
		float *q = s.q + (size_t)j * hdp;

		for (d = 0; d < hd; d++)
			q[kv_dim_slot(g->dtype, hd, d)] = a->scale *
				kv_load_f32(a->q, io, qoff + (__u64)j * hd + d);
		s.m[j] = -INFINITY;
	}

	for (t = start; t < ctx; t += n) {
		n = ctx - t < KV_LANES ? ctx - t : KV_LANES;
		kv_tile_load(a, table, KV_K, h, t, n, s.k);
		kv_tile_load(a, table, KV_V, h, t, n, s.v);
		kv_next_tile_find(a, table, h, t + n, ctx, &nt);
		kv_tile_fold(&s, group, n, hdp, &nt);
	}

	for (j = 0; j < group; j++) {
		const float *o = s.o + (size_t)j * hdp;
		float inv = s.l[j] > 0.0f ? 1.0f / s.l[j] : 0.0f;

		for (d = 0; d < hd; d++)
			kv_store_f32(a->out, io, qoff + (__u64)j * hd + d,
				     o[kv_dim_slot(g->dtype, hd, d)] * inv);
	}
	free(mem);
}

/*
 * Data-dependent checks, before anything is written: every context fits its
 * block table and every frame it reads is inside the arena.
 */
static int kv_decode_check_tables(const struct kv_decode_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	__u32 b, i;

	for (b = 0; b < a->batch; b++) {
		const __u32 *table = a->block_table + (size_t)b * a->table_stride;
		__u32 ctx = a->ctx_lens[b];
		__u32 start = a->window && ctx > a->window ? ctx - a->window : 0;

		if ((__u64)ctx > (__u64)a->table_stride * g->block_tokens)
			return -EINVAL;
		if (!ctx)
			continue;
		for (i = start / g->block_tokens; i <= (ctx - 1) / g->block_tokens; i++)
			if (table[i] >= a->arena.frames)
				return -EINVAL;
	}
	return 0;
}

/**
 * kv_decode_cpu() - paged decode attention on the CPU
 * @a: arguments (see struct kv_decode_args)
 *
 * Return: 0, -EINVAL for bad arguments (nothing written), -ENOMEM.
 */
int kv_decode_cpu(const struct kv_decode_args *a)
{
	struct kv_decode_job job = { .a = a };
	const struct kv_geometry *g = &a->arena.g;
	__u64 items, per_item;
	int err;

	err = kv_decode_check(a);
	if (!err)
		err = kv_decode_check_tables(a);
	if (err) {
		if (a->status)
			*a->status = err;
		return err;
	}
	job.group = a->q_heads / g->kv_heads;
	job.io = kv_io_dtype(g, a->io_dtype);
	job.hdp = (g->head_dim + KV_LANES - 1) / KV_LANES * KV_LANES;
	atomic_init(&job.err, 0);
	items = (__u64)a->batch * g->kv_heads;
	/* a thread pays for itself above a few hundred KB of KV */
	per_item = 2 * kv_head_bytes(g) * (a->table_stride ? a->table_stride : 1);
	kv_parallel_for(items, a->threads, per_item >= (256u << 10) ? 1 :
			(256u << 10) / per_item + 1, kv_decode_item, &job);
	err = atomic_load(&job.err);
	if (err && a->status)
		*a->status = err;
	return err;
}
