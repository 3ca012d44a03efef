// SPDX-License-Identifier: MIT
/*
 * Frame allocation and watermarks, as the kernel's mm/page_alloc.c.
 *
 * Each tier's free frames sit on a stack: alloc pops, free pushes, both O(1),
 * with batch variants that take or return many frames under one lock. A bitmap
 * of frames handed out catches a double free before it corrupts the stack.
 *
 * An allocation may take the free count down to the tier's min watermark.
 * Below low it wakes the tier's kvswapd; one that would go below min
 * reclaims synchronously (direct reclaim) unless KV_ALLOC_NOWAIT, and fails
 * with -ENOMEM when nothing can be reclaimed, taking nothing. Reclaim itself
 * (KV_ALLOC_RECLAIM) may use the frames below min: that reserve is what
 * lets reclaim make progress when a tier is full.
 */
#include <stdlib.h>
#include "internal.h"

static const enum kv_vm_event pgalloc_events[KV_NR_TIERS] = {
	KV_PGALLOC_DEVICE, KV_PGALLOC_HOST, KV_PGALLOC_SWAP
};
static const enum kv_vm_event pgfree_events[KV_NR_TIERS] = {
	KV_PGFREE_DEVICE, KV_PGFREE_HOST, KV_PGFREE_SWAP
};

#define BITS_PER_WORD 64

/**
 * frame_alloc_init() - set up the allocator of a tier of @nr frames
 * @fa: allocator
 * @nr: frames in the arena
 *
 * All frames start free; low frame numbers are handed out first.
 */
int frame_alloc_init(struct kv_frame_alloc *fa, u32 nr)
{
	u32 i;

	fa->stack = malloc((nr ? nr : 1) * sizeof(*fa->stack));
	if (!fa->stack)
		return -ENOMEM;
	fa->used = calloc(nr / BITS_PER_WORD + 1, sizeof(*fa->used));
	fa->raw = calloc(nr / BITS_PER_WORD + 1, sizeof(*fa->raw));
	if (!fa->used || !fa->raw) {
		frame_alloc_destroy(fa);
		return -ENOMEM;
	}
	for (i = 0; i < nr; i++)
		fa->stack[i] = nr - 1 - i;
	fa->nr_free = nr;
	fa->nr_total = nr;
	return 0;
}

/** frame_alloc_destroy() - free what frame_alloc_init() allocated */
void frame_alloc_destroy(struct kv_frame_alloc *fa)
{
	free(fa->stack);
	free(fa->used);
	free(fa->raw);
	fa->stack = NULL;
	fa->used = NULL;
	fa->raw = NULL;
}

/** frame_is_used() - whether @frame is handed out */
bool frame_is_used(const struct kv_frame_alloc *fa, u32 frame)
{
	return fa->used[frame / BITS_PER_WORD] >> (frame % BITS_PER_WORD) & 1;
}

static void frame_set_used(struct kv_frame_alloc *fa, u32 frame, bool used)
{
	u64 bit = 1ull << (frame % BITS_PER_WORD);

	if (used)
		fa->used[frame / BITS_PER_WORD] |= bit;
	else
		fa->used[frame / BITS_PER_WORD] &= ~bit;
}

/*
 * Clustered allocation, as mm/swapfile.c's: slots come from the current
 * cluster of 64 (one bitmap word) in ascending order, then from the next
 * cluster with free slots, so that a batch of swap-outs lands on runs of
 * consecutive slots and the device sees sequential I/O. Caller checked
 * that @n slots are free.
 */
static void frames_pop_clustered(struct kv_frame_alloc *fa, u32 n, u32 *frames)
{
	u32 words = (fa->nr_total + BITS_PER_WORD - 1) / BITS_PER_WORD, i = 0, bit, f;
	u64 free_bits;

	while (i < n) {
		free_bits = ~fa->used[fa->cursor];
		if (fa->cursor == words - 1 && fa->nr_total % BITS_PER_WORD)
			free_bits &= (1ull << (fa->nr_total % BITS_PER_WORD)) - 1;
		if (!free_bits) {
			fa->cursor = (fa->cursor + 1) % words;
			continue;
		}
		bit = (u32)__builtin_ctzll(free_bits);
		f = fa->cursor * BITS_PER_WORD + bit;
		frame_set_used(fa, f, true);
		frames[i++] = f;
	}
	fa->nr_free -= n;
}

/* Pop in stack order, so a fresh tier hands out ascending runs. */
static void frames_pop(struct kv_frame_alloc *fa, u32 n, u32 *frames)
{
	u32 i;

	if (fa->clustered) {
		frames_pop_clustered(fa, n, frames);
		return;
	}
	for (i = 0; i < n; i++) {
		frames[i] = fa->stack[--fa->nr_free];
		frame_set_used(fa, frames[i], true);
	}
}

/*
 * Frames that fail the checks are reported and kept off the free list.
 * Returns the frames freed.
 */
static u32 frames_push(struct kv_frame_alloc *fa, u32 n, const u32 *frames)
{
	u32 i, f, freed = 0;

	for (i = 0; i < n; i++) {
		f = frames[i];
		if (f >= fa->nr_total || !frame_is_used(fa, f)) {
			fprintf(stderr, "kvmem: bad frame free: %u of %u\n", f, fa->nr_total);
			continue;
		}
		frame_set_used(fa, f, false);
		if (fa->clustered)
			fa->nr_free++;
		else
			fa->stack[fa->nr_free++] = f;
		freed++;
	}
	return freed;
}

/**
 * frames_claim() - hand out these particular free frames (a restore puts
 * blocks back in the slots they were saved in)
 * @pool:   pool, locked
 * @tier:   tier
 * @n:      frames
 * @frames: the frames; each must be free, none repeated
 *
 * Rebuilds the free stack without them, still popping ascending.
 *
 * Return: 0, or -EBUSY when one is not free (nothing is taken).
 */
int frames_claim(struct kv_pool *pool, int tier, u32 n, const u32 *frames)
{
	struct kv_frame_alloc *fa = &pool->tier[tier].fa;
	u32 i, f, k = 0;

	for (i = 0; i < n; i++) {
		if (frames[i] >= fa->nr_total || frame_is_used(fa, frames[i])) {
			while (i--)
				frame_set_used(fa, frames[i], false);
			return -EBUSY;
		}
		frame_set_used(fa, frames[i], true);
	}
	if (fa->clustered) {
		fa->nr_free -= n;
	} else {
		for (f = fa->nr_total; f-- > 0;)
			if (!frame_is_used(fa, f))
				fa->stack[k++] = f;
		fa->nr_free = k;
	}
	count_vm_events(pool, pgalloc_events[tier], n);
	return 0;
}

/**
 * kv_setup_watermarks() - derive min, low and high of every tier
 * @pool: pool, locked or private
 *
 * min is min_free_kbytes worth of frames (1/128 of the tier when 0), at
 * most a quarter of the tier; low and high sit min/4 or
 * watermark_scale_factor/10000 of the tier (whichever is larger) above the
 * one below, as in __setup_per_zone_wmarks(). Every gap is at least one
 * frame where the tier allows it, and high stays below the tier size.
 */
void kv_setup_watermarks(struct kv_pool *pool)
{
	const struct kv_vm_tunables *vm = &pool->vm;
	struct kv_tier *t;
	u64 total, min, gap, low, high;
	int i;

	for (i = 0; i < KV_NR_TIERS; i++) {
		t = &pool->tier[i];
		total = t->fa.nr_total;
		if (vm->min_free_kbytes)
			min = (vm->min_free_kbytes * 1024 + pool->frame_bytes - 1) /
			      pool->frame_bytes;
		else
			min = total / 128;
		if (min > total / 4)
			min = total / 4;
		if (!min && total >= 4)
			min = 1;
		gap = total * vm->watermark_scale_factor / 10000;
		if (gap < min / 4)
			gap = min / 4;
		if (!gap)
			gap = 1;
		while (total && min + 2 * gap >= total && gap > 1)
			gap /= 2;
		high = min + 2 * gap < total ? min + 2 * gap : (total ? total - 1 : 0);
		low = min + gap < high ? min + gap : high;
		t->wmark[KV_WMARK_MIN] = (u32)(min < low ? min : low);
		t->wmark[KV_WMARK_LOW] = (u32)low;
		t->wmark[KV_WMARK_HIGH] = (u32)high;
	}
}

static bool wmark_ok(const struct kv_tier *t, u32 n, u32 flags)
{
	u32 reserve = flags & KV_ALLOC_RECLAIM ? 0 : t->wmark[KV_WMARK_MIN];

	return tier_nr_free(t) >= n && tier_nr_free(t) - n >= reserve;
}

/**
 * __kv_frames_alloc() - allocate @n frames of a tier, all or none
 * @pool:   pool, locked; the lock may be dropped and retaken for reclaim
 * @tier:   KV_TIER_*
 * @n:      frames wanted
 * @flags:  KV_ALLOC_*
 * @frames: receives the frame numbers
 *
 * Return: 0; -EAGAIN when KV_ALLOC_NOWAIT and the tier is below min;
 * -ENOMEM when reclaim cannot make room (nothing is taken; a request that
 * reclaim could never satisfy fails before anything is demoted), and for
 * more frames than the tier has, NOWAIT or not.
 */
int __kv_frames_alloc(struct kv_pool *pool, int tier, u32 n, u32 flags, u32 *frames)
{
	struct kv_tier *t = &pool->tier[tier];
	u32 reserve = flags & KV_ALLOC_RECLAIM ? 0 : t->wmark[KV_WMARK_MIN];
	u32 dst_flags = flags & KV_ALLOC_PROMOTE ? KV_ALLOC_RECLAIM : 0;
	bool stalled = false;

	/* more than the tier holds (n + reserve below cannot wrap then) */
	if (kv_should_fail(pool, KV_FAULT_FRAME) || n > t->fa.nr_total)
		goto fail;
	while (!wmark_ok(t, n, flags)) {
		kvswapd_wakeup(pool, tier);
		if (flags & KV_ALLOC_NOWAIT) {
			count_vm_event(pool, KV_ALLOC_FAIL);
			return -EAGAIN;
		}
		if (!reclaim_possible(pool, tier, n + reserve, dst_flags))
			goto fail;
		if (!stalled) {
			count_vm_event(pool, KV_ALLOCSTALL);
			stalled = true;
		}
		if (!try_to_free_frames(pool, tier, n + reserve, dst_flags))
			goto fail;
	}
	frames_pop(&t->fa, n, frames);
	count_vm_events(pool, pgalloc_events[tier], n);
	if (tier_nr_free(t) < t->wmark[KV_WMARK_LOW])
		kvswapd_wakeup(pool, tier);
	return 0;
fail:
	count_vm_event(pool, KV_ALLOC_FAIL);
	return -ENOMEM;
}

/**
 * __kv_frames_free() - return frames to their tier
 * @pool:   pool, locked
 * @tier:   KV_TIER_*
 * @n:      frames
 * @frames: frame numbers from __kv_frames_alloc()
 *
 * Return: frames freed (a frame not handed out is reported and skipped).
 */
u32 __kv_frames_free(struct kv_pool *pool, int tier, u32 n, const u32 *frames)
{
	n = frames_push(&pool->tier[tier].fa, n, frames);
	count_vm_events(pool, pgfree_events[tier], n);
	return n;
}

/* Frames handed out raw are marked, so that only they can be freed raw. */
static void raw_mark(struct kv_tier *t, u32 n, const u32 *frames)
{
	u32 i;

	for (i = 0; i < n; i++)
		t->fa.raw[frames[i] / BITS_PER_WORD] |= 1ull << (frames[i] % BITS_PER_WORD);
	t->nr_raw += n;
}

static bool raw_unmark(struct kv_tier *t, u32 f)
{
	u64 bit = 1ull << (f % BITS_PER_WORD);

	if (f >= t->fa.nr_total || !(t->fa.raw[f / BITS_PER_WORD] & bit))
		return false;
	t->fa.raw[f / BITS_PER_WORD] &= ~bit;
	t->nr_raw--;
	return true;
}

/**
 * kv_frames_take_raw() - take frames handed out raw back for a block's use
 * @pool:   pool, locked
 * @tier:   tier
 * @n:      frames
 * @frames: frames from kv_frames_alloc(), distinct
 *
 * All or nothing. The frames stay allocated, no longer raw: the caller
 * gives them to blocks or returns them with kv_frames_give_raw().
 *
 * Return: 0, or -EINVAL when one was not handed out raw (or is repeated).
 */
int kv_frames_take_raw(struct kv_pool *pool, int tier, u32 n, const u32 *frames)
{
	u32 i;

	for (i = 0; i < n; i++) {
		if (!raw_unmark(&pool->tier[tier], frames[i])) {
			kv_frames_give_raw(pool, tier, i, frames);
			return -EINVAL;
		}
	}
	return 0;
}

/** kv_frames_give_raw() - undo kv_frames_take_raw(); pool locked */
void kv_frames_give_raw(struct kv_pool *pool, int tier, u32 n, const u32 *frames)
{
	raw_mark(&pool->tier[tier], n, frames);
}

/**
 * kv_frames_alloc() - allocate @n frames of a tier, all or none
 * @pool:   pool
 * @tier:   KV_TIER_*
 * @n:      frames wanted
 * @flags:  KV_ALLOC_NOWAIT or 0
 * @frames: receives the frame numbers
 *
 * The raw allocator under the block layer; frames taken here belong to the
 * caller until kv_frames_free(). Used by the benchmark and by clients'
 * frame reserves.
 *
 * Return: 0, -EINVAL for a bad tier or flag, -EAGAIN, or -ENOMEM.
 */
int kv_frames_alloc(struct kv_pool *pool, int tier, u32 n, u32 flags, u32 *frames)
{
	int err;

	if (tier < 0 || tier >= KV_NR_TIERS || (flags & ~KV_ALLOC_NOWAIT))
		return -EINVAL;
	kv_pool_lock(pool);
	err = __kv_frames_alloc(pool, tier, n, flags, frames);
	if (!err)
		raw_mark(&pool->tier[tier], n, frames);
	kv_pool_unlock(pool);
	return err;
}

/**
 * kv_frames_free() - free frames taken with kv_frames_alloc()
 * @pool:   pool
 * @tier:   KV_TIER_*
 * @n:      frames
 * @frames: frame numbers
 */
void kv_frames_free(struct kv_pool *pool, int tier, u32 n, const u32 *frames)
{
	u32 i;

	if (tier < 0 || tier >= KV_NR_TIERS)
		return;
	kv_pool_lock(pool);
	for (i = 0; i < n; i++) {
		if (!raw_unmark(&pool->tier[tier], frames[i]))
			fprintf(stderr, "kvmem: kv_frames_free: frame %u was not handed out raw\n",
				frames[i]);
		else
			__kv_frames_free(pool, tier, 1, &frames[i]);
	}
	kv_pool_unlock(pool);
}
