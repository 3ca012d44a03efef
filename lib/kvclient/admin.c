// SPDX-License-Identifier: MIT
/*
 * libkvclient: statistics and administration (kvmemctl's requests).
 */
#include <errno.h>
#include <string.h>
#include "internal.h"

static int text_reply(int err, const void *r, size_t len, char *buf, size_t buflen)
{
	if (err < 0)
		return err;
	if (!len || ((const char *)r)[len - 1])
		return -EBADMSG;
	if (len > buflen)
		return -ENOBUFS;
	memcpy(buf, r, len);
	return (int)(len - 1);
}

/**
 * kvc_stats() - meminfo, vmstat or zoneinfo text
 * @c:    connection
 * @what: KVMEM_STATS_*
 * @pool: pool handle, 0 for all
 * @buf:  receives the NUL-terminated text
 * @len:  its size
 *
 * Return: the text's length, -EINVAL, -ENOENT, -ENOBUFS.
 */
int kvc_stats(struct kvc *c, uint32_t what, uint32_t pool, char *buf, size_t len)
{
	struct kvmem_stats req = { .what = what, .pool = pool };
	size_t rlen;
	void *r;
	int err;

	err = kvc_request(c, KVMEM_OP_STATS, &req, sizeof(req), &r, &rlen);
	return text_reply(err, r, rlen, buf, len);
}

/**
 * kvc_clients() - the daemon's clients, one line each
 * @c:   connection
 * @buf: receives the NUL-terminated text
 * @len: its size
 *
 * Return: the text's length or -ENOBUFS.
 */
int kvc_clients(struct kvc *c, char *buf, size_t len)
{
	size_t rlen;
	void *r;
	int err;

	err = kvc_request(c, KVMEM_OP_CLIENTS, NULL, 0, &r, &rlen);
	return text_reply(err, r, rlen, buf, len);
}

static int sysctl(struct kvc *c, uint16_t op, const char *key, const char *value,
		  char *out, size_t len)
{
	struct kvmem_sysctl req = { 0 }, rep;
	int err;

	if (strlen(key) >= sizeof(req.key) || (value && strlen(value) >= sizeof(req.value)))
		return -EINVAL;
	strcpy(req.key, key);
	if (value)
		strcpy(req.value, value);
	err = kvc_call(c, op, &req, sizeof(req), out ? &rep : NULL, sizeof(rep));
	if (err < 0)
		return err;
	if (!out)
		return 0;
	rep.value[sizeof(rep.value) - 1] = '\0';
	if (strlen(rep.value) >= len)
		return -ENOBUFS;
	strcpy(out, rep.value);
	return 0;
}

/**
 * kvc_sysctl_get() - read a tunable (`vm.watermark_scale_factor`)
 * @c:     connection
 * @key:   dotted key
 * @value: receives the value in effect
 * @len:   its size
 *
 * Return: 0, -ENOENT (unknown key), -ENOBUFS.
 */
int kvc_sysctl_get(struct kvc *c, const char *key, char *value, size_t len)
{
	return sysctl(c, KVMEM_OP_SYSCTL_GET, key, NULL, value, len);
}

/**
 * kvc_sysctl_set() - change a run-time tunable (admin)
 * @c:     connection
 * @key:   dotted key
 * @value: new value
 *
 * Return: 0, -EPERM (not admin), -ENOENT (unknown key), -EROFS (needs a
 * restart), -EINVAL (malformed value), -ERANGE (value out of range).
 */
int kvc_sysctl_set(struct kvc *c, const char *key, const char *value)
{
	return sysctl(c, KVMEM_OP_SYSCTL_SET, key, value, NULL, 0);
}

/**
 * kvc_checkpoint() - write the prefix cache to the swap area (admin)
 * @c:    connection
 * @pool: pool handle, 0 for every pool with a swap area
 *
 * A kvmemd with swap.persist = 1 restores the last checkpoint at start.
 *
 * Return: blocks saved, -EPERM, -ENOENT, -ENODEV (no swap area), or the
 * write's error.
 */
int kvc_checkpoint(struct kvc *c, uint32_t pool)
{
	struct kvmem_checkpoint req = { .pool = pool };

	return kvc_request(c, KVMEM_OP_CHECKPOINT, &req, sizeof(req), NULL, NULL);
}

/**
 * kvc_drop_caches() - demote every unpinned device block to host, and/or
 * evict the prefix cache's evictable blocks (admin)
 * @c:    connection
 * @pool: pool handle, 0 for all
 * @what: KVMEM_DROP_DEMOTE and/or KVMEM_DROP_PREFIX; 0 for DEMOTE
 *
 * Return: blocks demoted or dropped, -EPERM, -ENOENT, -EINVAL.
 */
int kvc_drop_caches(struct kvc *c, uint32_t pool, uint32_t what)
{
	struct kvmem_drop_caches req = { .pool = pool, .what = what };

	return kvc_request(c, KVMEM_OP_DROP_CACHES, &req, sizeof(req), NULL, NULL);
}
