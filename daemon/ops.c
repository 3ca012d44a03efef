// SPDX-License-Identifier: MIT
/*
 * Request handlers: one function per opcode, behind one validation of the
 * header and the copy_struct_from_user rule for bodies. A handler returns a
 * status (>= 0, or a negative errno) and fills its reply body; nothing it
 * refuses changes any state.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "kvmemd.h"
#include "msg.h"

_Static_assert(KV_CUDA_MAX_CHUNKS <= KVMEM_MAX_FDS, "a CUDA arena's chunks must fit one reply");

/* The reply under construction: body after the header in d->out. */
struct reply {
	char *body;
	size_t len;
	size_t room;
	const int *fds;
	u32 nr_fds;
};

/* An array of @n elements of @size at @off inside a body of @blen bytes. */
static bool array_ok(size_t blen, u32 off, u32 n, size_t size, size_t min_off)
{
	return off >= min_off && off % 8 == 0 && off <= blen && n <= (blen - off) / size;
}

static bool str_ok(const char *s, size_t len)
{
	return memchr(s, '\0', len) && s[0];
}

static void *reply_put(struct reply *r, size_t len)
{
	char *p;

	if (len > r->room - r->len)
		return NULL;
	p = r->body + r->len;
	memset(p, 0, len);
	r->len += len;
	return p;
}

static struct kvmemd_seq *seq_lookup(struct kvmemd_client *c, u64 id)
{
	return idr_find(&c->seqs, id);
}

static int op_hello(struct kvmemd *d, struct kvmemd_client *c, const void *b, size_t blen,
		    struct reply *r)
{
	struct kvmem_hello_reply *rep;
	struct kvmem_hello h;
	int err;

	err = kvmem_copy_body(&h, sizeof(h), b, blen);
	if (err)
		return err;
	if (!kvmem_all_zero(h.reserved, sizeof(h.reserved)))
		return -EINVAL;
	if (h.version_min > KVMEM_VERSION || h.version_max < KVMEM_VERSION ||
	    h.version_min > h.version_max)
		return -EPROTONOSUPPORT;
	rep = reply_put(r, sizeof(*rep));
	rep->version = KVMEM_VERSION;
	rep->features = h.features & KVMEM_FEAT_TOKEN_IDS;
	rep->client_id = c->id;
	rep->uid = c->uid;
	rep->admin = c->admin;
	c->hello = true;
	return 0;
}

static int op_pool_open(struct kvmemd *d, struct kvmemd_client *c, const void *b, size_t blen,
			struct reply *r)
{
	struct kvmem_pool_info *info;
	struct kvmem_pool_open req;
	struct kvmemd_pool *p = NULL;
	struct kv_device_export e;
	struct kv_meminfo mi;
	u32 i;
	int err;

	err = kvmem_copy_body(&req, sizeof(req), b, blen);
	if (err)
		return err;
	if (!str_ok(req.name, sizeof(req.name)) || !kvmem_all_zero(req.reserved, sizeof(req.reserved)))
		return -EINVAL;
	for (i = 0; i < d->nr_pools && !p; i++)
		if (!strcmp(d->pools[i].name, req.name))
			p = &d->pools[i];
	if (!p)
		return -ENOENT;
	err = kv_pool_device_export(p->pool, &e);
	if (err)
		return err;
	kv_pool_meminfo(p->pool, &mi);
	info = reply_put(r, sizeof(*info));
	info->pool = p->handle;
	info->backend = e.backend == KV_BACKEND_CUDA ? KVMEM_BACKEND_CUDA : KVMEM_BACKEND_CPU;
	info->geom = *kv_pool_geometry(p->pool);
	info->frame_bytes = mi.frame_bytes;
	info->arena_bytes = e.arena_bytes;
	info->nr_frames[KVMEM_TIER_DEVICE] = mi.tier[KV_TIER_DEVICE].total;
	info->nr_frames[KVMEM_TIER_HOST] = mi.tier[KV_TIER_HOST].total;
	info->chunk_bytes = e.chunk_bytes;
	info->nr_chunks = e.nr_chunks;
	memcpy(info->gpu_uuid, e.uuid, sizeof(info->gpu_uuid));
	r->fds = e.fds;
	r->nr_fds = e.nr_chunks;
	return 0;
}

static void seq_reply(struct reply *r, u64 id, struct kv_seq *seq)
{
	struct kvmem_seq_reply *rep = reply_put(r, sizeof(*rep));

	rep->seq = id;
	rep->nr_tokens = kv_seq_tokens(seq);
	rep->nr_blocks = kv_seq_nr_blocks(seq);
}

/* Give @seq a handle in @c; frees it when that fails. */
static int seq_install(struct kvmemd_client *c, struct kvmemd_pool *p, struct kv_seq *seq,
		       struct reply *r)
{
	struct kvmemd_seq *s = calloc(1, sizeof(*s));
	u64 id;
	int err;

	if (!s) {
		err = -ENOMEM;
		goto out_free_seq;
	}
	s->seq = seq;
	s->pool = p;
	err = idr_alloc(&c->seqs, s, &id);
	if (err) {
		err = err == -ENOSPC ? -EMFILE : err;
		goto out_free_s;
	}
	seq_reply(r, id, seq);
	return 0;

out_free_s:
	free(s);
out_free_seq:
	kv_seq_free(seq);
	return err;
}

static int op_seq(struct kvmemd *d, struct kvmemd_client *c, u16 op, const void *b,
		  size_t blen, struct reply *r)
{
	struct kvmemd_pool *p;
	struct kvmemd_seq *s = NULL;
	struct kvmem_seq_req req;
	struct kv_seq *seq;
	int err;

	err = kvmem_copy_body(&req, sizeof(req), b, blen);
	if (err)
		return err;
	if (!kvmem_all_zero(req.reserved, sizeof(req.reserved)) ||
	    (op != KVMEM_OP_SEQ_CREATE && req.pool) ||
	    (op != KVMEM_OP_SEQ_TRUNCATE && req.nr_tokens))
		return -EINVAL;
	if (op == KVMEM_OP_SEQ_CREATE) {
		if (req.seq)
			return -EINVAL;
		p = kvmemd_pool_get(d, req.pool);
		if (!p)
			return -ENOENT;
		err = kv_seq_create(p->pool, &seq);
		if (!err)
			kv_seq_set_tenant(seq, kvmemd_tenant(d, c->uid));
		return err ? err : seq_install(c, p, seq, r);
	}
	s = seq_lookup(c, req.seq);
	if (!s)
		return -ENOENT;
	switch (op) {
	case KVMEM_OP_SEQ_FORK:
		err = kv_seq_fork(s->seq, &seq);
		return err ? err : seq_install(c, s->pool, seq, r);
	case KVMEM_OP_SEQ_TRUNCATE:
		err = kv_seq_truncate(s->seq, req.nr_tokens);
		break;
	case KVMEM_OP_SEQ_FREE:
		idr_remove(&c->seqs, req.seq);
		kv_seqlen_record(&s->pool->seqlen, kv_seq_tokens(s->seq));
		kv_seq_free(s->seq);
		free(s);
		return 0;
	}
	if (!err)
		seq_reply(r, req.seq, s->seq);
	return err;
}

static int op_block_table(struct kvmemd *d, struct kvmemd_client *c, const void *b,
			  size_t blen, struct reply *r)
{
	struct kvmemd_seq *s;
	struct kvmem_seq_req req;
	u32 nb, *frames;
	int err;

	err = kvmem_copy_body(&req, sizeof(req), b, blen);
	if (err)
		return err;
	if (!kvmem_all_zero(req.reserved, sizeof(req.reserved)) || req.pool || req.nr_tokens)
		return -EINVAL;
	s = seq_lookup(c, req.seq);
	if (!s)
		return -ENOENT;
	if (!kv_seq_is_active(s->seq))
		return -EINVAL;
	nb = kv_seq_nr_blocks(s->seq);
	if (nb > (r->room - sizeof(struct kvmem_seq_reply)) / sizeof(u32))
		return -E2BIG;
	seq_reply(r, req.seq, s->seq);
	frames = reply_put(r, nb * sizeof(u32));
	err = kv_seq_block_table(s->seq, frames, nb);
	return err < 0 ? err : 0;
}

/* Read the sequence ids of an ACTIVATE/DEACTIVATE and check them all. */
static int batch_ids(struct kvmemd_client *c, const void *b, size_t blen,
		     struct kvmem_seq_batch *req, const char **ids)
{
	u32 i;
	u64 id;
	int err;

	if (blen < 12)
		return -EINVAL;
	memcpy(req, b, 12);
	if (!req->ids_off)
		return -EINVAL;
	err = kvmem_copy_head(req, sizeof(*req), b, blen, 12, &req->ids_off, 1);
	if (err)
		return err;
	if (!req->nr || req->nr > KVMEM_STEP_MAX_SEQS || (req->flags & ~KVMEM_NOWAIT) ||
	    req->pad || !kvmem_all_zero(req->reserved, sizeof(req->reserved)) ||
	    !array_ok(blen, req->ids_off, req->nr, sizeof(u64), 12))
		return -EINVAL;
	*ids = (const char *)b + req->ids_off;
	for (i = 0; i < req->nr; i++) {
		memcpy(&id, *ids + i * sizeof(u64), sizeof(id));
		if (!seq_lookup(c, id))
			return -ENOENT;
	}
	return 0;
}

static struct kvmemd_seq *batch_seq(struct kvmemd_client *c, const char *ids, u32 i)
{
	u64 id;

	memcpy(&id, ids + i * sizeof(u64), sizeof(id));
	return seq_lookup(c, id);
}

static int op_activate(struct kvmemd *d, struct kvmemd_client *c, u16 op, const void *b,
		       size_t blen, struct reply *r)
{
	struct kvmem_batch_reply *rep = reply_put(r, sizeof(*rep));
	struct kvmem_seq_batch req;
	bool *was = NULL;
	const char *ids;
	u32 i, flags;
	int err;

	rep->failed = -1;
	err = batch_ids(c, b, blen, &req, &ids);
	if (err)
		return err;
	if (op == KVMEM_OP_DEACTIVATE) {
		for (i = 0; i < req.nr; i++)
			kv_seq_deactivate(batch_seq(c, ids, i)->seq);
		rep->done = req.nr;
		return 0;
	}
	was = calloc(req.nr, sizeof(*was));
	if (!was)
		return -ENOMEM;
	flags = req.flags & KVMEM_NOWAIT ? KV_ALLOC_NOWAIT : 0;
	for (i = 0; i < req.nr && !err; i++) {
		was[i] = kv_seq_is_active(batch_seq(c, ids, i)->seq);
		err = kv_seq_activate(batch_seq(c, ids, i)->seq, flags);
	}
	if (err) {
		rep->failed = (s32)(i - 1);
		while (--i > 0)
			if (!was[i - 1])
				kv_seq_deactivate_flags(batch_seq(c, ids, i - 1)->seq,
							KV_DEACTIVATE_UNWRITTEN);
	} else {
		rep->done = req.nr;
	}
	free(was);
	return err;
}

static int op_stats(struct kvmemd *d, struct kvmemd_client *c, u16 op, const void *b,
		    size_t blen, struct reply *r)
{
	struct kvmem_stats req = { 0 };
	int n, err;

	if (op == KVMEM_OP_STATS) {
		err = kvmem_copy_body(&req, sizeof(req), b, blen);
		if (err)
			return err;
		if (!kvmem_all_zero(req.reserved, sizeof(req.reserved)))
			return -EINVAL;
		if (req.pool && !kvmemd_pool_get(d, req.pool))
			return -ENOENT;
		/* The prefix report shows others' tenants to admins only. */
		n = kvmemd_stats_text(d, req.what, req.pool,
				      c->admin ? KV_TENANT_ANY : kvmemd_tenant(d, c->uid),
				      r->body, r->room);
	} else {
		if (!kvmem_all_zero(b, blen))
			return -E2BIG;
		n = kvmemd_clients_text(d, r->body, r->room);
	}
	if (n < 0)
		return n;
	r->len = (size_t)n + 1;
	return 0;
}

static int op_sysctl(struct kvmemd *d, struct kvmemd_client *c, u16 op, const void *b,
		     size_t blen, struct reply *r)
{
	struct kvmem_sysctl req, *rep;
	struct kvmemd_config old;
	char err_msg[256];
	int err;

	err = kvmem_copy_body(&req, sizeof(req), b, blen);
	if (err)
		return err;
	if (!str_ok(req.key, sizeof(req.key)) || !memchr(req.value, '\0', sizeof(req.value)) ||
	    !kvmem_all_zero(req.reserved, sizeof(req.reserved)))
		return -EINVAL;
	if (op == KVMEM_OP_SYSCTL_SET) {
		if (!c->admin)
			return -EPERM;
		old = d->cfg;
		err = kvmemd_config_set(&d->cfg, req.key, req.value, err_msg, sizeof(err_msg));
		if (err) {
			kvlog(d, KVLOG_WARN, "client %llu: sysctl %s=%s: %s",
			      (unsigned long long)c->id, req.key, req.value, err_msg);
			return err == -EPERM ? -EROFS : err;
		}
		err = kvmemd_apply_tunables(d);
		if (err) {
			d->cfg = old;
			kvmemd_apply_tunables(d);
			return err;
		}
		kvlog(d, KVLOG_INFO, "sysctl %s = %s (uid %u)", req.key, req.value, c->uid);
	}
	rep = reply_put(r, sizeof(*rep));
	memcpy(rep->key, req.key, sizeof(rep->key));
	return kvmemd_config_get(&d->cfg, req.key, rep->value, sizeof(rep->value));
}

static int op_drop_caches(struct kvmemd *d, struct kvmemd_client *c, const void *b,
			  size_t blen)
{
	struct kvmem_drop_caches req;
	u32 i, n = 0;
	int err;

	err = kvmem_copy_body(&req, sizeof(req), b, blen);
	if (err)
		return err;
	if ((req.what & ~(KVMEM_DROP_DEMOTE | KVMEM_DROP_PREFIX)) ||
	    !kvmem_all_zero(req.reserved, sizeof(req.reserved)))
		return -EINVAL;
	if (!c->admin)
		return -EPERM;
	if (req.pool && !kvmemd_pool_get(d, req.pool))
		return -ENOENT;
	if (!req.what)
		req.what = KVMEM_DROP_DEMOTE;
	for (i = 0; i < d->nr_pools; i++) {
		if (req.pool && req.pool != d->pools[i].handle)
			continue;
		if (req.what & KVMEM_DROP_PREFIX)
			n += kv_prefix_drop(d->pools[i].pool);
		if (req.what & KVMEM_DROP_DEMOTE)
			n += kv_reclaim(d->pools[i].pool, KV_TIER_DEVICE, UINT32_MAX);
	}
	kvlog(d, KVLOG_INFO, "drop caches %#x: %u blocks demoted or dropped (uid %u)", req.what,
	      n, c->uid);
	return n > INT32_MAX ? INT32_MAX : (int)n;
}

static int dispatch_op(struct kvmemd *d, struct kvmemd_client *c, u16 op, const void *b,
		       size_t blen, struct reply *r)
{
	if (!c->hello && op != KVMEM_OP_HELLO)
		return -EPROTO;
	switch (op) {
	case KVMEM_OP_HELLO:
		return op_hello(d, c, b, blen, r);
	case KVMEM_OP_POOL_OPEN:
		return op_pool_open(d, c, b, blen, r);
	case KVMEM_OP_SEQ_CREATE:
	case KVMEM_OP_SEQ_FORK:
	case KVMEM_OP_SEQ_TRUNCATE:
	case KVMEM_OP_SEQ_FREE:
		return op_seq(d, c, op, b, blen, r);
	case KVMEM_OP_STEP:
		return kvmemd_op_step(d, c, b, blen, r->body, r->room, &r->len);
	case KVMEM_OP_ACTIVATE:
	case KVMEM_OP_DEACTIVATE:
		return op_activate(d, c, op, b, blen, r);
	case KVMEM_OP_BLOCK_TABLE:
		return op_block_table(d, c, b, blen, r);
	case KVMEM_OP_STATS:
	case KVMEM_OP_CLIENTS:
		return op_stats(d, c, op, b, blen, r);
	case KVMEM_OP_SYSCTL_GET:
	case KVMEM_OP_SYSCTL_SET:
		return op_sysctl(d, c, op, b, blen, r);
	case KVMEM_OP_DROP_CACHES:
		return op_drop_caches(d, c, b, blen);
	case KVMEM_OP_RESERVE:
		return kvmemd_op_reserve(d, c, b, blen, r->body, r->room, &r->len);
	case KVMEM_OP_PREFIX_MATCH:
		return kvmemd_op_prefix_match(d, c, b, blen, r->body, r->room, &r->len);
	case KVMEM_OP_PREFIX_PIN:
		return kvmemd_op_prefix_pin(d, c, b, blen);
	case KVMEM_OP_CHECKPOINT:
		return kvmemd_op_checkpoint(d, c, b, blen);
	case KVMEM_OP_ADMIT:
		return kvmemd_op_admit(d, c, b, blen, r->body, r->room, &r->len);
	default:
		return -EOPNOTSUPP;
	}
}

/**
 * kvmemd_dispatch() - validate a request and build its reply in d->out
 * @d:      daemon
 * @c:      the client it came from
 * @req:    the request (in d->buf)
 * @len:    bytes received
 * @fds:    receives the descriptors to send with the reply (NULL: none)
 * @nr_fds: receives their number
 *
 * Return: the reply's length. Every request gets a reply; a malformed one
 * gets its error in the status (with opcode and tag echoed as far as they
 * could be read).
 */
ssize_t kvmemd_dispatch(struct kvmemd *d, struct kvmemd_client *c,
			const struct kvmem_hdr *req, size_t len, const int **fds, u32 *nr_fds)
{
	struct kvmem_hdr *rep = (struct kvmem_hdr *)d->out;
	struct reply r = { .body = d->out + sizeof(*rep),
			   .room = KVMEM_MSG_MAX - sizeof(*rep) };
	int status;

	memset(rep, 0, sizeof(*rep));
	rep->magic = KVMEM_MAGIC;
	rep->version = KVMEM_VERSION;
	if (len < sizeof(*req)) {
		status = -EBADMSG;
		goto out;
	}
	rep->opcode = req->opcode;
	rep->tag = req->tag;
	if (req->magic != KVMEM_MAGIC || req->size != len || req->status || req->flags)
		status = -EBADMSG;
	else if (req->version != KVMEM_VERSION)
		status = -EPROTONOSUPPORT;
	else
		status = dispatch_op(d, c, req->opcode, req + 1, len - sizeof(*req), &r);
	if (status < 0)
		kvlog(d, KVLOG_DEBUG, "client %llu: op %u: %s", (unsigned long long)c->id,
		      req->opcode, strerror(-status));
out:
	rep->status = status;
	rep->size = (u32)(sizeof(*rep) + r.len);
	*fds = status < 0 ? NULL : r.fds;
	*nr_fds = status < 0 ? 0 : r.nr_fds;
	c->nr_reqs++;
	return rep->size;
}
