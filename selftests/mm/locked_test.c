// SPDX-License-Identifier: MIT
/*
 * Blocks in flight: a device backend whose copies wait at a gate holds a
 * reclaim batch mid-move, so the tests can act while blocks are locked:
 * a NOWAIT activation gets -EAGAIN, a waiting one sleeps until the move
 * ends and then finds its data, fork and free of a sequence whose blocks
 * are being moved are safe, and kv_pool_check() holds throughout.
 */
#include <pthread.h>
#include <unistd.h>
#include "kselftest_harness.h"
#include "mm_test.h"
#include "mm/internal.h"

/* The gate: copies block while closed. Test-only state of this backend. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int closed;
	int waiting;
} gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };

static int gated_submit(struct kv_pool *pool, const struct kv_copy *c, u32 n, void **cookie)
{
	pthread_mutex_lock(&gate.lock);
	gate.waiting++;
	pthread_cond_broadcast(&gate.cond);
	while (gate.closed)
		pthread_cond_wait(&gate.cond, &gate.lock);
	gate.waiting--;
	pthread_mutex_unlock(&gate.lock);
	return kv_cpu_device_ops.copy_submit(pool, c, n, cookie);
}

static void gate_set(int closed)
{
	pthread_mutex_lock(&gate.lock);
	gate.closed = closed;
	pthread_cond_broadcast(&gate.cond);
	pthread_mutex_unlock(&gate.lock);
}

static void gate_wait_for_copy(void)
{
	pthread_mutex_lock(&gate.lock);
	while (!gate.waiting)
		pthread_cond_wait(&gate.cond, &gate.lock);
	pthread_mutex_unlock(&gate.lock);
}

static struct kv_tier_ops ops;

static struct kv_pool *gated_pool(void)
{
	struct kv_pool_params p = { .name = "gated", .geom = test_geom,
				    .nr_frames = { 32, 64 }, .flags = KV_POOL_NO_KVSWAPD,
				    .vm = { .min_free_kbytes = 4 } };
	struct kv_pool *pool;

	ops = kv_cpu_device_ops;
	ops.name = "gated";
	ops.copy_submit = gated_submit;
	p.ops[KV_TIER_DEVICE] = &ops;
	return kv_pool_create(&p, &pool) ? NULL : pool;
}

struct reclaimer {
	struct kv_pool *pool;
	u32 done;
};

static void *reclaim_thread(void *arg)
{
	struct reclaimer *r = arg;

	r->done = kv_reclaim(r->pool, KV_TIER_DEVICE, 8);
	return NULL;
}

struct activator {
	struct kv_seq *seq;
	int err;
};

static void *activate_thread(void *arg)
{
	struct activator *a = arg;

	a->err = kv_seq_activate(a->seq, 0);
	return NULL;
}

static u32 vals[64];

/* A pool whose sequence @seq (8 blocks, inactive) is being demoted. */
static struct kv_pool *start_move(struct __test_metadata *_metadata, struct kv_seq **seq,
				  struct reclaimer *r, pthread_t *th)
{
	struct kv_pool *pool = gated_pool();
	struct kv_meminfo mi;
	u32 i;

	for (i = 0; i < 64; i++)
		vals[i] = 500 + i;
	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, kv_seq_create(pool, seq));
	ASSERT_EQ(0, kv_seq_activate(*seq, 0));
	ASSERT_EQ(0, seq_append_vals(pool, *seq, vals, 8 * TEST_BT, 0));
	kv_seq_deactivate(*seq);
	gate_set(1);
	r->pool = pool;
	ASSERT_EQ(0, pthread_create(th, NULL, reclaim_thread, r));
	gate_wait_for_copy();
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(8, mi.tier[KV_TIER_DEVICE].locked);
	EXPECT_EQ(0, kv_pool_check(pool));
	return pool;
}

TEST(nowait_activation_of_moving_blocks_is_refused)
{
	struct reclaimer r = { 0 };
	struct kv_pool *pool;
	struct kv_seq *seq;
	pthread_t th;

	pool = start_move(_metadata, &seq, &r, &th);
	EXPECT_EQ(-EAGAIN, kv_seq_activate(seq, KV_ALLOC_NOWAIT));
	EXPECT_EQ(0, kv_seq_is_active(seq));
	EXPECT_EQ(0, kv_pool_check(pool));
	gate_set(0);
	pthread_join(th, NULL);
	EXPECT_EQ(8, r.done);
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	EXPECT_EQ(-1, seq_verify(seq, vals));
	EXPECT_EQ(0, kv_pool_check(pool));
	kv_pool_destroy(pool);
}

TEST(activation_waits_for_the_move)
{
	struct reclaimer r = { 0 };
	struct activator a = { 0 };
	struct kv_pool *pool;
	pthread_t th, ta;
	u64 waits;

	pool = start_move(_metadata, &a.seq, &r, &th);
	waits = kv_vmstat_read(pool, KV_LOCKED_WAIT);
	ASSERT_EQ(0, pthread_create(&ta, NULL, activate_thread, &a));
	while (kv_vmstat_read(pool, KV_LOCKED_WAIT) == waits)
		usleep(1000);
	gate_set(0);
	pthread_join(th, NULL);
	pthread_join(ta, NULL);
	EXPECT_EQ(0, a.err);
	EXPECT_EQ(8, r.done);
	/* Demoted, then promoted straight back by the waiting activation. */
	EXPECT_EQ(8, kv_vmstat_read(pool, KV_PGPROMOTE));
	EXPECT_EQ(-1, seq_verify(a.seq, vals));
	EXPECT_EQ(0, kv_pool_check(pool));
	kv_pool_destroy(pool);
}

TEST(fork_and_free_during_the_move)
{
	struct reclaimer r = { 0 };
	struct kv_pool *pool;
	struct kv_seq *seq, *child;
	struct kv_meminfo mi;
	pthread_t th;

	pool = start_move(_metadata, &seq, &r, &th);
	ASSERT_EQ(0, kv_seq_fork(seq, &child));
	kv_seq_free(seq);
	EXPECT_EQ(0, kv_pool_check(pool));
	gate_set(0);
	pthread_join(th, NULL);
	EXPECT_EQ(8, r.done);
	ASSERT_EQ(0, kv_seq_activate(child, 0));
	EXPECT_EQ(-1, seq_verify(child, vals));
	kv_seq_free(child);
	EXPECT_EQ(0, kv_pool_check(pool));
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(0, mi.blocks);
	EXPECT_EQ(32, mi.tier[KV_TIER_DEVICE].free);
	EXPECT_EQ(64, mi.tier[KV_TIER_HOST].free);
	kv_pool_destroy(pool);
}

TEST(free_during_the_move_releases_on_completion)
{
	struct reclaimer r = { 0 };
	struct kv_pool *pool;
	struct kv_seq *seq;
	struct kv_meminfo mi;
	pthread_t th;

	pool = start_move(_metadata, &seq, &r, &th);
	kv_seq_free(seq);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(8, mi.blocks);	/* held by the move until it ends */
	gate_set(0);
	pthread_join(th, NULL);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(0, mi.blocks);
	EXPECT_EQ(32, mi.tier[KV_TIER_DEVICE].free);
	EXPECT_EQ(64, mi.tier[KV_TIER_HOST].free);
	EXPECT_EQ(0, kv_pool_check(pool));
	kv_pool_destroy(pool);
}

TEST_HARNESS_MAIN
