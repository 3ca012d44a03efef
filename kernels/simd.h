/* SPDX-License-Identifier: MIT */
/*
 * Vectorization helpers for the CPU kernels. KV_SIMD_CLONES builds a
 * function three times, for x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) and
 * the baseline, and picks one when the program loads, so the binaries stay
 * portable. Helpers a clone calls must be KV_INLINE so that they are
 * compiled for the clone's target too.
 *
 * kv_v16f is a GCC vector of 16 floats: one zmm register with AVX-512, two
 * ymm with AVX2, four xmm on the baseline. The decode kernel is written in
 * it, so the same source serves every target. (GCC only: clang refuses to
 * pass such vectors between functions in an AVX2 clone, even inlined ones.)
 */
#ifndef _KVMEM_KERNELS_SIMD_H
#define _KVMEM_KERNELS_SIMD_H

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define KV_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", \
						     "arch=x86-64-v3", "default")))
#define KV_SIMD_CLONED 1
#else
#define KV_SIMD_CLONES
#define KV_SIMD_CLONED 0
#endif

#define KV_PRAGMA(x) _Pragma(#x)
#define KV_SIMD_SUM(var) KV_PRAGMA(omp simd reduction(+ : var))
#define KV_SIMD KV_PRAGMA(omp simd)
#define KV_UNROLL(n) KV_PRAGMA(GCC unroll n)

#define KV_INLINE static inline __attribute__((always_inline))

/* Lanes of kv_v16f. */
#define KV_LANES	16

typedef float kv_v16f __attribute__((vector_size(64)));
typedef int kv_v16i __attribute__((vector_size(64)));

/* Lanes of @a then @b (0-15 from @a, 16-31 from @b) picked by constants. */
#define KV_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (kv_v16i){ __VA_ARGS__ })

/** kv_v16_load() - 16 floats from @p (any alignment) */
KV_INLINE kv_v16f kv_v16_load(const float *p)
{
	kv_v16f v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/** kv_v16_store() - 16 floats to @p (any alignment) */
KV_INLINE void kv_v16_store(float *p, kv_v16f v)
{
	memcpy(p, &v, sizeof(v));
}

/** kv_v16_select() - lanes of @a where @mask is set, else of @b */
KV_INLINE kv_v16f kv_v16_select(kv_v16i mask, kv_v16f a, kv_v16f b)
{
	return (kv_v16f)((mask & (kv_v16i)a) | (~mask & (kv_v16i)b));
}

KV_INLINE kv_v16f kv_v16_max(kv_v16f a, kv_v16f b)
{
	return kv_v16_select(a > b, a, b);
}

/* @v with the halves of every group of 2 * @n lanes swapped (n = 8, 4, 2, 1) */
KV_INLINE kv_v16f kv_v16_swap(kv_v16f v, const int n)
{
	switch (n) {
	case 8:
		return KV_SHUFFLE(v, v, 8, 9, 10, 11, 12, 13, 14, 15,
				  0, 1, 2, 3, 4, 5, 6, 7);
	case 4:
		return KV_SHUFFLE(v, v, 4, 5, 6, 7, 0, 1, 2, 3,
				  12, 13, 14, 15, 8, 9, 10, 11);
	case 2:
		return KV_SHUFFLE(v, v, 2, 3, 0, 1, 6, 7, 4, 5,
				  10, 11, 8, 9, 14, 15, 12, 13);
	default:
		return KV_SHUFFLE(v, v, 1, 0, 3, 2, 5, 4, 7, 6,
				  9, 8, 11, 10, 13, 12, 15, 14);
	}
}

/** kv_v16_hmax() - largest lane of @v (NaN lanes are skipped) */
KV_INLINE float kv_v16_hmax(kv_v16f v)
{
	v = kv_v16_max(v, kv_v16_swap(v, 8));
	v = kv_v16_max(v, kv_v16_swap(v, 4));
	v = kv_v16_max(v, kv_v16_swap(v, 2));
	v = kv_v16_max(v, kv_v16_swap(v, 1));
	return v[0];
}

/** kv_v16_hsum() - sum of the lanes of @v */
KV_INLINE float kv_v16_hsum(kv_v16f v)
{
	v += kv_v16_swap(v, 8);
	v += kv_v16_swap(v, 4);
	v += kv_v16_swap(v, 2);
	v += kv_v16_swap(v, 1);
	return v[0];
}

/*
 * Row sums of 16 vectors: lane t of the result is the sum of the lanes of
 * row (vector) t.
 *
 * A transpose folded into an addition tree: every level pairs two vectors
 * with two shuffles and adds them, halving the lanes each row occupies
 * (16 vectors -> 8 of 2 rows -> 4 of 4 -> 2 of 8 -> 1 of 16). 45
 * operations for 256 lanes, where 16 separate horizontal sums take ~128.
 * The pairing is chosen so that row t lands in lane t:
 *
 *   level 1: 256-bit halves  (t, t+4) for t in 0-3 and 8-11
 *   level 2: 128-bit lanes   {0,4,8,12} {1,5,9,13} {2,6,10,14} {3,7,11,15}
 *   level 3: lane pairs      {0,1,4,5,8,9,12,13} {2,3,6,7,10,11,14,15}
 *   level 4: single lanes    0..15
 *
 * Levels 1-2 take the rows g, g+4, g+8, g+12 only (kv_v16_rowsums4()), so a
 * caller short of registers can produce the rows in four groups and keep
 * just one vector per group (kv_v16_rowsums_end() does levels 3-4).
 */
KV_INLINE kv_v16f kv_v16_pair_halves(kv_v16f a, kv_v16f b)
{
	return KV_SHUFFLE(a, b, 0, 1, 2, 3, 4, 5, 6, 7,
			  16, 17, 18, 19, 20, 21, 22, 23) +
	       KV_SHUFFLE(a, b, 8, 9, 10, 11, 12, 13, 14, 15,
			  24, 25, 26, 27, 28, 29, 30, 31);
}

KV_INLINE kv_v16f kv_v16_pair_quarters(kv_v16f a, kv_v16f b)
{
	return KV_SHUFFLE(a, b, 0, 1, 2, 3, 8, 9, 10, 11,
			  16, 17, 18, 19, 24, 25, 26, 27) +
	       KV_SHUFFLE(a, b, 4, 5, 6, 7, 12, 13, 14, 15,
			  20, 21, 22, 23, 28, 29, 30, 31);
}

KV_INLINE kv_v16f kv_v16_pair_twos(kv_v16f a, kv_v16f b)
{
	return KV_SHUFFLE(a, b, 0, 1, 16, 17, 4, 5, 20, 21,
			  8, 9, 24, 25, 12, 13, 28, 29) +
	       KV_SHUFFLE(a, b, 2, 3, 18, 19, 6, 7, 22, 23,
			  10, 11, 26, 27, 14, 15, 30, 31);
}

KV_INLINE kv_v16f kv_v16_pair_ones(kv_v16f a, kv_v16f b)
{
	return KV_SHUFFLE(a, b, 0, 2, 16, 18, 4, 6, 20, 22,
			  8, 10, 24, 26, 12, 14, 28, 30) +
	       KV_SHUFFLE(a, b, 1, 3, 17, 19, 5, 7, 21, 23,
			  9, 11, 25, 27, 13, 15, 29, 31);
}

/* Levels 1-2 for rows g, g+4, g+8, g+12 (@r0, @r4, @r8, @r12). */
KV_INLINE kv_v16f kv_v16_rowsums4(kv_v16f r0, kv_v16f r4, kv_v16f r8,
				  kv_v16f r12)
{
	return kv_v16_pair_quarters(kv_v16_pair_halves(r0, r4),
				    kv_v16_pair_halves(r8, r12));
}

/* Levels 3-4, from kv_v16_rowsums4() of the groups g = 0, 1, 2, 3. */
KV_INLINE kv_v16f kv_v16_rowsums_end(kv_v16f y0, kv_v16f y1, kv_v16f y2,
				     kv_v16f y3)
{
	return kv_v16_pair_ones(kv_v16_pair_twos(y0, y1),
				kv_v16_pair_twos(y2, y3));
}

/**
 * kv_v16_exp() - e^x per lane, for x <= 0 (softmax weights)
 *
 * Cephes' expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two so that
 * n ln2 is exact), e^r from a degree-7 polynomial, then 2^n put in the
 * exponent. Within 2 ulp of e^x; x below -87.3 (where e^x would be
 * subnormal), -inf included, gives 0; NaN stays NaN.
 */
KV_INLINE kv_v16f kv_v16_exp(kv_v16f x)
{
	const float lo = -87.33654f, magic = 12582912.0f;	/* 1.5 * 2^23 */
	kv_v16i under = x < lo, n;
	kv_v16f xc = kv_v16_select(under, (kv_v16f){} + lo, x);
	kv_v16f f = (xc * 1.44269504088896341f + magic) - magic;
	kv_v16f r = xc - f * 0.693359375f + f * 2.12194440e-4f;
	kv_v16f p = (kv_v16f){} + 1.9875691500e-4f;

	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	n = __builtin_convertvector(f, kv_v16i);
	p *= (kv_v16f)((n + 127) << 23);
	return (kv_v16f)(~under & (kv_v16i)p);
}

#endif /* _KVMEM_KERNELS_SIMD_H */
