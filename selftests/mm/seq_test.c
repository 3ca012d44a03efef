// SPDX-License-Identifier: MIT
/*
 * Sequences: append, fork, copy-on-write, truncate, free, activation and
 * pins, LRU order, demotion and promotion, direct reclaim, kvswapd, and the
 * errors of each. Token contents are checked through every move.
 */
#include <unistd.h>
#include "kselftest_harness.h"
#include "mm_test.h"

static u32 vals[4096];

static void fill_vals(u32 seed)
{
	u32 i;

	for (i = 0; i < 4096; i++)
		vals[i] = seed * 100000 + i;
}

static u32 free_frames(struct kv_pool *pool, int tier)
{
	struct kv_meminfo mi;

	kv_pool_meminfo(pool, &mi);
	return mi.tier[tier].free;
}

FIXTURE(seq) {
	struct kv_pool *pool;
	struct kv_seq *a;
};

FIXTURE_SETUP(seq)
{
	self->pool = test_pool(32, 64);
	ASSERT_NE_NULL(self->pool);
	ASSERT_EQ(0, kv_seq_create(self->pool, &self->a));
	fill_vals(1);
}

FIXTURE_TEARDOWN(seq)
{
	EXPECT_POOL_OK(self->pool);
	kv_pool_destroy(self->pool);
}

TEST_F(seq, append_allocates_blocks_and_slots)
{
	u64 slots[10];
	u32 frames[8], i;

	EXPECT_EQ(-EINVAL, kv_seq_append(self->a, 1, slots, 0));
	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	EXPECT_EQ(1, kv_seq_is_active(self->a));
	ASSERT_EQ(0, kv_seq_append(self->a, 10, slots, 0));
	EXPECT_EQ(10, kv_seq_tokens(self->a));
	EXPECT_EQ(3, kv_seq_nr_blocks(self->a));
	ASSERT_EQ(3, kv_seq_block_table(self->a, frames, 8));
	for (i = 0; i < 10; i++)
		EXPECT_EQ((u64)frames[i / TEST_BT] * TEST_BT + i % TEST_BT, slots[i]);
	for (i = 0; i < 10; i++)
		tok_write(self->pool, slots[i], vals[i]);
	EXPECT_EQ(-1, seq_verify(self->a, vals));
	EXPECT_EQ(32 - 3, free_frames(self->pool, KV_TIER_DEVICE));
	EXPECT_EQ(0, kv_seq_append(self->a, 0, NULL, 0));
	EXPECT_EQ(-EINVAL, kv_seq_append(self->a, 1, NULL, 0x40));
	EXPECT_EQ(-E2BIG, kv_seq_append(self->a, KV_SEQ_MAX_TOKENS, NULL, 0));
	EXPECT_EQ(-ENOSPC, kv_seq_block_table(self->a, frames, 2));
	ASSERT_POOL_OK(self->pool);
	kv_seq_free(self->a);
	EXPECT_EQ(32, free_frames(self->pool, KV_TIER_DEVICE));
}

TEST_F(seq, fork_shares_then_cow_on_append)
{
	struct kv_seq *b;
	struct kv_meminfo mi;
	u32 bvals[8];

	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, seq_append_vals(self->pool, self->a, vals, 6, 0));
	ASSERT_EQ(0, kv_seq_fork(self->a, &b));
	EXPECT_EQ(6, kv_seq_tokens(b));
	EXPECT_EQ(0, kv_seq_is_active(b));
	kv_pool_meminfo(self->pool, &mi);
	EXPECT_EQ(2, mi.blocks);
	ASSERT_POOL_OK(self->pool);

	ASSERT_EQ(0, kv_seq_activate(b, 0));
	EXPECT_EQ(-1, seq_verify(b, vals));
	memcpy(bvals, vals, sizeof(bvals));
	bvals[6] = 777;
	ASSERT_EQ(0, seq_append_vals(self->pool, b, &bvals[6], 1, 0));
	EXPECT_EQ(1, kv_vmstat_read(self->pool, KV_COW_COPY));
	kv_pool_meminfo(self->pool, &mi);
	EXPECT_EQ(3, mi.blocks);
	EXPECT_EQ(-1, seq_verify(b, bvals));
	EXPECT_EQ(-1, seq_verify(self->a, vals));
	ASSERT_POOL_OK(self->pool);

	/* a's last block is now its own: appending copies nothing. */
	ASSERT_EQ(0, seq_append_vals(self->pool, self->a, &vals[6], 1, 0));
	EXPECT_EQ(1, kv_vmstat_read(self->pool, KV_COW_COPY));
	EXPECT_EQ(-1, seq_verify(self->a, vals));
	kv_seq_free(b);
	ASSERT_POOL_OK(self->pool);
}

TEST_F(seq, cow_on_write_keeps_the_other_copy)
{
	struct kv_seq *b;
	u64 slot, old;

	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, seq_append_vals(self->pool, self->a, vals, 8, 0));
	ASSERT_EQ(0, kv_seq_fork(self->a, &b));
	EXPECT_EQ(-EINVAL, kv_seq_write(b, 1, &slot, 0));
	ASSERT_EQ(0, kv_seq_activate(b, 0));
	EXPECT_EQ(-ERANGE, kv_seq_write(b, 8, &slot, 0));
	ASSERT_EQ(0, kv_seq_write(self->a, 1, &old, 0));
	ASSERT_EQ(0, kv_seq_write(b, 1, &slot, 0));
	EXPECT_NE(old, slot);
	EXPECT_EQ(1, kv_vmstat_read(self->pool, KV_COW_COPY));
	tok_write(self->pool, slot, 4242);
	EXPECT_EQ(-1, seq_verify(self->a, vals));
	vals[1] = 4242;
	EXPECT_EQ(-1, seq_verify(b, vals));
	/* Writing again into the now private block copies nothing. */
	ASSERT_EQ(0, kv_seq_write(b, 2, &slot, 0));
	EXPECT_EQ(1, kv_vmstat_read(self->pool, KV_COW_COPY));
	kv_seq_free(b);
}

TEST_F(seq, truncate_releases_blocks)
{
	struct kv_seq *b;
	struct kv_meminfo mi;

	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, seq_append_vals(self->pool, self->a, vals, 13, 0));
	EXPECT_EQ(-EINVAL, kv_seq_truncate(self->a, 14));
	ASSERT_EQ(0, kv_seq_truncate(self->a, 9));
	EXPECT_EQ(9, kv_seq_tokens(self->a));
	EXPECT_EQ(3, kv_seq_nr_blocks(self->a));
	EXPECT_EQ(32 - 3, free_frames(self->pool, KV_TIER_DEVICE));
	ASSERT_POOL_OK(self->pool);
	ASSERT_EQ(0, kv_seq_fork(self->a, &b));
	ASSERT_EQ(0, kv_seq_truncate(b, 5));
	ASSERT_EQ(0, kv_seq_activate(b, 0));
	/* b's second block is shared and partial: the append copies it. */
	vals[5] = 31337;
	ASSERT_EQ(0, seq_append_vals(self->pool, b, &vals[5], 1, 0));
	EXPECT_EQ(1, kv_vmstat_read(self->pool, KV_COW_COPY));
	EXPECT_EQ(-1, seq_verify(b, vals));
	fill_vals(1);
	EXPECT_EQ(-1, seq_verify(self->a, vals));
	ASSERT_EQ(0, kv_seq_truncate(self->a, 0));
	EXPECT_EQ(0, kv_seq_nr_blocks(self->a));
	kv_seq_free(b);
	kv_pool_meminfo(self->pool, &mi);
	EXPECT_EQ(0, mi.blocks);
	EXPECT_EQ(32, mi.tier[KV_TIER_DEVICE].free);
}

TEST_F(seq, demote_and_promote_keep_contents)
{
	struct kv_meminfo mi;

	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, seq_append_vals(self->pool, self->a, vals, 20, 0));
	EXPECT_EQ(0, kv_reclaim(self->pool, KV_TIER_DEVICE, 100));
	kv_seq_deactivate(self->a);
	EXPECT_EQ(0, kv_seq_is_active(self->a));
	ASSERT_POOL_OK(self->pool);
	EXPECT_EQ(5, kv_reclaim(self->pool, KV_TIER_DEVICE, 100));
	EXPECT_EQ(5, kv_vmstat_read(self->pool, KV_PGDEMOTE));
	kv_pool_meminfo(self->pool, &mi);
	EXPECT_EQ(32, mi.tier[KV_TIER_DEVICE].free);
	EXPECT_EQ(64 - 5, mi.tier[KV_TIER_HOST].free);
	EXPECT_EQ(5, mi.tier[KV_TIER_HOST].inactive);
	ASSERT_POOL_OK(self->pool);
	/* Scribble over the freed device frames: the data lives on the host. */
	memset(kv_pool_frame_addr(self->pool, KV_TIER_DEVICE, 0), 0xa5, 32 * 4096);
	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	EXPECT_EQ(5, kv_vmstat_read(self->pool, KV_PGPROMOTE));
	EXPECT_EQ(-1, seq_verify(self->a, vals));
	kv_pool_meminfo(self->pool, &mi);
	EXPECT_EQ(5, mi.tier[KV_TIER_DEVICE].pinned);
	EXPECT_EQ(64, mi.tier[KV_TIER_HOST].free);
}

TEST_F(seq, second_chance_lru_order)
{
	struct kv_seq *hot;
	u32 before;

	ASSERT_EQ(0, kv_seq_create(self->pool, &hot));
	ASSERT_EQ(0, kv_seq_activate(hot, 0));
	ASSERT_EQ(0, seq_append_vals(self->pool, hot, vals, 8, 0));
	kv_seq_deactivate(hot);
	ASSERT_EQ(0, kv_seq_activate(hot, 0));	/* second use: active */
	kv_seq_deactivate(hot);
	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, seq_append_vals(self->pool, self->a, vals, 8, 0));
	kv_seq_deactivate(self->a);
	EXPECT_EQ(2, kv_vmstat_read(self->pool, KV_PGACTIVATE));
	/* Reclaim two blocks: the cold sequence's go, after one rotation. */
	EXPECT_EQ(2, kv_reclaim(self->pool, KV_TIER_DEVICE, 2));
	EXPECT_GE(kv_vmstat_read(self->pool, KV_PGROTATED), 2);
	before = kv_vmstat_read(self->pool, KV_PGPROMOTE);
	ASSERT_EQ(0, kv_seq_activate(hot, 0));
	EXPECT_EQ(before, kv_vmstat_read(self->pool, KV_PGPROMOTE));
	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	EXPECT_EQ(before + 2, kv_vmstat_read(self->pool, KV_PGPROMOTE));
	EXPECT_EQ(-1, seq_verify(self->a, vals));
	EXPECT_EQ(-1, seq_verify(hot, vals));
	kv_seq_free(hot);
}

TEST_F(seq, pinned_blocks_never_move)
{
	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, seq_append_vals(self->pool, self->a, vals, 31 * TEST_BT, 0));
	EXPECT_EQ(1, free_frames(self->pool, KV_TIER_DEVICE));
	EXPECT_EQ(0, kv_reclaim(self->pool, KV_TIER_DEVICE, 32));
	/* Below min and nothing reclaimable: -ENOMEM, nothing changes. */
	EXPECT_EQ(-ENOMEM, kv_seq_append(self->a, 1, NULL, 0));
	EXPECT_EQ(-EAGAIN, kv_seq_append(self->a, 1, NULL, KV_ALLOC_NOWAIT));
	EXPECT_EQ(31 * TEST_BT, kv_seq_tokens(self->a));
	EXPECT_EQ(-1, seq_verify(self->a, vals));
	EXPECT_EQ(1, free_frames(self->pool, KV_TIER_DEVICE));
}

TEST_F(seq, direct_reclaim_makes_room)
{
	struct kv_seq *b;

	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, seq_append_vals(self->pool, self->a, vals, 24 * TEST_BT, 0));
	kv_seq_deactivate(self->a);
	ASSERT_EQ(0, kv_seq_create(self->pool, &b));
	ASSERT_EQ(0, kv_seq_activate(b, 0));
	fill_vals(2);
	ASSERT_EQ(0, seq_append_vals(self->pool, b, vals, 20 * TEST_BT, 0));
	EXPECT_GE(kv_vmstat_read(self->pool, KV_ALLOCSTALL), 1);
	EXPECT_GE(kv_vmstat_read(self->pool, KV_PGSTEAL_DIRECT), 13);
	EXPECT_EQ(-1, seq_verify(b, vals));
	ASSERT_POOL_OK(self->pool);
	/* a no longer fits beside b: activation fails and changes nothing. */
	EXPECT_EQ(-ENOMEM, kv_seq_activate(self->a, 0));
	EXPECT_EQ(0, kv_seq_is_active(self->a));
	ASSERT_POOL_OK(self->pool);
	kv_seq_deactivate(b);
	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	fill_vals(1);
	EXPECT_EQ(-1, seq_verify(self->a, vals));
	kv_seq_deactivate(self->a);
	ASSERT_EQ(0, kv_seq_activate(b, 0));
	fill_vals(2);
	EXPECT_EQ(-1, seq_verify(b, vals));
	kv_seq_free(b);
}

TEST_F(seq, activation_is_idempotent)
{
	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, seq_append_vals(self->pool, self->a, vals, 5, 0));
	kv_seq_deactivate(self->a);
	kv_seq_deactivate(self->a);
	EXPECT_EQ(-EINVAL, kv_seq_activate(self->a, 0x10));
	EXPECT_EQ(1, kv_vmstat_read(self->pool, KV_SEQ_ACTIVATE));
	EXPECT_EQ(1, kv_vmstat_read(self->pool, KV_SEQ_DEACTIVATE));
}

TEST_F(seq, fork_of_active_sequence_pins_twice)
{
	struct kv_seq *b;
	struct kv_meminfo mi;

	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, seq_append_vals(self->pool, self->a, vals, 8, 0));
	ASSERT_EQ(0, kv_seq_fork(self->a, &b));
	ASSERT_EQ(0, kv_seq_activate(b, 0));
	kv_seq_deactivate(self->a);
	/* Still pinned by b. */
	EXPECT_EQ(0, kv_reclaim(self->pool, KV_TIER_DEVICE, 8));
	kv_seq_free(b);
	kv_pool_meminfo(self->pool, &mi);
	EXPECT_EQ(2, mi.tier[KV_TIER_DEVICE].inactive + mi.tier[KV_TIER_DEVICE].active);
	EXPECT_EQ(2, kv_reclaim(self->pool, KV_TIER_DEVICE, 8));
}

TEST_F(seq, append_into_frames_held_raw)
{
	u32 reserve[4], frames[8], wild = 5;
	u64 slots[12];
	struct kv_meminfo mi;

	ASSERT_EQ(0, kv_frames_alloc(self->pool, KV_TIER_DEVICE, 4, 0, reserve));
	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	EXPECT_EQ(-EINVAL, kv_seq_append_frames(self->a, 4, NULL, slots, 0, &wild, 1));
	EXPECT_EQ(-EINVAL, kv_seq_append_frames(self->a, 4, NULL, slots, 0, reserve, 2));
	EXPECT_EQ(0, kv_seq_tokens(self->a));
	/* 10 tokens: three blocks, the first two from the reserve. */
	ASSERT_EQ(0, kv_seq_append_frames(self->a, 10, NULL, slots, 0, reserve, 2));
	ASSERT_EQ(3, kv_seq_block_table(self->a, frames, 8));
	EXPECT_EQ(reserve[0], frames[0]);
	EXPECT_EQ(reserve[1], frames[1]);
	EXPECT_EQ((u64)reserve[1] * TEST_BT + 1, slots[5]);
	ASSERT_POOL_OK(self->pool);
	/* Adopted frames are no longer raw; the others still are. */
	kv_frames_free(self->pool, KV_TIER_DEVICE, 1, &reserve[0]);
	kv_pool_meminfo(self->pool, &mi);
	EXPECT_EQ(32 - 3 - 2, mi.tier[KV_TIER_DEVICE].free);
	kv_frames_free(self->pool, KV_TIER_DEVICE, 2, &reserve[2]);
	kv_seq_free(self->a);
	ASSERT_EQ(0, kv_seq_create(self->pool, &self->a));
	kv_pool_meminfo(self->pool, &mi);
	EXPECT_EQ(32, mi.tier[KV_TIER_DEVICE].free);
}

/* When the rest cannot be allocated, the frames given stay the caller's. */
TEST_F(seq, append_frames_failure_gives_the_frames_back)
{
	u32 reserve[2], used_before;
	struct kv_meminfo mi;

	ASSERT_EQ(0, kv_seq_activate(self->a, 0));
	ASSERT_EQ(0, kv_frames_alloc(self->pool, KV_TIER_DEVICE, 2, 0, reserve));
	ASSERT_EQ(0, kv_seq_append(self->a, 28 * TEST_BT, NULL, 0));	/* 30 used, 2 free */
	kv_pool_meminfo(self->pool, &mi);
	used_before = mi.tier[KV_TIER_DEVICE].total - mi.tier[KV_TIER_DEVICE].free;
	/* 5 new blocks: 2 given, 3 to allocate with min 1: -ENOMEM. */
	EXPECT_EQ(-ENOMEM, kv_seq_append_frames(self->a, 5 * TEST_BT, NULL, NULL, 0, reserve, 2));
	EXPECT_EQ(28 * TEST_BT, kv_seq_tokens(self->a));
	kv_pool_meminfo(self->pool, &mi);
	EXPECT_EQ(used_before, mi.tier[KV_TIER_DEVICE].total - mi.tier[KV_TIER_DEVICE].free);
	ASSERT_POOL_OK(self->pool);
	/* Still raw: the caller can use them, or free them. */
	EXPECT_EQ(0, kv_seq_append_frames(self->a, 2 * TEST_BT, NULL, NULL, 0, reserve, 2));
	ASSERT_POOL_OK(self->pool);
}

TEST(kvswapd_reclaims_to_high)
{
	struct kv_vm_tunables vm = { .min_free_kbytes = 8, .watermark_scale_factor = 1000 };
	struct kv_pool *pool = test_pool_vm(64, 128, 0, &vm);
	struct kv_meminfo mi;
	struct kv_seq *a, *b;
	int i;

	ASSERT_NE_NULL(pool);
	kv_pool_meminfo(pool, &mi);
	/* min 2, low 8, high 14 */
	ASSERT_EQ(14, mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_HIGH]);
	ASSERT_EQ(0, kv_seq_create(pool, &a));
	ASSERT_EQ(0, kv_seq_activate(a, 0));
	ASSERT_EQ(0, kv_seq_append(a, 50 * TEST_BT, NULL, 0));
	kv_seq_deactivate(a);
	ASSERT_EQ(0, kv_seq_create(pool, &b));
	ASSERT_EQ(0, kv_seq_activate(b, 0));
	ASSERT_EQ(0, kv_seq_append(b, 7 * TEST_BT, NULL, 0));
	for (i = 0; i < 500; i++) {
		kv_pool_meminfo(pool, &mi);
		if (mi.tier[KV_TIER_DEVICE].free >= 14 && !mi.tier[KV_TIER_DEVICE].locked)
			break;
		usleep(10000);
	}
	EXPECT_GE(mi.tier[KV_TIER_DEVICE].free, 14);
	EXPECT_GE(kv_vmstat_read(pool, KV_KSWAPD_WAKE), 1);
	EXPECT_GE(kv_vmstat_read(pool, KV_PGSTEAL_KSWAPD), 7);
	EXPECT_EQ(0, kv_vmstat_read(pool, KV_ALLOCSTALL));
	kv_kvswapd_stop(pool);
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST_HARNESS_MAIN
