/* SPDX-License-Identifier: MIT */
/*
 * libkvclient: the client library of kvmem. Connects to kvmemd, opens
 * pools (mapping their device arena), creates and steps sequences, and
 * keeps a copy of each sequence's block table that every STEP reply
 * updates, so an engine reads block tables without a round trip per
 * sequence. See libkvclient(3) and Documentation/uapi/protocol.md.
 *
 * Every function returns 0 (or a count) on success and a negative errno on
 * failure. Thread-safety: a struct kvc (one connection) must be used by one
 * thread at a time; use one connection per thread, or a lock around each
 * call. Connections are independent.
 */
#ifndef _KVCLIENT_H
#define _KVCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uapi/kvmem/kvmem.h>

struct kvc;

/**
 * struct kvc_pool - an opened pool
 * @handle:      the daemon's handle of the pool
 * @geom:        geometry: with @device_ptr and kv_token_offset() it locates
 *               any token's K and V
 * @frame_bytes: bytes per frame
 * @base:        the device arena mapped in this process, CPU backend; NULL
 *               with the CUDA backend (GPU memory: use @device_ptr)
 * @arena_bytes: bytes of the arena
 * @nr_frames:   frames per tier (KVMEM_TIER_*)
 * @backend:     KVMEM_BACKEND_CPU or KVMEM_BACKEND_CUDA
 * @device_ptr:  address of frame 0 for kernels: a CUdeviceptr on the
 *               pool's GPU (CUDA; 0 until kvc_pool_map()), or @base (CPU)
 * @gpu:         CUDA: the GPU's ordinal in this process (its primary
 *               context is the one the arena is mapped for), from
 *               kvc_pool_map(); -1 otherwise
 * @map:         libkvclient's mapping state
 */
struct kvc_pool {
	uint32_t handle;
	struct kv_geometry geom;
	uint64_t frame_bytes;
	void *base;
	uint64_t arena_bytes;
	uint32_t nr_frames[KVMEM_NR_TIERS];
	uint32_t backend;
	uint64_t device_ptr;
	int gpu;
	void *map;
};

/**
 * struct kvc_step_seq - one sequence of kvc_step()
 * @seq:       sequence id
 * @nr_tokens: tokens to append (0: only make it resident and pinned)
 * @token_ids: the tokens' ids, or NULL (needed by the prefix cache)
 * @slots:     out: @nr_tokens slots (frame * block_tokens + offset) where
 *             the caller writes each token's K and V
 */
struct kvc_step_seq {
	uint64_t seq;
	uint32_t nr_tokens;
	const uint32_t *token_ids;
	uint64_t *slots;
};

int kvc_connect(const char *path, struct kvc **out);
void kvc_close(struct kvc *c);
uint64_t kvc_client_id(const struct kvc *c);
int kvc_is_admin(const struct kvc *c);
int kvc_fd(const struct kvc *c);

int kvc_pool_open(struct kvc *c, const char *name, struct kvc_pool **out);
int kvc_pool_map(struct kvc_pool *p);
int kvc_frame_read(struct kvc_pool *p, uint32_t frame, uint64_t off, void *buf, size_t len);
int kvc_frame_write(struct kvc_pool *p, uint32_t frame, uint64_t off, const void *buf,
		    size_t len);

int kvc_seq_create(struct kvc *c, const struct kvc_pool *pool, uint64_t *seq);
int kvc_seq_fork(struct kvc *c, uint64_t seq, uint64_t *child);
int kvc_seq_truncate(struct kvc *c, uint64_t seq, uint32_t nr_tokens);
int kvc_seq_free(struct kvc *c, uint64_t seq);

int kvc_step(struct kvc *c, struct kvc_step_seq *seqs, uint32_t n, uint32_t flags,
	     int32_t *failed);
int kvc_activate(struct kvc *c, const uint64_t *seqs, uint32_t n, uint32_t flags,
		 int32_t *failed);
int kvc_deactivate(struct kvc *c, const uint64_t *seqs, uint32_t n);
int kvc_block_table(struct kvc *c, uint64_t seq, const uint32_t **frames,
		    uint32_t *nr_blocks);
int kvc_append(struct kvc *c, uint64_t seq, uint32_t n, uint64_t *slots);
int kvc_append_ids(struct kvc *c, uint64_t seq, uint32_t n, const uint32_t *ids,
		   uint64_t *slots);
int kvc_reserve(struct kvc *c, const struct kvc_pool *pool, uint32_t nr);
int kvc_reserve_release(struct kvc *c, const struct kvc_pool *pool);
int kvc_admit(struct kvc *c, const struct kvc_pool *pool, uint32_t nr_blocks,
	      struct kvmem_admit_reply *rep);
int kvc_sync(struct kvc *c);

int kvc_stats(struct kvc *c, uint32_t what, uint32_t pool, char *buf, size_t len);
int kvc_clients(struct kvc *c, char *buf, size_t len);
int kvc_sysctl_get(struct kvc *c, const char *key, char *value, size_t len);
int kvc_sysctl_set(struct kvc *c, const char *key, const char *value);
int kvc_drop_caches(struct kvc *c, uint32_t pool, uint32_t what);
int kvc_checkpoint(struct kvc *c, uint32_t pool);

int kvc_prefix_match(struct kvc *c, uint64_t seq, const uint32_t *ids, uint32_t n,
		     struct kvmem_prefix_match_reply *hit);
int kvc_prefix_pin(struct kvc *c, uint64_t seq, const char *name);
int kvc_prefix_name_op(struct kvc *c, uint32_t pool, const char *name, uint32_t op);

int kvc_request(struct kvc *c, uint16_t opcode, const void *body, size_t len,
		void **reply, size_t *reply_len);

#endif /* _KVCLIENT_H */
