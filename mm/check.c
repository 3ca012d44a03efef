// SPDX-License-Identifier: MIT
/*
 * kv_pool_check(): verify every invariant of a pool from scratch, as the
 * kernel's debug_vm checks and SQLite's integrity_check do. Every selftest
 * ends with it. It recounts references and pins from the sequence tables
 * and compares them with the descriptors, and recounts frames, LRU lists
 * and per-tier counters, and the prefix cache's tree, hash table, heaps
 * and names.
 */
#include <stdlib.h>
#include "internal.h"

#define CHECK_REPORT_MAX 20

struct check_ctx {
	struct kv_pool *pool;
	int errors;
	u32 *refs;		/* per block: table entries referencing it */
	u32 *pins;		/* per block: active tables referencing it */
	u8 *is_free;		/* per block: on the free descriptor stack */
	u32 nr_pinned[KV_NR_TIERS];
	u32 nr_locked[KV_NR_TIERS];
	u32 nr_owned[KV_NR_TIERS];
	u32 nr_swapcache;
};

#define bad(ctx, fmt, ...)							\
	do {									\
		if ((ctx)->errors++ < CHECK_REPORT_MAX)				\
			fprintf(stderr, "kv_pool_check: %s: " fmt "\n",	\
				(ctx)->pool->name, ##__VA_ARGS__);		\
	} while (0)

/* An active sequence pins all its blocks; one being activated (its lock
 * dropped to promote) all but those it isolated to promote. */
static bool seq_holds_pin(struct kv_pool *pool, struct kv_seq *seq, u32 idx)
{
	if (seq->flags & KV_SEQ_ACTIVE)
		return true;
	return (seq->flags & KV_SEQ_ACTIVATING) &&
	       !(kv_block(pool, idx)->flags & KV_BLOCK_LOCKED);
}

static void check_seqs(struct check_ctx *ctx)
{
	struct kv_pool *pool = ctx->pool;
	u32 bt = pool->geom.block_tokens, nr = 0, i, idx;
	struct kv_seq *seq;

	list_for_each_entry(seq, &pool->seqs, node) {
		nr++;
		if (seq->nr_blocks != (seq->nr_tokens + bt - 1) / bt ||
		    seq->nr_blocks > seq->capacity)
			bad(ctx, "seq %p: %u tokens in %u blocks (capacity %u)", (void *)seq,
			    seq->nr_tokens, seq->nr_blocks, seq->capacity);
		if (seq->nr_cached > seq->nr_blocks || seq->nr_ids > seq->nr_tokens ||
		    seq->nr_safe > seq->nr_tokens)
			bad(ctx, "seq %p: %u cached of %u blocks, %u ids %u safe of %u tokens",
			    (void *)seq, seq->nr_cached, seq->nr_blocks, seq->nr_ids, seq->nr_safe,
			    seq->nr_tokens);
		for (i = 0; i < seq->nr_blocks; i++) {
			idx = seq->table[i];
			if (i < seq->nr_cached && idx < pool->nr_blocks &&
			    !(kv_block(pool, idx)->flags & KV_BLOCK_CACHED))
				bad(ctx, "seq %p: block %u (entry %u) not cached", (void *)seq, idx, i);
			if (idx >= pool->nr_blocks) {
				bad(ctx, "seq %p: entry %u names block %u", (void *)seq, i, idx);
				continue;
			}
			ctx->refs[idx]++;
			if (seq_holds_pin(pool, seq, idx))
				ctx->pins[idx]++;
		}
	}
	if (nr != pool->nr_seqs)
		bad(ctx, "%u sequences listed, %u counted", nr, pool->nr_seqs);
}

static void check_free_blocks(struct check_ctx *ctx)
{
	struct kv_pool *pool = ctx->pool;
	struct kv_block *b;
	u32 i, idx;

	for (i = 0; i < pool->nr_free_blocks; i++) {
		idx = pool->free_blocks[i];
		if (idx >= pool->nr_blocks || ctx->is_free[idx]++) {
			bad(ctx, "free block stack entry %u: block %u", i, idx);
			continue;
		}
		b = kv_block(pool, idx);
		if (b->refcount || b->pincount || b->flags || b->tier != KV_TIER_NONE)
			bad(ctx, "free block %u: ref %u pin %u flags %#x tier %u", idx,
			    b->refcount, b->pincount, b->flags, b->tier);
	}
}

/* A live block: references, pins, frames and list state agree. */
static void check_block(struct check_ctx *ctx, u32 idx)
{
	struct kv_pool *pool = ctx->pool;
	struct kv_block *b = kv_block(pool, idx);
	bool locked = b->flags & KV_BLOCK_LOCKED;
	u32 t;

	if (b->refcount != ctx->refs[idx] + locked || !b->refcount)
		bad(ctx, "block %u: refcount %u, %u references (+%d isolation)", idx,
		    b->refcount, ctx->refs[idx], locked);
	if (b->pincount != ctx->pins[idx])
		bad(ctx, "block %u: pincount %u, %u active holders", idx, b->pincount,
		    ctx->pins[idx]);
	if (b->tier >= KV_NR_TIERS) {
		bad(ctx, "block %u: live on no tier", idx);
		return;
	}
	for (t = 0; t < KV_NR_TIERS; t++) {
		bool swapcache = t == KV_TIER_SWAP && (b->flags & KV_BLOCK_SWAPCACHE);

		/*
		 * Only a cached block keeps a clean swap copy, or one that left
		 * the cache while a move held it locked (KV_BLOCK_LOST: the copy
		 * goes at kv_block_putback()).
		 */
		if (swapcache && (b->tier == KV_TIER_SWAP ||
				  (!(b->flags & KV_BLOCK_CACHED) &&
				   (b->flags & (KV_BLOCK_LOCKED | KV_BLOCK_LOST)) !=
				   (KV_BLOCK_LOCKED | KV_BLOCK_LOST)) ||
				  b->frame[t] >= pool->tier[t].fa.nr_total ||
				  !frame_is_used(&pool->tier[t].fa, b->frame[t]))) {
			bad(ctx, "block %u: swap cache slot %u, tier %u, flags %#x", idx,
			    b->frame[t], b->tier, b->flags);
			continue;
		}
		if (swapcache) {
			ctx->nr_owned[t]++;
			ctx->nr_swapcache++;
			continue;
		}
		if ((b->frame[t] != KV_FRAME_NONE) != (t == b->tier))
			bad(ctx, "block %u on tier %u: frame %u on tier %u", idx, b->tier,
			    b->frame[t], t);
		else if (t == b->tier && (b->frame[t] >= pool->tier[t].fa.nr_total ||
					  !frame_is_used(&pool->tier[t].fa, b->frame[t])))
			bad(ctx, "block %u: frame %u not allocated", idx, b->frame[t]);
	}
	ctx->nr_owned[b->tier]++;
	if (b->pincount) {
		ctx->nr_pinned[b->tier]++;
		if (b->tier != KV_TIER_DEVICE || locked || (b->flags & KV_BLOCK_LRU))
			bad(ctx, "pinned block %u: tier %u flags %#x", idx, b->tier, b->flags);
	} else if (!locked != !!(b->flags & KV_BLOCK_LRU)) {
		bad(ctx, "block %u: unpinned, flags %#x", idx, b->flags);
	}
	if (locked)
		ctx->nr_locked[b->tier]++;
}

static void check_lru(struct check_ctx *ctx, struct kv_tier *t, int lru)
{
	struct kv_pool *pool = ctx->pool;
	struct list_head *pos;
	struct kv_block *b;
	u32 n = 0;

	for (pos = t->lru[lru].next; pos != &t->lru[lru]; pos = pos->next) {
		if (++n > pool->nr_blocks) {
			bad(ctx, "tier %d lru %d: loop", t->id, lru);
			return;
		}
		b = list_entry(pos, struct kv_block, lru);
		if (!(b->flags & KV_BLOCK_LRU) || (int)b->tier != t->id ||
		    !(b->flags & KV_BLOCK_ACTIVE) != (lru == KV_LRU_INACTIVE) || !b->refcount)
			bad(ctx, "block %u on tier %d lru %d: tier %u flags %#x ref %u",
			    kv_block_idx(pool, b), t->id, lru, b->tier, b->flags, b->refcount);
	}
	if (n != t->nr_lru[lru])
		bad(ctx, "tier %d lru %d: %u listed, %u counted", t->id, lru, n, t->nr_lru[lru]);
}

static void check_tier(struct check_ctx *ctx, struct kv_tier *t)
{
	struct kv_frame_alloc *fa = &t->fa;
	u32 i, used = 0;

	for (i = 0; i < fa->nr_total; i++)
		used += frame_is_used(fa, i);
	for (i = 0; i < fa->nr_free && !fa->clustered; i++)
		if (fa->stack[i] >= fa->nr_total || frame_is_used(fa, fa->stack[i]))
			bad(ctx, "tier %d: free stack entry %u is frame %u", t->id, i, fa->stack[i]);
	if (fa->nr_free + used != fa->nr_total)
		bad(ctx, "tier %d: free %u + used %u != total %u", t->id, fa->nr_free, used,
		    fa->nr_total);
	if (used != ctx->nr_owned[t->id] + t->nr_raw + t->nr_inflight)
		bad(ctx, "tier %d: %u frames used, %u owned by blocks + %u raw + %u in flight",
		    t->id, used, ctx->nr_owned[t->id], t->nr_raw, t->nr_inflight);
	if (ctx->nr_pinned[t->id] != t->nr_pinned || ctx->nr_locked[t->id] != t->nr_locked)
		bad(ctx, "tier %d: pinned %u/%u locked %u/%u", t->id, ctx->nr_pinned[t->id],
		    t->nr_pinned, ctx->nr_locked[t->id], t->nr_locked);
	if (t->nr_demoting > t->nr_locked)
		bad(ctx, "tier %d: %u blocks demoting, %u locked", t->id, t->nr_demoting,
		    t->nr_locked);
	if (t->wmark[KV_WMARK_MIN] > t->wmark[KV_WMARK_LOW] ||
	    t->wmark[KV_WMARK_LOW] > t->wmark[KV_WMARK_HIGH])
		bad(ctx, "tier %d: watermarks %u %u %u", t->id, t->wmark[0], t->wmark[1],
		    t->wmark[2]);
	check_lru(ctx, t, KV_LRU_INACTIVE);
	check_lru(ctx, t, KV_LRU_ACTIVE);
}

/* The cache's reference on each cached block. */
static void check_prefix_refs(struct check_ctx *ctx)
{
	struct kv_pool *pool = ctx->pool;
	u32 i;

	for (i = 0; i < pool->nr_blocks; i++)
		if (kv_block(pool, i)->flags & KV_BLOCK_CACHED)
			ctx->refs[i]++;
}

/* A cached node: parent, depth, and whether it sits in its tier's heap. */
static void check_prefix_node(struct check_ctx *ctx, u32 idx, u32 *children, u32 *cached,
			      u32 *idle)
{
	struct kv_pool *pool = ctx->pool;
	struct kv_prefix *pc = &pool->prefix;
	struct kv_prefix_node *n = &pc->nodes[idx], *p;
	struct kv_block *b = kv_block(pool, idx);
	bool want;

	if (n->parent == KV_PREFIX_NONE) {
		if (n->depth != 1)
			bad(ctx, "prefix node %u: root at depth %u", idx, n->depth);
	} else if (n->parent >= pool->nr_blocks ||
		   !(kv_block(pool, n->parent)->flags & KV_BLOCK_CACHED)) {
		bad(ctx, "prefix node %u: parent %u not cached", idx, n->parent);
		return;
	} else {
		p = &pc->nodes[n->parent];
		children[n->parent]++;
		if (n->depth != p->depth + 1)
			bad(ctx, "prefix node %u: depth %u under %u", idx, n->depth, p->depth);
	}
	if (b->tier < KV_NR_TIERS)
		cached[b->tier]++;
	want = !(b->flags & KV_BLOCK_LOCKED) && b->refcount == 1 && !n->pins;
	if (want != n->idle)
		bad(ctx, "prefix node %u: ref %u pins %u flags %#x, idle %d", idx, b->refcount,
		    n->pins, b->flags, n->idle);
	if (want)
		idle[b->tier]++;
	want = want && !n->nr_children;
	if (want != (n->heap_pos != KV_PREFIX_NONE))
		bad(ctx, "prefix node %u: ref %u children %u pins %u flags %#x, heap %u", idx,
		    b->refcount, n->nr_children, n->pins, b->flags, n->heap_pos);
	else if (want && (n->heap_tier != b->tier || n->heap_pos >= pc->heap_n[b->tier] ||
			  pc->heap[b->tier][n->heap_pos] != idx))
		bad(ctx, "prefix node %u: heap %u/%u of tier %u", idx, n->heap_pos, n->heap_tier,
		    b->tier);
}

static void check_prefix_table(struct check_ctx *ctx, u32 nr_cached)
{
	struct kv_pool *pool = ctx->pool;
	struct kv_prefix *pc = &pool->prefix;
	u32 i, idx, n = 0, t, pos;

	for (i = 0; i <= pc->bucket_mask; i++) {
		for (idx = pc->buckets[i]; idx != KV_PREFIX_NONE; idx = pc->nodes[idx].next) {
			if (idx >= pool->nr_blocks || ++n > nr_cached ||
			    !(kv_block(pool, idx)->flags & KV_BLOCK_CACHED) ||
			    (pc->nodes[idx].hash & pc->bucket_mask) != i) {
				bad(ctx, "prefix bucket %u: node %u", i, idx);
				break;
			}
		}
	}
	if (n != nr_cached)
		bad(ctx, "prefix: %u nodes hashed, %u cached", n, nr_cached);
	for (t = 0; t < KV_NR_TIERS; t++)
		for (pos = 1; pos < pc->heap_n[t]; pos++)
			if (pc->nodes[pc->heap[t][(pos - 1) / 2]].stamp >
			    pc->nodes[pc->heap[t][pos]].stamp)
				bad(ctx, "prefix heap %u: order broken at %u", t, pos);
}

static void check_prefix(struct check_ctx *ctx)
{
	struct kv_pool *pool = ctx->pool;
	struct kv_prefix *pc = &pool->prefix;
	u32 cached[KV_NR_TIERS] = { 0 }, idle[KV_NR_TIERS] = { 0 }, *children, *pins, i;
	u32 total = 0;
	int t;

	if (!pc->nodes)
		return;
	children = calloc(pool->nr_blocks, sizeof(*children));
	pins = calloc(pool->nr_blocks, sizeof(*pins));
	if (!children || !pins) {
		ctx->errors = -1;
		goto out;
	}
	for (i = 0; i < pc->nr_names; i++) {
		u32 up = pc->names[i].node, depth = 0;

		while (pc->names[i].pinned && up < pool->nr_blocks && depth++ < pool->nr_blocks) {
			pins[up]++;
			up = pc->nodes[up].parent;
		}
	}
	for (i = 0; i < pool->nr_blocks; i++) {
		if (!(kv_block(pool, i)->flags & KV_BLOCK_CACHED)) {
			if (pc->nodes[i].heap_pos != KV_PREFIX_NONE)
				bad(ctx, "block %u: not cached, in a prefix heap", i);
			continue;
		}
		check_prefix_node(ctx, i, children, cached, idle);
	}
	for (i = 0; i < pool->nr_blocks; i++)
		if ((kv_block(pool, i)->flags & KV_BLOCK_CACHED) &&
		    (children[i] != pc->nodes[i].nr_children || pins[i] != pc->nodes[i].pins))
			bad(ctx, "prefix node %u: %u/%u children, %u/%u pins", i, children[i],
			    pc->nodes[i].nr_children, pins[i], pc->nodes[i].pins);
	for (t = 0; t < KV_NR_TIERS; t++) {
		if (cached[t] != pc->nr_cached[t] || idle[t] != pc->nr_idle[t])
			bad(ctx, "tier %d: %u/%u cached blocks, %u/%u idle", t, cached[t],
			    pc->nr_cached[t], idle[t], pc->nr_idle[t]);
		total += cached[t];
	}
	check_prefix_table(ctx, total);
out:
	free(children);
	free(pins);
}

/**
 * kv_pool_check() - verify every invariant of a pool
 * @pool: pool
 *
 * Per tier: free + used == total, every used frame owned by exactly one
 * block (or handed out raw), LRU lists and counters match the flags.
 * Per block: refcount == sequence references (+1 while isolated, +1 when
 * cached), pincount
 * == active sequences holding it, pinned blocks on the device and off the
 * LRU, unpinned idle blocks on it. Problems are printed to stderr.
 *
 * Return: 0, -EUCLEAN when an invariant is broken, -ENOMEM.
 */
int kv_pool_check(struct kv_pool *pool)
{
	struct check_ctx ctx = { .pool = pool };
	u32 i;
	int t;

	ctx.refs = calloc(pool->nr_blocks + 1, sizeof(*ctx.refs));
	ctx.pins = calloc(pool->nr_blocks + 1, sizeof(*ctx.pins));
	ctx.is_free = calloc(pool->nr_blocks + 1, 1);
	if (!ctx.refs || !ctx.pins || !ctx.is_free) {
		ctx.errors = -1;
		goto out_free;
	}
	kv_pool_lock(pool);
	check_seqs(&ctx);
	check_prefix_refs(&ctx);
	check_free_blocks(&ctx);
	for (i = 0; i < pool->nr_blocks; i++)
		if (!ctx.is_free[i])
			check_block(&ctx, i);
	for (t = 0; t < KV_NR_TIERS; t++)
		check_tier(&ctx, &pool->tier[t]);
	check_prefix(&ctx);
	if (ctx.nr_swapcache != pool->nr_swapcache)
		bad(&ctx, "%u swap cache blocks, %u counted", ctx.nr_swapcache, pool->nr_swapcache);
	kv_pool_unlock(pool);
out_free:
	free(ctx.refs);
	free(ctx.pins);
	free(ctx.is_free);
	return ctx.errors < 0 ? -ENOMEM : ctx.errors ? -EUCLEAN : 0;
}
