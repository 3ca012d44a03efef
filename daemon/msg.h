/* SPDX-License-Identifier: MIT */
/*
 * Helpers for reading message bodies by the rules of uapi/kvmem/kvmem.h.
 */
#ifndef _KVMEMD_MSG_H
#define _KVMEMD_MSG_H

#include <errno.h>
#include <stdbool.h>
#include <string.h>

/** kvmem_all_zero() - whether @len bytes at @p are all zero */
static inline bool kvmem_all_zero(const void *p, size_t len)
{
	const char *c = p;
	size_t i;

	for (i = 0; i < len; i++)
		if (c[i])
			return false;
	return true;
}

/**
 * kvmem_copy_body() - copy_struct_from_user() for message bodies
 * @dst:  the struct this side knows
 * @dlen: its size
 * @src:  the body received
 * @slen: bytes of it that belong to the struct
 *
 * A shorter body is zero-extended; a longer one must have a zero tail.
 *
 * Return: 0 or -E2BIG.
 */
static inline int kvmem_copy_body(void *dst, size_t dlen, const void *src, size_t slen)
{
	if (slen <= dlen) {
		memcpy(dst, src, slen);
		memset((char *)dst + slen, 0, dlen - slen);
		return 0;
	}
	if (!kvmem_all_zero((const char *)src + dlen, slen - dlen))
		return -E2BIG;
	memcpy(dst, src, dlen);
	return 0;
}

#endif /* _KVMEMD_MSG_H */
