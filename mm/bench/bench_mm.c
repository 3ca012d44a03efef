// SPDX-License-Identifier: MIT
/*
 * bench-mm: the mm core's costs, each beside a reference measured in the
 * same run. Prints a table; asserts nothing about time.
 *
 *   frames   alloc+free pairs/s, single and in batches of 32, against a
 *            malloc+free pair of the same thread (the C library's allocator)
 *   append   ns per token (1 token per call, as a decode step, and 16 per call)
 *   fork     time to fork a sequence of 16, 1024 and 65536 blocks, against a
 *            memcpy of the same sequence's KV bytes (what a deep copy costs)
 *   reclaim  blocks/s and GB/s demoted device -> host, against memcpy of
 *            the same bytes between the same arenas
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mm/bench/bench_util.h"
#include "mm/mm.h"

#define BATCH 32

static volatile char sink;

static struct kv_pool *pool_new(const struct kv_geometry *g, u32 dev, u32 host)
{
	struct kv_pool_params p = { .name = "bench", .geom = *g, .nr_frames = { dev, host },
				    .vm = { .min_free_kbytes = 4 }, .flags = KV_POOL_NO_KVSWAPD };
	struct kv_pool *pool;

	if (kv_pool_create(&p, &pool)) {
		fprintf(stderr, "bench-mm: cannot create pool\n");
		exit(1);
	}
	return pool;
}

static const struct kv_geometry small = { 2, 2, 8, 16, KV_DTYPE_FP16, 0 };
/* Llama-3-8B-like: 32 layers, 8 kv heads, head_dim 128, 16 tokens, bf16: 2 MiB. */
static const struct kv_geometry llama = { 32, 8, 128, 16, KV_DTYPE_BF16, 0 };

static void bench_frames(void)
{
	struct kv_pool *pool = pool_new(&small, 4096, 16);
	u32 f[BATCH];
	long i, n = 20000000;
	double t0, single, batch, ref;
	void *volatile p;

	t0 = now();
	for (i = 0; i < n; i++) {
		kv_frames_alloc(pool, KV_TIER_DEVICE, 1, 0, f);
		kv_frames_free(pool, KV_TIER_DEVICE, 1, f);
	}
	single = n / (now() - t0);
	t0 = now();
	for (i = 0; i < n / BATCH; i++) {
		kv_frames_alloc(pool, KV_TIER_DEVICE, BATCH, 0, f);
		kv_frames_free(pool, KV_TIER_DEVICE, BATCH, f);
	}
	batch = (double)(n / BATCH) * BATCH / (now() - t0);
	t0 = now();
	for (i = 0; i < n; i++) {
		p = malloc(64);
		free(p);
	}
	ref = n / (now() - t0);
	printf("%-34s %14.1f M/s %10.2fx malloc+free\n", "frame alloc+free (single)",
	       single / 1e6, single / ref);
	printf("%-34s %14.1f M/s %10.2fx malloc+free\n", "frame alloc+free (batch 32)",
	       batch / 1e6, batch / ref);
	printf("%-34s %14.1f M/s\n", "reference: malloc(64)+free", ref / 1e6);
	kv_pool_destroy(pool);
}

static void bench_append(u32 per_call)
{
	struct kv_pool *pool = pool_new(&small, 1 << 16, 16);
	struct kv_seq *seq[64];
	u64 slots[16];
	u32 i, s, steps = 8192;
	double t0, dt;

	for (s = 0; s < 64; s++)
		if (kv_seq_create(pool, &seq[s]) || kv_seq_activate(seq[s], 0))
			exit(1);
	t0 = now();
	for (i = 0; i < steps; i += per_call)
		for (s = 0; s < 64; s++)
			if (kv_seq_append(seq[s], per_call, slots, 0))
				exit(1);
	dt = now() - t0;
	printf("%-34s %14.1f ns/token\n", per_call == 1 ? "append (1 token per call)" :
	       "append (16 tokens per call)", dt * 1e9 / (64.0 * steps));
	kv_pool_destroy(pool);
}

static void bench_fork(u32 blocks)
{
	struct kv_pool *pool = pool_new(&small, blocks + 64, 16);
	const struct kv_geometry *g = &llama;
	u64 kv_bytes = (u64)blocks * kv_block_bytes(g);
	u64 ref_bytes = kv_bytes > (256u << 20) ? 256u << 20 : kv_bytes;
	struct kv_seq *seq, *child;
	double t0, best = 1e9, ref;
	char *a, *b;
	int r;

	if (kv_seq_create(pool, &seq) || kv_seq_activate(seq, 0) ||
	    kv_seq_append(seq, blocks * small.block_tokens, NULL, 0))
		exit(1);
	kv_seq_deactivate(seq);
	for (r = 0; r < 20; r++) {
		t0 = now();
		if (kv_seq_fork(seq, &child))
			exit(1);
		if (now() - t0 < best)
			best = now() - t0;
		kv_seq_free(child);
	}
	/* Deep copy of the KV bytes the sequence would hold with Llama-3-8B blocks. */
	a = malloc(ref_bytes);
	b = malloc(ref_bytes);
	memset(a, 1, ref_bytes);
	memset(b, 2, ref_bytes);
	t0 = now();
	memcpy(b, a, ref_bytes);
	ref = (now() - t0) * ((double)kv_bytes / ref_bytes);
	sink += b[ref_bytes - 1];
	printf("fork of %-6u blocks %14s %10.1f us %10.0fx faster than copying %.0f MiB\n",
	       blocks, "", best * 1e6, ref / best, kv_bytes / (double)(1u << 20));
	free(a);
	free(b);
	kv_pool_destroy(pool);
}

static void bench_reclaim(void)
{
	u32 n = 256;
	struct kv_pool *pool = pool_new(&llama, n + 8, n + 8);
	u64 fb = kv_frame_bytes(&llama), bytes = (u64)n * fb;
	struct kv_seq *seq;
	double t0, dt, ref;
	u32 done;

	if (kv_seq_create(pool, &seq) || kv_seq_activate(seq, 0) ||
	    kv_seq_append(seq, n * llama.block_tokens, NULL, 0))
		exit(1);
	memset(kv_pool_frame_addr(pool, KV_TIER_DEVICE, 0), 3, bytes);
	memset(kv_pool_frame_addr(pool, KV_TIER_HOST, 0), 4, bytes);
	/* Reference: the same bytes between the same arenas. */
	t0 = now();
	memcpy(kv_pool_frame_addr(pool, KV_TIER_HOST, 0),
	       kv_pool_frame_addr(pool, KV_TIER_DEVICE, 0), bytes);
	ref = bytes / (now() - t0);
	kv_seq_deactivate(seq);
	t0 = now();
	done = kv_reclaim(pool, KV_TIER_DEVICE, n);
	dt = now() - t0;
	printf("reclaim (%u x %llu KiB blocks) %9.0f blocks/s %6.2f GB/s = %.2fx memcpy (%.2f GB/s)\n",
	       done, (unsigned long long)(fb >> 10), done / dt, done * fb / dt / 1e9,
	       (done * fb / dt) / ref, ref / 1e9);
	kv_pool_destroy(pool);
}

int main(void)
{
	printf("kvmem bench-mm (one thread; CPU backend)\n");
	printf("%-34s %18s %s\n", "operation", "result", "vs reference");
	bench_frames();
	bench_append(1);
	bench_append(16);
	bench_fork(16);
	bench_fork(1024);
	bench_fork(65536);
	bench_reclaim();
	return 0;
}
