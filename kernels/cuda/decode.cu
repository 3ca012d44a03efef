// SPDX-License-Identifier: MIT
/*
 * Paged decode attention on CUDA (sm_80 and later; built for sm_90a).
 *
 * One CTA of four warps takes one (sequence, kv head, split of the
 * context); the query heads of the GQA group that share the kv head are
 * handled together, so each K and V byte is read from memory once. A warp
 * takes 16-token tiles of its split in turn and folds them into a running
 * softmax; the four warps are merged in shared memory at the end, and the
 * splits of a sequence by a second, small kernel.
 *
 * The products run on the tensor cores (mma.sync m16n8k16, fp32
 * accumulation) with the tokens as the M side: S^T = K Q^T and
 * O^T = V^T P^T. The contraction index of S^T (head_dim) and the M index of
 * O^T (head_dim again) may be permuted freely, so every lane loads whole
 * 16-byte vectors of K and V rows straight from the arena into the
 * fragments it needs (no shared-memory staging, no ldmatrix), and P^T
 * reaches its fragment through one movmatrix transpose. Loads of tile t+1's
 * K are in flight while tile t is computed.
 */
#include <errno.h>
#include <stdint.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/attn.cuh"

/*
 * Kernel variant of the (fp16/bf16, 8-head chunk) decode, for measuring:
 * bit 0 adds an L2 256-byte prefetch hint to the KV loads, bit 1 caps
 * registers for four CTAs per SM, bit 2 picks splits for about four waves
 * of CTAs (kv_cuda_pick_splits_waves()) instead of the fewest splits that
 * fill one (kv_cuda_pick_splits()), bit 4 (head_dim 64 and 128, sm_90,
 * block_tokens % 16 == 0; else ignored) streams tiles through shared
 * memory with bulk copies (variant 19, whatever the other bits), bit 6
 * (head_dim 64 and 128) takes one CTA of 16 warps per (sequence, kv head)
 * without splits when those CTAs fill the SMs once (variant 67, see
 * one_cta_fills(); else the other bits apply).
 * Negative: KV_DECODE_VARIANT_DEFAULT.
 */
int kv_cuda_decode_variant = -1;

#define KV_DECODE_VARIANT_DEFAULT 67

namespace {

constexpr int kWarps = 4;
constexpr int kTile = 16;

struct decode_params {
	kv_layer_ref kv;	/* the layer's K and V in the arena */
	const void *q;
	void *out;
	const uint32_t *table;
	const uint32_t *ctx_lens;
	int32_t *status;
	float *ws;
	uint32_t q_heads, kv_heads, group, hchunks, heads_per_chunk;
	uint32_t block_tokens, stride, window;
	uint32_t nsplit, tiles_per_split;
	float scale_log2;
};

__device__ __forceinline__ uint32_t transpose8x8(uint32_t x)
{
	uint32_t y;

	asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n"
		     : "=r"(y) : "r"(x));
	return y;
}

template <int VAR>
__device__ __forceinline__ uint4 ld_stream(const void *p)
{
	uint4 v;

	if (VAR & 1)
		asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
			     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
	else
		asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
			     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
	return v;
}

__device__ __forceinline__ uint32_t word(const uint4 &v, int i)
{
	return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

__device__ __forceinline__ void set_status(int32_t *status)
{
	if (status)
		atomicExch(status, -EINVAL);
}

/*
 * Bulk copies (sm_90): a 16-token tile of one head's K or V is contiguous
 * in its block when block_tokens % 16 == 0, so it is one cp.async.bulk into
 * shared memory, completing on an mbarrier (the transaction count is the
 * bytes to arrive).
 */
__device__ __forceinline__ __attribute__((unused)) uint32_t smem_addr(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void bar_init(uint64_t *bar)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" :: "r"(smem_addr(bar)));
	asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

/* arm @bar for @bytes (0: complete at once, nothing to copy) */
__device__ __forceinline__ void bar_expect(uint64_t *bar, uint32_t bytes)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
		     :: "r"(smem_addr(bar)), "r"(bytes) : "memory");
#endif
}

__device__ __forceinline__ void bar_wait(uint64_t *bar, uint32_t parity)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("{\n.reg .pred p;\n"
		     "W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
		     "@!p bra W;\n}\n" :: "r"(smem_addr(bar)), "r"(parity) : "memory");
#endif
}

__device__ __forceinline__ void bulk_load(void *dst, const void *src, uint32_t bytes,
					  uint64_t *bar)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes "
		     "[%0], [%1], %2, [%3];\n"
		     :: "r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar))
		     : "memory");
#endif
}

/* shared memory read by this thread before is free for the async proxy */
__device__ __forceinline__ void fence_async_smem(void)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/*
 * Where the K (or V) row of token @tok lives; NULL when the token is masked
 * or its frame lies past the arena (then *bad is set). @frame is the tile's
 * frame when block_tokens is a multiple of 16 (a tile never straddles two
 * blocks then, and the frame is looked up once per tile), else ~0u.
 */
__device__ __forceinline__ const char *row_ptr(const decode_params &p,
					       const uint32_t *table,
					       uint32_t frame, uint32_t tok,
					       uint32_t lo, uint32_t hi,
					       uint64_t off, uint32_t rowb,
					       bool &bad)
{
	uint32_t blk, f;

	if (tok < lo || tok >= hi)
		return nullptr;
	if (frame != ~0u) {
		f = frame;
		blk = tok / p.block_tokens;
	} else {
		blk = tok / p.block_tokens;
		f = table[blk];
	}
	if (f >= p.kv.frames) {
		bad = true;
		return nullptr;
	}
	return p.kv.arena + f * p.kv.frame_bytes + off +
	       (uint64_t)(tok - blk * p.block_tokens) * rowb;
}

/* the tile's frame on the fast path (see row_ptr()), else ~0u */
__device__ __forceinline__ uint32_t tile_frame(const decode_params &p,
					       const uint32_t *table,
					       uint32_t t0, uint32_t hi)
{
	if (p.block_tokens % kTile || t0 >= hi)
		return ~0u;
	return table[t0 / p.block_tokens];
}

/*
 * Per-lane loads of one tile: the K rows of tokens r and r+8, the V rows of
 * tokens 2c, 2c+1, 2c+8, 2c+9 (r = lane / 4, c = lane % 4), 16 bytes each.
 */
template <int HD, int VAR>
__device__ __forceinline__ void load_k(const decode_params &p,
				       const uint32_t *table, uint32_t frame,
				       uint32_t t0, uint32_t lo, uint32_t hi,
				       uint64_t koff, int lane, bool &bad,
				       uint4 (&k)[2][HD / 32])
{
	const uint32_t rowb = HD * 2;
	int r = lane >> 2, c = lane & 3;

#pragma unroll
	for (int half = 0; half < 2; half++) {
		const char *row = row_ptr(p, table, frame, t0 + r + 8 * half, lo,
					  hi, koff, rowb, bad);
#pragma unroll
		for (int kk = 0; kk < HD / 32; kk++)
			k[half][kk] = row ? ld_stream<VAR>(row + (kk * 4 + c) * 16)
					  : make_uint4(0, 0, 0, 0);
	}
}

template <int HD, int VAR>
__device__ __forceinline__ void load_v(const decode_params &p,
				       const uint32_t *table, uint32_t frame,
				       uint32_t t0, uint32_t lo, uint32_t hi,
				       uint64_t voff, int lane, bool &bad,
				       uint4 (&v)[4][HD / 64])
{
	const uint32_t rowb = HD * 2;
	int r = lane >> 2, c = lane & 3;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		uint32_t tok = t0 + 2 * c + (i & 1) + 8 * (i >> 1);
		const char *row = row_ptr(p, table, frame, tok, lo, hi, voff,
					  rowb, bad);
#pragma unroll
		for (int cg = 0; cg < HD / 64; cg++)
			v[i][cg] = row ? ld_stream<VAR>(row + (cg * 8 + r) * 16)
				       : make_uint4(0, 0, 0, 0);
	}
}

/* bytes of one 16-token tile of one head's K (or V) */
template <int HD> __host__ __device__ constexpr uint32_t tile_bytes() { return kTile * HD * 2; }
/* bulk-copy stages per warp: 24 KiB of tiles in flight per warp */
template <int HD> __host__ __device__ constexpr int tma_stages() { return HD == 64 ? 6 : 3; }

/*
 * Start the bulk copies of the tile at @t0 (K, then V) into @dst, on @bar.
 * A frame past the arena copies nothing, completes @bar and sets *bad.
 */
template <int HD>
__device__ __forceinline__ void tma_issue(const decode_params &p,
					  const uint32_t *table, uint32_t t0,
					  uint64_t koff, char *dst, uint64_t *bar,
					  bool &bad)
{
	uint32_t blk = t0 / p.block_tokens, f = table[blk];
	const char *src;

	if (f >= p.kv.frames) {
		bad = true;
		bar_expect(bar, 0);
		return;
	}
	src = p.kv.arena + f * p.kv.frame_bytes + koff +
	      (uint64_t)(t0 - blk * p.block_tokens) * HD * 2;
	bar_expect(bar, 2 * tile_bytes<HD>());
	bulk_load(dst, src, tile_bytes<HD>(), bar);
	bulk_load(dst + tile_bytes<HD>(), src + p.kv.voff, tile_bytes<HD>(), bar);
}

/* load_k()/load_v() from a tile in shared memory; masked rows read zero */
template <int HD>
__device__ __forceinline__ void smem_frags(const char *sk, uint32_t t0,
					   uint32_t lo, uint32_t hi, int lane,
					   uint4 (&k)[2][HD / 32],
					   uint4 (&v)[4][HD / 64])
{
	const char *sv = sk + tile_bytes<HD>();
	int r = lane >> 2, c = lane & 3;

#pragma unroll
	for (int half = 0; half < 2; half++) {
		uint32_t row = r + 8 * half;
		bool ok = t0 + row >= lo && t0 + row < hi;
#pragma unroll
		for (int kk = 0; kk < HD / 32; kk++)
			k[half][kk] = ok ? *reinterpret_cast<const uint4 *>(
						   sk + row * HD * 2 + (kk * 4 + c) * 16)
					 : make_uint4(0, 0, 0, 0);
	}
#pragma unroll
	for (int i = 0; i < 4; i++) {
		uint32_t row = 2 * c + (i & 1) + 8 * (i >> 1);
		bool ok = t0 + row >= lo && t0 + row < hi;
#pragma unroll
		for (int cg = 0; cg < HD / 64; cg++)
			v[i][cg] = ok ? *reinterpret_cast<const uint4 *>(
						sv + row * HD * 2 + (cg * 8 + r) * 16)
				      : make_uint4(0, 0, 0, 0);
	}
}

/*
 * The split-decode kernel. NT n-tiles of 8 query heads each (a chunk of
 * up to 8*NT heads of one group); PIPE keeps the next tile's K loads in
 * flight during the current tile (more registers). VAR bit 4 (sm_90,
 * block_tokens % 16 == 0): each warp streams its tiles through a ring of
 * tma_stages() bulk copies into shared memory instead (PIPE is then off).
 */
template <typename T, int HD, int NT, bool PIPE, int VAR>
__global__ void __launch_bounds__(((VAR & 64) ? 16 : kWarps) * 32,
				  (VAR & 64) ? 1 : (VAR & 16) ? 2 : (VAR & 2) ? 4 : 1)
kv_decode_kernel(const decode_params p)
{
	constexpr bool TMA = (VAR & 16) != 0;
	constexpr int S = tma_stages<HD>();
	constexpr int W = (VAR & 64) ? 16 : kWarps;	/* warps */
	extern __shared__ float smem[];
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int r = lane >> 2, c = lane & 3;
	const uint32_t split = blockIdx.x, b = blockIdx.z;
	const uint32_t h = blockIdx.y / p.hchunks, chunk = blockIdx.y % p.hchunks;
	const uint32_t row0 = chunk * p.heads_per_chunk;
	const uint32_t nrows = min(p.heads_per_chunk, p.group - row0);
	const uint32_t ctx = p.ctx_lens[b];
	const uint32_t *table = p.table + (size_t)b * p.stride;
	const uint64_t koff = p.kv.koff + h * p.kv.head_bytes;
	const uint64_t voff = koff + p.kv.voff;
	bool bad = (uint64_t)ctx > (uint64_t)p.stride * p.block_tokens;

#if __CUDA_ARCH__ >= 900
	cudaTriggerProgrammaticLaunchCompletion();
#endif

	/* tokens of this split: [lo, hi), tiles aligned to multiples of 16 */
	uint32_t start = p.window && ctx > p.window ? ctx - p.window : 0;
	uint32_t tile0 = start / kTile + split * p.tiles_per_split;
	uint32_t lo = max(start, tile0 * kTile);
	uint32_t hi = min(ctx, (tile0 + p.tiles_per_split) * kTile);
	if (bad)
		hi = 0;
	int ntiles = hi > lo ? (int)((hi - 1) / kTile - tile0 + 1) : 0;

	/* queries: B fragments of Q^T, lane holds head r of each n-tile */
	uint4 q[NT][HD / 32];
	const T *qbase = static_cast<const T *>(p.q) +
			 ((size_t)b * p.q_heads + (size_t)h * p.group + row0) * HD;
#pragma unroll
	for (int nt = 0; nt < NT; nt++) {
		uint32_t row = nt * 8 + r;
#pragma unroll
		for (int kk = 0; kk < HD / 32; kk++)
			q[nt][kk] = row < nrows ?
				*reinterpret_cast<const uint4 *>(qbase + (size_t)row * HD + kk * 32 + c * 8) :
				make_uint4(0, 0, 0, 0);
	}

	float o[NT][HD / 16][4];
	float m[NT][2], l[NT][2];
#pragma unroll
	for (int nt = 0; nt < NT; nt++) {
#pragma unroll
		for (int mt = 0; mt < HD / 16; mt++)
			o[nt][mt][0] = o[nt][mt][1] = o[nt][mt][2] = o[nt][mt][3] = 0.f;
		m[nt][0] = m[nt][1] = -INFINITY;
		l[nt][0] = l[nt][1] = 0.f;
	}

	/*
	 * With PIPE, tile t+1's K is loaded as soon as tile t's S is done and
	 * its V as soon as tile t's PV is done: every load has most of an
	 * iteration to arrive, at no extra registers.
	 */
	uint4 kr[2][HD / 32];
	uint4 vr[4][HD / 64];
	char *ring = reinterpret_cast<char *>(smem) + (size_t)warp * S * 2 * tile_bytes<HD>();
	uint64_t *bars = reinterpret_cast<uint64_t *>(reinterpret_cast<char *>(smem) +
		(size_t)W * S * 2 * tile_bytes<HD>()) + warp * S;
	if (TMA) {
		if (lane == 0)
			for (int j = 0; j < S; j++)
				bar_init(&bars[j]);
		__syncwarp();
		if (lane == 0)
			for (int j = 0; j < S && warp + j * W < ntiles; j++)
				tma_issue<HD>(p, table, (tile0 + warp + j * W) * kTile, koff,
					      ring + j * 2 * tile_bytes<HD>(), &bars[j], bad);
	}
	uint32_t frame = !TMA && warp < ntiles ?
			 tile_frame(p, table, (tile0 + warp) * kTile, hi) : ~0u;
	if (PIPE && warp < ntiles) {
		load_k<HD, VAR>(p, table, frame, (tile0 + warp) * kTile, lo, hi, koff, lane, bad, kr);
		load_v<HD, VAR>(p, table, frame, (tile0 + warp) * kTile, lo, hi, voff, lane, bad, vr);
	}

	for (int it = warp, k = 0; it < ntiles; it += W, k++) {
		uint32_t t0 = (tile0 + it) * kTile;
		bool more = it + W < ntiles;
		uint32_t fnext = !TMA && more ? tile_frame(p, table, t0 + W * kTile, hi) : ~0u;

		if (TMA) {
			/* this tile's stage: wait, take the fragments, refill */
			char *stage = ring + (k % S) * 2 * tile_bytes<HD>();

			bar_wait(&bars[k % S], (k / S) & 1);
			smem_frags<HD>(stage, t0, lo, hi, lane, kr, vr);
			__syncwarp();
			if (lane == 0 && it + S * W < ntiles) {
				fence_async_smem();
				tma_issue<HD>(p, table, t0 + S * W * kTile, koff, stage,
					      &bars[k % S], bad);
			}
		} else if (!PIPE) {
			load_k<HD, VAR>(p, table, frame, t0, lo, hi, koff, lane, bad, kr);
			load_v<HD, VAR>(p, table, frame, t0, lo, hi, voff, lane, bad, vr);
		}

		/* S^T = K Q^T: rows tokens r, r+8; columns heads 2c, 2c+1 */
		float s[NT][4];
#pragma unroll
		for (int nt = 0; nt < NT; nt++) {
			s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
			for (int kk = 0; kk < HD / 32; kk++) {
				kv_mma<T>::mma(s[nt], kr[0][kk].x, kr[1][kk].x, kr[0][kk].y,
					   kr[1][kk].y, q[nt][kk].x, q[nt][kk].y);
				kv_mma<T>::mma(s[nt], kr[0][kk].z, kr[1][kk].z, kr[0][kk].w,
					   kr[1][kk].w, q[nt][kk].z, q[nt][kk].w);
			}
		}
		if (PIPE && more)
			load_k<HD, VAR>(p, table, fnext, t0 + W * kTile, lo, hi, koff,
					lane, bad, kr);

		/* online softmax per head (column); tokens spread over r */
		bool ok0 = t0 + r >= lo && t0 + r < hi;
		bool ok1 = t0 + r + 8 >= lo && t0 + r + 8 < hi;
		uint32_t pb[NT][2];
#pragma unroll
		for (int nt = 0; nt < NT; nt++) {
			float x[4], corr[2];
#pragma unroll
			for (int e = 0; e < 2; e++) {
				x[e] = ok0 ? s[nt][e] * p.scale_log2 : -INFINITY;
				x[2 + e] = ok1 ? s[nt][2 + e] * p.scale_log2 : -INFINITY;
				float mx = fmaxf(x[e], x[2 + e]);
				mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 4));
				mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 8));
				mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 16));
				float mn = fmaxf(m[nt][e], mx);
				float ref = mn == -INFINITY ? 0.f : mn;
				corr[e] = exp2f(m[nt][e] - ref);
				m[nt][e] = mn;
				x[e] = exp2f(x[e] - ref);
				x[2 + e] = exp2f(x[2 + e] - ref);
				l[nt][e] = l[nt][e] * corr[e] + x[e] + x[2 + e];
			}
#pragma unroll
			for (int mt = 0; mt < HD / 16; mt++) {
				o[nt][mt][0] *= corr[0];
				o[nt][mt][1] *= corr[1];
				o[nt][mt][2] *= corr[0];
				o[nt][mt][3] *= corr[1];
			}
			pb[nt][0] = transpose8x8(kv_mma<T>::pack(x[0], x[1]));
			pb[nt][1] = transpose8x8(kv_mma<T>::pack(x[2], x[3]));
		}

		/* O^T += V^T P^T; m-tile (cg, ip): row r is dim (cg*8+r)*8+2ip */
#pragma unroll
		for (int cg = 0; cg < HD / 64; cg++) {
#pragma unroll
			for (int ip = 0; ip < 4; ip++) {
				uint32_t a0 = __byte_perm(word(vr[0][cg], ip), word(vr[1][cg], ip), 0x5410);
				uint32_t a1 = __byte_perm(word(vr[0][cg], ip), word(vr[1][cg], ip), 0x7632);
				uint32_t a2 = __byte_perm(word(vr[2][cg], ip), word(vr[3][cg], ip), 0x5410);
				uint32_t a3 = __byte_perm(word(vr[2][cg], ip), word(vr[3][cg], ip), 0x7632);
#pragma unroll
				for (int nt = 0; nt < NT; nt++)
					kv_mma<T>::mma(o[nt][cg * 4 + ip], a0, a1, a2, a3,
						   pb[nt][0], pb[nt][1]);
			}
		}
		if (PIPE && more)
			load_v<HD, VAR>(p, table, fnext, t0 + W * kTile, lo, hi, voff,
					lane, bad, vr);
		frame = fnext;
	}

	/* merge the four warps: per head, max, sum and output rows in smem */
	bad = __syncthreads_or(bad);
	float *sm = smem;				/* [warps][rows] */
	float *sl = sm + W * 8 * NT;		/* [warps][rows] */
	float *so = sl + W * 8 * NT;		/* [warps][rows][HD] */
#pragma unroll
	for (int nt = 0; nt < NT; nt++) {
#pragma unroll
		for (int e = 0; e < 2; e++) {
			float sum = l[nt][e];
			sum += __shfl_xor_sync(0xffffffff, sum, 4);
			sum += __shfl_xor_sync(0xffffffff, sum, 8);
			sum += __shfl_xor_sync(0xffffffff, sum, 16);
			int row = nt * 8 + 2 * c + e;
			if (r == 0) {
				sm[warp * 8 * NT + row] = m[nt][e];
				sl[warp * 8 * NT + row] = sum;
			}
#pragma unroll
			for (int cg = 0; cg < HD / 64; cg++) {
				float4 *dst = reinterpret_cast<float4 *>(
					so + ((size_t)warp * 8 * NT + row) * HD + (cg * 8 + r) * 8);
				dst[0] = make_float4(o[nt][cg * 4 + 0][e], o[nt][cg * 4 + 0][2 + e],
						     o[nt][cg * 4 + 1][e], o[nt][cg * 4 + 1][2 + e]);
				dst[1] = make_float4(o[nt][cg * 4 + 2][e], o[nt][cg * 4 + 2][2 + e],
						     o[nt][cg * 4 + 3][e], o[nt][cg * 4 + 3][2 + e]);
			}
		}
	}
	__syncthreads();

	const size_t qh0 = (size_t)b * p.q_heads + (size_t)h * p.group + row0;
	for (uint32_t i = threadIdx.x; i < nrows * HD; i += W * 32) {
		uint32_t row = i / HD, d = i % HD;
		float mx = -INFINITY, sum = 0.f, acc = 0.f;

		for (int w = 0; w < W; w++)
			mx = fmaxf(mx, sm[w * 8 * NT + row]);
		for (int w = 0; w < W; w++) {
			float mw = sm[w * 8 * NT + row];
			float wt = mw == -INFINITY ? 0.f : exp2f(mw - mx);
			sum += wt * sl[w * 8 * NT + row];
			acc += wt * so[((size_t)w * 8 * NT + row) * HD + d];
		}
		if (bad) {
			sum = NAN;
			acc = NAN;
		}
		if (p.nsplit == 1) {
			float v = bad ? NAN : sum > 0.f ? acc / sum : 0.f;
			kv_mma<T>::store(static_cast<T *>(p.out) + (qh0 + row) * HD + d, v);
		} else {
			size_t rec = (qh0 + row) * p.nsplit + split;
			p.ws[rec * HD + d] = acc;
			if (d == 0) {
				float *ml = p.ws + (size_t)gridDim.z * p.q_heads * p.nsplit * HD;
				ml[rec * 2] = mx;
				ml[rec * 2 + 1] = sum;
			}
		}
	}
	if (bad && threadIdx.x == 0)
		set_status(p.status);
}

/* Merge the splits of each (sequence, query head). */
template <typename T, int HD>
__global__ void __launch_bounds__(HD)
kv_decode_combine(const decode_params p, uint32_t batch)
{
	const size_t qh = blockIdx.x;
	const uint32_t d = threadIdx.x;
	const float *ml = p.ws + (size_t)batch * p.q_heads * p.nsplit * HD;
	float mx = -INFINITY, sum = 0.f, acc = 0.f;

#if __CUDA_ARCH__ >= 900
	cudaGridDependencySynchronize();
#endif
	for (uint32_t s = 0; s < p.nsplit; s++)
		mx = fmaxf(mx, ml[(qh * p.nsplit + s) * 2]);
	for (uint32_t s = 0; s < p.nsplit; s++) {
		size_t rec = qh * p.nsplit + s;
		float ms = ml[rec * 2];
		float wt = ms == -INFINITY ? 0.f : exp2f(ms - mx);
		sum += wt * ml[rec * 2 + 1];
		acc += wt * p.ws[rec * HD + d];
	}
	kv_mma<T>::store(static_cast<T *>(p.out) + qh * HD + d,
		     sum > 0.f || sum != sum ? acc / sum : 0.f);
}

struct launch_cfg {
	int occupancy;		/* CTAs per SM */
	size_t smem;
};

template <typename T, int HD, int NT, int VAR>
int launch(const decode_params &p, uint32_t batch, bool want_split,
	   uint64_t ws_bytes, uint32_t max_tiles, uint32_t split_bound,
	   cudaStream_t st)
{
	constexpr bool TMA = (VAR & 16) != 0;
	constexpr int W = (VAR & 64) ? 16 : kWarps;	/* warps per CTA */
	constexpr bool PIPE = !TMA && HD * NT <= 256;
	auto kern = kv_decode_kernel<T, HD, NT, PIPE, VAR>;
	static launch_cfg cfg[KV_CUDA_MAX_DEVICES];
	int dev = 0, sms = 0;
	decode_params q = p;

	if (cudaGetDevice(&dev) != cudaSuccess || dev >= KV_CUDA_MAX_DEVICES)
		return -ENODEV;
	if (!cfg[dev].occupancy) {
		size_t smem = (size_t)W * 8 * NT * (HD + 2) * sizeof(float);
		size_t ring = (size_t)kWarps * tma_stages<HD>() * (2 * tile_bytes<HD>() + 8);
		int occ = 0;

		if (TMA && ring > smem)
			smem = ring;

		if (smem > 48 * 1024 &&
		    cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
					 (int)smem) != cudaSuccess)
			return -EIO;
		if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, W * 32,
								  smem) != cudaSuccess || !occ)
			return -EIO;
		cfg[dev].smem = smem;
		cfg[dev].occupancy = occ;
	}
	if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
		return -EIO;

	/*
	 * Split heuristic: enough CTAs to fill every SM's resident slots, with
	 * the number of waves rounded so that the last wave is nearly full;
	 * each split keeps at least one tile per warp.
	 */
	uint32_t base = batch * p.kv_heads * p.hchunks;
	uint32_t slots = (uint32_t)sms * cfg[dev].occupancy;
	uint32_t nsplit = 1;
	if (want_split && !(VAR & 64)) {
		uint32_t cap = max_tiles / W;
		if (cap > split_bound)
			cap = split_bound;
		if (kv_cuda_decode_variant >= 0 ? (kv_cuda_decode_variant & 4) :
		    (KV_DECODE_VARIANT_DEFAULT & 4))
			nsplit = kv_cuda_pick_splits_waves(base, slots,
							   max_tiles / (2 * W) < cap ?
							   max_tiles / (2 * W) : cap);
		else
			nsplit = kv_cuda_pick_splits(base, slots, cap);
		if (nsplit > 1 && (uint64_t)batch * p.q_heads * nsplit * (HD + 2) * 4 > ws_bytes)
			nsplit = 1;
	}
	q.nsplit = nsplit;
	q.tiles_per_split = (max_tiles + nsplit - 1) / nsplit;

	dim3 grid(nsplit, p.kv_heads * p.hchunks, batch);
	kern<<<grid, W * 32, cfg[dev].smem, st>>>(q);
	if (cudaGetLastError() != cudaSuccess)
		return -EIO;
	if (nsplit > 1) {
		/*
		 * The combine is launched as a programmatic dependent launch: it
		 * is scheduled while the split kernel runs and waits for its
		 * results in cudaGridDependencySynchronize().
		 */
		cudaLaunchConfig_t lc = {};
		cudaLaunchAttribute attr[1];

		attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
		attr[0].val.programmaticStreamSerializationAllowed = 1;
		lc.gridDim = dim3(batch * p.q_heads);
		lc.blockDim = dim3(HD);
		lc.stream = st;
		lc.attrs = attr;
		lc.numAttrs = 1;
		if (cudaLaunchKernelEx(&lc, kv_decode_combine<T, HD>, q, batch) != cudaSuccess)
			return -EIO;
	}
	return 0;
}

/* bulk copies need sm_90 and tiles that never straddle two blocks */
static bool tma_usable(const decode_params &p)
{
	int dev = 0, major = 0;

	if (p.block_tokens % kTile || cudaGetDevice(&dev) != cudaSuccess ||
	    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) !=
	    cudaSuccess)
		return false;
	return major >= 9;
}

/*
 * One CTA of 16 warps per (sequence, kv head) when those CTAs fill the
 * SMs once (85% or more, no more than one each) and every warp gets two
 * tiles: no split, so no combine launch and no partial results.
 */
static bool one_cta_fills(const decode_params &p, uint32_t batch, uint32_t max_tiles)
{
	uint64_t base = (uint64_t)batch * p.kv_heads * p.hchunks;
	int dev = 0, sms = 0;

	if (cudaGetDevice(&dev) != cudaSuccess ||
	    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
		return false;
	return base <= (uint64_t)sms && base * 100 >= 85ull * sms && max_tiles >= 2 * 16;
}

template <typename T, int HD, int NT>
int launch_var(const decode_params &p, uint32_t batch, bool want_split,
	       uint64_t ws_bytes, uint32_t max_tiles, uint32_t bound,
	       cudaStream_t st)
{
	int v = kv_cuda_decode_variant < 0 ? KV_DECODE_VARIANT_DEFAULT :
		kv_cuda_decode_variant;

	if constexpr (HD <= 128) {
		if ((v & 64) && one_cta_fills(p, batch, max_tiles))
			return launch<T, HD, NT, 67>(p, batch, want_split, ws_bytes, max_tiles,
						     bound, st);
		if ((v & 16) && tma_usable(p))
			return launch<T, HD, NT, 19>(p, batch, want_split, ws_bytes, max_tiles,
						     bound, st);
	}

	/* the register cap only pays where the kernel fits in 128 registers */
	if constexpr (HD > 128) {
		if (v & 1)
			return launch<T, HD, NT, 1>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
		return launch<T, HD, NT, 0>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
	} else {
		switch (v & 3) {
		case 0:
			return launch<T, HD, NT, 0>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
		case 1:
			return launch<T, HD, NT, 1>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
		case 2:
			return launch<T, HD, NT, 2>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
		default:
			return launch<T, HD, NT, 3>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
		}
	}
}

template <typename T, int HD>
int launch_hd(const decode_params &p, uint32_t batch, bool want_split,
	      uint64_t ws_bytes, uint32_t max_tiles, uint32_t bound,
	      cudaStream_t st, uint32_t nt)
{
	if (nt == 1)
		return launch_var<T, HD, 1>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
	if (nt == 2)
		return launch<T, HD, 2, KV_DECODE_VARIANT_DEFAULT & 1>(p, batch, want_split,
								   ws_bytes, max_tiles, bound, st);
	if constexpr (HD <= 128)
		return launch<T, HD, 4, KV_DECODE_VARIANT_DEFAULT & 1>(p, batch, want_split,
								   ws_bytes, max_tiles, bound, st);
	return -EINVAL;
}

template <typename T>
int launch_t(const decode_params &p, uint32_t batch, bool want_split,
	     uint64_t ws_bytes, uint32_t max_tiles, uint32_t bound,
	     cudaStream_t st, uint32_t hd, uint32_t nt)
{
	switch (hd) {
	case 64:
		return launch_hd<T, 64>(p, batch, want_split, ws_bytes, max_tiles, bound, st, nt);
	case 128:
		return launch_hd<T, 128>(p, batch, want_split, ws_bytes, max_tiles, bound, st, nt);
	case 256:
		return launch_hd<T, 256>(p, batch, want_split, ws_bytes, max_tiles, bound, st, nt);
	}
	return -EOPNOTSUPP;
}

} /* namespace */

/**
 * kv_cuda_pick_splits() - splits per (sequence, head) for a decode launch
 * @base:  CTAs without splitting
 * @slots: CTAs the GPU holds at once
 * @cap:   most splits allowed
 *
 * Fewest splits whose grid fills the GPU with a last wave at least 85%
 * full; failing that, the best-filled grid within @cap.
 */
extern "C" uint32_t kv_cuda_pick_splits(uint32_t base, uint32_t slots, uint32_t cap)
{
	uint32_t best = 1, n;
	double best_eff = 0.0;

	if (!base || !slots || cap <= 1)
		return 1;
	for (n = 1; n <= cap; n++) {
		uint64_t ctas = (uint64_t)base * n;
		uint64_t waves = (ctas + slots - 1) / slots;
		double eff = (double)ctas / (double)(waves * slots);

		if (eff >= 0.85)
			return n;
		if (eff > best_eff + 0.02) {
			best_eff = eff;
			best = n;
		}
	}
	return best;
}

/**
 * kv_cuda_pick_splits_waves() - splits for about four waves of CTAs
 * @base:  CTAs without splitting
 * @slots: CTAs the GPU holds at once
 * @cap:   most splits allowed
 *
 * Several waves let the block scheduler even out CTAs that finish at
 * different times (DRAM contention is not uniform), at the price of more
 * partial results to combine.
 */
extern "C" uint32_t kv_cuda_pick_splits_waves(uint32_t base, uint32_t slots, uint32_t cap)
{
	uint64_t want = 4ull * slots;
	uint32_t n;

	if (!base || cap <= 1)
		return 1;
	n = (uint32_t)((want + base - 1) / base);
	if (n > cap)
		n = cap;
	return n ? n : 1;
}

/**
 * kv_decode_cuda() - paged decode attention on CUDA
 * @a: arguments (see struct kv_decode_args; device-accessible pointers)
 *
 * Return: 0 once launched, -EINVAL for bad arguments, -EOPNOTSUPP for a
 * dtype or head_dim the CUDA kernels do not cover (fp32 KV; head_dim other
 * than 64, 128, 256), -EIO when a launch fails.
 */
extern "C" int kv_decode_cuda(const struct kv_decode_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	decode_params p = {};
	uint32_t nt, max_tiles, span, bound;
	int err = kv_decode_check(a);

	if (err)
		return err;
	if (g->dtype != KV_DTYPE_FP16 && g->dtype != KV_DTYPE_BF16)
		return -EOPNOTSUPP;
	if (g->head_dim != 64 && g->head_dim != 128 && g->head_dim != 256)
		return -EOPNOTSUPP;
	if (!a->batch)
		return 0;
	if (a->batch > 65535)
		return -EINVAL;

	p.kv = kv_layer_of(&a->arena, a->layer);
	p.q = a->q;
	p.out = a->out;
	p.table = a->block_table;
	p.ctx_lens = a->ctx_lens;
	p.status = a->status;
	p.ws = static_cast<float *>(a->workspace);
	p.q_heads = a->q_heads;
	p.kv_heads = g->kv_heads;
	p.group = a->q_heads / g->kv_heads;
	p.block_tokens = g->block_tokens;
	p.stride = a->table_stride;
	p.window = a->window;
	p.scale_log2 = a->scale * 1.4426950408889634f;

	/* query heads per CTA: 8, 16 or 32 (16 at head_dim 256) */
	nt = p.group <= 8 ? 1 : p.group <= 16 || g->head_dim > 128 ? 2 : 4;
	p.heads_per_chunk = 8 * nt;
	p.hchunks = (p.group + p.heads_per_chunk - 1) / p.heads_per_chunk;
	if ((uint64_t)g->kv_heads * p.hchunks > 65535)
		return -EINVAL;

	/* a split covers whole 16-token tiles of the attended span */
	span = a->table_stride * g->block_tokens;
	if (a->window && a->window < span)
		span = a->window;
	max_tiles = span / kTile + 2;
	bound = kv_decode_split_bound(a);
	if (g->dtype == KV_DTYPE_BF16)
		return launch_t<__nv_bfloat16>(p, a->batch, a->workspace != NULL,
					       a->workspace_bytes, max_tiles, bound,
					       static_cast<cudaStream_t>(a->stream),
					       g->head_dim, nt);
	return launch_t<__half>(p, a->batch, a->workspace != NULL,
				a->workspace_bytes, max_tiles, bound,
				static_cast<cudaStream_t>(a->stream), g->head_dim, nt);
}
