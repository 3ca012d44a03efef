/* SPDX-License-Identifier: MIT */
/*
 * kvmem memory manager: the interface that the daemon and the selftests use.
 *
 * A pool is one KV geometry with an arena per tier (device, host; swap
 * later). Blocks are allocated, shared, copied on write, pinned for kernels,
 * aged on two LRU lists and demoted by reclaim, as pages are in the kernel.
 * See Documentation/mm/ for the design.
 *
 * Threading: every function here may be called from any thread. A sequence
 * must be used by one thread at a time (the caller serialises the calls on
 * one struct kv_seq); different sequences may be used concurrently, and
 * kvswapd threads reclaim beside them.
 */
#ifndef _KV_MM_H
#define _KV_MM_H

#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <uapi/kvmem/layout.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;

/*
 * Tiers, fastest first. A block lives on exactly one: the device, the host,
 * or a swap slot (written out, not CPU-addressable).
 */
#define KV_TIER_DEVICE	0
#define KV_TIER_HOST	1
#define KV_TIER_SWAP	2
#define KV_NR_TIERS	3
#define KV_TIER_NONE	0xff

#define KV_FRAME_NONE	UINT32_MAX

/* Allocation and activation flags. */
#define KV_ALLOC_NOWAIT		0x1u	/* no direct reclaim, no sleeping: -EAGAIN */
#define KV_ALLOC_RECLAIM	0x2u	/* reclaim itself: may use frames below min */

/* Pool creation flags. */
#define KV_POOL_NO_KVSWAPD	0x1u	/* no background reclaim threads */
#define KV_POOL_NO_PREFIX	0x2u	/* no prefix cache */
#define KV_POOL_PREFIX_GLOBAL	0x4u	/* all tenants share cached prefixes */

/* Largest number of tokens a sequence may hold. */
#define KV_SEQ_MAX_TOKENS	(1u << 30)

/*
 * Most bytes of one tier's frames (1 PiB): offsets and lengths computed
 * from them fit size_t and off_t with room to spare.
 */
#define KV_TIER_BYTES_MAX	(1ull << 50)

struct kv_pool;
struct kv_seq;
struct kv_tier_ops;

/* Watermark indices. */
#define KV_WMARK_MIN	0
#define KV_WMARK_LOW	1
#define KV_WMARK_HIGH	2
#define KV_NR_WMARKS	3

/**
 * struct kv_vm_tunables - reclaim tunables of a pool
 * @min_free_kbytes:        reserve kept free in each tier, in KiB; 0 means
 *                          automatic (1/128 of the tier, at least one frame)
 * @watermark_scale_factor: distance min->low and low->high, in units of
 *                          1/10000 of the tier (as vm.watermark_scale_factor);
 *                          1..3000, default 10
 * @reclaim_batch:          blocks isolated and moved per reclaim batch, 1..256
 */
struct kv_vm_tunables {
	u64 min_free_kbytes;
	u32 watermark_scale_factor;
	u32 reclaim_batch;
};

/* struct kv_swap_params.engine */
#define KV_SWAP_AUTO		0	/* io_uring, else psync where it is refused */
#define KV_SWAP_IO_URING	1
#define KV_SWAP_PSYNC		2

/**
 * struct kv_swap_params - a pool's region of a swap area
 * @fd:     the swap file or block device, opened O_RDWR | O_DIRECT by the
 *          caller, who keeps it open while the pool lives
 * @offset: byte offset of the pool's region (slots follow one another,
 *          kv_frame_bytes() each); a multiple of the device's alignment
 * @engine: KV_SWAP_*
 */
struct kv_swap_params {
	int fd;
	u64 offset;
	u32 engine;
};

struct cudrv;

/**
 * struct kv_cuda_params - a device tier in GPU memory (the CUDA backend)
 * @drv:         the loaded driver (lib/cudrv.h); outlives the pool
 * @device:      device ordinal in this process
 * @chunk_bytes: size of each physical allocation of the arena (each is
 *               exported as one file descriptor); rounded up to the
 *               driver's granularity; 0: the arena in at most
 *               KV_CUDA_MAX_CHUNKS chunks of at least 2 GiB
 */
struct kv_cuda_params {
	struct cudrv *drv;
	int device;
	u64 chunk_bytes;
};

#define KV_CUDA_MAX_CHUNKS	64

/* struct kv_device_export.backend */
#define KV_BACKEND_CPU		1
#define KV_BACKEND_CUDA		2

/**
 * struct kv_device_export - how another process maps a pool's device arena
 * @backend:     KV_BACKEND_*
 * @arena_bytes: bytes to map (@nr_chunks * @chunk_bytes)
 * @chunk_bytes: bytes behind each descriptor
 * @nr_chunks:   descriptors in @fds, mapped one after another
 * @fds:         the descriptors (owned by the pool: dup or send them):
 *               CPU, one memfd; CUDA, POSIX fds of cuMemCreate allocations
 *               to import with cuMemImportFromShareableHandle
 * @gpu:         CUDA: device ordinal in the pool's process
 * @uuid:        CUDA: the device's UUID, to find it in another process
 */
struct kv_device_export {
	u32 backend;
	u64 arena_bytes;
	u64 chunk_bytes;
	u32 nr_chunks;
	const int *fds;
	int gpu;
	u8 uuid[16];
};

/* Highest NUMA node number a placement may name, plus one. */
#define KV_NUMA_NODES_MAX	1024

/**
 * struct kv_placement - where a pool's host memory and reclaim threads go
 * (the daemon finds them with hwloc: the node nearest the pool's GPU, or
 * the node it runs on; mm only applies them)
 * @numa_node: NUMA node the host tier's arena, and the CPU backend's device
 *             arena, are bound to (mbind(2), MPOL_PREFERRED, before any page
 *             is faulted in); -1 for no binding
 * @cpus:      CPUs the pool's kvswapd threads run on; empty: wherever the
 *             creating thread may run
 *
 * Binding is best effort: a node or CPU set the kernel refuses leaves the
 * pool unplaced, and kv_pool_meminfo() tells what took (struct
 * kv_tier_info @numa_node, @numa_err and @kvswapd_bound).
 */
struct kv_placement {
	int numa_node;
	cpu_set_t cpus;
};

/**
 * struct kv_pool_params - what kv_pool_create() builds
 * @name:      pool name, at most 63 bytes
 * @geom:      KV geometry; must satisfy kv_geometry_valid()
 * @nr_frames: frames (swap: slots) per tier; device must be > 0, 0 means
 *             no such tier
 * @ops:       backend per tier, NULL for the default (CPU device, host
 *             memfd, swap file)
 * @vm:        reclaim tunables; zeroed fields take their defaults
 * @flags:     KV_POOL_*
 * @swap:      the swap area, when nr_frames[KV_TIER_SWAP] > 0
 * @cuda:      non-NULL: the device tier is GPU memory (CUDA backend);
 *             NULL: the CPU backend (a memfd), unless @ops says otherwise
 * @place:     NUMA placement (copied); NULL for none
 */
struct kv_pool_params {
	const char *name;
	struct kv_geometry geom;
	u32 nr_frames[KV_NR_TIERS];
	const struct kv_tier_ops *ops[KV_NR_TIERS];
	struct kv_vm_tunables vm;
	u32 flags;
	struct kv_swap_params swap;
	const struct kv_cuda_params *cuda;
	const struct kv_placement *place;
};

/**
 * struct kv_tier_info - one tier's part of a meminfo snapshot
 * @backend:  name of the backend serving the tier
 * @total:    frames in the arena
 * @free:     frames on the free list
 * @wmark:    min, low and high watermarks, in frames
 * @active:   blocks resident here on the active LRU list
 * @inactive: blocks resident here on the inactive LRU list
 * @pinned:   blocks resident here pinned by active sequences
 * @locked:   blocks resident here being moved between tiers
 * @mlocked:  1 when the arena is locked in RAM
 * @cached:   blocks resident here held by the prefix cache
 * @evictable: of those, blocks only the cache holds, leaves, unpinned
 * @numa_node: NUMA node the arena is bound to, -1 when not bound (no
 *            placement, not CPU memory, or the bind failed)
 * @numa_err: 0, or the negative errno of a bind that failed
 * @kvswapd_bound: 1 when the tier's kvswapd runs on the placement's CPUs
 * @dma:      1 when the arena is registered with the GPU's driver for DMA
 */
struct kv_tier_info {
	const char *backend;
	u32 total;
	u32 free;
	u32 wmark[KV_NR_WMARKS];
	u32 active;
	u32 inactive;
	u32 pinned;
	u32 locked;
	u32 mlocked;
	u32 cached;
	u32 evictable;
	int numa_node;
	int numa_err;
	u32 kvswapd_bound;
	u32 dma;
};

/**
 * struct kv_meminfo - a snapshot of a pool's memory
 * @frame_bytes: bytes per frame
 * @block_bytes: bytes of KV per block
 * @blocks:      block descriptors in use
 * @sequences:   live sequences
 * @swapcache:   resident blocks that keep a clean copy in a swap slot
 * @bounce:      host frames that carry swap I/O of a device tier the CPU
 *               cannot address (GPU memory), counted as used
 * @tier:        per tier
 */
struct kv_meminfo {
	u64 frame_bytes;
	u64 block_bytes;
	u32 blocks;
	u32 sequences;
	u32 swapcache;
	u32 bounce;
	struct kv_tier_info tier[KV_NR_TIERS];
};

/* vmstat events: monotonic counters. Append new ones; never rename one. */
enum kv_vm_event {
	KV_PGALLOC_DEVICE,
	KV_PGALLOC_HOST,
	KV_PGFREE_DEVICE,
	KV_PGFREE_HOST,
	KV_PGDEMOTE,
	KV_PGPROMOTE,
	KV_PGACTIVATE,
	KV_PGDEACTIVATE,
	KV_PGROTATED,
	KV_PGSCAN_KSWAPD,
	KV_PGSCAN_DIRECT,
	KV_PGSTEAL_KSWAPD,
	KV_PGSTEAL_DIRECT,
	KV_KSWAPD_WAKE,
	KV_ALLOCSTALL,
	KV_ALLOC_FAIL,
	KV_COW_COPY,
	KV_SEQ_CREATE,
	KV_SEQ_FORK,
	KV_SEQ_FREE,
	KV_SEQ_ACTIVATE,
	KV_SEQ_DEACTIVATE,
	KV_COPY_FAIL,
	KV_LOCKED_WAIT,
	KV_PREFIX_QUERY_TOKENS,
	KV_PREFIX_HIT_TOKENS_DEVICE,
	KV_PREFIX_HIT_TOKENS_HOST,
	KV_PREFIX_INSERT,
	KV_PREFIX_EVICT,
	KV_PGALLOC_SWAP,
	KV_PGFREE_SWAP,
	KV_PSWPIN,
	KV_PSWPOUT,
	KV_SWAP_FAIL,
	KV_PREFIX_HIT_TOKENS_SWAP,
	KV_SWAPCACHE_HIT,
	KV_SWAPCACHE_DROP,
	KV_PREFIX_LOST,
	KV_NR_VM_EVENTS
};

/* Fault injection sites (kv_pool_fault_inject()). */
#define KV_FAULT_META	0x1u	/* metadata allocation (malloc) */
#define KV_FAULT_FRAME	0x2u	/* frame allocation in any tier */
#define KV_FAULT_COPY	0x4u	/* a copy between or within tiers */

/* Prefix cache. */
#define KV_PREFIX_NAME_MAX	64
#define KV_TENANT_ANY		UINT32_MAX	/* kv_prefix_set_pinned(): any tenant's */
#define KV_TENANT_NONE		(UINT32_MAX - 1)	/* a sequence that never uses the cache */

/**
 * struct kv_prefix_hit - what kv_prefix_match() found
 * @tokens:      tokens matched (whole blocks)
 * @blocks:      blocks matched
 * @tier_tokens: of @tokens, those whose block was on each tier
 */
struct kv_prefix_hit {
	u32 tokens;
	u32 blocks;
	u32 tier_tokens[KV_NR_TIERS];
};

/**
 * struct kv_prefix_stats - prefix cache counters of one tenant, or of the
 * pool
 * @tenant:       the tenant (pool totals: UINT32_MAX)
 * @cached:       blocks it inserted that are cached now
 * @query_tokens: tokens looked up
 * @hit_tokens:   tokens found, by the tier their block was on
 * @inserted:     blocks inserted
 * @evicted:      blocks evicted
 */
struct kv_prefix_stats {
	u32 tenant;
	u32 cached;
	u64 query_tokens;
	u64 hit_tokens[KV_NR_TIERS];
	u64 inserted;
	u64 evicted;
};

/* mm/pool.c */
int kv_pool_create(const struct kv_pool_params *p, struct kv_pool **out);
void kv_pool_destroy(struct kv_pool *pool);
const struct kv_geometry *kv_pool_geometry(const struct kv_pool *pool);
void *kv_pool_frame_addr(struct kv_pool *pool, int tier, u32 frame);
int kv_pool_device_export(struct kv_pool *pool, struct kv_device_export *e);
const char *kv_pool_device_desc(struct kv_pool *pool);
int kv_pool_set_tunables(struct kv_pool *pool, const struct kv_vm_tunables *vm);
void kv_pool_get_tunables(struct kv_pool *pool, struct kv_vm_tunables *vm);

/* mm/page_alloc.c */
int kv_frames_alloc(struct kv_pool *pool, int tier, u32 n, u32 flags, u32 *frames);
void kv_frames_free(struct kv_pool *pool, int tier, u32 n, const u32 *frames);

/* mm/sequence.c */
int kv_seq_create(struct kv_pool *pool, struct kv_seq **out);
int kv_seq_fork(struct kv_seq *seq, struct kv_seq **out);
int kv_seq_truncate(struct kv_seq *seq, u32 nr_tokens);
void kv_seq_free(struct kv_seq *seq);
struct kv_pool *kv_seq_pool(const struct kv_seq *seq);
u32 kv_seq_tokens(const struct kv_seq *seq);
u32 kv_seq_nr_blocks(const struct kv_seq *seq);
int kv_seq_is_active(const struct kv_seq *seq);
int kv_seq_block_table(struct kv_seq *seq, u32 *frames, u32 n);
u32 kv_seq_block_frame(struct kv_seq *seq, u32 idx);
int kv_seq_block_frames(struct kv_seq *seq, u32 first, u32 n, u32 *frames);

int kv_seq_set_tenant(struct kv_seq *seq, u32 tenant);

/* mm/memory.c */
int kv_seq_append(struct kv_seq *seq, u32 n, u64 *slots, u32 flags);
int kv_seq_append_ids(struct kv_seq *seq, u32 n, const u32 *ids, u64 *slots, u32 flags);
int kv_seq_write(struct kv_seq *seq, u32 pos, u64 *slot, u32 flags);
int kv_seq_append_frames(struct kv_seq *seq, u32 n, const u32 *ids, u64 *slots, u32 flags,
			 const u32 *frames, u32 nr_frames);

/* mm/prefix.c */
int kv_prefix_match(struct kv_seq *seq, const u32 *ids, u32 n, struct kv_prefix_hit *hit);
int kv_prefix_pin(struct kv_seq *seq, const char *name);
int kv_prefix_set_pinned(struct kv_pool *pool, const char *name, int pinned, u32 tenant);
int kv_prefix_forget(struct kv_pool *pool, const char *name, u32 tenant);
u32 kv_prefix_drop(struct kv_pool *pool);
int kv_prefix_stats(struct kv_pool *pool, u32 tenant, struct kv_prefix_stats *st);
void kv_prefix_print(struct kv_pool *pool, FILE *f, u32 tenant,
		     void (*tenant_name)(u32 tenant, char *buf, size_t len, void *arg), void *arg);
void kv_prefix_set_hash_bits(struct kv_pool *pool, u32 bits);

/* mm/mlock.c */
int kv_seq_activate(struct kv_seq *seq, u32 flags);
void kv_seq_deactivate(struct kv_seq *seq);
#define KV_DEACTIVATE_UNWRITTEN	0x1u	/* undo an activation: publish nothing */
void kv_seq_deactivate_flags(struct kv_seq *seq, u32 flags);

/* mm/vmscan.c */
u32 kv_reclaim(struct kv_pool *pool, int tier, u32 nr);
int kv_kvswapd_start(struct kv_pool *pool);
void kv_kvswapd_stop(struct kv_pool *pool);

/* mm/vmstat.c */
void kv_pool_meminfo(struct kv_pool *pool, struct kv_meminfo *mi);
u64 kv_vmstat_read(struct kv_pool *pool, enum kv_vm_event ev);
const char *kv_vmstat_name(enum kv_vm_event ev);
void kv_pool_print_meminfo(struct kv_pool *pool, FILE *f);
void kv_pool_print_vmstat(struct kv_pool *pool, FILE *f);

/* mm/check.c */
int kv_pool_check(struct kv_pool *pool);

/* mm/swapfile.c */
int kv_pool_swap_inject(struct kv_pool *pool, u32 what, u64 nth);

/* mm/checkpoint.c */
#define KV_CKPT_BLOB_MAX	65536	/* the caller's own data kept in a checkpoint */
u64 kv_checkpoint_bytes(const struct kv_geometry *g, u32 nr_slots);
int kv_pool_checkpoint(struct kv_pool *pool, u64 off, u64 len, const void *blob,
		       u32 blob_len);
int kv_pool_restore(struct kv_pool *pool, u64 off, u64 len, void *blob, u32 *blob_len,
		    u32 (*tenant)(u32 old, const void *blob, u32 blob_len, void *arg), void *arg);

/* mm/fault.c */
void kv_pool_fault_inject(struct kv_pool *pool, u32 sites, u64 nth, int persist);
u64 kv_pool_fault_fired(struct kv_pool *pool);

#endif /* _KV_MM_H */
