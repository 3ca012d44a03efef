// SPDX-License-Identifier: MIT
/*
 * The prefix cache as the daemon serves it: tenants (a client's uid, or the
 * tenant.NAME its uid is listed in), PREFIX_MATCH and PREFIX_PIN, and the
 * names shown in `kvmemctl prefix`. The cache itself is mm/prefix.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "kvmemd.h"
#include "msg.h"

/* The lifetime number of tenant name @name; -ENOSPC when none is left. */
static int tenant_number(struct kvmemd *d, const char *name)
{
	u32 i;

	for (i = 0; i < d->nr_tenant_names; i++)
		if (!strcmp(d->tenant_names[i], name))
			return (int)i;
	if (d->nr_tenant_names == KVMEMD_TENANT_IDS)
		return -ENOSPC;
	/* @name is a config key's, NUL-terminated within the same size. */
	memcpy(d->tenant_names[i], name, sizeof(d->tenant_names[i]));
	d->tenant_names[i][sizeof(d->tenant_names[i]) - 1] = '\0';
	d->nr_tenant_names++;
	return (int)i;
}

/**
 * kvmemd_tenant_by_name() - the number of tenant name @name
 * @d:    daemon
 * @name: a tenant.NAME name
 *
 * Return: KVMEMD_TENANT_NAMED plus its lifetime number, or KV_TENANT_NONE
 * when no number is left.
 */
u32 kvmemd_tenant_by_name(struct kvmemd *d, const char *name)
{
	int i = tenant_number(d, name);

	return i < 0 ? KV_TENANT_NONE : KVMEMD_TENANT_NAMED + (u32)i;
}

/**
 * kvmemd_tenant() - the tenant of a uid
 * @d:   daemon
 * @uid: peer uid
 *
 * A uid listed in a tenant.NAME key belongs to that name's tenant,
 * numbered from KVMEMD_TENANT_NAMED by the order names were first seen
 * (stable over reloads); any other uid is its own tenant. A uid at or
 * above KVMEMD_TENANT_NAMED, which could pass for a name's number, gets
 * KV_TENANT_NONE: no prefix cache at all (as after KVMEMD_TENANT_IDS
 * names).
 */
u32 kvmemd_tenant(struct kvmemd *d, uid_t uid)
{
	int i = kvmemd_config_tenant(&d->cfg, (u32)uid);

	if (i >= 0)
		i = tenant_number(d, d->cfg.tenants[i].name);
	if (i >= 0)
		return KVMEMD_TENANT_NAMED + (u32)i;
	if (i == -ENOSPC || (u32)uid >= KVMEMD_TENANT_NAMED)
		return KV_TENANT_NONE;
	return (u32)uid;
}

/**
 * kvmemd_tenant_name() - a tenant's label for reports: its name, or
 * "uid N"
 * @tenant: from kvmemd_tenant()
 * @buf:    output
 * @len:    its size
 * @arg:    the daemon
 */
void kvmemd_tenant_name(u32 tenant, char *buf, size_t len, void *arg)
{
	struct kvmemd *d = arg;
	u32 i = tenant - KVMEMD_TENANT_NAMED;

	if (tenant >= KVMEMD_TENANT_NAMED && i < d->nr_tenant_names)
		snprintf(buf, len, "%s", d->tenant_names[i]);
	else if (tenant >= KVMEMD_TENANT_NAMED)
		snprintf(buf, len, "none");
	else
		snprintf(buf, len, "uid:%u", tenant);
}

/* The fixed part of a PREFIX_MATCH; the ids located and checked. */
static int match_parse(const void *b, size_t blen, struct kvmem_prefix_match *req)
{
	const size_t head = 16;		/* seq, nr_tokens, tokens_off */
	int err;

	if (blen < head)
		return -EINVAL;
	memcpy(req, b, head);
	if (req->tokens_off % 4 || (req->nr_tokens && !req->tokens_off))
		return -EINVAL;
	err = kvmem_copy_head(req, sizeof(*req), b, blen, head, &req->tokens_off, 1);
	if (err)
		return err;
	if (req->pad || !kvmem_all_zero(req->reserved, sizeof(req->reserved)) ||
	    (req->tokens_off && req->nr_tokens > (blen - req->tokens_off) / sizeof(u32)))
		return -EINVAL;
	return 0;
}

/**
 * kvmemd_op_prefix_match() - the PREFIX_MATCH request
 * @d:       daemon
 * @c:       client
 * @b:       request body
 * @blen:    its length
 * @out:     reply body buffer
 * @room:    its size
 * @out_len: receives the reply body's length
 *
 * Return: tokens matched, or -EINVAL (malformed; the sequence holds tokens
 * or is active), -ENOENT (no such sequence), -ENOMEM.
 */
int kvmemd_op_prefix_match(struct kvmemd *d, struct kvmemd_client *c, const void *b,
			   size_t blen, char *out, size_t room, size_t *out_len)
{
	struct kvmem_prefix_match_reply *rep = (struct kvmem_prefix_match_reply *)out;
	struct kvmem_prefix_match req;
	struct kv_prefix_hit hit;
	struct kvmemd_seq *s;
	int ret, t;

	ret = match_parse(b, blen, &req);
	if (ret)
		return ret;
	s = idr_find(&c->seqs, req.seq);
	if (!s)
		return -ENOENT;
	if (room < sizeof(*rep))
		return -ENOBUFS;
	ret = kv_prefix_match(s->seq, req.tokens_off ?
			      (const u32 *)((const char *)b + req.tokens_off) : NULL,
			      req.nr_tokens, &hit);
	if (ret < 0)
		return ret;
	memset(rep, 0, sizeof(*rep));
	rep->tokens = hit.tokens;
	rep->blocks = hit.blocks;
	for (t = 0; t < KVMEM_NR_TIERS; t++)
		rep->tier_tokens[t] = hit.tier_tokens[t];
	*out_len = sizeof(*rep);
	return ret;
}

/*
 * UNPIN, REPIN, FORGET of a name in one pool or in all. In all, the names
 * the tenant may change are changed and another tenant's of the same name
 * left alone: -EPERM only when no pool has one of its own, so that the
 * request never both changes a pool and fails.
 */
static int pin_by_name(struct kvmemd *d, struct kvmemd_client *c,
		       const struct kvmem_prefix_pin *req)
{
	u32 tenant = c->admin ? KV_TENANT_ANY : kvmemd_tenant(d, c->uid), i;
	int err = -ENOENT, e;
	bool done = false;

	for (i = 0; i < d->nr_pools; i++) {
		if (req->pool && req->pool != d->pools[i].handle)
			continue;
		if (req->op == KVMEM_PREFIX_FORGET)
			e = kv_prefix_forget(d->pools[i].pool, req->name, tenant);
		else
			e = kv_prefix_set_pinned(d->pools[i].pool, req->name,
						 req->op == KVMEM_PREFIX_REPIN, tenant);
		done |= !e;
		if (e != -ENOENT)
			err = e;
	}
	if (done)
		err = 0;
	if (!err)
		kvlog(d, KVLOG_INFO, "prefix %s: %s (uid %u)", req->name,
		      req->op == KVMEM_PREFIX_FORGET ? "forgotten" :
		      req->op == KVMEM_PREFIX_REPIN ? "pinned" : "unpinned", c->uid);
	return err;
}

/**
 * kvmemd_op_prefix_pin() - the PREFIX_PIN request
 * @d:    daemon
 * @c:    client
 * @b:    request body
 * @blen: its length
 *
 * Return: tokens pinned (PIN), 0, or a negative errno (see struct
 * kvmem_prefix_pin).
 */
int kvmemd_op_prefix_pin(struct kvmemd *d, struct kvmemd_client *c, const void *b,
			 size_t blen)
{
	struct kvmem_prefix_pin req;
	struct kvmemd_seq *s;
	int err;

	err = kvmem_copy_body(&req, sizeof(req), b, blen);
	if (err)
		return err;
	if (!memchr(req.name, '\0', sizeof(req.name)) || !req.name[0] ||
	    !kvmem_all_zero(req.reserved, sizeof(req.reserved)) ||
	    req.op < KVMEM_PREFIX_PIN || req.op > KVMEM_PREFIX_FORGET)
		return -EINVAL;
	if (req.op != KVMEM_PREFIX_PIN) {
		if (req.seq || (req.pool && !kvmemd_pool_get(d, req.pool)))
			return req.seq ? -EINVAL : -ENOENT;
		return pin_by_name(d, c, &req);
	}
	if (req.pool)
		return -EINVAL;
	s = idr_find(&c->seqs, req.seq);
	if (!s)
		return -ENOENT;
	err = kv_prefix_pin(s->seq, req.name);
	if (err > 0)
		kvlog(d, KVLOG_INFO, "prefix %s: %d tokens pinned in pool %s (uid %u)", req.name,
		      err, s->pool->name, c->uid);
	return err;
}
