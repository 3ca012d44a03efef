/* SPDX-License-Identifier: MIT */
/*
 * mm/ internals: the pool, tier and block structures and the helpers the
 * files of mm/ share. Nothing outside mm/ includes this header.
 *
 * Locking: pool->lock guards every field below that is not marked
 * otherwise: block descriptors, LRU lists, frame allocators, sequence
 * tables and the sequence list. It is held for list and counter updates
 * only, never across a copy: reclaim and activation isolate blocks under
 * the lock (flag KV_BLOCK_LOCKED, one reference held), copy without it, and
 * commit under it again. Event counters are written under the lock and read
 * without it.
 */
#ifndef _KV_MM_INTERNAL_H
#define _KV_MM_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <lib/list.h>
#include <lib/siphash.h>
#include "mm.h"

/* struct kv_block.flags */
#define KV_BLOCK_LOCKED		0x01u	/* isolated and being moved; one ref held */
#define KV_BLOCK_LRU		0x02u	/* on one of its tier's LRU lists */
#define KV_BLOCK_ACTIVE		0x04u	/* on (or bound for) the active list */
#define KV_BLOCK_REFERENCED	0x08u	/* used since it last aged */
#define KV_BLOCK_CACHED		0x10u	/* in the prefix cache, which holds a ref */
#define KV_BLOCK_SWAPCACHE	0x20u	/* resident, with a clean copy in frame[SWAP] */
#define KV_BLOCK_LOST		0x40u	/* left the cache locked: its swap copy goes at putback */

#define KV_LRU_INACTIVE	0
#define KV_LRU_ACTIVE	1
#define KV_NR_LRU	2

/* Most blocks one reclaim batch isolates (vm.reclaim_batch's bound). */
#define KV_RECLAIM_BATCH_MAX	256

/**
 * struct kv_block - per-block descriptor, like struct page
 * @refcount: sequence table entries (and isolation) referencing the block
 * @pincount: active sequences holding the block; pinned blocks never move
 * @flags:    KV_BLOCK_*
 * @tier:     tier the block is resident on, KV_TIER_NONE when free
 * @frame:    frame per tier, KV_FRAME_NONE where none
 * @lru:      link on its tier's active or inactive list
 */
struct kv_block {
	u32 refcount;
	u32 pincount;
	u32 flags;
	u32 tier;
	u32 frame[KV_NR_TIERS];
	struct list_head lru;
};

/**
 * struct kv_frame_alloc - O(1) frame allocator of one tier
 * @stack:    free frame numbers; the top is stack[nr_free - 1]
 * @nr_free:  frames on the stack
 * @nr_total: frames in the arena
 * @used:     bitmap of frames handed out, to catch a double free
 * @raw:      bitmap of frames handed out by kv_frames_alloc() (no block)
 * @clustered: allocate from @used in clusters (the swap tier) instead of
 *            the stack, which is then unused
 * @cursor:   clustered: the cluster (bitmap word) to allocate from next
 */
struct kv_frame_alloc {
	u32 *stack;
	u32 nr_free;
	u32 nr_total;
	u64 *used;
	u64 *raw;
	bool clustered;
	u32 cursor;
};

/**
 * struct kv_kvswapd - background reclaimer of one tier
 * @thread:  the thread, valid while @running
 * @wait:    where it sleeps; signalled by kvswapd_wakeup()
 * @running: thread started and not yet joined
 * @wake:    a wakeup is pending
 * @stop:    the thread must exit
 * @gen:     bumped at every start, so a stopper knows which thread it waits for
 * @bound:   runs on the pool's placement CPUs (pthread_setaffinity_np took)
 */
struct kv_kvswapd {
	pthread_t thread;
	pthread_cond_t wait;
	bool running;
	bool wake;
	bool stop;
	u32 gen;
	bool bound;
};

/**
 * struct kv_bounce - host frames that carry copies between swap and a
 * device tier the CPU cannot address (the swap engine reads and writes
 * host memory only); taken from the host tier when the pool is created
 * @lock:   one bounced copy at a time
 * @frames: the host frames
 * @nr:     how many (0: no bouncing needed)
 */
struct kv_bounce {
	pthread_mutex_t lock;
	u32 *frames;
	u32 nr;
};

#define KV_BOUNCE_FRAMES	64

/**
 * struct kv_tier - one tier of a pool: arena, frames, LRU, reclaim
 * @pool:     owning pool
 * @id:       KV_TIER_*
 * @ops:      backend
 * @arg:      backend parameters (the CUDA backend: struct kv_cuda_params)
 * @priv:     backend private data
 * @desc:     what meminfo shows as the backend, set by it (NULL: ops->name)
 * @base:     CPU address of frame 0, NULL when not CPU-addressable
 * @mlocked:  the arena is locked in RAM
 * @dma:      the arena is registered for DMA by the device tier's backend
 * @numa_node: NUMA node the arena is bound to, -1 none (mm/mempolicy.c)
 * @numa_err: 0, or the error of the bind that failed
 * @fa:       frame allocator
 * @wmark:    min, low, high in frames
 * @lru:      inactive and active lists; tail is oldest
 * @nr_lru:   blocks on each list
 * @nr_pinned: pinned blocks resident here
 * @nr_locked: blocks resident here isolated for a move
 * @nr_demoting: of those, blocks reclaim is moving down from here (their
 *            frames come free when the move ends, whoever waits for it)
 * @nr_raw:   frames handed out by kv_frames_alloc() (no block)
 * @nr_inflight: frames allocated as copy targets while the lock is dropped,
 *            not yet owned by a block
 * @kvswapd:  background reclaimer (tiers with a lower tier only)
 */
struct kv_tier {
	struct kv_pool *pool;
	int id;
	const struct kv_tier_ops *ops;
	const void *arg;
	void *priv;
	const char *desc;
	void *base;
	bool mlocked;
	bool dma;
	int numa_node;
	int numa_err;
	struct kv_frame_alloc fa;
	u32 wmark[KV_NR_WMARKS];
	struct list_head lru[KV_NR_LRU];
	u32 nr_lru[KV_NR_LRU];
	u32 nr_pinned;
	u32 nr_locked;
	u32 nr_demoting;
	u32 nr_raw;
	u32 nr_inflight;
	struct kv_kvswapd kvswapd;
};

#define KV_PREFIX_NONE		UINT32_MAX
#define KV_PREFIX_NAMES_MAX	256
#define KV_PREFIX_NAMES_PER_TENANT	16	/* so no tenant takes them all */

/**
 * struct kv_prefix_node - a cached block's entry in the prefix cache; the
 * node of block i is prefix.nodes[i] (a block is cached at most once)
 * @hash:        chained keyed hash of (namespace, parent's hash, token ids)
 * @ns:          namespace (tenant, or KV_PREFIX_NS_GLOBAL)
 * @stamp:       prefix clock at its last use
 * @parent:      block index of the previous block's node, or KV_PREFIX_NONE
 * @next:        next node in its hash bucket, or KV_PREFIX_NONE
 * @nr_children: cached nodes whose parent this is
 * @pins:        named pins on it or below it (kv_prefix_pin())
 * @depth:       blocks from the root, this one included
 * @tenant:      tenant that inserted it (counters)
 * @heap_pos:    index in its tier's eviction heap, or KV_PREFIX_NONE
 * @heap_tier:   tier of that heap
 * @idle:        held by the cache alone, unlocked, no pin below: evictable
 *               now or once its children go
 */
struct kv_prefix_node {
	u64 hash;
	u64 ns;
	u64 stamp;
	u32 parent;
	u32 next;
	u32 nr_children;
	u32 pins;
	u32 depth;
	u32 tenant;
	u32 heap_pos;
	u32 heap_tier;
	bool idle;
} __attribute__((aligned(64)));	/* one cache line each */

/**
 * struct kv_prefix_name - a named prefix (a system prompt)
 * @name:   its name
 * @node:   its last block's node
 * @hash:   that node's hash, to notice the node went
 * @tenant: tenant that named it
 * @pinned: holds a pin on @node
 */
struct kv_prefix_name {
	char name[KV_PREFIX_NAME_MAX];
	u32 node;
	u64 hash;
	u32 tenant;
	bool pinned;
};

/**
 * struct kv_prefix - a pool's prefix cache (see mm/prefix.c)
 * @nodes:       per block
 * @tokens:      per block, block_tokens token ids
 * @buckets:     hash table heads (block indices)
 * @bucket_mask: buckets - 1 (a power of two)
 * @heap:        per tier, evictable nodes by @stamp (a min-heap)
 * @heap_n:      entries of each heap
 * @nr_cached:   cached blocks per tier
 * @nr_idle:     idle nodes per tier (struct kv_prefix_node.idle)
 * @clock:       bumped at every use
 * @key:         the pool's secret hash key
 * @hash_mask:   ANDed into every hash (test hook: forces collisions)
 * @tenants:     per-tenant counters
 * @nr_tenants:  entries of @tenants
 * @names:       named prefixes
 * @nr_names:    entries of @names
 */
struct kv_prefix {
	struct kv_prefix_node *nodes;
	u32 *tokens;
	u32 *buckets;
	u32 bucket_mask;
	u32 *heap[KV_NR_TIERS];
	u32 heap_n[KV_NR_TIERS];
	u32 nr_cached[KV_NR_TIERS];
	u32 nr_idle[KV_NR_TIERS];
	u64 clock;
	struct siphash_key key;
	u64 hash_mask;
	struct kv_prefix_stats *tenants;
	u32 nr_tenants;
	struct kv_prefix_name names[KV_PREFIX_NAMES_MAX];
	u32 nr_names;
};

/**
 * struct kv_fault - fault injection state (SQLite's FAULTSIM)
 * @sites:   armed KV_FAULT_* sites, 0 when off
 * @nth:     the call (from 1) at an armed site that fails first
 * @calls:   calls seen at armed sites since arming
 * @persist: after the first, every later call fails too
 * @fired:   failures injected since arming
 */
struct kv_fault {
	u32 sites;
	u64 nth;
	u64 calls;
	int persist;
	u64 fired;
};

/**
 * struct kv_pool - one KV geometry and its tiers
 * @name:        pool name
 * @geom:        geometry
 * @frame_bytes: bytes per frame (kv_frame_bytes())
 * @lock:        guards the pool (see the head of this file)
 * @unlocked:    broadcast when blocks lose KV_BLOCK_LOCKED
 * @tier:        the tiers
 * @blocks:      descriptor array
 * @nr_blocks:   descriptors in @blocks (frames of all tiers together)
 * @free_blocks: stack of free descriptor indices
 * @nr_free_blocks: entries on @free_blocks
 * @seqs:        live sequences
 * @nr_seqs:     entries on @seqs
 * @vm:          tunables
 * @events:      vmstat counters (written under @lock, read without)
 * @fault:       fault injection (atomics; tests only)
 * @nr_swapcache: resident blocks keeping a clean copy in a swap slot
 * @swapcache_scan: where swapcache_drop() looks next
 * @prefix:      prefix cache
 * @swap:        the swap area's parameters (tier KV_TIER_SWAP)
 * @flags:       KV_POOL_*
 * @bounce:      host frames for swap I/O of a GPU arena
 * @place:       NUMA placement (numa_node -1 and no CPUs: none)
 */
struct kv_pool {
	char name[64];
	struct kv_geometry geom;
	u64 frame_bytes;
	pthread_mutex_t lock;
	pthread_cond_t unlocked;
	struct kv_tier tier[KV_NR_TIERS];
	struct kv_block *blocks;
	u32 nr_blocks;
	u32 *free_blocks;
	u32 nr_free_blocks;
	struct list_head seqs;
	u32 nr_seqs;
	struct kv_vm_tunables vm;
	u64 events[KV_NR_VM_EVENTS];
	struct kv_fault fault;
	u32 nr_swapcache;
	u32 swapcache_scan;
	struct kv_prefix prefix;
	struct kv_swap_params swap;
	u32 flags;
	struct kv_bounce bounce;
	struct kv_placement place;
};

/*
 * Internal allocation flag: the caller promotes blocks from the next tier
 * and frees their frames there right after, so demotions made to find room
 * may use that tier's reserve (KV_ALLOC_RECLAIM).
 */
#define KV_ALLOC_PROMOTE	0x4u

#define KV_SEQ_ACTIVE		0x1u
#define KV_SEQ_ACTIVATING	0x2u	/* pinned but for the blocks it isolated */

/**
 * struct kv_seq - a sequence: an ordered table of blocks and a token count
 * @pool:      owning pool
 * @node:      link on pool->seqs
 * @table:     block indices, one per logical block
 * @nr_blocks: used entries of @table
 * @capacity:  allocated entries of @table
 * @nr_tokens: tokens held
 * @flags:     KV_SEQ_*
 * @ids:       token ids of its first @nr_ids tokens (the prefix cache)
 * @ids_cap:   entries allocated in @ids
 * @nr_ids:    leading tokens whose ids are known
 * @nr_safe:   leading tokens whose K and V the client has written (all but
 *             those of its last append while active)
 * @nr_cached: leading blocks that are cached nodes: table[i] is in the
 *             prefix cache for every i < @nr_cached
 * @tenant:    tenant, for the namespace and the counters
 */
struct kv_seq {
	struct kv_pool *pool;
	struct list_head node;
	u32 *table;
	u32 nr_blocks;
	u32 capacity;
	u32 nr_tokens;
	u32 flags;
	u32 *ids;
	u32 ids_cap;
	u32 nr_ids;
	u32 nr_safe;
	u32 nr_cached;
	u32 tenant;
};

/**
 * struct kv_copy - one block-sized copy
 * @src_tier:  tier of the source frame
 * @src_frame: source frame
 * @dst_tier:  tier of the destination frame
 * @dst_frame: destination frame
 */
struct kv_copy {
	u32 src_tier;
	u32 src_frame;
	u32 dst_tier;
	u32 dst_frame;
};

/**
 * struct kv_tier_ops - a tier backend
 * @name:          shown in meminfo
 * @arena_create:  create the arena of t->fa.nr_total frames of
 *                 pool->frame_bytes; set t->priv, t->base, t->mlocked
 * @arena_destroy: release what arena_create made
 * @copy_submit:   start @n copies; the device tier's backend runs every copy
 *                 that involves the device tier; may complete before return
 * @copy_wait:     wait for the copies started by copy_submit(); 0 or -errno
 * @arena_export:  (device tier) how other processes map the arena
 * @attach:        optional: every tier's arena exists (the CUDA backend
 *                 registers the host arena for DMA here)
 * @detach:        optional: undo attach, before any arena is destroyed
 *
 * Backends are called without pool->lock held, except arena_create,
 * arena_destroy, attach and detach, which run while the pool is private to
 * its creator.
 */
struct kv_tier_ops {
	const char *name;
	int (*arena_create)(struct kv_tier *t);
	void (*arena_destroy)(struct kv_tier *t);
	int (*arena_export)(struct kv_tier *t, struct kv_device_export *e);
	int (*attach)(struct kv_tier *t);
	void (*detach)(struct kv_tier *t);
	int (*copy_submit)(struct kv_pool *pool, const struct kv_copy *c, u32 n,
			   void **cookie);
	int (*copy_wait)(struct kv_pool *pool, void *cookie);
};

extern const struct kv_tier_ops kv_cpu_device_ops;
extern const struct kv_tier_ops kv_host_memfd_ops;
extern const struct kv_tier_ops kv_swap_file_ops;
extern const struct kv_tier_ops kv_cuda_device_ops;

static inline void kv_pool_lock(struct kv_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
}

static inline void kv_pool_unlock(struct kv_pool *pool)
{
	pthread_mutex_unlock(&pool->lock);
}

static inline struct kv_block *kv_block(struct kv_pool *pool, u32 idx)
{
	return &pool->blocks[idx];
}

static inline u32 kv_block_idx(struct kv_pool *pool, struct kv_block *b)
{
	return (u32)(b - pool->blocks);
}

/* Counters: writers hold pool->lock, readers use relaxed loads. */
static inline void count_vm_events(struct kv_pool *pool, enum kv_vm_event ev, u64 n)
{
	__atomic_store_n(&pool->events[ev],
			 __atomic_load_n(&pool->events[ev], __ATOMIC_RELAXED) + n,
			 __ATOMIC_RELAXED);
}

static inline void count_vm_event(struct kv_pool *pool, enum kv_vm_event ev)
{
	count_vm_events(pool, ev, 1);
}

static inline u32 tier_nr_free(const struct kv_tier *t)
{
	return t->fa.nr_free;
}

/* mm/fault.c */
bool kv_should_fail(struct kv_pool *pool, u32 site);
void *kv_meta_alloc(struct kv_pool *pool, size_t size);
void *kv_meta_realloc(struct kv_pool *pool, void *p, size_t size);

/* mm/mempolicy.c */
int placement_check(const struct kv_placement *pl);
void arena_bind_node(struct kv_tier *t, void *base, u64 bytes);

/* mm/page_alloc.c */
int frame_alloc_init(struct kv_frame_alloc *fa, u32 nr);
void frame_alloc_destroy(struct kv_frame_alloc *fa);
bool frame_is_used(const struct kv_frame_alloc *fa, u32 frame);
int __kv_frames_alloc(struct kv_pool *pool, int tier, u32 n, u32 flags, u32 *frames);
u32 __kv_frames_free(struct kv_pool *pool, int tier, u32 n, const u32 *frames);
void kv_setup_watermarks(struct kv_pool *pool);
int kv_frames_take_raw(struct kv_pool *pool, int tier, u32 n, const u32 *frames);
int frames_claim(struct kv_pool *pool, int tier, u32 n, const u32 *frames);
void kv_frames_give_raw(struct kv_pool *pool, int tier, u32 n, const u32 *frames);

/* mm/block.c */
int blocks_init(struct kv_pool *pool);
void blocks_destroy(struct kv_pool *pool);
struct kv_block *kv_block_alloc(struct kv_pool *pool, int tier, u32 frame);
void kv_block_get(struct kv_block *b);
void kv_block_put(struct kv_pool *pool, struct kv_block *b);
void kv_block_pin(struct kv_pool *pool, struct kv_block *b);
void kv_block_unpin(struct kv_pool *pool, struct kv_block *b);
void kv_block_isolate(struct kv_pool *pool, struct kv_block *b);
void kv_block_putback(struct kv_pool *pool, struct kv_block *b);

/* mm/swap.c: LRU lists */
void lru_add(struct kv_pool *pool, struct kv_block *b);
void lru_del(struct kv_pool *pool, struct kv_block *b);
void mark_block_accessed(struct kv_pool *pool, struct kv_block *b);

/* mm/tier.c */
int kv_copy_run(struct kv_pool *pool, const struct kv_copy *c, u32 n);
int tiers_init(struct kv_pool *pool, const struct kv_pool_params *p);
void tiers_destroy(struct kv_pool *pool);
int bounce_init(struct kv_pool *pool);
void bounce_destroy(struct kv_pool *pool);

/* mm/migrate.c */
int kv_migrate_blocks(struct kv_pool *pool, struct kv_block **blocks, u32 n,
		      int dst, const u32 *dst_frames);
void swapcache_free(struct kv_pool *pool, struct kv_block *b);
u32 swapcache_drop(struct kv_pool *pool, u32 nr);

/* mm/vmscan.c */
void kvswapd_wakeup(struct kv_pool *pool, int tier);
u32 try_to_free_frames(struct kv_pool *pool, int tier, u32 need, u32 dst_flags);
bool reclaim_possible(struct kv_pool *pool, int tier, u32 need, u32 dst_flags);

/* mm/sequence.c */
int seq_reserve(struct kv_seq *seq, u32 nr_blocks);
int seq_reserve_ids(struct kv_seq *seq, u32 nr_ids);

/* mm/prefix.c; pool locked unless said */
#define PUBLISH_ACTIVE	0	/* stop at a block cached already as another */
#define PUBLISH_DEDUP	1	/* inactive: share the cached block instead */
#define PUBLISH_FINAL	2	/* the sequence is going: just insert */
int prefix_init(struct kv_pool *pool);
void prefix_destroy(struct kv_pool *pool);
void prefix_publish(struct kv_seq *seq, int mode);
void prefix_recheck(struct kv_pool *pool, struct kv_block *b);
void prefix_touch(struct kv_pool *pool, struct kv_block *b);
u32 prefix_evict(struct kv_pool *pool, int tier, u32 nr);
u32 prefix_drop_lost(struct kv_pool *pool, struct kv_block **blocks, u32 n);
void prefix_seq_cut(struct kv_seq *seq, u32 nr_tokens);
int prefix_restore_node(struct kv_pool *pool, u32 idx, u32 parent, u32 tenant, const u32 *ids);

/* mm/swapfile.c */
u32 swap_slot_crc(struct kv_pool *pool, u32 slot);
void swap_slot_set_crc(struct kv_pool *pool, u32 slot, u32 crc);
bool swap_slot_failed(struct kv_pool *pool, u32 slot);
int swap_area_fd(struct kv_pool *pool);

#endif /* _KV_MM_INTERNAL_H */
