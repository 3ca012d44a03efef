// SPDX-License-Identifier: MIT
/*
 * kv_pool_check(): verify every invariant of a pool from scratch, as the
 * kernel's debug_vm checks and SQLite's integrity_check do. Every selftest
 * ends with it. It recounts references and pins from the sequence tables
 * and compares them with the descriptors, and recounts frames, LRU lists
 * and per-tier counters.
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
		for (i = 0; i < seq->nr_blocks; i++) {
			idx = seq->table[i];
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
	for (i = 0; i < fa->nr_free; i++)
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
	if (t->wmark[KV_WMARK_MIN] > t->wmark[KV_WMARK_LOW] ||
	    t->wmark[KV_WMARK_LOW] > t->wmark[KV_WMARK_HIGH])
		bad(ctx, "tier %d: watermarks %u %u %u", t->id, t->wmark[0], t->wmark[1],
		    t->wmark[2]);
	check_lru(ctx, t, KV_LRU_INACTIVE);
	check_lru(ctx, t, KV_LRU_ACTIVE);
}

/**
 * kv_pool_check() - verify every invariant of a pool
 * @pool: pool
 *
 * Per tier: free + used == total, every used frame owned by exactly one
 * block (or handed out raw), LRU lists and counters match the flags.
 * Per block: refcount == sequence references (+1 while isolated), pincount
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
	check_free_blocks(&ctx);
	for (i = 0; i < pool->nr_blocks; i++)
		if (!ctx.is_free[i])
			check_block(&ctx, i);
	for (t = 0; t < KV_NR_TIERS; t++)
		check_tier(&ctx, &pool->tier[t]);
	kv_pool_unlock(pool);
out_free:
	free(ctx.refs);
	free(ctx.pins);
	free(ctx.is_free);
	return ctx.errors < 0 ? -ENOMEM : ctx.errors ? -EUCLEAN : 0;
}
