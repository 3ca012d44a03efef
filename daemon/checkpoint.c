// SPDX-License-Identifier: MIT
/*
 * A KV cache that survives a restart: with swap.persist = 1, kvmemd writes
 * each pool's prefix cache to its checkpoint region of the swap area on a
 * clean shutdown and restores it at start; `kvmemctl checkpoint` writes one
 * at any time (mm/checkpoint.c does the work). The checkpoint keeps the
 * names of the tenant.NAME tenants, so that a restart with the tenant keys
 * reordered, added or removed gives every cached prefix back to the tenant
 * that cached it, or to none.
 */
#include <errno.h>
#include <string.h>
#include "kvmemd.h"
#include "msg.h"

/* The tenant names, NUL-separated, in the order of their numbers. */
static u32 names_blob(struct kvmemd *d, char *blob, u32 room)
{
	u32 i, len = 0, n;

	for (i = 0; i < d->nr_tenant_names; i++) {
		n = (u32)strnlen(d->tenant_names[i], KVMEMD_TENANT_NAME_MAX) + 1;
		if (len + n > room)
			break;
		memcpy(blob + len, d->tenant_names[i], n);
		len += n;
	}
	return len;
}

/* The @i-th name of a names blob, or NULL. */
static const char *blob_name(const char *blob, u32 len, u32 i)
{
	u32 at = 0;

	while (at < len) {
		if (!i--)
			return memchr(blob + at, '\0', len - at) ? blob + at : NULL;
		at += (u32)strnlen(blob + at, len - at) + 1;
	}
	return NULL;
}

/* A saved tenant's number now: uids as they were, names by name. */
static u32 tenant_now(u32 old, const void *blob, u32 blob_len, void *arg)
{
	struct kvmemd *d = arg;
	const char *name;
	u32 i;

	if (old < KVMEMD_TENANT_NAMED)
		return old;
	name = blob_name(blob, blob_len, old - KVMEMD_TENANT_NAMED);
	for (i = 0; name && i < d->cfg.nr_tenants; i++)
		if (!strcmp(d->cfg.tenants[i].name, name))
			return kvmemd_tenant_by_name(d, name);
	return KV_TENANT_NONE;	/* a tenant the config no longer has */
}

/**
 * kvmemd_checkpoint() - write a checkpoint of one pool, or of every pool
 * with a swap tier
 * @d:    daemon
 * @pool: pool handle, or 0 for all
 *
 * Return: blocks saved, or the first error.
 */
int kvmemd_checkpoint(struct kvmemd *d, u32 pool)
{
	char blob[KV_CKPT_BLOB_MAX];
	u32 i, len = names_blob(d, blob, sizeof(blob));
	int n, total = 0;

	for (i = 0; i < d->nr_pools; i++) {
		if ((pool && pool != d->pools[i].handle) || !kvmemd_config_ckpt_size(&d->cfg, i))
			continue;
		n = kv_pool_checkpoint(d->pools[i].pool, kvmemd_config_ckpt_offset(&d->cfg, i),
				       kvmemd_config_ckpt_size(&d->cfg, i), blob, len);
		if (n < 0) {
			kvlog(d, KVLOG_ERR, "pool %s: checkpoint: %s", d->pools[i].name,
			      strerror(-n));
			return n;
		}
		kvlog(d, KVLOG_INFO, "pool %s: checkpoint of %d cached blocks", d->pools[i].name, n);
		total += n;
	}
	return total;
}

/**
 * kvmemd_restore() - with swap.persist, bring back every pool's last
 * checkpoint; a missing, torn or foreign one is logged and ignored
 * @d: daemon, pools just created
 */
void kvmemd_restore(struct kvmemd *d)
{
	static char blob[KV_CKPT_BLOB_MAX];
	u32 i, len;
	int n;

	if (!d->cfg.swap_persist)
		return;
	for (i = 0; i < d->nr_pools; i++) {
		if (!kvmemd_config_ckpt_size(&d->cfg, i))
			continue;
		n = kv_pool_restore(d->pools[i].pool, kvmemd_config_ckpt_offset(&d->cfg, i),
				    kvmemd_config_ckpt_size(&d->cfg, i), blob, &len, tenant_now, d);
		if (n >= 0)
			kvlog(d, KVLOG_INFO, "pool %s: %d cached blocks restored from the checkpoint",
			      d->pools[i].name, n);
		else if (n == -ENOENT)
			kvlog(d, KVLOG_INFO, "pool %s: no checkpoint; starting empty",
			      d->pools[i].name);
		else
			kvlog(d, KVLOG_WARN, "pool %s: checkpoint ignored (%s); starting empty",
			      d->pools[i].name, n == -EBADMSG ? "torn or damaged" :
			      n == -ESTALE ? "another geometry or swap size" : strerror(-n));
	}
}

/**
 * kvmemd_op_checkpoint() - the CHECKPOINT request (admin)
 * @d:    daemon
 * @c:    client
 * @b:    request body
 * @blen: its length
 *
 * Return: blocks saved, -EPERM, -ENOENT (no such pool), -ENODEV (no pool
 * has a swap area), or the write's error.
 */
int kvmemd_op_checkpoint(struct kvmemd *d, struct kvmemd_client *c, const void *b, size_t blen)
{
	struct kvmem_checkpoint req;
	int err;

	err = kvmem_copy_body(&req, sizeof(req), b, blen);
	if (err)
		return err;
	if (req.pad || !kvmem_all_zero(req.reserved, sizeof(req.reserved)))
		return -EINVAL;
	if (!c->admin)
		return -EPERM;
	if (req.pool && !kvmemd_pool_get(d, req.pool))
		return -ENOENT;
	if (!kvmemd_config_swap_size(&d->cfg) ||
	    (req.pool && !kvmemd_config_ckpt_size(&d->cfg, req.pool - 1)))
		return -ENODEV;		/* no swap area, or none for that pool */
	return kvmemd_checkpoint(d, req.pool);
}
