// SPDX-License-Identifier: MIT
/*
 * The prefix cache (mm/prefix.c): longest-prefix matches on random prompt
 * trees against a model, forced hash collisions, eviction order and pins,
 * tenants, demotion instead of dropping, copy-on-write of cached blocks,
 * what a sequence publishes and when. Every token's content is a function
 * of its id and position, so a match that hands out the wrong block is
 * caught by reading the block. Every test ends with kv_pool_check().
 */
#include <pthread.h>
#include "kselftest_harness.h"
#include "../mm/mm_test.h"
#include "lib/siphash.h"

/* The content a kernel would write for token @id at position @pos. */
static u32 kv_of(u32 id, u32 pos)
{
	return id * 2654435761u ^ pos * 40503u ^ 0x5bd1e995u;
}

static struct kv_pool *prefix_pool(u32 dev, u32 host, u32 flags)
{
	struct kv_vm_tunables vm = { .min_free_kbytes = 4 };

	return test_pool_vm(dev, host, KV_POOL_NO_KVSWAPD | flags, &vm);
}

/* Append @n tokens with ids @ids to an active sequence, writing their KV. */
static int append_ids(struct kv_seq *seq, const u32 *ids, u32 n)
{
	struct kv_pool *pool = kv_seq_pool(seq);
	u32 pos = kv_seq_tokens(seq), i;
	u64 *slots = malloc((n + 1) * sizeof(*slots));
	int err;

	if (!slots)
		return -ENOMEM;
	err = kv_seq_append_ids(seq, n, ids, slots, 0);
	for (i = 0; !err && i < n; i++)
		tok_write(pool, slots[i], kv_of(ids[i], pos + i));
	free(slots);
	return err;
}

/* An active sequence's tokens hold the KV of @ids: -1, or the first bad one. */
static long verify_ids(struct kv_seq *seq, const u32 *ids)
{
	u32 n = kv_seq_tokens(seq), i;
	u32 *vals = malloc((n + 1) * sizeof(*vals));
	long bad;

	if (!vals)
		return -2;
	for (i = 0; i < n; i++)
		vals[i] = kv_of(ids[i], i);
	bad = seq_verify(seq, vals);
	free(vals);
	return bad;
}

/*
 * A request as an engine makes it: match the prompt, activate, append the
 * rest, check the matched part's KV, then deactivate and free. Returns
 * tokens matched, or a negative error; -EUCLEAN when KV read back is wrong.
 */
static int request(struct kv_pool *pool, u32 tenant, const u32 *ids, u32 n)
{
	struct kv_prefix_hit hit;
	struct kv_seq *seq;
	int m, err;

	err = kv_seq_create(pool, &seq);
	if (err)
		return err;
	kv_seq_set_tenant(seq, tenant);
	m = kv_prefix_match(seq, ids, n, &hit);
	err = m < 0 ? m : kv_seq_activate(seq, 0);
	if (!err && verify_ids(seq, ids) != -1)
		err = -EUCLEAN;
	if (!err)
		err = append_ids(seq, ids + m, n - m);
	if (!err && verify_ids(seq, ids) != -1)
		err = -EUCLEAN;
	kv_seq_deactivate(seq);
	kv_seq_free(seq);
	return err ? err : m;
}

static void random_ids(u64 *rng, u32 *ids, u32 n, u32 alphabet)
{
	u32 i;

	for (i = 0; i < n; i++)
		ids[i] = test_rand(rng, alphabet);
}

/*
 * Prompts from a random tree: each new prompt copies a random earlier
 * prompt's first k tokens (k random, often not a block multiple) and adds
 * its own. @alphabet small makes equal blocks in different places common.
 */
#define NPROMPTS	120
#define PLEN		48

static u32 tree_prompt(u64 *rng, u32 (*prompts)[PLEN], u32 i, u32 alphabet)
{
	u32 k = 0, from, len = 4 + test_rand(rng, PLEN - 3);

	if (i && test_rand(rng, 4)) {
		from = test_rand(rng, i);
		k = test_rand(rng, len + 1);
		memcpy(prompts[i], prompts[from], k * sizeof(u32));
	}
	random_ids(rng, prompts[i] + k, PLEN - k, alphabet);
	return len;
}

/* Longest whole-block prefix of @q (length @n) shared with any of @seen. */
static u32 model_match(u32 (*seen)[PLEN], const u32 *seen_len, u32 nseen, const u32 *q, u32 n)
{
	u32 best = 0, i, k;

	for (i = 0; i < nseen; i++) {
		for (k = 0; k < n && k < seen_len[i] && seen[i][k] == q[k]; k++)
			;
		k = k / TEST_BT * TEST_BT;
		if (k > best)
			best = k;
	}
	return best;
}

/* Run the random tree through a pool large enough never to evict. */
static int tree_run(struct __test_metadata *_metadata, struct kv_pool *pool, u64 seed,
		    u32 alphabet)
{
	static u32 prompts[NPROMPTS][PLEN], lens[NPROMPTS];
	u64 rng = seed;
	u32 i, q[PLEN], qn, want;
	int got, mismatches = 0;

	for (i = 0; i < NPROMPTS; i++) {
		lens[i] = tree_prompt(&rng, prompts, i, alphabet);
		/* Before inserting prompt i, look up a random variant of it. */
		memcpy(q, prompts[i], sizeof(q));
		qn = lens[i];
		if (test_rand(&rng, 2))
			q[test_rand(&rng, qn)] ^= 1;
		want = model_match(prompts, lens, i, q, qn);
		got = request(pool, 0, q, qn);
		if (got < 0)
			return got;
		if ((u32)got != want) {
			TH_LOG("prompt %u: matched %d tokens, model says %u", i, got, want);
			mismatches++;
		}
		/* The variant is cached now too: the model must know it. */
		memcpy(prompts[i], q, sizeof(q));
		EXPECT_EQ(lens[i] / TEST_BT * TEST_BT, (u32)request(pool, 0, q, qn));
	}
	return mismatches;
}

TEST(longest_prefix_on_random_trees)
{
	u64 seed;

	for (seed = 1; seed <= 6; seed++) {
		struct kv_pool *pool = prefix_pool(2048, 64, 0);

		ASSERT_NE_NULL(pool);
		EXPECT_EQ(0, tree_run(_metadata, pool, seed * 0x9e3779b97f4a7c15ull,
				      seed & 1 ? 3 : 50000));
		EXPECT_POOL_OK(pool);
		EXPECT_EQ(0, kv_vmstat_read(pool, KV_PREFIX_EVICT));
		kv_pool_destroy(pool);
	}
}

/* With 1- and 2-bit hashes every lookup meets colliding nodes: same answers. */
TEST(forced_collisions_never_match)
{
	u32 bits;

	for (bits = 1; bits <= 2; bits++) {
		struct kv_pool *pool = prefix_pool(2048, 64, 0);

		ASSERT_NE_NULL(pool);
		kv_prefix_set_hash_bits(pool, bits);
		EXPECT_EQ(0, tree_run(_metadata, pool, 77 + bits, 3));
		EXPECT_POOL_OK(pool);
		kv_pool_destroy(pool);
	}
}

/*
 * Prompts that differ from one another only in their second block, under a
 * 1-bit hash: most of those blocks collide with a's (all but 1 in 2^16
 * runs have one that does), and none may match it.
 */
TEST(collision_in_a_chain)
{
	struct kv_pool *pool = prefix_pool(128, 16, 0);
	u32 a[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, b[12], v;

	ASSERT_NE_NULL(pool);
	kv_prefix_set_hash_bits(pool, 1);
	EXPECT_EQ(0, request(pool, 0, a, 12));
	memcpy(b, a, sizeof(a));
	for (v = 0; v < 16; v++) {
		b[5] = 100 + v;
		EXPECT_EQ(4, request(pool, 0, b, 12));
		EXPECT_EQ(12, request(pool, 0, b, 12));
	}
	EXPECT_EQ(12, request(pool, 0, a, 12));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/* SipHash-2-4's reference vectors (key 00..0f, messages 00..len-1). */
TEST(siphash_reference_vectors)
{
	struct siphash_key key;
	unsigned char k[16], m[64];
	int i;

	for (i = 0; i < 16; i++)
		k[i] = (unsigned char)i;
	for (i = 0; i < 64; i++)
		m[i] = (unsigned char)i;
	memcpy(&key, k, sizeof(key));
	EXPECT_EQ(0x726fdb47dd0e0e31ull, siphash(m, 0, &key));
	EXPECT_EQ(0xa129ca6149be45e5ull, siphash(m, 15, &key));
	EXPECT_EQ(0x958a324ceb064572ull, siphash(m, 63, &key));
	EXPECT_NE(siphash(m, 63, &key), siphash13(m, 63, &key));
}

/* Cached blocks held only by the cache, per tier. */
static u32 evictable(struct kv_pool *pool, int tier)
{
	struct kv_meminfo mi;

	kv_pool_meminfo(pool, &mi);
	return mi.tier[tier].evictable;
}

static u32 cached(struct kv_pool *pool)
{
	struct kv_meminfo mi;

	kv_pool_meminfo(pool, &mi);
	return mi.tier[KV_TIER_DEVICE].cached + mi.tier[KV_TIER_HOST].cached;
}

/* Tokens of @ids still cached for tenant 0, found without changing them. */
static int probe(struct kv_pool *pool, const u32 *ids, u32 n)
{
	struct kv_prefix_hit hit;
	struct kv_seq *seq;
	int m;

	if (kv_seq_create(pool, &seq))
		return -ENOMEM;
	m = kv_prefix_match(seq, ids, n, &hit);
	kv_seq_free(seq);
	return m;
}

/*
 * Eviction: leaves before parents, coldest first. Chains A (3 blocks) and
 * B (2 blocks) are cached, A used last; evicting one block at a time must
 * take B's leaf, B's root, then A from its leaf up.
 */
TEST(eviction_leaves_first_coldest_first)
{
	struct kv_pool *pool = prefix_pool(32, 8, 0);
	u32 a[12], b[8], i;
	u64 rng = 5;

	ASSERT_NE_NULL(pool);
	random_ids(&rng, a, 12, 1000);
	random_ids(&rng, b, 8, 1000);
	ASSERT_EQ(0, request(pool, 0, a, 12));
	ASSERT_EQ(0, request(pool, 0, b, 8));
	ASSERT_EQ(12, probe(pool, a, 12));	/* A is now the warmer */
	ASSERT_EQ(5u, cached(pool));
	/* Only leaves are evictable. */
	EXPECT_EQ(2u, evictable(pool, KV_TIER_DEVICE));
	/* Demotion keeps them, in order; reclaim of the last tier evicts. */
	ASSERT_EQ(5u, kv_reclaim(pool, KV_TIER_DEVICE, 5));
	EXPECT_EQ(2u, evictable(pool, KV_TIER_HOST));
	for (i = 0; i < 5; i++) {
		ASSERT_EQ(1u, kv_reclaim(pool, KV_TIER_HOST, 1));
		EXPECT_POOL_OK(pool);
		/* Probing is a use: B first, so that A stays the warmer. */
		EXPECT_EQ(i < 2 ? (int)(4 - 4 * i) : 0, probe(pool, b, 8));
		EXPECT_EQ(i < 2 ? 12 : (int)(12 - 4 * (i - 1)), probe(pool, a, 12));
	}
	EXPECT_EQ(0u, cached(pool));
	EXPECT_EQ(5, (int)kv_vmstat_read(pool, KV_PREFIX_EVICT));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/*
 * A prefix split across tiers (one of its two blocks demoted, whichever
 * reclaim picked): reclaim of the host tier still gets to its block, even
 * when that block is the parent of one on the device.
 */
TEST(eviction_across_tiers)
{
	u32 a[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, round;
	struct kv_pool *pool = prefix_pool(32, 8, 0);
	struct kv_meminfo mi;

	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, request(pool, 0, a, 8));
	ASSERT_EQ(1u, kv_reclaim(pool, KV_TIER_DEVICE, 1));
	kv_pool_meminfo(pool, &mi);
	ASSERT_EQ(1u, mi.tier[KV_TIER_HOST].cached);
	for (round = 0; round < 2 && mi.tier[KV_TIER_HOST].cached; round++) {
		EXPECT_EQ(1u, kv_reclaim(pool, KV_TIER_HOST, 1));
		kv_pool_meminfo(pool, &mi);
	}
	EXPECT_EQ(0u, mi.tier[KV_TIER_HOST].cached);
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/*
 * Direct reclaim that frees its frames by eviction on the way: a chain of
 * 4 cached blocks, its first two demoted to a host tier they fill, its
 * last two (their children) left on the device. An append that needs the
 * whole device tier must make room below first; evicting there reaches
 * the host blocks through their device children (prefix_evict()), which
 * frees the device frames that shrink_tier() then finds nothing left to
 * demote for. The frames count as progress: the append succeeds. (It
 * failed with -ENOMEM, with the frames it needed free.)
 */
TEST(reclaim_counts_frames_freed_by_eviction_below)
{
	struct kv_pool *pool = prefix_pool(8, 2, 0);
	u32 ids[16], i;
	struct kv_meminfo mi;
	struct kv_seq *seq;
	u64 slots[28];

	ASSERT_NE_NULL(pool);
	for (i = 0; i < 16; i++)
		ids[i] = 100 + i;
	ASSERT_EQ(0, request(pool, 0, ids, 16));
	ASSERT_EQ(2u, kv_reclaim(pool, KV_TIER_DEVICE, 2));
	kv_pool_meminfo(pool, &mi);
	ASSERT_EQ(2u, mi.tier[KV_TIER_HOST].cached);
	ASSERT_EQ(0u, mi.tier[KV_TIER_HOST].free);
	ASSERT_EQ(0u, mi.tier[KV_TIER_HOST].evictable);	/* parents of device blocks */
	ASSERT_EQ(2u, mi.tier[KV_TIER_DEVICE].cached);
	ASSERT_EQ(6u, mi.tier[KV_TIER_DEVICE].free);
	ASSERT_EQ(1u, mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_MIN]);

	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	EXPECT_EQ(0, kv_seq_append(seq, 28, slots, 0));	/* 7 blocks: 8 frames with min */
	EXPECT_EQ(28u, kv_seq_tokens(seq));
	EXPECT_POOL_OK(pool);
	kv_seq_deactivate(seq);
	kv_seq_free(seq);
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(pinned_prefixes_are_never_evicted)
{
	struct kv_pool *pool = prefix_pool(24, 4, 0);
	u32 sys[16], other[16], i;
	struct kv_seq *seq;
	u64 rng = 9;

	ASSERT_NE_NULL(pool);
	random_ids(&rng, sys, 16, 1 << 20);
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, append_ids(seq, sys, 16));
	EXPECT_EQ(-EINVAL, kv_prefix_pin(seq, "has space"));
	EXPECT_EQ(-EINVAL, kv_prefix_pin(seq, ""));
	/* Pinning a prefix publishes it first: its KV is written by now. */
	EXPECT_EQ(16, kv_prefix_pin(seq, "system"));
	EXPECT_EQ(-EEXIST, kv_prefix_pin(seq, "system"));
	kv_seq_deactivate(seq);
	kv_seq_free(seq);
	/* Pressure: many other prompts through a small pool. */
	for (i = 0; i < 40; i++) {
		random_ids(&rng, other, 16, 1 << 20);
		ASSERT_LE(0, request(pool, 0, other, 16));
		EXPECT_POOL_OK(pool);
	}
	EXPECT_LT(0, (int)kv_vmstat_read(pool, KV_PREFIX_EVICT));
	EXPECT_EQ(16, request(pool, 0, sys, 16));
	/* Unpinned, it goes like any other. */
	EXPECT_EQ(0, kv_prefix_set_pinned(pool, "system", 0, KV_TENANT_ANY));
	EXPECT_EQ(-ENOENT, kv_prefix_set_pinned(pool, "nope", 0, KV_TENANT_ANY));
	for (i = 0; i < 40; i++) {
		random_ids(&rng, other, 16, 1 << 20);
		ASSERT_LE(0, request(pool, 0, other, 16));
	}
	EXPECT_EQ(0, probe(pool, sys, 16));
	/* Its name went with it. */
	EXPECT_EQ(-ENOENT, kv_prefix_set_pinned(pool, "system", 1, KV_TENANT_ANY));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(forget_and_drop)
{
	struct kv_pool *pool = prefix_pool(32, 8, 0);
	u32 ids[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
	struct kv_seq *seq;

	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, append_ids(seq, ids, 16));
	ASSERT_EQ(16, kv_prefix_pin(seq, "p"));
	kv_seq_deactivate(seq);
	kv_seq_free(seq);
	EXPECT_EQ(0u, kv_prefix_drop(pool));	/* all pinned */
	EXPECT_EQ(-EPERM, kv_prefix_forget(pool, "p", 7));	/* another tenant's */
	EXPECT_EQ(-EPERM, kv_prefix_set_pinned(pool, "p", 0, 7));
	EXPECT_EQ(0, kv_prefix_forget(pool, "p", 0));
	EXPECT_EQ(-ENOENT, kv_prefix_forget(pool, "p", 0));
	EXPECT_EQ(4u, kv_prefix_drop(pool));
	EXPECT_EQ(0u, cached(pool));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(tenants_are_isolated_both_ways)
{
	struct kv_pool *pool = prefix_pool(64, 16, 0);
	u32 ids[16], i;
	struct kv_prefix_stats st;

	ASSERT_NE_NULL(pool);
	for (i = 0; i < 16; i++)
		ids[i] = i * 7;
	EXPECT_EQ(0, request(pool, 1, ids, 16));
	EXPECT_EQ(0, request(pool, 2, ids, 16));	/* 1's blocks are not 2's */
	EXPECT_EQ(16, request(pool, 2, ids, 16));
	EXPECT_EQ(16, request(pool, 1, ids, 16));
	EXPECT_EQ(8u, cached(pool));			/* one copy each */
	EXPECT_EQ(0, request(pool, 3, ids, 16));
	ASSERT_EQ(0, kv_prefix_stats(pool, 2, &st));
	EXPECT_EQ(32u, st.query_tokens);
	EXPECT_EQ(16u, st.hit_tokens[KV_TIER_DEVICE]);
	EXPECT_EQ(4u, st.cached);
	EXPECT_EQ(-ENOENT, kv_prefix_stats(pool, 9, &st));
	ASSERT_EQ(0, kv_prefix_stats(pool, UINT32_MAX, &st));
	EXPECT_EQ(80u, st.query_tokens);
	EXPECT_EQ(12u, st.cached);
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(global_sharing_when_asked)
{
	struct kv_pool *pool = prefix_pool(64, 16, KV_POOL_PREFIX_GLOBAL);
	u32 ids[16], i;

	ASSERT_NE_NULL(pool);
	for (i = 0; i < 16; i++)
		ids[i] = i * 7;
	EXPECT_EQ(0, request(pool, 1, ids, 16));
	EXPECT_EQ(16, request(pool, 2, ids, 16));
	EXPECT_EQ(4u, cached(pool));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST(no_prefix_cache_when_off)
{
	struct kv_pool *pool = prefix_pool(64, 16, KV_POOL_NO_PREFIX);
	struct kv_seq *seq;
	u32 ids[16] = { 0 };

	ASSERT_NE_NULL(pool);
	EXPECT_EQ(0, request(pool, 1, ids, 16));
	EXPECT_EQ(0, request(pool, 1, ids, 16));
	EXPECT_EQ(0u, cached(pool));
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	EXPECT_EQ(-EOPNOTSUPP, kv_prefix_pin(seq, "x"));
	kv_seq_free(seq);
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/*
 * Under device pressure a cached block is demoted to the host tier, not
 * dropped; a later match finds it there and activation brings it back.
 */
TEST(cached_blocks_are_demoted_not_dropped)
{
	struct kv_pool *pool = prefix_pool(16, 64, 0);
	u32 sys[32], other[40], i;
	struct kv_prefix_hit hit;
	struct kv_seq *seq;
	u64 rng = 3;

	ASSERT_NE_NULL(pool);
	random_ids(&rng, sys, 32, 1 << 20);
	ASSERT_EQ(0, request(pool, 0, sys, 32));
	for (i = 0; i < 4; i++) {
		random_ids(&rng, other, 40, 1 << 20);
		ASSERT_EQ(0, request(pool, 0, other, 40));
	}
	EXPECT_LT(0u, (u32)kv_vmstat_read(pool, KV_PGDEMOTE));
	EXPECT_EQ(0u, (u32)kv_vmstat_read(pool, KV_PREFIX_EVICT));
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(32, kv_prefix_match(seq, sys, 32, &hit));
	EXPECT_LT(0u, hit.tier_tokens[KV_TIER_HOST]);
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	EXPECT_EQ(-1, verify_ids(seq, sys));
	kv_seq_deactivate(seq);
	kv_seq_free(seq);
	EXPECT_LT(0u, (u32)kv_vmstat_read(pool, KV_PREFIX_HIT_TOKENS_HOST));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/* The host tier full of cached blocks: they are evicted to make room. */
TEST(host_pressure_evicts)
{
	struct kv_pool *pool = prefix_pool(12, 12, 0);
	u32 ids[40], i;
	u64 rng = 4;

	ASSERT_NE_NULL(pool);
	for (i = 0; i < 30; i++) {
		random_ids(&rng, ids, 40, 1 << 20);
		ASSERT_EQ(0, request(pool, 0, ids, 40));
		EXPECT_POOL_OK(pool);
	}
	EXPECT_LT(0u, (u32)kv_vmstat_read(pool, KV_PREFIX_EVICT));
	EXPECT_EQ(40, request(pool, 0, ids, 40));	/* the latest survives */
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/* Writing into a cached block copies it; the cache keeps the original. */
TEST(writes_into_cached_blocks_copy)
{
	struct kv_pool *pool = prefix_pool(32, 8, 0);
	u32 ids[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, alt[8];
	struct kv_seq *seq;
	u64 slot;

	ASSERT_NE_NULL(pool);
	ASSERT_EQ(0, request(pool, 0, ids, 8));
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(8, kv_prefix_match(seq, ids, 8, &(struct kv_prefix_hit){ 0 }));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, kv_seq_write(seq, 1, &slot, 0));
	tok_write(pool, slot, 12345);
	kv_seq_deactivate(seq);
	kv_seq_free(seq);
	EXPECT_EQ(8, request(pool, 0, ids, 8));
	/* The same for a truncated sequence appending other tokens. */
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, append_ids(seq, ids, 8));
	kv_seq_deactivate(seq);			/* published: blocks swapped for cached ones */
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, kv_seq_truncate(seq, 6));
	memcpy(alt, ids, sizeof(alt));
	alt[6] = 70;
	alt[7] = 80;
	ASSERT_EQ(0, append_ids(seq, alt + 6, 2));
	EXPECT_EQ(-1, verify_ids(seq, alt));
	kv_seq_deactivate(seq);
	kv_seq_free(seq);
	EXPECT_EQ(8, request(pool, 0, ids, 8));
	EXPECT_EQ(8, request(pool, 0, alt, 8));
	EXPECT_LE(2u, (u32)kv_vmstat_read(pool, KV_COW_COPY));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/*
 * What a sequence publishes: blocks with known ids only, and not the
 * tokens of its last append while active (a client that dies mid-step
 * may not have written them); deactivation publishes everything.
 */
TEST(publishing_rules)
{
	struct kv_pool *pool = prefix_pool(64, 8, 0);
	u32 ids[16], i;
	struct kv_seq *seq;
	u64 slots[16];

	ASSERT_NE_NULL(pool);
	for (i = 0; i < 16; i++)
		ids[i] = 500 + i;
	/* Freed while active right after its only append: nothing cached. */
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, kv_seq_append_ids(seq, 16, ids, slots, 0));
	kv_seq_free(seq);
	EXPECT_EQ(0u, cached(pool));
	/* Appended without ids, then with: the chain is broken. */
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, kv_seq_append(seq, 4, slots, 0));
	ASSERT_EQ(0, append_ids(seq, ids + 4, 12));
	kv_seq_deactivate(seq);
	kv_seq_free(seq);
	EXPECT_EQ(0u, cached(pool));
	/* Two appends: the first one's full blocks are cached at free. */
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, append_ids(seq, ids, 9));
	ASSERT_EQ(0, append_ids(seq, ids + 9, 7));
	kv_seq_free(seq);
	EXPECT_EQ(2u, cached(pool));
	EXPECT_EQ(8, request(pool, 0, ids, 16));
	EXPECT_EQ(4u, cached(pool));
	/* kv_prefix_match() wants an empty, inactive sequence. */
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	EXPECT_EQ(-EINVAL, kv_prefix_match(seq, ids, 16, &(struct kv_prefix_hit){ 0 }));
	kv_seq_deactivate(seq);
	EXPECT_EQ(-EINVAL, kv_prefix_match(seq, NULL, 16, &(struct kv_prefix_hit){ 0 }));
	EXPECT_EQ(0, kv_prefix_match(seq, ids, 3, &(struct kv_prefix_hit){ 0 }));
	kv_seq_free(seq);
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/* A fork shares cached blocks; both go on, the cache stays consistent. */
TEST(fork_of_a_matched_sequence)
{
	struct kv_pool *pool = prefix_pool(64, 8, 0);
	u32 ids[20], a[24], b[24], i;
	struct kv_prefix_hit hit;
	struct kv_seq *seq, *child;

	ASSERT_NE_NULL(pool);
	for (i = 0; i < 20; i++)
		ids[i] = 900 + i;
	ASSERT_EQ(0, request(pool, 0, ids, 20));
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(20, kv_prefix_match(seq, ids, 20, &hit));
	ASSERT_EQ(0, kv_seq_fork(seq, &child));
	memcpy(a, ids, sizeof(ids));
	memcpy(b, ids, sizeof(ids));
	for (i = 20; i < 24; i++) {
		a[i] = i;
		b[i] = 100 + i;
	}
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, kv_seq_activate(child, 0));
	ASSERT_EQ(0, append_ids(seq, a + 20, 4));
	ASSERT_EQ(0, append_ids(child, b + 20, 4));
	EXPECT_EQ(-1, verify_ids(seq, a));
	EXPECT_EQ(-1, verify_ids(child, b));
	EXPECT_POOL_OK(pool);
	kv_seq_deactivate(seq);
	kv_seq_deactivate(child);
	kv_seq_free(seq);
	kv_seq_free(child);
	EXPECT_EQ(24, request(pool, 0, a, 24));
	EXPECT_EQ(24, request(pool, 0, b, 24));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/*
 * A fork starts from its parent's table and its parent's count of written
 * tokens. Its own first write vouches for every token it shares with the
 * parent (the protocol's contract: the parent's last STEP is written before
 * a fork's first STEP), and until then neither publishes the parent's last
 * append.
 */
TEST(a_fork_vouches_for_what_it_shares)
{
	struct kv_pool *pool = prefix_pool(64, 8, 0);
	struct kv_seq *seq, *child;
	u32 ids[12], i;
	u64 slots[8];

	ASSERT_NE_NULL(pool);
	for (i = 0; i < 12; i++)
		ids[i] = 700 + i;
	/* Forked right after an append whose KV nobody wrote: nothing cached. */
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, kv_seq_append_ids(seq, 8, ids, slots, 0));
	ASSERT_EQ(0, kv_seq_fork(seq, &child));
	kv_seq_free(child);
	kv_seq_free(seq);
	EXPECT_EQ(0u, cached(pool));
	/* The fork's first write publishes the two blocks it shares. */
	ASSERT_EQ(0, kv_seq_create(pool, &seq));
	ASSERT_EQ(0, kv_seq_activate(seq, 0));
	ASSERT_EQ(0, append_ids(seq, ids, 8));
	ASSERT_EQ(0, kv_seq_fork(seq, &child));
	EXPECT_EQ(0u, cached(pool));
	ASSERT_EQ(0, kv_seq_activate(child, 0));
	ASSERT_EQ(0, append_ids(child, ids + 8, 4));
	EXPECT_EQ(2u, cached(pool));
	kv_seq_free(child);
	kv_seq_free(seq);
	EXPECT_EQ(2u, cached(pool));
	EXPECT_EQ(8, request(pool, 0, ids, 12));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/* Duplicates made while active are replaced by the cached block on deactivation. */
TEST(duplicates_are_merged_on_deactivation)
{
	struct kv_pool *pool = prefix_pool(64, 8, 0);
	u32 ids[16], i;
	struct kv_seq *s1, *s2;
	struct kv_meminfo mi;

	ASSERT_NE_NULL(pool);
	for (i = 0; i < 16; i++)
		ids[i] = 40 + i;
	ASSERT_EQ(0, kv_seq_create(pool, &s1));
	ASSERT_EQ(0, kv_seq_create(pool, &s2));
	ASSERT_EQ(0, kv_seq_activate(s1, 0));
	ASSERT_EQ(0, kv_seq_activate(s2, 0));
	ASSERT_EQ(0, append_ids(s1, ids, 16));
	ASSERT_EQ(0, append_ids(s2, ids, 16));
	kv_seq_deactivate(s1);
	kv_seq_deactivate(s2);
	kv_pool_meminfo(pool, &mi);
	EXPECT_EQ(4u, mi.blocks);
	EXPECT_EQ(4u, cached(pool));
	ASSERT_EQ(0, kv_seq_activate(s2, 0));
	EXPECT_EQ(-1, verify_ids(s2, ids));
	kv_seq_free(s1);
	kv_seq_free(s2);
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

/* Many threads matching, appending and freeing over shared prompts. */
#define THREADS		6
#define ROUNDS		300

struct worker {
	struct kv_pool *pool;
	u32 (*sys)[24];
	u64 seed;
	u32 tenant;
	int errors;
};

static void *worker(void *arg)
{
	struct worker *w = arg;
	u32 ids[64], n, i;
	u64 rng = w->seed;
	int m;

	for (i = 0; i < ROUNDS; i++) {
		memcpy(ids, w->sys[test_rand(&rng, 4)], 24 * sizeof(u32));
		n = 24 + test_rand(&rng, 40);
		random_ids(&rng, ids + 24, n - 24, 4);
		m = request(w->pool, w->tenant, ids, n);
		if (m == -ENOMEM || m == -EAGAIN)
			continue;
		if (m < 0)
			w->errors++;
	}
	return NULL;
}

TEST(concurrent_matching_and_freeing)
{
	struct kv_vm_tunables vm = { .min_free_kbytes = 4 };
	struct kv_pool *pool = test_pool_vm(160, 160, 0, &vm);	/* with kvswapd */
	struct worker w[THREADS];
	pthread_t th[THREADS];
	u32 sys[4][24], i;
	u64 rng = 11;

	ASSERT_NE_NULL(pool);
	for (i = 0; i < 4; i++)
		random_ids(&rng, sys[i], 24, 1 << 16);
	for (i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ .pool = pool, .sys = sys, .seed = 100 + i, .tenant = i % 2 };
		ASSERT_EQ(0, pthread_create(&th[i], NULL, worker, &w[i]));
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, w[i].errors);
	}
	EXPECT_LT(0u, (u32)kv_vmstat_read(pool, KV_PREFIX_HIT_TOKENS_DEVICE) +
		      (u32)kv_vmstat_read(pool, KV_PREFIX_HIT_TOKENS_HOST));
	EXPECT_POOL_OK(pool);
	kv_pool_destroy(pool);
}

TEST_HARNESS_MAIN
