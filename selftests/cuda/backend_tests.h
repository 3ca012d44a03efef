/* SPDX-License-Identifier: MIT */
/*
 * The device tier's backends through kvmemd, one set of tests for both: a
 * test program defines KVT_BACKEND ("cpu" or "cuda", the value of
 * device.backend) and KVT_BACKEND_ID (the KVMEM_BACKEND_* that
 * kvc_pool_open() must report), includes this file and ends with
 * KVT_HARNESS_MAIN.
 *
 * Two client processes write and read each other's blocks through the
 * shared arena; random contents survive device -> host -> device, and
 * device -> host -> swap -> host -> device; copy-on-write copies on the
 * device; a client killed while holding pins (and a reserve) frees them;
 * device.backend = auto picks what is there; a daemon asked for a GPU that
 * is missing fails with a clear error; pools on two GPUs stay apart. After every test, every tier's
 * frames add up (free + used == total, and the pool's own check passes), and
 * once its client is gone nothing is left.
 *
 * Bytes of the device tier are only ever touched through kvc_frame_read()
 * and kvc_frame_write(), which work on either backend. With CUDA, a
 * process must not fork() once it has initialised the driver, so every
 * client process is forked before the test process maps a pool
 * (kvc_pool_map()), and the probe for a GPU runs in a child of its own.
 *
 * KVMEM_TEST_SEED=N replays a run's random contents (each test logs its
 * seed).
 */
#ifndef _SELFTESTS_CUDA_BACKEND_TESTS_H
#define _SELFTESTS_CUDA_BACKEND_TESTS_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include "kselftest_harness.h"
#include "../daemon/daemon_test.h"
#include "lib/cudrv.h"

#if !defined(KVT_BACKEND) || !defined(KVT_BACKEND_ID)
#error "define KVT_BACKEND and KVT_BACKEND_ID before including backend_tests.h"
#endif

/*
 * Blocks of 4 tokens, 4096 bytes: 2 layers x K and V x 2 heads x 4 tokens
 * x 64 x fp16, exactly a frame, so that a block's every byte is data.
 */
#define POOL_GEOM							\
	"pool.t.layers = 2\npool.t.kv_heads = 2\npool.t.head_dim = 64\n"	\
	"pool.t.block_tokens = 4\npool.t.dtype = fp16\npool.t.prefix = off\n" \
	"vm.min_free_kbytes = 4\n"
/* 16 device frames, 64 host frames. */
#define POOL_CONF POOL_GEOM "pool.t.device_mem = 64K\npool.t.host_mem = 256K\n"
/* 16 device frames, 4 host frames, 256 swap frames. */
#define SWAP_CONF POOL_GEOM						\
	"pool.t.device_mem = 64K\npool.t.host_mem = 16K\npool.t.swap_mem = 1M\n"
/*
 * 16 device frames, 32 host frames and 256 swap frames: a GPU arena takes
 * 4 of the host frames to bounce swap I/O through, in parts of 2 whose
 * two legs overlap (mm/tier.c).
 */
#define SWAP_WIDE_CONF POOL_GEOM					\
	"pool.t.device_mem = 64K\npool.t.host_mem = 128K\npool.t.swap_mem = 1M\n"
#define BT		4
#define BLOCK_BYTES	4096
#define BLOCK_WORDS	(BLOCK_BYTES / 8)
#define DEVICE_FRAMES	16
#define KVT_POOL	1	/* handle of pool t, the only one */

enum { T_DEVICE, T_HOST, T_SWAP, T_NR };

static const char *const tier_names[T_NR] = { "device", "host", "swap" };

/* Set by KVT_HARNESS_MAIN before any test runs. */
static int kvt_gpu;			/* a GPU the CUDA backend can use */
static int kvt_nr_gpus;			/* GPUs the driver sees, when kvt_gpu */
static char kvt_gpu_why[256];		/* which one, or why there is none */

#if defined(__SANITIZE_ADDRESS__)
#define KVT_ASAN_HINT " (ASan build: the CUDA driver needs ASAN_OPTIONS=protect_shadow_gap=0)"
#else
#define KVT_ASAN_HINT ""
#endif

/* In the probe's child: 0 when GPU 0 can hold a CUDA arena; what it found on @fd. */
static int gpu_probe_child(int fd)
{
	int vmm = 0, posix = 0, ok, err;
	char why[160], name[96] = "?";
	struct cudrv drv;
	cu_device dev;

	err = cudrv_open(&drv, why, sizeof(why));
	if (err) {
		dprintf(fd, "%s%s", why, err == -ENODEV ? KVT_ASAN_HINT : "");
		return 1;
	}
	ok = !drv.DeviceGet(&dev, 0) &&
	     !drv.DeviceGetAttribute(&vmm, CUDRV_ATTR_VMM_SUPPORTED, dev) &&
	     !drv.DeviceGetAttribute(&posix, CUDRV_ATTR_POSIX_FD_SUPPORTED, dev) && vmm && posix;
	if (ok) {
		drv.DeviceGetName(name, sizeof(name), dev);
		/* kvt_probe_gpu() reads the count after "of " */
		dprintf(fd, "GPU 0 %s of %d, driver %d", name, drv.nr_devices, drv.version);
	} else {
		dprintf(fd, "GPU 0 cannot export memory as file descriptors (VMM %d, POSIX fd %d)",
			vmm, posix);
	}
	cudrv_close(&drv);
	return ok ? 0 : 1;
}

/*
 * kvt_probe_gpu() - find out whether a GPU is usable, in a child process,
 * so that neither the runner nor the tests it forks have touched the driver
 */
static void kvt_probe_gpu(void)
{
	int fd[2], status;
	ssize_t n = 0, r;
	pid_t pid;

	snprintf(kvt_gpu_why, sizeof(kvt_gpu_why), "the probe failed");
	if (pipe(fd))
		return;
	pid = fork();
	if (pid == 0) {
		close(fd[0]);
		_exit(gpu_probe_child(fd[1]));
	}
	close(fd[1]);
	while (pid > 0 && (r = read(fd[0], kvt_gpu_why + n, sizeof(kvt_gpu_why) - 1 - n)) > 0)
		n += r;
	if (n)
		kvt_gpu_why[n] = '\0';
	close(fd[0]);
	kvt_gpu = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		  !WEXITSTATUS(status);
	if (kvt_gpu && strstr(kvt_gpu_why, " of "))
		kvt_nr_gpus = atoi(strstr(kvt_gpu_why, " of ") + 4);
}

#define KVT_HARNESS_MAIN						\
	int main(int argc, char **argv)					\
	{								\
		kvt_probe_gpu();					\
		return test_harness_run(argc, argv);			\
	}

/* ---- contents: random bytes, reproducible from a key ------------------ */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The key of block @b of sequence @s of a test run seeded @seed. */
static uint64_t kvt_key(uint64_t seed, uint32_t s, uint32_t b)
{
	uint64_t k = seed ^ ((uint64_t)s << 32 | b);

	return splitmix64(&k);
}

/* A block's worth of random bytes, the same for the same key. */
static void pattern(uint64_t key, uint64_t *buf)
{
	uint32_t i;

	for (i = 0; i < BLOCK_WORDS; i++)
		buf[i] = splitmix64(&key);
}

/* This test's seed: KVMEM_TEST_SEED, else from the clock; logged. */
static uint64_t kvt_seed(struct __test_metadata *_metadata)
{
	const char *env = getenv("KVMEM_TEST_SEED");
	struct timespec ts;
	uint64_t s;

	if (env && *env) {
		s = strtoull(env, NULL, 0);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		s = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
		s ^= (uint64_t)getpid() << 40;
		s = splitmix64(&s);
	}
	TH_LOG("seed %#llx (KVMEM_TEST_SEED replays it)", (unsigned long long)s);
	return s;
}

/* Fill device frame @frame (a block this process pins) with @key's bytes. */
static int block_fill(struct kvc_pool *p, uint32_t frame, uint64_t key)
{
	uint64_t buf[BLOCK_WORDS];

	pattern(key, buf);
	return kvc_frame_write(p, frame, 0, buf, BLOCK_BYTES);
}

/* Device frame @frame holds @key's bytes: 0, -EUCLEAN, or the read's error. */
static int block_check(struct kvc_pool *p, uint32_t frame, uint64_t key)
{
	uint64_t want[BLOCK_WORDS], have[BLOCK_WORDS];
	int err = kvc_frame_read(p, frame, 0, have, BLOCK_BYTES);

	if (err)
		return err;
	pattern(key, want);
	return memcmp(want, have, BLOCK_BYTES) ? -EUCLEAN : 0;
}

/*
 * Write (@write) or check token @t of the block in @frame: its K and V
 * vectors of every layer and head, as kv_elem_offset() places them, from
 * (or against) the same places of @key's bytes. 0, -EUCLEAN, or the error
 * of the copy.
 */
static int token_io(struct kvc_pool *p, uint32_t frame, uint32_t t, uint64_t key,
		    bool write)
{
	const struct kv_geometry *g = &p->geom;
	uint64_t want[BLOCK_WORDS], have[BLOCK_WORDS];
	size_t vec = (size_t)g->head_dim * kv_dtype_size(g->dtype);
	uint32_t l, kv, h;
	uint64_t off;
	int err = 0;

	pattern(key, want);
	if (!write)
		err = kvc_frame_read(p, frame, 0, have, BLOCK_BYTES);
	for (l = 0; l < g->layers && !err; l++)
		for (kv = KV_K; kv <= KV_V && !err; kv++)
			for (h = 0; h < g->kv_heads && !err; h++) {
				off = kv_elem_offset(g, l, kv, h, t);
				if (write)
					err = kvc_frame_write(p, frame, off, (char *)want + off, vec);
				else if (memcmp((char *)want + off, (char *)have + off, vec))
					err = -EUCLEAN;
			}
	return err;
}

static int token_fill(struct kvc_pool *p, uint32_t frame, uint32_t t, uint64_t key)
{
	return token_io(p, frame, t, key, true);
}

static int token_check(struct kvc_pool *p, uint32_t frame, uint32_t t, uint64_t key)
{
	return token_io(p, frame, t, key, false);
}

/* ---- sequences -------------------------------------------------------- */

/* Append @n tokens (without ids) to @seq, activating it; their slots in @slots. */
static int seq_step(struct kvc *c, uint64_t seq, uint32_t n, uint64_t *slots)
{
	struct kvc_step_seq s = { .seq = seq, .nr_tokens = n, .slots = slots };

	return kvc_step(c, &s, 1, 0, NULL);
}

/* The frames of an active @seq's blocks into @frames: how many, or -errno. */
static int seq_frames(struct kvc *c, uint64_t seq, uint32_t *frames, uint32_t max)
{
	const uint32_t *f;
	uint32_t n;
	int err = kvc_block_table(c, seq, &f, &n);

	if (err)
		return err;
	if (n > max)
		return -E2BIG;
	memcpy(frames, f, n * sizeof(*f));
	return (int)n;
}

/*
 * The pool as kvc_pool_open() and kvc_pool_map() made it matches the
 * backend under test: 0, -EPROTO (another backend), -EBADMSG (its fields
 * disagree), -ERANGE (not the configured geometry).
 */
static int backend_check(const struct kvc_pool *p)
{
	if (p->backend != KVT_BACKEND_ID)
		return -EPROTO;
	if (p->backend == KVMEM_BACKEND_CUDA && (p->base || !p->device_ptr || p->gpu < 0))
		return -EBADMSG;
	if (p->backend == KVMEM_BACKEND_CPU &&
	    (!p->base || p->device_ptr != (uint64_t)(uintptr_t)p->base || p->gpu != -1))
		return -EBADMSG;
	if (p->frame_bytes != BLOCK_BYTES || kv_block_bytes(&p->geom) != BLOCK_BYTES ||
	    p->nr_frames[KVMEM_TIER_DEVICE] != DEVICE_FRAMES ||
	    p->arena_bytes < (uint64_t)DEVICE_FRAMES * BLOCK_BYTES)
		return -ERANGE;
	return 0;
}

/* Connect to @sock, open and map pool t, in a client process of a test. */
static int client_open(const char *sock, struct kvc **c, struct kvc_pool **p)
{
	int err = kvc_connect(sock, c);

	if (err)
		return err;
	err = kvc_pool_open(*c, "t", p);
	err = err ?: kvc_pool_map(*p);
	return err ?: backend_check(*p);
}

/* ---- statistics ------------------------------------------------------- */

/* Frames of each tier, from zoneinfo (and the swap cache from meminfo). */
struct tiers {
	long long total[T_NR];
	long long free[T_NR];
	long long used[T_NR];		/* active + inactive + pinned + locked */
	long long pinned[T_NR];
	long long seqs;
	long long blocks;
	bool check_ok;			/* "check      ok": kv_pool_check() passed */
};

/* `    KEY  N' of `  tier TIER (...)' in zoneinfo text; -1 when absent. */
static long long zone_value(const char *text, int tier, const char *key)
{
	char head[32], k[32];
	const char *p, *end;

	snprintf(head, sizeof(head), "\n  tier %s (", tier_names[tier]);
	snprintf(k, sizeof(k), "\n    %s ", key);
	p = strstr(text, head);
	if (!p)
		return -1;
	end = strstr(p + 1, "\n  tier ");
	p = strstr(p, k);
	if (!p || (end && p > end))
		return -1;
	return strtoll(p + strlen(k), NULL, 10);
}

/* The tiers of the pool of handle @pool (kvc_pool.handle); tiers_read(): pool t's. */
static int tiers_read_pool(struct kvc *c, uint32_t pool, struct tiers *z)
{
	static const char *const used_keys[] = { "active", "inactive", "pinned", "locked" };
	static char zone[KVMEM_MSG_MAX], mem[KVMEM_MSG_MAX];
	long long v;
	uint32_t k;
	int t;

	memset(z, 0, sizeof(*z));
	if (kvc_stats(c, KVMEM_STATS_ZONEINFO, pool, zone, sizeof(zone)) <= 0 ||
	    kvc_stats(c, KVMEM_STATS_MEMINFO, pool, mem, sizeof(mem)) <= 0)
		return -EIO;
	for (t = 0; t < T_NR; t++) {
		z->total[t] = zone_value(zone, t, "total");
		if (z->total[t] < 0 && t == T_SWAP) {
			z->total[t] = 0;	/* no swap area */
			continue;
		}
		z->free[t] = zone_value(zone, t, "free");
		z->pinned[t] = zone_value(zone, t, "pinned");
		if (z->total[t] < 0 || z->free[t] < 0 || z->pinned[t] < 0)
			return -EBADMSG;
		for (k = 0; k < sizeof(used_keys) / sizeof(used_keys[0]); k++) {
			v = zone_value(zone, t, used_keys[k]);
			if (v < 0)
				return -EBADMSG;
			z->used[t] += v;
		}
	}
	/* Swap cache copies hold a swap frame each, off the swap tier's lists. */
	v = stat_value(mem, "SwapCacheBlocks:");
	if (v > 0)
		z->used[T_SWAP] += v;
	z->seqs = stat_value(mem, "Sequences:");
	z->blocks = stat_value(mem, "Blocks:");
	z->check_ok = strstr(zone, "\n  check      ok\n") != NULL;
	return 0;
}

static int tiers_read(struct kvc *c, struct tiers *z)
{
	return tiers_read_pool(c, KVT_POOL, z);
}

/* An event counter of pool t; -1 when it cannot be read. */
static long long vmstat_value(struct kvc *c, const char *name)
{
	static char text[KVMEM_MSG_MAX];

	if (kvc_stats(c, KVMEM_STATS_VMSTAT, KVT_POOL, text, sizeof(text)) <= 0)
		return -1;
	return stat_value(text, name);
}

/* meminfo's DeviceBackend names @name ("cuda GPU0 ..." or "cpu"). */
static bool device_backend_is(struct kvc *c, const char *name)
{
	static char text[KVMEM_MSG_MAX];
	const char *p;

	if (kvc_stats(c, KVMEM_STATS_MEMINFO, KVT_POOL, text, sizeof(text)) <= 0)
		return false;
	p = strstr(text, "DeviceBackend:");
	if (!p)
		return false;
	for (p += strlen("DeviceBackend:"); *p == ' '; p++)
		;
	return !strncmp(p, name, strlen(name)) &&
	       (p[strlen(name)] == ' ' || p[strlen(name)] == '\n');
}

/* ---- the fixture: a kvmemd with the backend under test ---------------- */

FIXTURE(kvmemd) {
	struct daemon d;
	bool up;			/* the daemon started */
	struct kvc *c;			/* the test's connection */
	struct kvc_pool *p;		/* pool t on it, once kvt_pool() opened it */
	pid_t peer;			/* a client process still to reap */
	char swapdir[64];		/* holds swap.path, when the test has one */
	long long total[T_NR];
	long long base_free[T_NR];	/* free at start: frames the pool keeps for itself
					 * (the CUDA backend's swap bounce frames) are not */
};

FIXTURE_SETUP(kvmemd)
{
	/* A client process that died must fail the test, not kill it. */
	signal(SIGPIPE, SIG_IGN);
	if (KVT_BACKEND_ID == KVMEM_BACKEND_CUDA && !kvt_gpu)
		SKIP(return, "no usable GPU: %s", kvt_gpu_why);
	if (KVT_BACKEND_ID == KVMEM_BACKEND_CUDA)
		TH_LOG("%s", kvt_gpu_why);
}

static void log_daemon(struct __test_metadata *_metadata, const struct daemon *d)
{
	static char out[16384];

	if (d->log[0] && !read_file(d->log, out, sizeof(out)))
		TH_LOG("kvmemd's log:\n%s", out);
}

/*
 * Start kvmemd with device.backend = @backend, @pool_conf, and a swap area
 * in a new directory of /var/tmp (O_DIRECT needs a real file system) when
 * @swap; connect (no pool opened: the test may fork clients first); note
 * each tier's frames.
 */
static void kvt_start(struct __test_metadata *_metadata, FIXTURE_DATA(kvmemd) *self,
		      const char *backend, const char *pool_conf, bool swap)
{
	char conf[2048], out[8192], want[64];
	struct tiers z;
	int t, n, err;

	n = snprintf(conf, sizeof(conf), "device.backend = %s\n%s", backend, pool_conf);
	if (swap) {
		snprintf(self->swapdir, sizeof(self->swapdir), "/var/tmp/kvmem-cuda-test-XXXXXX");
		ASSERT_NE_NULL(mkdtemp(self->swapdir));
		snprintf(conf + n, sizeof(conf) - n, "swap.path = %s/swap\n", self->swapdir);
	}
	err = daemon_start(&self->d, conf);
	if (err)
		log_daemon(_metadata, &self->d);
	ASSERT_EQ(0, err);
	self->up = true;
	/* The log says which backend serves, and meminfo too. */
	snprintf(want, sizeof(want), "device tier: %s backend", KVT_BACKEND);
	ASSERT_EQ(0, read_file(self->d.log, out, sizeof(out)));
	EXPECT_NE_NULL(strstr(out, want));
	ASSERT_EQ(0, kvc_connect(self->d.sock, &self->c));
	EXPECT_TRUE(device_backend_is(self->c, KVT_BACKEND));
	ASSERT_EQ(0, tiers_read(self->c, &z));
	for (t = 0; t < T_NR; t++) {
		self->total[t] = z.total[t];
		self->base_free[t] = z.free[t];
	}
	EXPECT_EQ(DEVICE_FRAMES, z.total[T_DEVICE]);
	EXPECT_EQ(z.total[T_DEVICE], z.free[T_DEVICE]);
	EXPECT_EQ(z.total[T_SWAP], z.free[T_SWAP]);
	EXPECT_EQ(swap ? 256 : 0, z.total[T_SWAP]);
	/* Only a GPU arena with a swap area takes host frames (to bounce swap I/O). */
	if (swap && KVT_BACKEND_ID == KVMEM_BACKEND_CUDA) {
		EXPECT_LT(z.free[T_HOST], z.total[T_HOST]);
		EXPECT_LT(0, z.free[T_HOST]);
	} else {
		EXPECT_EQ(z.total[T_HOST], z.free[T_HOST]);
	}
	EXPECT_EQ(0, z.used[T_DEVICE] + z.used[T_HOST] + z.used[T_SWAP]);
}

/*
 * Open pool t on the test's connection, map its arena (with CUDA: the
 * driver is loaded in this process from now on) and check it is the
 * backend under test.
 */
static void kvt_pool(struct __test_metadata *_metadata, FIXTURE_DATA(kvmemd) *self)
{
	ASSERT_EQ(0, kvc_pool_open(self->c, "t", &self->p));
	ASSERT_EQ(KVT_BACKEND_ID, self->p->backend);
	ASSERT_EQ(0, kvc_pool_map(self->p));
	ASSERT_EQ(0, backend_check(self->p));
}

/* Frames the pool took for itself at start, which no statistic names. */
static long long own_frames(const FIXTURE_DATA(kvmemd) *self, int t)
{
	return self->total[t] - self->base_free[t];
}

/* Whether every tier adds up: free + used (+ the pool's own) == total. */
static int tiers_bad(const FIXTURE_DATA(kvmemd) *self, const struct tiers *z)
{
	int t;

	for (t = 0; t < T_NR; t++)
		if (z->total[t] != self->total[t] ||
		    z->free[t] + z->used[t] + own_frames(self, t) != z->total[t])
			return t;
	return z->check_ok ? -1 : T_NR;
}

/*
 * Every tier's frames add up, and the pool's own check passes; polled for
 * up to 3 s, since kvswapd may have a move in flight.
 */
static void check_frames(struct __test_metadata *_metadata, FIXTURE_DATA(kvmemd) *self,
			 struct kvc *c)
{
	struct tiers z;
	int i, bad = T_NR;

	for (i = 0; i < 300 && bad >= 0; i++) {
		if (i)
			usleep(10000);
		if (tiers_read(c, &z))
			break;
		bad = tiers_bad(self, &z);
	}
	if (bad >= 0 && bad < T_NR)
		TH_LOG("tier %s: free %lld + used %lld + own %lld, total %lld (started with %lld)",
		       tier_names[bad], z.free[bad], z.used[bad], own_frames(self, bad),
		       z.total[bad], self->total[bad]);
	EXPECT_EQ(-1, bad);
}

/* Whether the pool holds nothing: no sequence, block or pin; every frame back. */
static bool tiers_empty(const FIXTURE_DATA(kvmemd) *self, const struct tiers *z)
{
	int t;

	if (z->seqs || z->blocks)
		return false;
	for (t = 0; t < T_NR; t++)
		if (z->free[t] != self->base_free[t] || z->used[t] || z->pinned[t])
			return false;
	return true;
}

/* Wait up to 5 s for the pool to hold nothing (dead clients are reaped). */
static void wait_empty(struct __test_metadata *_metadata, FIXTURE_DATA(kvmemd) *self,
		       struct kvc *c)
{
	bool empty = false;
	struct tiers z;
	int i, t;

	for (i = 0; i < 500 && !empty; i++) {
		if (i)
			usleep(10000);
		if (tiers_read(c, &z))
			break;
		empty = tiers_empty(self, &z);
	}
	if (empty)
		return;
	TH_LOG("left: %lld sequences, %lld blocks", z.seqs, z.blocks);
	for (t = 0; t < T_NR; t++)
		TH_LOG("tier %s: free %lld of %lld (%lld at start), used %lld, pinned %lld",
		       tier_names[t], z.free[t], z.total[t], self->base_free[t], z.used[t],
		       z.pinned[t]);
	EXPECT_TRUE(empty);
}

FIXTURE_TEARDOWN(kvmemd)
{
	struct kvc *c = NULL;
	char path[96];
	int status;

	if (self->peer > 0) {
		kill(self->peer, SIGKILL);
		waitpid(self->peer, &status, 0);
	}
	if (self->up) {
		if (self->c)
			check_frames(_metadata, self, self->c);
		kvc_close(self->c);
		self->c = NULL;
		/* The test's client is gone: whatever it held is released. */
		EXPECT_EQ(0, kvc_connect(self->d.sock, &c));
		if (c) {
			wait_empty(_metadata, self, c);
			check_frames(_metadata, self, c);
			kvc_close(c);
		}
		EXPECT_EQ(0, daemon_stop(&self->d));
		if (!_metadata->passed)
			log_daemon(_metadata, &self->d);
	}
	daemon_cleanup(&self->d);
	if (self->swapdir[0]) {
		snprintf(path, sizeof(path), "%s/swap", self->swapdir);
		unlink(path);
		rmdir(self->swapdir);
	}
}

/* The client process hung up early: say how it ended, and end the test. */
static void peer_failed(struct __test_metadata *_metadata, FIXTURE_DATA(kvmemd) *self)
{
	bool peer_answered = false;
	int status = 0;

	ASSERT_EQ(self->peer, waitpid(self->peer, &status, 0));
	self->peer = 0;
	TH_LOG("the client process ended early: %s %d",
	       WIFEXITED(status) ? "exit status" : "signal",
	       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	ASSERT_TRUE(peer_answered);
}

/* ---- 1. two clients share frames ----------------------------------------- */

#define SHARE_TOKENS	10	/* three blocks, the last one part full */
#define SHARE_BLOCKS	3

/* What one client tells the other: its blocks and the seed of their bytes. */
struct share_msg {
	int32_t status;
	uint32_t nr;
	uint64_t seed;
	uint32_t frames[SHARE_BLOCKS];
};

static int msg_send(int fd, const void *m, size_t len)
{
	return write(fd, m, len) == (ssize_t)len ? 0 : -EIO;
}

static int msg_recv(int fd, void *m, size_t len)
{
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		n = read(fd, (char *)m + got, len - got);
		if (n <= 0)
			return -EIO;	/* the other end died */
		got += (size_t)n;
	}
	return 0;
}

/* A sequence of SHARE_TOKENS, its blocks filled from @seed; its frames in @m. */
static int share_own(struct kvc *c, struct kvc_pool *p, uint64_t *seq, uint64_t seed,
		     struct share_msg *m)
{
	uint64_t slots[SHARE_TOKENS];
	uint32_t i;
	int err;

	memset(m, 0, sizeof(*m));
	m->seed = seed;
	m->nr = SHARE_BLOCKS;
	err = kvc_seq_create(c, p, seq);
	err = err ?: seq_step(c, *seq, SHARE_TOKENS, slots);
	err = err ?: seq_frames(c, *seq, m->frames, SHARE_BLOCKS);
	if (err >= 0 && err != SHARE_BLOCKS)
		return -ERANGE;
	for (i = 0; err >= 0 && i < SHARE_BLOCKS; i++)
		err = block_fill(p, m->frames[i], kvt_key(seed, 0, i));
	return err < 0 ? err : 0;
}

/*
 * The other client's blocks hold its bytes, read through this process's
 * own mapping of the arena; none of them is one of ours, and ours are
 * intact. 0, -EEXIST, -EUCLEAN or a read's error.
 */
static int share_check(struct kvc_pool *p, const struct share_msg *mine,
		       const struct share_msg *theirs)
{
	uint32_t i, j;
	int err = theirs->nr == SHARE_BLOCKS ? 0 : -EBADMSG;

	for (i = 0; !err && i < SHARE_BLOCKS; i++)
		for (j = 0; j < SHARE_BLOCKS; j++)
			if (theirs->frames[i] == mine->frames[j])
				err = -EEXIST;
	for (i = 0; !err && i < SHARE_BLOCKS; i++)
		err = block_check(p, theirs->frames[i], kvt_key(theirs->seed, 0, i));
	for (i = 0; !err && i < SHARE_BLOCKS; i++)
		err = block_check(p, mine->frames[i], kvt_key(mine->seed, 0, i));
	return err;
}

/*
 * Process B: its own connection, mapping and sequence; checks A's blocks,
 * sends its own, and keeps them pinned until A has read them. Returns its
 * exit status: 0, or the step that failed.
 */
static int share_peer(const char *sock, int in, int out, uint64_t seed)
{
	struct share_msg a, b;
	struct kvc_pool *p;
	struct kvc *c;
	uint64_t seq;

	if (client_open(sock, &c, &p))
		return 10;
	if (share_own(c, p, &seq, seed, &b))
		return 11;
	if (msg_recv(in, &a, sizeof(a)))
		return 12;
	b.status = share_check(p, &b, &a);
	if (msg_send(out, &b, sizeof(b)))
		return 13;
	if (msg_recv(in, &a, sizeof(a)))
		return 14;
	if (kvc_deactivate(c, &seq, 1) || kvc_seq_free(c, seq))
		return 15;
	kvc_close(c);
	return b.status ? 20 : 0;
}

TEST_F_TIMEOUT(kvmemd, two_clients_share_frames, 120)
{
	uint64_t seed = kvt_seed(_metadata), seq;
	struct share_msg a, b;
	int a2b[2], b2a[2], status;
	struct tiers z;

	kvt_start(_metadata, self, KVT_BACKEND, POOL_CONF, false);
	ASSERT_EQ(0, pipe(a2b));
	ASSERT_EQ(0, pipe(b2a));
	/* B first: nothing here has touched the GPU yet. */
	self->peer = fork();
	ASSERT_LE(0, self->peer);
	if (self->peer == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(a2b[1]);
		close(b2a[0]);
		_exit(share_peer(self->d.sock, a2b[0], b2a[1], ~seed));
	}
	close(a2b[0]);
	close(b2a[1]);
	kvt_pool(_metadata, self);
	ASSERT_EQ(0, share_own(self->c, self->p, &seq, seed, &a));
	if (msg_send(a2b[1], &a, sizeof(a)) || msg_recv(b2a[0], &b, sizeof(b)))
		peer_failed(_metadata, self);
	EXPECT_EQ(0, b.status);				/* B read A's blocks */
	EXPECT_EQ(0, share_check(self->p, &a, &b));	/* A reads B's */
	ASSERT_EQ(0, tiers_read(self->c, &z));
	EXPECT_EQ(2 * SHARE_BLOCKS, z.pinned[T_DEVICE]);
	EXPECT_EQ(2, z.seqs);
	EXPECT_EQ(0, msg_send(a2b[1], &a, sizeof(a)));
	ASSERT_EQ(self->peer, waitpid(self->peer, &status, 0));
	self->peer = 0;
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status));
	/* B's blocks are gone, A's still hold its bytes. */
	ASSERT_EQ(0, tiers_read(self->c, &z));
	EXPECT_EQ(SHARE_BLOCKS, z.pinned[T_DEVICE]);
	EXPECT_EQ(SHARE_BLOCKS, z.blocks);
	EXPECT_EQ(0, block_check(self->p, a.frames[0], kvt_key(seed, 0, 0)));
	EXPECT_EQ(0, block_check(self->p, a.frames[SHARE_BLOCKS - 1],
				 kvt_key(seed, 0, SHARE_BLOCKS - 1)));
	ASSERT_EQ(0, kvc_deactivate(self->c, &seq, 1));
	ASSERT_EQ(0, kvc_seq_free(self->c, seq));
	close(a2b[1]);
	close(b2a[0]);
}

/* ---- 2. contents survive demotion (and swap) and promotion ------------ */

#define NSEQ		4
#define SWAP_ROUNDS	4	/* of NSEQ sequences, contents_survive_swap_bounce_parts */
#define SEQ_BLOCKS	3
#define SEQ_TOKENS	(SEQ_BLOCKS * BT)	/* full blocks: all 4096 bytes are data */

/* @n sequences of full blocks filled from @seed, left active; frames in @frames. */
static void seqs_fill(struct __test_metadata *_metadata, struct kvc *c, struct kvc_pool *p,
		      uint64_t *seqs, uint32_t n, uint64_t seed, uint32_t (*frames)[SEQ_BLOCKS])
{
	uint64_t slots[SEQ_TOKENS];
	uint32_t f[SEQ_BLOCKS], i, b;

	for (i = 0; i < n; i++) {
		ASSERT_EQ(0, kvc_seq_create(c, p, &seqs[i]));
		ASSERT_EQ(0, seq_step(c, seqs[i], SEQ_TOKENS, slots));
		ASSERT_EQ(SEQ_BLOCKS, seq_frames(c, seqs[i], f, SEQ_BLOCKS));
		for (b = 0; b < SEQ_BLOCKS; b++)
			ASSERT_EQ(0, block_fill(p, f[b], kvt_key(seed, i, b)));
		if (frames)
			memcpy(frames[i], f, sizeof(f));
	}
}

/*
 * Activate @n sequences (kvc_activate()) in one request. With a small host
 * tier and swap, direct reclaim may find the host tier's blocks all in
 * flight to swap (kvswapd's): it must wait for them, not fail with
 * -ENOMEM. On failure, the zoneinfo is logged.
 */
static int activate_all(struct __test_metadata *_metadata, struct kvc *c, const uint64_t *seqs,
			uint32_t n)
{
	static char zone[KVMEM_MSG_MAX];
	int err = kvc_activate(c, seqs, n, 0, NULL);

	if (err && kvc_stats(c, KVMEM_STATS_ZONEINFO, KVT_POOL, zone, sizeof(zone)) > 0)
		TH_LOG("ACTIVATE of %u sequences: %d; zoneinfo:\n%s", n, err, zone);
	return err;
}

/*
 * Activate @n sequences, @batch at a time, compare every block with the
 * bytes of @seed, deactivate them. Returns how many blocks are on other
 * frames than in @old.
 */
static uint32_t seqs_check(struct __test_metadata *_metadata, struct kvc *c, struct kvc_pool *p,
			   const uint64_t *seqs, uint32_t n, uint32_t batch, uint64_t seed,
			   uint32_t (*old)[SEQ_BLOCKS])
{
	uint32_t f[SEQ_BLOCKS], i, b, first, moved = 0, bad = 0;
	int err;

	for (first = 0; first < n; first += batch) {
		batch = batch < n - first ? batch : n - first;
		ASSERT_EQ(0, activate_all(_metadata, c, seqs + first, batch));
		for (i = first; i < first + batch; i++) {
			ASSERT_EQ(SEQ_BLOCKS, seq_frames(c, seqs[i], f, SEQ_BLOCKS));
			for (b = 0; b < SEQ_BLOCKS; b++) {
				err = block_check(p, f[b], kvt_key(seed, i, b));
				if (err && !bad++)
					TH_LOG("sequence %u block %u (frame %u): %d", i, b,
					       f[b], err);
				moved += old && f[b] != old[i][b];
			}
		}
		ASSERT_EQ(0, kvc_deactivate(c, seqs + first, batch));
	}
	EXPECT_EQ(0, bad);	/* blocks whose bytes differ */
	return moved;
}

static void seqs_free(struct __test_metadata *_metadata, struct kvc *c, const uint64_t *seqs,
		      uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		EXPECT_EQ(0, kvc_seq_free(c, seqs[i]));
}

/*
 * Demote every unpinned block of the device tier (DROP_DEMOTE), again while
 * a round leaves some behind: a round stops early when the tier below has
 * no room until kvswapd's move in flight there completes.
 */
static void demote_all(struct __test_metadata *_metadata, struct kvc *c)
{
	int n, done = 0, rounds;
	struct tiers z;

	for (rounds = 1; rounds <= 100; rounds++) {
		n = kvc_drop_caches(c, KVT_POOL, KVMEM_DROP_DEMOTE);
		if (n == -EPERM)
			SKIP(return, "DROP_CACHES is an admin operation: run as root");
		ASSERT_LE(0, n);
		done += n;
		ASSERT_EQ(0, tiers_read(c, &z));
		if (!z.used[T_DEVICE])
			break;
		usleep(10000);
	}
	if (rounds > 1)
		TH_LOG("DROP_DEMOTE took %d rounds", rounds);
	EXPECT_EQ(NSEQ * SEQ_BLOCKS, done);
}

/*
 * Fill sequences, deactivate them, demote every unpinned device block
 * (DROP_DEMOTE: down to the host tier, and from it to swap when @swap);
 * another sequence takes the freed device frames and writes over them;
 * then the first ones come back to the device, byte for byte.
 */
static void survive(struct __test_metadata *_metadata, FIXTURE_DATA(kvmemd) *self, bool swap)
{
	uint64_t seed = kvt_seed(_metadata), orig[NSEQ], scratch[NSEQ];
	uint32_t old[NSEQ][SEQ_BLOCKS], moved, batch;
	long long demote0, promote0, swpout;
	struct tiers z;

	kvt_start(_metadata, self, KVT_BACKEND, swap ? SWAP_CONF : POOL_CONF, swap);
	kvt_pool(_metadata, self);
	demote0 = vmstat_value(self->c, "pgdemote ");
	promote0 = vmstat_value(self->c, "pgpromote ");
	seqs_fill(_metadata, self->c, self->p, orig, NSEQ, seed, old);
	ASSERT_EQ(0, kvc_deactivate(self->c, orig, NSEQ));
	demote_all(_metadata, self->c);
	if (_metadata->skip)
		return;

	/* They left the device tier, all of them. */
	ASSERT_EQ(0, tiers_read(self->c, &z));
	EXPECT_EQ(0, z.used[T_DEVICE]);
	EXPECT_EQ(z.total[T_DEVICE], z.free[T_DEVICE]);
	EXPECT_EQ(NSEQ * SEQ_BLOCKS, z.used[T_HOST] + z.used[T_SWAP]);
	EXPECT_LE(demote0 + NSEQ * SEQ_BLOCKS, vmstat_value(self->c, "pgdemote "));
	if (swap) {
		/* The host tier holds 4 frames: most went on to swap. */
		swpout = vmstat_value(self->c, "pswpout ");
		EXPECT_LT(0, swpout);
		EXPECT_LT(0, z.used[T_SWAP]);
		TH_LOG("after demotion: %lld blocks on the host tier, %lld in swap (pswpout %lld)",
		       z.used[T_HOST], z.used[T_SWAP], swpout);
	}
	check_frames(_metadata, self, self->c);

	/* Scribble over the freed device frames (then they are reclaimed too). */
	seqs_fill(_metadata, self->c, self->p, scratch, NSEQ, ~seed, NULL);
	ASSERT_EQ(0, kvc_deactivate(self->c, scratch, NSEQ));

	/* All of them in one ACTIVATE: with swap, the scratch blocks must pass
	 * through a host tier of 4 frames on to swap meanwhile. */
	batch = NSEQ;
	moved = seqs_check(_metadata, self->c, self->p, orig, NSEQ, batch, seed, old);
	TH_LOG("%u of %u blocks came back to other frames", moved, NSEQ * SEQ_BLOCKS);
	seqs_check(_metadata, self->c, self->p, scratch, NSEQ, batch, ~seed, NULL);
	EXPECT_LE(promote0 + NSEQ * SEQ_BLOCKS, vmstat_value(self->c, "pgpromote "));
	if (swap)
		EXPECT_LT(0, vmstat_value(self->c, "pswpin "));
	EXPECT_EQ(0, vmstat_value(self->c, "copy_fail "));
	if (swap)
		EXPECT_EQ(0, vmstat_value(self->c, "swap_fail "));
	/* And once more, the first ones after the scratch sequences pushed them out. */
	seqs_check(_metadata, self->c, self->p, orig, NSEQ, batch, seed, NULL);
	seqs_free(_metadata, self->c, orig, NSEQ);
	seqs_free(_metadata, self->c, scratch, NSEQ);
}

TEST_F_TIMEOUT(kvmemd, contents_survive_demote_promote, 120)
{
	survive(_metadata, self, false);
}

TEST_F_TIMEOUT(kvmemd, contents_survive_swap, 120)
{
	survive(_metadata, self, true);
}

/*
 * SWAP_ROUNDS rounds of sequences demoted from the device (48 blocks)
 * into a host tier of 28 frames push some 20 on to swap; then each round
 * comes back in one ACTIVATE and is checked byte for byte. With a GPU
 * arena, swap I/O goes through 4 bounce frames: batches of more than two
 * blocks take the pipelined path (parts of 2), both ways.
 */
TEST_F_TIMEOUT(kvmemd, contents_survive_swap_bounce_parts, 120)
{
	uint64_t seed = kvt_seed(_metadata), seqs[SWAP_ROUNDS][NSEQ];
	int r;

	kvt_start(_metadata, self, KVT_BACKEND, SWAP_WIDE_CONF, true);
	kvt_pool(_metadata, self);
	for (r = 0; r < SWAP_ROUNDS; r++) {
		seqs_fill(_metadata, self->c, self->p, seqs[r], NSEQ, seed + r, NULL);
		ASSERT_EQ(0, kvc_deactivate(self->c, seqs[r], NSEQ));
		demote_all(_metadata, self->c);
		if (_metadata->skip)
			return;
	}
	EXPECT_LT(0, vmstat_value(self->c, "pswpout "));
	check_frames(_metadata, self, self->c);
	for (r = 0; r < SWAP_ROUNDS; r++)
		seqs_check(_metadata, self->c, self->p, seqs[r], NSEQ, NSEQ, seed + r, NULL);
	EXPECT_LT(0, vmstat_value(self->c, "pswpin "));
	EXPECT_EQ(0, vmstat_value(self->c, "swap_fail "));
	EXPECT_EQ(0, vmstat_value(self->c, "copy_fail "));
	/* the first round again, after the others pushed it out */
	seqs_check(_metadata, self->c, self->p, seqs[0], NSEQ, NSEQ, seed, NULL);
	TH_LOG("pswpout %lld, pswpin %lld", vmstat_value(self->c, "pswpout "),
	       vmstat_value(self->c, "pswpin "));
	check_frames(_metadata, self, self->c);
	for (r = 0; r < SWAP_ROUNDS; r++)
		seqs_free(_metadata, self->c, seqs[r], NSEQ);
}

/* ---- 3. copy-on-write copies on the device ---------------------------- */

TEST_F_TIMEOUT(kvmemd, cow_copies_on_device, 120)
{
	uint64_t seed = kvt_seed(_metadata), parent, child, child2, slots[2 * BT];
	uint32_t pf[2], cf[2], f[2], t;
	long long cow0;

	kvt_start(_metadata, self, KVT_BACKEND, POOL_CONF, false);
	kvt_pool(_metadata, self);
	/* A full block and one holding 2 tokens, each filled whole from keys (0, b). */
	ASSERT_EQ(0, kvc_seq_create(self->c, self->p, &parent));
	ASSERT_EQ(0, seq_step(self->c, parent, BT + 2, slots));
	ASSERT_EQ(2, seq_frames(self->c, parent, pf, 2));
	ASSERT_EQ(0, block_fill(self->p, pf[0], kvt_key(seed, 0, 0)));
	ASSERT_EQ(0, block_fill(self->p, pf[1], kvt_key(seed, 0, 1)));
	cow0 = vmstat_value(self->c, "cow_copy ");
	ASSERT_LE(0, cow0);

	/* The child appends into the shared part-full block: it gets a copy. */
	ASSERT_EQ(0, kvc_seq_fork(self->c, parent, &child));
	ASSERT_EQ(0, seq_step(self->c, child, 1, slots));
	ASSERT_EQ(2, seq_frames(self->c, child, cf, 2));
	EXPECT_EQ(pf[0], cf[0]);		/* the full block stays shared */
	ASSERT_NE(pf[1], cf[1]);
	EXPECT_EQ((uint64_t)cf[1] * BT + 2, slots[0]);
	EXPECT_EQ(cow0 + 1, vmstat_value(self->c, "cow_copy "));
	for (t = 0; t < 2; t++)			/* the copy has the parent's tokens */
		EXPECT_EQ(0, token_check(self->p, cf[1], t, kvt_key(seed, 0, 1)));
	ASSERT_EQ(0, token_fill(self->p, cf[1], 2, kvt_key(seed, 1, 1)));
	EXPECT_EQ(0, token_check(self->p, cf[1], 2, kvt_key(seed, 1, 1)));
	for (t = 0; t < 2; t++)
		EXPECT_EQ(0, token_check(self->p, cf[1], t, kvt_key(seed, 0, 1)));
	/* The parent's block did not change: token 2's place too. */
	EXPECT_EQ(0, block_check(self->p, pf[1], kvt_key(seed, 0, 1)));
	EXPECT_EQ(0, block_check(self->p, pf[0], kvt_key(seed, 0, 0)));

	/* The parent's block is its alone now: appending copies nothing. */
	ASSERT_EQ(0, seq_step(self->c, parent, 1, slots));
	EXPECT_EQ((uint64_t)pf[1] * BT + 2, slots[0]);
	EXPECT_EQ(cow0 + 1, vmstat_value(self->c, "cow_copy "));
	ASSERT_EQ(0, token_fill(self->p, pf[1], 2, kvt_key(seed, 2, 1)));
	EXPECT_EQ(0, token_check(self->p, cf[1], 2, kvt_key(seed, 1, 1)));

	/* Forked again, the parent writes first: the parent gets the copy. */
	ASSERT_EQ(0, kvc_seq_fork(self->c, parent, &child2));
	ASSERT_EQ(0, kvc_activate(self->c, &child2, 1, 0, NULL));
	ASSERT_EQ(0, seq_step(self->c, parent, 1, slots));
	ASSERT_EQ(2, seq_frames(self->c, parent, f, 2));
	EXPECT_EQ(pf[0], f[0]);
	ASSERT_NE(pf[1], f[1]);
	EXPECT_EQ((uint64_t)f[1] * BT + 3, slots[0]);
	EXPECT_EQ(cow0 + 2, vmstat_value(self->c, "cow_copy "));
	ASSERT_EQ(2, seq_frames(self->c, child2, cf, 2));
	EXPECT_EQ(pf[0], cf[0]);
	EXPECT_EQ(pf[1], cf[1]);		/* the child kept the old frame */
	for (t = 0; t < 2; t++)
		EXPECT_EQ(0, token_check(self->p, f[1], t, kvt_key(seed, 0, 1)));
	EXPECT_EQ(0, token_check(self->p, f[1], 2, kvt_key(seed, 2, 1)));
	ASSERT_EQ(0, token_fill(self->p, f[1], 3, kvt_key(seed, 3, 1)));
	EXPECT_EQ(0, token_check(self->p, f[1], 3, kvt_key(seed, 3, 1)));
	/* The child's block: what it was, token 3's place untouched by the parent. */
	for (t = 0; t < BT; t++)
		EXPECT_EQ(0, token_check(self->p, pf[1], t, kvt_key(seed, t == 2 ? 2 : 0, 1)));

	EXPECT_EQ(0, kvc_seq_free(self->c, child));
	EXPECT_EQ(0, kvc_seq_free(self->c, child2));
	/* The parent's blocks outlive the children's. */
	EXPECT_EQ(0, block_check(self->p, pf[0], kvt_key(seed, 0, 0)));
	EXPECT_EQ(0, token_check(self->p, f[1], 3, kvt_key(seed, 3, 1)));
	EXPECT_EQ(0, kvc_seq_free(self->c, parent));
}

/* ---- 4. a client killed while holding pins frees them ----------------- */

#define HOLD_SEQS	3
#define HOLD_BLOCKS	2	/* each: 8 tokens */

/* What the holder tells the test once it holds everything. */
struct hold_msg {
	int32_t reserved;	/* frames in its reserve */
};

/*
 * The client to be killed: HOLD_SEQS active sequences (their blocks
 * pinned and written), one inactive (blocks referenced, on the LRU), and a
 * reserve of frames. Returns only on failure, its exit status.
 */
static int holder(const char *sock, int out, uint64_t seed)
{
	uint32_t f[HOLD_BLOCKS], i, b;
	struct hold_msg m = { 0 };
	uint64_t seq, slots[HOLD_BLOCKS * BT];
	struct kvc_pool *p;
	struct kvc *c;

	if (client_open(sock, &c, &p))
		return 10;
	for (i = 0; i < HOLD_SEQS; i++) {
		if (kvc_seq_create(c, p, &seq) || seq_step(c, seq, HOLD_BLOCKS * BT, slots) ||
		    seq_frames(c, seq, f, HOLD_BLOCKS) != HOLD_BLOCKS)
			return 11;
		for (b = 0; b < HOLD_BLOCKS; b++)
			if (block_fill(p, f[b], kvt_key(seed, i, b)))
				return 12;
	}
	if (kvc_seq_create(c, p, &seq) || seq_step(c, seq, BT + 1, slots) ||
	    kvc_deactivate(c, &seq, 1))
		return 13;
	m.reserved = kvc_reserve(c, p, 2);
	if (m.reserved < 0 || msg_send(out, &m, sizeof(m)))
		return 14;
	for (;;)
		pause();
}

TEST_F_TIMEOUT(kvmemd, killed_client_frees_pins, 120)
{
	uint64_t seed = kvt_seed(_metadata), seq, slots[8 * BT];
	uint32_t f[8], b;
	struct hold_msg m;
	struct tiers z;
	int fd[2], status;

	kvt_start(_metadata, self, KVT_BACKEND, POOL_CONF, false);
	ASSERT_EQ(0, pipe(fd));
	self->peer = fork();
	ASSERT_LE(0, self->peer);
	if (self->peer == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(fd[0]);
		_exit(holder(self->d.sock, fd[1], seed));
	}
	close(fd[1]);
	if (msg_recv(fd[0], &m, sizeof(m)))
		peer_failed(_metadata, self);
	close(fd[0]);
	TH_LOG("the client holds %d pinned blocks and %d reserve frames",
	       HOLD_SEQS * HOLD_BLOCKS, m.reserved);
	ASSERT_EQ(0, tiers_read(self->c, &z));
	EXPECT_EQ(HOLD_SEQS * HOLD_BLOCKS, z.pinned[T_DEVICE]);
	EXPECT_EQ(HOLD_SEQS + 1, z.seqs);
	EXPECT_EQ(HOLD_SEQS * HOLD_BLOCKS + 2, z.blocks);
	/* Reserve frames are used, though no block owns them yet. */
	EXPECT_EQ(z.total[T_DEVICE], z.free[T_DEVICE] + z.used[T_DEVICE] + m.reserved);

	ASSERT_EQ(0, kill(self->peer, SIGKILL));
	ASSERT_EQ(self->peer, waitpid(self->peer, &status, 0));
	self->peer = 0;
	EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	/* The daemon sees the hang-up and releases everything: pins, blocks, reserve. */
	wait_empty(_metadata, self, self->c);
	check_frames(_metadata, self, self->c);

	/* The frames serve again: half the device tier, written and read back. */
	kvt_pool(_metadata, self);
	ASSERT_EQ(0, kvc_seq_create(self->c, self->p, &seq));
	ASSERT_EQ(0, seq_step(self->c, seq, 8 * BT, slots));
	ASSERT_EQ(8, seq_frames(self->c, seq, f, 8));
	for (b = 0; b < 8; b++)
		ASSERT_EQ(0, block_fill(self->p, f[b], kvt_key(seed, 9, b)));
	for (b = 0; b < 8; b++)
		EXPECT_EQ(0, block_check(self->p, f[b], kvt_key(seed, 9, b)));
	ASSERT_EQ(0, tiers_read(self->c, &z));
	EXPECT_EQ(8, z.pinned[T_DEVICE]);
	EXPECT_EQ(0, kvc_seq_free(self->c, seq));
}

/* ---- 5. the backend kvmemd picks, and GPUs that are not there ---------- */

/* device.backend = auto serves with what is here: the GPU, else the CPU. */
TEST_F_TIMEOUT(kvmemd, auto_backend_follows_the_gpu, 120)
{
	uint64_t seed = kvt_seed(_metadata), seq, slots[BT];
	uint32_t f[1];

	if (kvt_gpu != (KVT_BACKEND_ID == KVMEM_BACKEND_CUDA))
		SKIP(return, "auto picks the other backend here (%s)", kvt_gpu_why);
	kvt_start(_metadata, self, "auto", POOL_CONF, false);
	kvt_pool(_metadata, self);
	ASSERT_EQ(0, kvc_seq_create(self->c, self->p, &seq));
	ASSERT_EQ(0, seq_step(self->c, seq, BT, slots));
	ASSERT_EQ(1, seq_frames(self->c, seq, f, 1));
	ASSERT_EQ(0, block_fill(self->p, f[0], kvt_key(seed, 0, 0)));
	EXPECT_EQ(0, block_check(self->p, f[0], kvt_key(seed, 0, 0)));
	EXPECT_EQ(0, kvc_seq_free(self->c, seq));
}

/* Run kvmemd on @config (socket.path added) to its end: its exit status, its log in @out. */
static int run_once(const char *config, char *out, size_t len)
{
	char dir[] = "/tmp/kvmemd-test-XXXXXX", conf[64], log[64], text[2048];
	int rc;

	if (!mkdtemp(dir))
		return -1;
	snprintf(conf, sizeof(conf), "%s/kvmemd.conf", dir);
	snprintf(log, sizeof(log), "%s/log", dir);
	snprintf(text, sizeof(text), "socket.path = %s/s\n%s", dir, config);
	rc = write_file(conf, text) ? -1 : daemon_run_once(conf, log, out, len);
	unlink(conf);
	unlink(log);
	snprintf(conf, sizeof(conf), "%s/s", dir);
	unlink(conf);
	rmdir(dir);
	return rc;
}

/*
 * A daemon asked for a GPU it cannot have stops at startup, with the
 * reason in its log. With the CUDA backend: a GPU ordinal that does not
 * exist, in device.gpus or pool.NAME.gpu, or a pool's GPU that
 * device.gpus leaves out (refused as the file loads, with its line).
 * With the CPU backend, on a machine without a GPU: device.backend = cuda
 * at all.
 */
TEST_F_TIMEOUT(kvmemd, missing_gpu_fails_clearly, 120)
{
	static const struct {
		const char *conf;
		const char *why;
	} cases[] = {
		{ "device.backend = cuda\ndevice.gpus = 0,63\n", "device.gpus: there is no GPU 63" },
		{ "device.backend = cuda\npool.t.gpu = 63\n", "pool.t.gpu = 63: no such GPU" },
		{ "device.backend = auto\npool.t.gpu = 63\n", "pool.t.gpu = 63: no such GPU" },
		{ "device.backend = cuda\ndevice.gpus = 0\npool.t.gpu = 1\n",
		  ":4: pool.t.gpu = 1: not in device.gpus (line 3)" },
		{ "device.backend = cuda\ndevice.gpus = 63\n",
		  ":4: pool 't' is on GPU 0 (pool.t.gpu unset), which device.gpus (line 3) leaves out" },
	};
	char conf[1024], out[8192];
	uint32_t i;
	int rc;

	if (KVT_BACKEND_ID == KVMEM_BACKEND_CPU) {
		if (kvt_gpu)
			SKIP(return, "a GPU is here (%s): device.backend = cuda would start",
			     kvt_gpu_why);
		rc = run_once("device.backend = cuda\n" POOL_CONF, out, sizeof(out));
		EXPECT_LT(0, rc);
		EXPECT_NE(127, rc);
		EXPECT_NE_NULL(strstr(out, "device.backend = cuda: no usable GPU: "));
		EXPECT_NULL(strstr(out, "ready on"));
		if (!_metadata->passed)
			TH_LOG("kvmemd's log:\n%s", out);
		return;
	}
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(conf, sizeof(conf), "%s" POOL_CONF, cases[i].conf);
		rc = run_once(conf, out, sizeof(out));
		EXPECT_LT(0, rc);
		EXPECT_NE(127, rc);
		EXPECT_NE_NULL(strstr(out, cases[i].why));
		EXPECT_NULL(strstr(out, "ready on"));
		if (!_metadata->passed)
			TH_LOG("case %u: kvmemd's log:\n%s", i, out);
	}
}

/*
 * Two pools on two GPUs (pool.u.gpu = 1): each arena lies on its own GPU,
 * a client maps both, and blocks written through one stay apart from the
 * other's (the same frame numbers hold different bytes); each pool's tiers
 * add up. CUDA only, on a machine of two GPUs or more.
 */
TEST_F_TIMEOUT(kvmemd, pools_on_two_gpus, 120)
{
	struct kvc_pool *pool[2] = { NULL, NULL };
	uint64_t seed, seq[2], slots[BT];
	uint32_t f[2][1], i;
	struct tiers z;

	if (KVT_BACKEND_ID != KVMEM_BACKEND_CUDA || kvt_nr_gpus < 2)
		SKIP(return, "needs the CUDA backend on two GPUs (%s)", kvt_gpu_why);
	seed = kvt_seed(_metadata);
	kvt_start(_metadata, self, "cuda", POOL_CONF
		  "pool.u.layers = 2\npool.u.kv_heads = 2\npool.u.head_dim = 64\n"
		  "pool.u.block_tokens = 4\npool.u.dtype = fp16\npool.u.prefix = off\n"
		  "pool.u.device_mem = 64K\npool.u.host_mem = 256K\npool.u.gpu = 1\n", false);
	kvt_pool(_metadata, self);
	pool[0] = self->p;
	ASSERT_EQ(0, kvc_pool_open(self->c, "u", &pool[1]));
	ASSERT_EQ(0, kvc_pool_map(pool[1]));
	ASSERT_EQ(0, backend_check(pool[1]));
	EXPECT_EQ(0, pool[0]->gpu);
	EXPECT_EQ(1, pool[1]->gpu);
	EXPECT_NE(pool[0]->handle, pool[1]->handle);
	for (i = 0; i < 2; i++) {
		ASSERT_EQ(0, kvc_seq_create(self->c, pool[i], &seq[i]));
		ASSERT_EQ(0, seq_step(self->c, seq[i], BT, slots));
		ASSERT_EQ(1, seq_frames(self->c, seq[i], f[i], 1));
		ASSERT_EQ(0, block_fill(pool[i], f[i][0], kvt_key(seed, i, 0)));
	}
	/* each pool's first block: the same frame of two arenas */
	EXPECT_EQ(f[0][0], f[1][0]);
	for (i = 0; i < 2; i++) {
		EXPECT_EQ(0, block_check(pool[i], f[i][0], kvt_key(seed, i, 0)));
		EXPECT_EQ(-EUCLEAN, block_check(pool[i], f[i][0], kvt_key(seed, !i, 0)));
	}
	ASSERT_EQ(0, tiers_read_pool(self->c, pool[1]->handle, &z));
	EXPECT_EQ(DEVICE_FRAMES, z.total[T_DEVICE]);
	EXPECT_EQ(1, z.used[T_DEVICE]);
	for (i = 0; i < 2; i++)
		EXPECT_EQ(0, kvc_seq_free(self->c, seq[i]));
	ASSERT_EQ(0, tiers_read_pool(self->c, pool[1]->handle, &z));
	EXPECT_EQ(z.total[T_DEVICE], z.free[T_DEVICE]);
	EXPECT_EQ(0, z.used[T_DEVICE] + z.used[T_HOST]);
	EXPECT_TRUE(z.check_ok);
}

#endif /* _SELFTESTS_CUDA_BACKEND_TESTS_H */
