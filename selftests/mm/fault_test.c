// SPDX-License-Identifier: MIT
/*
 * Every error path of the sequence operations, driven by fault injection
 * (metadata allocation, frame allocation and copies fail at the 1st, 2nd,
 * ... call until the operation gets through): a failed operation returns a
 * negative errno and leaves every sequence, every block's contents and the
 * pool's accounting as they were.
 */
#include "kselftest_harness.h"
#include "mm_test.h"

#define NSEQ 3
#define ALL_SITES (KV_FAULT_META | KV_FAULT_FRAME | KV_FAULT_COPY)

struct world {
	struct kv_pool *pool;
	struct kv_seq *seq[NSEQ];
	u32 vals[NSEQ][256];
};

struct snapshot {
	u32 tokens[NSEQ];
	u32 blocks[NSEQ];
	int active[NSEQ];
	u32 nr_blocks;
	u32 used;
	u32 pinned;
};

static void snap(struct world *w, struct snapshot *s)
{
	struct kv_meminfo mi;
	int i;

	memset(s, 0, sizeof(*s));
	for (i = 0; i < NSEQ; i++) {
		s->tokens[i] = kv_seq_tokens(w->seq[i]);
		s->blocks[i] = kv_seq_nr_blocks(w->seq[i]);
		s->active[i] = kv_seq_is_active(w->seq[i]);
	}
	kv_pool_meminfo(w->pool, &mi);
	s->nr_blocks = mi.blocks;
	for (i = 0; i < KV_NR_TIERS; i++) {
		s->used += mi.tier[i].total - mi.tier[i].free;
		s->pinned += mi.tier[i].pinned;
	}
}

/*
 * The starting state: seq 0 active with 10 tokens, seq 1 its fork (active,
 * sharing both full blocks and the partial third), seq 2 inactive with
 * 5 blocks, 2 of them demoted to the host tier. Device: 16 frames, 10 free.
 */
static int world_build(struct world *w)
{
	int i, err;
	u32 j;

	memset(w, 0, sizeof(*w));
	w->pool = test_pool(16, 64);
	if (!w->pool)
		return -ENOMEM;
	for (i = 0; i < NSEQ; i++)
		for (j = 0; j < 256; j++)
			w->vals[i][j] = (i + 1) * 1000 + j;
	err = kv_seq_create(w->pool, &w->seq[0]);
	err = err ?: kv_seq_activate(w->seq[0], 0);
	err = err ?: seq_append_vals(w->pool, w->seq[0], w->vals[0], 10, 0);
	err = err ?: kv_seq_fork(w->seq[0], &w->seq[1]);
	err = err ?: kv_seq_activate(w->seq[1], 0);
	err = err ?: kv_seq_create(w->pool, &w->seq[2]);
	err = err ?: kv_seq_activate(w->seq[2], 0);
	err = err ?: seq_append_vals(w->pool, w->seq[2], w->vals[2], 20, 0);
	if (err)
		return err;
	memcpy(w->vals[1], w->vals[0], sizeof(w->vals[0]));
	kv_seq_deactivate(w->seq[2]);
	return kv_reclaim(w->pool, KV_TIER_DEVICE, 2) == 2 ? 0 : -EIO;
}

/*
 * Every sequence still holds its tokens: deactivate all, then activate each
 * alone and read it back; finally restore which were active.
 */
static int world_verify(struct world *w)
{
	int i, was[NSEQ], err = 0;

	for (i = 0; i < NSEQ; i++) {
		was[i] = kv_seq_is_active(w->seq[i]);
		kv_seq_deactivate(w->seq[i]);
	}
	for (i = 0; i < NSEQ && !err; i++) {
		err = kv_seq_activate(w->seq[i], 0);
		if (!err && seq_verify(w->seq[i], w->vals[i]) != -1)
			err = -EUCLEAN;
		kv_seq_deactivate(w->seq[i]);
	}
	for (i = 0; i < NSEQ && !err; i++)
		if (was[i])
			err = kv_seq_activate(w->seq[i], 0);
	return err;
}

typedef int (*op_fn)(struct world *w);

/* Append 3 tokens to seq 1: copies the shared partial block, adds one. */
static int op_append_cow(struct world *w)
{
	w->vals[1][10] = 1;
	w->vals[1][11] = 2;
	w->vals[1][12] = 3;
	return seq_append_vals(w->pool, w->seq[1], &w->vals[1][10], 3, 0);
}

/* Append 40 tokens to seq 0: grows the table, needs direct reclaim. */
static int op_append_many(struct world *w)
{
	return seq_append_vals(w->pool, w->seq[0], &w->vals[0][10], 40, 0);
}

static int op_activate_promote(struct world *w)
{
	return kv_seq_activate(w->seq[2], 0);
}

static int op_write_cow(struct world *w)
{
	u64 slot;
	int err = kv_seq_write(w->seq[1], 2, &slot, 0);

	if (!err) {
		w->vals[1][2] = 99;
		tok_write(w->pool, slot, 99);
	}
	return err;
}

static int op_fork(struct world *w)
{
	struct kv_seq *c;
	int err = kv_seq_fork(w->seq[2], &c);

	if (!err)
		kv_seq_free(c);
	return err;
}

static int op_create(struct world *w)
{
	struct kv_seq *c;
	int err = kv_seq_create(w->pool, &c);

	if (!err)
		kv_seq_free(c);
	return err;
}

/*
 * Run @op with the nth call at any site failing, for n = 1, 2, ... until it
 * succeeds with no fault injected (an operation may absorb a fault, e.g.
 * by retrying a smaller allocation, and must then still be correct).
 * Returns how many runs failed, or -1 when the loop never ended.
 */
static int drive(struct __test_metadata *_metadata, op_fn op)
{
	struct snapshot before, after;
	struct world w;
	int failures = 0, err;
	u64 nth, fired;

	for (nth = 1; nth < 64; nth++) {
		ASSERT_EQ(0, world_build(&w));
		snap(&w, &before);
		kv_pool_fault_inject(w.pool, ALL_SITES, nth, 0);
		err = op(&w);
		fired = kv_pool_fault_fired(w.pool);
		kv_pool_fault_inject(w.pool, 0, 0, 0);
		EXPECT_EQ(0, kv_pool_check(w.pool));
		if (!err) {
			EXPECT_EQ(0, world_verify(&w));
			kv_pool_destroy(w.pool);
			if (!fired)
				return failures;
			continue;
		}
		failures++;
		EXPECT_TRUE(err == -ENOMEM || err == -EIO);
		snap(&w, &after);
		EXPECT_EQ(0, memcmp(&before, &after, sizeof(before)));
		EXPECT_EQ(0, world_verify(&w));
		EXPECT_EQ(0, kv_pool_check(w.pool));
		kv_pool_destroy(w.pool);
	}
	return -1;
}

TEST(append_with_cow)
{
	EXPECT_EQ(2, drive(_metadata, op_append_cow));	/* frames, copy */
}

TEST(append_with_table_growth_and_reclaim)
{
	EXPECT_GE(drive(_metadata, op_append_many), 4);
}

TEST(activate_with_promotion)
{
	EXPECT_GE(drive(_metadata, op_activate_promote), 4);
}

TEST(write_with_cow)
{
	EXPECT_EQ(2, drive(_metadata, op_write_cow));
}

TEST(fork)
{
	EXPECT_EQ(2, drive(_metadata, op_fork));
}

TEST(create)
{
	EXPECT_EQ(1, drive(_metadata, op_create));
}

/* Persistent copy failure under reclaim: allocations fail, nothing lost. */
TEST(reclaim_with_failing_copies)
{
	struct snapshot before, after;
	struct world w;

	ASSERT_EQ(0, world_build(&w));
	snap(&w, &before);
	kv_pool_fault_inject(w.pool, KV_FAULT_COPY, 1, 1);
	EXPECT_EQ(-ENOMEM, op_append_many(&w));
	EXPECT_EQ(0, kv_reclaim(w.pool, KV_TIER_DEVICE, 4));
	EXPECT_GE(kv_pool_fault_fired(w.pool), 2);
	EXPECT_GE(kv_vmstat_read(w.pool, KV_COPY_FAIL), 2);
	kv_pool_fault_inject(w.pool, 0, 0, 0);
	snap(&w, &after);
	EXPECT_EQ(0, memcmp(&before, &after, sizeof(before)));
	EXPECT_EQ(0, world_verify(&w));
	EXPECT_EQ(0, kv_pool_check(w.pool));
	kv_pool_destroy(w.pool);
}

TEST_HARNESS_MAIN
