// SPDX-License-Identifier: MIT
/*
 * The prefix cache through kvmemd: a prompt prefilled by one client is
 * found by another (KV read back through the shared arena), tenants from
 * uids and tenant.NAME keys, named pins and `kvmemctl prefix`, local
 * appends with ids, clients killed before writing their KV publish
 * nothing, many clients matching and freeing at once.
 */
#include <pwd.h>
#include <sys/wait.h>
#include "kselftest_harness.h"
#include "../daemon/daemon_test.h"

#define POOL_CONF							\
	"pool.t.layers = 2\npool.t.kv_heads = 2\npool.t.head_dim = 8\n"	\
	"pool.t.block_tokens = 4\npool.t.dtype = fp16\n"		\
	"pool.t.device_mem = 128K\npool.t.host_mem = 256K\n"		\
	"vm.min_free_kbytes = 4\n"
#define BT 4

static char text[KVMEM_MSG_MAX];

/* The KV an engine computes for token @id at @pos (any fixed function). */
static uint32_t kv_of(uint32_t id, uint32_t pos)
{
	return id * 2654435761u ^ pos * 40503u;
}

/* Step tokens ids[from..n) into @seq with their ids, writing their KV. */
static int prefill(struct kvc *c, struct kvc_pool *p, uint64_t seq, const uint32_t *ids,
		   uint32_t from, uint32_t n)
{
	uint64_t slots[256];
	struct kvc_step_seq s = { .seq = seq, .nr_tokens = n - from, .token_ids = ids + from,
				  .slots = slots };
	uint32_t i;
	int err;

	if (n - from > 256)
		return -E2BIG;
	err = kvc_step(c, &s, 1, 0, NULL);
	for (i = 0; !err && i < n - from; i++)
		tok_set(p, slots[i], kv_of(ids[from + i], from + i));
	return err;
}

/* An active @seq holds the KV of ids[0..n): 0, or -EUCLEAN. */
static int check(struct kvc *c, struct kvc_pool *p, uint64_t seq, const uint32_t *ids,
		 uint32_t n)
{
	uint32_t want[256], i;

	if (n > 256)
		return -E2BIG;
	for (i = 0; i < n; i++)
		want[i] = kv_of(ids[i], i);
	return check_vals(c, p, seq, want, n);
}

/*
 * A request as an engine makes it: create, match, prefill the rest, check
 * every token's KV, free. Returns the tokens matched or an error.
 */
static int request(struct kvc *c, struct kvc_pool *p, const uint32_t *ids, uint32_t n)
{
	struct kvmem_prefix_match_reply hit;
	uint64_t seq;
	int m, err;

	err = kvc_seq_create(c, p, &seq);
	if (err)
		return err;
	m = kvc_prefix_match(c, seq, ids, n, &hit);
	err = m < 0 ? m : prefill(c, p, seq, ids, (uint32_t)m, n);
	err = err ?: check(c, p, seq, ids, n);
	err = err ?: kvc_deactivate(c, &seq, 1);
	kvc_seq_free(c, seq);
	return err ? err : m;
}

FIXTURE(prefix) {
	struct daemon d;
	struct kvc *c;
	struct kvc_pool *pool;
};

FIXTURE_SETUP(prefix)
{
	ASSERT_EQ(0, daemon_start(&self->d, POOL_CONF "tenant.shared = 65534, 65533\n"));
	ASSERT_EQ(0, kvc_connect(self->d.sock, &self->c));
	ASSERT_EQ(0, kvc_pool_open(self->c, "t", &self->pool));
}

FIXTURE_TEARDOWN(prefix)
{
	/* Whatever happened, the pool's invariants hold. */
	EXPECT_LT(0, kvc_stats(self->c, KVMEM_STATS_ZONEINFO, 0, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "check      ok"));
	kvc_close(self->c);
	EXPECT_EQ(0, daemon_stop(&self->d));
	daemon_cleanup(&self->d);
}

TEST_F(prefix, a_second_client_finds_the_first_ones_prompt)
{
	uint32_t sys[20], ids[30], i;
	struct kvc_pool *p2;
	struct kvc *c2;

	for (i = 0; i < 20; i++)
		sys[i] = 7000 + i;
	memcpy(ids, sys, sizeof(sys));
	for (i = 20; i < 30; i++)
		ids[i] = 42 + i;
	EXPECT_EQ(0, request(self->c, self->pool, sys, 20));
	ASSERT_EQ(0, kvc_connect(self->d.sock, &c2));
	ASSERT_EQ(0, kvc_pool_open(c2, "t", &p2));
	/* The whole system prompt, then more of the longer prompt. */
	EXPECT_EQ(20, request(c2, p2, ids, 30));
	EXPECT_EQ(28, request(c2, p2, ids, 30));
	EXPECT_EQ(28, request(self->c, self->pool, ids, 29));
	kvc_close(c2);
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_VMSTAT, 0, text, sizeof(text)));
	EXPECT_EQ(109, stat_value(text, "prefix_query_tokens "));
	EXPECT_EQ(76, stat_value(text, "prefix_hit_tokens_device "));
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_PREFIX, 0, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "uid:0"));
	EXPECT_NE_NULL(strstr(text, "largest cached prefixes"));
}

/* Drop the prefix cache (admin) and check nothing else is left. */
static void drop_all(struct __test_metadata *_metadata, struct kvc *c)
{
	EXPECT_LE(0, kvc_drop_caches(c, 0, KVMEM_DROP_PREFIX));
	ASSERT_LT(0, meminfo(c, text, sizeof(text)));
	EXPECT_EQ(0, stat_value(text, "CachedBlocks:"));
	EXPECT_EQ(0, stat_value(text, "Blocks:"));
}

TEST_F(prefix, killed_before_writing_publishes_nothing)
{
	uint32_t ids[16], i;
	int status;
	pid_t pid;

	for (i = 0; i < 16; i++)
		ids[i] = 300 + i;
	pid = fork();
	if (pid == 0) {
		struct kvc_pool *p;
		struct kvc *c;
		uint64_t seq, slots[16];
		struct kvc_step_seq s = { .nr_tokens = 12, .token_ids = ids, .slots = slots };

		if (kvc_connect(self->d.sock, &c) || kvc_pool_open(c, "t", &p) ||
		    kvc_seq_create(c, p, &seq))
			_exit(1);
		s.seq = seq;
		/* Slots handed out, KV never written: then killed. */
		if (kvc_step(c, &s, 1, 0, NULL))
			_exit(1);
		raise(SIGKILL);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFSIGNALED(status));
	usleep(100000);
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(0, stat_value(text, "CachedBlocks:"));
	EXPECT_EQ(0, stat_value(text, "Sequences:"));
	EXPECT_EQ(0, request(self->c, self->pool, ids, 16));
	drop_all(_metadata, self->c);
}

/* Tokens appended locally from the reserve carry their ids to the cache. */
TEST_F(prefix, local_appends_keep_their_ids)
{
	uint32_t ids[24], i;
	uint64_t seq, slot;

	for (i = 0; i < 24; i++)
		ids[i] = 900 + i;
	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq));
	ASSERT_EQ(0, prefill(self->c, self->pool, seq, ids, 0, 4));
	ASSERT_LT(0, kvc_reserve(self->c, self->pool, 8));
	for (i = 4; i < 24; i++) {
		ASSERT_EQ(0, kvc_append_ids(self->c, seq, 1, &ids[i], &slot));
		tok_set(self->pool, slot, kv_of(ids[i], i));
	}
	ASSERT_EQ(0, kvc_deactivate(self->c, &seq, 1));
	ASSERT_EQ(0, kvc_seq_free(self->c, seq));
	EXPECT_EQ(24, request(self->c, self->pool, ids, 24));
	/* Without ids, nothing of them is cached. */
	for (i = 0; i < 24; i++)
		ids[i] += 1000;
	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq));
	ASSERT_EQ(0, prefill(self->c, self->pool, seq, ids, 0, 4));
	for (i = 4; i < 12; i++) {
		ASSERT_EQ(0, kvc_append(self->c, seq, 1, &slot));
		tok_set(self->pool, slot, kv_of(ids[i], i));
	}
	ASSERT_EQ(0, kvc_deactivate(self->c, &seq, 1));
	ASSERT_EQ(0, kvc_seq_free(self->c, seq));
	EXPECT_EQ(4, request(self->c, self->pool, ids, 24));
	drop_all(_metadata, self->c);
}

TEST_F(prefix, named_pins_and_kvmemctl)
{
	uint32_t sys[16], other[32], i, j;
	char cmd[512];
	uint64_t seq;

	for (i = 0; i < 16; i++)
		sys[i] = 50 + i;
	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq));
	ASSERT_EQ(0, prefill(self->c, self->pool, seq, sys, 0, 16));
	EXPECT_EQ(16, kvc_prefix_pin(self->c, seq, "sys-chat"));
	EXPECT_EQ(-EEXIST, kvc_prefix_pin(self->c, seq, "sys-chat"));
	EXPECT_EQ(-EINVAL, kvc_prefix_pin(self->c, seq, "two words"));
	ASSERT_EQ(0, kvc_seq_free(self->c, seq));
	/* Pressure: the device and host tiers turn over many times. */
	for (j = 0; j < 30; j++) {
		for (i = 0; i < 32; i++)
			other[i] = 100000 + j * 32 + i;
		ASSERT_EQ(0, request(self->c, self->pool, other, 32));
	}
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_VMSTAT, 0, text, sizeof(text)));
	EXPECT_LT(0, stat_value(text, "prefix_evict "));
	EXPECT_EQ(16, request(self->c, self->pool, sys, 16));
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_PREFIX, 0, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "named sys-chat: 16 tokens, tenant uid:0, pinned"));
	/* kvmemctl unpins it; then it goes like any other. */
	build_path("kvmemctl", cmd, sizeof(cmd));
	snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd),
		 " -s %s prefix unpin sys-chat t >/dev/null", self->d.sock);
	EXPECT_EQ(0, system(cmd));
	EXPECT_EQ(-ENOENT, kvc_prefix_name_op(self->c, 0, "nope", KVMEM_PREFIX_UNPIN));
	EXPECT_EQ(-EINVAL, kvc_prefix_name_op(self->c, 0, "sys-chat", 9));
	ASSERT_LT(0, kvc_drop_caches(self->c, 0, KVMEM_DROP_PREFIX));
	EXPECT_EQ(0, request(self->c, self->pool, sys, 16));
	EXPECT_EQ(-ENOENT, kvc_prefix_name_op(self->c, 0, "sys-chat", KVMEM_PREFIX_REPIN));
	drop_all(_metadata, self->c);
}

/*
 * In a child running as @uid: the tokens of @ids matched by a request.
 * Exit status: the count, 200 + errno on error.
 */
static int match_as(const char *sock, uid_t uid, const uint32_t *ids, uint32_t n)
{
	struct kvc_pool *p;
	struct kvc *c;
	int status, m;
	pid_t pid = fork();

	if (pid == 0) {
		if (setgid(uid) || setuid(uid))
			_exit(250);
		if (kvc_connect(sock, &c) || kvc_pool_open(c, "t", &p))
			_exit(251);
		m = request(c, p, ids, n);
		_exit(m < 0 ? 200 + (-m % 50) : m);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/* In a child running as @uid: 1 when its prefix report contains @needle. */
static int report_as(const char *sock, uid_t uid, const char *needle)
{
	static char buf[KVMEM_MSG_MAX];
	struct kvc *c;
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		if (setgid(uid) || setuid(uid) || kvc_connect(sock, &c) ||
		    kvc_stats(c, KVMEM_STATS_PREFIX, 0, buf, sizeof(buf)) < 0)
			_exit(250);
		_exit(strstr(buf, needle) ? 1 : 0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

TEST_F(prefix, tenants_by_uid_and_name)
{
	uint32_t ids[16], i;

	if (geteuid())
		SKIP(return, "needs root to run clients as other uids");
	chmod(self->d.dir, 0755);
	for (i = 0; i < 16; i++)
		ids[i] = 4000 + i;
	EXPECT_EQ(0, request(self->c, self->pool, ids, 16));	/* uid 0 */
	EXPECT_EQ(0, match_as(self->d.sock, 65534, ids, 16));	/* not root's */
	EXPECT_EQ(16, match_as(self->d.sock, 65533, ids, 16));	/* same tenant */
	EXPECT_EQ(0, match_as(self->d.sock, 65532, ids, 16));	/* its own uid */
	EXPECT_EQ(16, match_as(self->d.sock, 65532, ids, 16));
	EXPECT_EQ(16, request(self->c, self->pool, ids, 16));	/* root's own */
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_PREFIX, 0, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "\nshared "));
	EXPECT_NE_NULL(strstr(text, "\nuid:65532 "));
	/* A tenant's report shows its own row, not the others'. */
	EXPECT_EQ(1, report_as(self->d.sock, 65532, "\nuid:65532 "));
	EXPECT_EQ(0, report_as(self->d.sock, 65532, "\nuid:0 "));
	EXPECT_EQ(0, report_as(self->d.sock, 65532, "\nshared "));
}

/* Tenant names keep their numbers over a reload that reorders them. */
TEST_F(prefix, tenants_survive_a_reload)
{
	uint32_t ids[16], i;
	char log[8192], conf[1024];

	if (geteuid())
		SKIP(return, "needs root to run clients as other uids");
	for (i = 0; i < 16; i++)
		ids[i] = 8000 + i;
	snprintf(conf, sizeof(conf), "socket.path = %s\nsocket.mode = 0666\ndevice.backend = cpu\n" POOL_CONF
		 "tenant.alpha = 65531\ntenant.beta = 65530\n", self->d.sock);
	ASSERT_EQ(0, write_file(self->d.conf, conf));
	kill(self->d.pid, SIGHUP);
	for (i = 0; i < 200; i++) {
		if (!read_file(self->d.log, log, sizeof(log)) && strstr(log, "re-read"))
			break;
		usleep(10000);
	}
	EXPECT_EQ(0, match_as(self->d.sock, 65531, ids, 16));	/* alpha inserts */
	snprintf(conf, sizeof(conf), "socket.path = %s\nsocket.mode = 0666\ndevice.backend = cpu\n" POOL_CONF
		 "tenant.beta = 65530\ntenant.alpha = 65531\n", self->d.sock);
	ASSERT_EQ(0, write_file(self->d.conf, conf));
	kill(self->d.pid, SIGHUP);
	usleep(300000);
	EXPECT_EQ(16, match_as(self->d.sock, 65531, ids, 16));	/* still alpha's */
	EXPECT_EQ(0, match_as(self->d.sock, 65530, ids, 16));	/* never beta's */
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_PREFIX, 0, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "\nalpha "));
	EXPECT_NE_NULL(strstr(text, "\nbeta "));
}

/* Twenty clients at once over four shared prompts, killed at random. */
TEST_F(prefix, many_clients_matching_and_freeing)
{
	uint32_t sys[4][12], i, j;
	pid_t pids[20];
	int status, ok = 0;

	for (i = 0; i < 4; i++)
		for (j = 0; j < 12; j++)
			sys[i][j] = i * 100 + j;
	for (i = 0; i < 20; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			uint32_t ids[40], k, r;
			struct kvc_pool *p;
			struct kvc *c;
			int m;

			if (kvc_connect(self->d.sock, &c) || kvc_pool_open(c, "t", &p))
				_exit(1);
			for (k = 0; k < 30; k++) {
				r = (i * 31 + k * 7) % 4;
				memcpy(ids, sys[r], sizeof(sys[r]));
				for (j = 12; j < 40; j++)
					ids[j] = (k + j) % 3;
				m = request(c, p, ids, 12 + (k % 28));
				if (m < 0 && m != -ENOMEM)
					_exit(2);
			}
			_exit(0);
		}
	}
	for (i = 0; i < 20; i++) {
		if (i % 5 == 4)
			kill(pids[i], SIGKILL);
		waitpid(pids[i], &status, 0);
		ok += WIFEXITED(status) && !WEXITSTATUS(status);
	}
	EXPECT_LE(16, ok);
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_VMSTAT, 0, text, sizeof(text)));
	EXPECT_LT(0, stat_value(text, "prefix_hit_tokens_device "));
	usleep(100000);
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(0, stat_value(text, "Sequences:"));
	drop_all(_metadata, self->c);
}

/* A batch that fails on a fork publishes none of the parent's unwritten KV. */
TEST_F(prefix, a_failed_step_publishes_nothing)
{
	struct kvc_step_seq s = { .nr_tokens = 8 };
	uint32_t ids[8], big[1000] = { 0 }, i;
	uint64_t parent, child, slots[1000];

	for (i = 0; i < 8; i++)
		ids[i] = 600 + i;
	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &parent));
	s.seq = parent;
	s.token_ids = ids;
	s.slots = slots;
	ASSERT_EQ(0, kvc_step(self->c, &s, 1, 0, NULL));	/* KV never written */
	ASSERT_EQ(0, kvc_seq_fork(self->c, parent, &child));
	s = (struct kvc_step_seq){ .seq = child, .nr_tokens = 1000, .token_ids = big,
				   .slots = slots };
	EXPECT_EQ(-ENOMEM, kvc_step(self->c, &s, 1, 0, NULL));
	ASSERT_EQ(0, kvc_seq_free(self->c, child));
	ASSERT_EQ(0, kvc_seq_free(self->c, parent));
	EXPECT_EQ(0, request(self->c, self->pool, ids, 8));
	drop_all(_metadata, self->c);
}

#define BIG_CONF							\
	"pool.b.layers = 1\npool.b.kv_heads = 1\npool.b.head_dim = 8\n"	\
	"pool.b.block_tokens = 64\npool.b.dtype = fp16\n"		\
	"pool.b.device_mem = 16M\npool.b.host_mem = 1M\n"

/* Append @n tokens to @seq locally, ids @ids (NULL: none), KV written. */
static int local_append(struct kvc *c, struct kvc_pool *p, uint64_t seq, const uint32_t *ids,
			uint32_t from, uint32_t n)
{
	uint32_t i, k, m, end = from + n;
	uint64_t slots[64];
	int err, tries;

	for (i = from; i < end; i += k) {
		k = end - i < 64 ? end - i : 64;
		for (tries = 0; tries < 2; tries++) {
			err = ids ? kvc_append_ids(c, seq, k, ids + i, slots) :
				    kvc_append(c, seq, k, slots);
			if (err != -EAGAIN || kvc_reserve(c, p, 1024) <= 0)
				break;
		}
		if (err)
			return err;
		for (m = 0; m < k; m++)
			tok_set(p, slots[m], kv_of(ids ? ids[i + m] : 0, i + m));
	}
	return 0;
}

/*
 * Long local appends sync in STEPs that fit the daemon's limits, with
 * their ids when they have them; a batch mixing sequences with and
 * without ids costs the former nothing.
 */
TEST(local_appends_sync_in_budget)
{
	static uint32_t ids[2][8448];
	uint64_t seq[5], slots[64];
	struct kvc_step_seq s[2];
	struct kvc_pool *p;
	struct daemon d;
	struct kvc *c;
	int32_t failed;
	uint32_t i, j;

	ASSERT_EQ(0, daemon_start(&d, BIG_CONF));
	ASSERT_EQ(0, kvc_connect(d.sock, &c));
	ASSERT_EQ(0, kvc_pool_open(c, "b", &p));
	for (j = 0; j < 2; j++)
		for (i = 0; i < 8448; i++)
			ids[j][i] = j * 100000 + i;
	for (j = 0; j < 2; j++) {
		ASSERT_EQ(0, kvc_seq_create(c, p, &seq[j]));
		ASSERT_EQ(0, prefill(c, p, seq[j], ids[j], 0, 64));
		ASSERT_EQ(0, local_append(c, p, seq[j], ids[j], 64, 8384));
	}
	/* 16768 tokens with ids to tell: more than one STEP takes. */
	EXPECT_EQ(0, kvc_deactivate(c, seq, 2));
	for (j = 0; j < 2; j++) {
		EXPECT_EQ(0, kvc_seq_free(c, seq[j]));
		ASSERT_EQ(0, kvc_seq_create(c, p, &seq[j]));
		EXPECT_EQ(8448, kvc_prefix_match(c, seq[j], ids[j], 8448, NULL));
		EXPECT_EQ(0, kvc_seq_free(c, seq[j]));
	}
	/* Without ids: 5 x 14000 tokens, then one mixed batch. */
	for (j = 0; j < 5; j++) {
		ASSERT_EQ(0, kvc_seq_create(c, p, &seq[j]));
		ASSERT_EQ(0, prefill(c, p, seq[j], ids[0], 0, 64));
		ASSERT_EQ(0, local_append(c, p, seq[j], NULL, 64, 14000 - 64));
	}
	EXPECT_EQ(0, kvc_deactivate(c, seq, 5));
	for (j = 0; j < 5; j++)
		EXPECT_EQ(0, kvc_seq_free(c, seq[j]));
	for (j = 0; j < 2; j++)
		ASSERT_EQ(0, kvc_seq_create(c, p, &seq[j]));
	s[0] = (struct kvc_step_seq){ .seq = seq[0], .nr_tokens = 64, .token_ids = ids[1] + 64,
				      .slots = slots };
	s[1] = (struct kvc_step_seq){ .seq = seq[1], .nr_tokens = 1, .slots = slots };
	/* Refused whole, before any message: new tokens with NOSLOTS, a
	 * sequence named twice across the two parts of a mixed batch. */
	EXPECT_EQ(-EINVAL, kvc_step(c, s, 1, KVMEM_STEP_NOSLOTS, NULL));
	s[1].seq = seq[0];
	EXPECT_EQ(-EINVAL, kvc_step(c, s, 2, 0, &failed));
	EXPECT_EQ(-1, failed);
	s[1].seq = seq[1];
	ASSERT_EQ(0, kvc_step(c, s, 2, 0, NULL));
	ASSERT_EQ(0, kvc_deactivate(c, seq, 2));
	for (j = 0; j < 2; j++)
		EXPECT_EQ(0, kvc_seq_free(c, seq[j]));
	ASSERT_EQ(0, kvc_seq_create(c, p, &seq[0]));
	EXPECT_EQ(64, kvc_prefix_match(c, seq[0], ids[1] + 64, 64, NULL));
	EXPECT_EQ(0, kvc_seq_free(c, seq[0]));
	kvc_close(c);
	EXPECT_EQ(0, daemon_stop(&d));
	daemon_cleanup(&d);
}

#define POOL_U_CONF							\
	"pool.u.layers = 2\npool.u.kv_heads = 2\npool.u.head_dim = 8\n"	\
	"pool.u.block_tokens = 4\npool.u.dtype = fp16\n"		\
	"pool.u.device_mem = 128K\npool.u.host_mem = 256K\n"

/*
 * In a child running as @uid: name a prefix of 16 tokens "sys" in pool
 * @pool (NULL: none), then, if @op, @op on "sys" in every pool. Exit
 * status: 0, or 100 + errno of the operation.
 */
static int name_as(const char *sock, uid_t uid, const char *pool, uint32_t op)
{
	uint32_t ids[16], i;
	struct kvc_pool *p;
	struct kvc *c;
	uint64_t seq;
	int status, err;
	pid_t pid = fork();

	if (pid == 0) {
		for (i = 0; i < 16; i++)
			ids[i] = 900 + i;
		if (setgid(uid) || setuid(uid) || kvc_connect(sock, &c))
			_exit(250);
		if (pool && (kvc_pool_open(c, pool, &p) || kvc_seq_create(c, p, &seq) ||
			     prefill(c, p, seq, ids, 0, 16) || kvc_prefix_pin(c, seq, "sys") != 16))
			_exit(251);
		err = op ? kvc_prefix_name_op(c, 0, "sys", op) : 0;
		_exit(err < 0 ? 100 + -err % 100 : 0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/*
 * UNPIN and FORGET of a name in every pool, by a tenant that named it in
 * one of two pools where another tenant has the same name in the other:
 * its own changes, the other's not, and the status is 0 (never a change
 * and an error at once); a tenant with no such name of its own gets
 * -EPERM and changes nothing.
 */
TEST(a_name_in_every_pool_means_the_tenants_own)
{
	struct daemon d;
	struct kvc *c;

	if (geteuid())
		SKIP(return, "needs root to run clients as other uids");
	ASSERT_EQ(0, daemon_start(&d, POOL_CONF POOL_U_CONF));
	EXPECT_EQ(0, name_as(d.sock, 65532, "u", 0));
	EXPECT_EQ(0, name_as(d.sock, 65531, "t", KVMEM_PREFIX_UNPIN));
	ASSERT_EQ(0, kvc_connect(d.sock, &c));
	ASSERT_LT(0, kvc_stats(c, KVMEM_STATS_PREFIX, 0, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "named sys: 16 tokens, tenant uid:65531, unpinned"));
	EXPECT_NE_NULL(strstr(text, "named sys: 16 tokens, tenant uid:65532, pinned"));
	EXPECT_EQ(100 + EPERM, name_as(d.sock, 65530, NULL, KVMEM_PREFIX_FORGET));
	EXPECT_EQ(0, name_as(d.sock, 65531, NULL, KVMEM_PREFIX_FORGET));
	ASSERT_LT(0, kvc_stats(c, KVMEM_STATS_PREFIX, 0, text, sizeof(text)));
	EXPECT_NULL(strstr(text, "tenant uid:65531"));
	EXPECT_NE_NULL(strstr(text, "named sys: 16 tokens, tenant uid:65532, pinned"));
	kvc_close(c);
	EXPECT_EQ(0, daemon_stop(&d));
	daemon_cleanup(&d);
}

TEST_HARNESS_MAIN
