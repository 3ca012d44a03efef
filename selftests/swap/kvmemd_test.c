// SPDX-License-Identifier: MIT
/*
 * The swap tier through kvmemd: with swap.path and pool.NAME.swap_mem, a
 * client whose sequences outgrow the device and host tiers gets them back
 * whole from swap; meminfo shows the swap tier and its engine, vmstat its
 * traffic; a swap.path that cannot be opened is a clear startup error;
 * cached prompts whose swap slots are lost leave the cache.
 */
#include <fcntl.h>
#include "kselftest_harness.h"
#include "../daemon/daemon_test.h"

#define POOL_CONF							\
	"pool.t.layers = 2\npool.t.kv_heads = 2\npool.t.head_dim = 8\n"	\
	"pool.t.block_tokens = 4\npool.t.dtype = fp16\n"		\
	"pool.t.device_mem = 64K\npool.t.host_mem = 64K\n"		\
	"pool.t.swap_mem = 1M\nvm.min_free_kbytes = 4\n"
#define NSEQ	12
#define NTOK	24

static char text[KVMEM_MSG_MAX];

/* Step @n tokens valued @v0.. into @seq, writing them through the arena. */
static int step_vals(struct kvc *c, struct kvc_pool *p, uint64_t seq, uint32_t n, uint32_t v0)
{
	uint64_t slots[NTOK];
	struct kvc_step_seq s = { .seq = seq, .nr_tokens = n, .slots = slots };
	uint32_t i;
	int err = kvc_step(c, &s, 1, 0, NULL);

	for (i = 0; !err && i < n; i++)
		tok_set(p, slots[i], v0 + i);
	return err;
}

TEST(sequences_come_back_from_swap)
{
	uint32_t vals[NSEQ][NTOK], i, j;
	uint64_t seq[NSEQ];
	struct kvc_pool *p;
	struct daemon d;
	char conf[1024];
	struct kvc *c;

	snprintf(conf, sizeof(conf), "swap.path = /var/tmp/kvmem-test-swap-%d\nswap.engine = %s\n"
		 POOL_CONF, (int)getpid(), "auto");
	ASSERT_EQ(0, daemon_start(&d, conf));
	ASSERT_EQ(0, kvc_connect(d.sock, &c));
	ASSERT_EQ(0, kvc_pool_open(c, "t", &p));
	/* 12 sequences of 6 blocks: 72 blocks, 32 frames of device and host. */
	for (i = 0; i < NSEQ; i++) {
		for (j = 0; j < NTOK; j++)
			vals[i][j] = i * 1000 + j;
		ASSERT_EQ(0, kvc_seq_create(c, p, &seq[i]));
		ASSERT_EQ(0, step_vals(c, p, seq[i], NTOK, i * 1000));
		ASSERT_EQ(0, kvc_deactivate(c, &seq[i], 1));
	}
	for (i = 0; i < NSEQ; i++) {
		ASSERT_EQ(0, kvc_activate(c, &seq[i], 1, 0, NULL));
		EXPECT_EQ(0, check_vals(c, p, seq[i], vals[i], NTOK));
		ASSERT_EQ(0, kvc_deactivate(c, &seq[i], 1));
	}
	ASSERT_LT(0, kvc_stats(c, KVMEM_STATS_VMSTAT, 0, text, sizeof(text)));
	EXPECT_LT(0, stat_value(text, "pswpout "));
	EXPECT_LT(0, stat_value(text, "pswpin "));
	EXPECT_EQ(0, stat_value(text, "swap_fail "));
	ASSERT_LT(0, meminfo(c, text, sizeof(text)));
	EXPECT_EQ(1024, stat_value(text, "SwapTotal:"));
	EXPECT_NE_NULL(strstr(text, "SwapBackend:"));
	ASSERT_LT(0, kvc_stats(c, KVMEM_STATS_ZONEINFO, 0, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "check      ok"));
	EXPECT_NE_NULL(strstr(text, "tier swap (swap ("));
	for (i = 0; i < NSEQ; i++)
		EXPECT_EQ(0, kvc_seq_free(c, seq[i]));
	kvc_close(c);
	EXPECT_EQ(0, daemon_stop(&d));
	snprintf(conf, sizeof(conf), "/var/tmp/kvmem-test-swap-%d", (int)getpid());
	unlink(conf);
	daemon_cleanup(&d);
}

TEST(unusable_swap_path_is_a_startup_error)
{
	char out[4096];
	struct daemon d;

	memset(&d, 0, sizeof(d));
	snprintf(d.dir, sizeof(d.dir), "/tmp/kvmemd-test-XXXXXX");
	ASSERT_NE_NULL(mkdtemp(d.dir));
	snprintf(d.conf, sizeof(d.conf), "%s/kvmemd.conf", d.dir);
	snprintf(d.log, sizeof(d.log), "%s/log", d.dir);
	snprintf(text, sizeof(text), "socket.path = %s/s\nswap.path = /nonexistent/dir/swap\n"
		 POOL_CONF, d.dir);
	ASSERT_EQ(0, write_file(d.conf, text));
	EXPECT_NE(0, daemon_run_once(d.conf, d.log, out, sizeof(out)));
	EXPECT_NE_NULL(strstr(out, "swap.path /nonexistent/dir/swap"));
	daemon_cleanup(&d);
}

/* Cache a 16-token prompt (ids from @k, KV from the ids) through @c. */
static int cache(struct kvc *c, struct kvc_pool *p, uint32_t k, uint32_t *ids)
{
	uint64_t seq, slots[16];
	struct kvc_step_seq s = { .nr_tokens = 16, .token_ids = ids, .slots = slots };
	uint32_t i;
	int err;

	for (i = 0; i < 16; i++)
		ids[i] = k * 100 + i;
	err = kvc_seq_create(c, p, &seq);
	s.seq = seq;
	err = err ?: kvc_step(c, &s, 1, 0, NULL);
	for (i = 0; !err && i < 16; i++)
		tok_set(p, slots[i], ids[i] * 3);
	err = err ?: kvc_deactivate(c, &seq, 1);
	return err ?: kvc_seq_free(c, seq);
}

/*
 * Tokens of prompt @ids found, their KV checked: the STEP's error when it
 * fails, -EUCLEAN when the KV is wrong.
 */
static int found(struct kvc *c, struct kvc_pool *p, const uint32_t *ids)
{
	struct kvc_step_seq s = { .nr_tokens = 0 };
	uint32_t want[16], i;
	uint64_t seq, slots[1];
	int m, err;

	err = kvc_seq_create(c, p, &seq);
	m = err ?: kvc_prefix_match(c, seq, ids, 16, NULL);
	s.seq = seq;
	s.slots = slots;
	for (i = 0; i < 16; i++)
		want[i] = ids[i] * 3;
	err = m > 0 ? kvc_step(c, &s, 1, 0, NULL) : 0;
	if (err)
		m = err;
	else if (m > 0 && check_vals(c, p, seq, want, (uint32_t)m))
		m = -EUCLEAN;
	kvc_seq_free(c, seq);
	return m;
}

/* Start kvmemd on @conf and connect a client to pool t. */
static int start(struct daemon *d, const char *conf, struct kvc **c, struct kvc_pool **p)
{
	int err = daemon_start(d, conf) ? -EIO : 0;

	err = err ?: kvc_connect(d->sock, c);
	return err ?: kvc_pool_open(*c, "t", p);
}

/* How many of the four prompts are found whole (-1 on a wrong one). */
static int found_all(struct kvc *c, struct kvc_pool *p, uint32_t (*ids)[16])
{
	int k, n = 0, m;

	for (k = 0; k < 4; k++) {
		m = found(c, p, ids[k]);
		if (m < 0)
			return -1;
		n += m == 16;
	}
	return n;
}

/* The client goes, the daemon is killed (no checkpoint at exit). */
static void crash(struct daemon *d, struct kvc *c)
{
	kvc_close(c);
	kill(d->pid, SIGKILL);
	daemon_stop(d);
	daemon_cleanup(d);
}

/*
 * swap.persist: the prefix cache comes back after a clean restart and
 * after SIGKILL following a checkpoint; a damaged checkpoint is ignored.
 */
TEST(prefix_cache_survives_restarts)
{
	uint32_t ids[4][16], k;
	char conf[1024], swap[128], out[8192];
	struct kvc_pool *p;
	struct daemon d;
	struct kvc *c;
	int fd;

	snprintf(swap, sizeof(swap), "/var/tmp/kvmem-test-persist-%d", (int)getpid());
	snprintf(conf, sizeof(conf), "swap.path = %s\nswap.persist = 1\n" POOL_CONF, swap);
	ASSERT_EQ(0, start(&d, conf, &c, &p));
	for (k = 0; k < 4; k++)
		ASSERT_EQ(0, cache(c, p, k, ids[k]));
	kvc_close(c);
	EXPECT_EQ(0, daemon_stop(&d));		/* SIGTERM: checkpoint */
	ASSERT_EQ(0, read_file(d.log, out, sizeof(out)));
	EXPECT_NE_NULL(strstr(out, "checkpoint of"));
	daemon_cleanup(&d);

	ASSERT_EQ(0, start(&d, conf, &c, &p));
	EXPECT_EQ(4, found_all(c, p, ids));
	/* A checkpoint now, then SIGKILL: the next start finds it. */
	EXPECT_LE(0, kvc_checkpoint(c, 0));
	crash(&d, c);

	ASSERT_EQ(0, start(&d, conf, &c, &p));
	EXPECT_EQ(4, found_all(c, p, ids));
	ASSERT_LT(0, kvc_stats(c, KVMEM_STATS_ZONEINFO, 0, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "check      ok"));
	crash(&d, c);

	/* Scribble over the checkpoint's header: the daemon starts empty. */
	fd = open(swap, O_RDWR);
	ASSERT_LE(0, fd);
	ASSERT_EQ(8, pwrite(fd, "garbage!", 8, (off_t)(1 << 20) + 12));
	close(fd);
	ASSERT_EQ(0, start(&d, conf, &c, &p));
	EXPECT_EQ(0, found_all(c, p, ids));
	ASSERT_EQ(0, read_file(d.log, out, sizeof(out)));
	EXPECT_NE_NULL(strstr(out, "checkpoint ignored"));
	kvc_close(c);
	EXPECT_EQ(0, daemon_stop(&d));
	daemon_cleanup(&d);
	unlink(swap);
}

/*
 * Cached prompts whose swap slots are lost (overwritten on the device):
 * each one's first request fails with -EIO at the STEP that brings it
 * back, the daemon drops its blocks from the cache (prefix_lost) and says
 * why in its log, and the next request misses and recomputes it, which
 * caches it again. The daemon stays whole.
 */
TEST(lost_swap_slots_leave_the_prefix_cache)
{
	uint32_t ids[4][16], k;
	char conf[1024], swap[128], out[16384];
	struct kvc_pool *p;
	struct daemon d;
	struct kvc *c;
	void *junk = NULL;
	int fd;

	snprintf(swap, sizeof(swap), "/var/tmp/kvmem-test-lost-%d", (int)getpid());
	snprintf(conf, sizeof(conf), "swap.path = %s\nswap.persist = 1\n" POOL_CONF, swap);
	ASSERT_EQ(0, start(&d, conf, &c, &p));
	for (k = 0; k < 4; k++)
		ASSERT_EQ(0, cache(c, p, k, ids[k]));
	EXPECT_LE(0, kvc_checkpoint(c, 0));	/* every cached block into swap */
	ASSERT_EQ(0, posix_memalign(&junk, 4096, 1 << 20));
	memset(junk, 0x5a, 1 << 20);
	fd = open(swap, O_RDWR);
	ASSERT_LE(0, fd);
	ASSERT_EQ(1 << 20, pwrite(fd, junk, 1 << 20, 0));	/* pool t's slots */
	close(fd);
	free(junk);
	for (k = 0; k < 4; k++) {
		EXPECT_EQ(-EIO, found(c, p, ids[k]));
		EXPECT_EQ(0, found(c, p, ids[k]));
	}
	ASSERT_LT(0, kvc_stats(c, KVMEM_STATS_VMSTAT, 0, text, sizeof(text)));
	EXPECT_EQ(16, stat_value(text, "prefix_lost "));
	EXPECT_LE(4, stat_value(text, "swap_fail "));
	ASSERT_EQ(0, read_file(d.log, out, sizeof(out)));
	EXPECT_NE_NULL(strstr(out, "checksum mismatch"));
	/* recomputed, cached again, found whole */
	ASSERT_EQ(0, cache(c, p, 0, ids[0]));
	EXPECT_EQ(16, found(c, p, ids[0]));
	ASSERT_LT(0, kvc_stats(c, KVMEM_STATS_ZONEINFO, 0, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "check      ok"));
	kvc_close(c);
	EXPECT_EQ(0, daemon_stop(&d));
	daemon_cleanup(&d);
	unlink(swap);
}

TEST_HARNESS_MAIN
