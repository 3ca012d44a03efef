// SPDX-License-Identifier: MIT
/*
 * Reclaim corner cases: a device tier full of hot (active, referenced)
 * blocks still yields to direct reclaim; a request reclaim can never
 * satisfy fails before demoting anything; a host-resident sequence trades
 * places with cold device blocks even when the host tier is nearly full;
 * raw frame frees cannot free a block's frame; kvswapd start and stop are
 * safe against each other.
 */
#include <pthread.h>
#include <unistd.h>
#include "kselftest_harness.h"
#include "mm_test.h"

static u32 vals[512];

static void cycle(struct kv_seq *s, int n)
{
	while (n--) {
		kv_seq_deactivate(s);
		kv_seq_activate(s, 0);
	}
	kv_seq_deactivate(s);
}

TEST(hot_blocks_still_reclaimable)
{
	struct kv_pool *pool = test_pool(64, 128);
	struct kv_seq *hot, *b;
	struct kv_meminfo mi;

	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, kv_seq_create(pool, &hot));
	ASSERT_EQ(0, kv_seq_activate(hot, 0));
	ASSERT_EQ(0, seq_append_vals(pool, hot, vals, 56 * TEST_BT, 0));
	cycle(hot, 2);		/* two uses: active and referenced */
	kv_pool_meminfo(pool, &mi);
	ASSERT_EQ(56, mi.tier[KV_TIER_DEVICE].active);
	ASSERT_EQ(0, kv_seq_create(pool, &b));
	ASSERT_EQ(0, kv_seq_activate(b, 0));
	EXPECT_EQ(0, seq_append_vals(pool, b, vals, 8 * TEST_BT, 0));
	EXPECT_GE(kv_vmstat_read(pool, KV_PGSTEAL_DIRECT), 1);
	kv_seq_deactivate(b);
	ASSERT_EQ(0, kv_seq_activate(hot, 0));
	EXPECT_EQ(-1, seq_verify(hot, vals));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(impossible_request_demotes_nothing)
{
	struct kv_pool *pool = test_pool(64, 128);
	struct kv_seq *s, *big;
	u32 f[1];

	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, kv_seq_create(pool, &s));
	ASSERT_EQ(0, kv_seq_activate(s, 0));
	ASSERT_EQ(0, kv_seq_append(s, 40 * TEST_BT, NULL, 0));
	kv_seq_deactivate(s);
	EXPECT_EQ(-ENOMEM, kv_frames_alloc(pool, KV_TIER_DEVICE, 1000, 0, f));
	ASSERT_EQ(0, kv_seq_create(pool, &big));
	ASSERT_EQ(0, kv_seq_activate(big, 0));
	EXPECT_EQ(-ENOMEM, kv_seq_append(big, 100 * TEST_BT, NULL, 0));
	EXPECT_EQ(0, kv_vmstat_read(pool, KV_PGDEMOTE));
	EXPECT_EQ(0, kv_seq_tokens(big));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/* Host 16 frames with 12 held by A: A comes back by trading places with B. */
TEST(activation_trades_places_through_a_full_host)
{
	struct kv_pool *pool = test_pool(16, 16);
	struct kv_seq *a, *b;
	struct kv_meminfo mi;
	u32 bvals[64], i;

	ASSERT_NE_NULL(pool);
	for (i = 0; i < 64; i++)
		bvals[i] = 9000 + i;
	ASSERT_EQ(0, kv_seq_create(pool, &a));
	ASSERT_EQ(0, kv_seq_activate(a, 0));
	ASSERT_EQ(0, seq_append_vals(pool, a, vals, 12 * TEST_BT, 0));
	kv_seq_deactivate(a);
	ASSERT_EQ(12, kv_reclaim(pool, KV_TIER_DEVICE, 16));
	ASSERT_EQ(0, kv_seq_create(pool, &b));
	ASSERT_EQ(0, kv_seq_activate(b, 0));
	ASSERT_EQ(0, seq_append_vals(pool, b, bvals, 8 * TEST_BT, 0));
	kv_seq_deactivate(b);
	kv_pool_meminfo(pool, &mi);
	ASSERT_EQ(4, mi.tier[KV_TIER_HOST].free);
	ASSERT_EQ(8, mi.tier[KV_TIER_DEVICE].free);
	ASSERT_EQ(0, kv_seq_activate(a, 0));
	EXPECT_EQ(-1, seq_verify(a, vals));
	kv_seq_deactivate(a);
	ASSERT_EQ(0, kv_seq_activate(b, 0));
	EXPECT_EQ(-1, seq_verify(b, bvals));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(raw_free_cannot_free_a_blocks_frame)
{
	struct kv_pool *pool = test_pool(16, 16);
	u32 table[4], f, wild = 12345;
	struct kv_seq *s;

	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, kv_seq_create(pool, &s));
	ASSERT_EQ(0, kv_seq_activate(s, 0));
	ASSERT_EQ(0, seq_append_vals(pool, s, vals, TEST_BT, 0));
	ASSERT_EQ(1, kv_seq_block_table(s, table, 4));
	kv_frames_free(pool, KV_TIER_DEVICE, 1, table);
	kv_frames_free(pool, KV_TIER_DEVICE, 1, &wild);
	ASSERT_EQ(0, kv_frames_alloc(pool, KV_TIER_DEVICE, 1, 0, &f));
	EXPECT_NE(table[0], f);
	EXPECT_POOL_OK(pool);
	kv_frames_free(pool, KV_TIER_DEVICE, 1, &f);
	kv_frames_free(pool, KV_TIER_DEVICE, 1, &f);	/* twice: refused */
	EXPECT_EQ(-1, seq_verify(s, vals));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

struct flipper {
	struct kv_pool *pool;
	int rounds;
};

static void *flip(void *arg)
{
	struct flipper *f = arg;
	int i;

	for (i = 0; i < f->rounds; i++) {
		kv_kvswapd_stop(f->pool);
		kv_kvswapd_start(f->pool);
	}
	return NULL;
}

TEST_TIMEOUT(kvswapd_start_stop_race, 120)
{
	struct kv_vm_tunables vm = { .min_free_kbytes = 8, .watermark_scale_factor = 1000 };
	struct kv_pool *pool = test_pool_vm(64, 4096, 0, &vm);
	struct flipper f = { .pool = pool, .rounds = 200 };
	struct kv_seq *s;
	pthread_t th[2];
	int i;

	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, pthread_create(&th[0], NULL, flip, &f));
	ASSERT_EQ(0, pthread_create(&th[1], NULL, flip, &f));
	for (i = 0; i < 300; i++) {
		ASSERT_EQ(0, kv_seq_create(pool, &s));
		ASSERT_EQ(0, kv_seq_activate(s, 0));
		ASSERT_EQ(0, kv_seq_append(s, 6 * TEST_BT, NULL, 0));
		kv_seq_deactivate(s);
	}
	pthread_join(th[0], NULL);
	pthread_join(th[1], NULL);
	EXPECT_EQ(0, kv_kvswapd_start(pool));
	EXPECT_EQ(0, kv_kvswapd_start(pool));	/* already running: nothing */
	kv_kvswapd_stop(pool);
	kv_kvswapd_stop(pool);
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST_HARNESS_MAIN
