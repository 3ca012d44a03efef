/* SPDX-License-Identifier: MIT */
/*
 * kvmem protocol: the messages between kvmemd and its clients (libkvclient,
 * kvmemctl) over an AF_UNIX SOCK_SEQPACKET socket, one message per packet.
 *
 * Every message starts with struct kvmem_hdr; the body that follows is the
 * struct of its opcode, possibly followed by arrays that the body locates
 * with offsets from the start of the body. A reply carries the request's
 * opcode and tag, and in @status 0 (or a count) or a negative errno.
 *
 * Rules (STYLE.md, "The ABI"): fixed-width fields only, explicit padding,
 * reserved fields must be zero. Bodies may grow at their end: a shorter
 * body from an older peer is zero-extended, a longer one is accepted only if
 * the unknown tail is zero, else -E2BIG. Unknown opcodes get -EOPNOTSUPP,
 * unknown flag bits -EINVAL, non-zero padding or reserved fields -EINVAL.
 * Documented in Documentation/uapi/protocol.md.
 */
#ifndef _UAPI_KVMEM_KVMEM_H
#define _UAPI_KVMEM_KVMEM_H

#include <linux/types.h>
#include <uapi/kvmem/layout.h>

#define KVMEM_MAGIC		0x4d4d564bu	/* "KVMM" */
#define KVMEM_VERSION		2
#define KVMEM_MSG_MAX		(256u * 1024)	/* largest message either way */
#define KVMEM_NAME_MAX		32		/* pool names, with the NUL */
#define KVMEM_KEY_MAX		64		/* sysctl keys, with the NUL */
#define KVMEM_VALUE_MAX		128		/* sysctl values, with the NUL */
#define KVMEM_STEP_MAX_SEQS	4096		/* sequences in one step */
#define KVMEM_STEP_MAX_TOKENS	16384		/* tokens in one step */
#define KVMEM_RESERVE_MAX	4096		/* frames in a client's reserve, per pool */
#define KVMEM_PREFIX_NAME_MAX	64		/* named prefixes, with the NUL */
#define KVMEM_DEFAULT_SOCKET	"/run/kvmemd/kvmemd.sock"
#define KVMEM_SOCKET_ENV	"KVMEM_SOCKET"

/* Feature bits (HELLO). */
#define KVMEM_FEAT_TOKEN_IDS	(1ull << 0)	/* STEP carries token ids */

/* Opcodes. */
#define KVMEM_OP_HELLO		1
#define KVMEM_OP_POOL_OPEN	2
#define KVMEM_OP_SEQ_CREATE	3
#define KVMEM_OP_SEQ_FORK	4
#define KVMEM_OP_SEQ_TRUNCATE	5
#define KVMEM_OP_SEQ_FREE	6
#define KVMEM_OP_STEP		7
#define KVMEM_OP_ACTIVATE	8
#define KVMEM_OP_DEACTIVATE	9
#define KVMEM_OP_BLOCK_TABLE	10
#define KVMEM_OP_STATS		11
#define KVMEM_OP_SYSCTL_GET	12
#define KVMEM_OP_SYSCTL_SET	13
#define KVMEM_OP_DROP_CACHES	14
#define KVMEM_OP_CLIENTS	15
#define KVMEM_OP_RESERVE	16
#define KVMEM_OP_PREFIX_MATCH	17
#define KVMEM_OP_PREFIX_PIN	18
#define KVMEM_OP_CHECKPOINT	19
#define KVMEM_OP_ADMIT		20
#define KVMEM_OP_MAX		20

/**
 * struct kvmem_hdr - first bytes of every message
 * @magic:   KVMEM_MAGIC
 * @version: KVMEM_VERSION of the sender's protocol
 * @opcode:  KVMEM_OP_*
 * @size:    bytes of the whole message, this header included
 * @tag:     chosen by the requester, echoed in the reply
 * @status:  replies: 0, a count, or a negative errno; requests: 0
 * @flags:   must be 0
 */
struct kvmem_hdr {
	__u32 magic;
	__u16 version;
	__u16 opcode;
	__u32 size;
	__u32 tag;
	__s32 status;
	__u32 flags;
};

/**
 * struct kvmem_hello - HELLO request: first message on a connection
 * @version_min: oldest protocol version the client speaks
 * @version_max: newest protocol version the client speaks
 * @features:    KVMEM_FEAT_* the client would use
 * @reserved:    must be 0
 */
struct kvmem_hello {
	__u32 version_min;
	__u32 version_max;
	__u64 features;
	__u64 reserved[4];
};

/**
 * struct kvmem_hello_reply - HELLO reply
 * @version:   protocol version chosen for this connection
 * @pad:       0
 * @features:  KVMEM_FEAT_* both sides have
 * @client_id: the daemon's number for this connection
 * @uid:       the peer's uid, as the daemon sees it (SO_PEERCRED)
 * @admin:     1 when this peer may use admin operations
 * @reserved:  0
 */
struct kvmem_hello_reply {
	__u32 version;
	__u32 pad;
	__u64 features;
	__u64 client_id;
	__u32 uid;
	__u32 admin;
	__u64 reserved[4];
};

/**
 * struct kvmem_pool_open - POOL_OPEN request
 * @name:     pool name from the daemon's config, NUL-terminated
 * @reserved: must be 0
 */
struct kvmem_pool_open {
	char name[KVMEM_NAME_MAX];
	__u64 reserved[2];
};

/* Tiers, as numbered in replies. */
#define KVMEM_TIER_DEVICE	0
#define KVMEM_TIER_HOST		1
#define KVMEM_NR_TIERS		2

/**
 * struct kvmem_pool_info - POOL_OPEN reply; SCM_RIGHTS carries the device
 * arena's @nr_chunks file descriptors, each mapping @chunk_bytes, one after
 * another from frame 0:
 * KVMEM_BACKEND_CPU: one memfd sealed against shrink and grow, which the
 * client maps MAP_SHARED at offset 0 for @arena_bytes;
 * KVMEM_BACKEND_CUDA: POSIX file descriptors of GPU memory (cuMemCreate),
 * which the client imports with cuMemImportFromShareableHandle and maps
 * into one reserved range of @arena_bytes on the GPU named by @gpu_uuid
 * @pool:        handle for the other requests
 * @backend:     KVMEM_BACKEND_*
 * @geom:        the pool's geometry (uapi/kvmem/layout.h)
 * @frame_bytes: kv_frame_bytes(&geom)
 * @arena_bytes: bytes of the device arena
 * @nr_frames:   frames per tier
 * @chunk_bytes: bytes behind each descriptor
 * @nr_chunks:   descriptors sent, 1 to KVMEM_MAX_FDS
 * @gpu_uuid:    KVMEM_BACKEND_CUDA: the GPU's UUID (cuDeviceGetUuid); 0
 * @reserved:    0
 */
struct kvmem_pool_info {
	__u32 pool;
	__u32 backend;
	struct kv_geometry geom;
	__u64 frame_bytes;
	__u64 arena_bytes;
	__u32 nr_frames[KVMEM_NR_TIERS];
	__u64 chunk_bytes;
	__u32 nr_chunks;
	__u32 pad;
	__u8 gpu_uuid[16];
	__u64 reserved[2];
};

#define KVMEM_BACKEND_CPU	1
#define KVMEM_BACKEND_CUDA	2

/* Most descriptors one reply carries (a CUDA arena's chunks). */
#define KVMEM_MAX_FDS		64

/**
 * struct kvmem_seq_req - SEQ_CREATE, SEQ_FORK, SEQ_TRUNCATE, SEQ_FREE,
 * BLOCK_TABLE request
 * @pool:      pool handle (SEQ_CREATE); 0 otherwise
 * @nr_tokens: SEQ_TRUNCATE: tokens to keep; 0 otherwise
 * @seq:       the sequence (SEQ_FORK: the parent); 0 for SEQ_CREATE
 * @reserved:  must be 0
 */
struct kvmem_seq_req {
	__u32 pool;
	__u32 nr_tokens;
	__u64 seq;
	__u64 reserved[2];
};

/**
 * struct kvmem_seq_reply - reply to the sequence requests
 * @seq:       the new sequence (SEQ_CREATE, SEQ_FORK) or the one named
 * @nr_tokens: tokens it holds
 * @nr_blocks: blocks in its table
 * @reserved:  0
 *
 * BLOCK_TABLE appends @nr_blocks __u32 device frame numbers after this
 * struct (the sequence must be active).
 */
struct kvmem_seq_reply {
	__u64 seq;
	__u32 nr_tokens;
	__u32 nr_blocks;
	__u64 reserved[2];
};

/* struct kvmem_seq_batch.flags */
#define KVMEM_NOWAIT		(1u << 0)	/* -EAGAIN instead of waiting or reclaiming */
#define KVMEM_STEP_NOSLOTS	(1u << 1)	/* STEP: no slots in the reply (the client
						 * computed them: see RESERVE) */

/**
 * struct kvmem_seq_batch - ACTIVATE and DEACTIVATE request
 * @nr:       sequences, 1..KVMEM_STEP_MAX_SEQS
 * @flags:    KVMEM_NOWAIT
 * @ids_off:  offset from the start of this struct of @nr sequence ids
 *            (__u64, 8-byte aligned); at least the size of this struct
 * @pad:      must be 0
 * @reserved: must be 0
 *
 * ACTIVATE is all or nothing: on the first failure the sequences it
 * activated are deactivated again, the reply's status is the error and
 * kvmem_batch_reply.failed names the index that failed.
 */
struct kvmem_seq_batch {
	__u32 nr;
	__u32 flags;
	__u32 ids_off;
	__u32 pad;
	__u64 reserved[2];
};

/**
 * struct kvmem_batch_reply - reply to ACTIVATE, DEACTIVATE and STEP
 * @done:     sequences processed
 * @failed:   index of the sequence that failed, or -1
 * @reserved: 0
 */
struct kvmem_batch_reply {
	__u32 done;
	__s32 failed;
	__u64 reserved[2];
};

/**
 * struct kvmem_step_seq - one sequence of a STEP
 * @seq:       sequence id
 * @nr_tokens: tokens to append, 0..KVMEM_STEP_MAX_TOKENS
 * @nr_frames: frames of the client's reserve that become its first new
 *             blocks, in order (the client already assigned them: see
 *             RESERVE); at most the number of new blocks @nr_tokens needs
 */
struct kvmem_step_seq {
	__u64 seq;
	__u32 nr_tokens;
	__u32 nr_frames;
};

/**
 * struct kvmem_step - STEP request: for each sequence, make it resident and
 * pinned (activate) and append its tokens
 * @nr_seqs:    sequences, 1..KVMEM_STEP_MAX_SEQS
 * @flags:      KVMEM_NOWAIT, KVMEM_STEP_NOSLOTS
 * @seqs_off:   offset from the start of this struct of @nr_seqs
 *              struct kvmem_step_seq (8-byte aligned; at least the size
 *              of this struct, which ends where the first array starts)
 * @tokens_off: offset of the token ids (__u32, all sequences' tokens one
 *              after another), or 0 when the client sends none; they name
 *              the blocks for the prefix cache
 * @frames_off: offset of the reserve frames (__u32, all sequences'
 *              @nr_frames one after another), or 0 when none
 * @pad:        must be 0
 * @reserved:   must be 0
 *
 * The reply is a struct kvmem_step_reply, then @nr_seqs struct
 * kvmem_step_seq_reply, then the slots and frames they locate. Processing
 * stops at the first failure (status < 0, kvmem_batch_reply.failed set);
 * the sequences before it are done, the failed one is unchanged.
 */
struct kvmem_step {
	__u32 nr_seqs;
	__u32 flags;
	__u32 seqs_off;
	__u32 tokens_off;
	__u32 frames_off;
	__u32 pad;
	__u64 reserved[1];
};

/**
 * struct kvmem_step_reply - STEP reply head
 * @batch:       done / failed
 * @seqs_off:    offset from the start of this struct of the per-sequence
 *               replies (struct kvmem_step_seq_reply)
 * @frames_off:  offset of the changed block-table entries (__u32 frames)
 * @slots_off:   offset of the new tokens' slots (__u64)
 * @pad:         0
 */
struct kvmem_step_reply {
	struct kvmem_batch_reply batch;
	__u32 seqs_off;
	__u32 frames_off;
	__u32 slots_off;
	__u32 pad;
};

/**
 * struct kvmem_step_seq_reply - one sequence's result in a STEP reply
 * @nr_tokens:     tokens it holds now
 * @nr_blocks:     blocks in its table now
 * @first_changed: first block-table index whose frame is new or changed
 *                 (appended, or copied on write); entries from here to
 *                 @nr_blocks - 1 follow in the frames array
 * @nr_slots:      slots of its new tokens in the slots array
 */
struct kvmem_step_seq_reply {
	__u32 nr_tokens;
	__u32 nr_blocks;
	__u32 first_changed;
	__u32 nr_slots;
};

/* struct kvmem_stats.what */
#define KVMEM_STATS_MEMINFO	1
#define KVMEM_STATS_VMSTAT	2
#define KVMEM_STATS_ZONEINFO	3
#define KVMEM_STATS_PREFIX	4	/* prefix cache: counters per tenant, names, largest */
#define KVMEM_STATS_TOPOLOGY	5	/* NUMA nodes, GPUs, where each pool's arenas live */
#define KVMEM_STATS_SEQLEN	6	/* lengths of the sequences each pool saw end */

/**
 * struct kvmem_stats - STATS request; the reply body is text (`Name: value`
 * lines), NUL-terminated
 * @what:     KVMEM_STATS_*
 * @pool:     pool handle from POOL_OPEN, or 0 for every pool
 * @reserved: must be 0
 */
struct kvmem_stats {
	__u32 what;
	__u32 pool;
	__u64 reserved[2];
};

/**
 * struct kvmem_sysctl - SYSCTL_GET and SYSCTL_SET request and reply
 * @key:      dotted key (`vm.watermark_scale_factor`), NUL-terminated
 * @value:    SET: the new value; reply: the value in effect
 * @reserved: must be 0
 *
 * SET is an admin operation (-EPERM otherwise); keys that need a restart
 * get -EROFS, unknown keys -ENOENT, malformed values -EINVAL, values out of
 * the key's range -ERANGE.
 */
struct kvmem_sysctl {
	char key[KVMEM_KEY_MAX];
	char value[KVMEM_VALUE_MAX];
	__u64 reserved[2];
};

/* struct kvmem_drop_caches.what */
#define KVMEM_DROP_DEMOTE	(1u << 0)	/* demote unpinned device blocks to host */
#define KVMEM_DROP_PREFIX	(1u << 1)	/* evict every evictable cached prefix block */

/**
 * struct kvmem_drop_caches - DROP_CACHES request (admin)
 * @pool:     pool handle, or 0 for every pool
 * @what:     KVMEM_DROP_* bits; 0 means KVMEM_DROP_DEMOTE
 * @reserved: must be 0
 *
 * The reply's status is the number of blocks moved or dropped.
 */
struct kvmem_drop_caches {
	__u32 pool;
	__u32 what;
	__u64 reserved[2];
};

/**
 * struct kvmem_reserve - RESERVE request: release frames of the client's
 * reserve and top it up to @target
 * @pool:        pool handle
 * @target:      frames the reserve should hold afterwards,
 *               0..KVMEM_RESERVE_MAX
 * @nr_release:  frames to give back first (they must be in the reserve)
 * @release_off: offset of those frames (__u32), 0 when none
 * @reserved:    must be 0
 *
 * A reserve is the client's stock of free device frames, like the kernel's
 * per-CPU page lists: the client appends tokens into new blocks taken from
 * it without a round trip, computing their slots itself, and tells the
 * daemon in a later STEP (kvmem_step_seq.nr_frames). Reserved frames count
 * as used memory for the watermarks; they return to the pool when the
 * client goes. The daemon fills reserves only from memory above the device
 * tier's low watermark (never by reclaim), so @nr_added may be less than
 * asked, or 0 under memory pressure; the client then uses STEP. The
 * reply is a struct kvmem_reserve_reply followed by the @nr_added new
 * frames (__u32); its status is @nr_added, or an error for a request
 * refused whole (nothing released, nothing added).
 */
struct kvmem_reserve {
	__u32 pool;
	__u32 target;
	__u32 nr_release;
	__u32 release_off;
	__u64 reserved[2];
};

/**
 * struct kvmem_reserve_reply - RESERVE reply head
 * @nr_reserved: frames in the reserve now
 * @nr_added:    frames added, listed after this struct
 * @reserved:    0
 */
struct kvmem_reserve_reply {
	__u32 nr_reserved;
	__u32 nr_added;
	__u64 reserved[1];
};

/**
 * struct kvmem_prefix_match - PREFIX_MATCH request: start an empty,
 * inactive sequence with the longest cached prefix of a prompt
 * @seq:        the sequence: no tokens, not active
 * @nr_tokens:  the prompt's tokens
 * @tokens_off: offset from the start of this struct of their ids (__u32),
 *              4-byte aligned, at least the size of this struct
 * @pad:        must be 0
 * @reserved:   must be 0
 *
 * Only whole blocks match, and only blocks the client's tenant may see
 * (its own, or every tenant's in a pool with `prefix = global`). The
 * matched blocks join the sequence; the client then STEPs the rest of the
 * prompt (with its ids), which also activates the sequence. The status is
 * the number of tokens matched.
 */
struct kvmem_prefix_match {
	__u64 seq;
	__u32 nr_tokens;
	__u32 tokens_off;
	__u32 pad;
	__u32 reserved[3];
};

/**
 * struct kvmem_prefix_match_reply - PREFIX_MATCH reply
 * @tokens:      tokens matched (a multiple of block_tokens)
 * @blocks:      blocks matched
 * @tier_tokens: of @tokens, those found on each tier (KVMEM_TIER_*)
 * @reserved:    0
 */
struct kvmem_prefix_match_reply {
	__u32 tokens;
	__u32 blocks;
	__u32 tier_tokens[KVMEM_NR_TIERS];
	__u64 reserved[2];
};

/* struct kvmem_prefix_pin.op */
#define KVMEM_PREFIX_PIN	1	/* cache @seq's prefix and pin it as @name */
#define KVMEM_PREFIX_UNPIN	2	/* unpin @name: it may be evicted, name and all */
#define KVMEM_PREFIX_REPIN	3	/* pin @name again */
#define KVMEM_PREFIX_FORGET	4	/* unpin @name and drop the name */

/**
 * struct kvmem_prefix_pin - PREFIX_PIN request: named, pinned prefixes
 * (system prompts), never evicted while pinned
 * @op:       KVMEM_PREFIX_*
 * @pool:     UNPIN, REPIN, FORGET: pool handle, or 0 for every pool;
 *            PIN: 0
 * @seq:      PIN: the sequence whose prefix is named (the client has
 *            written the K and V of all its tokens); 0 otherwise
 * @name:     1..63 printable characters, no spaces, NUL-terminated;
 *            unique in its pool
 * @reserved: must be 0
 *
 * UNPIN, REPIN and FORGET are allowed to the tenant that named the prefix
 * and to admins; with @pool 0 they change the names the tenant may change
 * and leave other tenants' of the same name alone (-EPERM only when no
 * pool has one of its own). The status is the number of tokens pinned
 * (PIN) or 0;
 * -EEXIST for a name in use, -ENODATA when the sequence has no full block
 * with known token ids, -ENOENT for an unknown name.
 */
struct kvmem_prefix_pin {
	__u32 op;
	__u32 pool;
	__u64 seq;
	char name[KVMEM_PREFIX_NAME_MAX];
	__u64 reserved[2];
};

/**
 * struct kvmem_checkpoint - CHECKPOINT request (admin): write the prefix
 * cache of a pool (or of every pool with a swap area) to its checkpoint
 * region of the swap area, from which a kvmemd with swap.persist = 1
 * restores it at start
 * @pool:     pool handle, or 0 for every pool
 * @pad:      must be 0
 * @reserved: must be 0
 *
 * Cached blocks that no sequence holds are moved to swap first. The
 * status is the number of blocks saved; -ENODEV when no pool has a swap
 * area.
 */
struct kvmem_checkpoint {
	__u32 pool;
	__u32 pad;
	__u64 reserved[2];
};

/* struct kvmem_admit_reply.verdict, also the ADMIT reply's status */
#define KVMEM_ADMIT_NOW		0	/* fits the device tier now */
#define KVMEM_ADMIT_LATER	1	/* fits once running sequences finish */
#define KVMEM_ADMIT_NEVER	2	/* more than the device tier holds above min */

/**
 * struct kvmem_admit - ADMIT request: would a request needing @nr_blocks
 * new device blocks fit a pool's device tier now, later or never
 * @pool:      pool handle
 * @nr_blocks: new blocks the request needs (its prompt and the tokens it
 *             may generate, every sample counted), at least 1
 * @reserved:  must be 0
 *
 * NOW: @nr_blocks is at most the frames that are free and those reclaim
 * could free at once (unpinned blocks on the device's LRU lists, as far
 * as the tiers below have room for them, and cached blocks it may evict),
 * less the device tier's min watermark (frames a STEP may not take), plus
 * those of the caller's own reserve. LATER: not now, but at most the
 * device tier's frames less its min watermark (the pinned blocks of
 * running sequences are freed or become reclaimable when those finish or
 * are deactivated). NEVER: more than that, which no STEP could ever pin.
 * Nothing is allocated or reserved: the answer is advice, true when it is
 * given.
 */
struct kvmem_admit {
	__u32 pool;
	__u32 nr_blocks;
	__u64 reserved[2];
};

/**
 * struct kvmem_admit_reply - ADMIT reply; its status is @verdict
 * @verdict:     KVMEM_ADMIT_*
 * @free:        device frames on the free list
 * @reclaimable: device frames reclaim could free now (see above)
 * @reserve:     frames in the caller's reserve of the pool
 * @total:       device frames of the pool
 * @pinned:      device blocks pinned by active sequences
 * @reserved:    0
 */
struct kvmem_admit_reply {
	__u32 verdict;
	__u32 free;
	__u32 reclaimable;
	__u32 reserve;
	__u32 total;
	__u32 pinned;
	__u64 reserved[2];
};

#endif /* _UAPI_KVMEM_KVMEM_H */
