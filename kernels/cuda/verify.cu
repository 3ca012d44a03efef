// SPDX-License-Identifier: MIT
/*
 * Speculative verification on CUDA: greedy acceptance of draft tokens.
 *
 * One launch; one CTA of 256 threads per sequence (a grid-stride loop over
 * sequences past the grid). The CTA first checks the sequence's draft,
 * then takes its logits rows in order: every thread scans a strided slice
 * of the row keeping its best (value, index), the CTA reduces those with
 * warp shuffles and shared memory, and thread 0 compares the argmax with
 * the draft token of the row. The first rejected row (or the row after
 * the last draft) ends the sequence: rows past it are never read.
 *
 * Rows are read in 16-byte vectors when the logits and every row start
 * are 16-byte aligned, element by element otherwise.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/cuda/cuda_internal.h"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr uint32_t kGridMax = 65535;
/* the index of an empty (value, index) pair: loses to every element */
constexpr uint32_t kNone = UINT32_MAX;

/* Element types by their raw bits: a 32-bit word or a 16-bit half of one. */
template <uint32_t DT> struct elem;
template <> struct elem<KV_DTYPE_FP32> {
	typedef uint32_t raw;
	static __device__ __forceinline__ float f(uint32_t w)
	{
		return __uint_as_float(w);
	}
};
template <> struct elem<KV_DTYPE_BF16> {
	typedef uint16_t raw;
	static __device__ __forceinline__ float f(uint32_t h)
	{
		return __uint_as_float(h << 16);
	}
};
template <> struct elem<KV_DTYPE_FP16> {
	typedef uint16_t raw;
	static __device__ __forceinline__ float f(uint32_t h)
	{
		return __half2float(__ushort_as_half((unsigned short)h));
	}
};

/*
 * Whether (av, ai) beats (bv, bi) under torch.argmax's order: NaN above
 * every number, then the larger value, then the smaller index.
 */
__device__ __forceinline__ bool better(float av, uint32_t ai, float bv, uint32_t bi)
{
	bool an = isnan(av), bn = isnan(bv);

	if (an != bn)
		return an;
	if (!an && av != bv)
		return av > bv;
	return ai < bi;
}

__device__ __forceinline__ void take(float v, uint32_t i, float &bv, uint32_t &bi)
{
	if (better(v, i, bv, bi)) {
		bv = v;
		bi = i;
	}
}

/* This thread's best (value, index) of its slice of a row of @vocab elements. */
template <uint32_t DT, bool VEC>
__device__ __forceinline__ void scan_row(const void *row, uint32_t vocab, float &bv,
					 uint32_t &bi)
{
	typedef typename elem<DT>::raw R;

	if (VEC) {
		/* vocab * sizeof(R) % 16 == 0: whole vectors only */
		constexpr uint32_t per = 16 / sizeof(R), per_word = 4 / sizeof(R);
		const uint4 *p = static_cast<const uint4 *>(row);

		for (uint32_t k = threadIdx.x; k < vocab / per; k += kThreads) {
			uint4 u = __ldg(p + k);
			uint32_t w[4] = { u.x, u.y, u.z, u.w };

#pragma unroll
			for (uint32_t q = 0; q < 4; q++)
#pragma unroll
				for (uint32_t e = 0; e < per_word; e++)
					take(elem<DT>::f(per_word == 1 ? w[q] :
							 (w[q] >> (16 * e)) & 0xffffu),
					     k * per + q * per_word + e, bv, bi);
		}
	} else {
		const R *p = static_cast<const R *>(row);

		for (uint32_t i = threadIdx.x; i < vocab; i += kThreads)
			take(elem<DT>::f(__ldg(p + i)), i, bv, bi);
	}
}

/* Lane 0 of the warp ends with the warp's best pair. */
__device__ __forceinline__ void warp_best(float &v, uint32_t &i)
{
#pragma unroll
	for (int o = 16; o; o >>= 1) {
		float ov = __shfl_down_sync(0xffffffffu, v, o);
		uint32_t oi = __shfl_down_sync(0xffffffffu, i, o);

		take(ov, oi, v, i);
	}
}

struct verify_params {
	const char *logits;
	const int32_t *draft;
	const uint32_t *draft_lens;
	int32_t *accepted, *next, *status;
	uint64_t row_bytes;
	uint32_t batch, max_draft, vocab;
};

template <uint32_t DT, bool VEC>
__global__ void __launch_bounds__(kThreads) kv_verify_kernel(const verify_params p)
{
	__shared__ float s_v[kWarps];
	__shared__ uint32_t s_i[kWarps];
	__shared__ int32_t s_tok;
	__shared__ int s_stop;
	const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;

	for (uint32_t b = blockIdx.x; b < p.batch; b += gridDim.x) {
		const int32_t *draft = p.draft + (uint64_t)b * p.max_draft;
		const char *rows = p.logits + (uint64_t)b * (p.max_draft + 1ull) * p.row_bytes;
		uint32_t n = p.draft_lens[b], j;
		int bad = n > p.max_draft;

		for (j = threadIdx.x; !bad && j < n; j += kThreads)
			bad |= draft[j] < 0 || (uint32_t)draft[j] >= p.vocab;
		if (__syncthreads_or(bad)) {
			if (threadIdx.x == 0) {
				p.accepted[b] = 0;
				p.next[b] = -1;
				if (p.status)
					atomicExch(p.status, -EINVAL);
			}
			continue;
		}
		for (j = 0; ; j++) {
			float v = -INFINITY;
			uint32_t i = kNone;

			scan_row<DT, VEC>(rows + j * p.row_bytes, p.vocab, v, i);
			warp_best(v, i);
			if (lane == 0) {
				s_v[warp] = v;
				s_i[warp] = i;
			}
			__syncthreads();
			if (warp == 0) {
				v = lane < kWarps ? s_v[lane] : -INFINITY;
				i = lane < kWarps ? s_i[lane] : kNone;
				warp_best(v, i);
				if (lane == 0) {
					s_tok = (int32_t)i;
					s_stop = j == n || draft[j] != (int32_t)i;
				}
			}
			__syncthreads();
			/*
			 * s_v and s_i are rewritten after this barrier, s_tok and
			 * s_stop only after the next row's first one
			 */
			if (s_stop)
				break;
		}
		if (threadIdx.x == 0) {
			p.accepted[b] = (int32_t)j;
			p.next[b] = s_tok;
		}
	}
}

template <uint32_t DT>
void launch(const verify_params &p, bool vec, unsigned int grid, cudaStream_t st)
{
	if (vec)
		kv_verify_kernel<DT, true><<<grid, kThreads, 0, st>>>(p);
	else
		kv_verify_kernel<DT, false><<<grid, kThreads, 0, st>>>(p);
}

} /* namespace */

/**
 * kv_verify_cuda() - greedy acceptance of speculative drafts on CUDA
 * @a: arguments (see struct kv_verify_args; device-accessible pointers)
 *
 * One launch, one CTA of 256 threads per sequence. A sequence with a bad
 * draft gets accepted 0 and next -1, and -EINVAL in *status when @status
 * is set; the others are verified all the same.
 *
 * Return: 0 once launched (or for an empty batch), -EINVAL for bad
 * arguments (kv_verify_check(): nothing launched), -EIO when the launch
 * fails.
 */
extern "C" int kv_verify_cuda(const struct kv_verify_args *a)
{
	verify_params p = {};
	unsigned int grid;
	bool vec;
	int err = kv_verify_check(a);

	if (err)
		return err;
	if (!a->batch)
		return 0;
	p.logits = static_cast<const char *>(a->logits);
	p.draft = a->draft;
	p.draft_lens = a->draft_lens;
	p.accepted = a->accepted;
	p.next = a->next;
	p.status = a->status;
	p.row_bytes = (uint64_t)a->vocab * kv_dtype_size(a->dtype);
	p.batch = a->batch;
	p.max_draft = a->max_draft;
	p.vocab = a->vocab;

	vec = !((uintptr_t)p.logits % 16) && !(p.row_bytes % 16);
	grid = a->batch < kGridMax ? a->batch : kGridMax;
	cudaStream_t st = static_cast<cudaStream_t>(a->stream);
	if (a->dtype == KV_DTYPE_FP32)
		launch<KV_DTYPE_FP32>(p, vec, grid, st);
	else if (a->dtype == KV_DTYPE_FP16)
		launch<KV_DTYPE_FP16>(p, vec, grid, st);
	else
		launch<KV_DTYPE_BF16>(p, vec, grid, st);
	return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}
