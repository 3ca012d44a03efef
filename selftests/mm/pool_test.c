// SPDX-License-Identifier: MIT
/*
 * Pools, frames and watermarks: creation and its errors, the frame
 * allocator (single and batch, all or nothing, double free), the watermark
 * derivation, NOWAIT and the min reserve, tunables, meminfo and vmstat.
 */
#include "kselftest_harness.h"
#include "mm_test.h"

TEST(create_destroy)
{
	struct kv_pool *pool = test_pool(16, 32);
	struct kv_meminfo mi;

	ASSERT_NE_NULL(pool);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(4096, mi.frame_bytes);
	EXPECT_EQ(512, mi.block_bytes);
	EXPECT_EQ(16, mi.tier[KV_TIER_DEVICE].total);
	EXPECT_EQ(16, mi.tier[KV_TIER_DEVICE].free);
	EXPECT_EQ(32, mi.tier[KV_TIER_HOST].total);
	EXPECT_EQ(0, mi.blocks);
	EXPECT_STREQ("cpu", mi.tier[KV_TIER_DEVICE].backend);
	EXPECT_STREQ("memfd", mi.tier[KV_TIER_HOST].backend);
	ASSERT_NE_NULL(kv_pool_frame_addr(pool, KV_TIER_DEVICE, 15));
	EXPECT_NULL(kv_pool_frame_addr(pool, KV_TIER_DEVICE, 16));
	EXPECT_NULL(kv_pool_frame_addr(pool, 7, 0));
	ASSERT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(create_rejects_bad_params)
{
	struct kv_pool_params p = { .geom = test_geom, .nr_frames = { 8, 8 } };
	struct kv_pool *pool = NULL;

	p.geom.dtype = 99;
	EXPECT_EQ(-EINVAL, kv_pool_create(&p, &pool));
	p.geom = test_geom;
	p.geom.head_dim = 0;
	EXPECT_EQ(-EINVAL, kv_pool_create(&p, &pool));
	p.geom = test_geom;
	p.geom.pad = 1;
	EXPECT_EQ(-EINVAL, kv_pool_create(&p, &pool));
	p.geom = test_geom;
	p.nr_frames[KV_TIER_DEVICE] = 0;
	EXPECT_EQ(-EINVAL, kv_pool_create(&p, &pool));
	p.nr_frames[KV_TIER_DEVICE] = 8;
	p.flags = 0x80;
	EXPECT_EQ(-EINVAL, kv_pool_create(&p, &pool));
	p.flags = KV_POOL_NO_KVSWAPD;
	p.vm.watermark_scale_factor = 3001;
	EXPECT_EQ(-EINVAL, kv_pool_create(&p, &pool));
	p.vm.watermark_scale_factor = 0;
	p.vm.reclaim_batch = 100000;
	EXPECT_EQ(-EINVAL, kv_pool_create(&p, &pool));
	p.vm.reclaim_batch = 0;
	p.name = "a-name-that-is-far-too-long-for-a-pool-a-name-that-is-far-too-long";
	EXPECT_EQ(-ENAMETOOLONG, kv_pool_create(&p, &pool));
	p.name = NULL;
	p.nr_frames[KV_TIER_DEVICE] = UINT32_MAX;
	EXPECT_EQ(-E2BIG, kv_pool_create(&p, &pool));
	/* frames x frame bytes past KV_TIER_BYTES_MAX (here it would wrap 64 bits) */
	p.geom = (struct kv_geometry){ .layers = 1024, .kv_heads = 1024, .head_dim = 1024,
				       .block_tokens = 4096, .dtype = KV_DTYPE_FP32 };
	ASSERT_EQ(1ull << 45, kv_frame_bytes(&p.geom));
	p.nr_frames[KV_TIER_DEVICE] = 1u << 19;
	EXPECT_EQ(-E2BIG, kv_pool_create(&p, &pool));
	/* a swap tier of frames of 4 GiB or more (one transfer, 32-bit length) */
	p.geom.layers = 1;
	p.geom.kv_heads = 256;
	ASSERT_EQ(8ull << 30, kv_frame_bytes(&p.geom));
	p.nr_frames[KV_TIER_DEVICE] = 8;
	p.nr_frames[KV_TIER_SWAP] = 8;
	p.swap.fd = -1;			/* -EINVAL, were the frames allowed */
	EXPECT_EQ(-E2BIG, kv_pool_create(&p, &pool));
	p.nr_frames[KV_TIER_SWAP] = 0;
	p.nr_frames[KV_TIER_DEVICE] = 1u << 18;	/* 2 PiB */
	EXPECT_EQ(-E2BIG, kv_pool_create(&p, &pool));
	EXPECT_NULL(pool);
}

TEST(frames_single_and_batch)
{
	struct kv_pool *pool = test_pool(64, 8);
	u32 frames[64], f, i;
	struct kv_meminfo mi;

	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, kv_frames_alloc(pool, KV_TIER_DEVICE, 1, 0, &f));
	EXPECT_EQ(0, f);
	ASSERT_EQ(0, kv_frames_alloc(pool, KV_TIER_DEVICE, 10, 0, frames));
	for (i = 0; i < 10; i++)
		EXPECT_EQ(i + 1, frames[i]);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(64 - 11, mi.tier[KV_TIER_DEVICE].free);
	ASSERT_POOL_OK(pool);
	kv_frames_free(pool, KV_TIER_DEVICE, 10, frames);
	kv_frames_free(pool, KV_TIER_DEVICE, 1, &f);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(64, mi.tier[KV_TIER_DEVICE].free);
	EXPECT_EQ(11, kv_vmstat_read(pool, KV_PGALLOC_DEVICE));
	EXPECT_EQ(11, kv_vmstat_read(pool, KV_PGFREE_DEVICE));
	ASSERT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(frames_all_or_nothing_above_min)
{
	struct kv_pool *pool = test_pool(16, 8);
	struct kv_meminfo mi;
	u32 frames[16];

	ASSERT_NE_NULL(pool);
	kv_pool_meminfo(pool, &mi);
	/* min_free_kbytes = 4 is one 4 KiB frame. */
	ASSERT_EQ(1, mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_MIN]);
	EXPECT_EQ(-ENOMEM, kv_frames_alloc(pool, KV_TIER_DEVICE, 16, 0, frames));
	EXPECT_EQ(-EAGAIN, kv_frames_alloc(pool, KV_TIER_DEVICE, 16, KV_ALLOC_NOWAIT, frames));
	/* more than the tier has: never possible, NOWAIT or not */
	EXPECT_EQ(-ENOMEM, kv_frames_alloc(pool, KV_TIER_DEVICE, 17, KV_ALLOC_NOWAIT, frames));
	EXPECT_EQ(-ENOMEM, kv_frames_alloc(pool, KV_TIER_DEVICE, UINT32_MAX, 0, frames));
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(16, mi.tier[KV_TIER_DEVICE].free);
	ASSERT_EQ(0, kv_frames_alloc(pool, KV_TIER_DEVICE, 15, 0, frames));
	EXPECT_EQ(-ENOMEM, kv_frames_alloc(pool, KV_TIER_DEVICE, 1, 0, frames + 15));
	/* Nothing reclaimable: it fails without stalling in futile reclaim. */
	EXPECT_EQ(0, kv_vmstat_read(pool, KV_ALLOCSTALL));
	EXPECT_EQ(-EINVAL, kv_frames_alloc(pool, KV_TIER_DEVICE, 1, KV_ALLOC_RECLAIM, frames));
	EXPECT_EQ(-EINVAL, kv_frames_alloc(pool, 5, 1, 0, frames));
	ASSERT_POOL_OK(pool);
	kv_frames_free(pool, KV_TIER_DEVICE, 15, frames);
	ASSERT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(frames_double_free_is_refused)
{
	struct kv_pool *pool = test_pool(8, 8);
	struct kv_meminfo mi;
	u32 f, bogus = 1000;

	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, kv_frames_alloc(pool, KV_TIER_HOST, 1, 0, &f));
	kv_frames_free(pool, KV_TIER_HOST, 1, &f);
	kv_frames_free(pool, KV_TIER_HOST, 1, &f);
	kv_frames_free(pool, KV_TIER_HOST, 1, &bogus);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(8, mi.tier[KV_TIER_HOST].free);
	kv_pool_destroy(pool);
}

TEST(watermarks_derived)
{
	struct kv_vm_tunables vm = { .min_free_kbytes = 4096 * 4 / 1024 * 10,
				     .watermark_scale_factor = 100 };
	struct kv_pool *pool = test_pool_vm(10000, 100, KV_POOL_NO_KVSWAPD, &vm);
	struct kv_meminfo mi;

	ASSERT_NE_NULL(pool);
	kv_pool_meminfo(pool, &mi);
	/* 160 KiB = 40 frames; gap = max(40/4, 10000 * 100 / 10000) = 100. */
	EXPECT_EQ(40, mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_MIN]);
	EXPECT_EQ(140, mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_LOW]);
	EXPECT_EQ(240, mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_HIGH]);
	/* The host tier: min capped at a quarter, gaps shrunk to fit. */
	EXPECT_EQ(25, mi.tier[KV_TIER_HOST].wmark[KV_WMARK_MIN]);
	EXPECT_LT(mi.tier[KV_TIER_HOST].wmark[KV_WMARK_MIN],
		  mi.tier[KV_TIER_HOST].wmark[KV_WMARK_LOW]);
	EXPECT_LT(mi.tier[KV_TIER_HOST].wmark[KV_WMARK_HIGH], 100);

	vm.min_free_kbytes = 0;
	vm.watermark_scale_factor = 10;
	ASSERT_EQ(0, kv_pool_set_tunables(pool, &vm));
	kv_pool_meminfo(pool, &mi);
	/* automatic min: 1/128 of the tier = 78; gap = max(19, 10) = 19. */
	EXPECT_EQ(78, mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_MIN]);
	EXPECT_EQ(97, mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_LOW]);
	EXPECT_EQ(116, mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_HIGH]);

	vm.watermark_scale_factor = 5000;
	EXPECT_EQ(-EINVAL, kv_pool_set_tunables(pool, &vm));
	kv_pool_get_tunables(pool, &vm);
	EXPECT_EQ(10, vm.watermark_scale_factor);
	EXPECT_EQ(32, vm.reclaim_batch);
	ASSERT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(tiny_tiers_keep_ordered_watermarks)
{
	struct kv_pool *pool;
	struct kv_meminfo mi;
	u32 n;

	for (n = 1; n <= 12; n++) {
		pool = test_pool_vm(n, n, KV_POOL_NO_KVSWAPD, NULL);
		ASSERT_NE_NULL(pool);
		kv_pool_meminfo(pool, &mi);
		EXPECT_LE(mi.tier[0].wmark[KV_WMARK_MIN], mi.tier[0].wmark[KV_WMARK_LOW]);
		EXPECT_LE(mi.tier[0].wmark[KV_WMARK_LOW], mi.tier[0].wmark[KV_WMARK_HIGH]);
		EXPECT_LE(mi.tier[0].wmark[KV_WMARK_MIN], n / 4 + 1);
		EXPECT_LT(mi.tier[0].wmark[KV_WMARK_HIGH], n);
		EXPECT_POOL_OK(pool);
		kv_pool_destroy(pool);
	}
}

TEST(vmstat_names_and_meminfo_text)
{
	struct kv_pool *pool = test_pool(8, 8);
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	int i;

	ASSERT_NE_NULL(pool);
	for (i = 0; i < KV_NR_VM_EVENTS; i++)
		ASSERT_NE_NULL(kv_vmstat_name(i));
	EXPECT_NULL(kv_vmstat_name(KV_NR_VM_EVENTS));
	EXPECT_STREQ("cow_copy", kv_vmstat_name(KV_COW_COPY));
	f = open_memstream(&buf, &len);
	ASSERT_NE_NULL(f);
	kv_pool_print_meminfo(pool, f);
	kv_pool_print_vmstat(pool, f);
	fclose(f);
	EXPECT_NE_NULL(strstr(buf, "DeviceTotal:"));
	EXPECT_NE_NULL(strstr(buf, "HostFree:"));
	EXPECT_NE_NULL(strstr(buf, "pgdemote 0"));
	free(buf);
	kv_pool_destroy(pool);
}

TEST_HARNESS_MAIN
