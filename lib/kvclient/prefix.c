// SPDX-License-Identifier: MIT
/*
 * libkvclient: the prefix cache. A request's prompt is matched against the
 * blocks cached in the pool before its prefill, so that only the tokens
 * after the longest cached prefix are computed; named prefixes (system
 * prompts) are pinned so that they are never evicted.
 */
#include <errno.h>
#include <string.h>
#include "internal.h"

/* Prompt ids one PREFIX_MATCH carries at most. */
#define MATCH_MAX_IDS	((KVMEM_MSG_MAX - sizeof(struct kvmem_hdr) -			\
			  sizeof(struct kvmem_prefix_match)) / sizeof(uint32_t))

/**
 * kvc_prefix_match() - start an empty sequence with the longest cached
 * prefix of a prompt
 * @c:   connection
 * @seq: sequence with no tokens, not active (just created)
 * @ids: the prompt's token ids
 * @n:   their number; past about 65000 only the first ones are matched
 * @hit: receives what was found (tokens, blocks, tokens per tier); may be
 *       NULL
 *
 * The cached blocks found (whole blocks only, of the caller's tenant, or of
 * any tenant in a pool with `prefix = global`) become the sequence's first
 * blocks: their K and V are there already. Append the rest of the prompt
 * with kvc_step() (with its ids), which activates the sequence and returns
 * the whole block table. An engine that needs the last prompt token's
 * logits matches at most n - 1 tokens.
 *
 * Return: tokens matched (a multiple of the pool's block_tokens), or
 * -ENOENT, -EINVAL (the sequence holds tokens or is active), -ENOMEM.
 */
int kvc_prefix_match(struct kvc *c, uint64_t seq, const uint32_t *ids, uint32_t n,
		     struct kvmem_prefix_match_reply *hit)
{
	struct kvmem_prefix_match *req = (void *)(c->buf + sizeof(struct kvmem_hdr));
	struct kvmem_prefix_match_reply rep;
	struct kvc_seq *s = kvc_seq_lookup(c, seq);
	size_t len;
	void *r;
	int ret;

	if (!s)
		return -ENOENT;
	if (s->active || s->nr_tokens || (!ids && n))
		return -EINVAL;
	if (n > MATCH_MAX_IDS)
		n = MATCH_MAX_IDS;
	memset(req, 0, sizeof(*req));
	req->seq = seq;
	req->nr_tokens = n;
	req->tokens_off = sizeof(*req);
	if (n)
		memcpy(req + 1, ids, (size_t)n * sizeof(*ids));
	ret = kvc_request(c, KVMEM_OP_PREFIX_MATCH, req, sizeof(*req) + (size_t)n * sizeof(*ids),
			  &r, &len);
	if (ret < 0)
		return ret;
	if (len < sizeof(rep))
		return -EBADMSG;
	memcpy(&rep, r, sizeof(rep));
	if (rep.tokens != (uint32_t)ret || rep.tokens > n)
		return -EBADMSG;
	/* The table copy fills in at the activation (a STEP from entry 0). */
	s->nr_tokens = s->synced = rep.tokens;
	s->nr_blocks = 0;
	s->valid = 0;
	if (hit)
		*hit = rep;
	return ret;
}

static int prefix_pin(struct kvc *c, uint32_t op, uint32_t pool, uint64_t seq,
		      const char *name)
{
	struct kvmem_prefix_pin req = { .op = op, .pool = pool, .seq = seq };

	if (!name || strlen(name) >= sizeof(req.name))
		return -EINVAL;
	strcpy(req.name, name);
	return kvc_call(c, KVMEM_OP_PREFIX_PIN, &req, sizeof(req), NULL, 0);
}

/**
 * kvc_prefix_pin() - cache a sequence's prefix and pin it under a name
 * @c:    connection
 * @seq:  sequence whose tokens' K and V are all written (a system prompt
 *        after its prefill); its tokens were appended with their ids
 * @name: 1..63 printable characters, no spaces, unique in the pool
 *
 * The prefix (the sequence's whole blocks) is never evicted until
 * unpinned, by this tenant or an admin (kvc_prefix_name_op(), `kvmemctl
 * prefix unpin`). It survives the sequence and the connection.
 *
 * Return: tokens pinned, -EEXIST, -ENOSPC (too many names), -ENODATA (no
 * whole block with known ids), -EINVAL, -ENOENT, -EOPNOTSUPP (the pool has
 * no prefix cache).
 */
int kvc_prefix_pin(struct kvc *c, uint64_t seq, const char *name)
{
	int err;

	if (!kvc_seq_lookup(c, seq))
		return -ENOENT;
	err = kvc_sync(c);
	return err ? err : prefix_pin(c, KVMEM_PREFIX_PIN, 0, seq, name);
}

/**
 * kvc_prefix_name_op() - unpin, pin again or forget a named prefix
 * @c:    connection
 * @pool: pool handle, or 0 for every pool
 * @name: the name
 * @op:   KVMEM_PREFIX_UNPIN, KVMEM_PREFIX_REPIN or KVMEM_PREFIX_FORGET
 *
 * An unpinned prefix may be evicted, and its name goes with it.
 *
 * Return: 0, -ENOENT (no such name), -EPERM (another tenant's, and not
 * admin), -EINVAL.
 */
int kvc_prefix_name_op(struct kvc *c, uint32_t pool, const char *name, uint32_t op)
{
	if (op < KVMEM_PREFIX_UNPIN || op > KVMEM_PREFIX_FORGET)
		return -EINVAL;
	return prefix_pin(c, op, pool, 0, name);
}
