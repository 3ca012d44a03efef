/* SPDX-License-Identifier: MIT */
/*
 * Shared pieces of the kernel selftests: random data, paged test cases
 * built on a poisoned arena, the float64 decode reference and the error
 * measure.
 *
 * Every run draws fresh random inputs; the seed is printed, and
 * KV_TEST_SEED=N in the environment repeats a run.
 *
 * A case's arena is filled with NaN first; only the K and V that the case
 * attends to (the tested layer, tokens inside each context and window) get
 * finite values. A kernel that reads a masked token, another layer, an
 * unused block-table entry or a frame of another sequence produces NaN and
 * fails.
 */
#ifndef _KV_TEST_H
#define _KV_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kvkernels.h"
#include "kernels/dtype.h"

static uint64_t kvt_rng_state;

static inline uint64_t kvt_rand64(void)
{
	/* splitmix64 */
	uint64_t z = (kvt_rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/*
 * kvt_env_variant() - environment variable @name as a kernel variant
 * (0 .. @max) in *@v, which is left alone when it is unset; anything else
 * (a typo, a negative or too large number) ends the test program, rather
 * than quietly testing another kernel
 */
static inline void kvt_env_variant(const char *name, int max, int *v)
{
	const char *env = getenv(name);
	char *end;
	long n;

	if (!env)
		return;
	n = strtol(env, &end, 0);
	if (end == env || *end || n < 0 || n > max) {
		fprintf(stderr, "%s=%s: not a variant 0-%d\n", name, env, max);
		exit(1);
	}
	*v = (int)n;
}

/* seed from KV_TEST_SEED or the clock; printed so a failure can be re-run */
static inline void kvt_seed(const char *who)
{
	const char *env = getenv("KV_TEST_SEED");
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	kvt_rng_state = env ? strtoull(env, NULL, 0) :
		(uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
	printf("# %s: KV_TEST_SEED=%llu\n", who, (unsigned long long)kvt_rng_state);
}

static inline uint32_t kvt_below(uint32_t n)
{
	return (uint32_t)(kvt_rand64() % n);
}

/* uniform in [-1, 1) */
static inline double kvt_uniform(void)
{
	return (double)(kvt_rand64() >> 11) * 0x1p-52 - 1.0;
}

static inline void kvt_shuffle_u32(uint32_t *a, uint32_t n)
{
	uint32_t i;

	for (i = n; i > 1; i--) {
		uint32_t j = kvt_below(i), t = a[i - 1];

		a[i - 1] = a[j];
		a[j] = t;
	}
}

/* Fill n elements of dtype with random values times @amp. */
static inline void kvt_fill(void *p, uint32_t dtype, uint64_t n, double amp)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		kv_store_f32(p, dtype, i, (float)(amp * kvt_uniform()));
}

/* Fill n elements of dtype with NaN. */
static inline void kvt_fill_nan(void *p, uint32_t dtype, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		kv_store_f32(p, dtype, i, NAN);
}

/**
 * struct kvt_decode_case - one decode problem on a paged arena
 * The block table rows are shuffled frames; entries past a sequence's last
 * block hold frame numbers past the arena, so reading them is an error.
 */
struct kvt_decode_case {
	struct kv_geometry g;
	__u32 layer, batch, q_heads, window, stride;
	__u64 frames;
	void *arena;
	void *q, *out;
	__u32 *table;
	__u32 *ctx;
	double *ref;
};

static inline void kvt_decode_case_free(struct kvt_decode_case *c)
{
	free(c->arena);
	free(c->q);
	free(c->out);
	free(c->table);
	free(c->ctx);
	free(c->ref);
	memset(c, 0, sizeof(*c));
}

/*
 * Build a case: @ctx_lens gives each sequence's context (the table is just
 * wide enough for the longest, plus one unused entry), frames are a
 * shuffled permutation with a few spare frames.
 */
static inline int kvt_decode_case_init(struct kvt_decode_case *c,
				       const struct kv_geometry *g,
				       __u32 layer, __u32 q_heads, __u32 window,
				       __u32 batch, const __u32 *ctx_lens)
{
	__u32 bt = g->block_tokens, b, i, maxblk = 0, next = 0, *perm;
	__u64 fb = kv_frame_bytes(g), esz = kv_dtype_size(g->dtype), n;
	__u64 used = 0;

	memset(c, 0, sizeof(*c));
	c->g = *g;
	c->layer = layer;
	c->batch = batch;
	c->q_heads = q_heads;
	c->window = window;
	for (b = 0; b < batch; b++) {
		__u32 nb = (ctx_lens[b] + bt - 1) / bt;

		used += nb;
		if (nb > maxblk)
			maxblk = nb;
	}
	c->stride = maxblk + 1;
	c->frames = used + 3;
	c->arena = aligned_alloc(KV_FRAME_ALIGN, c->frames * fb);
	c->q = malloc((size_t)batch * q_heads * g->head_dim * esz);
	c->out = malloc((size_t)batch * q_heads * g->head_dim * esz);
	c->table = malloc(sizeof(__u32) * batch * c->stride);
	c->ctx = malloc(sizeof(__u32) * (batch ? batch : 1));
	c->ref = calloc((size_t)batch * q_heads * g->head_dim + 1, sizeof(double));
	perm = malloc(sizeof(__u32) * c->frames);
	if (!c->arena || !c->q || !c->out || !c->table || !c->ctx || !c->ref || !perm) {
		free(perm);
		kvt_decode_case_free(c);
		return -1;
	}
	for (i = 0; i < c->frames; i++)
		perm[i] = (__u32)i;
	kvt_shuffle_u32(perm, (__u32)c->frames);

	kvt_fill_nan(c->arena, g->dtype, c->frames * fb / esz);
	kvt_fill(c->q, g->dtype, (__u64)batch * q_heads * g->head_dim, 1.0);
	for (b = 0; b < batch; b++) {
		__u32 ctx = ctx_lens[b];
		__u32 start = window && ctx > window ? ctx - window : 0;
		__u32 *row = c->table + (size_t)b * c->stride;

		c->ctx[b] = ctx;
		for (i = 0; i < c->stride; i++)
			row[i] = i * bt < ctx ? perm[next++] : 0xfffffff0u - i;
		/* values for the attended tokens only; amplitude 2 spreads scores */
		for (i = start; i < ctx; i++) {
			__u32 h;

			for (h = 0; h < g->kv_heads; h++) {
				__u64 slot = (__u64)row[i / bt] * bt + i % bt;
				char *base = c->arena;

				n = g->head_dim;
				kvt_fill(base + kv_token_offset(g, slot, layer, KV_K, h),
					 g->dtype, n, 2.0);
				kvt_fill(base + kv_token_offset(g, slot, layer, KV_V, h),
					 g->dtype, n, 1.0);
			}
		}
	}
	free(perm);
	return 0;
}

/*
 * The float64 attention of one query (elements @qo .. of @q) of sequence
 * @b against its tokens [@lo, @hi) through kv head @h, into @ref (head_dim
 * doubles; zeros when the span is empty). @s: scratch of @hi doubles.
 */
static inline void kvt_attend_ref(const struct kvt_decode_case *c, __u32 b,
				  const void *q, __u64 qo, __u32 h, __u32 lo,
				  __u32 hi, float scale, double *s, double *ref)
{
	const struct kv_geometry *g = &c->g;
	const __u32 *row = c->table + (size_t)b * c->stride;
	__u32 hd = g->head_dim, bt = g->block_tokens, t, d;
	double mx = -INFINITY, sum = 0.0;

	for (t = lo; t < hi; t++) {
		__u64 slot = (__u64)row[t / bt] * bt + t % bt;
		const char *kp = (const char *)c->arena +
			kv_token_offset(g, slot, c->layer, KV_K, h);
		double dot = 0.0;

		for (d = 0; d < hd; d++)
			dot += (double)kv_load_f32(q, g->dtype, qo + d) *
			       (double)kv_load_f32(kp, g->dtype, d);
		s[t] = dot * scale;
		if (s[t] > mx)
			mx = s[t];
	}
	for (d = 0; d < hd; d++)
		ref[d] = 0.0;
	for (t = lo; t < hi; t++) {
		__u64 slot = (__u64)row[t / bt] * bt + t % bt;
		const char *vp = (const char *)c->arena +
			kv_token_offset(g, slot, c->layer, KV_V, h);
		double p = exp(s[t] - mx);

		sum += p;
		for (d = 0; d < hd; d++)
			ref[d] += p * (double)kv_load_f32(vp, g->dtype, d);
	}
	for (d = 0; d < hd && sum > 0.0; d++)
		ref[d] /= sum;
}

/* The float64 reference of a case, from its stored (rounded) inputs. */
static inline void kvt_decode_reference(struct kvt_decode_case *c, float scale)
{
	__u32 hd = c->g.head_dim, group = c->q_heads / c->g.kv_heads;
	__u32 b, qh;
	double *s = NULL;
	__u32 maxctx = 0;

	for (b = 0; b < c->batch; b++)
		if (c->ctx[b] > maxctx)
			maxctx = c->ctx[b];
	s = malloc(sizeof(double) * (maxctx + 1));
	if (!s)
		abort();
	for (b = 0; b < c->batch; b++) {
		__u32 ctx = c->ctx[b];
		__u32 start = c->window && ctx > c->window ? ctx - c->window : 0;

		for (qh = 0; qh < c->q_heads; qh++) {
			__u64 qo = ((__u64)b * c->q_heads + qh) * hd;

			kvt_attend_ref(c, b, c->q, qo, qh / group, start, ctx, scale, s,
				       c->ref + qo);
		}
	}
	free(s);
}

/* Arguments for running a case through a kernel. */
static inline struct kv_decode_args kvt_decode_args(struct kvt_decode_case *c,
						    float scale)
{
	struct kv_decode_args a = {
		.arena = { .base = c->arena, .frames = c->frames, .g = c->g },
		.layer = c->layer,
		.batch = c->batch,
		.q_heads = c->q_heads,
		.window = c->window,
		.scale = scale,
		.table_stride = c->stride,
		.q = c->q,
		.out = c->out,
		.block_table = c->table,
		.ctx_lens = c->ctx,
	};
	return a;
}

/*
 * ||out - ref|| / ||ref|| over @n elements; NaN or infinity anywhere in
 * @out (an unwritten or poisoned element) gives +inf, which no bound passes.
 */
static inline double kvt_rel_err(const void *out, uint32_t dtype,
				 const double *ref, uint64_t n)
{
	double num = 0.0, den = 0.0;
	uint64_t i;

	for (i = 0; i < n; i++) {
		double o = kv_load_f32(out, dtype, i);

		if (!isfinite(o))
			return INFINITY;
		num += (o - ref[i]) * (o - ref[i]);
		den += ref[i] * ref[i];
	}
	if (den == 0.0)
		return num == 0.0 ? 0.0 : INFINITY;
	return sqrt(num / den);
}

/* Relative error of @out against another kernel output @want. */
static inline double kvt_rel_err_vs(const void *out, const void *want,
				    uint32_t dtype, uint64_t n)
{
	double num = 0.0, den = 0.0;
	uint64_t i;

	for (i = 0; i < n; i++) {
		double o = kv_load_f32(out, dtype, i), w = kv_load_f32(want, dtype, i);

		if (!isfinite(o) || !isfinite(w))
			return INFINITY;
		num += (o - w) * (o - w);
		den += w * w;
	}
	if (den == 0.0)
		return num == 0.0 ? 0.0 : INFINITY;
	return sqrt(num / den);
}

/*
 * Documented bounds of ||out - ref|| / ||ref|| against float64 (see
 * Documentation/kernels/): float math on fp32 KV; fp16 and bf16 outputs are
 * rounded to their type, which dominates.
 */
static inline double kvt_bound(uint32_t dtype)
{
	switch (dtype) {
	case KV_DTYPE_FP32:
		return 1e-6;
	case KV_DTYPE_FP16:
		return 2e-3;
	default:
		return 1e-2;
	}
}

/* Ragged context lengths: 1, block-size edges and random ones up to @max. */
static inline void kvt_ragged(__u32 *ctx, __u32 batch, __u32 bt, __u32 max)
{
	const __u32 edges[] = { 1, bt - 1, bt, bt + 1, 2 * bt + 3 };
	__u32 b;

	for (b = 0; b < batch; b++) {
		__u32 e = edges[b % 5];

		ctx[b] = b < 5 && e && e <= max ? e : 1 + kvt_below(max);
	}
}

/**
 * struct kvt_prefill_case - one prefill problem on a paged arena
 * @d:       the arena, block table and context lengths (a decode case
 *           whose every token is filled); d.window is the prefill's window
 * @q_start: [batch + 1] query rows of each sequence
 * @tokens:  query rows in all; @q, @out are [tokens][q_heads][head_dim]
 * @ref:     the float64 reference of @out
 */
struct kvt_prefill_case {
	struct kvt_decode_case d;
	__u32 *q_start;
	__u32 tokens, max_q;
	void *q, *out;
	double *ref;
};

static inline void kvt_prefill_case_free(struct kvt_prefill_case *c)
{
	kvt_decode_case_free(&c->d);
	free(c->q_start);
	free(c->q);
	free(c->out);
	free(c->ref);
	memset(c, 0, sizeof(*c));
}

/*
 * Sequence b has @cached[b] tokens already in the cache and @nq[b] new
 * ones (their KV in the arena too, as after an append), so its context is
 * cached[b] + nq[b] and its queries are the last nq[b] tokens.
 */
static inline int kvt_prefill_case_init(struct kvt_prefill_case *c,
					const struct kv_geometry *g, __u32 layer,
					__u32 q_heads, __u32 window, __u32 batch,
					const __u32 *cached, const __u32 *nq)
{
	__u32 *ctx = malloc(sizeof(__u32) * (batch ? batch : 1)), b;
	__u64 esz = kv_dtype_size(g->dtype), n;
	int err;

	memset(c, 0, sizeof(*c));
	if (!ctx)
		return -1;
	for (b = 0; b < batch; b++)
		ctx[b] = cached[b] + nq[b];
	err = kvt_decode_case_init(&c->d, g, layer, q_heads, 0, batch, ctx);
	free(ctx);
	if (err)
		return err;
	c->d.window = window;
	c->q_start = malloc(sizeof(__u32) * (batch + 1));
	if (!c->q_start) {
		kvt_prefill_case_free(c);
		return -1;
	}
	c->q_start[0] = 0;
	for (b = 0; b < batch; b++) {
		c->q_start[b + 1] = c->q_start[b] + nq[b];
		if (nq[b] > c->max_q)
			c->max_q = nq[b];
	}
	c->tokens = c->q_start[batch];
	n = (__u64)c->tokens * q_heads * g->head_dim;
	c->q = malloc(n * esz + 1);
	c->out = malloc(n * esz + 1);
	c->ref = calloc(n + 1, sizeof(double));
	if (!c->q || !c->out || !c->ref) {
		kvt_prefill_case_free(c);
		return -1;
	}
	kvt_fill(c->q, g->dtype, n, 1.0);
	kvt_fill_nan(c->out, g->dtype, n);
	return 0;
}

/* The float64 reference: each query row against its causal, windowed span. */
static inline void kvt_prefill_reference(struct kvt_prefill_case *c, float scale)
{
	const struct kvt_decode_case *d = &c->d;
	__u32 hd = d->g.head_dim, group = d->q_heads / d->g.kv_heads;
	__u32 b, i, qh, maxctx = 1;
	double *s;

	for (b = 0; b < d->batch; b++)
		if (d->ctx[b] > maxctx)
			maxctx = d->ctx[b];
	s = malloc(sizeof(double) * maxctx);
	if (!s)
		abort();
	for (b = 0; b < d->batch; b++) {
		__u32 nq = c->q_start[b + 1] - c->q_start[b];

		for (i = 0; i < nq; i++) {
			__u32 pos = d->ctx[b] - nq + i;
			__u32 lo = d->window && pos + 1 > d->window ? pos + 1 - d->window : 0;

			for (qh = 0; qh < d->q_heads; qh++) {
				__u64 qo = ((__u64)(c->q_start[b] + i) * d->q_heads + qh) * hd;

				kvt_attend_ref(d, b, c->q, qo, qh / group, lo, pos + 1, scale,
					       s, c->ref + qo);
			}
		}
	}
	free(s);
}

/*
 * kvt_argmax() - first index of the largest of @vocab elements of @dtype
 * at @p, from element @o on; NaN beats everything (the first NaN wins)
 */
static inline __s32 kvt_argmax(const void *p, uint32_t dtype, __u64 o, __u32 vocab)
{
	__u32 i, best = 0;

	for (i = 1; i < vocab; i++) {
		float x = kv_load_f32(p, dtype, o + i), m = kv_load_f32(p, dtype, o + best);

		if (isnan(m))
			break;
		if (isnan(x) || x > m)
			best = i;
	}
	return (__s32)best;
}

/* Arguments for running a prefill case through a kernel. */
static inline struct kv_prefill_args kvt_prefill_args(struct kvt_prefill_case *c,
						      float scale)
{
	struct kv_prefill_args a = {
		.arena = { .base = c->d.arena, .frames = c->d.frames, .g = c->d.g },
		.layer = c->d.layer,
		.batch = c->d.batch,
		.q_heads = c->d.q_heads,
		.window = c->d.window,
		.scale = scale,
		.table_stride = c->d.stride,
		.tokens = c->tokens,
		.max_q_len = c->max_q,
		.q = c->q,
		.out = c->out,
		.q_start = c->q_start,
		.block_table = c->d.table,
		.ctx_lens = c->d.ctx,
	};
	return a;
}

#endif /* _KV_TEST_H */
