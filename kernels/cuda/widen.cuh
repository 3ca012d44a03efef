/* SPDX-License-Identifier: MIT */
/*
 * Quantized KV values (INT8, FP8, INT4) widened to binary16 in registers,
 * for the decode kernels, exactly: INT8 and INT4 without conversion
 * instructions (a binary16 whose exponent makes the low mantissa bits
 * count ones), FP8 by cvt on sm_89 and later (by moving bits before).
 */
#ifndef _KVMEM_KERNELS_CUDA_WIDEN_CUH
#define _KVMEM_KERNELS_CUDA_WIDEN_CUH

#include <stdint.h>
#include <cuda_fp16.h>

/* binary16 pairs: a - b, a * b, a * b + c (round to nearest) */
__device__ __forceinline__ uint32_t h2_sub(uint32_t a, uint32_t b)
{
	uint32_t d;

	asm("sub.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
	return d;
}

__device__ __forceinline__ uint32_t h2_mul(uint32_t a, uint32_t b)
{
	uint32_t d;

	asm("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
	return d;
}

__device__ __forceinline__ uint32_t h2_fma(uint32_t a, uint32_t b, uint32_t c)
{
	uint32_t d;

	asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
	return d;
}

/*
 * Two e4m3 in the low 16 bits, as binary16 (low byte in the low half). Before
 * sm_89, by moving the bits: e4m3 shifted into binary16 is the value times
 * 2^-8 (subnormals included), and the NaN code becomes 480.
 */
__device__ __forceinline__ uint32_t e4m3x2_h2(uint32_t x)
{
	uint32_t d;

#if __CUDA_ARCH__ >= 890
	asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(d) : "h"((unsigned short)x));
#else
	uint32_t w = __byte_perm(x, 0, 0x4140);

	d = ((w & 0x007f007fu) << 7) | ((w & 0x00800080u) << 8);
	asm("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(d), "r"(0x5c005c00u));
#endif
	return d;
}

/*
 * Bytes 0 and 1 (@sel 0x5140) or 2 and 3 (0x7362) of @u, int8 values
 * XORed with 0x80, as binary16: 0x64XX is 1024 + XX, less 1152.
 */
__device__ __forceinline__ uint32_t i8x2_h2(uint32_t u, uint32_t sel)
{
	return h2_sub(__byte_perm(u, 0x64646464u, sel), 0x64806480u);
}

/* (@a & @mask) | @c in one instruction (the compiler makes two of it) */
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t mask, uint32_t c)
{
	uint32_t d;

	asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(d) : "r"(a), "r"(mask), "r"(c));
	return d;
}

/*
 * INT4 nibbles as binary16 values less 8: the low nibbles of bytes 0 and 2
 * of @y (0x64 0x0n is 1024 + n, less 1032), or with @high, the high ones
 * (1024 + 16 n, times 1/16, less 72), both exact.
 */
__device__ __forceinline__ uint32_t u4x2_h2(uint32_t y, bool high)
{
	if (high)
		return h2_fma(and_or(y, 0x00f000f0u, 0x64006400u), 0x2c002c00u, 0xd480d480u);
	return h2_sub(and_or(y, 0x000f000fu, 0x64006400u), 0x64086408u);
}

#endif /* _KVMEM_KERNELS_CUDA_WIDEN_CUH */
