// SPDX-License-Identifier: MIT
/*
 * KV append, block copy, gather and scatter on CUDA. All are pure data
 * movement: each thread moves 16-byte vectors (where sizes and addresses
 * allow), with several loads in flight before the first store, and a
 * 2-D grid (vectors x items) so that no index needs a 64-bit division.
 */
#include <errno.h>
#include <stdint.h>
#include <cuda_runtime.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/cuda/cuda_internal.h"

namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr uint32_t kGridY = 65535;

template <int W> struct vec;
template <> struct vec<16> { typedef uint4 type; };
template <> struct vec<4> { typedef uint32_t type; };
template <> struct vec<2> { typedef uint16_t type; };

__device__ __forceinline__ void set_status(int32_t *status)
{
	if (status)
		atomicExch(status, -EINVAL);
}

/*
 * Append: item y is one token; x covers kv_heads * head_dim elements of it
 * in W-byte vectors. K and V go to the same token slot of the layer.
 */
struct append_params {
	char *arena;
	uint64_t frames;
	uint64_t frame_bytes;
	uint64_t koff;		/* layer's K of head 0 */
	uint64_t voff;		/* V minus K of a head */
	uint64_t head_bytes;
	const char *k, *v;
	const __s64 *slots;
	int32_t *status;
	uint32_t tokens, block_tokens, kv_heads;
	uint32_t row_vecs;	/* vectors per head row */
};

template <int W>
__global__ void __launch_bounds__(kThreads) kv_append_kernel(const append_params p)
{
	typedef typename vec<W>::type V;
	const uint32_t nvec = p.kv_heads * p.row_vecs;

	for (uint32_t t = blockIdx.y; t < p.tokens; t += gridDim.y) {
		int64_t slot = p.slots[t];

		if (slot < 0)
			continue;
		uint64_t frame = (uint64_t)slot / p.block_tokens;
		uint32_t tib = (uint32_t)((uint64_t)slot - frame * p.block_tokens);
		if (frame >= p.frames) {
			if (blockIdx.x == 0 && threadIdx.x == 0)
				set_status(p.status);
			continue;
		}
		char *dst = p.arena + frame * p.frame_bytes + p.koff +
			    (uint64_t)tib * p.row_vecs * W;
		const V *ks = reinterpret_cast<const V *>(p.k) + (size_t)t * nvec;
		const V *vs = reinterpret_cast<const V *>(p.v) + (size_t)t * nvec;

		for (uint32_t i = blockIdx.x * kThreads + threadIdx.x; i < nvec;
		     i += gridDim.x * kThreads) {
			uint32_t h = i / p.row_vecs, j = i - h * p.row_vecs;
			V kv = __ldg(ks + i), vv = __ldg(vs + i);
			V *kd = reinterpret_cast<V *>(dst + h * p.head_bytes) + j;

			*kd = kv;
			*reinterpret_cast<V *>(reinterpret_cast<char *>(kd) + p.voff) = vv;
		}
	}
}

/*
 * Frame moves: item y copies @bytes from source s to destination d, where
 * s = src_base + (src_idx ? src_idx[y] : y) * src_stride (likewise d);
 * an index past @frames (for an arena side) skips the item.
 */
struct move_params {
	const char *src;
	char *dst;
	const uint32_t *src_idx, *dst_idx;
	uint64_t src_stride, dst_stride;
	uint64_t frames;
	uint64_t vecs;		/* W-byte vectors per item */
	int32_t *status;
	uint32_t items;
};

template <int W>
__global__ void __launch_bounds__(kThreads) kv_move_kernel(const move_params p)
{
	typedef typename vec<W>::type V;
	const uint64_t step = (uint64_t)gridDim.x * kThreads * kUnroll;

	for (uint32_t y = blockIdx.y; y < p.items; y += gridDim.y) {
		uint64_t si = p.src_idx ? p.src_idx[y] : y;
		uint64_t di = p.dst_idx ? p.dst_idx[y] : y;

		if ((p.src_idx && si >= p.frames) || (p.dst_idx && di >= p.frames)) {
			if (blockIdx.x == 0 && threadIdx.x == 0)
				set_status(p.status);
			continue;
		}
		if (p.src_idx && p.dst_idx && si == di)
			continue;
		const V *s = reinterpret_cast<const V *>(p.src + si * p.src_stride);
		V *d = reinterpret_cast<V *>(p.dst + di * p.dst_stride);

		for (uint64_t i = (uint64_t)blockIdx.x * kThreads * kUnroll + threadIdx.x;
		     i < p.vecs; i += step) {
			V x[kUnroll];
#pragma unroll
			for (int u = 0; u < kUnroll; u++)
				if (i + u * kThreads < p.vecs)
					x[u] = s[i + u * kThreads];
#pragma unroll
			for (int u = 0; u < kUnroll; u++)
				if (i + u * kThreads < p.vecs)
					d[i + u * kThreads] = x[u];
		}
	}
}

/* x blocks per item so that the whole grid is a few waves of CTAs */
unsigned int grid_x(uint64_t per_item_blocks, uint32_t items)
{
	struct kv_cuda_dev d;
	uint64_t want = kv_cuda_device(&d) ? 1 : (uint64_t)d.sms * 16 / (items ? items : 1) + 1;

	if (want > per_item_blocks)
		want = per_item_blocks;
	if (want < 1)
		want = 1;
	if (want > 65535)
		want = 65535;
	return (unsigned int)want;
}

int aligned(const void *p, uintptr_t a)
{
	return ((uintptr_t)p & (a - 1)) == 0;
}

int move(move_params p, uint64_t bytes, cudaStream_t st)
{
	int w16 = !(bytes % 16) && aligned(p.src, 16) && aligned(p.dst, 16) &&
		  !(p.src_stride % 16) && !(p.dst_stride % 16);
	dim3 grid;

	if (!p.items)
		return 0;
	p.vecs = w16 ? bytes / 16 : bytes / 2;
	grid.y = p.items < kGridY ? p.items : kGridY;
	grid.x = grid_x((p.vecs + kThreads * kUnroll - 1) / (kThreads * kUnroll), grid.y);
	if (w16)
		kv_move_kernel<16><<<grid, kThreads, 0, st>>>(p);
	else
		kv_move_kernel<2><<<grid, kThreads, 0, st>>>(p);
	return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}

} /* namespace */

/**
 * kv_append_cuda() - write new tokens' K and V into their slots on CUDA
 * @a: arguments (see struct kv_append_args; device-accessible pointers)
 *
 * Quantized pools quantize (kernels/cuda/quant.cu).
 *
 * Return: 0 once launched, -EINVAL, -EIO when the launch fails.
 */
extern "C" int kv_append_cuda(const struct kv_append_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	uint64_t rowb = kv_row_bytes(g);
	append_params p = {};
	int w;
	int err = kv_append_check(a);

	if (err)
		return err;
	if (!a->tokens)
		return 0;
	if (kv_dtype_quantized(g->dtype))
		return kv_append_quant_cuda(a);
	p.arena = static_cast<char *>(a->arena.base);
	p.frames = a->arena.frames;
	p.frame_bytes = kv_frame_bytes(g);
	p.koff = (uint64_t)a->layer * kv_layer_bytes(g);
	p.voff = (uint64_t)g->kv_heads * kv_head_bytes(g);
	p.head_bytes = kv_head_bytes(g);
	p.k = static_cast<const char *>(a->k);
	p.v = static_cast<const char *>(a->v);
	p.slots = a->slots;
	p.status = a->status;
	p.tokens = a->tokens;
	p.block_tokens = g->block_tokens;
	p.kv_heads = g->kv_heads;

	w = !(rowb % 16) && aligned(p.arena, 16) && aligned(p.k, 16) &&
	    aligned(p.v, 16) ? 16 : !(rowb % 4) && aligned(p.arena, 4) &&
	    aligned(p.k, 4) && aligned(p.v, 4) ? 4 : 2;
	p.row_vecs = (uint32_t)(rowb / w);

	uint64_t nvec = (uint64_t)p.kv_heads * p.row_vecs;
	dim3 grid;
	grid.y = a->tokens < kGridY ? a->tokens : kGridY;
	grid.x = grid_x((nvec + kThreads - 1) / kThreads, grid.y);
	cudaStream_t st = static_cast<cudaStream_t>(a->stream);
	if (w == 16)
		kv_append_kernel<16><<<grid, kThreads, 0, st>>>(p);
	else if (w == 4)
		kv_append_kernel<4><<<grid, kThreads, 0, st>>>(p);
	else
		kv_append_kernel<2><<<grid, kThreads, 0, st>>>(p);
	return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}

/**
 * kv_copy_blocks_cuda() - copy whole blocks between frames on CUDA
 * @a: arguments (see struct kv_copy_args; device-accessible pointers)
 *
 * Return: 0 once launched, -EINVAL, -EIO when the launch fails.
 */
extern "C" int kv_copy_blocks_cuda(const struct kv_copy_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	move_params p = {};
	int err = kv_copy_check(a);

	if (err)
		return err;
	p.src = static_cast<const char *>(a->arena.base);
	p.dst = static_cast<char *>(a->arena.base);
	p.src_idx = a->src;
	p.dst_idx = a->dst;
	p.src_stride = p.dst_stride = kv_frame_bytes(g);
	p.frames = a->arena.frames;
	p.status = a->status;
	p.items = a->pairs;
	return move(p, kv_block_bytes(g), static_cast<cudaStream_t>(a->stream));
}

static int kv_gather_common(const struct kv_gather_args *a, bool gather)
{
	const struct kv_geometry *g = &a->arena.g;
	move_params p = {};
	int err = kv_gather_check(a);

	if (err)
		return err;
	if (gather) {
		p.src = static_cast<const char *>(a->arena.base);
		p.src_idx = a->frames;
		p.src_stride = kv_frame_bytes(g);
		p.dst = static_cast<char *>(a->buf);
		p.dst_stride = kv_block_bytes(g);
	} else {
		p.src = static_cast<const char *>(a->buf);
		p.src_stride = kv_block_bytes(g);
		p.dst = static_cast<char *>(a->arena.base);
		p.dst_idx = a->frames;
		p.dst_stride = kv_frame_bytes(g);
	}
	p.frames = a->arena.frames;
	p.status = a->status;
	p.items = a->nframes;
	return move(p, kv_block_bytes(g), static_cast<cudaStream_t>(a->stream));
}

/**
 * kv_gather_cuda() - copy frames into one contiguous buffer on CUDA
 * @a: arguments (see struct kv_gather_args); @buf may be device memory or
 *     mapped pinned host memory
 *
 * Return: 0 once launched, -EINVAL, -EIO when the launch fails.
 */
extern "C" int kv_gather_cuda(const struct kv_gather_args *a)
{
	return kv_gather_common(a, true);
}

/**
 * kv_scatter_cuda() - copy one contiguous buffer out to frames on CUDA
 * @a: arguments (see struct kv_gather_args)
 *
 * Return: 0 once launched, -EINVAL, -EIO when the launch fails.
 */
extern "C" int kv_scatter_cuda(const struct kv_gather_args *a)
{
	return kv_gather_common(a, false);
}
