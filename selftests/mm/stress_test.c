// SPDX-License-Identifier: MIT
/*
 * Threaded stress: worker threads create, append to, fork, write,
 * activate, deactivate and free sequences while kvswapd reclaims beside
 * them and a checker thread runs kv_pool_check() and reads the counters.
 * Forked children are handed to other workers through a mailbox, so blocks
 * are shared, copied and released across threads. Every activation checks
 * the sequence's contents. Build with SANITIZE=thread to run it under TSan.
 *
 * KV_STRESS_OPS sets the operations per worker.
 */
#include <pthread.h>
#include "kselftest_harness.h"
#include "mm_test.h"

#define WORKERS		4
#define PER_WORKER	6
#define MAX_TOKENS	64
#define MAILBOX		8

struct sseq {
	struct kv_seq *seq;
	u32 vals[MAX_TOKENS];
	u32 len;
};

struct stress {
	struct kv_pool *pool;
	pthread_mutex_t mbox_lock;
	struct sseq mbox[MAILBOX];
	int nr_mbox;
	int stop_checker;
	int failures;
	u64 ops;
};

struct worker {
	struct stress *st;
	struct sseq s[PER_WORKER];
	u64 rng;
	int id;
};

static u32 wrnd(struct worker *w, u32 n)
{
	return test_rand(&w->rng, n);
}

static void fail(struct worker *w, const char *what, int err)
{
	fprintf(stderr, "# worker %d: %s: %d\n", w->id, what, err);
	__atomic_add_fetch(&w->st->failures, 1, __ATOMIC_SEQ_CST);
}

/* Activate, check contents, maybe append or write, deactivate. */
static void use_seq(struct worker *w, struct sseq *s)
{
	struct kv_pool *pool = w->st->pool;
	u32 n = 1 + wrnd(w, 6), i, v[8];
	u64 slot;
	int err;

	err = kv_seq_activate(s->seq, 0);
	if (err == -ENOMEM)
		return;
	if (err)
		return fail(w, "activate", err);
	if (seq_verify(s->seq, s->vals) != -1)
		fail(w, "contents", -EUCLEAN);
	if (wrnd(w, 2) && s->len + n <= MAX_TOKENS) {
		for (i = 0; i < n; i++)
			v[i] = (u32)w->rng + i;
		err = seq_append_vals(pool, s->seq, v, n, 0);
		if (!err) {
			memcpy(&s->vals[s->len], v, n * sizeof(*v));
			s->len += n;
		} else if (err != -ENOMEM) {
			fail(w, "append", err);
		}
	} else if (s->len) {
		i = wrnd(w, s->len);
		err = kv_seq_write(s->seq, i, &slot, 0);
		if (!err) {
			s->vals[i] = (u32)w->rng;
			tok_write(pool, slot, s->vals[i]);
		} else if (err != -ENOMEM) {
			fail(w, "write", err);
		}
	}
	kv_seq_deactivate(s->seq);
}

static void post_fork(struct worker *w, struct sseq *s)
{
	struct stress *st = w->st;
	struct sseq c = *s;
	int err;

	err = kv_seq_fork(s->seq, &c.seq);
	if (err)
		return fail(w, "fork", err);
	pthread_mutex_lock(&st->mbox_lock);
	if (st->nr_mbox < MAILBOX) {
		st->mbox[st->nr_mbox++] = c;
		c.seq = NULL;
	}
	pthread_mutex_unlock(&st->mbox_lock);
	kv_seq_free(c.seq);
}

static void adopt(struct worker *w, struct sseq *s)
{
	struct stress *st = w->st;

	pthread_mutex_lock(&st->mbox_lock);
	if (st->nr_mbox)
		*s = st->mbox[--st->nr_mbox];
	pthread_mutex_unlock(&st->mbox_lock);
}

static void worker_step(struct worker *w)
{
	struct sseq *s = &w->s[wrnd(w, PER_WORKER)];
	u32 op = wrnd(w, 10);
	int err;

	if (!s->seq) {
		if (op < 5)
			adopt(w, s);
		if (!s->seq) {
			err = kv_seq_create(w->st->pool, &s->seq);
			if (err)
				return fail(w, "create", err);
			s->len = 0;
		}
	} else if (op < 7) {
		use_seq(w, s);
	} else if (op < 8) {
		post_fork(w, s);
	} else if (op < 9) {
		s->len = wrnd(w, s->len + 1);
		err = kv_seq_truncate(s->seq, s->len);
		if (err)
			fail(w, "truncate", err);
	} else {
		kv_seq_free(s->seq);
		s->seq = NULL;
	}
}

static void *worker_fn(void *arg)
{
	struct worker *w = arg;
	u64 i, n = w->st->ops;
	int j;

	for (i = 0; i < n; i++)
		worker_step(w);
	for (j = 0; j < PER_WORKER; j++)
		kv_seq_free(w->s[j].seq);
	return NULL;
}

static void *checker_fn(void *arg)
{
	struct stress *st = arg;
	struct kv_meminfo mi;

	while (!__atomic_load_n(&st->stop_checker, __ATOMIC_SEQ_CST)) {
		if (kv_pool_check(st->pool))
			__atomic_add_fetch(&st->failures, 1, __ATOMIC_SEQ_CST);
		kv_pool_meminfo(st->pool, &mi);
		(void)kv_vmstat_read(st->pool, KV_PGDEMOTE);
	}
	return NULL;
}

TEST_TIMEOUT(workers_with_kvswapd, 280)
{
	struct kv_vm_tunables vm = { .min_free_kbytes = 16, .watermark_scale_factor = 500,
				     .reclaim_batch = 8 };
	struct worker w[WORKERS];
	pthread_t th[WORKERS], checker;
	struct stress st = { 0 };
	const char *env = getenv("KV_STRESS_OPS");
	struct kv_meminfo mi;
	int i;

	st.ops = env ? strtoull(env, NULL, 0) : 50000;
	st.pool = test_pool_vm(64, 256, 0, &vm);
	ASSERT_NE_NULL(st.pool);
	pthread_mutex_init(&st.mbox_lock, NULL);
	memset(w, 0, sizeof(w));
	for (i = 0; i < WORKERS; i++) {
		w[i].st = &st;
		w[i].id = i;
		w[i].rng = 0x9e3779b97f4a7c15ull * (i + 1) ^ (u64)getpid();
	}
	ASSERT_EQ(0, pthread_create(&checker, NULL, checker_fn, &st));
	for (i = 0; i < WORKERS; i++)
		ASSERT_EQ(0, pthread_create(&th[i], NULL, worker_fn, &w[i]));
	for (i = 0; i < WORKERS; i++)
		pthread_join(th[i], NULL);
	__atomic_store_n(&st.stop_checker, 1, __ATOMIC_SEQ_CST);
	pthread_join(checker, NULL);
	for (i = 0; i < st.nr_mbox; i++)
		kv_seq_free(st.mbox[i].seq);
	EXPECT_EQ(0, st.failures);
	TH_LOG("kswapd_wake %llu pgsteal_kswapd %llu pgsteal_direct %llu cow %llu "
	       "locked_wait %llu",
	       (unsigned long long)kv_vmstat_read(st.pool, KV_KSWAPD_WAKE),
	       (unsigned long long)kv_vmstat_read(st.pool, KV_PGSTEAL_KSWAPD),
	       (unsigned long long)kv_vmstat_read(st.pool, KV_PGSTEAL_DIRECT),
	       (unsigned long long)kv_vmstat_read(st.pool, KV_COW_COPY),
	       (unsigned long long)kv_vmstat_read(st.pool, KV_LOCKED_WAIT));
	EXPECT_GT(kv_vmstat_read(st.pool, KV_PGSTEAL_KSWAPD), 0);
	kv_kvswapd_stop(st.pool);
	ASSERT_EQ(0, kv_pool_check(st.pool));
	kv_pool_meminfo(st.pool, &mi);
	EXPECT_EQ(0, mi.blocks);
	EXPECT_EQ(mi.tier[KV_TIER_DEVICE].total, mi.tier[KV_TIER_DEVICE].free);
	EXPECT_EQ(mi.tier[KV_TIER_HOST].total, mi.tier[KV_TIER_HOST].free);
	pthread_mutex_destroy(&st.mbox_lock);
	kv_pool_destroy(st.pool);
}

TEST_HARNESS_MAIN
