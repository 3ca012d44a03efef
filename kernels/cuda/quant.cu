// SPDX-License-Identifier: MIT
/*
 * The quantizing KV append on CUDA (struct kv_append_args gives the rules,
 * kernels/quant.h the rounding): the same bytes as kv_append_cpu().
 *
 * INT4: a warp per (token, kv head, K or V); lane i holds dim 32g + i of
 * group g, so a group's amax is one warp reduction and its nibbles pair up
 * between neighbouring lanes.
 *
 * INT8, FP8: a warp per (token, kv head, K or V) whose token starts a run
 * (consecutive slots in one frame); the others return at once. The warp
 * finds the run's end, its amax and whether it starts the block, grows the
 * block's scale (requantizing the block's values) and writes the run.
 */
#include <errno.h>
#include <stdint.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/cuda/cuda_internal.h"

namespace {

constexpr int kWarps = 8;

struct quant_params {
	char *arena;
	uint64_t frames;
	uint64_t frame_bytes;
	uint64_t koff;		/* the layer's K values of head 0 */
	uint64_t head_bytes;	/* one head's values in a block */
	uint64_t soff;		/* the layer's K scales of head 0 */
	uint64_t head_sbytes;	/* one head's scales in a block */
	const void *k, *v;
	const __s64 *slots;
	int32_t *status;
	uint32_t tokens, block_tokens, kv_heads, head_dim, dtype;
	float qmax;
};

__device__ __forceinline__ float load_io(const void *p, size_t i, bool bf16)
{
	return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]) :
		      __half2float(static_cast<const __half *>(p)[i]);
}

__device__ __forceinline__ float warp_max(float x)
{
	for (int o = 16; o; o >>= 1)
		x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, o));
	return x;
}

/* kv_quant_int(): x * inv rounded into -qmax..qmax, NaN to 0 */
__device__ __forceinline__ int quant_int(float x, float inv, float qmax)
{
	float v = __fmul_rn(x, inv);

	if (v != v)
		return 0;
	return (int)rintf(fminf(fmaxf(v, -qmax), qmax));
}

__device__ __forceinline__ uint8_t quant8(uint32_t dtype, float x, float inv)
{
	if (dtype == KV_DTYPE_FP8_E4M3)
		return (uint8_t)__nv_cvt_float_to_fp8(__fmul_rn(x, inv), __NV_SATFINITE,
						      __NV_E4M3);
	return (uint8_t)(int8_t)quant_int(x, inv, 127.0f);
}

__device__ __forceinline__ float dequant8(uint32_t dtype, uint8_t q)
{
	if (dtype == KV_DTYPE_FP8_E4M3)
		return __half2float(__half(__nv_cvt_fp8_to_halfraw(q, __NV_E4M3)));
	return (float)(int8_t)q;
}

/* kv_quant_inv(): 0 under FLT_MIN, whose inverse would overflow */
__device__ __forceinline__ float quant_inv(float scale)
{
	return scale >= 0x1p-126f ? __fdiv_rn(1.0f, scale) : 0.f;
}

__device__ __forceinline__ void set_status(int32_t *status)
{
	if (status)
		atomicExch(status, -EINVAL);
}

/* the frame of token @t's slot; false (and the status set) past the arena */
__device__ __forceinline__ bool slot_frame(const quant_params &p, uint32_t t,
					   uint64_t &frame, uint32_t &tib)
{
	uint64_t s = (uint64_t)p.slots[t];

	frame = s / p.block_tokens;
	tib = (uint32_t)(s - frame * p.block_tokens);
	return frame < p.frames;
}

__global__ void __launch_bounds__(kWarps * 32) kv_quant4_kernel(const quant_params p, bool bf16)
{
	const int lane = threadIdx.x & 31;
	const uint64_t item = (uint64_t)blockIdx.x * kWarps + (threadIdx.x >> 5);
	const uint32_t groups = p.head_dim / KV_INT4_GROUP;
	uint32_t t = (uint32_t)(item / (2 * p.kv_heads)), tib;
	uint32_t kv = (uint32_t)(item / p.kv_heads % 2), h = (uint32_t)(item % p.kv_heads);
	uint64_t frame;

	if (t >= p.tokens || p.slots[t] < 0)
		return;
	if (!slot_frame(p, t, frame, tib)) {
		if (lane == 0 && kv == 0 && h == 0)
			set_status(p.status);
		return;
	}
	char *block = p.arena + frame * p.frame_bytes;
	uint8_t *dst = reinterpret_cast<uint8_t *>(block + p.koff +
			(kv * p.kv_heads + h) * p.head_bytes) + (size_t)tib * p.head_dim / 2;
	__half *sc = reinterpret_cast<__half *>(block + p.soff +
			(kv * p.kv_heads + h) * p.head_sbytes) + (size_t)tib * groups;
	const void *src = kv ? p.v : p.k;
	size_t base = ((size_t)t * p.kv_heads + h) * p.head_dim;

	for (uint32_t g = 0; g < groups; g++) {
		float x = load_io(src, base + g * KV_INT4_GROUP + lane, bf16);
		float amax = warp_max(fmaxf(0.f, fabsf(x)));	/* NaN as 0, as the CPU */
		__half s = __float2half_rn(fminf(__fdiv_rn(amax, 7.0f), 65504.0f));
		int q = quant_int(x, quant_inv(__half2float(s)), 7.0f) + 8;
		int hi = __shfl_down_sync(0xffffffff, q, 1);

		if (!(lane & 1))
			dst[(g * KV_INT4_GROUP + lane) / 2] = (uint8_t)(q | hi << 4);
		if (lane == 0)
			sc[g] = s;
	}
}

/* @N consecutive inputs from element @i (N = 4: one 8-byte load) */
template <int N>
__device__ __forceinline__ void load_n(const void *src, size_t i, bool bf16, float (&f)[N])
{
	if constexpr (N == 4) {
		uint2 w = *reinterpret_cast<const uint2 *>(static_cast<const char *>(src) + i * 2);
		const uint16_t h[4] = { (uint16_t)w.x, (uint16_t)(w.x >> 16),
					(uint16_t)w.y, (uint16_t)(w.y >> 16) };

#pragma unroll
		for (int j = 0; j < 4; j++)
			f[j] = bf16 ? __bfloat162float(__ushort_as_bfloat16(h[j])) :
				      __half2float(__ushort_as_half(h[j]));
	} else {
		f[0] = load_io(src, i, bf16);
	}
}

/* @N bytes at @src (N = 4: one 4-byte access, 4-byte aligned) */
template <int N>
__device__ __forceinline__ void load_bytes(const uint8_t *src, uint8_t (&b)[N])
{
	if constexpr (N == 4) {
		uint32_t w = *reinterpret_cast<const uint32_t *>(src);

#pragma unroll
		for (int j = 0; j < 4; j++)
			b[j] = (uint8_t)(w >> (8 * j));
	} else {
		b[0] = src[0];
	}
}

template <int N>
__device__ __forceinline__ void store_bytes(uint8_t *dst, const uint8_t (&b)[N])
{
	if constexpr (N == 4)
		*reinterpret_cast<uint32_t *>(dst) = b[0] | b[1] << 8 | b[2] << 16 |
						     (uint32_t)b[3] << 24;
	else
		dst[0] = b[0];
}

/*
 * N values per lane and step: 4 where the inputs are 8-byte aligned (one
 * load of 4 inputs, one 4-byte store), else 1.
 */
template <int N>
__global__ void __launch_bounds__(kWarps * 32) kv_quant8_kernel(const quant_params p, bool bf16)
{
	const int lane = threadIdx.x & 31;
	const uint64_t item = (uint64_t)blockIdx.x * kWarps + (threadIdx.x >> 5);
	const uint32_t hd = p.head_dim, bt = p.block_tokens;
	uint32_t t0 = (uint32_t)(item / (2 * p.kv_heads)), tib, t1, t;
	uint32_t kv = (uint32_t)(item / p.kv_heads % 2), h = (uint32_t)(item % p.kv_heads);
	uint64_t frame, f;

	if (t0 >= p.tokens || p.slots[t0] < 0)
		return;
	if (!slot_frame(p, t0, frame, tib)) {
		if (lane == 0 && kv == 0 && h == 0)
			set_status(p.status);
		return;
	}
	/* only the first token of a run works */
	if (t0 && p.slots[t0 - 1] >= 0 && (uint64_t)p.slots[t0 - 1] / bt == frame)
		return;
	bool fresh = false;
	for (t1 = t0; t1 < p.tokens && p.slots[t1] >= 0; t1++) {
		f = (uint64_t)p.slots[t1] / bt;
		if (f != frame)
			break;
		fresh |= (uint64_t)p.slots[t1] % bt == 0;
	}

	char *block = p.arena + frame * p.frame_bytes;
	uint8_t *vals = reinterpret_cast<uint8_t *>(block + p.koff +
			(kv * p.kv_heads + h) * p.head_bytes);
	float *scp = reinterpret_cast<float *>(block + p.soff +
			(kv * p.kv_heads + h) * p.head_sbytes);
	const void *src = kv ? p.v : p.k;
	float amax = 0.f;

#pragma unroll 4
	for (t = t0; t < t1; t++) {
		size_t base = ((size_t)t * p.kv_heads + h) * hd;

		for (uint32_t d = lane * N; d < hd; d += 32 * N) {
			float x[N];

			load_n<N>(src, base + d, bf16, x);
#pragma unroll
			for (int j = 0; j < N; j++)
				amax = fmaxf(amax, fabsf(x[j]));
		}
	}
	amax = warp_max(amax);

	float old = *scp, scale = __fdiv_rn(amax, p.qmax);
	fresh |= !(old >= 0.f && old < INFINITY);
	if (!fresh && !(scale > old)) {
		scale = old;
	} else if (!fresh) {
		float ratio = __fdiv_rn(old, scale);

		for (uint32_t i = lane * N; i < bt * hd; i += 32 * N) {
			uint8_t b[N];

			load_bytes<N>(vals + i, b);
#pragma unroll
			for (int j = 0; j < N; j++)
				b[j] = quant8(p.dtype, dequant8(p.dtype, b[j]), ratio);
			store_bytes<N>(vals + i, b);
		}
	}
	__syncwarp();
	if (lane == 0)
		*scp = scale;

	/*
	 * A lane writes the same dims of every token, so a slot given twice in
	 * a run keeps the later token's values without a barrier.
	 */
	float inv = quant_inv(scale);
#pragma unroll 4
	for (t = t0; t < t1; t++) {
		size_t base = ((size_t)t * p.kv_heads + h) * hd;
		uint8_t *dst = vals + (size_t)((uint64_t)p.slots[t] % bt) * hd;

		for (uint32_t d = lane * N; d < hd; d += 32 * N) {
			float x[N];
			uint8_t b[N];

			load_n<N>(src, base + d, bf16, x);
#pragma unroll
			for (int j = 0; j < N; j++)
				b[j] = quant8(p.dtype, x[j], inv);
			store_bytes<N>(dst + d, b);
		}
	}
}

} /* namespace */

/**
 * kv_append_quant_cuda() - kv_append_cuda() for a quantized pool
 * @a: arguments, checked by kv_append_cuda()
 *
 * Return: 0 once launched, -EINVAL for too many tokens, -EIO.
 */
extern "C" int kv_append_quant_cuda(const struct kv_append_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	uint32_t io = kv_io_dtype(g, a->io_dtype);
	uint64_t items = (uint64_t)a->tokens * 2 * g->kv_heads;
	quant_params p = {};

	if ((items + kWarps - 1) / kWarps > INT32_MAX)
		return -EINVAL;
	p.arena = static_cast<char *>(a->arena.base);
	p.frames = a->arena.frames;
	p.frame_bytes = kv_frame_bytes(g);
	p.koff = (uint64_t)a->layer * kv_layer_bytes(g);
	p.head_bytes = kv_head_bytes(g);
	p.soff = kv_scale_offset(g, a->layer, KV_K, 0);
	p.head_sbytes = kv_head_scale_bytes(g);
	p.k = a->k;
	p.v = a->v;
	p.slots = a->slots;
	p.status = a->status;
	p.tokens = a->tokens;
	p.block_tokens = g->block_tokens;
	p.kv_heads = g->kv_heads;
	p.head_dim = g->head_dim;
	p.dtype = g->dtype;
	p.qmax = g->dtype == KV_DTYPE_FP8_E4M3 ? 448.0f : 127.0f;

	unsigned int grid = (unsigned int)((items + kWarps - 1) / kWarps);
	cudaStream_t st = static_cast<cudaStream_t>(a->stream);
	bool vec = !((uintptr_t)a->k % 8) && !((uintptr_t)a->v % 8) &&
		   !((uintptr_t)a->arena.base % 4);
	if (g->dtype == KV_DTYPE_INT4)
		kv_quant4_kernel<<<grid, kWarps * 32, 0, st>>>(p, io == KV_DTYPE_BF16);
	else if (vec)
		kv_quant8_kernel<4><<<grid, kWarps * 32, 0, st>>>(p, io == KV_DTYPE_BF16);
	else
		kv_quant8_kernel<1><<<grid, kWarps * 32, 0, st>>>(p, io == KV_DTYPE_BF16);
	return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}
