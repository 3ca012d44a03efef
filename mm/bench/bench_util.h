/* SPDX-License-Identifier: MIT */
/* What the mm benchmarks share: a clock and a seeded random number. */
#ifndef _KV_MM_BENCH_UTIL_H
#define _KV_MM_BENCH_UTIL_H

#include <stdint.h>
#include <time.h>

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

#endif /* _KV_MM_BENCH_UTIL_H */
