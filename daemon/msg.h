/* SPDX-License-Identifier: MIT */
/*
 * Helpers for reading message bodies by the rules of uapi/kvmem/kvmem.h.
 */
#ifndef _KVMEMD_MSG_H
#define _KVMEMD_MSG_H

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <linux/types.h>

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

/**
 * kvmem_copy_head() - kvmem_copy_body() for a body whose struct is followed
 * by arrays: the struct ends where its first array starts
 * @dst:  the struct this side knows, whose first @head bytes (up to and
 *        including the array offsets) the caller has already read
 * @dlen: its size
 * @b:    the body
 * @blen: its length
 * @head: bytes every version of the struct has
 * @offs: the arrays' offsets from the start of the body; 0 for none
 * @n:    entries of @offs
 *
 * Return: 0, -EINVAL when an array starts inside @head or past the body,
 * or -E2BIG.
 */
static inline int kvmem_copy_head(void *dst, size_t dlen, const void *b, size_t blen,
				  size_t head, const __u32 *offs, unsigned int n)
{
	size_t fixed = blen;
	unsigned int i;

	for (i = 0; i < n; i++) {
		if (offs[i] > blen)
			return -EINVAL;
		if (offs[i] && offs[i] < fixed)
			fixed = offs[i];
	}
	if (fixed < head)
		return -EINVAL;
	return kvmem_copy_body(dst, dlen, b, fixed);
}

#endif /* _KVMEMD_MSG_H */
