/* SPDX-License-Identifier: MIT */
/*
 * Element conversions for the CPU kernels: IEEE binary16 and bfloat16 to and
 * from float, rounding to nearest even, with NaN and infinities kept.
 */
#ifndef _KVMEM_KERNELS_DTYPE_H
#define _KVMEM_KERNELS_DTYPE_H

#include <stdint.h>
#include <string.h>

static inline uint32_t kv_f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

static inline float kv_bits_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

/** kv_bf16_to_f32() - widen a bfloat16 (exact) */
static inline float kv_bf16_to_f32(uint16_t h)
{
	return kv_bits_f32((uint32_t)h << 16);
}

/** kv_f32_to_bf16() - round a float to bfloat16, nearest even; NaN stays NaN */
static inline uint16_t kv_f32_to_bf16(float f)
{
	uint32_t u = kv_f32_bits(f);

	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

/**
 * kv_f16_to_f32() - widen an IEEE binary16 (exact, subnormals included)
 *
 * Branch-free so that loops over arrays vectorize: the 15 magnitude bits
 * shifted into a float and scaled by 2^112 give normals and subnormals;
 * an all-ones exponent becomes infinity or NaN.
 */
static inline float kv_f16_to_f32(uint16_t h)
{
	uint32_t o = (uint32_t)(h & 0x7fffu) << 13;
	uint32_t r = kv_f32_bits(kv_bits_f32(o) * 0x1p112f);

	r |= (o & 0x0f800000u) == 0x0f800000u ? 0x7f800000u : 0;
	return kv_bits_f32(r | (uint32_t)(h & 0x8000u) << 16);
}

/** kv_f32_to_f16() - round a float to IEEE binary16, nearest even */
static inline uint16_t kv_f32_to_f16(float f)
{
	uint32_t u = kv_f32_bits(f);
	uint32_t sign = (u >> 16) & 0x8000u;
	uint32_t a = u & 0x7fffffffu;
	uint32_t exp, man, r;

	if (a > 0x7f800000u)
		return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
	if (a >= 0x477ff000u)	/* rounds to >= 65520: infinity */
		return (uint16_t)(sign | 0x7c00u);
	if (a < 0x38800000u) {
		/* result is subnormal or zero: round a * 2^24 to an integer */
		float m = kv_bits_f32(a) * 0x1p24f;
		uint32_t i = (uint32_t)m;
		float frac = m - (float)i;

		if (frac > 0.5f || (frac == 0.5f && (i & 1)))
			i++;
		return (uint16_t)(sign | i);
	}
	exp = (a >> 23) - 112;
	man = a & 0x7fffffu;
	r = (exp << 10) | (man >> 13);
	man &= 0x1fffu;
	if (man > 0x1000u || (man == 0x1000u && (r & 1)))
		r++;
	return (uint16_t)(sign | r);
}

/** kv_load_f32() - element @i of an array of @dtype as float */
static inline float kv_load_f32(const void *p, uint32_t dtype, uint64_t i)
{
	switch (dtype) {
	case 1: /* KV_DTYPE_FP16 */
		return kv_f16_to_f32(((const uint16_t *)p)[i]);
	case 2: /* KV_DTYPE_BF16 */
		return kv_bf16_to_f32(((const uint16_t *)p)[i]);
	default:
		return ((const float *)p)[i];
	}
}

/** kv_store_f32() - store @f as element @i of an array of @dtype */
static inline void kv_store_f32(void *p, uint32_t dtype, uint64_t i, float f)
{
	switch (dtype) {
	case 1:
		((uint16_t *)p)[i] = kv_f32_to_f16(f);
		break;
	case 2:
		((uint16_t *)p)[i] = kv_f32_to_bf16(f);
		break;
	default:
		((float *)p)[i] = f;
	}
}

#endif /* _KVMEM_KERNELS_DTYPE_H */
