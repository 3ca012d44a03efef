// SPDX-License-Identifier: MIT
/*
 * The swap I/O engines (mm/swap_io.c) and CRC-32C (lib/crc32c.c).
 *
 * Every engine test runs twice, uring_NAME and psync_NAME; the io_uring
 * one is skipped where the kernel refuses io_uring. The swap area is a
 * 64 MiB temporary file opened O_DIRECT, in $TMPDIR, /tmp, /var/tmp or the
 * current directory, whichever does direct I/O first (tests skip if none
 * does). Transfers use buffers in two arenas given to the engine, as the
 * host tier's memfd mapping and the CPU device arena would be (fixed
 * buffers under io_uring), and in memory outside them (plain buffers).
 * The test keeps a shadow copy of the file: every read is compared with
 * it, and the engine's counters with what the test did.
 */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "kselftest_harness.h"
#include "lib/crc32c.h"
#include "mm/swap_io.h"

#define MiB		(1u << 20)
#define FILE_BYTES	(64ull * MiB)
#define ARENA_BYTES	(16u * MiB)
#define OUTSIDE_BYTES	(4u * MiB)
#define BLK		KV_SWAP_IO_ALIGN
#define MAX_BATCH	64
#define NR_WORKERS	4

/* ---- random numbers ----------------------------------------------------- */

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
	return rnd(s) % n;
}

static void fill_random(uint64_t *s, void *buf, size_t len)
{
	unsigned char *p = buf;
	uint64_t v;

	for (; len >= 8; len -= 8, p += 8) {
		v = rnd(s);
		memcpy(p, &v, 8);
	}
	while (len--)
		*p++ = (unsigned char)rnd(s);
}

/* A transfer length: powers of two and odd block counts, 4 KiB to @max (2 MiB at most). */
static uint32_t rand_len(uint64_t *s, uint32_t max)
{
	uint32_t len;

	if (rnd(s) & 1)
		len = BLK << rnd_below(s, 10);
	else
		len = BLK * (1 + rnd_below(s, 512));
	return len < max ? len : max;
}

/* ---- the swap area and the arenas ---------------------------------------- */

/* Whether direct I/O of one block works on @fd (some file systems refuse it). */
static bool direct_works(int fd)
{
	void *buf;
	bool ok;

	if (posix_memalign(&buf, BLK, BLK))
		return false;
	memset(buf, 0, BLK);
	ok = pwrite(fd, buf, BLK, 0) == BLK && pread(fd, buf, BLK, 0) == BLK;
	free(buf);
	return ok;
}

/*
 * A FILE_BYTES file open O_DIRECT, already unlinked, in the first of
 * $TMPDIR, /tmp, /var/tmp and . where direct I/O works. Return: the fd, or
 * -1 with @why saying what each directory answered.
 */
static int direct_file(char *why, size_t len)
{
	const char *dirs[] = { getenv("TMPDIR"), "/tmp", "/var/tmp", "." };
	const char *answer;
	char path[PATH_MAX];
	size_t used = 0;
	unsigned int i;
	int fd;

	why[0] = '\0';
	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if (!dirs[i] || !*dirs[i])
			continue;
		snprintf(path, sizeof(path), "%s/kvswap-XXXXXX", dirs[i]);
		fd = mkostemp(path, O_CLOEXEC);
		if (fd < 0) {
			answer = strerror(errno);
		} else {
			unlink(path);
			/* F_SETFL refuses O_DIRECT where the file system has none */
			if (!fcntl(fd, F_SETFL, O_DIRECT) && !ftruncate(fd, FILE_BYTES) &&
			    direct_works(fd))
				return fd;
			answer = "no O_DIRECT";
			close(fd);
		}
		if (used < len)
			used += snprintf(why + used, len - used, "%s%s: %s",
					 used ? ", " : "", dirs[i], answer);
	}
	return -1;
}

/**
 * struct swap_env - a test's swap area, arenas, engine and expectations
 * @fd:      the swap area
 * @memfd:   backs @arena[0]
 * @arena:   [0] a memfd mapped shared (as the host tier), [1] anonymous
 *           memory (as the CPU device arena); given to the engine
 * @arena_bytes: size of each arena
 * @outside: memory the engine does not know about
 * @shadow:  what the file holds
 * @io:      the engine
 * @want:    what its counters must say (short and EAGAIN retries: at least)
 */
struct swap_env {
	int fd;
	int memfd;
	unsigned char *arena[2];
	size_t arena_bytes;
	unsigned char *outside;
	unsigned char *shadow;
	struct kv_swap_io *io;
	struct kv_swap_io_stats want;
};

static void env_close(struct swap_env *env)
{
	kv_swap_io_destroy(env->io);
	if (env->arena[0])
		munmap(env->arena[0], env->arena_bytes);
	if (env->arena[1])
		munmap(env->arena[1], env->arena_bytes);
	if (env->memfd > 0)
		close(env->memfd);
	if (env->fd > 0)
		close(env->fd);
	free(env->outside);
	free(env->shadow);
	memset(env, 0, sizeof(*env));
}

static void *map_arena(int fd, size_t len)
{
	void *p;

	if (fd >= 0)
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	else
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/*
 * Set up @env with an engine of kind @engine and two arenas of
 * @arena_bytes; false (skipped or failed) if not.
 */
static bool env_open_sized(struct __test_metadata *_metadata, struct swap_env *env,
			   int engine, size_t arena_bytes)
{
	struct iovec bufs[2];
	char why[512];
	int err;

	memset(env, 0, sizeof(*env));
	env->fd = direct_file(why, sizeof(why));
	if (env->fd < 0)
		SKIP(return false, "no directory does O_DIRECT (%s)", why);
	env->memfd = memfd_create("kvswap-host", MFD_CLOEXEC);
	ASSERT_LE(0, env->memfd);
	ASSERT_EQ(0, ftruncate(env->memfd, arena_bytes));
	env->arena_bytes = arena_bytes;
	env->arena[0] = map_arena(env->memfd, arena_bytes);
	env->arena[1] = map_arena(-1, arena_bytes);
	ASSERT_NE_NULL(env->arena[0]);
	ASSERT_NE_NULL(env->arena[1]);
	ASSERT_EQ(0, posix_memalign((void **)&env->outside, BLK, OUTSIDE_BYTES));
	env->shadow = calloc(1, FILE_BYTES);
	ASSERT_NE_NULL(env->shadow);
	bufs[0] = (struct iovec){ env->arena[0], arena_bytes };
	bufs[1] = (struct iovec){ env->arena[1], arena_bytes };
	err = kv_swap_io_create(env->fd, engine, bufs, 2, &env->io);
	if (err && engine == KV_SWAP_ENGINE_IO_URING) {
		env_close(env);
		SKIP(return false, "io_uring refused: %s", strerror(-err));
	}
	ASSERT_EQ(0, err);
	if (engine == KV_SWAP_ENGINE_PSYNC)
		ASSERT_STREQ("psync", kv_swap_io_engine(env->io));
	else if (engine == KV_SWAP_ENGINE_IO_URING)
		ASSERT_STREQ("io_uring", kv_swap_io_engine(env->io));
	return true;
}

static bool env_open(struct __test_metadata *_metadata, struct swap_env *env, int engine)
{
	return env_open_sized(_metadata, env, engine, ARENA_BYTES);
}

/* Account in @env->want for @reqs, which kv_swap_io_run() has returned. */
static void env_count(struct swap_env *env, const struct kv_swap_req *reqs, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		if (reqs[i].res) {
			env->want.errors++;
		} else if (reqs[i].write) {
			env->want.writes++;
			env->want.bytes_written += reqs[i].len;
		} else {
			env->want.reads++;
			env->want.bytes_read += reqs[i].len;
		}
	}
}

/* Run @reqs, count them, and mirror the successful writes into the shadow. */
static int env_run(struct swap_env *env, struct kv_swap_req *reqs, unsigned int n)
{
	unsigned int i;
	int err;

	err = kv_swap_io_run(env->io, reqs, n);
	env_count(env, reqs, n);
	for (i = 0; i < n; i++)
		if (!reqs[i].res && reqs[i].write)
			memcpy(env->shadow + reqs[i].off, reqs[i].buf, reqs[i].len);
	return err;
}

/* The engine's counters against env->want. */
static void env_check_stats(struct __test_metadata *_metadata, struct swap_env *env)
{
	struct kv_swap_io_stats st;

	kv_swap_io_stats(env->io, &st);
	EXPECT_EQ(env->want.reads, st.reads);
	EXPECT_EQ(env->want.writes, st.writes);
	EXPECT_EQ(env->want.bytes_read, st.bytes_read);
	EXPECT_EQ(env->want.bytes_written, st.bytes_written);
	EXPECT_EQ(env->want.errors, st.errors);
	EXPECT_LE(env->want.short_retries, st.short_retries);
	EXPECT_LE(env->want.eagain_retries, st.eagain_retries);
	if (st.short_retries != env->want.short_retries || st.eagain_retries)
		TH_LOG("%s: %llu short retries (%llu injected), %llu EAGAIN retries",
		       kv_swap_io_engine(env->io), (unsigned long long)st.short_retries,
		       (unsigned long long)env->want.short_retries,
		       (unsigned long long)st.eagain_retries);
}

/* @n requests of @len bytes, buffers back to back from @buf, file ranges from @off. */
static void make_reqs(struct kv_swap_req *reqs, unsigned int n, void *buf, uint64_t off,
		      uint32_t len, int write)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		reqs[i] = (struct kv_swap_req){
			.buf = (char *)buf + (size_t)i * len,
			.off = off + (uint64_t)i * len,
			.len = len,
			.write = write,
			.res = 1,
		};
}

/* Index of the first request whose buffer differs from the shadow, or -1. */
static int first_bad(const struct swap_env *env, const struct kv_swap_req *reqs,
		     unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		if (memcmp(reqs[i].buf, env->shadow + reqs[i].off, reqs[i].len))
			return i;
	return -1;
}

/* An engine test: uring_NAME and psync_NAME run @name's body with their engine. */
#define ENGINE_TEST(name)							\
	static void name##_body(struct __test_metadata *_metadata, struct swap_env *env); \
	static void name##_run(struct __test_metadata *_metadata, int engine)	\
	{									\
		struct swap_env env;						\
										\
		if (!env_open(_metadata, &env, engine))				\
			return;							\
		name##_body(_metadata, &env);					\
		env_check_stats(_metadata, &env);				\
		env_close(&env);						\
	}									\
	TEST_TIMEOUT(uring_##name, 120)						\
	{									\
		name##_run(_metadata, KV_SWAP_ENGINE_IO_URING);			\
	}									\
	TEST_TIMEOUT(psync_##name, 120)						\
	{									\
		name##_run(_metadata, KV_SWAP_ENGINE_PSYNC);			\
	}									\
	static void name##_body(struct __test_metadata __attribute__((unused)) *_metadata, \
				struct swap_env __attribute__((unused)) *env)

/* ---- random batches, one caller and several ------------------------------ */

/**
 * struct space - memory a worker carves its buffers from
 * @base: first byte
 * @len:  bytes
 * @used: bytes handed out since the last reset
 */
struct space {
	unsigned char *base;
	size_t len;
	size_t used;
};

/**
 * struct worker - a caller doing random batches in its own part of the file
 * @env:   the test's environment
 * @lo:    first byte of its part of the file
 * @hi:    end of that part
 * @sp:    its parts of the two arenas and of the outside memory
 * @rng:   its random state
 * @max_len: longest transfer
 * @reqs:  the batch
 * @want:  what it did, added to env->want at the end
 * @fail:  what went wrong first, empty if nothing
 */
struct worker {
	struct swap_env *env;
	uint64_t lo, hi;
	struct space sp[3];
	uint64_t rng;
	uint32_t max_len;
	struct kv_swap_req reqs[MAX_BATCH * 2];
	struct kv_swap_io_stats want;
	char fail[256];
};

/* Room for @len bytes in a space picked at random, or NULL if none has it. */
static void *worker_buf(struct worker *w, size_t len)
{
	unsigned int first = rnd_below(&w->rng, 3), i;
	struct space *s;

	for (i = 0; i < 3; i++) {
		s = &w->sp[(first + i) % 3];
		if (s->len - s->used >= len) {
			s->used += len;
			return s->base + s->used - len;
		}
	}
	return NULL;
}

static void worker_reset(struct worker *w)
{
	unsigned int i;

	for (i = 0; i < 3; i++)
		w->sp[i].used = 0;
}

/* A file range of @len bytes in the worker's part, apart from reqs[0..n). */
static bool worker_range(struct worker *w, unsigned int n, uint32_t len, uint64_t *off)
{
	unsigned int tries, i;

	for (tries = 0; tries < 8; tries++) {
		*off = w->lo + rnd_below(&w->rng, (w->hi - w->lo - len) / BLK + 1) * BLK;
		for (i = 0; i < n; i++)
			if (*off < w->reqs[i].off + w->reqs[i].len && w->reqs[i].off < *off + len)
				break;
		if (i == n)
			return true;
	}
	return false;
}

/* Up to @k writes of random data to distinct ranges; returns how many. */
static unsigned int worker_writes(struct worker *w, unsigned int k)
{
	struct kv_swap_req *req;
	unsigned int n = 0;
	uint32_t len;
	uint64_t off;
	void *buf;

	worker_reset(w);
	while (n < k) {
		len = rand_len(&w->rng, w->max_len);
		buf = worker_buf(w, len);
		if (!buf || !worker_range(w, n, len, &off))
			break;
		req = &w->reqs[n++];
		*req = (struct kv_swap_req){ .buf = buf, .off = off, .len = len, .write = 1 };
		fill_random(&w->rng, buf, len);
	}
	return n;
}

/*
 * Reads of the @n ranges just written, in a shuffled order, plus a few
 * random ranges of the worker's part; buffers poisoned first.
 */
static unsigned int worker_reads(struct worker *w, unsigned int n)
{
	struct kv_swap_req *req, tmp;
	unsigned int i, j, extra = rnd_below(&w->rng, 8);
	void *buf;

	worker_reset(w);
	for (i = 0; i < n; i++) {
		j = i + rnd_below(&w->rng, n - i);
		tmp = w->reqs[j];
		w->reqs[j] = w->reqs[i];
		w->reqs[i] = tmp;
	}
	for (i = 0; i < n + extra; i++) {
		req = &w->reqs[i];
		if (i >= n) {
			req->len = rand_len(&w->rng, w->max_len);
			req->off = w->lo + BLK * rnd_below(&w->rng,
							  (w->hi - w->lo - req->len) / BLK + 1);
		}
		buf = worker_buf(w, req->len);
		if (!buf)
			return i;
		memset(buf, 0xa5, req->len);
		req->buf = buf;
		req->write = 0;
	}
	return n + extra;
}

static void worker_account(struct worker *w, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		if (w->reqs[i].res) {
			w->want.errors++;
		} else if (w->reqs[i].write) {
			w->want.writes++;
			w->want.bytes_written += w->reqs[i].len;
		} else {
			w->want.reads++;
			w->want.bytes_read += w->reqs[i].len;
		}
	}
}

/* One batch of writes and one of reads checked against the shadow: 0, or -1. */
static int worker_round(struct worker *w)
{
	struct swap_env *env = w->env;
	unsigned int n, i;
	int err, bad;

	n = worker_writes(w, 1 + rnd_below(&w->rng, MAX_BATCH));
	err = kv_swap_io_run(env->io, w->reqs, n);
	worker_account(w, n);
	if (err) {
		snprintf(w->fail, sizeof(w->fail), "write batch of %u: %s", n, strerror(-err));
		return -1;
	}
	for (i = 0; i < n; i++)
		memcpy(env->shadow + w->reqs[i].off, w->reqs[i].buf, w->reqs[i].len);
	n = worker_reads(w, n);
	err = kv_swap_io_run(env->io, w->reqs, n);
	worker_account(w, n);
	if (err) {
		snprintf(w->fail, sizeof(w->fail), "read batch of %u: %s", n, strerror(-err));
		return -1;
	}
	bad = first_bad(env, w->reqs, n);
	if (bad >= 0) {
		snprintf(w->fail, sizeof(w->fail), "read %d of %u (off %llu len %u) differs",
			 bad, n, (unsigned long long)w->reqs[bad].off, w->reqs[bad].len);
		return -1;
	}
	return 0;
}

/* Give worker @i of @nr its 1/@nr of the file, the arenas and the outside memory. */
static void worker_init(struct worker *w, struct swap_env *env, unsigned int i, unsigned int nr)
{
	size_t part = env->arena_bytes / nr;

	memset(w, 0, sizeof(*w));
	w->env = env;
	w->rng = 0x5eed0000 + i;
	w->max_len = 2 * MiB;
	w->lo = FILE_BYTES / nr * i;
	w->hi = w->lo + FILE_BYTES / nr;
	w->sp[0] = (struct space){ env->arena[0] + part * i, part, 0 };
	w->sp[1] = (struct space){ env->arena[1] + part * i, part, 0 };
	w->sp[2] = (struct space){ env->outside + OUTSIDE_BYTES / nr * i, OUTSIDE_BYTES / nr, 0 };
}

static void worker_done(struct swap_env *env, const struct worker *w)
{
	env->want.reads += w->want.reads;
	env->want.writes += w->want.writes;
	env->want.bytes_read += w->want.bytes_read;
	env->want.bytes_written += w->want.bytes_written;
	env->want.errors += w->want.errors;
}

#define WORKER_ROUNDS	10

static void *worker_thread(void *arg)
{
	struct worker *w = arg;
	unsigned int r;

	for (r = 0; r < WORKER_ROUNDS; r++)
		if (worker_round(w))
			break;
	return NULL;
}

ENGINE_TEST(random_batches)
{
	struct worker *w = malloc(sizeof(*w));
	unsigned int r;

	ASSERT_NE_NULL(w);
	TH_LOG("%s, arenas %s", kv_swap_io_engine(env->io),
	       kv_swap_io_registered(env->io) ? "registered" : "not registered");
	worker_init(w, env, 0, 1);
	for (r = 0; r < 20 && !w->fail[0]; r++)
		worker_round(w);
	EXPECT_STREQ("", w->fail);
	worker_done(env, w);
	free(w);
}

ENGINE_TEST(concurrent_callers)
{
	struct worker *w = calloc(NR_WORKERS, sizeof(*w));
	pthread_t t[NR_WORKERS];
	unsigned int i;

	ASSERT_NE_NULL(w);
	for (i = 0; i < NR_WORKERS; i++) {
		worker_init(&w[i], env, i, NR_WORKERS);
		ASSERT_EQ(0, pthread_create(&t[i], NULL, worker_thread, &w[i]));
	}
	for (i = 0; i < NR_WORKERS; i++) {
		pthread_join(t[i], NULL);
		EXPECT_STREQ("", w[i].fail);
		worker_done(env, &w[i]);
	}
	free(w);
}

/* More transfers in one batch than the ring has entries. */
ENGINE_TEST(big_batch)
{
	unsigned int n = env->arena_bytes / BLK;	/* 4096 */
	struct kv_swap_req *reqs = calloc(n, sizeof(*reqs));
	uint64_t rng = 7;

	ASSERT_NE_NULL(reqs);
	fill_random(&rng, env->arena[0], env->arena_bytes);
	make_reqs(reqs, n, env->arena[0], 8 * MiB, BLK, 1);
	EXPECT_EQ(0, env_run(env, reqs, n));
	memset(env->arena[1], 0, env->arena_bytes);
	make_reqs(reqs, n, env->arena[1], 8 * MiB, BLK, 0);
	EXPECT_EQ(0, env_run(env, reqs, n));
	EXPECT_EQ(-1, first_bad(env, reqs, n));
	free(reqs);
}

/* ---- injected faults ----------------------------------------------------- */

#define NR_INJ	8
#define INJ_LEN	(64u * 1024)

/* Buffers of source @src: 0 the registered arena, 1 memory outside it. */
static unsigned char *src_buf(struct swap_env *env, int src, int second)
{
	unsigned char *base = src ? env->outside : env->arena[0];

	return base + (second ? NR_INJ * INJ_LEN : 0);
}

ENGINE_TEST(inject_eio_write)
{
	struct kv_swap_req reqs[NR_INJ];
	uint64_t rng = 11, off;
	unsigned int i;
	int src;

	for (src = 0; src < 2; src++) {
		off = src * MiB;
		/* old data */
		fill_random(&rng, src_buf(env, src, 0), NR_INJ * INJ_LEN);
		make_reqs(reqs, NR_INJ, src_buf(env, src, 0), off, INJ_LEN, 1);
		ASSERT_EQ(0, env_run(env, reqs, NR_INJ));
		/* new data, the third write fails */
		fill_random(&rng, src_buf(env, src, 0), NR_INJ * INJ_LEN);
		make_reqs(reqs, NR_INJ, src_buf(env, src, 0), off, INJ_LEN, 1);
		kv_swap_io_inject(env->io, KV_SWAP_INJECT_EIO, 3);
		EXPECT_EQ(-EIO, env_run(env, reqs, NR_INJ));
		for (i = 0; i < NR_INJ; i++)
			EXPECT_EQ(i == 2 ? -EIO : 0, reqs[i].res);
		/* the file has the new data but where the write failed */
		make_reqs(reqs, NR_INJ, src_buf(env, src, 1), off, INJ_LEN, 0);
		ASSERT_EQ(0, env_run(env, reqs, NR_INJ));
		EXPECT_EQ(-1, first_bad(env, reqs, NR_INJ));
		EXPECT_NE(0, memcmp(src_buf(env, src, 1) + 2 * INJ_LEN,
				    src_buf(env, src, 0) + 2 * INJ_LEN, INJ_LEN));
		/* and the engine goes on */
		make_reqs(reqs, NR_INJ, src_buf(env, src, 0), off, INJ_LEN, 1);
		EXPECT_EQ(0, env_run(env, reqs, NR_INJ));
	}
}

ENGINE_TEST(inject_eio_read)
{
	struct kv_swap_req reqs[NR_INJ];
	uint64_t rng = 12, off;
	unsigned int i;
	int src;

	for (src = 0; src < 2; src++) {
		off = 4 * MiB + src * MiB;
		fill_random(&rng, src_buf(env, src, 0), NR_INJ * INJ_LEN);
		make_reqs(reqs, NR_INJ, src_buf(env, src, 0), off, INJ_LEN, 1);
		ASSERT_EQ(0, env_run(env, reqs, NR_INJ));
		memset(src_buf(env, src, 1), 0x5a, NR_INJ * INJ_LEN);
		make_reqs(reqs, NR_INJ, src_buf(env, src, 1), off, INJ_LEN, 0);
		kv_swap_io_inject(env->io, KV_SWAP_INJECT_EIO, NR_INJ);
		EXPECT_EQ(-EIO, env_run(env, reqs, NR_INJ));
		for (i = 0; i < NR_INJ; i++)
			EXPECT_EQ(i == NR_INJ - 1 ? -EIO : 0, reqs[i].res);
		EXPECT_EQ(-1, first_bad(env, reqs, NR_INJ - 1));
		/* the failed read was not done: its buffer is as it was */
		EXPECT_EQ(0x5a, src_buf(env, src, 1)[(NR_INJ - 1) * INJ_LEN]);
		EXPECT_EQ(0x5a, src_buf(env, src, 1)[NR_INJ * INJ_LEN - 1]);
		/* armed then disarmed: nothing fails */
		kv_swap_io_inject(env->io, KV_SWAP_INJECT_EIO, 1);
		kv_swap_io_inject(env->io, KV_SWAP_INJECT_EIO, 0);
		EXPECT_EQ(0, env_run(env, reqs, NR_INJ));
		EXPECT_EQ(-1, first_bad(env, reqs, NR_INJ));
	}
}

ENGINE_TEST(inject_short)
{
	static const uint32_t lens[] = { MiB, 8192, 3 * BLK, BLK };
	struct kv_swap_req reqs[NR_INJ], req;
	uint64_t rng = 13, off;
	unsigned int i;
	int src;

	for (src = 0; src < 2; src++) {
		off = 8 * MiB + src * 2 * MiB;
		for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			fill_random(&rng, src_buf(env, src, 0), lens[i]);
			make_reqs(&req, 1, src_buf(env, src, 0), off, lens[i], 1);
			kv_swap_io_inject(env->io, KV_SWAP_INJECT_SHORT, 1);
			ASSERT_EQ(0, env_run(env, &req, 1));
			memset(src_buf(env, src, 1), 0, lens[i]);
			make_reqs(&req, 1, src_buf(env, src, 1), off, lens[i], 0);
			kv_swap_io_inject(env->io, KV_SWAP_INJECT_SHORT, 1);
			ASSERT_EQ(0, env_run(env, &req, 1));
			EXPECT_EQ(-1, first_bad(env, &req, 1));
			/* one block cannot be split: it goes whole */
			env->want.short_retries += lens[i] > BLK ? 2 : 0;
		}
		/* in the middle of a batch */
		fill_random(&rng, src_buf(env, src, 0), NR_INJ * INJ_LEN);
		make_reqs(reqs, NR_INJ, src_buf(env, src, 0), off, INJ_LEN, 1);
		kv_swap_io_inject(env->io, KV_SWAP_INJECT_SHORT, 5);
		ASSERT_EQ(0, env_run(env, reqs, NR_INJ));
		make_reqs(reqs, NR_INJ, src_buf(env, src, 1), off, INJ_LEN, 0);
		kv_swap_io_inject(env->io, KV_SWAP_INJECT_SHORT, 4);
		ASSERT_EQ(0, env_run(env, reqs, NR_INJ));
		EXPECT_EQ(-1, first_bad(env, reqs, NR_INJ));
		env->want.short_retries += 2;
	}
}

static unsigned int bits_differ(const unsigned char *a, const unsigned char *b, size_t len)
{
	unsigned int n = 0;
	size_t i;

	for (i = 0; i < len; i++)
		n += __builtin_popcount(a[i] ^ b[i]);
	return n;
}

ENGINE_TEST(inject_flip)
{
	const uint32_t len = 256 * 1024;
	struct kv_swap_req reqs[3];
	unsigned char *w, *r, *r2;
	uint64_t rng = 14, off = 16 * MiB;
	uint32_t crc;
	int src;

	for (src = 0; src < 2; src++) {
		w = src_buf(env, src, 0);
		r = src_buf(env, src, 1);
		r2 = r + len;
		fill_random(&rng, w, len);
		crc = crc32c(0, w, len);
		make_reqs(reqs, 1, w, off, len, 1);
		ASSERT_EQ(0, env_run(env, reqs, 1));
		/* the read succeeds, and the checksum catches the flipped bit */
		make_reqs(reqs, 1, r, off, len, 0);
		kv_swap_io_inject(env->io, KV_SWAP_INJECT_FLIP, 1);
		ASSERT_EQ(0, env_run(env, reqs, 1));
		EXPECT_NE(crc, crc32c(0, r, len));
		EXPECT_EQ(1, bits_differ(w, r, len));
		/* read again: intact */
		ASSERT_EQ(0, env_run(env, reqs, 1));
		EXPECT_EQ(crc, crc32c(0, r, len));
		/* FLIP counts reads: the second read, not the write before it */
		fill_random(&rng, w, len);
		crc = crc32c(0, w, len);
		make_reqs(reqs, 1, w, off, len, 1);
		ASSERT_EQ(0, env_run(env, reqs, 1));
		reqs[0].off = off + len;
		reqs[1] = (struct kv_swap_req){ .buf = r, .off = off, .len = len };
		reqs[2] = (struct kv_swap_req){ .buf = r2, .off = off, .len = len };
		kv_swap_io_inject(env->io, KV_SWAP_INJECT_FLIP, 2);
		ASSERT_EQ(0, env_run(env, reqs, 3));
		EXPECT_EQ(0, bits_differ(w, r, len));
		EXPECT_EQ(1, bits_differ(w, r2, len));
		EXPECT_EQ(crc, crc32c(0, r, len));
		EXPECT_NE(crc, crc32c(0, r2, len));
	}
}

/* Bad requests fail alone; reads past the end of the file fail with -EIO. */
ENGINE_TEST(bad_requests)
{
	unsigned char *a = env->arena[1];
	struct kv_swap_req reqs[] = {
		{ .buf = a, .off = 0, .len = BLK, .write = 1 },
		{ .buf = a + 512, .off = BLK, .len = BLK },
		{ .buf = a, .off = 512, .len = BLK },
		{ .buf = a, .off = BLK, .len = 0 },
		{ .buf = a, .off = BLK, .len = 6000 },
		{ .buf = NULL, .off = BLK, .len = BLK },
		{ .buf = a + BLK, .off = 2 * BLK, .len = BLK },
	};
	unsigned int i, n = sizeof(reqs) / sizeof(reqs[0]);
	struct kv_swap_req eof[2];

	memset(a, 0x3c, BLK);
	EXPECT_EQ(-EINVAL, env_run(env, reqs, n));
	for (i = 0; i < n; i++)
		EXPECT_EQ(i == 0 || i == n - 1 ? 0 : -EINVAL, reqs[i].res);
	EXPECT_EQ(-1, first_bad(env, &reqs[n - 1], 1));
	/* at the end of the file; across it: a real short read, then 0 bytes */
	make_reqs(&eof[0], 1, a, FILE_BYTES, BLK, 0);
	make_reqs(&eof[1], 1, a + BLK, FILE_BYTES - BLK, 2 * BLK, 0);
	EXPECT_EQ(-EIO, env_run(env, eof, 2));
	EXPECT_EQ(-EIO, eof[0].res);
	EXPECT_EQ(-EIO, eof[1].res);
	env->want.short_retries++;
	/* no batch at all */
	EXPECT_EQ(0, kv_swap_io_run(env->io, reqs, 0));
}

/* ---- engine choice and registration --------------------------------------- */

TEST(auto_engine)
{
	struct kv_swap_req req;
	struct swap_env env;
	struct kv_swap_io *uring;
	int err;

	if (!env_open(_metadata, &env, KV_SWAP_ENGINE_AUTO))
		return;
	err = kv_swap_io_create(env.fd, KV_SWAP_ENGINE_IO_URING, NULL, 0, &uring);
	TH_LOG("io_uring: %s; auto picked %s", err ? strerror(-err) : "allowed",
	       kv_swap_io_engine(env.io));
	EXPECT_STREQ(err ? "psync" : "io_uring", kv_swap_io_engine(env.io));
	if (!err) {
		EXPECT_EQ(0, kv_swap_io_registered(uring));
		kv_swap_io_destroy(uring);
	}
	fill_random(&(uint64_t){ 1 }, env.arena[0], MiB);
	make_reqs(&req, 1, env.arena[0], 0, MiB, 1);
	EXPECT_EQ(0, env_run(&env, &req, 1));
	make_reqs(&req, 1, env.outside, 0, MiB, 0);
	EXPECT_EQ(0, env_run(&env, &req, 1));
	EXPECT_EQ(-1, first_bad(&env, &req, 1));
	env_check_stats(_metadata, &env);
	env_close(&env);
}

TEST(psync_never_registers)
{
	struct swap_env env;

	if (!env_open(_metadata, &env, KV_SWAP_ENGINE_PSYNC))
		return;
	EXPECT_EQ(0, kv_swap_io_registered(env.io));
	env_close(&env);
}

/* io_uring registers the arenas where it can, and works without them where it cannot. */
TEST(uring_registration)
{
	struct swap_env env;
	struct kv_swap_io *io;
	struct kv_swap_req req;
	struct iovec gone;
	void *hole;

	if (!env_open(_metadata, &env, KV_SWAP_ENGINE_IO_URING))
		return;
	TH_LOG("two 16 MiB arenas %s", kv_swap_io_registered(env.io) ?
	       "registered" : "not registered (RLIMIT_MEMLOCK?)");
	/* memory that cannot be accessed cannot be registered */
	hole = mmap(NULL, 2 * MiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, hole);
	gone = (struct iovec){ hole, 2 * MiB };
	ASSERT_EQ(0, kv_swap_io_create(env.fd, KV_SWAP_ENGINE_IO_URING, &gone, 1, &io));
	EXPECT_EQ(0, kv_swap_io_registered(io));
	fill_random(&(uint64_t){ 2 }, env.outside, MiB);
	make_reqs(&req, 1, env.outside, 3 * MiB, MiB, 1);
	EXPECT_EQ(0, kv_swap_io_run(io, &req, 1));
	make_reqs(&req, 1, env.arena[1], 3 * MiB, MiB, 0);
	EXPECT_EQ(0, kv_swap_io_run(io, &req, 1));
	EXPECT_EQ(0, memcmp(env.outside, env.arena[1], MiB));
	kv_swap_io_destroy(io);
	munmap(hole, 2 * MiB);
	env_close(&env);
}

/*
 * Fixed buffers where RLIMIT_MEMLOCK is small (8 MiB is common for users
 * without CAP_IPC_LOCK, too little for the 16 MiB arenas): two 1 MiB
 * arenas, random batches of transfers up to 128 KiB, on the threads of
 * several callers.
 */
TEST(uring_fixed_small)
{
	struct worker *w = calloc(NR_WORKERS, sizeof(*w));
	pthread_t t[NR_WORKERS];
	struct swap_env env;
	unsigned int i;

	ASSERT_NE_NULL(w);
	if (!env_open_sized(_metadata, &env, KV_SWAP_ENGINE_IO_URING, MiB)) {
		free(w);
		return;
	}
	if (!kv_swap_io_registered(env.io)) {
		env_close(&env);
		free(w);
		SKIP(return, "io_uring would not register 2 MiB of buffers");
	}
	for (i = 0; i < NR_WORKERS; i++) {
		worker_init(&w[i], &env, i, NR_WORKERS);
		w[i].max_len = 128 * 1024;
		ASSERT_EQ(0, pthread_create(&t[i], NULL, worker_thread, &w[i]));
	}
	for (i = 0; i < NR_WORKERS; i++) {
		pthread_join(t[i], NULL);
		EXPECT_STREQ("", w[i].fail);
		worker_done(&env, &w[i]);
	}
	env_check_stats(_metadata, &env);
	env_close(&env);
	free(w);
}

TEST(create_bad_args)
{
	struct kv_swap_io *io = NULL;

	EXPECT_EQ(-EINVAL, kv_swap_io_create(-1, KV_SWAP_ENGINE_PSYNC, NULL, 0, &io));
	EXPECT_EQ(-EINVAL, kv_swap_io_create(0, 7, NULL, 0, &io));
	EXPECT_EQ(-EINVAL, kv_swap_io_create(0, KV_SWAP_ENGINE_PSYNC, NULL, 1, &io));
	EXPECT_NULL(io);
	kv_swap_io_destroy(NULL);
}

/* ---- CRC-32C --------------------------------------------------------------- */

TEST(crc32c_vectors)
{
	unsigned char buf[32];
	unsigned int i;

	TH_LOG("crc32c: %s", crc32c_hw_supported() ? "SSE4.2" : "table");
	EXPECT_EQ(0xe3069283u, crc32c(0, "123456789", 9));
	EXPECT_EQ(0xe3069283u, crc32c_sw(0, "123456789", 9));
	EXPECT_EQ(0xe3069283u, crc32c_hw(0, "123456789", 9));
	EXPECT_EQ(0u, crc32c(0, NULL, 0));
	/* RFC 3720, B.4 */
	memset(buf, 0, sizeof(buf));
	EXPECT_EQ(0x8a9136aau, crc32c(0, buf, 32));
	memset(buf, 0xff, sizeof(buf));
	EXPECT_EQ(0x62a8ab43u, crc32c(0, buf, 32));
	for (i = 0; i < 32; i++)
		buf[i] = i;
	EXPECT_EQ(0x46dd794eu, crc32c(0, buf, 32));
	for (i = 0; i < 32; i++)
		buf[i] = 31 - i;
	EXPECT_EQ(0x113fdb5cu, crc32c(0, buf, 32));
	/* in pieces */
	EXPECT_EQ(0xe3069283u, crc32c(crc32c(0, "1234", 4), "56789", 5));
	EXPECT_EQ(0xe3069283u, crc32c_sw(crc32c_hw(0, "12345", 5), "6789", 4));
}

TEST(crc32c_paths_agree)
{
	const size_t max = 3 * 65536;
	unsigned char *buf = malloc(max + 64);
	uint64_t rng = 15;
	size_t len, align, cut;
	uint32_t sw, hw;
	unsigned int i;

	ASSERT_NE_NULL(buf);
	fill_random(&rng, buf, max + 64);
	if (!crc32c_hw_supported())
		TH_LOG("no SSE4.2: crc32c_hw() is the table too");
	for (i = 0; i < 2000; i++) {
		align = rnd_below(&rng, 64);
		len = i < 100 ? i : rnd_below(&rng, i & 1 ? 300 : max);
		sw = crc32c_sw(i, buf + align, len);
		hw = crc32c_hw(i, buf + align, len);
		if (sw != hw) {
			TH_LOG("len %zu align %zu seed %u: sw %08x hw %08x", len, align, i, sw, hw);
			EXPECT_EQ(sw, hw);
			break;
		}
		cut = len ? rnd_below(&rng, len + 1) : 0;
		EXPECT_EQ(sw, crc32c(crc32c(i, buf + align, cut), buf + align + cut, len - cut));
		EXPECT_EQ(crc32c(0, buf + align, len),
			  crc32c_combine(crc32c(0, buf + align, cut),
					 crc32c(0, buf + align + cut, len - cut), len - cut));
	}
	free(buf);
}

TEST_HARNESS_MAIN
