// SPDX-License-Identifier: MIT
/*
 * SipHash, from the paper "SipHash: a fast short-input PRF" (2012):
 * SipHash-2-4 (two compression rounds per 8-byte word, four finalisation
 * rounds) and the faster SipHash-1-3 that hash tables use (Rust's
 * HashMap, the kernel's hsiphash on 64-bit).
 */
#include <string.h>
#include "siphash.h"

static inline uint64_t rol64(uint64_t v, int s)
{
	return (v << s) | (v >> (64 - s));
}

#define SIPROUND(v0, v1, v2, v3)					\
	do {								\
		v0 += v1; v1 = rol64(v1, 13); v1 ^= v0; v0 = rol64(v0, 32); \
		v2 += v3; v3 = rol64(v3, 16); v3 ^= v2;			\
		v0 += v3; v3 = rol64(v3, 21); v3 ^= v0;			\
		v2 += v1; v1 = rol64(v1, 17); v1 ^= v2; v2 = rol64(v2, 32); \
	} while (0)

static inline uint64_t le64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static inline uint64_t sip_hash(const void *data, size_t len, const struct siphash_key *key,
				int c, int d)
{
	const unsigned char *p = data, *end = p + (len & ~(size_t)7);
	uint64_t v0 = 0x736f6d6570736575ull ^ key->k[0];
	uint64_t v1 = 0x646f72616e646f6dull ^ key->k[1];
	uint64_t v2 = 0x6c7967656e657261ull ^ key->k[0];
	uint64_t v3 = 0x7465646279746573ull ^ key->k[1];
	uint64_t b = (uint64_t)len << 56, m;
	size_t i;
	int r;

	for (; p != end; p += 8) {
		m = le64(p);
		v3 ^= m;
		for (r = 0; r < c; r++)
			SIPROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	for (i = 0; i < (len & 7); i++)
		b |= (uint64_t)p[i] << (8 * i);
	v3 ^= b;
	for (r = 0; r < c; r++)
		SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	for (r = 0; r < d; r++)
		SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

/**
 * siphash() - SipHash-2-4 of @len bytes at @data under @key
 * @data: input
 * @len:  its length in bytes
 * @key:  the key
 *
 * Return: the 64-bit hash (the reference implementation's output read as a
 * little-endian word).
 */
uint64_t siphash(const void *data, size_t len, const struct siphash_key *key)
{
	return sip_hash(data, len, key, 2, 4);
}

/**
 * siphash13() - SipHash-1-3 of @len bytes at @data under @key: half the
 * rounds, for hash tables whose entries are compared on a match anyway
 * @data: input
 * @len:  its length in bytes
 * @key:  the key
 *
 * Return: the 64-bit hash.
 */
uint64_t siphash13(const void *data, size_t len, const struct siphash_key *key)
{
	return sip_hash(data, len, key, 1, 3);
}
