// SPDX-License-Identifier: MIT
/*
 * The swap tier (mm/swapfile.c) through the mm: block contents survive
 * device -> host -> swap -> device; memory pressure cascades down to swap
 * and activation brings blocks back; injected I/O errors, short transfers
 * and flipped bits are detected, reported and lose nothing; a full swap
 * area fails allocations cleanly; cached prefixes are found in swap. Every
 * test runs on both engines (io_uring where the machine allows it, and
 * psync) and ends with kv_pool_check().
 */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "kselftest_harness.h"
#include "seccomp_refuse.h"

struct kv_pool;
static char *device_base(struct kv_pool *pool);
#define TEST_DEVICE_BASE(pool)	device_base(pool)
#include "../mm/mm_test.h"
#include "mm/internal.h"
#include "mm/swap_io.h"

/*
 * A device tier the CPU cannot address, as GPU memory is: the cpu
 * backend's memfd arena with its address kept from the mm (t->base NULL)
 * and copies done here, so that swap I/O must bounce through host frames
 * (mm/tier.c) as it does with the cuda backend. One such pool at a time.
 */
static struct {
	struct kv_tier *tier;
	char *base;
} hidden;

static char *device_base(struct kv_pool *pool)
{
	if (hidden.tier && hidden.tier->pool == pool)
		return hidden.base;
	return kv_pool_frame_addr(pool, KV_TIER_DEVICE, 0);
}

static int hidden_create(struct kv_tier *t)
{
	int err = kv_cpu_device_ops.arena_create(t);

	if (err)
		return err;
	hidden.tier = t;
	hidden.base = t->base;
	t->base = NULL;
	return 0;
}

static void hidden_destroy(struct kv_tier *t)
{
	t->base = hidden.base;
	hidden.tier = NULL;
	kv_cpu_device_ops.arena_destroy(t);
}

static char *hidden_frame(struct kv_pool *pool, u32 tier, u32 frame)
{
	char *base = tier == KV_TIER_DEVICE ? hidden.base : pool->tier[tier].base;

	return base ? base + (u64)frame * pool->frame_bytes : NULL;
}

/*
 * Copies into the device are done when waited for, the others when
 * submitted (a GPU's copies run on its streams at any time in between):
 * a bounce frame reused while a copy out of it (to the device) or into it
 * (from the device) is pending shows as wrong contents.
 */
struct hidden_batch {
	u32 n;
	struct kv_copy c[];
};

static int hidden_submit(struct kv_pool *pool, const struct kv_copy *c, u32 n, void **cookie)
{
	struct hidden_batch *hb;
	u32 i;

	*cookie = NULL;
	for (i = 0; i < n; i++)
		if (!hidden_frame(pool, c[i].src_tier, c[i].src_frame) ||
		    !hidden_frame(pool, c[i].dst_tier, c[i].dst_frame) ||
		    c[i].src_tier == KV_TIER_SWAP || c[i].dst_tier == KV_TIER_SWAP)
			return -EOPNOTSUPP;	/* swap must come bounced */
	hb = malloc(sizeof(*hb) + n * sizeof(*c));
	if (!hb)
		return -ENOMEM;
	hb->n = 0;
	for (i = 0; i < n; i++) {
		if (c[i].dst_tier == KV_TIER_DEVICE)
			hb->c[hb->n++] = c[i];
		else
			memcpy(hidden_frame(pool, c[i].dst_tier, c[i].dst_frame),
			       hidden_frame(pool, c[i].src_tier, c[i].src_frame),
			       pool->frame_bytes);
	}
	*cookie = hb;
	return 0;
}

static int hidden_wait(struct kv_pool *pool, void *cookie)
{
	struct hidden_batch *hb = cookie;
	u32 i;

	for (i = 0; hb && i < hb->n; i++)
		memcpy(hidden_frame(pool, hb->c[i].dst_tier, hb->c[i].dst_frame),
		       hidden_frame(pool, hb->c[i].src_tier, hb->c[i].src_frame),
		       pool->frame_bytes);
	free(hb);
	return 0;
}

static struct kv_tier_ops hidden_ops;

/* A swap file in $TMPDIR (or /var/tmp), opened O_DIRECT and unlinked. */
static int swap_file(void)
{
	const char *dirs[] = { getenv("TMPDIR"), "/var/tmp", "/tmp" };
	char path[256];
	unsigned int i;
	int fd;

	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if (!dirs[i])
			continue;
		snprintf(path, sizeof(path), "%s/kvmem-swap-XXXXXX", dirs[i]);
		fd = mkstemp(path);
		if (fd < 0)
			continue;
		close(fd);
		fd = open(path, O_RDWR | O_DIRECT);
		unlink(path);
		if (fd >= 0)
			return fd;
	}
	return -1;
}

static struct kv_pool *swap_pool_ops(u32 dev, u32 host, u32 swap, u32 engine, int *fd,
				     const struct kv_tier_ops *device)
{
	struct kv_pool_params p = {
		.name = "swap", .geom = test_geom, .nr_frames = { dev, host, swap },
		.flags = KV_POOL_NO_KVSWAPD, .vm = { .min_free_kbytes = 4 },
	};
	struct kv_pool *pool = NULL;

	*fd = swap_file();
	if (*fd < 0)
		return NULL;
	p.ops[KV_TIER_DEVICE] = device;
	p.swap = (struct kv_swap_params){ .fd = *fd, .offset = 0, .engine = engine };
	if (kv_pool_create(&p, &pool)) {
		close(*fd);
		return NULL;
	}
	return pool;
}

static struct kv_pool *swap_pool(u32 dev, u32 host, u32 swap, u32 engine, int *fd)
{
	return swap_pool_ops(dev, host, swap, engine, fd, NULL);
}

static void swap_pool_done(struct kv_pool *pool, int fd)
{
	kv_pool_destroy(pool);
	close(fd);
}

static u32 tier_used(struct kv_pool *pool, int tier)
{
	struct kv_meminfo mi;

	kv_pool_meminfo(pool, &mi);
	return mi.tier[tier].total - mi.tier[tier].free;
}

/*
 * SWAP_TEST(name) defines name_io_uring and name_psync: the body runs on a
 * pool of 16 device, 16 host and 64 swap frames served by that engine.
 */
typedef void (*swap_body_t)(struct __test_metadata *_metadata, struct kv_pool *pool);

static void swap_run(struct __test_metadata *_metadata, u32 engine, swap_body_t body)
{
	struct kv_pool *pool;
	int fd;

	pool = swap_pool(16, 16, 64, engine, &fd);
	if (!pool && engine == KV_SWAP_IO_URING)
		SKIP(return, "io_uring refused here, or no O_DIRECT directory");
	ASSERT_NE_NULL(pool);
	body(_metadata, pool);
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

#define SWAP_TEST(name)								\
	static void name##_body(struct __test_metadata *_metadata, struct kv_pool *pool); \
	TEST(name##_io_uring) { swap_run(_metadata, KV_SWAP_IO_URING, name##_body); }	\
	TEST(name##_psync) { swap_run(_metadata, KV_SWAP_PSYNC, name##_body); }	\
	static void name##_body(struct __test_metadata *_metadata, struct kv_pool *pool)

/* Sequences of @n tokens each, contents from @seed, all deactivated. */
static int fill(struct kv_pool *pool, struct kv_seq **seq, u32 (*vals)[64], u32 nseq, u32 n,
		u32 seed)
{
	u32 i, j;
	int err;

	for (i = 0; i < nseq; i++) {
		for (j = 0; j < n; j++)
			vals[i][j] = seed * 1000003u + i * 7919u + j;
		err = kv_seq_create(pool, &seq[i]);
		err = err ?: kv_seq_activate(seq[i], 0);
		err = err ?: seq_append_vals(pool, seq[i], vals[i], n, 0);
		if (err)
			return err;
		kv_seq_deactivate(seq[i]);
	}
	return 0;
}

/* Activate, verify and deactivate every sequence; frees them when @free. */
static int verify_all(struct kv_seq **seq, u32 (*vals)[64], u32 nseq, bool free_them)
{
	u32 i;
	int err;

	for (i = 0; i < nseq; i++) {
		err = kv_seq_activate(seq[i], 0);
		if (err)
			return err;
		if (seq_verify(seq[i], vals[i]) != -1)
			return -EUCLEAN;
		kv_seq_deactivate(seq[i]);
		if (free_them)
			kv_seq_free(seq[i]);
	}
	return 0;
}

SWAP_TEST(contents_survive_every_tier)
{
	static u32 vals[4][64];
	struct kv_seq *seq[4];

	ASSERT_EQ(0, fill(pool, seq, vals, 4, 12, 1));
	EXPECT_EQ(12u, kv_reclaim(pool, KV_TIER_DEVICE, 100));
	EXPECT_EQ(12u, kv_reclaim(pool, KV_TIER_HOST, 100));
	EXPECT_EQ(12u, tier_used(pool, KV_TIER_SWAP));
	EXPECT_EQ(12u, (u32)kv_vmstat_read(pool, KV_PSWPOUT));
	EXPECT_POOL_OK(pool);
	/* Straight from swap to the device. */
	ASSERT_EQ(0, verify_all(seq, vals, 4, false));
	EXPECT_EQ(12u, (u32)kv_vmstat_read(pool, KV_PSWPIN));
	EXPECT_EQ(0u, tier_used(pool, KV_TIER_SWAP));
	EXPECT_POOL_OK(pool);
	ASSERT_EQ(0, verify_all(seq, vals, 4, true));
}

/* More than device and host hold: allocations push blocks down to swap. */
SWAP_TEST(pressure_reaches_swap)
{
	static u32 vals[10][64];
	struct kv_seq *seq[10];

	ASSERT_EQ(0, fill(pool, seq, vals, 10, 16, 2));	/* 40 blocks */
	EXPECT_LT(0u, tier_used(pool, KV_TIER_SWAP));
	EXPECT_LT(0u, (u32)kv_vmstat_read(pool, KV_PSWPOUT));
	EXPECT_POOL_OK(pool);
	ASSERT_EQ(0, verify_all(seq, vals, 10, false));
	EXPECT_LT(0u, (u32)kv_vmstat_read(pool, KV_PSWPIN));
	ASSERT_EQ(0, verify_all(seq, vals, 10, true));
}

/* Write errors: reclaim to swap fails, the blocks stay where they were. */
SWAP_TEST(write_errors_lose_nothing)
{
	static u32 vals[2][64];
	struct kv_seq *seq[2];

	ASSERT_EQ(0, fill(pool, seq, vals, 2, 16, 3));
	EXPECT_EQ(8u, kv_reclaim(pool, KV_TIER_DEVICE, 100));
	ASSERT_EQ(0, kv_pool_swap_inject(pool, KV_SWAP_INJECT_EIO, 3));
	EXPECT_EQ(0u, kv_reclaim(pool, KV_TIER_HOST, 100));
	EXPECT_EQ(0u, tier_used(pool, KV_TIER_SWAP));
	EXPECT_LT(0u, (u32)kv_vmstat_read(pool, KV_SWAP_FAIL));
	EXPECT_POOL_OK(pool);
	/* A short write is finished by the engine: the data arrives whole. */
	ASSERT_EQ(0, kv_pool_swap_inject(pool, KV_SWAP_INJECT_SHORT, 2));
	EXPECT_EQ(8u, kv_reclaim(pool, KV_TIER_HOST, 100));
	ASSERT_EQ(0, verify_all(seq, vals, 2, true));
}

/* Read errors and flipped bits fail the activation with -EIO, and only it. */
SWAP_TEST(read_errors_and_flipped_bits_are_caught)
{
	static u32 vals[2][64];
	struct kv_seq *seq[2];
	u32 what[2] = { KV_SWAP_INJECT_EIO, KV_SWAP_INJECT_FLIP }, k;

	ASSERT_EQ(0, fill(pool, seq, vals, 2, 16, 4));
	for (k = 0; k < 2; k++) {
		kv_reclaim(pool, KV_TIER_DEVICE, 100);
		kv_reclaim(pool, KV_TIER_HOST, 100);
		ASSERT_EQ(8u, tier_used(pool, KV_TIER_SWAP));
		ASSERT_EQ(0, kv_pool_swap_inject(pool, what[k], 2));
		EXPECT_EQ(-EIO, kv_seq_activate(seq[0], 0));
		EXPECT_FALSE(kv_seq_is_active(seq[0]));
		EXPECT_POOL_OK(pool);
		/* The slot on the device is intact: the next try succeeds. */
		ASSERT_EQ(0, verify_all(seq, vals, 2, false));
	}
	EXPECT_LE(2u, (u32)kv_vmstat_read(pool, KV_SWAP_FAIL));
	kv_seq_free(seq[0]);
	kv_seq_free(seq[1]);
}

/* A pool of 32 device frames in the hidden tier, @host host frames, 64 swap slots. */
static struct kv_pool *hidden_pool(u32 host, u32 engine, int *fd)
{
	hidden_ops = kv_cpu_device_ops;
	hidden_ops.name = "hidden";
	hidden_ops.arena_create = hidden_create;
	hidden_ops.arena_destroy = hidden_destroy;
	hidden_ops.copy_submit = hidden_submit;
	hidden_ops.copy_wait = hidden_wait;
	hidden_ops.arena_export = NULL;
	return swap_pool_ops(32, host, 64, engine, fd, &hidden_ops);
}

/*
 * A device tier the CPU cannot address (GPU memory) whose copies complete
 * when waited for: every copy between it and swap goes through the bounce
 * frames (one per 8 of the @host frames), in parts when a batch is larger
 * than they are, the two halves of them taking turns (one frame: in turn);
 * contents survive both ways and with injected errors.
 */
static void hidden_run(struct __test_metadata *_metadata, u32 engine, u32 host)
{
	static u32 vals[8][64];
	struct kv_seq *seq[8];
	struct kv_meminfo mi;
	struct kv_pool *pool;
	u32 out;
	int fd;

	pool = hidden_pool(host, engine, &fd);
	if (!pool && engine == KV_SWAP_IO_URING)
		SKIP(return, "io_uring refused here, or no O_DIRECT directory");
	ASSERT_NE_NULL(pool);
	ASSERT_NULL(kv_pool_frame_addr(pool, KV_TIER_DEVICE, 0));
	/* host / 8 of the host frames carry the bounces. */
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(host - host / 8, mi.tier[KV_TIER_HOST].free);
	EXPECT_EQ(host / 8, mi.bounce);
	ASSERT_EQ(0, fill(pool, seq, vals, 8, 12, 9));		/* 24 blocks */
	/* Device to host, then host to swap: the bounce frames stay put. */
	ASSERT_EQ(14u, kv_reclaim(pool, KV_TIER_DEVICE, 14));
	ASSERT_LT(0u, kv_reclaim(pool, KV_TIER_HOST, 100));
	out = tier_used(pool, KV_TIER_SWAP);
	ASSERT_LT(8u, out);		/* more than one batch of bounce frames */
	EXPECT_EQ(out, (u32)kv_vmstat_read(pool, KV_PSWPOUT));
	EXPECT_POOL_OK(pool);
	/* Straight from swap to the device, bounced. */
	ASSERT_EQ(0, verify_all(seq, vals, 8, false));
	EXPECT_EQ(out, (u32)kv_vmstat_read(pool, KV_PSWPIN));
	/* A flipped bit on the way in is still caught. */
	kv_reclaim(pool, KV_TIER_DEVICE, 100);
	kv_reclaim(pool, KV_TIER_HOST, 100);
	ASSERT_EQ(0, kv_pool_swap_inject(pool, KV_SWAP_INJECT_FLIP, 1));
	EXPECT_EQ(-EIO, kv_seq_activate(seq[0], 0));
	EXPECT_POOL_OK(pool);
	ASSERT_EQ(0, verify_all(seq, vals, 8, true));
	EXPECT_POOL_OK(pool);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(host - host / 8, mi.tier[KV_TIER_HOST].free);
	swap_pool_done(pool, fd);
}

TEST(device_without_cpu_address_bounces_io_uring)
{
	hidden_run(_metadata, KV_SWAP_IO_URING, 16);
}

TEST(device_without_cpu_address_bounces_psync)
{
	hidden_run(_metadata, KV_SWAP_PSYNC, 16);
}

TEST(device_without_cpu_address_one_bounce_frame)
{
	hidden_run(_metadata, KV_SWAP_PSYNC, 15);
}

/* five bounce frames: parts of three and two, in turn */
TEST(device_without_cpu_address_five_bounce_frames)
{
	hidden_run(_metadata, KV_SWAP_IO_URING, 40);
}

/* Such a device tier cannot reach swap without a host tier. */
TEST(device_without_cpu_address_needs_a_host_tier)
{
	struct kv_pool *pool;
	int fd;

	pool = hidden_pool(0, KV_SWAP_PSYNC, &fd);
	EXPECT_NULL(pool);
	if (pool)
		swap_pool_done(pool, fd);
}

/* A pool's placement puts the swap I/O threads on its CPUs, as kvswapd. */
TEST(io_threads_follow_the_placement)
{
	struct kv_pool_params p = {
		.name = "swap", .geom = test_geom, .nr_frames = { 16, 16, 64 },
		.flags = KV_POOL_NO_KVSWAPD, .vm = { .min_free_kbytes = 4 },
	};
	struct kv_placement pl = { .numa_node = -1 };
	struct kv_pool *pool = NULL;
	int fd = swap_file(), cpu, bad, n;
	char want[16];
	cpu_set_t set;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, sched_getaffinity(0, sizeof(set), &set));
	for (cpu = CPU_SETSIZE - 1; cpu >= 0 && !CPU_ISSET(cpu, &set); cpu--)
		;
	ASSERT_LE(0, cpu);
	CPU_ZERO(&pl.cpus);
	CPU_SET(cpu, &pl.cpus);
	snprintf(want, sizeof(want), "%d", cpu);
	p.place = &pl;
	p.swap = (struct kv_swap_params){ .fd = fd, .offset = 0, .engine = KV_SWAP_PSYNC };
	ASSERT_EQ(0, kv_pool_create(&p, &pool));
	n = threads_named("kvswapio/", want, &bad);
	EXPECT_LT(0, n);
	EXPECT_EQ(0, bad);
	kv_pool_destroy(pool);
	EXPECT_EQ(0, threads_named("kvswapio/", NULL, &bad));
	close(fd);
}

/* With no host tier, the device demotes straight to swap. */
TEST(no_host_tier)
{
	static u32 vals[6][64];
	struct kv_seq *seq[6];
	struct kv_pool *pool;
	int fd;

	pool = swap_pool(16, 0, 64, KV_SWAP_PSYNC, &fd);
	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, fill(pool, seq, vals, 6, 16, 11));		/* 24 blocks, 16 frames */
	EXPECT_LT(0u, tier_used(pool, KV_TIER_SWAP));
	EXPECT_POOL_OK(pool);
	ASSERT_EQ(0, verify_all(seq, vals, 6, true));
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/*
 * Where fallocate() is not supported the swap area is a file of the right
 * length, allocated as it is written; where io_uring is refused the auto
 * engine is psync. Contents survive every tier either way.
 */
TEST(no_fallocate_no_io_uring)
{
	static u32 vals[6][64];
	struct kv_seq *seq[6];
	struct kv_pool *pool;
	struct stat st;
	int fd, err;

	/* as a file system that cannot allocate ahead, and a container's seccomp profile */
	err = kvt_refuse((const struct kvt_refusal[]){
		{ __NR_fallocate, KVT_ANY_ARG, EOPNOTSUPP },
		{ __NR_io_uring_setup, KVT_ANY_ARG, EPERM } }, 2);
	if (err)
		SKIP(return, "no seccomp filter here: %s", strerror(-err));
	pool = swap_pool(16, 16, 64, KV_SWAP_AUTO, &fd);
	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, fstat(fd, &st));
	EXPECT_EQ((off_t)(64 * pool->frame_bytes), st.st_size);
	EXPECT_EQ(0, st.st_blocks);			/* a length, nothing allocated */
	ASSERT_NE_NULL(pool->tier[KV_TIER_SWAP].desc);
	EXPECT_NE_NULL(strstr(pool->tier[KV_TIER_SWAP].desc, "psync"));
	ASSERT_EQ(0, fill(pool, seq, vals, 6, 16, 12));	/* 24 blocks */
	kv_reclaim(pool, KV_TIER_DEVICE, 100);
	kv_reclaim(pool, KV_TIER_HOST, 100);
	EXPECT_LT(0u, tier_used(pool, KV_TIER_SWAP));
	ASSERT_EQ(0, fstat(fd, &st));
	EXPECT_LT(0, st.st_blocks);
	ASSERT_EQ(0, verify_all(seq, vals, 6, true));
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/* A full swap area: allocations fail with -ENOMEM, contents stay. */
TEST(swap_full)
{
	static u32 vals[12][64];
	struct kv_seq *seq[12];
	struct kv_pool *pool;
	u32 i;
	int fd, err = 0;

	pool = swap_pool(8, 8, 8, KV_SWAP_PSYNC, &fd);
	ASSERT_NE_NULL(pool);
	for (i = 0; i < 12 && !err; i++)
		err = fill(pool, &seq[i], &vals[i], 1, 16, 5 + i);	/* 4 blocks each */
	EXPECT_EQ(-ENOMEM, err);
	EXPECT_POOL_OK(pool);
	i--;			/* the one that failed holds no tokens */
	EXPECT_EQ(0u, kv_seq_tokens(seq[i]));
	kv_seq_free(seq[i]);
	EXPECT_EQ(0, verify_all(seq, vals, i, true));
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/*
 * In a child with a mount namespace of its own: a pool whose swap tier
 * (1024 frames of test_geom) is larger than a 1 MiB tmpfs, on a new file
 * and (@sparse) on one already that long with nothing allocated. Exit
 * status: kv_pool_create()'s errno, 0 when it took the area, 200 + the
 * step that could not be set up.
 */
static int create_on_full_disk(bool sparse)
{
	struct kv_pool_params p = {
		.name = "full", .geom = test_geom, .nr_frames = { 8, 0, 1024 },
		.flags = KV_POOL_NO_KVSWAPD, .vm = { .min_free_kbytes = 4 },
	};
	char dir[] = "/tmp/kvmem-full-XXXXXX", path[64];
	struct kv_pool *pool;
	int status, fd, err;
	pid_t pid = fork();

	if (pid == 0) {
		if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
			_exit(201);
		if (!mkdtemp(dir) || mount("tmpfs", dir, "tmpfs", 0, "size=1M"))
			_exit(202);
		snprintf(path, sizeof(path), "%s/swap", dir);
		fd = open(path, O_RDWR | O_CREAT, 0600);
		if (fd < 0 || (sparse && ftruncate(fd, 1024 * kv_frame_bytes(&test_geom))))
			_exit(203);
		p.swap = (struct kv_swap_params){ .fd = fd, .engine = KV_SWAP_PSYNC };
		err = kv_pool_create(&p, &pool);
		if (!err)
			kv_pool_destroy(pool);
		_exit(-err);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	rmdir(dir);
	return WEXITSTATUS(status);
}

/*
 * A swap area the disk has no room for is refused when the pool is made
 * (-ENOSPC), not found out by every swap-out: also where the file is long
 * enough already but sparse.
 */
TEST(swap_area_without_room_is_refused)
{
	int ret;

	if (geteuid())
		SKIP(return, "needs root to mount a small tmpfs");
	ret = create_on_full_disk(false);
	if (ret > 200)
		SKIP(return, "no mount namespace here (step %d)", ret - 200);
	EXPECT_EQ(ENOSPC, ret);
	EXPECT_EQ(ENOSPC, create_on_full_disk(true));
}

/* Cache @n tokens of ids @ids (their KV markers: the ids) and let them go. */
static int cache_ids(struct kv_pool *pool, const u32 *ids, u32 n)
{
	struct kv_seq *s;
	u64 slots[64];
	u32 i;
	int err;

	if (n > 64 || kv_seq_create(pool, &s))
		return -EINVAL;
	err = kv_seq_activate(s, 0);
	err = err ?: kv_seq_append_ids(s, n, ids, slots, 0);
	for (i = 0; !err && i < n; i++)
		tok_write(pool, slots[i], ids[i]);
	kv_seq_deactivate(s);
	kv_seq_free(s);
	return err;
}

/*
 * Start a sequence on the cached prefix of @ids, bring it to the device and
 * check its KV, then let it go. Returns the tokens matched, or an error
 * (the activation's, or -EUCLEAN when the KV read back is not the ids').
 */
static int reuse_ids(struct kv_pool *pool, const u32 *ids, u32 n, struct kv_prefix_hit *hit)
{
	struct kv_seq *s;
	int m, err;

	if (kv_seq_create(pool, &s))
		return -ENOMEM;
	m = kv_prefix_match(s, ids, n, hit);
	err = m >= 0 ? kv_seq_activate(s, 0) : 0;
	if (err)
		m = err;
	if (m >= 0 && seq_verify(s, ids) != -1)
		m = -EUCLEAN;
	kv_seq_deactivate(s);
	kv_seq_free(s);
	return m;
}

/* Everything down to swap: the device tier's blocks, then the host tier's. */
static void push_to_swap(struct kv_pool *pool)
{
	kv_reclaim(pool, KV_TIER_DEVICE, 100);
	kv_reclaim(pool, KV_TIER_HOST, 100);
}

/* A cached prompt pushed down to swap is found there and comes back whole. */
TEST(prefix_hits_in_swap)
{
	static u32 vals[8][64];
	u32 ids[32], i;
	struct kv_seq *seq[8];
	struct kv_prefix_hit hit;
	struct kv_pool *pool;
	int fd;

	pool = swap_pool(16, 8, 64, KV_SWAP_AUTO, &fd);
	ASSERT_NE_NULL(pool);
	for (i = 0; i < 32; i++)
		ids[i] = 70000 + i;
	ASSERT_EQ(0, cache_ids(pool, ids, 32));
	ASSERT_EQ(0, fill(pool, seq, vals, 8, 16, 6));		/* 32 more blocks */
	push_to_swap(pool);
	EXPECT_EQ(32, reuse_ids(pool, ids, 32, &hit));
	EXPECT_LT(0u, hit.tier_tokens[KV_TIER_SWAP]);
	EXPECT_LT(0u, (u32)kv_vmstat_read(pool, KV_PREFIX_HIT_TOKENS_SWAP));
	ASSERT_EQ(0, verify_all(seq, vals, 8, true));
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/* The cached block at @depth (from 1) whose first token id is @id, or NULL. */
static struct kv_block *cached_at(struct kv_pool *pool, u32 depth, u32 id)
{
	u32 i;

	for (i = 0; i < pool->nr_blocks; i++)
		if ((kv_block(pool, i)->flags & KV_BLOCK_CACHED) &&
		    pool->prefix.nodes[i].depth == depth &&
		    pool->prefix.tokens[(u64)i * TEST_BT] == id)
			return kv_block(pool, i);
	return NULL;
}

/* Overwrite swap slot @slot on the device, as a medium that lost it. */
static int smash_slot(struct kv_pool *pool, int fd, u32 slot)
{
	void *buf = NULL;
	ssize_t n;

	if (posix_memalign(&buf, 4096, pool->frame_bytes))
		return -ENOMEM;
	memset(buf, 0xa5, pool->frame_bytes);
	n = pwrite(fd, buf, pool->frame_bytes,
		   (off_t)(pool->swap.offset + (u64)slot * pool->frame_bytes));
	free(buf);
	return n == (ssize_t)pool->frame_bytes ? 0 : -EIO;
}

/*
 * A cached prompt whose swap slot is lost (overwritten on the device):
 * the activation that reads it fails with -EIO, and the block leaves the
 * cache with every block below it, on all branches, and the name pinning
 * them. The next request matches only the blocks above it and recomputes
 * the rest, which is cached again; the blocks above, and a branch that
 * leaves the prompt above the lost block, stay and read back whole.
 */
TEST(unreadable_cached_blocks_leave_the_cache)
{
	u32 a[16], b[16], c[16], i;
	struct kv_prefix_hit hit;
	struct kv_block *blk;
	struct kv_pool *pool;
	struct kv_seq *s;
	u64 slots[16];
	int fd;

	pool = swap_pool(16, 16, 64, KV_SWAP_AUTO, &fd);
	ASSERT_NE_NULL(pool);
	for (i = 0; i < 16; i++) {
		a[i] = 900 + i;
		b[i] = i < 8 ? a[i] : 950 + i;		/* leaves a below block 2 */
		c[i] = i < 4 ? a[i] : 980 + i;		/* leaves a below block 1 */
	}
	ASSERT_EQ(0, kv_seq_create(pool, &s));
	ASSERT_EQ(0, kv_seq_activate(s, 0));
	ASSERT_EQ(0, kv_seq_append_ids(s, 16, a, slots, 0));
	for (i = 0; i < 16; i++)
		tok_write(pool, slots[i], a[i]);
	ASSERT_EQ(16, kv_prefix_pin(s, "system"));
	kv_seq_deactivate(s);
	kv_seq_free(s);
	ASSERT_EQ(0, cache_ids(pool, b, 16));
	ASSERT_EQ(0, cache_ids(pool, c, 16));
	push_to_swap(pool);
	EXPECT_EQ(9u, tier_used(pool, KV_TIER_SWAP));
	blk = cached_at(pool, 2, a[4]);
	ASSERT_NE_NULL(blk);
	ASSERT_EQ(KV_TIER_SWAP, (int)blk->tier);
	ASSERT_EQ(0, smash_slot(pool, fd, blk->frame[KV_TIER_SWAP]));

	/* a's blocks 2-4 and b's 3-4 go; a's block 1 and c's 2-4 stay */
	EXPECT_EQ(-EIO, reuse_ids(pool, a, 16, &hit));
	EXPECT_EQ(5u, (u32)kv_vmstat_read(pool, KV_PREFIX_LOST));
	EXPECT_EQ(-ENOENT, kv_prefix_set_pinned(pool, "system", 1, KV_TENANT_ANY));
	EXPECT_POOL_OK(pool);
	EXPECT_EQ(16, reuse_ids(pool, c, 16, &hit));
	EXPECT_EQ(4, reuse_ids(pool, b, 16, &hit));
	EXPECT_EQ(4, reuse_ids(pool, a, 16, &hit));
	/* recomputed and cached again */
	ASSERT_EQ(0, cache_ids(pool, a, 16));
	push_to_swap(pool);
	EXPECT_EQ(16, reuse_ids(pool, a, 16, &hit));
	EXPECT_EQ(8, reuse_ids(pool, b, 16, &hit));
	EXPECT_EQ(5u, (u32)kv_vmstat_read(pool, KV_PREFIX_LOST));
	EXPECT_POOL_OK(pool);
	EXPECT_EQ(7u, kv_prefix_drop(pool));
	EXPECT_EQ(0u, tier_used(pool, KV_TIER_SWAP));
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/*
 * A sequence that holds cached blocks when a read of them fails: they
 * leave the cache (a transient error: the slot reads back whole later),
 * the sequence's cached entries end before them, and the ones resident with
 * a clean swap copy lose it. Retried, the activation succeeds; the
 * sequence, which now holds its blocks alone, rewrites tokens in place,
 * goes down to swap and comes back with the new contents (a stale swap
 * copy would bring the old ones back); its blocks are published again.
 */
TEST(a_sequence_keeps_blocks_that_left_the_cache)
{
	struct kv_prefix_hit hit;
	struct kv_block *b0;
	struct kv_pool *pool;
	struct kv_seq *s;
	u32 ids[16], want[16], i;
	u64 slots[6];
	int fd;

	pool = swap_pool(16, 16, 64, KV_SWAP_AUTO, &fd);
	ASSERT_NE_NULL(pool);
	for (i = 0; i < 16; i++)
		ids[i] = want[i] = 1200 + i;
	ASSERT_EQ(0, cache_ids(pool, ids, 16));
	push_to_swap(pool);
	EXPECT_EQ(16, reuse_ids(pool, ids, 16, &hit));	/* resident, with swap copies */
	kv_reclaim(pool, KV_TIER_DEVICE, 100);
	b0 = cached_at(pool, 1, ids[0]);
	ASSERT_NE_NULL(b0);
	/* the first block alone down to swap, by its copy there */
	for (i = 0; i < 4 && b0->tier != KV_TIER_SWAP; i++)
		kv_reclaim(pool, KV_TIER_HOST, 1);
	ASSERT_EQ(KV_TIER_SWAP, (int)b0->tier);
	ASSERT_EQ(KV_TIER_HOST, (int)cached_at(pool, 4, ids[12])->tier);
	ASSERT_TRUE(cached_at(pool, 4, ids[12])->flags & KV_BLOCK_SWAPCACHE);

	ASSERT_EQ(0, kv_seq_create(pool, &s));
	ASSERT_EQ(16, kv_prefix_match(s, ids, 16, &hit));
	ASSERT_EQ(0, kv_pool_swap_inject(pool, KV_SWAP_INJECT_EIO, 1));
	EXPECT_EQ(-EIO, kv_seq_activate(s, 0));
	EXPECT_EQ(4u, (u32)kv_vmstat_read(pool, KV_PREFIX_LOST));
	EXPECT_EQ(0u, pool->nr_swapcache);
	EXPECT_POOL_OK(pool);
	ASSERT_EQ(0, kv_seq_activate(s, 0));
	EXPECT_EQ(-1, seq_verify(s, want));
	/* alone now: tokens 10 and 11 rewritten in place, with new ids */
	ASSERT_EQ(0, kv_seq_truncate(s, 10));
	ids[10] = want[10] = 5000;
	ids[11] = want[11] = 5001;
	ASSERT_EQ(0, kv_seq_append_ids(s, 6, ids + 10, slots, 0));
	for (i = 0; i < 6; i++)
		tok_write(pool, slots[i], want[10 + i]);
	kv_seq_deactivate(s);
	EXPECT_POOL_OK(pool);
	push_to_swap(pool);
	ASSERT_EQ(0, kv_seq_activate(s, 0));
	EXPECT_EQ(-1, seq_verify(s, want));
	kv_seq_deactivate(s);
	kv_seq_free(s);
	EXPECT_POOL_OK(pool);
	EXPECT_EQ(16, reuse_ids(pool, want, 16, &hit));	/* published again */
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/*
 * No memory to walk the cache when a read fails: nothing is dropped, the
 * pool stays whole, and the blocks, still cached, read back once the
 * error passes (it was transient).
 */
TEST(no_memory_to_drop_lost_blocks)
{
	struct kv_prefix_hit hit;
	struct kv_pool *pool;
	struct kv_seq *s;
	u32 ids[16], i;
	int fd;

	pool = swap_pool(16, 16, 64, KV_SWAP_AUTO, &fd);
	ASSERT_NE_NULL(pool);
	for (i = 0; i < 16; i++)
		ids[i] = 4100 + i;
	ASSERT_EQ(0, cache_ids(pool, ids, 16));
	push_to_swap(pool);
	ASSERT_EQ(0, kv_seq_create(pool, &s));
	ASSERT_EQ(16, kv_prefix_match(s, ids, 16, &hit));
	/* activation's host and frame lists, the copy list; then the walk's */
	kv_pool_fault_inject(pool, KV_FAULT_META, 4, 1);
	ASSERT_EQ(0, kv_pool_swap_inject(pool, KV_SWAP_INJECT_EIO, 1));
	EXPECT_EQ(-EIO, kv_seq_activate(s, 0));
	EXPECT_LT(0u, (u32)kv_pool_fault_fired(pool));
	kv_pool_fault_inject(pool, 0, 0, 0);
	EXPECT_EQ(0u, (u32)kv_vmstat_read(pool, KV_PREFIX_LOST));
	EXPECT_TRUE(cached_at(pool, 1, ids[0]) != NULL);
	EXPECT_POOL_OK(pool);
	EXPECT_EQ(0, kv_seq_activate(s, 0));
	EXPECT_EQ(-1, seq_verify(s, ids));
	kv_seq_deactivate(s);
	kv_seq_free(s);
	EXPECT_EQ(16, reuse_ids(pool, ids, 16, &hit));
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/*
 * A device tier whose next copy, once armed, waits at a gate: a move that
 * holds its blocks locked with the pool unlocked, for as long as a test
 * needs. One such pool at a time.
 */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int armed, inside, open;
} gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0 };
static struct kv_tier_ops gate_ops;

static int gate_submit(struct kv_pool *pool, const struct kv_copy *c, u32 n, void **cookie)
{
	pthread_mutex_lock(&gate.lock);
	if (gate.armed) {
		gate.armed = 0;
		gate.inside = 1;
		pthread_cond_broadcast(&gate.cond);
		while (!gate.open)
			pthread_cond_wait(&gate.cond, &gate.lock);
	}
	pthread_mutex_unlock(&gate.lock);
	return kv_cpu_device_ops.copy_submit(pool, c, n, cookie);
}

static void *reclaim_device(void *pool)
{
	kv_reclaim(pool, KV_TIER_DEVICE, 100);
	return NULL;
}

/*
 * A failed read drops a cached prompt while another thread's move holds
 * its last block locked (a demotion from the device, pool unlocked), and
 * an inactive sequence holds it too: that block keeps its clean swap copy
 * while the move runs, the pool checks whole meanwhile, and the copy goes
 * when the move ends.
 */
TEST(a_block_dropped_during_a_move_loses_its_copy_after)
{
	struct kv_prefix_hit hit;
	struct kv_seq *s, *keep;
	struct kv_block *b0, *y;
	struct kv_pool *pool;
	pthread_t t;
	u32 ids[16], i;
	int fd;

	gate_ops = kv_cpu_device_ops;
	gate_ops.copy_submit = gate_submit;
	pool = swap_pool_ops(16, 16, 64, KV_SWAP_PSYNC, &fd, &gate_ops);
	ASSERT_NE_NULL(pool);
	for (i = 0; i < 16; i++)
		ids[i] = 3300 + i;
	ASSERT_EQ(0, cache_ids(pool, ids, 16));
	push_to_swap(pool);
	EXPECT_EQ(16, reuse_ids(pool, ids, 16, &hit));	/* resident, with swap copies */
	b0 = cached_at(pool, 1, ids[0]);
	y = cached_at(pool, 4, ids[12]);
	ASSERT_TRUE(b0 && y);
	for (i = 0; i < 4 && b0->tier == KV_TIER_DEVICE; i++)
		kv_reclaim(pool, KV_TIER_DEVICE, 1);
	for (i = 0; i < 4 && b0->tier != KV_TIER_SWAP; i++)
		kv_reclaim(pool, KV_TIER_HOST, 1);
	ASSERT_EQ(KV_TIER_SWAP, (int)b0->tier);
	ASSERT_EQ(KV_TIER_DEVICE, (int)y->tier);
	ASSERT_TRUE(y->flags & KV_BLOCK_SWAPCACHE);

	ASSERT_EQ(0, kv_seq_create(pool, &keep));	/* holds y through it all */
	ASSERT_EQ(16, kv_prefix_match(keep, ids, 16, &hit));
	ASSERT_EQ(0, kv_seq_create(pool, &s));
	ASSERT_EQ(4, kv_prefix_match(s, ids, 4, &hit));
	gate.armed = 1;
	ASSERT_EQ(0, pthread_create(&t, NULL, reclaim_device, pool));
	pthread_mutex_lock(&gate.lock);
	while (!gate.inside)
		pthread_cond_wait(&gate.cond, &gate.lock);
	pthread_mutex_unlock(&gate.lock);
	ASSERT_TRUE(y->flags & KV_BLOCK_LOCKED);	/* in the demotion */
	ASSERT_EQ(0, kv_pool_swap_inject(pool, KV_SWAP_INJECT_EIO, 1));
	EXPECT_EQ(-EIO, kv_seq_activate(s, 0));
	EXPECT_EQ(4u, (u32)kv_vmstat_read(pool, KV_PREFIX_LOST));
	EXPECT_EQ(KV_BLOCK_SWAPCACHE | KV_BLOCK_LOST,
		  y->flags & (KV_BLOCK_SWAPCACHE | KV_BLOCK_CACHED | KV_BLOCK_LOST));
	EXPECT_POOL_OK(pool);
	pthread_mutex_lock(&gate.lock);
	gate.open = 1;
	pthread_cond_broadcast(&gate.cond);
	pthread_mutex_unlock(&gate.lock);
	pthread_join(t, NULL);
	EXPECT_EQ(0u, y->flags & (KV_BLOCK_SWAPCACHE | KV_BLOCK_CACHED | KV_BLOCK_LOCKED |
				  KV_BLOCK_LOST));
	EXPECT_EQ(0u, pool->nr_swapcache);
	EXPECT_POOL_OK(pool);
	kv_seq_free(s);
	kv_seq_free(keep);
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/*
 * The swap cache: a cached block read back from swap keeps its slot, so
 * that the next swap-out of it writes nothing; when swap needs room the
 * copies go first; other blocks keep none.
 */
TEST(swap_cache)
{
	static u32 vals[9][64];
	struct kv_seq *seq[9], *s;
	struct kv_prefix_hit hit;
	struct kv_meminfo mi;
	struct kv_pool *pool;
	u32 ids[16], i;
	u64 out;
	int fd;

	pool = swap_pool(16, 16, 12, KV_SWAP_AUTO, &fd);
	ASSERT_NE_NULL(pool);
	for (i = 0; i < 16; i++)
		ids[i] = 500 + i;
	ASSERT_EQ(0, cache_ids(pool, ids, 16));
	kv_reclaim(pool, KV_TIER_DEVICE, 100);
	ASSERT_EQ(4u, kv_reclaim(pool, KV_TIER_HOST, 100));	/* 4 cached blocks out */
	out = kv_vmstat_read(pool, KV_PSWPOUT);
	/* Back to the device: the slots stay, clean. */
	EXPECT_EQ(16, reuse_ids(pool, ids, 16, &hit));
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(4u, mi.swapcache);
	EXPECT_EQ(4u, mi.tier[KV_TIER_SWAP].total - mi.tier[KV_TIER_SWAP].free);
	EXPECT_POOL_OK(pool);
	/* Out again: no write. */
	kv_reclaim(pool, KV_TIER_DEVICE, 100);
	EXPECT_EQ(4u, kv_reclaim(pool, KV_TIER_HOST, 100));
	EXPECT_EQ(out, kv_vmstat_read(pool, KV_PSWPOUT) - 4);	/* counted, not written */
	EXPECT_EQ(4u, (u32)kv_vmstat_read(pool, KV_SWAPCACHE_HIT));
	EXPECT_POOL_OK(pool);
	/*
	 * Back, and kept pinned while others fill the pool: swap needs the
	 * room of the clean copies, which go without I/O; nothing is lost.
	 */
	ASSERT_EQ(0, kv_seq_create(pool, &s));
	ASSERT_EQ(16, kv_prefix_match(s, ids, 16, &hit));
	ASSERT_EQ(0, kv_seq_activate(s, 0));
	/* 36 blocks: 11 device + 15 host + 7 swap frames free, 4 more in copies */
	ASSERT_EQ(0, fill(pool, seq, vals, 9, 16, 9));
	EXPECT_LT(0u, (u32)kv_vmstat_read(pool, KV_SWAPCACHE_DROP));
	EXPECT_EQ(-1, seq_verify(s, ids));
	kv_seq_deactivate(s);
	kv_seq_free(s);
	EXPECT_POOL_OK(pool);
	ASSERT_EQ(0, verify_all(seq, vals, 9, true));
	EXPECT_LE(0, reuse_ids(pool, ids, 16, &hit));
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/* Swap slots come in runs: ascending within a cluster, holes refilled. */
TEST(slots_in_clusters)
{
	u32 a[70], b[4], i;
	struct kv_pool *pool;
	int fd;

	pool = swap_pool(8, 8, 200, KV_SWAP_PSYNC, &fd);
	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, kv_frames_alloc(pool, KV_TIER_SWAP, 70, 0, a));
	for (i = 0; i < 70; i++)
		EXPECT_EQ(i, a[i]);
	kv_frames_free(pool, KV_TIER_SWAP, 4, a + 10);		/* a hole of 10..13 */
	ASSERT_EQ(0, kv_frames_alloc(pool, KV_TIER_SWAP, 4, 0, b));
	EXPECT_EQ(70u, b[0]);		/* the current cluster (64..127) first */
	EXPECT_EQ(73u, b[3]);
	kv_frames_free(pool, KV_TIER_SWAP, 4, b);
	kv_frames_free(pool, KV_TIER_SWAP, 70 - 14, a + 14);
	kv_frames_free(pool, KV_TIER_SWAP, 10, a);
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/* A pool on an existing swap file (a restart reopens the same area). */
static struct kv_pool *pool_on(int fd, const struct kv_geometry *g, u32 flags)
{
	struct kv_pool_params p = {
		.name = "ckpt", .geom = *g, .nr_frames = { 16, 16, 64 },
		.flags = KV_POOL_NO_KVSWAPD | flags, .vm = { .min_free_kbytes = 4 },
		.swap = { .fd = fd, .engine = KV_SWAP_AUTO },
	};
	struct kv_pool *pool = NULL;

	return kv_pool_create(&p, &pool) ? NULL : pool;
}

/* Where the checkpoint region of pool_on()'s pools lies. */
#define CKPT_OFF(pool)	(64ull * kv_frame_bytes(kv_pool_geometry(pool)))
#define CKPT_LEN(pool)	kv_checkpoint_bytes(kv_pool_geometry(pool), 64)

/* Cache prompt @k of tenant @t: 12 tokens, ids and KV from @k. */
static int cache_prompt(struct kv_pool *pool, u32 t, u32 k, u32 *ids)
{
	struct kv_seq *s = NULL;
	u64 slots[12];
	u32 i;
	int err;

	for (i = 0; i < 12; i++)
		ids[i] = k * 100 + (i < 8 ? i : 50 + i);	/* prompts share 2 blocks */
	if (k % 2)
		ids[0] += 1000;				/* ...or none */
	err = kv_seq_create(pool, &s);
	err = err ?: kv_seq_set_tenant(s, t);
	err = err ?: kv_seq_activate(s, 0);
	err = err ?: kv_seq_append_ids(s, 12, ids, slots, 0);
	for (i = 0; !err && i < 12; i++)
		tok_write(pool, slots[i], ids[i] ^ 0x5a5a);
	if (s) {
		kv_seq_deactivate(s);
		kv_seq_free(s);
	}
	return err;
}

/* Tokens of prompt @ids found for tenant @t, KV checked: -EUCLEAN if wrong. */
static int find_prompt(struct kv_pool *pool, u32 t, const u32 *ids)
{
	struct kv_prefix_hit hit;
	struct kv_seq *s;
	u32 want[12], i;
	int m;

	if (kv_seq_create(pool, &s))
		return -ENOMEM;
	kv_seq_set_tenant(s, t);
	m = kv_prefix_match(s, ids, 12, &hit);
	if (m > 0 && kv_seq_activate(s, 0))
		m = -EIO;
	for (i = 0; m > 0 && i < (u32)m; i++)
		want[i] = ids[i] ^ 0x5a5a;
	if (m > 0 && seq_verify(s, want) != -1)
		m = -EUCLEAN;
	kv_seq_deactivate(s);
	kv_seq_free(s);
	return m;
}

static u32 drop_tenant_7(u32 old, const void *blob, u32 blob_len, void *arg)
{
	(void)arg;
	if (blob_len != 5 || memcmp(blob, "kvmem", 5))
		return KV_TENANT_NONE;
	return old == 7 ? KV_TENANT_NONE : old;
}

TEST(checkpoint_and_restore)
{
	struct kv_geometry other = test_geom;
	u32 ids[6][12], k, blen = 0;
	struct kv_pool *pool;
	char blob[KV_CKPT_BLOB_MAX];
	int fd = swap_file(), n;

	ASSERT_LE(0, fd);
	pool = pool_on(fd, &test_geom, 0);
	ASSERT_NE_NULL(pool);
	EXPECT_EQ(-ENOENT, kv_pool_restore(pool, CKPT_OFF(pool), CKPT_LEN(pool), NULL, NULL,
					   NULL, NULL));
	for (k = 0; k < 6; k++)
		ASSERT_EQ(0, cache_prompt(pool, k == 5 ? 7 : 1, k, ids[k]));
	n = kv_pool_checkpoint(pool, CKPT_OFF(pool), CKPT_LEN(pool), "kvmem", 5);
	EXPECT_LT(0, n);
	EXPECT_POOL_OK(pool);
	/* Checkpointing leaves the cache working, from swap. */
	EXPECT_EQ(12, find_prompt(pool, 1, ids[0]));
	kv_pool_destroy(pool);

	/* "Restart": a new pool on the same area. */
	pool = pool_on(fd, &test_geom, 0);
	ASSERT_NE_NULL(pool);
	/* Out of memory while the slots are checked: an error, nothing restored. */
	kv_pool_fault_inject(pool, KV_FAULT_META, 1, 0);
	EXPECT_EQ(-ENOMEM, kv_pool_restore(pool, CKPT_OFF(pool), CKPT_LEN(pool), NULL, NULL,
					   NULL, NULL));
	EXPECT_EQ(1u, (u32)kv_pool_fault_fired(pool));
	kv_pool_fault_inject(pool, 0, 0, 0);
	EXPECT_POOL_OK(pool);
	EXPECT_LT(0, kv_pool_restore(pool, CKPT_OFF(pool), CKPT_LEN(pool), blob, &blen,
				     drop_tenant_7, NULL));
	EXPECT_EQ(5u, blen);
	EXPECT_POOL_OK(pool);
	for (k = 0; k < 5; k++)
		EXPECT_EQ(12, find_prompt(pool, 1, ids[k]));
	EXPECT_EQ(0, find_prompt(pool, 7, ids[5]));	/* dropped by the mapping */
	EXPECT_EQ(0, find_prompt(pool, 2, ids[0]));	/* still tenant 1's */
	EXPECT_LT(0u, (u32)kv_vmstat_read(pool, KV_PREFIX_HIT_TOKENS_SWAP));
	/* A restore into a pool in use is refused. */
	EXPECT_EQ(-EBUSY, kv_pool_restore(pool, CKPT_OFF(pool), CKPT_LEN(pool), NULL, NULL,
					  NULL, NULL));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);

	/* Another geometry finds the checkpoint stale. */
	other.head_dim = 16;
	pool = pool_on(fd, &other, 0);
	ASSERT_NE_NULL(pool);
	EXPECT_EQ(-ESTALE, kv_pool_restore(pool, CKPT_OFF(pool), CKPT_LEN(pool), NULL, NULL,
					   NULL, NULL));
	kv_pool_destroy(pool);
	close(fd);
}

/*
 * A checkpoint of a pool whose device tier the CPU cannot address: the
 * cached blocks go from the device straight to swap, bounced (the device's
 * copies beside the swap writes, in parts of two bounce frames), and come
 * back bounced with their contents.
 */
TEST(device_without_cpu_address_checkpoint)
{
	u32 ids[8][12], k, before;
	struct kv_pool *pool;
	int fd;

	pool = hidden_pool(40, KV_SWAP_PSYNC, &fd);
	ASSERT_NE_NULL(pool);
	for (k = 0; k < 8; k++)
		ASSERT_EQ(0, cache_prompt(pool, 1, k, ids[k]));
	before = tier_used(pool, KV_TIER_DEVICE);
	ASSERT_LT(4u, before);
	EXPECT_LT(0, kv_pool_checkpoint(pool, CKPT_OFF(pool), CKPT_LEN(pool), "kvmem", 5));
	EXPECT_EQ(0u, tier_used(pool, KV_TIER_DEVICE));
	EXPECT_LE(before, tier_used(pool, KV_TIER_SWAP));
	EXPECT_POOL_OK(pool);
	for (k = 0; k < 8; k++)
		EXPECT_EQ(12, find_prompt(pool, 1, ids[k]));
	EXPECT_POOL_OK(pool);
	swap_pool_done(pool, fd);
}

/* Flip a byte of the swap file at @off (through a buffered descriptor). */
static void corrupt(int fd, u64 off)
{
	char path[64], c;
	int wfd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	wfd = open(path, O_RDWR);
	if (wfd < 0)
		return;
	if (pread(wfd, &c, 1, (off_t)off) == 1) {
		c ^= 0x40;
		if (pwrite(wfd, &c, 1, (off_t)off) == 1)
			fdatasync(wfd);
	}
	close(wfd);
}

TEST(torn_or_stale_checkpoints_restore_nothing_bad)
{
	u32 ids[4][12], k;
	struct kv_pool *pool;
	int fd = swap_file(), n;
	u64 fb = kv_frame_bytes(&test_geom), ckoff = 64 * fb;

	ASSERT_LE(0, fd);
	pool = pool_on(fd, &test_geom, 0);
	ASSERT_NE_NULL(pool);
	for (k = 0; k < 4; k++)
		ASSERT_EQ(0, cache_prompt(pool, 1, k, ids[k]));
	n = kv_pool_checkpoint(pool, CKPT_OFF(pool), CKPT_LEN(pool), NULL, 0);
	ASSERT_LT(0, n);
	kv_pool_destroy(pool);

	/* A damaged slot: that block and the ones after it are not restored. */
	corrupt(fd, 100);			/* slot 0 */
	pool = pool_on(fd, &test_geom, 0);
	ASSERT_NE_NULL(pool);
	EXPECT_LT(0, kv_pool_restore(pool, CKPT_OFF(pool), CKPT_LEN(pool), NULL, NULL, NULL,
				     NULL));
	for (k = 0; k < 4; k++)
		EXPECT_LE(0, find_prompt(pool, 1, ids[k]));	/* never -EUCLEAN */
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);

	/* Damaged entries (a torn checkpoint): nothing at all. */
	corrupt(fd, ckoff + 4096 + KV_CKPT_BLOB_MAX + 3);
	pool = pool_on(fd, &test_geom, 0);
	ASSERT_NE_NULL(pool);
	EXPECT_EQ(-EBADMSG, kv_pool_restore(pool, CKPT_OFF(pool), CKPT_LEN(pool), NULL, NULL,
					    NULL, NULL));
	for (k = 0; k < 4; k++)
		EXPECT_EQ(0, find_prompt(pool, 1, ids[k]));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
	close(fd);
}

/*
 * A slot whose read failed, then restored from a checkpoint (which reads
 * it whole): no longer failed, so a later copy that fails for no reason of
 * the slot's (an injected copy fault) drops nothing from the cache.
 */
TEST(restore_clears_a_failed_slot)
{
	struct kv_prefix_hit hit;
	struct kv_pool *pool;
	struct kv_seq *s;
	u32 ids[12];
	int fd = swap_file(), n;

	ASSERT_LE(0, fd);
	pool = pool_on(fd, &test_geom, 0);
	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, cache_prompt(pool, 1, 0, ids));
	n = kv_pool_checkpoint(pool, CKPT_OFF(pool), CKPT_LEN(pool), NULL, 0);
	ASSERT_EQ(3, n);
	ASSERT_EQ(0, kv_seq_create(pool, &s));
	kv_seq_set_tenant(s, 1);
	ASSERT_EQ(12, kv_prefix_match(s, ids, 12, &hit));
	ASSERT_EQ(0, kv_pool_swap_inject(pool, KV_SWAP_INJECT_EIO, 1));
	EXPECT_EQ(-EIO, kv_seq_activate(s, 0));
	EXPECT_EQ(3u, (u32)kv_vmstat_read(pool, KV_PREFIX_LOST));
	kv_seq_free(s);
	kv_prefix_drop(pool);
	EXPECT_POOL_OK(pool);
	n = kv_pool_restore(pool, CKPT_OFF(pool), CKPT_LEN(pool), NULL, NULL, NULL, NULL);
	ASSERT_EQ(3, n);
	ASSERT_EQ(0, kv_seq_create(pool, &s));
	kv_seq_set_tenant(s, 1);
	ASSERT_EQ(12, kv_prefix_match(s, ids, 12, &hit));
	kv_pool_fault_inject(pool, KV_FAULT_COPY, 1, 0);
	EXPECT_EQ(-EIO, kv_seq_activate(s, 0));
	EXPECT_EQ(3u, (u32)kv_vmstat_read(pool, KV_PREFIX_LOST));
	kv_seq_free(s);
	EXPECT_EQ(12, find_prompt(pool, 1, ids));	/* whole */
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
	close(fd);
}

TEST_HARNESS_MAIN
