/* SPDX-License-Identifier: MIT */
/*
 * SipHash-2-4 and SipHash-1-3 (Aumasson and Bernstein): keyed 64-bit hashes,
 * as the kernel's lib/siphash.c. With a secret key, inputs that collide cannot be crafted
 * by someone who sees only the hashes' effects (the prefix cache's use).
 */
#ifndef _KV_LIB_SIPHASH_H
#define _KV_LIB_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/**
 * struct siphash_key - a 128-bit SipHash key
 * @k: the two halves, little-endian words of the 16 key bytes
 */
struct siphash_key {
	uint64_t k[2];
};

uint64_t siphash(const void *data, size_t len, const struct siphash_key *key);
uint64_t siphash13(const void *data, size_t len, const struct siphash_key *key);

#endif /* _KV_LIB_SIPHASH_H */
