// SPDX-License-Identifier: MIT
/*
 * Paged prefill attention on the CPU: a ragged batch of query tokens, each
 * attending causally to its sequence's cached KV and to the queries before
 * it, read block by block through a block table.
 *
 * A work item is (sequence, chunk of up to KV_PF_ROWS queries, kv head):
 * the chunk's queries times the query heads of the GQA group are its rows,
 * so each K and V tile is widened to float once and used by all of them.
 * Tokens go in tiles of 16 from the first one any row may see to the last;
 * a token outside a row's span (after its position, or before its window)
 * is masked for that row. Scores, an online softmax and P.V in float.
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

#define KV_PF_ROWS	16u	/* queries per work item */
#define KV_PF_TILE	16u	/* tokens per tile */

struct kv_prefill_job {
	const struct kv_prefill_args *a;
	__u32 group;
	__u32 io;		/* dtype of q and out */
	__u64 *chunk_start;	/* [batch + 1] first chunk of each sequence */
	_Atomic int err;
};

/* Scratch of one work item, floats. */
struct kv_prefill_scratch {
	float *q;	/* [rows][hd] queries times the scale */
	float *o;	/* [rows][hd] unnormalized outputs */
	float *k;	/* [16][hd] the tile's K */
	float *v;	/* [16][hd] the tile's V */
	float *m;	/* [rows] running max */
	float *l;	/* [rows] running sum */
};

/* [lo, hi): the tokens a query at position @pos attends to. */
static inline void kv_prefill_span(const struct kv_prefill_args *a, __u32 pos,
				   __u32 *lo, __u32 *hi)
{
	*lo = a->window && pos + 1 > a->window ? pos + 1 - a->window : 0;
	*hi = pos + 1;
}

/* Widen @r 16-bit or fp32 rows of @hd elements of @dtype at @src into @dst. */
static void kv_prefill_widen(float *dst, const void *src, __u32 dtype, __u32 r, __u32 hd)
{
	const uint16_t *e = src;
	size_t i, n = (size_t)r * hd;

	/* the dtype outside the loop, so that each loop vectorizes */
	if (dtype == KV_DTYPE_BF16) {
		KV_SIMD
		for (i = 0; i < n; i++)
			dst[i] = kv_bf16_to_f32(e[i]);
	} else if (dtype == KV_DTYPE_FP16) {
		KV_SIMD
		for (i = 0; i < n; i++)
			dst[i] = kv_f16_to_f32(e[i]);
	} else {
		memcpy(dst, src, n * sizeof(float));
	}
}

/*
 * Widen K or V (@kv) of kv head @h, tokens [t, t + n), into @dst rows; a
 * run of tokens inside one block at a time (its rows are contiguous).
 */
static void kv_prefill_tile(const struct kv_prefill_args *a, const __u32 *table,
			    __u32 kv, __u32 h, __u32 t, __u32 n, float *dst)
{
	const struct kv_geometry *g = &a->arena.g;
	__u32 hd = g->head_dim, bt = g->block_tokens, i = 0;

	while (i < n) {
		__u32 tib = (t + i) % bt, r = bt - tib < n - i ? bt - tib : n - i;
		const char *block = (const char *)a->arena.base +
				    table[(t + i) / bt] * kv_frame_bytes(g);
		float *rows = dst + (size_t)i * hd;

		if (kv_dtype_quantized(g->dtype))
			kv_dequant_rows(g, block, a->layer, kv, h, tib, r, rows, hd, 16);
		else
			kv_prefill_widen(rows, block + kv_elem_offset(g, a->layer, kv, h, tib),
					 g->dtype, r, hd);
		i += r;
	}
}

/* Fold tile [t, t + n) into row @r of query position @pos. */
KV_INLINE void kv_prefill_fold_row(const struct kv_prefill_args *a,
				   const struct kv_prefill_scratch *s, __u32 r,
				   __u32 pos, __u32 t, __u32 n)
{
	__u32 hd = a->arena.g.head_dim, lo, hi, i, d;
	const float *q = s->q + (size_t)r * hd;
	float *o = s->o + (size_t)r * hd;
	float sc[KV_PF_TILE], mx = -INFINITY, c;

	kv_prefill_span(a, pos, &lo, &hi);
	for (i = 0; i < n; i++) {
		const float *k = s->k + (size_t)i * hd;
		float acc = 0.0f;

		if (t + i < lo || t + i >= hi) {
			sc[i] = -INFINITY;
			continue;
		}
		KV_SIMD_SUM(acc)
		for (d = 0; d < hd; d++)
			acc += q[d] * k[d];
		sc[i] = acc;
		mx = fmaxf(mx, acc);
	}
	if (mx == -INFINITY)
		return;		/* nothing of this tile is visible */
	if (mx > s->m[r]) {
		c = s->m[r] == -INFINITY ? 0.0f : expf(s->m[r] - mx);
		s->m[r] = mx;
		s->l[r] *= c;
		KV_SIMD
		for (d = 0; d < hd; d++)
			o[d] *= c;
	}
	for (i = 0; i < n; i++) {
		const float *v = s->v + (size_t)i * hd;
		float w = sc[i] == -INFINITY ? 0.0f : expf(sc[i] - s->m[r]);

		if (w == 0.0f)
			continue;
		s->l[r] += w;
		KV_SIMD
		for (d = 0; d < hd; d++)
			o[d] += w * v[d];
	}
}

/* Fold tile [t, t + n) into every row; row r is query @first + r / @group. */
static KV_SIMD_CLONES void kv_prefill_fold(const struct kv_prefill_args *a,
					   const struct kv_prefill_scratch *s, __u32 rows,
					   __u32 group, __u32 first, __u32 t, __u32 n)
{
	__u32 r;

	for (r = 0; r < rows; r++)
		kv_prefill_fold_row(a, s, r, first + r / group, t, n);
}

/* Carve @s out of one zeroed allocation; NULL when out of memory. */
static void *kv_prefill_scratch_alloc(struct kv_prefill_scratch *s,
				      __u32 rows, __u32 hd)
{
	size_t n = 2 * (size_t)rows * hd + 2 * (size_t)KV_PF_TILE * hd + 2 * rows;
	float *f = calloc(n, sizeof(float));

	if (!f)
		return NULL;
	s->q = f;
	s->o = s->q + (size_t)rows * hd;
	s->k = s->o + (size_t)rows * hd;
	s->v = s->k + (size_t)KV_PF_TILE * hd;
	s->m = s->v + (size_t)KV_PF_TILE * hd;
	s->l = s->m + rows;
	return f;
}

/* The sequence of chunk @c (binary search in chunk_start). */
static __u32 kv_prefill_seq(const struct kv_prefill_job *job, __u64 c)
{
	__u32 lo = 0, hi = job->a->batch;

	while (hi - lo > 1) {
		__u32 mid = lo + (hi - lo) / 2;

		if (job->chunk_start[mid] <= c)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static void kv_prefill_item(void *arg, uint64_t item)
{
	struct kv_prefill_job *job = arg;
	const struct kv_prefill_args *a = job->a;
	const struct kv_geometry *g = &a->arena.g;
	__u32 group = job->group, hd = g->head_dim, h = (__u32)(item % g->kv_heads);
	__u64 c = item / g->kv_heads;
	__u32 b = kv_prefill_seq(job, c);
	__u32 nq = a->q_start[b + 1] - a->q_start[b], ctx = a->ctx_lens[b];
	__u32 q0 = (__u32)(c - job->chunk_start[b]) * KV_PF_ROWS;
	__u32 cq = nq - q0 < KV_PF_ROWS ? nq - q0 : KV_PF_ROWS;
	__u32 rows = cq * group, first = ctx - nq + q0, lo, hi, t, n, r, d;
	const __u32 *table = a->block_table + (size_t)b * a->table_stride;
	struct kv_prefill_scratch s;
	void *mem = kv_prefill_scratch_alloc(&s, rows, hd);

	if (!mem) {
		atomic_store(&job->err, -ENOMEM);
		return;
	}
	/* row r: query q0 + r / group of the chunk, head h * group + r % group */
	for (r = 0; r < rows; r++) {
		__u64 off = ((__u64)(a->q_start[b] + q0 + r / group) * a->q_heads +
			     (__u64)h * group + r % group) * hd;

		for (d = 0; d < hd; d++)
			s.q[(size_t)r * hd + d] = a->scale * kv_load_f32(a->q, job->io,
									  off + d);
		s.m[r] = -INFINITY;
	}
	kv_prefill_span(a, first, &lo, &hi);
	hi = first + cq;
	for (t = lo; t < hi; t += n) {
		n = hi - t < KV_PF_TILE ? hi - t : KV_PF_TILE;
		kv_prefill_tile(a, table, KV_K, h, t, n, s.k);
		kv_prefill_tile(a, table, KV_V, h, t, n, s.v);
		kv_prefill_fold(a, &s, rows, group, first, t, n);
	}
	for (r = 0; r < rows; r++) {
		__u64 off = ((__u64)(a->q_start[b] + q0 + r / group) * a->q_heads +
			     (__u64)h * group + r % group) * hd;
		float inv = s.l[r] > 0.0f ? 1.0f / s.l[r] : 0.0f;

		for (d = 0; d < hd; d++)
			kv_store_f32(a->out, job->io, off + d, s.o[(size_t)r * hd + d] * inv);
	}
	free(mem);
}

/*
 * Data-dependent checks, before anything is written: q_start ascends from
 * 0 to tokens, every sequence's queries fit its context (and max_q_len),
 * its context fits its table and every frame it reads is in the arena.
 */
static int kv_prefill_check_tables(const struct kv_prefill_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	__u32 b, i;

	if (a->q_start[0] != 0 || a->q_start[a->batch] != a->tokens)
		return -EINVAL;
	for (b = 0; b < a->batch; b++) {
		const __u32 *table = a->block_table + (size_t)b * a->table_stride;
		__u32 ctx = a->ctx_lens[b], nq, lo, hi;

		if (a->q_start[b + 1] < a->q_start[b])
			return -EINVAL;
		nq = a->q_start[b + 1] - a->q_start[b];
		if (nq > ctx || (a->max_q_len && nq > a->max_q_len) ||
		    (__u64)ctx > (__u64)a->table_stride * g->block_tokens)
			return -EINVAL;
		if (!nq)
			continue;
		kv_prefill_span(a, ctx - nq, &lo, &hi);
		for (i = lo / g->block_tokens; i <= (ctx - 1) / g->block_tokens; i++)
			if (table[i] >= a->arena.frames)
				return -EINVAL;
	}
	return 0;
}

static int kv_prefill_plan(struct kv_prefill_job *job)
{
	const struct kv_prefill_args *a = job->a;
	__u32 b;

	job->chunk_start = malloc(sizeof(__u64) * ((size_t)a->batch + 1));
	if (!job->chunk_start)
		return -ENOMEM;
	job->chunk_start[0] = 0;
	for (b = 0; b < a->batch; b++) {
		__u32 nq = a->q_start[b + 1] - a->q_start[b];

		job->chunk_start[b + 1] = job->chunk_start[b] +
					  (nq + KV_PF_ROWS - 1) / KV_PF_ROWS;
	}
	return 0;
}

/**
 * kv_prefill_cpu() - paged prefill attention on the CPU
 * @a: arguments (see struct kv_prefill_args)
 *
 * Return: 0, -EINVAL for bad arguments (nothing written), -ENOMEM.
 */
int kv_prefill_cpu(const struct kv_prefill_args *a)
{
	struct kv_prefill_job job = { .a = a };
	__u64 items, per_item;
	int err;

	err = kv_prefill_check(a);
	if (!err && a->batch)
		err = kv_prefill_check_tables(a);
	if (!err && a->batch)
		err = kv_prefill_plan(&job);
	if (err)
		goto out;
	if (!a->batch)
		return 0;
	job.group = a->q_heads / a->arena.g.kv_heads;
	job.io = kv_io_dtype(&a->arena.g, a->io_dtype);
	atomic_init(&job.err, 0);
	items = job.chunk_start[a->batch] * a->arena.g.kv_heads;
	/* a thread pays for itself above a few hundred KB of KV (as decode) */
	per_item = 2 * kv_head_bytes(&a->arena.g) * a->table_stride;
	kv_parallel_for(items, a->threads, per_item >= (256u << 10) ? 1 :
			(256u << 10) / (per_item ? per_item : 1) + 1, kv_prefill_item, &job);
	err = atomic_load(&job.err);
	free(job.chunk_start);
out:
	if (err && a->status)
		*a->status = err;
	return err;
}
