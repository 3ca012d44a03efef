/* SPDX-License-Identifier: MIT */
/*
 * Vectorization helpers for the CPU kernels. KV_SIMD_CLONES builds a
 * function twice, for x86-64-v3 (AVX2, FMA) and for the baseline, and picks
 * one when the program loads, so the binaries stay portable.
 */
#ifndef _KVMEM_KERNELS_SIMD_H
#define _KVMEM_KERNELS_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define KV_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KV_SIMD_CLONES
#endif

#define KV_PRAGMA(x) _Pragma(#x)
#define KV_SIMD_SUM(var) KV_PRAGMA(omp simd reduction(+ : var))
#define KV_SIMD KV_PRAGMA(omp simd)

#endif /* _KVMEM_KERNELS_SIMD_H */
