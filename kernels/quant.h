/* SPDX-License-Identifier: MIT */
/*
 * Quantized KV (uapi/kvmem/layout.h): the conversions of one value, shared
 * by the CPU kernels and the host side of the CUDA ones, so that both
 * quantize to the same bytes.
 *
 *	INT8:  q = rint(x / scale) in -127..127, scale = amax / 127
 *	FP8:   q = e4m3(x / scale), rounded to nearest even and saturated at
 *	       448, scale = amax / 448
 *	INT4:  q = rint(x / scale) in -7..7 stored as q + 8, scale =
 *	       binary16(amax / 7) per KV_INT4_GROUP values
 *
 * "x / scale" is x * (1 / scale) in float (0 when the scale is under
 * FLT_MIN), the order the CUDA kernels use too. A NaN becomes 0 in the
 * integer types.
 */
#ifndef _KVMEM_KERNELS_QUANT_H
#define _KVMEM_KERNELS_QUANT_H

#include <math.h>
#include <stdint.h>

#include "kernels/dtype.h"
#include "kernels/kvkernels.h"

#define KV_INT8_QMAX	127.0f
#define KV_FP8_QMAX	448.0f
#define KV_INT4_QMAX	7.0f
#define KV_F16_MAX	65504.0f
#define KV_QUANT_SCALE_MIN	0x1p-126f	/* FLT_MIN */

/** kv_quant_qmax() - the largest magnitude a quantized dtype stores */
static inline float kv_quant_qmax(uint32_t dtype)
{
	return dtype == KV_DTYPE_INT8 ? KV_INT8_QMAX :
	       dtype == KV_DTYPE_FP8_E4M3 ? KV_FP8_QMAX : KV_INT4_QMAX;
}

/*
 * kv_quant_inv() - the multiplier that quantizes by @scale: 0 for a scale
 * of 0 or below FLT_MIN, whose inverse would overflow (values that small
 * are stored as 0)
 */
static inline float kv_quant_inv(float scale)
{
	return scale >= KV_QUANT_SCALE_MIN ? 1.0f / scale : 0.0f;
}

/** kv_fp8_to_f32() - widen an e4m3 value (exact); 0x7f and 0xff are NaN */
static inline float kv_fp8_to_f32(uint8_t c)
{
	uint32_t e = (c >> 3) & 15, m = c & 7;
	float v;

	if (e == 15 && m == 7)
		return NAN;
	v = e ? ldexpf((float)(8 + m), (int)e - 10) : ldexpf((float)m, -9);
	return c & 0x80 ? -v : v;
}

/** kv_f32_to_fp8() - round to e4m3, nearest even, saturating at +-448 */
static inline uint8_t kv_f32_to_fp8(float x)
{
	uint32_t u = kv_f32_bits(x), sign = (u >> 24) & 0x80, a = u & 0x7fffffffu;
	uint32_t code, man, rem;
	int e;

	if (a > 0x7f800000u)
		return 0x7f;
	if (a >= 0x43e00000u)			/* >= 448, infinity included */
		return (uint8_t)(sign | 0x7e);
	if (a < 0x3c800000u) {			/* < 2^-6: a multiple of 2^-9 */
		float m = kv_bits_f32(a) * 512.0f;

		return (uint8_t)(sign | (uint32_t)rintf(m));
	}
	e = (int)(a >> 23) - 127;
	man = a & 0x7fffffu;
	code = ((uint32_t)(e + 7) << 3) | (man >> 20);
	rem = man & 0xfffffu;
	if (rem > 0x80000u || (rem == 0x80000u && (code & 1)))
		code++;
	if (code > 0x7e)
		code = 0x7e;
	return (uint8_t)(sign | code);
}

/** kv_quant_int() - x * inv rounded to an integer in -qmax..qmax (NaN: 0) */
static inline int kv_quant_int(float x, float inv, float qmax)
{
	float v = x * inv;

	if (v != v)
		return 0;
	v = fminf(fmaxf(v, -qmax), qmax);
	return (int)rintf(v);
}

/** kv_quant8() - one INT8 or FP8 byte of @x at the multiplier @inv */
static inline uint8_t kv_quant8(uint32_t dtype, float x, float inv)
{
	if (dtype == KV_DTYPE_FP8_E4M3)
		return kv_f32_to_fp8(x * inv);
	return (uint8_t)(int8_t)kv_quant_int(x, inv, KV_INT8_QMAX);
}

/** kv_dequant8() - the value of an INT8 or FP8 byte before its scale */
static inline float kv_dequant8(uint32_t dtype, uint8_t q)
{
	return dtype == KV_DTYPE_FP8_E4M3 ? kv_fp8_to_f32(q) : (float)(int8_t)q;
}

/** kv_int4_scale() - the binary16 scale of a group whose largest |x| is @amax */
static inline uint16_t kv_int4_scale(float amax)
{
	return kv_f32_to_f16(fminf(amax / KV_INT4_QMAX, KV_F16_MAX));
}

/*
 * kv_dequant_rows() - widen @r token vectors of one head of a quantized
 * block to float: row t, dim d goes to dst[t * row_stride +
 * (d / 16) * chunk_stride + d % 16] (rows of hd floats: row_stride = hd,
 * chunk_stride = 16).
 */
void kv_dequant_rows(const struct kv_geometry *g, const char *block,
		     uint32_t layer, uint32_t kv, uint32_t head, uint32_t tok,
		     uint32_t r, float *dst, size_t row_stride, size_t chunk_stride);

int kv_append_quant_cpu(const struct kv_append_args *a);

#endif /* _KVMEM_KERNELS_QUANT_H */
