/* SPDX-License-Identifier: MIT */
/*
 * Shared pieces of the kernel benchmarks: decode shapes, a seeded shuffle,
 * medians, a wall clock and the parsing of numeric options.
 */
#ifndef _KV_BENCH_COMMON_H
#define _KV_BENCH_COMMON_H

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kvkernels.h"
#include "lib/config.h"

/**
 * struct bench_shape - one decode problem (block_tokens 16, one layer read)
 */
struct bench_shape {
	__u32 q_heads, kv_heads, head_dim, dtype, batch, ctx;
};

/*
 * bench_uint() - @s as a number from @lo to @hi (kv_parse_uint()) into
 * *@v, or -EINVAL with a message naming @what (an option, or a variable)
 */
static inline int bench_uint(const char *what, const char *s, uint32_t lo, uint32_t hi, int *v)
{
	uint64_t n;

	if (kv_parse_uint(s, lo, hi, &n)) {
		fprintf(stderr, "%s: '%s' is not a number from %" PRIu32 " to %" PRIu32 "\n",
			what, s, lo, hi);
		return -EINVAL;
	}
	*v = (int)n;
	return 0;
}

static inline double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static inline double bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), bench_cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t bench_rng = 0x2545f4914f6cdd1dull;

static inline uint64_t bench_rand(void)
{
	bench_rng ^= bench_rng << 13;
	bench_rng ^= bench_rng >> 7;
	bench_rng ^= bench_rng << 17;
	return bench_rng;
}

static inline void bench_shuffle(__u32 *a, __u64 n)
{
	__u64 i;

	for (i = n; i > 1; i--) {
		__u64 j = bench_rand() % i;
		__u32 t = a[i - 1];

		a[i - 1] = a[j];
		a[j] = t;
	}
}

/*
 * Geometry of a benchmark arena: one layer (a decode step reads one layer;
 * more layers only widen the stride between frames).
 */
static inline struct kv_geometry bench_geometry(const struct bench_shape *s)
{
	struct kv_geometry g = { 1, s->kv_heads, s->head_dim, 16, s->dtype, 0 };

	return g;
}

/* KV bytes a decode of @s reads: its blocks' values and scales (one layer) */
static inline double bench_kv_bytes(const struct bench_shape *s)
{
	struct kv_geometry g = bench_geometry(s);

	return (double)s->batch * ((s->ctx + 15) / 16) * kv_block_bytes(&g);
}

/* A block table: each sequence gets ctx/16 frames drawn from a shuffle. */
static inline void bench_table(__u32 *table, const struct bench_shape *s,
			       __u64 frames)
{
	__u64 per = (s->ctx + 15) / 16, n = per * s->batch, i;
	__u32 *perm = malloc(sizeof(__u32) * frames);

	if (!perm)
		abort();
	for (i = 0; i < frames; i++)
		perm[i] = (__u32)i;
	bench_shuffle(perm, frames);
	for (i = 0; i < n; i++)
		table[i] = perm[i];
	free(perm);
}

#endif /* _KV_BENCH_COMMON_H */
