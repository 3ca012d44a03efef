/* SPDX-License-Identifier: MIT */
/*
 * What the mm benchmarks share: a clock, a seeded random number and the
 * parsing of a numeric option.
 */
#ifndef _KV_MM_BENCH_UTIL_H
#define _KV_MM_BENCH_UTIL_H

#include <stdint.h>
#include <time.h>
#include <lib/config.h>

/* Seconds on the monotonic clock. */
static inline double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* splitmix64: the next number of the sequence seeded in *@s. */
static inline uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A number option in [@min, @max]; anything else calls @usage (which exits). */
static inline uint64_t bench_parse_u64(const char *s, uint64_t min, uint64_t max,
				       void (*usage)(void))
{
	uint64_t v = 0;

	if (kv_parse_uint(s, min, max, &v))
		usage();
	return v;
}

#endif /* _KV_MM_BENCH_UTIL_H */
