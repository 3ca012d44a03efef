// SPDX-License-Identifier: MIT
/*
 * CPU KV append, block copy, gather and scatter: each against an
 * element-by-element model built from uapi/kvmem/layout.h, with the rest of
 * the arena checked untouched, and the argument checks (nothing written on
 * an error).
 */
#include <errno.h>

#include "kselftest_harness.h"
#include "kv_test.h"

#define NFRAMES 23

static const struct kv_geometry geoms[] = {
	{ 3, 2, 64, 16, KV_DTYPE_BF16, 0 },
	{ 2, 3, 128, 5, KV_DTYPE_FP16, 0 },
	{ 2, 1, 24, 7, KV_DTYPE_FP32, 0 },
};

static void *arena_new(const struct kv_geometry *g)
{
	__u64 bytes = NFRAMES * kv_frame_bytes(g), i;
	unsigned char *p = aligned_alloc(KV_FRAME_ALIGN, bytes);

	if (p)
		for (i = 0; i < bytes; i++)
			p[i] = (unsigned char)kvt_rand64();
	return p;
}

TEST(append)
{
	unsigned int gi;

	kvt_seed(__func__);
	for (gi = 0; gi < sizeof(geoms) / sizeof(geoms[0]); gi++) {
		const struct kv_geometry *g = &geoms[gi];
		__u64 fb = kv_frame_bytes(g), bytes = NFRAMES * fb, vec;
		__u32 tokens = 40 + kvt_below(40), t, h, layer = kvt_below(g->layers);
		__u32 *perm = malloc(sizeof(__u32) * NFRAMES * g->block_tokens);
		__s64 *slots = malloc(sizeof(__s64) * tokens);
		char *arena = arena_new(g), *want = malloc(bytes), *k, *v;
		struct kv_append_args a;

		vec = (__u64)g->head_dim * kv_dtype_size(g->dtype);
		k = malloc(tokens * g->kv_heads * vec);
		v = malloc(tokens * g->kv_heads * vec);
		ASSERT_TRUE(perm && slots && arena && want && k && v);
		kvt_fill(k, g->dtype, (__u64)tokens * g->kv_heads * g->head_dim, 1.0);
		kvt_fill(v, g->dtype, (__u64)tokens * g->kv_heads * g->head_dim, 1.0);
		/* distinct random slots, every seventh token padding (-1) */
		for (t = 0; t < NFRAMES * g->block_tokens; t++)
			perm[t] = t;
		kvt_shuffle_u32(perm, NFRAMES * g->block_tokens);
		for (t = 0; t < tokens; t++)
			slots[t] = t % 7 == 3 ? -1 : (__s64)perm[t];

		memcpy(want, arena, bytes);
		for (t = 0; t < tokens; t++) {
			if (slots[t] < 0)
				continue;
			for (h = 0; h < g->kv_heads; h++) {
				memcpy(want + kv_token_offset(g, (__u64)slots[t], layer, KV_K, h),
				       k + ((__u64)t * g->kv_heads + h) * vec, vec);
				memcpy(want + kv_token_offset(g, (__u64)slots[t], layer, KV_V, h),
				       v + ((__u64)t * g->kv_heads + h) * vec, vec);
			}
		}
		a = (struct kv_append_args){
			.arena = { arena, NFRAMES, *g }, .layer = layer,
			.tokens = tokens, .k = k, .v = v, .slots = slots,
		};
		EXPECT_EQ(0, kv_append_cpu(&a));
		EXPECT_EQ(0, memcmp(want, arena, bytes));

		/* a slot past the arena: -EINVAL and nothing written */
		memcpy(want, arena, bytes);
		kvt_fill(k, g->dtype, (__u64)tokens * g->kv_heads * g->head_dim, 1.0);
		slots[tokens - 1] = (__s64)NFRAMES * g->block_tokens;
		EXPECT_EQ(-EINVAL, kv_append_cpu(&a));
		EXPECT_EQ(0, memcmp(want, arena, bytes));
		a.layer = g->layers;
		slots[tokens - 1] = 0;
		EXPECT_EQ(-EINVAL, kv_append_cpu(&a));
		EXPECT_EQ(0, memcmp(want, arena, bytes));

		free(perm);
		free(slots);
		free(arena);
		free(want);
		free(k);
		free(v);
	}
}

TEST(copy_blocks)
{
	unsigned int gi;

	kvt_seed(__func__);
	for (gi = 0; gi < sizeof(geoms) / sizeof(geoms[0]); gi++) {
		const struct kv_geometry *g = &geoms[gi];
		__u64 fb = kv_frame_bytes(g), bb = kv_block_bytes(g), bytes = NFRAMES * fb;
		__u32 perm[NFRAMES], src[8], dst[8], i, pairs = 8;
		char *arena = arena_new(g), *want = malloc(bytes);
		struct kv_copy_args a;
		__s32 status = 0;

		ASSERT_TRUE(arena && want);
		for (i = 0; i < NFRAMES; i++)
			perm[i] = i;
		kvt_shuffle_u32(perm, NFRAMES);
		/* sources and destinations disjoint, destinations distinct */
		for (i = 0; i < pairs; i++) {
			src[i] = perm[i];
			dst[i] = perm[pairs + i];
		}
		src[3] = src[2];	/* one source copied twice */
		memcpy(want, arena, bytes);
		for (i = 0; i < pairs; i++)
			memcpy(want + dst[i] * fb, arena + src[i] * fb, bb);
		a = (struct kv_copy_args){
			.arena = { arena, NFRAMES, *g }, .pairs = pairs,
			.src = src, .dst = dst, .threads = 1 + i % 3,
		};
		EXPECT_EQ(0, kv_copy_blocks_cpu(&a));
		EXPECT_EQ(0, memcmp(want, arena, bytes));

		dst[5] = NFRAMES;
		a.status = &status;
		EXPECT_EQ(-EINVAL, kv_copy_blocks_cpu(&a));
		EXPECT_EQ(-EINVAL, status);
		dst[5] = perm[pairs + 5];
		src[0] = 0xffffffffu;
		EXPECT_EQ(-EINVAL, kv_copy_blocks_cpu(&a));
		EXPECT_EQ(0, memcmp(want, arena, bytes));
		free(arena);
		free(want);
	}
}

TEST(gather_scatter)
{
	unsigned int gi;

	kvt_seed(__func__);
	for (gi = 0; gi < sizeof(geoms) / sizeof(geoms[0]); gi++) {
		const struct kv_geometry *g = &geoms[gi];
		__u64 fb = kv_frame_bytes(g), bb = kv_block_bytes(g), bytes = NFRAMES * fb;
		__u32 perm[NFRAMES], n = 1 + kvt_below(NFRAMES - 1), i;
		char *arena = arena_new(g), *want = malloc(bytes), *buf = malloc(n * bb);
		struct kv_gather_args a;

		ASSERT_TRUE(arena && want && buf);
		for (i = 0; i < NFRAMES; i++)
			perm[i] = i;
		kvt_shuffle_u32(perm, NFRAMES);
		a = (struct kv_gather_args){
			.arena = { arena, NFRAMES, *g }, .nframes = n,
			.frames = perm, .buf = buf,
		};
		EXPECT_EQ(0, kv_gather_cpu(&a));
		for (i = 0; i < n; i++)
			EXPECT_EQ(0, memcmp(buf + i * bb, arena + perm[i] * fb, bb));

		/* scatter fresh data back to a different permutation */
		for (i = 0; i < n * bb; i++)
			buf[i] = (char)kvt_rand64();
		kvt_shuffle_u32(perm, NFRAMES);
		memcpy(want, arena, bytes);
		for (i = 0; i < n; i++)
			memcpy(want + perm[i] * fb, buf + i * bb, bb);
		EXPECT_EQ(0, kv_scatter_cpu(&a));
		EXPECT_EQ(0, memcmp(want, arena, bytes));

		/* a bad frame: -EINVAL, nothing written */
		perm[n - 1] = NFRAMES + 1;
		for (i = 0; i < n * bb; i++)
			buf[i] = (char)kvt_rand64();
		EXPECT_EQ(-EINVAL, kv_scatter_cpu(&a));
		EXPECT_EQ(0, memcmp(want, arena, bytes));
		EXPECT_EQ(-EINVAL, kv_gather_cpu(&a));
		a.buf = NULL;
		perm[n - 1] = 0;
		EXPECT_EQ(-EINVAL, kv_gather_cpu(&a));
		free(arena);
		free(want);
		free(buf);
	}
}

TEST_HARNESS_MAIN
