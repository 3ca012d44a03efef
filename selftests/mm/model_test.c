// SPDX-License-Identifier: MIT
/*
 * Model-based randomized test: a million random operations (create,
 * append, fork, write, truncate, activate, deactivate, reclaim, free) run
 * against the pool and against a plain model (each sequence an array of
 * token values). Every token's contents are checked against the model
 * whenever a sequence is activated, token counts after every operation,
 * and kv_pool_check() runs every 64 operations.
 *
 * KV_MODEL_OPS sets the number of operations, KV_MODEL_SEED the seed (a
 * fresh one each run, printed so that a failure can be replayed).
 */
#include <time.h>
#include "kselftest_harness.h"
#include "mm_test.h"

#define MAXS		12
#define MAX_TOKENS	96

struct mseq {
	struct kv_seq *seq;
	u32 vals[MAX_TOKENS];
	u32 len;
	int active;
};

struct model {
	struct kv_pool *pool;
	struct mseq s[MAXS];
	u64 rng;
	u64 ops[10];
	u64 refused;
};

static u32 rnd(struct model *m, u32 n)
{
	return test_rand(&m->rng, n);
}

static struct mseq *pick(struct model *m, bool live, int want_active)
{
	int i, start = rnd(m, MAXS);
	struct mseq *ms;

	for (i = 0; i < MAXS; i++) {
		ms = &m->s[(start + i) % MAXS];
		if (!!ms->seq != live)
			continue;
		if (live && want_active >= 0 && ms->active != want_active)
			continue;
		return ms;
	}
	return NULL;
}

static int check_seq(struct model *m, struct mseq *ms)
{
	if (kv_seq_tokens(ms->seq) != ms->len || kv_seq_is_active(ms->seq) != ms->active)
		return -EUCLEAN;
	if (ms->active && seq_verify(ms->seq, ms->vals) != -1)
		return -EUCLEAN;
	return 0;
}

static int op_append(struct model *m, struct mseq *ms)
{
	u32 n = 1 + rnd(m, 9), i, v[16];
	int err;

	if (ms->len + n > MAX_TOKENS)
		return 0;
	for (i = 0; i < n; i++)
		v[i] = (u32)m->rng ^ i;
	err = seq_append_vals(m->pool, ms->seq, v, n, rnd(m, 4) ? 0 : KV_ALLOC_NOWAIT);
	if (err == -ENOMEM || err == -EAGAIN) {
		m->refused++;
		return 0;
	}
	if (!err) {
		memcpy(&ms->vals[ms->len], v, n * sizeof(*v));
		ms->len += n;
	}
	return err;
}

static int op_write(struct model *m, struct mseq *ms)
{
	u32 pos, v = (u32)m->rng;
	u64 slot;
	int err;

	if (!ms->len)
		return 0;
	pos = rnd(m, ms->len);
	err = kv_seq_write(ms->seq, pos, &slot, 0);
	if (err == -ENOMEM) {
		m->refused++;
		return 0;
	}
	if (!err) {
		tok_write(m->pool, slot, v);
		ms->vals[pos] = v;
	}
	return err;
}

static int op_activate(struct model *m, struct mseq *ms)
{
	int err = kv_seq_activate(ms->seq, rnd(m, 4) ? 0 : KV_ALLOC_NOWAIT);

	if (err == -ENOMEM || err == -EAGAIN) {
		m->refused++;
		return 0;
	}
	if (!err)
		ms->active = 1;
	return err;
}

static int op_fork(struct model *m, struct mseq *ms)
{
	struct mseq *c = pick(m, false, -1);
	int err;

	if (!c)
		return 0;
	err = kv_seq_fork(ms->seq, &c->seq);
	if (!err) {
		memcpy(c->vals, ms->vals, sizeof(c->vals));
		c->len = ms->len;
		c->active = 0;
	}
	return err;
}

static int op_free(struct model *m, struct mseq *ms)
{
	kv_seq_free(ms->seq);
	ms->seq = NULL;
	ms->len = 0;
	ms->active = 0;
	return 0;
}

/* One random operation; returns 0 or the unexpected error. */
static int step(struct model *m, struct mseq **touched)
{
	u32 op = rnd(m, 100);
	struct mseq *ms;
	int err = 0;

	*touched = NULL;
	if (op < 5) {
		ms = pick(m, false, -1);
		if (ms)
			err = kv_seq_create(m->pool, &ms->seq);
		m->ops[0]++;
	} else if (op < 40) {
		ms = pick(m, true, 1);
		if (ms)
			err = op_append(m, ms);
		m->ops[1]++;
	} else if (op < 47) {
		ms = pick(m, true, -1);
		if (ms)
			err = op_fork(m, ms);
		m->ops[2]++;
	} else if (op < 57) {
		ms = pick(m, true, 1);
		if (ms)
			err = op_write(m, ms);
		m->ops[3]++;
	} else if (op < 62) {
		ms = pick(m, true, -1);
		if (ms) {
			ms->len = ms->len ? rnd(m, ms->len + 1) : 0;
			err = kv_seq_truncate(ms->seq, ms->len);
		}
		m->ops[4]++;
	} else if (op < 77) {
		ms = pick(m, true, 0);
		if (ms)
			err = op_activate(m, ms);
		m->ops[5]++;
	} else if (op < 92) {
		ms = pick(m, true, 1);
		if (ms) {
			kv_seq_deactivate(ms->seq);
			ms->active = 0;
		}
		m->ops[6]++;
	} else if (op < 95) {
		kv_reclaim(m->pool, KV_TIER_DEVICE, 1 + rnd(m, 8));
		ms = NULL;
		m->ops[7]++;
	} else {
		ms = pick(m, true, -1);
		if (ms)
			err = op_free(m, ms);
		m->ops[8]++;
		ms = NULL;
	}
	*touched = ms;
	return err;
}

static u64 env_u64(const char *name, u64 def)
{
	const char *s = getenv(name);

	return s && *s ? strtoull(s, NULL, 0) : def;
}

static void run_model(struct __test_metadata *_metadata, u32 pool_flags, u64 nr_ops)
{
	struct kv_vm_tunables vm = { .min_free_kbytes = 8, .reclaim_batch = 4 };
	struct model m = { 0 };
	struct mseq *ms;
	u64 i, seed;
	int err;

	seed = env_u64("KV_MODEL_SEED", (u64)time(NULL) * 2654435761u ^ (u64)getpid());
	m.rng = seed | 1;
	TH_LOG("seed %llu, %llu operations", (unsigned long long)seed,
	       (unsigned long long)nr_ops);
	m.pool = test_pool_vm(48, 96, pool_flags, &vm);
	ASSERT_NE_NULL(m.pool);
	for (i = 0; i < nr_ops; i++) {
		err = step(&m, &ms);
		if (err)
			TH_LOG("op %llu: unexpected error %d", (unsigned long long)i, err);
		ASSERT_EQ(0, err);
		if (ms)
			ASSERT_EQ(0, check_seq(&m, ms));
		if (i % 64 == 0)
			ASSERT_EQ(0, kv_pool_check(m.pool));
	}
	for (i = 0; i < MAXS; i++)
		if (m.s[i].seq)
			ASSERT_EQ(0, check_seq(&m, &m.s[i]));
	ASSERT_EQ(0, kv_pool_check(m.pool));
	TH_LOG("create %llu append %llu fork %llu write %llu truncate %llu activate %llu "
	       "deactivate %llu reclaim %llu free %llu; refused (ENOMEM/EAGAIN) %llu; "
	       "cow %llu demote %llu promote %llu allocstall %llu",
	       (unsigned long long)m.ops[0], (unsigned long long)m.ops[1],
	       (unsigned long long)m.ops[2], (unsigned long long)m.ops[3],
	       (unsigned long long)m.ops[4], (unsigned long long)m.ops[5],
	       (unsigned long long)m.ops[6], (unsigned long long)m.ops[7],
	       (unsigned long long)m.ops[8], (unsigned long long)m.refused,
	       (unsigned long long)kv_vmstat_read(m.pool, KV_COW_COPY),
	       (unsigned long long)kv_vmstat_read(m.pool, KV_PGDEMOTE),
	       (unsigned long long)kv_vmstat_read(m.pool, KV_PGPROMOTE),
	       (unsigned long long)kv_vmstat_read(m.pool, KV_ALLOCSTALL));
	/* The run must have reached the interesting paths. */
	EXPECT_GT(kv_vmstat_read(m.pool, KV_COW_COPY), 0);
	EXPECT_GT(kv_vmstat_read(m.pool, KV_PGPROMOTE), 0);
	EXPECT_GT(kv_vmstat_read(m.pool, KV_ALLOCSTALL), 0);
	EXPECT_GT(m.refused, 0);
	kv_pool_destroy(m.pool);
}

TEST_TIMEOUT(million_ops, 280)
{
	run_model(_metadata, KV_POOL_NO_KVSWAPD, env_u64("KV_MODEL_OPS", 1000000));
}

/* The same with kvswapd reclaiming in the background. */
TEST_TIMEOUT(ops_with_kvswapd, 280)
{
	run_model(_metadata, 0, env_u64("KV_MODEL_OPS", 1000000) / 5);
}

TEST_HARNESS_MAIN
