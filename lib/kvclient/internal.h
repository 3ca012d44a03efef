/* SPDX-License-Identifier: MIT */
/* libkvclient internals. */
#ifndef _KVCLIENT_INTERNAL_H
#define _KVCLIENT_INTERNAL_H

#include "kvclient.h"

#define KVC_MAX_POOLS	16

/**
 * struct kvc_seq - the client's copy of a sequence's block table
 * @id:        sequence id
 * @frames:    device frame per block
 * @nr_blocks: entries in use
 * @cap:       entries allocated
 * @valid:     @frames is exact (the sequence is active and nothing has
 *             changed it since the last STEP or BLOCK_TABLE reply)
 */
struct kvc_seq {
	uint64_t id;
	uint32_t *frames;
	uint32_t nr_blocks;
	uint32_t cap;
	int valid;
};

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
};

int kvc_request_fd(struct kvc *c, uint16_t opcode, const void *body, size_t len,
		   void **reply, size_t *reply_len, int *fd);
void kvc_seqs_destroy(struct kvc *c);

#endif /* _KVCLIENT_INTERNAL_H */
