// SPDX-License-Identifier: MIT
/*
 * NUMA placement (struct kv_placement): the host arena and the CPU
 * backend's device arena carry a preferred-node policy for the pool's node
 * and their pages lie there; the kvswapd threads are named after their
 * tier and run on the placement's CPUs; a pool without a placement binds
 * nothing; a node number out of range is refused, one the kernel refuses
 * (absent) or a CPU set it refuses is recorded and the pool works on.
 */
#include <dirent.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mempolicy.h>
#include "kselftest_harness.h"
#include "mm_test.h"

#define HOST_FRAMES	64

/* The memory policy of the page at @addr: mode, and the node mask's first word. */
static int policy_at(void *addr, int *mode, unsigned long *mask)
{
	unsigned long m[KV_NUMA_NODES_MAX / (8 * sizeof(unsigned long))] = { 0 };

	if (syscall(SYS_get_mempolicy, mode, m, (unsigned long)KV_NUMA_NODES_MAX + 1, addr,
		    (unsigned long)MPOL_F_ADDR))
		return -errno;
	*mask = m[0];
	return 0;
}

/*
 * Fault in every page of a tier's arena and count those not on @node
 * (move_pages(2) with no target nodes reports where each page is).
 */
static long pages_off_node(struct kv_pool *pool, int tier, u32 nr, int node)
{
	long psz = sysconf(_SC_PAGESIZE), bad = 0;
	u64 bytes = (u64)nr * kv_frame_bytes(kv_pool_geometry(pool)), i, n = bytes / (u64)psz;
	char *base = kv_pool_frame_addr(pool, tier, 0);
	void **pages = calloc(n, sizeof(*pages));
	int *status = calloc(n, sizeof(*status));

	if (!base || !n || !pages || !status) {
		free(pages);
		free(status);
		return -1;
	}
	for (i = 0; i < n; i++) {
		pages[i] = base + i * (u64)psz;
		*(volatile char *)pages[i] = 1;
	}
	if (syscall(SYS_move_pages, 0, n, pages, NULL, status, 0))
		bad = -1;
	for (i = 0; !bad && i < n; i++)
		if (status[i] != node)
			bad++;
	free(pages);
	free(status);
	return bad;
}

static struct kv_pool *placed_pool(const struct kv_placement *pl, u32 flags)
{
	struct kv_pool_params p = {
		.name = "numa", .geom = test_geom, .nr_frames = { 16, HOST_FRAMES },
		.flags = flags, .place = pl,
	};
	struct kv_pool *pool = NULL;

	return kv_pool_create(&p, &pool) ? NULL : pool;
}

/* The last CPU this process may run on: a set smaller than its mask where it has two. */
static int last_allowed_cpu(void)
{
	cpu_set_t set;
	int cpu, last = -1;

	if (sched_getaffinity(0, sizeof(set), &set))
		return -1;
	for (cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &set))
			last = cpu;
	return last;
}

TEST(arenas_and_kvswapd_follow_the_placement)
{
	struct kv_placement pl = { .numa_node = 0 };
	unsigned long mask;
	struct kv_meminfo mi;
	struct kv_pool *pool;
	int cpu = last_allowed_cpu(), mode, bad;
	char want[16];

	ASSERT_LE(0, cpu);
	CPU_SET(cpu, &pl.cpus);
	snprintf(want, sizeof(want), "%d", cpu);
	pool = placed_pool(&pl, 0);
	ASSERT_NE_NULL(pool);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(0, mi.tier[KV_TIER_HOST].numa_node);
	EXPECT_EQ(0, mi.tier[KV_TIER_HOST].numa_err);
	EXPECT_EQ(0, mi.tier[KV_TIER_DEVICE].numa_node);
	EXPECT_EQ(-1, mi.tier[KV_TIER_SWAP].numa_node);
	EXPECT_EQ(1, mi.tier[KV_TIER_DEVICE].kvswapd_bound);
	/* The policy sits on both arenas, and every page is on the node. */
	ASSERT_EQ(0, policy_at(kv_pool_frame_addr(pool, KV_TIER_HOST, 0), &mode, &mask));
	EXPECT_EQ(MPOL_PREFERRED, mode);
	EXPECT_EQ(1ul, mask);
	ASSERT_EQ(0, policy_at(kv_pool_frame_addr(pool, KV_TIER_DEVICE, 3), &mode, &mask));
	EXPECT_EQ(MPOL_PREFERRED, mode);
	EXPECT_EQ(1ul, mask);
	EXPECT_EQ(0, pages_off_node(pool, KV_TIER_HOST, HOST_FRAMES, 0));
	EXPECT_EQ(0, pages_off_node(pool, KV_TIER_DEVICE, 16, 0));
	/* One kvswapd (the device tier's: no swap below the host), on that CPU. */
	EXPECT_EQ(1, threads_named("kvswapd/", want, &bad));
	EXPECT_EQ(0, bad);
	ASSERT_POOL_OK(pool);
	kv_pool_destroy(pool);
	EXPECT_EQ(0, threads_named("kvswapd/", NULL, &bad));
}

TEST(no_placement_binds_nothing)
{
	struct kv_meminfo mi;
	struct kv_pool *pool = placed_pool(NULL, 0);
	unsigned long mask;
	char want[64];
	int mode, bad;
	FILE *f;

	ASSERT_NE_NULL(pool);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(-1, mi.tier[KV_TIER_HOST].numa_node);
	EXPECT_EQ(-1, mi.tier[KV_TIER_DEVICE].numa_node);
	EXPECT_EQ(0, mi.tier[KV_TIER_DEVICE].kvswapd_bound);
	ASSERT_EQ(0, policy_at(kv_pool_frame_addr(pool, KV_TIER_HOST, 0), &mode, &mask));
	EXPECT_EQ(MPOL_DEFAULT, mode);
	/* kvswapd runs wherever this process may. */
	f = fopen("/proc/self/status", "r");
	ASSERT_NE_NULL(f);
	want[0] = '\0';
	while (fgets(want, sizeof(want), f) && strncmp(want, "Cpus_allowed_list:", 18))
		;
	fclose(f);
	want[strcspn(want, "\n")] = '\0';
	EXPECT_EQ(1, threads_named("kvswapd/", want + 18 + strspn(want + 18, " \t"), &bad));
	EXPECT_EQ(0, bad);
	kv_pool_destroy(pool);
}

TEST(bad_nodes_and_cpus)
{
	struct kv_placement pl = { .numa_node = -2 };
	struct kv_meminfo mi;
	struct kv_pool *pool;
	int mode;
	unsigned long mask;

	EXPECT_NULL(placed_pool(&pl, KV_POOL_NO_KVSWAPD));
	pl.numa_node = KV_NUMA_NODES_MAX;
	EXPECT_NULL(placed_pool(&pl, KV_POOL_NO_KVSWAPD));
	/* A node this machine lacks, and a CPU it lacks: recorded, not fatal. */
	pl.numa_node = KV_NUMA_NODES_MAX - 1;
	CPU_SET(CPU_SETSIZE - 1, &pl.cpus);
	pool = placed_pool(&pl, 0);
	ASSERT_NE_NULL(pool);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(-1, mi.tier[KV_TIER_HOST].numa_node);
	EXPECT_GT(0, mi.tier[KV_TIER_HOST].numa_err);
	EXPECT_EQ(0, mi.tier[KV_TIER_DEVICE].kvswapd_bound);
	ASSERT_EQ(0, policy_at(kv_pool_frame_addr(pool, KV_TIER_HOST, 0), &mode, &mask));
	EXPECT_EQ(MPOL_DEFAULT, mode);
	ASSERT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST_HARNESS_MAIN
