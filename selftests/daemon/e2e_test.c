// SPDX-License-Identifier: MIT
/*
 * kvmemd end to end: a real daemon and client processes. Steps write KV
 * through the shared arena and the client's block tables stay exact; fork
 * and copy-on-write through STEP; sequences are private to their client;
 * a client killed mid-step, or a hundred coming and going at once, leave
 * nothing behind; a STEP that finds no room waits for another client's
 * frames (step.wait_ms) and loses nothing when it does not get them, when
 * its client stops reading before the answer, or when the daemon cannot
 * stop reading its client;
 * admin operations are refused to others; SIGHUP applies
 * a changed tunable and keeps the old config on error; config errors name
 * file:line; SIGTERM shuts down cleanly.
 */
#include <pthread.h>
#include <pwd.h>
#include <time.h>
#include <sys/epoll.h>
#include "kselftest_harness.h"
#include "daemon_test.h"
#include "seccomp_refuse.h"

#define POOL_CONF							\
	"pool.t.layers = 2\npool.t.kv_heads = 2\npool.t.head_dim = 8\n"	\
	"pool.t.block_tokens = 4\npool.t.dtype = fp16\n"		\
	"pool.t.device_mem = 64K\npool.t.host_mem = 256K\n"		\
	"vm.min_free_kbytes = 4\n"
#define BT 4

static char text[KVMEM_MSG_MAX];

FIXTURE(kvmemd) {
	struct daemon d;
	struct kvc *c;
	struct kvc_pool *pool;
};

FIXTURE_SETUP(kvmemd)
{
	ASSERT_EQ(0, daemon_start(&self->d, POOL_CONF));
	ASSERT_EQ(0, kvc_connect(self->d.sock, &self->c));
	ASSERT_EQ(0, kvc_pool_open(self->c, "t", &self->pool));
}

FIXTURE_TEARDOWN(kvmemd)
{
	kvc_close(self->c);
	EXPECT_EQ(0, daemon_stop(&self->d));
	daemon_cleanup(&self->d);
}

/* Step @n tokens valued @v0.. into @seq, writing them through the arena. */
static int step_vals(struct kvc *c, struct kvc_pool *p, uint64_t seq, uint32_t n,
		     uint32_t v0)
{
	uint64_t slots[64];
	uint32_t ids[64], i;
	struct kvc_step_seq s = { .seq = seq, .nr_tokens = n, .token_ids = ids,
				  .slots = slots };
	int err;

	for (i = 0; i < n; i++)
		ids[i] = v0 + i;	/* a token's KV follows from its id */
	err = kvc_step(c, &s, 1, 0, NULL);
	for (i = 0; !err && i < n; i++)
		tok_set(p, slots[i], v0 + i);
	return err;
}

TEST_F(kvmemd, step_writes_through_the_arena)
{
	uint32_t vals[16], i;
	uint64_t seq;

	for (i = 0; i < 16; i++)
		vals[i] = 500 + i;
	EXPECT_EQ(BT, (int)self->pool->geom.block_tokens);
	EXPECT_EQ(16, (int)self->pool->nr_frames[KVMEM_TIER_DEVICE]);
	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq));
	ASSERT_EQ(0, step_vals(self->c, self->pool, seq, 6, 500));
	ASSERT_EQ(0, step_vals(self->c, self->pool, seq, 1, 506));
	ASSERT_EQ(0, step_vals(self->c, self->pool, seq, 3, 507));
	EXPECT_EQ(0, check_vals(self->c, self->pool, seq, vals, 10));
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(3, stat_value(text, "Blocks:"));
	/* A fresh read of the table from the daemon agrees with the copy. */
	ASSERT_EQ(0, kvc_activate(self->c, &seq, 1, 0, NULL));
	EXPECT_EQ(0, check_vals(self->c, self->pool, seq, vals, 10));
	ASSERT_EQ(0, kvc_seq_truncate(self->c, seq, 5));
	ASSERT_EQ(0, kvc_seq_free(self->c, seq));
	EXPECT_EQ(-ENOENT, kvc_seq_free(self->c, seq));
	/* The one full block left (tokens 500..503) stays in the prefix cache. */
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(1, stat_value(text, "Blocks:"));
	EXPECT_EQ(1, stat_value(text, "CachedBlocks:"));
}

TEST_F(kvmemd, fork_and_cow_through_step)
{
	uint32_t pv[8] = { 1, 2, 3, 4, 5, 6 }, cv[8] = { 1, 2, 3, 4, 5, 6, 77 };
	uint64_t parent, child;

	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &parent));
	ASSERT_EQ(0, step_vals(self->c, self->pool, parent, 6, 1));
	ASSERT_EQ(0, kvc_seq_fork(self->c, parent, &child));
	ASSERT_EQ(0, step_vals(self->c, self->pool, child, 1, 77));
	EXPECT_EQ(0, check_vals(self->c, self->pool, child, cv, 7));
	EXPECT_EQ(0, check_vals(self->c, self->pool, parent, pv, 6));
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_VMSTAT, 0, text, sizeof(text)));
	EXPECT_EQ(1, stat_value(text, "cow_copy "));
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(3, stat_value(text, "Blocks:"));
}

TEST_F(kvmemd, sequences_are_private)
{
	struct kvc *other;
	struct kvc_pool *p2;
	uint64_t seq, mine;
	uint64_t slot;
	struct kvc_step_seq s = { .nr_tokens = 1, .slots = &slot };

	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq));
	ASSERT_EQ(0, kvc_connect(self->d.sock, &other));
	ASSERT_EQ(0, kvc_pool_open(other, "t", &p2));
	/* Handles are per connection: another client's name nothing here. */
	s.seq = seq;
	EXPECT_EQ(-ENOENT, kvc_step(other, &s, 1, 0, NULL));
	EXPECT_EQ(-ENOENT, kvc_seq_fork(other, seq, &mine));
	EXPECT_EQ(-ENOENT, kvc_activate(other, &seq, 1, 0, NULL));
	EXPECT_EQ(-ENOENT, kvc_seq_free(other, seq));
	ASSERT_EQ(0, kvc_seq_create(other, p2, &mine));
	ASSERT_EQ(0, step_vals(other, p2, mine, 3, 40));
	kvc_close(other);
	EXPECT_EQ(0, step_vals(self->c, self->pool, seq, 2, 1));
}

/*
 * ADMIT through kvc_admit(): a request fits now while free and reclaimable
 * frames cover it, later while an active sequence pins what it needs,
 * never when it exceeds the 16 device frames less the min watermark's one
 * (vm.min_free_kbytes = 4: no STEP may take the last frame, so a request
 * of 16 blocks could never finish); the caller's reserve counts.
 */
TEST_F(kvmemd, admit_now_later_never)
{
	struct kvmem_admit_reply rep;
	uint64_t seq;
	int got;

	EXPECT_EQ(-EINVAL, kvc_admit(self->c, self->pool, 0, NULL));
	EXPECT_EQ(KVMEM_ADMIT_NOW, kvc_admit(self->c, self->pool, 15, &rep));
	EXPECT_EQ(16, rep.total);
	EXPECT_EQ(16, rep.free);
	EXPECT_EQ(KVMEM_ADMIT_NEVER, kvc_admit(self->c, self->pool, 16, &rep));
	EXPECT_EQ(KVMEM_ADMIT_NEVER, rep.verdict);
	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq));
	ASSERT_EQ(0, step_vals(self->c, self->pool, seq, 40, 1000));	/* 10 blocks, pinned */
	EXPECT_EQ(KVMEM_ADMIT_NOW, kvc_admit(self->c, self->pool, 5, &rep));
	EXPECT_EQ(10, rep.pinned);
	EXPECT_EQ(6, rep.free);
	EXPECT_EQ(0, rep.reclaimable);
	EXPECT_EQ(KVMEM_ADMIT_LATER, kvc_admit(self->c, self->pool, 6, NULL));
	EXPECT_EQ(KVMEM_ADMIT_LATER, kvc_admit(self->c, self->pool, 15, NULL));
	/* Deactivated, its blocks may go to the host tier: 15 fit now. */
	ASSERT_EQ(0, kvc_deactivate(self->c, &seq, 1));
	EXPECT_EQ(KVMEM_ADMIT_NOW, kvc_admit(self->c, self->pool, 15, &rep));
	EXPECT_EQ(10, rep.reclaimable);
	EXPECT_EQ(0, rep.pinned);
	got = kvc_reserve(self->c, self->pool, 2);
	ASSERT_LE(0, got);
	EXPECT_EQ(KVMEM_ADMIT_NOW, kvc_admit(self->c, self->pool, 15, &rep));
	EXPECT_EQ(got, (int)rep.reserve);
	EXPECT_EQ(6 - got, (int)rep.free);
	EXPECT_EQ(KVMEM_ADMIT_NEVER, kvc_admit(self->c, self->pool, 16, NULL));
	EXPECT_EQ(0, kvc_seq_free(self->c, seq));
}

/* Whether the daemon's own check of its pools passes (zoneinfo) */
static int pools_check_ok(struct kvc *c)
{
	return kvc_stats(c, KVMEM_STATS_ZONEINFO, 0, text, sizeof(text)) > 0 &&
	       strstr(text, "check      ok");
}

/* Wait until the pool holds no block and no sequence (the dead are reaped). */
static int wait_empty(struct kvc *c)
{
	int i;

	for (i = 0; i < 500; i++) {
		/* What is left is held by the prefix cache alone. */
		if (meminfo(c, text, sizeof(text)) > 0 &&
		    stat_value(text, "Blocks:") == stat_value(text, "CachedBlocks:") &&
		    !stat_value(text, "Sequences:"))
			return 0;
		usleep(10000);
	}
	return -1;
}

static void client_loop(const char *sock, int steps)
{
	struct kvc_pool *p;
	uint64_t seq[4];
	struct kvc *c;
	int i, j;

	if (kvc_connect(sock, &c) || kvc_pool_open(c, "t", &p))
		_exit(1);
	for (i = 0; i < 4; i++)
		if (kvc_seq_create(c, p, &seq[i]))
			_exit(1);
	for (i = 0; steps < 0 || i < steps; i++) {
		for (j = 0; j < 4; j++)
			if (step_vals(c, p, seq[j], 1, i) == -ENOMEM)
				kvc_seq_truncate(c, seq[j], 0);
		kvc_deactivate(c, seq, 4);
	}
	_exit(0);
}

TEST_F(kvmemd, client_killed_mid_step_leaks_nothing)
{
	pid_t pid = fork();
	int status;

	if (pid == 0)
		client_loop(self->d.sock, -1);
	usleep(200000);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	EXPECT_EQ(0, wait_empty(self->c));
	EXPECT_TRUE(pools_check_ok(self->c));
	EXPECT_EQ(0, step_vals(self->c, self->pool, 0, 0, 0) == -ENOENT ? 0 : 1);
}

TEST_F(kvmemd, hundred_clients_at_once)
{
	pid_t pids[100];
	int i, status, ok = 0;

	for (i = 0; i < 100; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			client_loop(self->d.sock, 5);
	}
	for (i = 0; i < 100; i += 3)
		kill(pids[i], SIGKILL);
	for (i = 0; i < 100; i++) {
		waitpid(pids[i], &status, 0);
		ok += WIFEXITED(status) && !WEXITSTATUS(status);
	}
	EXPECT_GE(ok, 60);
	EXPECT_EQ(0, wait_empty(self->c));
	ASSERT_LT(0, kvc_clients(self->c, text, sizeof(text)));
	EXPECT_NULL(strchr(strchr(text, '\n') + 1, '\n') == NULL ? NULL : strstr(
		strchr(strchr(text, '\n') + 1, '\n') + 1, "yes"));
	EXPECT_TRUE(pools_check_ok(self->c));
}

TEST_F(kvmemd, admin_operations_need_privilege)
{
	struct passwd *pw = getpwnam("nobody");
	pid_t pid;
	int status;

	if (getuid() != 0 || !pw)
		SKIP(return, "needs root and a 'nobody' user");
	EXPECT_EQ(1, kvc_is_admin(self->c));
	pid = fork();
	if (pid == 0) {
		struct kvc *c;
		char v[64];

		if (setgid(pw->pw_gid) || setuid(pw->pw_uid) || kvc_connect(self->d.sock, &c))
			_exit(10);
		if (kvc_is_admin(c))
			_exit(11);
		if (kvc_sysctl_set(c, "vm.watermark_scale_factor", "99") != -EPERM)
			_exit(12);
		if (kvc_drop_caches(c, 0, 0) != -EPERM)
			_exit(13);
		if (kvc_sysctl_get(c, "vm.watermark_scale_factor", v, sizeof(v)))
			_exit(14);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	EXPECT_EQ(0, WEXITSTATUS(status));
}

TEST_F(kvmemd, sysctl_errors)
{
	char v[64];

	EXPECT_EQ(-ENOENT, kvc_sysctl_get(self->c, "vm.no_such_key", v, sizeof(v)));
	EXPECT_EQ(-EROFS, kvc_sysctl_set(self->c, "socket.path", "/x"));
	EXPECT_EQ(-ERANGE, kvc_sysctl_set(self->c, "vm.watermark_scale_factor", "99999"));
	EXPECT_EQ(-EINVAL, kvc_sysctl_set(self->c, "vm.watermark_scale_factor", "12abc"));
	ASSERT_EQ(0, kvc_sysctl_get(self->c, "vm.watermark_scale_factor", v, sizeof(v)));
	EXPECT_STREQ("10", v);
	ASSERT_EQ(0, kvc_sysctl_set(self->c, "vm.watermark_scale_factor", "300"));
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_ZONEINFO, 1, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "low      2"));
}

static int wait_value(struct kvc *c, const char *key, const char *want)
{
	char v[64];
	int i;

	for (i = 0; i < 300; i++) {
		if (!kvc_sysctl_get(c, key, v, sizeof(v)) && !strcmp(v, want))
			return 0;
		usleep(10000);
	}
	return -1;
}

TEST_F(kvmemd, sighup_rereads_tunables)
{
	char conf[4096];
	const char *p;

	snprintf(conf, sizeof(conf), "socket.path = %s\nsocket.mode = 0666\ndevice.backend = cpu\n%s"
		 "vm.watermark_scale_factor = 200\n", self->d.sock, POOL_CONF);
	ASSERT_EQ(0, write_file(self->d.conf, conf));
	kill(self->d.pid, SIGHUP);
	EXPECT_EQ(0, wait_value(self->c, "vm.watermark_scale_factor", "200"));
	/* step.wait_ms too, alone: a change that the log reports */
	strcat(conf, "step.wait_ms = 250\n");
	ASSERT_EQ(0, write_file(self->d.conf, conf));
	kill(self->d.pid, SIGHUP);
	EXPECT_EQ(0, wait_value(self->c, "step.wait_ms", "250"));
	ASSERT_EQ(0, read_file(self->d.log, text, sizeof(text)));
	p = strstr(text, "(run-time keys changed)");
	ASSERT_NE_NULL(p);
	EXPECT_NE_NULL(strstr(p + 1, "(run-time keys changed)"));	/* both SIGHUPs' */
	/* A broken file: logged with file:line, the running config stays. */
	strcat(conf, "vm.bogus = 1\n");
	ASSERT_EQ(0, write_file(self->d.conf, conf));
	kill(self->d.pid, SIGHUP);
	usleep(300000);
	EXPECT_EQ(0, wait_value(self->c, "vm.watermark_scale_factor", "200"));
	ASSERT_EQ(0, read_file(self->d.log, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "kvmemd.conf:14"));
	EXPECT_NE_NULL(strstr(text, "keeping the running configuration"));
}

/* Memory pressure through the daemon: contents survive demotion and promotion. */
TEST_F(kvmemd, contents_survive_reclaim)
{
	uint32_t vals[4][32], i, j;
	uint64_t seq[4];

	for (i = 0; i < 4; i++) {
		ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq[i]));
		for (j = 0; j < 24; j++)
			vals[i][j] = i * 100 + j;
		ASSERT_EQ(0, step_vals(self->c, self->pool, seq[i], 24, i * 100));
		ASSERT_EQ(0, kvc_deactivate(self->c, &seq[i], 1));
	}
	for (i = 0; i < 4; i++) {
		ASSERT_EQ(0, kvc_activate(self->c, &seq[i], 1, 0, NULL));
		EXPECT_EQ(0, check_vals(self->c, self->pool, seq[i], vals[i], 24));
		ASSERT_EQ(0, kvc_deactivate(self->c, &seq[i], 1));
	}
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_VMSTAT, 0, text, sizeof(text)));
	EXPECT_LT(0, stat_value(text, "pgdemote "));
	EXPECT_LT(0, stat_value(text, "pgpromote "));
	/* Four sequences of 6 blocks never fit the 16 device frames at once. */
	EXPECT_EQ(-ENOMEM, kvc_activate(self->c, seq, 4, 0, NULL));
	EXPECT_EQ(0, kvc_drop_caches(self->c, 0, 0) < 0);
}

/* Requests this client has made, from the daemon's clients list. */
static long long my_requests(struct kvc *c)
{
	char line[32];
	const char *p;

	if (kvc_clients(c, text, sizeof(text)) <= 0)
		return -1;
	snprintf(line, sizeof(line), "\n%8llu ", (unsigned long long)kvc_client_id(c));
	p = strstr(text, line);
	if (!p)
		return -1;
	return strtoll(p + 1 + 8 + 1 + 8 + 1 + 8 + 1 + 6 + 1 + 10 + 1, NULL, 10);
}

TEST_F(kvmemd, local_appends_from_the_reserve)
{
	uint32_t vals[40], i;
	uint64_t seq, slots[40];
	long long before;

	for (i = 0; i < 40; i++)
		vals[i] = 7000 + i;
	ASSERT_EQ(8, kvc_reserve(self->c, self->pool, 8));
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(8 * 4, stat_value(text, "DeviceTotal:") - stat_value(text, "DeviceFree:"));
	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq));
	ASSERT_EQ(0, step_vals(self->c, self->pool, seq, 2, 7000));
	/* 22 more tokens: the rest of block 0 and five blocks from the reserve. */
	before = my_requests(self->c);
	ASSERT_EQ(0, kvc_append(self->c, seq, 22, slots));
	for (i = 0; i < 22; i++)
		tok_set(self->pool, slots[i], vals[2 + i]);
	EXPECT_EQ(0, check_vals(self->c, self->pool, seq, vals, 24));
	EXPECT_EQ(before + 1, my_requests(self->c));	/* only the clients query */
	/* Three more blocks than the reserve holds: the daemon is needed. */
	EXPECT_EQ(-EAGAIN, kvc_append(self->c, seq, 16, slots));
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(1, stat_value(text, "Blocks:"));
	ASSERT_EQ(0, kvc_sync(self->c));
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(6, stat_value(text, "Blocks:"));
	/* Demote everything and bring it back: the daemon kept our data. */
	ASSERT_EQ(0, kvc_deactivate(self->c, &seq, 1));
	EXPECT_LT(0, kvc_drop_caches(self->c, 0, 0));
	ASSERT_EQ(0, kvc_activate(self->c, &seq, 1, 0, NULL));
	EXPECT_EQ(0, check_vals(self->c, self->pool, seq, vals, 24));
	ASSERT_EQ(0, step_vals(self->c, self->pool, seq, 4, 7024));
	EXPECT_EQ(0, check_vals(self->c, self->pool, seq, vals, 28));
}

TEST_F(kvmemd, reserve_returns_to_the_pool)
{
	uint64_t seq, slots[8];
	int i;
	struct kvc *c2;
	struct kvc_pool *p2;

	ASSERT_EQ(0, kvc_connect(self->d.sock, &c2));
	ASSERT_EQ(0, kvc_pool_open(c2, "t", &p2));
	ASSERT_EQ(4, kvc_reserve(c2, p2, 4));
	EXPECT_EQ(-EINVAL, kvc_reserve(c2, p2, KVMEM_RESERVE_MAX + 1));
	ASSERT_EQ(0, kvc_seq_create(c2, p2, &seq));
	ASSERT_EQ(0, kvc_step(c2, &(struct kvc_step_seq){ .seq = seq, .slots = slots }, 1, 0,
			      NULL));
	ASSERT_EQ(0, kvc_append(c2, seq, 8, slots));	/* two reserve frames */
	ASSERT_EQ(0, kvc_seq_free(c2, seq));		/* they come back */
	EXPECT_EQ(0, kvc_reserve(c2, p2, 4));		/* nothing to add */
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(4 * 4, stat_value(text, "DeviceTotal:") - stat_value(text, "DeviceFree:"));
	kvc_close(c2);
	/* The daemon sees the close in its own time: wait for the frames. */
	for (i = 0; i < 500; i++) {
		ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
		if (stat_value(text, "DeviceTotal:") == stat_value(text, "DeviceFree:"))
			break;
		usleep(10000);
	}
	EXPECT_EQ(stat_value(text, "DeviceTotal:"), stat_value(text, "DeviceFree:"));
}

/*
 * kvc_reserve_release(): the reserve's free frames go back at once; those
 * a local append made blocks stay the sequence's (the daemon learns of
 * them with its next request), and a second release finds none.
 */
TEST_F(kvmemd, reserve_release_gives_free_frames_back)
{
	struct kvmem_admit_reply rep;
	uint64_t seq, slots[2 * BT];

	ASSERT_EQ(4, kvc_reserve(self->c, self->pool, 4));
	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq));
	ASSERT_EQ(0, kvc_step(self->c, &(struct kvc_step_seq){ .seq = seq, .slots = slots }, 1,
			      0, NULL));
	ASSERT_EQ(0, kvc_append(self->c, seq, 2 * BT, slots));	/* two reserve frames */
	EXPECT_EQ(2, kvc_reserve_release(self->c, self->pool));
	EXPECT_EQ(0, kvc_reserve_release(self->c, self->pool));
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(2 * 4, stat_value(text, "DeviceTotal:") - stat_value(text, "DeviceFree:"));
	EXPECT_EQ(KVMEM_ADMIT_NOW, kvc_admit(self->c, self->pool, 1, &rep));
	EXPECT_EQ(2, (int)rep.reserve);	/* the two made blocks, not yet told */
	EXPECT_EQ(-EAGAIN, kvc_append(self->c, seq, BT, slots));	/* the stock is empty */
	ASSERT_EQ(0, kvc_sync(self->c));
	EXPECT_EQ(KVMEM_ADMIT_NOW, kvc_admit(self->c, self->pool, 1, &rep));
	EXPECT_EQ(0, (int)rep.reserve);
	EXPECT_EQ(2, (int)rep.pinned);
	ASSERT_EQ(0, kvc_seq_free(self->c, seq));
	ASSERT_LT(0, meminfo(self->c, text, sizeof(text)));
	EXPECT_EQ(stat_value(text, "DeviceTotal:"), stat_value(text, "DeviceFree:"));
}

/* Reserves come only from memory above the low watermark. */
TEST_F(kvmemd, reserves_do_not_reclaim)
{
	uint64_t seq;

	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq));
	ASSERT_EQ(0, step_vals(self->c, self->pool, seq, 12 * BT, 0));
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_ZONEINFO, 1, text, sizeof(text)));
	ASSERT_NE_NULL(strstr(text, "low      2"));
	EXPECT_EQ(2, kvc_reserve(self->c, self->pool, 8));	/* 4 free, low 2 */
	EXPECT_EQ(0, kvc_reserve(self->c, self->pool, 8));
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_VMSTAT, 0, text, sizeof(text)));
	EXPECT_EQ(0, stat_value(text, "allocstall "));
}

/*
 * STEPs that wait for frames (daemon/wait.c). Client A's active sequence
 * pins 14 of the 16 device frames (the min watermark keeps one), so a
 * STEP of client B that needs two finds no room.
 */
struct waiter {
	struct kvc *c;
	struct kvc_pool *p;
	uint64_t seq;
	volatile int freed;	/* A released its frames before B's reply */
	int ret, saw_freed;
	struct timespec t0, t1;
};

static void *waiter_step(void *arg)
{
	struct waiter *w = arg;

	clock_gettime(CLOCK_MONOTONIC, &w->t0);
	w->ret = step_vals(w->c, w->p, w->seq, 2 * BT, 100);
	w->saw_freed = __atomic_load_n(&w->freed, __ATOMIC_ACQUIRE);
	clock_gettime(CLOCK_MONOTONIC, &w->t1);
	return NULL;
}

static long waited_ms(const struct waiter *w)
{
	return (w->t1.tv_sec - w->t0.tv_sec) * 1000 + (w->t1.tv_nsec - w->t0.tv_nsec) / 1000000;
}

/*
 * struct wait_case - a second daemon with step.wait_ms set (@d); client A
 * (@a, its pool @pa) whose sequence @sa holds 14 frames; client B (@w.c)
 * with a sequence of its own
 */
struct wait_case {
	struct daemon d;
	struct kvc *a;
	struct kvc_pool *pa;
	uint64_t sa;
	struct waiter w;
};

/* @wc with step.wait_ms = @ms */
static int wait_setup(struct wait_case *wc, long ms)
{
	char conf[512];

	snprintf(conf, sizeof(conf), "%sstep.wait_ms = %ld\n", POOL_CONF, ms);
	memset(wc, 0, sizeof(*wc));
	if (daemon_start(&wc->d, conf) || kvc_connect(wc->d.sock, &wc->a) ||
	    kvc_pool_open(wc->a, "t", &wc->pa) || kvc_seq_create(wc->a, wc->pa, &wc->sa) ||
	    step_vals(wc->a, wc->pa, wc->sa, 14 * BT, 0) || kvc_connect(wc->d.sock, &wc->w.c) ||
	    kvc_pool_open(wc->w.c, "t", &wc->w.p) || kvc_seq_create(wc->w.c, wc->w.p, &wc->w.seq))
		return -1;
	return 0;
}

/* Close A and B (unless a test closed it: NULL), stop the daemon: its status */
static int wait_teardown(struct wait_case *wc)
{
	int err;

	kvc_close(wc->w.c);
	kvc_close(wc->a);
	err = daemon_stop(&wc->d);
	daemon_cleanup(&wc->d);
	return err;
}

/* @w's STEP in a thread @t, given the time to start waiting */
static int waiter_start(struct waiter *w, pthread_t *t)
{
	if (pthread_create(t, NULL, waiter_step, w))
		return -1;
	usleep(200000);
	return 0;
}

/* B's STEP waits until A frees its sequence, then succeeds. */
TEST_F(kvmemd, step_waits_for_frames_another_client_frees)
{
	uint32_t vals[8], i;
	struct wait_case wc;
	pthread_t t;

	ASSERT_EQ(0, wait_setup(&wc, 5000));
	ASSERT_EQ(0, waiter_start(&wc.w, &t));
	__atomic_store_n(&wc.w.freed, 1, __ATOMIC_RELEASE);
	ASSERT_EQ(0, kvc_seq_free(wc.a, wc.sa));
	pthread_join(t, NULL);
	EXPECT_EQ(0, wc.w.ret);
	EXPECT_EQ(1, wc.w.saw_freed);	/* answered after the free, not before */
	for (i = 0; i < 8; i++)
		vals[i] = 100 + i;
	EXPECT_EQ(0, check_vals(wc.w.c, wc.w.p, wc.w.seq, vals, 8));
	EXPECT_TRUE(pools_check_ok(wc.a));
	EXPECT_EQ(0, wait_teardown(&wc));
}

/*
 * With nobody freeing, B's STEP fails with -ENOMEM once step.wait_ms
 * is up, and nothing changed: it succeeds once A's frames are free.
 * step.wait_ms = 0 fails it at once.
 */
TEST_F(kvmemd, step_wait_ends_in_enomem_and_loses_nothing)
{
	struct wait_case wc;

	ASSERT_EQ(0, wait_setup(&wc, 150));
	waiter_step(&wc.w);
	EXPECT_EQ(-ENOMEM, wc.w.ret);
	EXPECT_LE(150, waited_ms(&wc.w));
	ASSERT_LT(0, meminfo(wc.w.c, text, sizeof(text)));
	EXPECT_EQ(14, stat_value(text, "Blocks:"));	/* A's, none of B's */
	if (getuid() == 0) {
		ASSERT_EQ(0, kvc_sysctl_set(wc.a, "step.wait_ms", "0"));
		waiter_step(&wc.w);
		EXPECT_EQ(-ENOMEM, wc.w.ret);
		EXPECT_GT(100, waited_ms(&wc.w));
	}
	ASSERT_EQ(0, kvc_seq_free(wc.a, wc.sa));
	waiter_step(&wc.w);
	EXPECT_EQ(0, wc.w.ret);
	EXPECT_EQ(0, wait_teardown(&wc));
}

/*
 * When every client waits, the oldest is answered at once: B waits for A's
 * frames, then A's own STEP for two more blocks waits too. B gets -ENOMEM
 * long before step.wait_ms; once B goes, A (alone) gets its answer too.
 */
TEST_F(kvmemd, oldest_waiter_answered_when_every_client_waits)
{
	struct waiter wa = { 0 };
	struct wait_case wc;
	pthread_t tb, ta;

	ASSERT_EQ(0, wait_setup(&wc, 5000));
	ASSERT_EQ(0, waiter_start(&wc.w, &tb));
	wa.c = wc.a;
	wa.p = wc.pa;
	wa.seq = wc.sa;
	ASSERT_EQ(0, pthread_create(&ta, NULL, waiter_step, &wa));
	pthread_join(tb, NULL);
	EXPECT_EQ(-ENOMEM, wc.w.ret);
	EXPECT_GT(2500, waited_ms(&wc.w));	/* answered, not timed out */
	kvc_close(wc.w.c);
	wc.w.c = NULL;
	pthread_join(ta, NULL);
	EXPECT_EQ(-ENOMEM, wa.ret);
	EXPECT_GT(2500, waited_ms(&wa));
	ASSERT_LT(0, meminfo(wc.a, text, sizeof(text)));
	EXPECT_EQ(14, stat_value(text, "Blocks:"));	/* A's, as before */
	EXPECT_TRUE(pools_check_ok(wc.a));
	EXPECT_EQ(0, wait_teardown(&wc));
}

/*
 * A waiting STEP whose client stops reading (shutdown(SHUT_RD): the
 * daemon's send fails with EPIPE, and it cannot see that before): when A
 * frees its frames, the retry succeeds, its answer cannot go, and the
 * daemon closes B itself, which returns B's new blocks. Nothing is lost.
 */
TEST_F(kvmemd, waiting_step_whose_client_stops_reading)
{
	struct wait_case wc;
	char log[16384];
	pthread_t t;

	ASSERT_EQ(0, wait_setup(&wc, 5000));
	ASSERT_EQ(0, waiter_start(&wc.w, &t));	/* B's STEP waits: A holds the frames */
	ASSERT_EQ(0, shutdown(kvc_fd(wc.w.c), SHUT_RD));
	pthread_join(t, NULL);	/* B's read of the answer ends */
	EXPECT_NE(0, wc.w.ret);
	ASSERT_EQ(0, kvc_seq_free(wc.a, wc.sa));
	/* B is still open here: only the daemon closing it empties the pool */
	EXPECT_EQ(0, wait_empty(wc.a));
	EXPECT_TRUE(pools_check_ok(wc.a));
	ASSERT_EQ(0, read_file(wc.d.log, log, sizeof(log)));
	EXPECT_NE_NULL(strstr(log, "reply not taken"));
	ASSERT_EQ(0, kvc_seq_create(wc.a, wc.pa, &wc.sa));
	EXPECT_EQ(0, step_vals(wc.a, wc.pa, wc.sa, 14 * BT, 0));
	EXPECT_EQ(0, wait_teardown(&wc));
}

/* A client killed while its STEP waits leaves nothing behind. */
TEST_F(kvmemd, client_killed_while_its_step_waits)
{
	struct wait_case wc;
	pid_t pid;
	int status;

	ASSERT_EQ(0, wait_setup(&wc, 5000));
	pid = fork();
	if (pid == 0) {
		waiter_step(&wc.w);	/* waits: A holds the frames */
		_exit(0);
	}
	usleep(200000);
	ASSERT_LT(0, kvc_clients(wc.a, text, sizeof(text)));
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	EXPECT_TRUE(WIFSIGNALED(status));	/* it was still waiting */
	kvc_close(wc.w.c);		/* the parent's copy of the connection */
	wc.w.c = NULL;
	ASSERT_EQ(0, kvc_seq_free(wc.a, wc.sa));
	EXPECT_EQ(0, wait_empty(wc.a));
	EXPECT_TRUE(pools_check_ok(wc.a));
	ASSERT_EQ(0, kvc_seq_create(wc.a, wc.pa, &wc.sa));
	EXPECT_EQ(0, step_vals(wc.a, wc.pa, wc.sa, 14 * BT, 0));
	EXPECT_EQ(0, wait_teardown(&wc));
}

/*
 * A STEP that would wait, but whose client the daemon cannot stop reading
 * (epoll_ctl(EPOLL_CTL_MOD) refused, as ENOMEM from the kernel would):
 * answered at once with -ENOMEM, not after step.wait_ms, and nothing is
 * lost; it succeeds once A's frames are free.
 */
TEST_F(kvmemd, step_that_cannot_wait_is_answered_at_once)
{
	struct wait_case wc;
	int err;

	/* the second daemon, started now, inherits the filter */
	err = kvt_refuse((const struct kvt_refusal[]){
		{ __NR_epoll_ctl, EPOLL_CTL_MOD, ENOMEM } }, 1);
	if (err)
		SKIP(return, "no seccomp filter here: %s", strerror(-err));
	ASSERT_EQ(0, wait_setup(&wc, 5000));
	waiter_step(&wc.w);
	EXPECT_EQ(-ENOMEM, wc.w.ret);
	EXPECT_GT(2500, waited_ms(&wc.w));
	ASSERT_LT(0, meminfo(wc.w.c, text, sizeof(text)));
	EXPECT_EQ(14, stat_value(text, "Blocks:"));	/* A's, none of B's */
	EXPECT_TRUE(pools_check_ok(wc.a));
	ASSERT_EQ(0, kvc_seq_free(wc.a, wc.sa));
	waiter_step(&wc.w);
	EXPECT_EQ(0, wc.w.ret);
	EXPECT_EQ(0, wait_teardown(&wc));
}

/* ACTIVATE leaves the client's table copy stale; a STEP must not patch it. */
TEST_F(kvmemd, step_after_activate_gives_exact_tables)
{
	uint32_t av[16] = { 10, 11, 12, 13, 14, 15, 16 }, bv[4] = { 20, 21, 22, 23 };
	struct kvc_step_seq ss[2];
	uint64_t a, b, sa[1], sb[4], slot;

	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &a));
	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &b));
	ASSERT_EQ(0, step_vals(self->c, self->pool, a, 6, 10));
	ASSERT_EQ(0, kvc_deactivate(self->c, &a, 1));
	EXPECT_LT(0, kvc_drop_caches(self->c, 0, 0));	/* a's blocks move */
	ASSERT_EQ(0, kvc_activate(self->c, &a, 1, 0, NULL));
	ss[0] = (struct kvc_step_seq){ .seq = a, .nr_tokens = 1, .slots = sa };
	ss[1] = (struct kvc_step_seq){ .seq = b, .nr_tokens = 4, .slots = sb };
	ASSERT_EQ(0, kvc_step(self->c, ss, 2, 0, NULL));
	tok_set(self->pool, sa[0], 16);
	for (int i = 0; i < 4; i++)
		tok_set(self->pool, sb[i], 20 + i);
	EXPECT_EQ(0, check_vals(self->c, self->pool, a, av, 7));
	EXPECT_EQ(0, check_vals(self->c, self->pool, b, bv, 4));
	/* The copy is exact again: a token goes into a's own tail block locally. */
	EXPECT_EQ(0, kvc_append(self->c, a, 1, &slot));
	EXPECT_EQ((uint64_t)sa[0] + 1, slot);
	ss[1] = ss[0];
	EXPECT_EQ(-EINVAL, kvc_step(self->c, ss, 2, 0, NULL));	/* the same sequence twice */
}

TEST_F(kvmemd, oversized_requests_are_refused_in_the_library)
{
	static uint32_t ids[1 << 20];
	static uint64_t slots[1 << 20];
	struct kvc_step_seq s = { .nr_tokens = 1 << 20, .token_ids = ids, .slots = slots };
	int32_t failed = 5;

	ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &s.seq));
	EXPECT_EQ(-EINVAL, kvc_step(self->c, &s, 1, 0, &failed));
	EXPECT_EQ(-1, failed);	/* refused before any was tried */
	failed = 5;
	EXPECT_EQ(-EINVAL, kvc_step(self->c, &s, 0, 0, &failed));
	EXPECT_EQ(-1, failed);
	EXPECT_EQ(0, step_vals(self->c, self->pool, s.seq, 2, 1));
}

/* A reply close to KVMEM_MSG_MAX still fits one packet. */
TEST(large_replies)
{
	static struct kvc_step_seq ss[4096];
	static uint64_t slots[4096][4];
	struct kvc_pool *p;
	struct daemon d;
	struct kvc *c;
	uint32_t i;

	ASSERT_EQ(0, daemon_start(&d, "pool.big.layers = 1\npool.big.kv_heads = 1\n"
				  "pool.big.head_dim = 8\npool.big.block_tokens = 4\n"
				  "pool.big.dtype = fp16\npool.big.device_mem = 32M\n"
				  "pool.big.host_mem = 1M\n"));
	ASSERT_EQ(0, kvc_connect(d.sock, &c));
	ASSERT_EQ(0, kvc_pool_open(c, "big", &p));
	for (i = 0; i < 4096; i++) {
		ASSERT_EQ(0, kvc_seq_create(c, p, &ss[i].seq));
		ss[i].nr_tokens = 4;
		ss[i].slots = slots[i];
	}
	EXPECT_EQ(0, kvc_step(c, ss, 4096, 0, NULL));
	EXPECT_EQ(slots[4095][3] % 4, 3);
	kvc_close(c);
	EXPECT_EQ(0, daemon_stop(&d));
	daemon_cleanup(&d);
}

/* A second daemon on the same socket path refuses to start; the first serves on. */
TEST_F(kvmemd, second_daemon_on_the_path_is_refused)
{
	char log[160];

	snprintf(log, sizeof(log), "%s/second.log", self->d.dir);
	EXPECT_EQ(1, daemon_run_once(self->d.conf, log, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "Address already in use"));
	EXPECT_LT(0, meminfo(self->c, text, sizeof(text)));
}

/*
 * kvmemd -c with a config of a socket in a new directory, the cpu
 * backend and @rest, run to its end: its exit status, its log in text.
 */
static int start_with(const char *rest)
{
	char dir[] = "/tmp/kvmemd-conf-XXXXXX", conf[128], log[128], lock[128], body[2048];
	int status;

	if (!mkdtemp(dir))
		return -1;
	snprintf(conf, sizeof(conf), "%s/k.conf", dir);
	snprintf(log, sizeof(log), "%s/log", dir);
	snprintf(lock, sizeof(lock), "%s/s.sock.lock", dir);
	snprintf(body, sizeof(body), "socket.path = %s/s.sock\ndevice.backend = cpu\n%s",
		 dir, rest);
	status = write_file(conf, body) ? -1 : daemon_run_once(conf, log, text, sizeof(text));
	unlink(conf);
	unlink(log);
	unlink(lock);
	rmdir(dir);
	return status;
}

TEST(config_errors_name_file_and_line)
{
	/* k.conf: socket.path and device.backend, then these two lines */
	EXPECT_EQ(1, start_with("vm.reclaim_batch = 8\npool.x.layers = many\n"));
	EXPECT_NE_NULL(strstr(text, "k.conf:4"));
}

/*
 * A pool the config allows but the mm refuses (a host tier of 2048T, past
 * the mm's 1P) stops the start with the limits named.
 */
TEST(pool_too_large_for_the_mm_says_why)
{
	EXPECT_EQ(1, start_with("pool.a.layers = 1024\npool.a.kv_heads = 1024\n"
				"pool.a.head_dim = 1024\npool.a.block_tokens = 16\n"
				"pool.a.dtype = fp16\npool.a.device_mem = 256G\n"
				"pool.a.host_mem = 2048T\n"));
	EXPECT_NE_NULL(strstr(text, "pool a: Argument list too long (a tier of more than 1P"));
}

/* A socket.group the system lacks is the error said, not the socket path's. */
TEST(missing_socket_group_says_so)
{
	EXPECT_EQ(1, start_with("socket.group = kvmem_no_such_group\n"));
	EXPECT_NE_NULL(strstr(text, "socket.group: no group 'kvmem_no_such_group'"));
	EXPECT_NULL(strstr(text, "s.sock: No such file"));
}

TEST(sigterm_removes_the_socket)
{
	struct daemon d;

	ASSERT_EQ(0, daemon_start(&d, NULL));
	EXPECT_EQ(0, access(d.sock, F_OK));
	EXPECT_EQ(0, daemon_stop(&d));
	EXPECT_EQ(-1, access(d.sock, F_OK));
	daemon_cleanup(&d);
}

TEST_HARNESS_MAIN
