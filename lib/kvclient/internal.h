/* SPDX-License-Identifier: MIT */
/* libkvclient internals. */
#ifndef _KVCLIENT_INTERNAL_H
#define _KVCLIENT_INTERNAL_H

#include "kvclient.h"

#define KVC_MAX_POOLS	16

/**
 * struct kvc_seq - the client's view of a sequence
 * @id:           sequence id
 * @pool:         index of its pool in kvc.pools
 * @frames:       device frame per block
 * @nr_blocks:    entries in use
 * @cap:          entries allocated (of @frames and @pend)
 * @valid:        @frames is exact (the sequence is active and nothing has
 *                changed it since the last STEP or BLOCK_TABLE reply)
 * @active:       activated by this client and not deactivated since
 * @private_tail: its last block is its own (no fork shares it), so tokens
 *                may be written into it without a copy
 * @nr_tokens:    tokens, counting those appended locally
 * @synced:       tokens the daemon knows of
 * @pend:         reserve frames that became blocks locally, not yet told
 * @nr_pend:      entries of @pend
 * @stamp:        kvc.stamp of the last STEP that named it
 * @lids:         ids of the tokens appended locally, not yet told
 * @lids_cap:     entries allocated in @lids
 * @lids_lost:    a local append came without ids: none go with the next STEP
 */
struct kvc_seq {
	uint64_t id;
	uint32_t pool;
	uint32_t *frames;
	uint32_t nr_blocks;
	uint32_t cap;
	int valid;
	int active;
	int private_tail;
	uint32_t nr_tokens;
	uint32_t synced;
	uint32_t *pend;
	uint32_t nr_pend;
	uint64_t stamp;
	uint32_t *lids;
	uint32_t lids_cap;
	int lids_lost;
};

/**
 * struct kvc_stock - a pool's reserve frames held by this client
 * @frames:  free frames, taken from the end
 * @nr:      entries of @frames
 * @pending: frames of the reserve already made blocks locally, not yet
 *           told to the daemon (still counted in its reserve)
 */
struct kvc_stock {
	uint32_t frames[KVMEM_RESERVE_MAX];
	uint32_t nr;
	uint32_t pending;
};

/**
 * struct kvc_fds - descriptors that came with a reply
 * @fd: the descriptors, owned by the receiver
 * @nr: entries of @fd
 */
struct kvc_fds {
	int fd[KVMEM_MAX_FDS];
	uint32_t nr;
};

/* device.c */
int kvc_device_map(struct kvc_pool *p, const struct kvmem_pool_info *info, const int *fds,
		   uint32_t n);
void kvc_device_unmap(struct kvc_pool *p);

/**
 * struct kvc - one connection to kvmemd
 * @fd:        the socket
 * @tag:       tag of the last request
 * @client_id: the daemon's number for us
 * @admin:     admin operations allowed
 * @buf:       message buffer, KVMEM_MSG_MAX bytes
 * @pools:     pools opened
 * @nr_pools:  entries of @pools
 * @seqs:      sequence records, by the low 32 bits of their id
 * @seqs_cap:  entries of @seqs
 * @stock:     reserve per pool, parallel to @pools
 * @stamp:     bumped per STEP built, to find a sequence named twice
 */
struct kvc {
	int fd;
	uint32_t tag;
	uint64_t client_id;
	int admin;
	char *buf;
	struct kvc_pool *pools[KVC_MAX_POOLS];
	uint32_t nr_pools;
	struct kvc_seq **seqs;
	uint32_t seqs_cap;
	struct kvc_stock *stock[KVC_MAX_POOLS];
	uint64_t stamp;
};

int kvc_call(struct kvc *c, uint16_t opcode, const void *body, size_t len, void *rep,
	     size_t rep_len);
int kvc_request_fd(struct kvc *c, uint16_t opcode, const void *body, size_t len,
		   void **reply, size_t *reply_len, struct kvc_fds *fds);
void kvc_seqs_destroy(struct kvc *c);
struct kvc_seq *kvc_seq_lookup(struct kvc *c, uint64_t id);
int kvc_pool_index(const struct kvc *c, const struct kvc_pool *pool);

#endif /* _KVCLIENT_INTERNAL_H */
