/* SPDX-License-Identifier: MIT */
/*
 * Pieces shared by the CUDA attention kernels (decode.cu, prefill*.cu): the
 * tensor-core product and conversions of each 16-bit KV type, and where one
 * layer's K and V of a head sit in the arena's frames.
 */
#ifndef _KVMEM_KERNELS_CUDA_ATTN_CUH
#define _KVMEM_KERNELS_CUDA_ATTN_CUH

#include <stdint.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "kernels/kvkernels.h"

/*
 * struct kv_layer_ref - one layer of a paged arena, as the kernels index it
 * @arena:       frame 0
 * @frames:      frames in the arena (a frame number past it is a fault)
 * @frame_bytes: bytes per frame
 * @koff:        the layer's K of head 0 inside a frame
 * @head_bytes:  one head's K (or V) in one block
 * @voff:        V minus K of the same head
 */
struct kv_layer_ref {
	const char *arena;
	uint64_t frames;
	uint64_t frame_bytes;
	uint64_t koff;
	uint64_t head_bytes;
	uint64_t voff;
};

static inline kv_layer_ref kv_layer_of(const struct kv_arena_ref *r, uint32_t layer)
{
	const struct kv_geometry *g = &r->g;
	kv_layer_ref l;

	l.arena = static_cast<const char *>(r->base);
	l.frames = r->frames;
	l.frame_bytes = kv_frame_bytes(g);
	l.koff = (uint64_t)layer * kv_layer_bytes(g);
	l.head_bytes = kv_head_bytes(g);
	l.voff = (uint64_t)g->kv_heads * kv_head_bytes(g);
	return l;
}

/*
 * kv_mma<T> - for T = __nv_bfloat16 or __half: two floats packed into one
 * 32-bit register of T, D += A B with mma.sync m16n8k16 (fp32
 * accumulation; A row-major in four registers, B column-major in two), and
 * stores of one or two floats as T.
 */
template <typename T> struct kv_mma;

#define KV_MMA_TRAITS(T, T2, PACK, PTX, CVT)						\
template <> struct kv_mma<T> {								\
	static __device__ __forceinline__ uint32_t pack(float a, float b)		\
	{										\
		T2 h = PACK(a, b);							\
		return *reinterpret_cast<uint32_t *>(&h);				\
	}										\
	static __device__ __forceinline__ void mma(float (&d)[4], uint32_t a0,		\
		uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1)	\
	{										\
		asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX "." PTX	\
			     ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "		\
			     "{%0,%1,%2,%3};\n"						\
			     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])		\
			     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));	\
	}										\
	static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4],	\
						   uint32_t b0, uint32_t b1)		\
	{										\
		mma(d, a[0], a[1], a[2], a[3], b0, b1);					\
	}										\
	static __device__ __forceinline__ void store(void *p, float v)			\
	{										\
		*static_cast<T *>(p) = CVT(v);						\
	}										\
	static __device__ __forceinline__ void store2(void *p, float a, float b)	\
	{										\
		*static_cast<T2 *>(p) = PACK(a, b);					\
	}										\
}

KV_MMA_TRAITS(__nv_bfloat16, __nv_bfloat162, __floats2bfloat162_rn, "bf16", __float2bfloat16_rn);
KV_MMA_TRAITS(__half, __half2, __floats2half2_rn, "f16", __float2half_rn);

#undef KV_MMA_TRAITS

/* the shared-memory address of @p, as PTX operands take it */
__device__ __forceinline__ uint32_t kv_smem_addr(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

/*
 * fence_async_smem() - this thread's shared-memory accesses (generic
 * proxy) ordered before later ones of the async proxy (bulk copies,
 * wgmma); sm_90, nothing before
 */
__device__ __forceinline__ void fence_async_smem(void)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/* mbar_wait() - wait until phase @parity of mbarrier @bar completed (sm_90) */
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity)
{
#if __CUDA_ARCH__ >= 900
	uint32_t done;

	do {
		asm volatile("{\n.reg .pred p;\n"
			     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
			     "selp.u32 %0, 1, 0, p;\n}\n"
			     : "=r"(done) : "r"(kv_smem_addr(bar)), "r"(parity) : "memory");
	} while (!done);
#endif
}

/* 2^x, flushing denormal results to zero (exp2f() handles them: slower) */
__device__ __forceinline__ float exp2_ftz(float x)
{
	float y;

	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}

/*
 * kv_block_of() - the block of a block table holding token @tok, and the
 * token's slot in it (@tib); @shift is log2(@block_tokens) when that is a
 * power of two (a shift instead of a division), else -1
 */
__device__ __forceinline__ uint32_t kv_block_of(uint32_t tok, uint32_t block_tokens,
						int32_t shift, uint32_t &tib)
{
	uint32_t blk = shift >= 0 ? tok >> shift : tok / block_tokens;

	tib = tok - blk * block_tokens;
	return blk;
}

/* kv_bt_shift() - log2(@block_tokens) when a power of two, else -1 */
static inline int32_t kv_bt_shift(uint32_t block_tokens)
{
	return block_tokens & (block_tokens - 1) ? -1 : __builtin_ctz(block_tokens);
}

#endif /* _KVMEM_KERNELS_CUDA_ATTN_CUH */
