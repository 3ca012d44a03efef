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
 *
 * Blocks only the prefix cache holds are demoted like any other; the last
 * tier, and a tier whose next tier has no room even after evicting cached
 * blocks there, frees frames by evicting cached blocks (prefix_evict()).
 */
#include <stdio.h>
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

/* The tier below @tier that blocks demote to: the next one with frames. */
static int next_tier(struct kv_pool *pool, int tier)
{
	int t = tier + 1;

	while (t < KV_NR_TIERS && !pool->tier[t].fa.nr_total)
		t++;
	return t;
}

/* Room a demotion may take in @dst: down to min, or to 0 with RECLAIM. */
static u32 demote_room(struct kv_pool *pool, int dst, u32 dst_flags)
{
	struct kv_tier *d = &pool->tier[dst];
	u32 reserve = dst_flags & KV_ALLOC_RECLAIM ? 0 : d->wmark[KV_WMARK_MIN];

	return tier_nr_free(d) > reserve ? tier_nr_free(d) - reserve : 0;
}

/*
 * Isolate up to @nr blocks for reclaim. When the first pass finds only
 * referenced blocks, the whole active list is aged (clearing references)
 * and the scan is repeated: hot blocks get their second chance, but a tier
 * full of them still yields a batch.
 */
static u32 isolate_for_reclaim(struct kv_pool *pool, struct kv_tier *t, u32 nr,
			       struct kv_block **blocks, bool kswapd)
{
	u32 n = 0, pass;

	for (pass = 0; pass < 3 && !n; pass++) {
		if (pass == 1)
			shrink_active_list(pool, t, t->nr_lru[KV_LRU_ACTIVE]);
		else if (t->nr_lru[KV_LRU_INACTIVE] < t->nr_lru[KV_LRU_ACTIVE] || pass)
			shrink_active_list(pool, t, nr);
		n = isolate_lru_blocks(pool, t, nr, blocks, kswapd);
	}
	return n;
}

/*
 * Reclaim up to @nr blocks of @tier by demoting them to the next tier,
 * whose frames are allocated with @dst_flags, making room there by
 * evicting cached blocks; with no room at all, evict cached blocks of
 * @tier itself. Pool locked; dropped while the batch is copied. Returns
 * blocks demoted or evicted.
 */
static u32 shrink_tier(struct kv_pool *pool, int tier, u32 nr, bool kswapd, u32 dst_flags)
{
	struct kv_block *blocks[KV_RECLAIM_BATCH_MAX];
	u32 frames[KV_RECLAIM_BATCH_MAX];
	struct kv_tier *t = &pool->tier[tier];
	int dst = next_tier(pool, tier);
	u32 n, room, i, lru;

	if (nr > KV_RECLAIM_BATCH_MAX)
		nr = KV_RECLAIM_BATCH_MAX;
	if (dst >= KV_NR_TIERS) {
		/* The last tier: clean swap cache copies go first (no I/O), then cached blocks. */
		n = tier == KV_TIER_SWAP ? swapcache_drop(pool, nr) : 0;
		return n + prefix_evict(pool, tier, nr - n);
	}
	/* Never make room below for more than this tier could send there. */
	lru = t->nr_lru[KV_LRU_ACTIVE] + t->nr_lru[KV_LRU_INACTIVE];
	if (nr > lru)
		nr = lru;
	if (!nr)
		return 0;
	room = demote_room(pool, dst, dst_flags);
	if (room < nr) {
		/*
		 * Make room below: reclaim there first (demotion, or in the
		 * last tier swap cache drops and eviction), then evict.
		 */
		shrink_tier(pool, dst, nr - room, kswapd, 0);
		room = demote_room(pool, dst, dst_flags);
	}
	if (room < nr) {
		prefix_evict(pool, dst, nr - room);
		room = demote_room(pool, dst, dst_flags);
	}
	if (!room)
		return prefix_evict(pool, tier, nr);
	if (nr > room)
		nr = room;
	n = isolate_for_reclaim(pool, t, nr, blocks, kswapd);
	if (!n)
		return 0;
	t->nr_demoting += n;
	if (__kv_frames_alloc(pool, dst, n, dst_flags | KV_ALLOC_NOWAIT, frames) ||
	    kv_migrate_blocks(pool, blocks, n, dst, frames)) {
		t->nr_demoting -= n;
		putback_blocks(pool, blocks, n);
		return 0;
	}
	for (i = 0; i < n; i++)
		blocks[i]->flags &= ~(KV_BLOCK_ACTIVE | KV_BLOCK_REFERENCED);
	t->nr_demoting -= n;
	putback_blocks(pool, blocks, n);
	count_vm_events(pool, kswapd ? KV_PGSTEAL_KSWAPD : KV_PGSTEAL_DIRECT, n);
	return n;
}

/**
 * reclaim_possible() - whether reclaim could ever bring @tier to @need
 * free frames
 * @pool:      pool, locked
 * @tier:      tier
 * @need:      free frames wanted
 * @dst_flags: how demotions may allocate in the next tier
 *
 * Counts free frames, idle cached blocks (evictable now or once their
 * children are), unpinned blocks that the
 * next tier has room for (or can make room for by eviction), and moves in
 * flight. An allocation that fails this check fails at once,
 * without throwing out other sequences' blocks first.
 */
/*
 * Frames of @dst that reclaim could hand a demotion: free above the
 * reserve, idle cached blocks to evict, swap cache copies to drop, blocks
 * that reclaim (kvswapd, say) is moving out of it now, and blocks it could
 * demote in turn.
 */
static u64 reclaim_room(struct kv_pool *pool, int dst, u32 dst_flags)
{
	struct kv_tier *d = &pool->tier[dst];
	u64 room = demote_room(pool, dst, dst_flags) + pool->prefix.nr_idle[dst] +
		   d->nr_demoting, below;
	u32 lru = d->nr_lru[KV_LRU_ACTIVE] + d->nr_lru[KV_LRU_INACTIVE];
	int next = next_tier(pool, dst);

	if (dst == KV_TIER_SWAP)
		room += pool->nr_swapcache;	/* clean copies, dropped for free */
	if (next < KV_NR_TIERS) {
		below = reclaim_room(pool, next, 0);
		room += lru < below ? lru : below;
	}
	return room;
}

bool reclaim_possible(struct kv_pool *pool, int tier, u32 need, u32 dst_flags)
{
	struct kv_tier *t = &pool->tier[tier];
	u64 have = tier_nr_free(t) + t->nr_locked, room;
	u32 lru = t->nr_lru[KV_LRU_ACTIVE] + t->nr_lru[KV_LRU_INACTIVE];

	/* Idle cached blocks are on the LRU too: each goes one way or the other. */
	if (next_tier(pool, tier) < KV_NR_TIERS) {
		room = reclaim_room(pool, next_tier(pool, tier), dst_flags) +
		       pool->prefix.nr_idle[tier];
		have += lru < room ? lru : room;
	} else {
		have += pool->prefix.nr_idle[tier];
		if (tier == KV_TIER_SWAP)
			have += pool->nr_swapcache;
	}
	return have >= need;
}

/*
 * Blocks one reclaim round takes: a batch, but no more than the frames
 * missing, so that eviction (which copies nothing, and so gains nothing
 * from batching) never drops cached blocks that were not needed.
 */
static u32 reclaim_want(struct kv_pool *pool, struct kv_tier *t, u32 need)
{
	u32 miss = need > tier_nr_free(t) ? need - tier_nr_free(t) : 1;

	return miss < pool->vm.reclaim_batch ? miss : pool->vm.reclaim_batch;
}

/*
 * shrink_tier() of @t, its progress: the blocks it demoted or evicted, or
 * the frames of @t that came free meanwhile where more. Making room in the
 * next tier may evict cached leaves of @t to reach their parents there
 * (prefix_evict()), after which shrink_tier() finds nothing left here to
 * demote and says 0.
 */
static u32 shrink_progress(struct kv_pool *pool, struct kv_tier *t, u32 nr, bool kswapd,
			   u32 dst_flags)
{
	u32 before = tier_nr_free(t), n;

	n = shrink_tier(pool, t->id, nr, kswapd, dst_flags);
	if (tier_nr_free(t) > before && tier_nr_free(t) - before > n)
		n = tier_nr_free(t) - before;
	return n;
}

/* Consecutive waits for others' moves before direct reclaim gives up. */
#define RECLAIM_MAX_WAITS 16

/* Blocks reclaim is moving down out of the tiers below @tier. */
static u32 demoting_below(struct kv_pool *pool, int tier)
{
	u32 n = 0;

	while (++tier < KV_NR_TIERS)
		n += pool->tier[tier].nr_demoting;
	return n;
}

/**
 * try_to_free_frames() - direct reclaim until @tier has @need free frames
 * @pool:      pool, locked (dropped while batches are copied or while
 *             waiting for moves in flight)
 * @tier:      tier to reclaim from
 * @need:      free frames wanted
 * @dst_flags: KV_ALLOC_RECLAIM when the caller is promoting blocks from the
 *             next tier, which frees its frames again: demotion may then
 *             use that tier's reserve
 *
 * Return: non-zero when progress was made (frames of @tier freed, a move
 * in flight completed), 0 when nothing more can be reclaimed.
 */
u32 try_to_free_frames(struct kv_pool *pool, int tier, u32 need, u32 dst_flags)
{
	struct kv_tier *t = &pool->tier[tier];
	u32 progress = 0, waits = 0, n;

	while (tier_nr_free(t) < need) {
		n = shrink_progress(pool, t, reclaim_want(pool, t, need), false, dst_flags);
		if (n) {
			progress += n;
			waits = 0;
			continue;
		}
		if ((!t->nr_locked && !demoting_below(pool, tier)) || ++waits > RECLAIM_MAX_WAITS)
			break;
		/*
		 * Others' moves in flight will free frames: here, or in a tier
		 * below where this one's demotions go (kvswapd writing the host
		 * tier out to swap). Wait for them.
		 */
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
		n = shrink_tier(pool, tier, nr - done, false, 0);
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
		if (!shrink_progress(pool, t, reclaim_want(pool, t, t->wmark[KV_WMARK_HIGH]), true,
				     0))
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

/*
 * Name a new kvswapd after its tier ("kvswapd/device", as ps shows kernel
 * threads) and move it to the placement's CPUs, if the pool has any; a
 * set the kernel refuses leaves it where it is (ks->bound false). Pool
 * locked, so the thread cannot have been joined.
 */
static void kvswapd_place(struct kv_pool *pool, struct kv_tier *t)
{
	static const char *const names[KV_NR_TIERS] = { "device", "host", "swap" };
	struct kv_kvswapd *ks = &t->kvswapd;
	char comm[16];

	snprintf(comm, sizeof(comm), "kvswapd/%s", names[t->id]);
	pthread_setname_np(ks->thread, comm);
	ks->bound = CPU_COUNT(&pool->place.cpus) &&
		    !pthread_setaffinity_np(ks->thread, sizeof(pool->place.cpus),
					    &pool->place.cpus);
}

/**
 * kv_kvswapd_start() - start a reclaimer thread for each tier that has a
 * tier below it to demote to
 * @pool: pool
 *
 * A tier's thread counts as running from here until kv_kvswapd_stop() has
 * joined it, so a start racing a stop never makes a second thread. Each
 * runs on the CPUs of the pool's placement, where it has one.
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
		if (!pool->tier[i].fa.nr_total || (i && !pool->tier[i + 1].fa.nr_total))
			continue;	/* the device tier's runs even with no host tier */
		kv_pool_lock(pool);
		if (ks->running) {
			kv_pool_unlock(pool);
			continue;
		}
		ks->running = true;
		ks->stop = false;
		ks->wake = false;
		ks->gen++;
		err = pthread_create(&ks->thread, NULL, kvswapd, &pool->tier[i]);
		if (err)
			ks->running = false;
		else
			kvswapd_place(pool, &pool->tier[i]);
		kv_pool_unlock(pool);
		if (err) {
			kv_kvswapd_stop(pool);
			return -err;
		}
	}
	return 0;
}

/**
 * kv_kvswapd_stop() - stop and join every kvswapd of the pool
 * @pool: pool
 *
 * A second caller while a stop is under way waits for that thread to be
 * joined (not for a thread started after it).
 */
void kv_kvswapd_stop(struct kv_pool *pool)
{
	struct kv_kvswapd *ks;
	u32 gen;
	int i;

	for (i = 0; i < KV_NR_TIERS; i++) {
		ks = &pool->tier[i].kvswapd;
		kv_pool_lock(pool);
		if (ks->running && ks->stop) {
			gen = ks->gen;
			while (ks->running && ks->gen == gen)
				pthread_cond_wait(&ks->wait, &pool->lock);
			kv_pool_unlock(pool);
			continue;
		}
		if (!ks->running) {
			kv_pool_unlock(pool);
			continue;
		}
		ks->stop = true;
		pthread_cond_broadcast(&ks->wait);
		kv_pool_unlock(pool);
		pthread_join(ks->thread, NULL);
		kv_pool_lock(pool);
		ks->running = false;
		pthread_cond_broadcast(&ks->wait);
		kv_pool_unlock(pool);
	}
}
