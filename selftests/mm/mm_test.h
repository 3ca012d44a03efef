/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the mm selftests: a small pool geometry, and token
 * contents written into and read back from the device arena, so that tests
 * check data as well as accounting.
 */
#ifndef _SELFTESTS_MM_TEST_H
#define _SELFTESTS_MM_TEST_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mm/mm.h"

/* 2 layers, 2 kv heads, head_dim 8, 4 tokens per block, fp16: 512 B. */
static const struct kv_geometry test_geom = {
	.layers = 2, .kv_heads = 2, .head_dim = 8, .block_tokens = 4,
	.dtype = KV_DTYPE_FP16,
};

#define TEST_BT 4

static inline struct kv_pool *test_pool_vm(u32 dev, u32 host, u32 flags,
					   const struct kv_vm_tunables *vm)
{
	struct kv_pool_params p = {
		.name = "test", .geom = test_geom,
		.nr_frames = { dev, host }, .flags = flags,
	};
	struct kv_pool *pool = NULL;

	if (vm)
		p.vm = *vm;
	if (kv_pool_create(&p, &pool))
		return NULL;
	return pool;
}

/* A pool with no kvswapd and min_free of one frame per tier. */
static inline struct kv_pool *test_pool(u32 dev, u32 host)
{
	struct kv_vm_tunables vm = { .min_free_kbytes = 4 };

	return test_pool_vm(dev, host, KV_POOL_NO_KVSWAPD, &vm);
}

/*
 * Where the test writes device frames: the arena's CPU address. A test
 * whose device tier hides it from the mm (as GPU memory is) defines
 * TEST_DEVICE_BASE before including this header.
 */
#ifndef TEST_DEVICE_BASE
#define TEST_DEVICE_BASE(pool)	((char *)kv_pool_frame_addr(pool, KV_TIER_DEVICE, 0))
#endif

/* Two places of a token's block that a token's write touches. */
static inline u32 *tok_addr(struct kv_pool *pool, u64 slot, int which)
{
	const struct kv_geometry *g = kv_pool_geometry(pool);
	char *base = TEST_DEVICE_BASE(pool);
	u64 off = which ? kv_token_offset(g, slot, g->layers - 1, KV_V, g->kv_heads - 1)
			: kv_token_offset(g, slot, 0, KV_K, 0);

	return (u32 *)(base + off);
}

/* Store @val as the token's content, as a kernel writing its K and V. */
static inline void tok_write(struct kv_pool *pool, u64 slot, u32 val)
{
	*tok_addr(pool, slot, 0) = val;
	*tok_addr(pool, slot, 1) = ~val;
}

/* Read a token's content back; -1 (all ones) when the two places differ. */
static inline u32 tok_read(struct kv_pool *pool, u64 slot)
{
	u32 a = *tok_addr(pool, slot, 0), b = *tok_addr(pool, slot, 1);

	return a == ~b ? a : UINT32_MAX;
}

/*
 * Compare an active sequence's tokens with @vals. Returns -1 when all
 * match, else the first token that differs (or -2 on an API error).
 */
static inline long seq_verify(struct kv_seq *seq, const u32 *vals)
{
	struct kv_pool *pool = kv_seq_pool(seq);
	u32 n = kv_seq_tokens(seq), nb = kv_seq_nr_blocks(seq), i;
	u32 *frames = malloc((nb + 1) * sizeof(*frames));
	long bad = -1;

	if (!frames || kv_seq_block_table(seq, frames, nb) != (int)nb) {
		free(frames);
		return -2;
	}
	for (i = 0; i < n && bad < 0; i++)
		if (tok_read(pool, (u64)frames[i / TEST_BT] * TEST_BT + i % TEST_BT) != vals[i])
			bad = i;
	free(frames);
	return bad;
}

/* Append @n tokens with contents @vals to an active sequence. */
static inline int seq_append_vals(struct kv_pool *pool, struct kv_seq *seq,
				  const u32 *vals, u32 n, u32 flags)
{
	u64 *slots = malloc((n + 1) * sizeof(*slots));
	u32 i;
	int err;

	if (!slots)
		return -ENOMEM;
	err = kv_seq_append(seq, n, slots, flags);
	for (i = 0; !err && i < n; i++)
		tok_write(pool, slots[i], vals[i]);
	free(slots);
	return err;
}

/* xorshift64: a random number below @n, advancing *@rng (never 0). */
static inline u32 test_rand(u64 *rng, u32 n)
{
	*rng ^= *rng << 13;
	*rng ^= *rng >> 7;
	*rng ^= *rng << 17;
	return (u32)((*rng >> 11) % n);
}

#define ASSERT_POOL_OK(pool) ASSERT_EQ(0, kv_pool_check(pool))
#define EXPECT_POOL_OK(pool) EXPECT_EQ(0, kv_pool_check(pool))

/*
 * The threads of this process whose name starts with @prefix (kvswapd/,
 * kvswapio/): how many, and how many of them have a Cpus_allowed_list other
 * than @want (NULL: do not check).
 */
static inline int threads_named(const char *prefix, const char *want, int *mismatch)
{
	char path[300], line[256];
	struct dirent *e;
	int n = 0;
	DIR *dir = opendir("/proc/self/task");
	FILE *f;

	*mismatch = 0;
	while (dir && (e = readdir(dir))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (!fgets(line, sizeof(line), f) || strncmp(line, prefix, strlen(prefix))) {
			fclose(f);
			continue;
		}
		fclose(f);
		n++;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		f = fopen(path, "r");
		while (f && fgets(line, sizeof(line), f)) {
			if (strncmp(line, "Cpus_allowed_list:", 18))
				continue;
			line[strcspn(line, "\n")] = '\0';
			if (want && strcmp(line + 18 + strspn(line + 18, " \t"), want))
				(*mismatch)++;
		}
		if (f)
			fclose(f);
	}
	if (dir)
		closedir(dir);
	return n;
}

#endif /* _SELFTESTS_MM_TEST_H */
