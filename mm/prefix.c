// SPDX-License-Identifier: MIT
/*
 * The prefix cache: full blocks named by what they hold, so that a prompt
 * that starts like an earlier one reuses its KV instead of recomputing it
 * (vLLM's hash-chained blocks, SGLang's radix tree), as the page cache
 * names pages by (inode, index).
 *
 * A full block's name is a keyed hash (SipHash-1-3 under a per-pool secret
 * key) of its namespace, its parent's hash and its token ids; the parent is
 * the block before it, so equal hashes mean equal prefixes up to hash
 * collisions, and a match also compares the namespace, the parent node and
 * every token id, so a collision never hands out another prompt's KV.
 * Nodes live in an array parallel to the block descriptors (a block is
 * cached at most once) and in a chained hash table; parent links make them
 * a forest, one tree per first block.
 *
 * The cache holds one reference on each cached block (KV_BLOCK_CACHED).
 * Sequences holding the block add theirs; a block only the cache holds is
 * an ordinary unpinned block on the LRU, so reclaim demotes it to the host
 * tier like any other. Eviction drops blocks that only the cache holds,
 * that have no cached children (leaves before parents) and no named pin,
 * coldest first: each tier keeps those in a min-heap by the clock of their
 * last use. Reclaim evicts from the last tier, and from a tier whose next
 * tier has no room (vmscan.c).
 *
 * When blocks are cached: a sequence's full blocks whose token ids are
 * known are inserted when the client is known to have written their K and
 * V: at its next append, at deactivation, and at free for all but the
 * tokens of its last append while active (a client that dies mid-step
 * never publishes KV it did not write). A block whose contents are cached
 * already as another block stays private while the sequence is active (its
 * client's block table points at it) and is swapped for the cached one
 * when it is deactivated.
 *
 * A cached block that cannot be read back from swap (an I/O error, a
 * checksum mismatch) leaves the cache with the blocks below it and the
 * names on them (prefix_drop_lost()): the next request recomputes them.
 *
 * Tenants: a sequence's tenant (kv_seq_set_tenant()) is its namespace, so
 * tenants never see each other's prefixes, unless the pool was created with
 * KV_POOL_PREFIX_GLOBAL, where every sequence uses one namespace. Counters
 * are kept per tenant either way.
 *
 * Locking: everything here runs under pool->lock. A match hashes the
 * prompt's blocks one at a time as it walks (no hashing past the first
 * miss), computing the next block's hash and prefetching its bucket while
 * the current one is compared.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "internal.h"

#define NS_GLOBAL	UINT64_MAX

static inline struct kv_prefix_node *pnode(struct kv_pool *pool, u32 idx)
{
	return &pool->prefix.nodes[idx];
}

static inline u32 *node_ids(struct kv_pool *pool, u32 idx)
{
	return pool->prefix.tokens + (size_t)idx * pool->geom.block_tokens;
}

static bool prefix_on(const struct kv_pool *pool)
{
	return !(pool->flags & KV_POOL_NO_PREFIX);
}

/* The cache serves this sequence: on in its pool, and a tenant it may use. */
static bool seq_prefix_on(const struct kv_seq *seq)
{
	return prefix_on(seq->pool) && seq->tenant != KV_TENANT_NONE;
}

static u64 seq_ns(const struct kv_seq *seq)
{
	return seq->pool->flags & KV_POOL_PREFIX_GLOBAL ? NS_GLOBAL : seq->tenant;
}

/* The chained name of a block: H(ns, parent's hash, ids). */
static u64 block_hash(const struct kv_pool *pool, u64 ns, u64 parent, const u32 *ids)
{
	u64 buf[2 + KV_MAX_BLOCK_TOKENS / 2];
	size_t len = (size_t)pool->geom.block_tokens * sizeof(u32);

	buf[0] = ns;
	buf[1] = parent;
	memcpy(buf + 2, ids, len);
	return siphash13(buf, 2 * sizeof(u64) + len, &pool->prefix.key) & pool->prefix.hash_mask;
}

/* ---- eviction heaps: evictable nodes of a tier by stamp ---------------- */

static bool stamp_less(struct kv_pool *pool, u32 a, u32 b)
{
	return pnode(pool, a)->stamp < pnode(pool, b)->stamp;
}

static void heap_set(struct kv_pool *pool, u32 *heap, u32 pos, u32 idx)
{
	heap[pos] = idx;
	pnode(pool, idx)->heap_pos = pos;
}

static void heap_up(struct kv_pool *pool, u32 *heap, u32 pos)
{
	u32 idx = heap[pos], up;

	while (pos) {
		up = (pos - 1) / 2;
		if (!stamp_less(pool, idx, heap[up]))
			break;
		heap_set(pool, heap, pos, heap[up]);
		pos = up;
	}
	heap_set(pool, heap, pos, idx);
}

static void heap_down(struct kv_pool *pool, u32 *heap, u32 n, u32 pos)
{
	u32 idx = heap[pos], c;

	while ((c = 2 * pos + 1) < n) {
		if (c + 1 < n && stamp_less(pool, heap[c + 1], heap[c]))
			c++;
		if (!stamp_less(pool, heap[c], idx))
			break;
		heap_set(pool, heap, pos, heap[c]);
		pos = c;
	}
	heap_set(pool, heap, pos, idx);
}

static void heap_add(struct kv_pool *pool, int tier, u32 idx)
{
	struct kv_prefix *pc = &pool->prefix;

	pnode(pool, idx)->heap_tier = (u32)tier;
	pc->heap[tier][pc->heap_n[tier]] = idx;
	heap_up(pool, pc->heap[tier], pc->heap_n[tier]++);
}

static void heap_del(struct kv_pool *pool, u32 idx)
{
	struct kv_prefix *pc = &pool->prefix;
	struct kv_prefix_node *n = pnode(pool, idx);
	u32 tier = n->heap_tier, pos = n->heap_pos, last;
	u32 *heap = pc->heap[tier];

	n->heap_pos = KV_PREFIX_NONE;
	last = heap[--pc->heap_n[tier]];
	if (pos == pc->heap_n[tier])
		return;
	heap_set(pool, heap, pos, last);
	heap_up(pool, heap, pos);
	heap_down(pool, heap, pc->heap_n[tier], pnode(pool, last)->heap_pos);
}

/**
 * prefix_recheck() - put a cached block in its tier's eviction heap, or
 * take it out, after its references, lock, children, pins or tier changed;
 * count it idle or not
 * @pool: pool, locked
 * @b:    block
 */
void prefix_recheck(struct kv_pool *pool, struct kv_block *b)
{
	u32 idx = kv_block_idx(pool, b);
	struct kv_prefix_node *n = pnode(pool, idx);
	bool idle = (b->flags & (KV_BLOCK_CACHED | KV_BLOCK_LOCKED)) == KV_BLOCK_CACHED &&
		    b->refcount == 1 && !n->pins;
	bool want = idle && !n->nr_children;

	/* Tiers change only while locked, so never under an idle node. */
	if (idle != n->idle) {
		n->idle = idle;
		if (idle)
			pool->prefix.nr_idle[b->tier]++;
		else
			pool->prefix.nr_idle[b->tier]--;
	}
	if (n->heap_pos != KV_PREFIX_NONE && (!want || n->heap_tier != b->tier))
		heap_del(pool, idx);
	if (want && n->heap_pos == KV_PREFIX_NONE)
		heap_add(pool, b->tier, idx);
}

/**
 * prefix_touch() - record a use of a cached block (a match, or a sequence
 * letting it go)
 * @pool: pool, locked
 * @b:    block; nothing happens unless it is cached
 */
void prefix_touch(struct kv_pool *pool, struct kv_block *b)
{
	u32 idx = kv_block_idx(pool, b);
	struct kv_prefix_node *n;

	if (!(b->flags & KV_BLOCK_CACHED))
		return;
	n = pnode(pool, idx);
	n->stamp = ++pool->prefix.clock;
	if (n->heap_pos != KV_PREFIX_NONE)
		heap_down(pool, pool->prefix.heap[n->heap_tier], pool->prefix.heap_n[n->heap_tier],
			  n->heap_pos);
}

/* ---- per-tenant counters ------------------------------------------------ */

/* The tenant's counters, created on first use; NULL when out of memory. */
static struct kv_prefix_stats *tenant_stats(struct kv_pool *pool, u32 tenant)
{
	struct kv_prefix *pc = &pool->prefix;
	struct kv_prefix_stats *t;
	u32 lo = 0, hi = pc->nr_tenants, mid;

	while (lo < hi) {
		mid = (lo + hi) / 2;
		if (pc->tenants[mid].tenant < tenant)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < pc->nr_tenants && pc->tenants[lo].tenant == tenant)
		return &pc->tenants[lo];
	t = kv_meta_realloc(pool, pc->tenants, (pc->nr_tenants + 1) * sizeof(*t));
	if (!t)
		return NULL;
	pc->tenants = t;
	memmove(t + lo + 1, t + lo, (pc->nr_tenants - lo) * sizeof(*t));
	memset(t + lo, 0, sizeof(*t));
	t[lo].tenant = tenant;
	pc->nr_tenants++;
	return &t[lo];
}

/* ---- the hash table ------------------------------------------------------ */

/* The cached node equal to (ns, parent, ids) under hash @h, or NONE. */
static u32 prefix_lookup(struct kv_pool *pool, u64 h, u64 ns, u32 parent, const u32 *ids)
{
	struct kv_prefix *pc = &pool->prefix;
	size_t len = (size_t)pool->geom.block_tokens * sizeof(u32);
	struct kv_prefix_node *n;
	u32 i;

	for (i = pc->buckets[h & pc->bucket_mask]; i != KV_PREFIX_NONE; i = n->next) {
		n = pnode(pool, i);
		if (n->hash == h && n->ns == ns && n->parent == parent &&
		    !memcmp(node_ids(pool, i), ids, len))
			return i;
	}
	return KV_PREFIX_NONE;
}

/* Cache block @idx as the child of @parent; the cache takes a reference. */
static void prefix_insert(struct kv_pool *pool, u32 idx, u32 parent, u64 h, u64 ns,
			  const u32 *ids, u32 tenant)
{
	struct kv_prefix *pc = &pool->prefix;
	struct kv_prefix_node *n = pnode(pool, idx);
	struct kv_block *b = kv_block(pool, idx);
	struct kv_prefix_stats *ts;
	u32 *head = &pc->buckets[h & pc->bucket_mask];

	*n = (struct kv_prefix_node){ .hash = h, .ns = ns, .stamp = ++pc->clock, .parent = parent,
				      .next = *head, .tenant = tenant,
				      .heap_pos = KV_PREFIX_NONE };
	n->depth = parent == KV_PREFIX_NONE ? 1 : pnode(pool, parent)->depth + 1;
	memcpy(node_ids(pool, idx), ids, (size_t)pool->geom.block_tokens * sizeof(u32));
	*head = idx;
	if (parent != KV_PREFIX_NONE) {
		pnode(pool, parent)->nr_children++;
		prefix_recheck(pool, kv_block(pool, parent));
	}
	b->flags |= KV_BLOCK_CACHED;
	kv_block_get(b);
	pc->nr_cached[b->tier]++;
	ts = tenant_stats(pool, tenant);
	if (ts) {
		ts->inserted++;
		ts->cached++;
	}
	count_vm_event(pool, KV_PREFIX_INSERT);
	prefix_recheck(pool, b);
}

static void names_drop_node(struct kv_pool *pool, u32 idx)
{
	struct kv_prefix *pc = &pool->prefix;
	u32 i = 0;

	while (i < pc->nr_names) {
		if (pc->names[i].node == idx)
			pc->names[i] = pc->names[--pc->nr_names];
		else
			i++;
	}
}

/*
 * Take a node without cached children or pins out of the cache and drop
 * its reference; @ev: the event it counts, KV_PREFIX_EVICT or
 * KV_PREFIX_LOST.
 */
static void prefix_remove(struct kv_pool *pool, u32 idx, int ev)
{
	struct kv_prefix *pc = &pool->prefix;
	struct kv_prefix_node *n = pnode(pool, idx);
	struct kv_block *b = kv_block(pool, idx);
	struct kv_prefix_stats *ts;
	u32 *link = &pc->buckets[n->hash & pc->bucket_mask];

	while (*link != idx)
		link = &pnode(pool, *link)->next;
	*link = n->next;
	b->flags &= ~KV_BLOCK_CACHED;
	prefix_recheck(pool, b);	/* out of the heap, not idle */
	pc->nr_cached[b->tier]--;
	if (n->parent != KV_PREFIX_NONE) {
		pnode(pool, n->parent)->nr_children--;
		prefix_recheck(pool, kv_block(pool, n->parent));
	}
	names_drop_node(pool, idx);
	ts = tenant_stats(pool, n->tenant);
	if (ts) {
		ts->evicted += ev == KV_PREFIX_EVICT;
		ts->cached -= !!ts->cached;	/* 0 when its insert went uncounted */
	}
	count_vm_event(pool, ev);
	kv_block_put(pool, b);
}

/* The coldest evictable node of any tier, or KV_PREFIX_NONE. */
static u32 coldest_leaf(struct kv_pool *pool)
{
	struct kv_prefix *pc = &pool->prefix;
	u32 best = KV_PREFIX_NONE;
	int t;

	for (t = 0; t < KV_NR_TIERS; t++)
		if (pc->heap_n[t] && (best == KV_PREFIX_NONE || stamp_less(pool, pc->heap[t][0], best)))
			best = pc->heap[t][0];
	return best;
}

/**
 * prefix_evict() - drop up to @nr cached blocks to free frames of @tier
 * @pool: pool, locked
 * @tier: tier whose frames are wanted
 * @nr:   blocks
 *
 * Only blocks that no sequence holds, with no cached children and no pin,
 * coldest first; a parent left childless becomes a candidate in turn. When
 * @tier's idle blocks are all parents of blocks resident elsewhere (a hot
 * leaf stayed on the device while its prefix was demoted), the coldest
 * leaves of the other tiers go first, to reach them.
 *
 * Return: blocks dropped.
 */
u32 prefix_evict(struct kv_pool *pool, int tier, u32 nr)
{
	struct kv_prefix *pc = &pool->prefix;
	u32 done = 0, idx;

	if (!prefix_on(pool))
		return 0;
	while (done < nr) {
		if (pc->heap_n[tier])
			idx = pc->heap[tier][0];
		else if (pc->nr_idle[tier])
			idx = coldest_leaf(pool);
		else
			break;
		if (idx == KV_PREFIX_NONE)
			break;
		prefix_remove(pool, idx, KV_PREFIX_EVICT);
		done++;
	}
	return done;
}

/* A block in swap whose slot's last read failed: its KV is lost. */
static bool block_unreadable(struct kv_pool *pool, const struct kv_block *b)
{
	return b->tier == KV_TIER_SWAP && swap_slot_failed(pool, b->frame[KV_TIER_SWAP]);
}

/* ---- sequences ------------------------------------------------------------ */

/**
 * prefix_publish() - insert a sequence's full, written blocks whose token
 * ids are known
 * @seq:  sequence, pool locked
 * @mode: PUBLISH_ACTIVE (the client's table must not change: stop at a
 *        block cached already as another), PUBLISH_DEDUP (inactive: use the
 *        cached block instead of its own copy), PUBLISH_FINAL (the sequence
 *        is being freed)
 */
void prefix_publish(struct kv_seq *seq, int mode)
{
	struct kv_pool *pool = seq->pool;
	u32 bt = pool->geom.block_tokens, i, limit, parent, found;
	u64 ns = seq_ns(seq), ph, h;
	const u32 *ids;
	struct kv_block *b;

	if (!seq_prefix_on(seq))
		return;
	limit = (seq->nr_ids < seq->nr_safe ? seq->nr_ids : seq->nr_safe) / bt;
	if (limit > seq->nr_blocks)
		limit = seq->nr_blocks;
	parent = seq->nr_cached ? seq->table[seq->nr_cached - 1] : KV_PREFIX_NONE;
	ph = parent != KV_PREFIX_NONE ? pnode(pool, parent)->hash : 0;
	for (i = seq->nr_cached; i < limit; i++) {
		ids = seq->ids + (size_t)i * bt;
		b = kv_block(pool, seq->table[i]);
		h = block_hash(pool, ns, ph, ids);
		found = prefix_lookup(pool, h, ns, parent, ids);
		/*
		 * Its own KV is lost (prefix_drop_lost()): never into the
		 * chain, but a cached good copy may take its place.
		 */
		if ((found == KV_PREFIX_NONE || found == seq->table[i]) &&
		    block_unreadable(pool, b))
			break;
		if (found == KV_PREFIX_NONE) {
			/* Cached under other ids (a client naming a shared block twice). */
			if (b->flags & KV_BLOCK_CACHED)
				break;
			prefix_insert(pool, seq->table[i], parent, h, ns, ids, seq->tenant);
			found = seq->table[i];
		} else if (found != seq->table[i]) {
			if (mode == PUBLISH_ACTIVE)
				break;
			if (mode == PUBLISH_DEDUP) {
				kv_block_get(kv_block(pool, found));
				prefix_touch(pool, kv_block(pool, found));
				prefix_recheck(pool, kv_block(pool, found));
				seq->table[i] = found;
				kv_block_put(pool, b);
			}
		}
		parent = found;
		ph = pnode(pool, found)->hash;
		if (found == seq->table[i] && seq->nr_cached == i)
			seq->nr_cached = i + 1;
	}
}

/**
 * prefix_restore_node() - cache block @idx (resident, one reference held
 * by the caller, which the cache takes over) as the child of @parent
 * @pool:   pool, locked
 * @idx:    the block
 * @parent: a cached block, or KV_PREFIX_NONE
 * @tenant: its tenant
 * @ids:    its block_tokens token ids
 *
 * Return: 0, or -EEXIST when the same prefix is cached already (the
 * caller's reference is dropped either way).
 */
int prefix_restore_node(struct kv_pool *pool, u32 idx, u32 parent, u32 tenant, const u32 *ids)
{
	u64 ns = pool->flags & KV_POOL_PREFIX_GLOBAL ? NS_GLOBAL : tenant;
	u64 ph = parent == KV_PREFIX_NONE ? 0 : pnode(pool, parent)->hash;
	u64 h = block_hash(pool, ns, ph, ids);
	struct kv_block *b = kv_block(pool, idx);
	int err = 0;

	if (!prefix_on(pool) || prefix_lookup(pool, h, ns, parent, ids) != KV_PREFIX_NONE)
		err = -EEXIST;
	else
		prefix_insert(pool, idx, parent, h, ns, ids, tenant);
	kv_block_put(pool, b);
	return err;
}

/**
 * prefix_seq_cut() - a sequence keeps only its first @nr_tokens tokens as
 * they are (truncate, or a write at @nr_tokens)
 * @seq:       sequence
 * @nr_tokens: tokens unchanged
 */
void prefix_seq_cut(struct kv_seq *seq, u32 nr_tokens)
{
	u32 full = nr_tokens / seq->pool->geom.block_tokens;

	if (seq->nr_ids > nr_tokens)
		seq->nr_ids = nr_tokens;
	if (seq->nr_safe > nr_tokens)
		seq->nr_safe = nr_tokens;
	if (seq->nr_cached > full)
		seq->nr_cached = full;
}

static void count_match(struct kv_pool *pool, u32 tenant, u32 n, const struct kv_prefix_hit *hit)
{
	struct kv_prefix_stats *ts = tenant_stats(pool, tenant);
	int t;

	count_vm_events(pool, KV_PREFIX_QUERY_TOKENS, n);
	count_vm_events(pool, KV_PREFIX_HIT_TOKENS_DEVICE, hit->tier_tokens[KV_TIER_DEVICE]);
	count_vm_events(pool, KV_PREFIX_HIT_TOKENS_HOST, hit->tier_tokens[KV_TIER_HOST]);
	count_vm_events(pool, KV_PREFIX_HIT_TOKENS_SWAP, hit->tier_tokens[KV_TIER_SWAP]);
	if (!ts)
		return;
	ts->query_tokens += n;
	for (t = 0; t < KV_NR_TIERS; t++)
		ts->hit_tokens[t] += hit->tier_tokens[t];
}

/* Prefetch what looking up hash @h will read first: its bucket's node. */
static void prefetch_head(struct kv_pool *pool, u64 h)
{
	u32 head = pool->prefix.buckets[h & pool->prefix.bucket_mask];

	if (head == KV_PREFIX_NONE)
		return;
	__builtin_prefetch(pnode(pool, head));
	__builtin_prefetch(node_ids(pool, head));
	__builtin_prefetch(kv_block(pool, head));
}

/* How far ahead a match hashes and prefetches buckets, and then nodes. */
#define AHEAD_BUCKET	4
#define AHEAD_NODE	2
#define AHEAD_RING	8	/* a power of two above AHEAD_BUCKET */

/*
 * Walk the prompt's blocks through the cache; the matched blocks join
 * @seq. A pipeline hides the cache misses: while block i is compared,
 * block i + AHEAD_BUCKET is hashed and its bucket prefetched, and block
 * i + AHEAD_NODE's first node, token ids and descriptor are prefetched.
 */
static void match_locked(struct kv_seq *seq, const u32 *ids, u32 nb, struct kv_prefix_hit *hit)
{
	struct kv_pool *pool = seq->pool;
	struct kv_prefix *pc = &pool->prefix;
	u32 bt = pool->geom.block_tokens, parent = KV_PREFIX_NONE, i, k, found;
	u64 ns = seq_ns(seq), h[AHEAD_RING], ph = 0;
	struct kv_block *b;

	for (k = 0; k < AHEAD_BUCKET && k < nb; k++) {
		ph = h[k] = block_hash(pool, ns, ph, ids + (size_t)k * bt);
		__builtin_prefetch(&pc->buckets[ph & pc->bucket_mask]);
	}
	for (i = 0; i < nb; i++) {
		if (k < nb) {
			ph = h[k % AHEAD_RING] = block_hash(pool, ns, ph, ids + (size_t)k * bt);
			__builtin_prefetch(&pc->buckets[ph & pc->bucket_mask]);
			k++;
		}
		if (i + AHEAD_NODE < nb)
			prefetch_head(pool, h[(i + AHEAD_NODE) % AHEAD_RING]);
		found = prefix_lookup(pool, h[i % AHEAD_RING], ns, parent, ids + (size_t)i * bt);
		if (found == KV_PREFIX_NONE)
			break;
		b = kv_block(pool, found);
		kv_block_get(b);
		prefix_recheck(pool, b);	/* out of the heap: no reordering */
		prefix_touch(pool, b);
		seq->table[i] = found;
		hit->tier_tokens[b->tier] += bt;
		parent = found;
	}
	seq->nr_blocks = i;
	seq->nr_tokens = seq->nr_ids = seq->nr_safe = i * bt;
	seq->nr_cached = i;
	hit->blocks = i;
	hit->tokens = i * bt;
}

/**
 * kv_prefix_match() - start an empty sequence with the longest cached
 * prefix of a prompt
 * @seq: sequence with no tokens, inactive
 * @ids: the prompt's token ids
 * @n:   their number
 * @hit: receives what was found
 *
 * Walks the prompt's whole blocks through the cache; the blocks found join
 * the sequence (references taken), wherever they are resident: activation
 * brings blocks on the host tier back to the device. The caller then
 * appends the rest of the prompt (with its ids). Counts @n query tokens
 * and the hits per tier.
 *
 * Return: tokens matched (a multiple of block_tokens, possibly 0), or
 * -EINVAL (the sequence holds tokens or is active, @ids is NULL), -E2BIG,
 * -ENOMEM.
 */
int kv_prefix_match(struct kv_seq *seq, const u32 *ids, u32 n, struct kv_prefix_hit *hit)
{
	struct kv_pool *pool = seq->pool;
	u32 bt = pool->geom.block_tokens, nb = n / bt;
	int err;

	memset(hit, 0, sizeof(*hit));
	if (seq->nr_tokens || (seq->flags & KV_SEQ_ACTIVE) || (!ids && n))
		return -EINVAL;
	if (n > KV_SEQ_MAX_TOKENS)
		return -E2BIG;
	if (seq->tenant == KV_TENANT_NONE)
		return 0;
	if (!prefix_on(pool) || !nb) {
		kv_pool_lock(pool);
		count_match(pool, seq->tenant, n, hit);
		kv_pool_unlock(pool);
		return 0;
	}
	err = seq_reserve(seq, nb);
	err = err ?: seq_reserve_ids(seq, nb * bt);
	if (err)
		return err;
	memcpy(seq->ids, ids, (size_t)nb * bt * sizeof(*ids));
	kv_pool_lock(pool);
	match_locked(seq, ids, nb, hit);
	count_match(pool, seq->tenant, n, hit);
	kv_pool_unlock(pool);
	return (int)hit->tokens;
}

/* ---- named prefixes ------------------------------------------------------- */

static struct kv_prefix_name *name_find(struct kv_pool *pool, const char *name)
{
	struct kv_prefix *pc = &pool->prefix;
	u32 i;

	for (i = 0; i < pc->nr_names; i++)
		if (!strcmp(pc->names[i].name, name))
			return &pc->names[i];
	return NULL;
}

static u32 names_of(struct kv_pool *pool, u32 tenant)
{
	u32 i, n = 0;

	for (i = 0; i < pool->prefix.nr_names; i++)
		n += pool->prefix.names[i].tenant == tenant;
	return n;
}

static bool name_valid(const char *name)
{
	size_t len = name ? strnlen(name, KV_PREFIX_NAME_MAX) : 0;
	size_t i;

	if (!len || len == KV_PREFIX_NAME_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (name[i] <= ' ' || name[i] > '~')
			return false;
	return true;
}

/* A pin counts on the named node and on every node above it. */
static void name_pin(struct kv_pool *pool, struct kv_prefix_name *nm, bool pin)
{
	u32 i;

	if (nm->pinned == pin)
		return;
	nm->pinned = pin;
	for (i = nm->node; i != KV_PREFIX_NONE; i = pnode(pool, i)->parent) {
		if (pin)
			pnode(pool, i)->pins++;
		else
			pnode(pool, i)->pins--;
		prefix_recheck(pool, kv_block(pool, i));
	}
}

/**
 * kv_prefix_pin() - cache a sequence's prefix and pin it under a name (a
 * system prompt): never evicted until unpinned
 * @seq:  sequence whose full blocks with known ids form the prefix
 * @name: 1..63 printable characters, no spaces, unique in the pool
 *
 * The caller must have written the K and V of all the sequence's tokens.
 * Every block of the prefix counts the pin. The pinned blocks may still be
 * demoted to the host tier.
 *
 * Return: tokens pinned, or -EINVAL (bad name), -EEXIST, -ENOSPC (the pool
 * has KV_PREFIX_NAMES_MAX names, or the tenant KV_PREFIX_NAMES_PER_TENANT),
 * -ENODATA (no full block with known ids), -EOPNOTSUPP (the pool
 * has no prefix cache, or the sequence's tenant is KV_TENANT_NONE).
 */
int kv_prefix_pin(struct kv_seq *seq, const char *name)
{
	struct kv_pool *pool = seq->pool;
	struct kv_prefix *pc = &pool->prefix;
	struct kv_prefix_name *nm;
	int ret;

	if (!seq_prefix_on(seq))
		return -EOPNOTSUPP;
	if (!name_valid(name))
		return -EINVAL;
	kv_pool_lock(pool);
	seq->nr_safe = seq->nr_tokens;
	prefix_publish(seq, seq->flags & KV_SEQ_ACTIVE ? PUBLISH_ACTIVE : PUBLISH_DEDUP);
	if (name_find(pool, name)) {
		ret = -EEXIST;
	} else if (pc->nr_names == KV_PREFIX_NAMES_MAX ||
		   names_of(pool, seq->tenant) >= KV_PREFIX_NAMES_PER_TENANT) {
		ret = -ENOSPC;
	} else if (!seq->nr_cached) {
		ret = -ENODATA;
	} else {
		nm = &pc->names[pc->nr_names++];
		memset(nm, 0, sizeof(*nm));
		strcpy(nm->name, name);
		nm->node = seq->table[seq->nr_cached - 1];
		nm->hash = pnode(pool, nm->node)->hash;
		nm->tenant = seq->tenant;
		name_pin(pool, nm, true);
		ret = (int)(seq->nr_cached * pool->geom.block_tokens);
	}
	kv_pool_unlock(pool);
	return ret;
}

/* The name, if @tenant may change it: NULL with *@err set otherwise. */
static struct kv_prefix_name *name_get(struct kv_pool *pool, const char *name, u32 tenant,
				       int *err)
{
	struct kv_prefix_name *nm = name_valid(name) ? name_find(pool, name) : NULL;

	*err = nm ? 0 : -ENOENT;
	if (nm && tenant != KV_TENANT_ANY && nm->tenant != tenant) {
		*err = -EPERM;
		nm = NULL;
	}
	return nm;
}

/**
 * kv_prefix_set_pinned() - pin or unpin a named prefix (kvmemctl prefix
 * pin/unpin)
 * @pool:   pool
 * @name:   the name given to kv_prefix_pin()
 * @pinned: 1 to pin, 0 to unpin (it may then be evicted, and its name with
 *          it)
 * @tenant: the tenant asking (only the one that named it may), or
 *          KV_TENANT_ANY
 *
 * Return: 0, -ENOENT (no such name), -EPERM.
 */
int kv_prefix_set_pinned(struct kv_pool *pool, const char *name, int pinned, u32 tenant)
{
	struct kv_prefix_name *nm;
	int err;

	kv_pool_lock(pool);
	nm = name_get(pool, name, tenant, &err);
	if (nm)
		name_pin(pool, nm, pinned);
	kv_pool_unlock(pool);
	return err;
}

/**
 * kv_prefix_forget() - unpin a named prefix and drop its name
 * @pool:   pool
 * @name:   the name
 * @tenant: as kv_prefix_set_pinned()
 *
 * Return: 0, -ENOENT, -EPERM.
 */
int kv_prefix_forget(struct kv_pool *pool, const char *name, u32 tenant)
{
	struct kv_prefix *pc = &pool->prefix;
	struct kv_prefix_name *nm;
	int err;

	kv_pool_lock(pool);
	nm = name_get(pool, name, tenant, &err);
	if (nm) {
		name_pin(pool, nm, false);
		*nm = pc->names[--pc->nr_names];
	}
	kv_pool_unlock(pool);
	return err;
}


/* ---- blocks lost to a failed swap read ------------------------------------ */

#define LOST_UNKNOWN	0
#define LOST_KEPT	1
#define LOST_DOOMED	2

/*
 * Mark @idx and every node above it up to the first one already marked
 * with the fate of that one (kept when the walk reaches a root): a node
 * goes with the cache's copy of a lost block above it.
 */
static u8 lost_resolve(struct kv_pool *pool, u8 *mark, u32 idx)
{
	u32 i = idx;
	u8 fate;

	while (i != KV_PREFIX_NONE && mark[i] == LOST_UNKNOWN)
		i = pnode(pool, i)->parent;
	fate = i == KV_PREFIX_NONE ? LOST_KEPT : mark[i];
	for (i = idx; i != KV_PREFIX_NONE && mark[i] == LOST_UNKNOWN; i = pnode(pool, i)->parent)
		mark[i] = fate;
	return fate;
}

/* Unpin and forget the names whose node is doomed; the log says which. */
static void lost_names(struct kv_pool *pool, const u8 *mark)
{
	struct kv_prefix *pc = &pool->prefix;
	struct kv_prefix_name *nm;
	u32 i = 0;

	while (i < pc->nr_names) {
		nm = &pc->names[i];
		if (mark[nm->node] != LOST_DOOMED) {
			i++;
			continue;
		}
		fprintf(stderr, "kvmem: %s: prefix '%s' dropped: a swap slot of it is unreadable\n",
			pool->name, nm->name);
		name_pin(pool, nm, false);
		*nm = pc->names[--pc->nr_names];
	}
}

/*
 * A doomed block that sequences keep: no longer immutable once uncached
 * (a sequence that holds it alone writes it in place), so its clean swap
 * copy goes now, or, marked KV_BLOCK_LOST, at the end of the move that
 * holds it locked (kv_block_putback()).
 */
static void lost_block(struct kv_pool *pool, u32 idx)
{
	struct kv_block *b = kv_block(pool, idx);

	if (b->flags & KV_BLOCK_SWAPCACHE) {
		if (b->flags & KV_BLOCK_LOCKED)
			b->flags |= KV_BLOCK_LOST;
		else
			swapcache_free(pool, b);
	}
	prefix_remove(pool, idx, KV_PREFIX_LOST);
}

/* Each sequence's cached entries end at its first block out of the cache. */
static void lost_seqs(struct kv_pool *pool)
{
	struct kv_seq *seq;
	u32 i;

	list_for_each_entry(seq, &pool->seqs, node) {
		for (i = 0; i < seq->nr_cached; i++) {
			if (!(kv_block(pool, seq->table[i])->flags & KV_BLOCK_CACHED)) {
				seq->nr_cached = i;
				break;
			}
		}
	}
}

static int depth_desc(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/**
 * prefix_drop_lost() - forget the cached blocks that a failed swap read
 * leaves without contents
 * @pool:   pool, locked
 * @blocks: the blocks of a move from the swap tier that failed (locked)
 * @n:      their number
 *
 * A cached block whose slot's last read failed (swap_slot_failed(): an I/O
 * error or a checksum mismatch) is the cache's only copy of that KV. Left
 * in, it would be matched again and fail every activation that needs it,
 * for as long as matches keep it warm or, named, forever. It leaves the
 * cache with every cached block below it (their names need its node), and
 * every name on them is unpinned and dropped. Sequences that hold those
 * blocks keep their references, their cached entries end before the first
 * of them, and the blocks lose their clean swap copies (they may be
 * written in place once uncached); a sequence whose copy cannot be read
 * fails its activations until the client frees it, and never publishes
 * its own copy (prefix_publish() stops where it would): at free, its later
 * blocks go into the cache under a recomputed copy if one is cached, and
 * kv_prefix_pin() takes that copy in its place (dedup). The next request
 * for the prompt misses there and recomputes it. A transient error costs
 * a recomputation only. Without memory for the walk nothing is dropped
 * (logged): the blocks stay cached, and fail as before.
 *
 * Return: blocks dropped (counted as KV_PREFIX_LOST).
 */
u32 prefix_drop_lost(struct kv_pool *pool, struct kv_block **blocks, u32 n)
{
	u32 i, nr = 0, done = 0;
	u8 *mark = NULL;
	u64 *order = NULL;

	for (i = 0; i < n; i++)
		if ((blocks[i]->flags & KV_BLOCK_CACHED) && block_unreadable(pool, blocks[i]))
			break;
	if (i == n)
		return 0;
	mark = kv_meta_alloc(pool, pool->nr_blocks * sizeof(*mark));
	order = kv_meta_alloc(pool, (size_t)pool->nr_blocks * sizeof(*order));
	if (!mark || !order) {
		fprintf(stderr, "kvmem: %s: no memory to drop unreadable cached blocks; they stay\n",
			pool->name);
		goto out;
	}
	for (; i < n; i++)
		if ((blocks[i]->flags & KV_BLOCK_CACHED) && block_unreadable(pool, blocks[i]))
			mark[kv_block_idx(pool, blocks[i])] = LOST_DOOMED;
	for (i = 0; i < pool->nr_blocks; i++)
		if ((kv_block(pool, i)->flags & KV_BLOCK_CACHED) &&
		    lost_resolve(pool, mark, i) == LOST_DOOMED)
			order[nr++] = (u64)pnode(pool, i)->depth << 32 | i;
	lost_names(pool, mark);
	/* deepest first: each node leaves before its parent */
	qsort(order, nr, sizeof(*order), depth_desc);
	for (done = 0; done < nr; done++)
		lost_block(pool, (u32)order[done]);
	lost_seqs(pool);
out:
	free(mark);
	free(order);
	return done;
}

/**
 * kv_prefix_drop() - evict every evictable cached block (drop caches)
 * @pool: pool
 *
 * Return: blocks dropped.
 */
u32 kv_prefix_drop(struct kv_pool *pool)
{
	u32 done = 0, idx;

	if (!prefix_on(pool))
		return 0;
	kv_pool_lock(pool);
	while ((idx = coldest_leaf(pool)) != KV_PREFIX_NONE) {
		prefix_remove(pool, idx, KV_PREFIX_EVICT);
		done++;
	}
	kv_pool_unlock(pool);
	return done;
}

/**
 * kv_prefix_stats() - prefix cache counters of a tenant, or of the pool
 * @pool:   pool
 * @tenant: tenant, or UINT32_MAX for the pool's totals
 * @st:     receives them
 *
 * Return: 0, or -ENOENT when the tenant never used the cache.
 */
int kv_prefix_stats(struct kv_pool *pool, u32 tenant, struct kv_prefix_stats *st)
{
	struct kv_prefix *pc = &pool->prefix;
	u32 i;
	int t, err = -ENOENT;

	memset(st, 0, sizeof(*st));
	st->tenant = tenant;
	kv_pool_lock(pool);
	if (tenant == UINT32_MAX) {
		st->query_tokens = pool->events[KV_PREFIX_QUERY_TOKENS];
		st->hit_tokens[KV_TIER_DEVICE] = pool->events[KV_PREFIX_HIT_TOKENS_DEVICE];
		st->hit_tokens[KV_TIER_HOST] = pool->events[KV_PREFIX_HIT_TOKENS_HOST];
		st->hit_tokens[KV_TIER_SWAP] = pool->events[KV_PREFIX_HIT_TOKENS_SWAP];
		st->inserted = pool->events[KV_PREFIX_INSERT];
		st->evicted = pool->events[KV_PREFIX_EVICT];
		for (t = 0; t < KV_NR_TIERS; t++)
			st->cached += pc->nr_cached[t];
		err = 0;
	}
	for (i = 0; err && i < pc->nr_tenants; i++) {
		if (pc->tenants[i].tenant == tenant) {
			*st = pc->tenants[i];
			err = 0;
		}
	}
	kv_pool_unlock(pool);
	return err;
}

/**
 * kv_prefix_set_hash_bits() - test hook: keep only @bits bits of every
 * block hash, so that different prefixes collide
 * @pool: pool with an empty prefix cache
 * @bits: 1..64
 */
void kv_prefix_set_hash_bits(struct kv_pool *pool, u32 bits)
{
	kv_pool_lock(pool);
	pool->prefix.hash_mask = bits >= 64 || !bits ? UINT64_MAX : (1ull << bits) - 1;
	kv_pool_unlock(pool);
}

/* ---- setup ------------------------------------------------------------------ */

static void prefix_key(struct siphash_key *key)
{
	struct timespec ts;

	if (getrandom(key, sizeof(*key), GRND_NONBLOCK) == (ssize_t)sizeof(*key))
		return;
	/* No entropy yet (early boot): unpredictable enough for a cache key. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	key->k[0] = (u64)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (u64)(uintptr_t)key;
	key->k[1] = (u64)ts.tv_sec ^ (u64)(uintptr_t)&ts;
}

/**
 * prefix_init() - allocate a pool's prefix cache, empty
 * @pool: pool with its descriptors allocated
 *
 * Return: 0 or -ENOMEM.
 */
int prefix_init(struct kv_pool *pool)
{
	struct kv_prefix *pc = &pool->prefix;
	u32 n = pool->nr_blocks, i;
	u64 nb = 1;
	int t;

	pc->hash_mask = UINT64_MAX;
	if (!prefix_on(pool))
		return 0;
	/* A load factor of 1/4 at most: a lookup rarely walks past one node. */
	while (nb < 4 * (u64)n && nb < (1ull << 31))
		nb *= 2;
	pc->nodes = aligned_alloc(64, (size_t)n * sizeof(*pc->nodes));
	pc->tokens = aligned_alloc(64, ((size_t)n * pool->geom.block_tokens * sizeof(u32) + 63) &
					   ~(size_t)63);
	pc->buckets = malloc((size_t)nb * sizeof(u32));
	if (!pc->nodes || !pc->tokens || !pc->buckets)
		goto out_nomem;
	for (t = 0; t < KV_NR_TIERS; t++) {
		pc->heap[t] = malloc((size_t)n * sizeof(u32));
		if (!pc->heap[t])
			goto out_nomem;
	}
	memset(pc->nodes, 0, (size_t)n * sizeof(*pc->nodes));
	for (i = 0; i < n; i++)
		pc->nodes[i].heap_pos = KV_PREFIX_NONE;
	memset(pc->buckets, 0xff, (size_t)nb * sizeof(u32));
	pc->bucket_mask = (u32)(nb - 1);
	prefix_key(&pc->key);
	return 0;

out_nomem:
	prefix_destroy(pool);
	return -ENOMEM;
}

/** prefix_destroy() - free a pool's prefix cache */
void prefix_destroy(struct kv_pool *pool)
{
	struct kv_prefix *pc = &pool->prefix;
	int t;

	free(pc->nodes);
	free(pc->tokens);
	free(pc->buckets);
	free(pc->tenants);
	for (t = 0; t < KV_NR_TIERS; t++)
		free(pc->heap[t]);
	memset(pc, 0, sizeof(*pc));
}
