// SPDX-License-Identifier: MIT
/*
 * Reclaim, as the kernel's mm/vmscan.c: aging of the two LRU lists,
 * isolation of a batch from the inactive tail, demotion of the batch to the
 * next tier, the per-tier background reclaimer (kvswapd) and direct reclaim.
 *
 * Second chance: a block found REFERENCED at the tail of a list loses the
 * flag and goes back to the head of that list instead of moving on. The
 * active list is aged into the inactive list whenever the inactive list is
 * the smaller one.
 */
#include <stdlib.h>
#include "internal.h"

/* Move up to @nr blocks from the active tail to the inactive list. */
static void shrink_active_list(struct kv_pool *pool, struct kv_tier *t, u32 nr)
{
	struct list_head *active = &t->lru[KV_LRU_ACTIVE];
	struct kv_block *b;

	while (nr-- && !list_empty(active)) {
		b = list_last_entry(active, struct kv_block, lru);
		lru_del(pool, b);
		if (b->flags & KV_BLOCK_REFERENCED) {
			b->flags &= ~KV_BLOCK_REFERENCED;
		} else {
			b->flags &= ~KV_BLOCK_ACTIVE;
			count_vm_event(pool, KV_PGDEACTIVATE);
		}
		lru_add(pool, b);
	}
}

/*
 * Isolate up to @nr unreferenced blocks from the inactive tail into
 * @blocks, giving referenced ones their second chance. Scans at most twice
 * the list so that a list of referenced blocks ends the scan.
 */
static u32 isolate_lru_blocks(struct kv_pool *pool, struct kv_tier *t, u32 nr,
			      struct kv_block **blocks, bool kswapd)
{
	struct list_head *inactive = &t->lru[KV_LRU_INACTIVE];
	u32 scan = 2 * t->nr_lru[KV_LRU_INACTIVE], scanned = 0, n = 0;
	struct kv_block *b;

	while (n < nr && scanned < scan && !list_empty(inactive)) {
		b = list_last_entry(inactive, struct kv_block, lru);
		scanned++;
		if (b->flags & KV_BLOCK_REFERENCED) {
			b->flags &= ~KV_BLOCK_REFERENCED;
			list_move(&b->lru, inactive);
			count_vm_event(pool, KV_PGROTATED);
			continue;
		}
		kv_block_isolate(pool, b);
		blocks[n++] = b;
	}
	count_vm_events(pool, kswapd ? KV_PGSCAN_KSWAPD : KV_PGSCAN_DIRECT, scanned);
	return n;
}

static void putback_blocks(struct kv_pool *pool, struct kv_block **blocks, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		kv_block_putback(pool, blocks[i]);
	pthread_cond_broadcast(&pool->unlocked);
}

/*
 * Reclaim up to @nr blocks of @tier by demoting them to the next tier.
 * Pool locked; dropped while the batch is copied. Returns blocks demoted.
 */
static u32 shrink_tier(struct kv_pool *pool, int tier, u32 nr, bool kswapd)
{
	struct kv_block *blocks[KV_RECLAIM_BATCH_MAX];
	u32 frames[KV_RECLAIM_BATCH_MAX];
	struct kv_tier *t = &pool->tier[tier];
	int dst = tier + 1;
	u32 n, room, i;

	if (dst >= KV_NR_TIERS)
		return 0;
	if (nr > KV_RECLAIM_BATCH_MAX)
		nr = KV_RECLAIM_BATCH_MAX;
	room = tier_nr_free(&pool->tier[dst]);
	if (nr > room)
		nr = room;
	if (t->nr_lru[KV_LRU_INACTIVE] < t->nr_lru[KV_LRU_ACTIVE])
		shrink_active_list(pool, t, nr);
	n = isolate_lru_blocks(pool, t, nr, blocks, kswapd);
	if (!n)
		return 0;
	if (__kv_frames_alloc(pool, dst, n, KV_ALLOC_RECLAIM | KV_ALLOC_NOWAIT, frames) ||
	    kv_migrate_blocks(pool, blocks, n, dst, frames)) {
		putback_blocks(pool, blocks, n);
		return 0;
	}
	for (i = 0; i < n; i++)
		blocks[i]->flags &= ~(KV_BLOCK_ACTIVE | KV_BLOCK_REFERENCED);
	putback_blocks(pool, blocks, n);
	count_vm_events(pool, kswapd ? KV_PGSTEAL_KSWAPD : KV_PGSTEAL_DIRECT, n);
	return n;
}

/**
 * try_to_free_frames() - direct reclaim until @tier has @need free frames
 * @pool: pool, locked (dropped while batches are copied or while waiting
 *        for moves in flight)
 * @tier: tier to reclaim from
 * @need: free frames wanted
 *
 * Return: non-zero when progress was made (frames freed, or a move in
 * flight completed), 0 when nothing more can be reclaimed.
 */
u32 try_to_free_frames(struct kv_pool *pool, int tier, u32 need)
{
	struct kv_tier *t = &pool->tier[tier];
	u32 progress = 0, n;

	while (tier_nr_free(t) < need) {
		n = shrink_tier(pool, tier, pool->vm.reclaim_batch, false);
		if (n) {
			progress += n;
			continue;
		}
		if (!t->nr_locked)
			break;
		/* Others' moves in flight will free frames: wait for them. */
		count_vm_event(pool, KV_LOCKED_WAIT);
		pthread_cond_wait(&pool->unlocked, &pool->lock);
		progress++;
	}
	return progress;
}

/**
 * kv_reclaim() - reclaim up to @nr blocks from a tier now
 * @pool: pool
 * @tier: KV_TIER_*
 * @nr:   blocks to demote
 *
 * Return: blocks demoted.
 */
u32 kv_reclaim(struct kv_pool *pool, int tier, u32 nr)
{
	u32 done = 0, n;

	if (tier < 0 || tier >= KV_NR_TIERS)
		return 0;
	kv_pool_lock(pool);
	while (done < nr) {
		n = shrink_tier(pool, tier, nr - done, false);
		if (!n)
			break;
		done += n;
	}
	kv_pool_unlock(pool);
	return done;
}

/**
 * kvswapd_wakeup() - wake a tier's background reclaimer
 * @pool: pool, locked
 * @tier: tier below its low watermark
 */
void kvswapd_wakeup(struct kv_pool *pool, int tier)
{
	struct kv_kvswapd *ks = &pool->tier[tier].kvswapd;

	if (!ks->running || ks->wake)
		return;
	ks->wake = true;
	pthread_cond_signal(&ks->wait);
}

static void kvswapd_balance(struct kv_pool *pool, struct kv_tier *t)
{
	while (!t->kvswapd.stop && tier_nr_free(t) < t->wmark[KV_WMARK_HIGH]) {
		if (!shrink_tier(pool, t->id, pool->vm.reclaim_batch, true))
			break;
	}
}

static void *kvswapd(void *arg)
{
	struct kv_tier *t = arg;
	struct kv_pool *pool = t->pool;
	struct kv_kvswapd *ks = &t->kvswapd;

	kv_pool_lock(pool);
	for (;;) {
		while (!ks->wake && !ks->stop)
			pthread_cond_wait(&ks->wait, &pool->lock);
		if (ks->stop)
			break;
		ks->wake = false;
		count_vm_event(pool, KV_KSWAPD_WAKE);
		kvswapd_balance(pool, t);
	}
	kv_pool_unlock(pool);
	return NULL;
}

/**
 * kv_kvswapd_start() - start a reclaimer thread for each tier that has a
 * tier below it to demote to
 * @pool: pool
 *
 * Return: 0 or the negative error of pthread_create (threads already
 * started are stopped again).
 */
int kv_kvswapd_start(struct kv_pool *pool)
{
	struct kv_kvswapd *ks;
	int i, err;

	for (i = 0; i + 1 < KV_NR_TIERS; i++) {
		ks = &pool->tier[i].kvswapd;
		if (ks->running)
			continue;
		ks->stop = false;
		err = pthread_create(&ks->thread, NULL, kvswapd, &pool->tier[i]);
		if (err) {
			kv_kvswapd_stop(pool);
			return -err;
		}
		kv_pool_lock(pool);
		ks->running = true;
		kv_pool_unlock(pool);
	}
	return 0;
}

/** kv_kvswapd_stop() - stop and join every kvswapd of the pool */
void kv_kvswapd_stop(struct kv_pool *pool)
{
	struct kv_kvswapd *ks;
	int i;

	for (i = 0; i < KV_NR_TIERS; i++) {
		ks = &pool->tier[i].kvswapd;
		kv_pool_lock(pool);
		if (!ks->running) {
			kv_pool_unlock(pool);
			continue;
		}
		ks->stop = true;
		ks->running = false;
		pthread_cond_signal(&ks->wait);
		kv_pool_unlock(pool);
		pthread_join(ks->thread, NULL);
	}
}

