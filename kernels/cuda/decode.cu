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
 *
 * Quantized pools (INT8, FP8, INT4) run the same kernel with DT, their
 * dtype, as a template argument: each lane loads the same dims as for a
 * 16-bit pool, in 8- or 4-byte vectors, and widens them in registers to
 * binary16 fragments (integer values exactly; INT4's V times its group
 * scale), and the products run in binary16. INT4's K keeps its nibbles
 * biased (one LOP3 per pair of values); the bias and the group scales are
 * taken off each group's partial scores. INT8 and FP8 scales are per
 * block, so they multiply the scores (K) and the weights P (V) instead of
 * the values; the weights are taken relative to the largest V scale seen so
 * far (rescaling the outputs when it grows, as the softmax does for its
 * max), so that they stay in binary16's range.
 */
#include <errno.h>
#include <stdint.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <type_traits>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/attn.cuh"
#include "kernels/cuda/widen.cuh"

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
 * one_cta_fills(); else the other bits apply). Bit 8 (INT4 pools, head_dim
 * 64 and 128 only) caps registers for five CTAs per SM (the default until
 * the widening got cheaper; now slower).
 * Negative: KV_DECODE_VARIANT_DEFAULT.
 */
int kv_cuda_decode_variant = -1;

#define KV_DECODE_VARIANT_DEFAULT 67

namespace {

constexpr int kWarps = 4;
constexpr int kTile = 16;
/* how far (log2) a score may pass the softmax's reference before it moves */
constexpr float kSlack = 8.f;

struct decode_params {
	kv_layer_ref kv;	/* the layer's K and V in the arena */
	uint64_t soff;		/* quantized: the layer's K scales of head 0 */
	uint64_t hsb;		/* quantized: one head's scales in a block */
	const void *q;
	void *out;
	const uint32_t *table;
	const uint32_t *ctx_lens;
	int32_t *status;
	float *ws;
	uint32_t q_heads, kv_heads, group, hchunks, heads_per_chunk;
	uint32_t block_tokens, stride, window;
	int32_t bt_shift;	/* log2(block_tokens) when a power of two, else -1 */
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
__device__ __forceinline__ void bar_init(uint64_t *bar)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" :: "r"(kv_smem_addr(bar)));
	asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

/* arm @bar for @bytes (0: complete at once, nothing to copy) */
__device__ __forceinline__ void bar_expect(uint64_t *bar, uint32_t bytes)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
		     :: "r"(kv_smem_addr(bar)), "r"(bytes) : "memory");
#endif
}

__device__ __forceinline__ void bulk_load(void *dst, const void *src, uint32_t bytes,
					  uint64_t *bar)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes "
		     "[%0], [%1], %2, [%3];\n"
		     :: "r"(kv_smem_addr(dst)), "l"(src), "r"(bytes), "r"(kv_smem_addr(bar))
		     : "memory");
#endif
}


/*
 * The frame holding token @tok, and the token's index in it (@tib); NULL
 * when the token is masked or its frame lies past the arena (then *bad is
 * set). @frame is the tile's frame when block_tokens is a multiple of 16
 * (a tile never straddles two blocks then, and the frame is looked up
 * once per tile), else ~0u.
 */
__device__ __forceinline__ const char *tok_frame(const decode_params &p,
						 const uint32_t *table,
						 uint32_t frame, uint32_t tok,
						 uint32_t lo, uint32_t hi,
						 uint32_t &tib, bool &bad)
{
	uint32_t blk, f;

	if (tok < lo || tok >= hi)
		return nullptr;
	blk = kv_block_of(tok, p.block_tokens, p.bt_shift, tib);
	f = frame != ~0u ? frame : table[blk];
	if (f >= p.kv.frames) {
		bad = true;
		return nullptr;
	}
	return p.kv.arena + f * p.kv.frame_bytes;
}

/*
 * The KV storage of a decode launch: DT = 0 for 16-bit values of the I/O
 * type, else the quantized dtype. A lane loads 8 dims of a row at a time:
 * a uint4 (16-bit), uint2 (INT8, FP8) or one word (INT4).
 */
template <int DT> struct raw8 { typedef uint4 type; static constexpr int bytes = 16; };
template <> struct raw8<KV_DTYPE_INT8> { typedef uint2 type; static constexpr int bytes = 8; };
template <> struct raw8<KV_DTYPE_FP8_E4M3> { typedef uint2 type; static constexpr int bytes = 8; };
template <> struct raw8<KV_DTYPE_INT4> { typedef uint32_t type; static constexpr int bytes = 4; };

/* INT8 and FP8: one scale per block, head, K or V */
template <int DT> __host__ __device__ constexpr bool block_scaled()
{
	return DT == KV_DTYPE_INT8 || DT == KV_DTYPE_FP8_E4M3;
}

/*
 * The scales of a tile a lane needs: INT8/FP8, the K and V scales of
 * tokens r and r+8; INT4, the K scales (binary16 pairs, group kk in half
 * kk % 2 of word kk / 2) of tokens r and r+8, and word cg of the V scales
 * of tokens 2c, 2c+1, 2c+8, 2c+9 (the lane's group in cg is in its half
 * r / 4, see v_scales()).
 */
template <int DT, int HD> struct tile_scales {
	float k[2], v[2];
	uint32_t kg[2][HD / 64];
	uint32_t vw[4][HD / 64];
};

template <int VAR, int DT>
__device__ __forceinline__ typename raw8<DT>::type ld_raw(const char *p)
{
	if constexpr (DT == 0) {
		return ld_stream<VAR>(p);
	} else if constexpr (raw8<DT>::bytes == 8) {
		uint2 v;

		if (VAR & 1)
			asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v2.u32 {%0,%1}, [%2];\n"
				     : "=r"(v.x), "=r"(v.y) : "l"(p));
		else
			asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];\n"
				     : "=r"(v.x), "=r"(v.y) : "l"(p));
		return v;
	} else {
		uint32_t v;

		if (VAR & 1)
			asm volatile("ld.global.nc.L1::no_allocate.L2::256B.u32 %0, [%1];\n"
				     : "=r"(v) : "l"(p));
		else
			asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];\n"
				     : "=r"(v) : "l"(p));
		return v;
	}
}

template <int DT> __device__ __forceinline__ typename raw8<DT>::type raw_zero()
{
	typename raw8<DT>::type z;

	memset(&z, 0, sizeof(z));
	return z;
}

/* the tile's frame on the fast path (see row_ptr()), else ~0u */
__device__ __forceinline__ uint32_t tile_frame(const decode_params &p,
					       const uint32_t *table,
					       uint32_t t0, uint32_t hi)
{
	uint32_t tib;

	if (p.block_tokens % kTile || t0 >= hi)
		return ~0u;
	return table[kv_block_of(t0, p.block_tokens, p.bt_shift, tib)];
}

/*
 * Whether the tile at @t0 lies in frame @frame (block_tokens % 16 == 0, see
 * tile_frame()), inside the arena, with every token in [lo, hi): then its
 * rows are loaded from one base without a check per row.
 */
__device__ __forceinline__ bool tile_whole(const decode_params &p, uint32_t frame,
					   uint32_t t0, uint32_t lo, uint32_t hi)
{
	return frame != ~0u && frame < p.kv.frames && t0 >= lo && t0 + kTile <= hi;
}

/*
 * Per-lane loads of one tile: the K rows of tokens r and r+8, the V rows of
 * tokens 2c, 2c+1, 2c+8, 2c+9 (r = lane / 4, c = lane % 4), 8 dims per
 * vector; with their scales in a quantized pool (@sk: the head's K scales
 * inside a frame).
 */
template <int HD, int VAR, int DT>
__device__ __forceinline__ void load_k(const decode_params &p,
				       const uint32_t *table, uint32_t frame,
				       uint32_t t0, uint32_t lo, uint32_t hi,
				       uint64_t koff, uint64_t sk, int lane, bool &bad,
				       typename raw8<DT>::type (&k)[2][HD / 32],
				       tile_scales<DT, HD> &sc)
{
	constexpr uint32_t vb = raw8<DT>::bytes, rowb = HD / 8 * vb;
	int r = lane >> 2, c = lane & 3;

	if (tile_whole(p, frame, t0, lo, hi)) {
		/* one frame, every row attended: offsets from one base */
		const char *fb = p.kv.arena + frame * p.kv.frame_bytes;
		uint32_t tib0;

		kv_block_of(t0, p.block_tokens, p.bt_shift, tib0);
		const char *row = fb + koff + (uint64_t)(tib0 + r) * rowb + c * vb;
#pragma unroll
		for (int half = 0; half < 2; half++)
#pragma unroll
			for (int kk = 0; kk < HD / 32; kk++)
				k[half][kk] = ld_raw<VAR, DT>(row + half * 8 * rowb + kk * 4 * vb);
		if constexpr (block_scaled<DT>()) {
			sc.k[0] = sc.k[1] = __ldg(reinterpret_cast<const float *>(fb + sk));
			sc.v[0] = sc.v[1] = __ldg(reinterpret_cast<const float *>(
					fb + sk + p.kv_heads * p.hsb));
		} else if constexpr (DT == KV_DTYPE_INT4) {
			/* one base, constant offsets: rows r and r + 8 */
			const uint32_t *g = reinterpret_cast<const uint32_t *>(
				fb + sk + (uint64_t)(tib0 + r) * (HD / 16));
#pragma unroll
			for (int half = 0; half < 2; half++)
#pragma unroll
				for (int w = 0; w < HD / 64; w++)
					sc.kg[half][w] = __ldg(g + half * 8 * (HD / 64) + w);
		}
		return;
	}
#pragma unroll
	for (int half = 0; half < 2; half++) {
		uint32_t tib = 0;
		const char *fb = tok_frame(p, table, frame, t0 + r + 8 * half, lo,
					   hi, tib, bad);
		const char *row = fb ? fb + koff + (uint64_t)tib * rowb : nullptr;
#pragma unroll
		for (int kk = 0; kk < HD / 32; kk++)
			k[half][kk] = row ? ld_raw<VAR, DT>(row + (kk * 4 + c) * vb)
					  : raw_zero<DT>();
		if constexpr (block_scaled<DT>()) {
			sc.k[half] = fb ? __ldg(reinterpret_cast<const float *>(fb + sk)) : 0.f;
			sc.v[half] = fb ? __ldg(reinterpret_cast<const float *>(
					fb + sk + p.kv_heads * p.hsb)) : 0.f;
		} else if constexpr (DT == KV_DTYPE_INT4) {
			const uint32_t *g = reinterpret_cast<const uint32_t *>(
				fb + sk + (uint64_t)tib * (HD / 16));
#pragma unroll
			for (int w = 0; w < HD / 64; w++)
				sc.kg[half][w] = fb ? __ldg(g + w) : 0u;
		}
	}
}

template <int HD, int VAR, int DT>
__device__ __forceinline__ void load_v(const decode_params &p,
				       const uint32_t *table, uint32_t frame,
				       uint32_t t0, uint32_t lo, uint32_t hi,
				       uint64_t voff, uint64_t sv, int lane, bool &bad,
				       typename raw8<DT>::type (&v)[4][HD / 64],
				       tile_scales<DT, HD> &sc)
{
	constexpr uint32_t vb = raw8<DT>::bytes, rowb = HD / 8 * vb;
	int r = lane >> 2, c = lane & 3;

	if (tile_whole(p, frame, t0, lo, hi)) {
		const char *fb = p.kv.arena + frame * p.kv.frame_bytes;
		uint32_t tib0;

		kv_block_of(t0, p.block_tokens, p.bt_shift, tib0);
		const char *row = fb + voff + (uint64_t)(tib0 + 2 * c) * rowb + r * vb;
		/* INT4: the group scales of token 2c */
		const uint32_t *g = reinterpret_cast<const uint32_t *>(
			fb + sv + (uint64_t)(tib0 + 2 * c) * (HD / 16));
#pragma unroll
		for (int i = 0; i < 4; i++) {
			const uint32_t ri = (i & 1) + 8 * (i >> 1);
#pragma unroll
			for (int cg = 0; cg < HD / 64; cg++) {
				v[i][cg] = ld_raw<VAR, DT>(row + ri * rowb + cg * 8 * vb);
				if constexpr (DT == KV_DTYPE_INT4)
					sc.vw[i][cg] = __ldg(g + ri * (HD / 64) + cg);
			}
		}
		return;
	}
#pragma unroll
	for (int i = 0; i < 4; i++) {
		uint32_t tok = t0 + 2 * c + (i & 1) + 8 * (i >> 1), tib = 0;
		const char *fb = tok_frame(p, table, frame, tok, lo, hi, tib, bad);
		const char *row = fb ? fb + voff + (uint64_t)tib * rowb : nullptr;
#pragma unroll
		for (int cg = 0; cg < HD / 64; cg++) {
			v[i][cg] = row ? ld_raw<VAR, DT>(row + (cg * 8 + r) * vb)
				       : raw_zero<DT>();
			if constexpr (DT == KV_DTYPE_INT4) {
				const uint32_t *g = reinterpret_cast<const uint32_t *>(
					fb + sv + (uint64_t)tib * (HD / 16));
				sc.vw[i][cg] = fb ? __ldg(g + cg) : 0u;
			}
		}
	}
}

/*
 * INT4: the V scales of the lane's group in cg (dims (cg * 8 + r) * 8 on,
 * group 2 cg + r / 4: half r / 4 of word cg) for two tokens, from their
 * words @w0 and @w1, as one pair
 */
__device__ __forceinline__ uint32_t v_scales(uint32_t w0, uint32_t w1, int r)
{
	return __byte_perm(w0, w1, r & 4 ? 0x7632 : 0x5410);
}

/*
 * 8 dims of a K row as four binary16 pairs in the order of a 16-bit row
 * (dims 0-1, 2-3, 4-5, 6-7), except INT4: (0, 4), (1, 5), (2, 6), (3, 7),
 * which q_frag() gives the queries too. INT4 values keep an offset that is
 * taken off the scores instead (k_offsets()): 1024 + n for the even dims,
 * 1024 + 16 n for the odd ones (n the nibble, the value n - 8); their
 * group scales are applied to the scores too.
 */
template <int DT>
__device__ __forceinline__ uint4 k_frag(const typename raw8<DT>::type &x)
{
	if constexpr (DT == 0) {
		return x;
	} else if constexpr (DT == KV_DTYPE_INT8) {
		uint32_t u0 = x.x ^ 0x80808080u, u1 = x.y ^ 0x80808080u;

		return make_uint4(i8x2_h2(u0, 0x5140), i8x2_h2(u0, 0x7362),
				  i8x2_h2(u1, 0x5140), i8x2_h2(u1, 0x7362));
	} else if constexpr (DT == KV_DTYPE_FP8_E4M3) {
		return make_uint4(e4m3x2_h2(x.x), e4m3x2_h2(x.x >> 16),
				  e4m3x2_h2(x.y), e4m3x2_h2(x.y >> 16));
	} else {
		/* byte j holds dims 2j (low nibble) and 2j + 1 */
		uint32_t y = x >> 8;

		return make_uint4(and_or(x, 0x000f000fu, 0x64006400u),
				  and_or(x, 0x00f000f0u, 0x64006400u),
				  and_or(y, 0x000f000fu, 0x64006400u),
				  and_or(y, 0x00f000f0u, 0x64006400u));
	}
}

/*
 * The A fragments of V^T for m-tile (cg, ip) from rows w0..w3 (tokens 2c,
 * 2c+1, 2c+8, 2c+9): dims 2ip and 2ip+1 of each row, token pairs
 * together. @s01, @s23: INT4, the rows' group scales as pairs.
 */
template <int DT>
__device__ __forceinline__ void v_frags(const typename raw8<DT>::type &w0,
					const typename raw8<DT>::type &w1,
					const typename raw8<DT>::type &w2,
					const typename raw8<DT>::type &w3, int ip,
					uint32_t s01, uint32_t s23, uint32_t (&a)[4])
{
	if constexpr (DT == KV_DTYPE_INT4) {
		uint32_t sel = ip | (4 + ip) << 8;
		uint32_t y01 = __byte_perm(w0, w1, sel), y23 = __byte_perm(w2, w3, sel);

		a[0] = h2_mul(u4x2_h2(y01, false), s01);
		a[1] = h2_mul(u4x2_h2(y01, true), s01);
		a[2] = h2_mul(u4x2_h2(y23, false), s23);
		a[3] = h2_mul(u4x2_h2(y23, true), s23);
	} else {
		/* bytes 2ip, 2ip+1 of each row: [r0 b, r1 b, r0 b+1, r1 b+1] */
		uint32_t j = 2 * (ip & 1), sel = j | (4 + j) << 4 | (j + 1) << 8 | (5 + j) << 12;
		uint32_t y01 = __byte_perm(ip < 2 ? w0.x : w0.y, ip < 2 ? w1.x : w1.y, sel);
		uint32_t y23 = __byte_perm(ip < 2 ? w2.x : w2.y, ip < 2 ? w3.x : w3.y, sel);

		if constexpr (DT == KV_DTYPE_INT8) {
			y01 ^= 0x80808080u;
			y23 ^= 0x80808080u;
			a[0] = i8x2_h2(y01, 0x5140);
			a[1] = i8x2_h2(y01, 0x7362);
			a[2] = i8x2_h2(y23, 0x5140);
			a[3] = i8x2_h2(y23, 0x7362);
		} else {
			a[0] = e4m3x2_h2(y01);
			a[1] = e4m3x2_h2(y01 >> 16);
			a[2] = e4m3x2_h2(y23);
			a[3] = e4m3x2_h2(y23 >> 16);
		}
	}
}

/*
 * 8 queries of type T as binary16 pairs in the order k_frag() gives K;
 * INT4: the odd dims over 16, as K's are 16 times theirs
 */
template <typename T, int DT>
__device__ __forceinline__ uint4 q_frag(const uint4 &x)
{
	if constexpr (DT == 0) {
		return x;
	} else {
		const T *e = reinterpret_cast<const T *>(&x);
		float f[8];

#pragma unroll
		for (int i = 0; i < 8; i++)
			f[i] = static_cast<float>(e[i]);
		if constexpr (DT == KV_DTYPE_INT4)
			return make_uint4(kv_mma<__half>::pack(f[0], f[4]),
					  kv_mma<__half>::pack(f[1] * 0.0625f, f[5] * 0.0625f),
					  kv_mma<__half>::pack(f[2], f[6]),
					  kv_mma<__half>::pack(f[3] * 0.0625f, f[7] * 0.0625f));
		return make_uint4(kv_mma<__half>::pack(f[0], f[1]), kv_mma<__half>::pack(f[2], f[3]),
				  kv_mma<__half>::pack(f[4], f[5]), kv_mma<__half>::pack(f[6], f[7]));
	}
}

/*
 * INT4: what the product of the queries @q (q_frag(), the lane's 8 dims of
 * each group of 32) with K as k_frag() gives it exceeds the product with
 * the values, per group: 1032 per even-dim query (1024 + n against n - 8)
 * and 1152 per odd-dim one (64 + n against n - 8, over 16). Summed over the
 * four lanes of a row and stored negated in @neg, per group g 16 floats:
 * for each c, the accumulator fragment of heads 2c, 2c + 1 (rows r and
 * r + 8 alike), which the lane loads as the C of its first product. In
 * shared memory rather than registers: at 16 or 32 heads per CTA they
 * would spill.
 */
template <int HD>
__device__ __forceinline__ void k_offsets(const uint4 (&q)[HD / 32], int r, int c, float *neg)
{
#pragma unroll
	for (int g = 0; g < HD / 32; g++) {
		float2 e0 = __half22float2(*reinterpret_cast<const __half2 *>(&q[g].x));
		float2 o0 = __half22float2(*reinterpret_cast<const __half2 *>(&q[g].y));
		float2 e1 = __half22float2(*reinterpret_cast<const __half2 *>(&q[g].z));
		float2 o1 = __half22float2(*reinterpret_cast<const __half2 *>(&q[g].w));
		float v = 1032.f * (e0.x + e0.y + e1.x + e1.y) + 1152.f * (o0.x + o0.y + o1.x + o1.y);

		v += __shfl_xor_sync(0xffffffff, v, 1);
		v += __shfl_xor_sync(0xffffffff, v, 2);
		if (c == 0) {
			neg[g * 16 + (r / 2) * 4 + (r & 1)] = -v;
			neg[g * 16 + (r / 2) * 4 + 2 + (r & 1)] = -v;
		}
	}
}

/* the float of half @hi of a binary16 pair */
__device__ __forceinline__ float h2_half(uint32_t pair, int hi)
{
	return __half2float(__ushort_as_half((unsigned short)(hi ? pair >> 16 : pair)));
}

/*
 * 8 queries from @p: one 16-byte load, or (queries not 16-byte aligned,
 * e.g. a view that starts at an odd element) eight 2-byte ones; once per
 * CTA, so the slow case costs nothing that shows
 */
template <typename T>
__device__ __forceinline__ uint4 ld_q8(const T *p)
{
	const unsigned short *h = reinterpret_cast<const unsigned short *>(p);
	uint4 v;

	if (!((uintptr_t)p & 15))
		return *reinterpret_cast<const uint4 *>(p);
	v.x = h[0] | (uint32_t)h[1] << 16;
	v.y = h[2] | (uint32_t)h[3] << 16;
	v.z = h[4] | (uint32_t)h[5] << 16;
	v.w = h[6] | (uint32_t)h[7] << 16;
	return v;
}

/* the lane's outputs (heads 2c and 2c + 1) times @corr */
template <int HD>
__device__ __forceinline__ void scale_o(float (&o)[HD / 16][4], const float (&corr)[2])
{
#pragma unroll
	for (int mt = 0; mt < HD / 16; mt++) {
		o[mt][0] *= corr[0];
		o[mt][1] *= corr[1];
		o[mt][2] *= corr[0];
		o[mt][3] *= corr[1];
	}
}

/* the tile's greatest score of each of the lane's two columns */
__device__ __forceinline__ float col_max(const float (&x)[4], int e)
{
	float mx = fmaxf(x[e], x[2 + e]);

	mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 4));
	mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 8));
	return fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 16));
}

/*
 * One tile of the online softmax of an n-tile: the scores @x (log2 units,
 * -inf where masked; rows r and r + 8, columns 2c and 2c + 1) become the
 * weights, relative to the running maximum @m of their column, whose sums
 * @l and outputs @o are rescaled when it grows.
 */
template <int HD>
__device__ __forceinline__ void softmax_exact(float (&x)[4], float (&m)[2], float (&l)[2],
					      float (&o)[HD / 16][4])
{
	float corr[2];

#pragma unroll
	for (int e = 0; e < 2; e++) {
		float mn = fmaxf(m[e], col_max(x, e));
		float ref = mn == -INFINITY ? 0.f : mn;

		corr[e] = exp2_ftz(m[e] - ref);
		m[e] = mn;
		x[e] = exp2_ftz(x[e] - ref);
		x[2 + e] = exp2_ftz(x[2 + e] - ref);
		l[e] = l[e] * corr[e] + x[e] + x[2 + e];
	}
	scale_o<HD>(o, corr);
}

/*
 * softmax_exact() for quantized pools, which are bound by their
 * instructions where 16-bit ones stream at the memory's speed: the
 * reference @m moves only when a score passes it by more than kSlack
 * (weights up to 2^kSlack, exact in the fp32 sums and in range for
 * binary16 P). One vote finds whether any lane's score does; only then
 * (the first tiles, seldom after) are the maxima reduced across the warp
 * and the outputs rescaled. INT8/FP8: @vcorr != 1 (vref grew) rescales the
 * outputs too.
 */
template <int HD>
__device__ __forceinline__ void softmax_slack(float (&x)[4], float (&m)[2], float (&l)[2],
					      float (&o)[HD / 16][4], float vcorr)
{
	float corr[2] = { vcorr, vcorr };
	bool need = vcorr != 1.f;

#pragma unroll
	for (int e = 0; e < 2; e++)
		need |= fmaxf(x[e], x[2 + e]) > m[e] + kSlack;
	if (__any_sync(0xffffffff, need)) {
#pragma unroll
		for (int e = 0; e < 2; e++) {
			float mx = col_max(x, e);

			if (mx > m[e] + kSlack) {
				float c = exp2_ftz(m[e] - mx);

				corr[e] *= c;
				l[e] *= c;
				m[e] = mx;
			}
		}
		scale_o<HD>(o, corr);
	}
#pragma unroll
	for (int e = 0; e < 2; e++) {
		float ref = m[e] == -INFINITY ? 0.f : m[e];

		x[e] = exp2_ftz(x[e] - ref);
		x[2 + e] = exp2_ftz(x[2 + e] - ref);
		l[e] += x[e] + x[2 + e];
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
	uint32_t tib, blk = kv_block_of(t0, p.block_tokens, p.bt_shift, tib), f = table[blk];
	const char *src;

	if (f >= p.kv.frames) {
		bad = true;
		bar_expect(bar, 0);
		return;
	}
	src = p.kv.arena + f * p.kv.frame_bytes + koff + (uint64_t)tib * HD * 2;
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
template <typename T, int HD, int NT, bool PIPE, int VAR, int DT>
__global__ void __launch_bounds__(((VAR & 64) ? 16 : kWarps) * 32,
				  (VAR & 64) ? 1 : (VAR & 16) ? 2 : (VAR & 256) ? 5 :
				  (VAR & 2) ? 4 : 1)
kv_decode_kernel(const decode_params p)
{
	static_assert(!(VAR & 16) || DT == 0, "bulk copies take 16-bit tiles");
	typedef typename std::conditional<DT == 0, T, __half>::type M;	/* mma type */
	typedef typename raw8<DT>::type R;
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
	const uint64_t sk = p.soff + h * p.hsb, sv = sk + p.kv_heads * p.hsb;
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
			q[nt][kk] = row < nrows ? q_frag<T, DT>(
				ld_q8(qbase + (size_t)row * HD + kk * 32 + c * 8)) :
				make_uint4(0, 0, 0, 0);
	}
	/*
	 * INT4: the warp's score offsets per (n-tile, group), in shared
	 * memory until the merge (k_offsets())
	 */
	constexpr int G = HD / 32;
	float *kneg = smem + warp * NT * G * 16;
	if constexpr (DT == KV_DTYPE_INT4) {
#pragma unroll
		for (int nt = 0; nt < NT; nt++)
			k_offsets<HD>(q[nt], r, c, kneg + nt * G * 16);
		__syncwarp();
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
	R kr[2][HD / 32];
	R vr[4][HD / 64];
	tile_scales<DT, HD> sc;
	float vref = 0.f;	/* INT8/FP8: the largest V scale so far */
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
		load_k<HD, VAR, DT>(p, table, frame, (tile0 + warp) * kTile, lo, hi, koff, sk,
				    lane, bad, kr, sc);
		load_v<HD, VAR, DT>(p, table, frame, (tile0 + warp) * kTile, lo, hi, voff, sv,
				    lane, bad, vr, sc);
	}

	for (int it = warp, k = 0; it < ntiles; it += W, k++) {
		uint32_t t0 = (tile0 + it) * kTile;
		bool more = it + W < ntiles;
		uint32_t fnext = !TMA && more ? tile_frame(p, table, t0 + W * kTile, hi) : ~0u;

		if (TMA) {
			/* this tile's stage: wait, take the fragments, refill */
			char *stage = ring + (k % S) * 2 * tile_bytes<HD>();

			mbar_wait(&bars[k % S], (k / S) & 1);
			if constexpr (DT == 0)
				smem_frags<HD>(stage, t0, lo, hi, lane, kr, vr);
			__syncwarp();
			if (lane == 0 && it + S * W < ntiles) {
				fence_async_smem();
				tma_issue<HD>(p, table, t0 + S * W * kTile, koff, stage,
					      &bars[k % S], bad);
			}
		} else if (!PIPE) {
			load_k<HD, VAR, DT>(p, table, frame, t0, lo, hi, koff, sk, lane, bad, kr, sc);
			load_v<HD, VAR, DT>(p, table, frame, t0, lo, hi, voff, sv, lane, bad, vr, sc);
		}
		const tile_scales<DT, HD> cur = sc;	/* the next loads refill sc */

		/* K as fragments of M (16-bit pools: as loaded) */
		uint4 kf[2][HD / 32];
#pragma unroll
		for (int half = 0; half < 2; half++)
#pragma unroll
			for (int kk = 0; kk < HD / 32; kk++)
				kf[half][kk] = k_frag<DT>(kr[half][kk]);

		/*
		 * S^T = K Q^T: rows tokens r, r+8; columns heads 2c, 2c+1. INT4:
		 * group kk (32 dims) at a time, less its offset, times the group
		 * scales of tokens r and r+8.
		 */
		float s[NT][4];
#pragma unroll
		for (int nt = 0; nt < NT; nt++) {
			s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
			for (int kk = 0; kk < HD / 32; kk++) {
				if constexpr (DT == KV_DTYPE_INT4) {
					float k0 = h2_half(cur.kg[0][kk / 2], kk & 1);
					float k1 = h2_half(cur.kg[1][kk / 2], kk & 1);
					float4 neg = *reinterpret_cast<const float4 *>(
						kneg + (nt * G + kk) * 16 + 4 * c);
					float g[4] = { neg.x, neg.y, neg.z, neg.w };

					kv_mma<M>::mma(g, kf[0][kk].x, kf[1][kk].x, kf[0][kk].y,
						       kf[1][kk].y, q[nt][kk].x, q[nt][kk].y);
					kv_mma<M>::mma(g, kf[0][kk].z, kf[1][kk].z, kf[0][kk].w,
						       kf[1][kk].w, q[nt][kk].z, q[nt][kk].w);
					s[nt][0] = fmaf(g[0], k0, s[nt][0]);
					s[nt][1] = fmaf(g[1], k0, s[nt][1]);
					s[nt][2] = fmaf(g[2], k1, s[nt][2]);
					s[nt][3] = fmaf(g[3], k1, s[nt][3]);
				} else {
					kv_mma<M>::mma(s[nt], kf[0][kk].x, kf[1][kk].x, kf[0][kk].y,
						       kf[1][kk].y, q[nt][kk].x, q[nt][kk].y);
					kv_mma<M>::mma(s[nt], kf[0][kk].z, kf[1][kk].z, kf[0][kk].w,
						       kf[1][kk].w, q[nt][kk].z, q[nt][kk].w);
				}
			}
		}
		if (PIPE && more)
			load_k<HD, VAR, DT>(p, table, fnext, t0 + W * kTile, lo, hi, koff, sk,
					    lane, bad, kr, sc);

		/*
		 * INT8/FP8: the scores times the K scale of their token; the
		 * weights times its V scale over vref, which when the tile
		 * raises it rescales the outputs so far by old / new.
		 */
		float kmul0 = p.scale_log2, kmul1 = p.scale_log2;
		float pf0 = 1.f, pf1 = 1.f, vcorr = 1.f;
		if constexpr (block_scaled<DT>()) {
			float vt = fmaxf(cur.v[0], cur.v[1]);

			vt = fmaxf(vt, __shfl_xor_sync(0xffffffff, vt, 4));
			vt = fmaxf(vt, __shfl_xor_sync(0xffffffff, vt, 8));
			vt = fmaxf(vt, __shfl_xor_sync(0xffffffff, vt, 16));
			if (vt > vref) {
				vcorr = vref / vt;
				vref = vt;
			}
			kmul0 *= cur.k[0];
			kmul1 *= cur.k[1];
			pf0 = vref > 0.f ? cur.v[0] / vref : 0.f;
			pf1 = vref > 0.f ? cur.v[1] / vref : 0.f;
		}

		/* online softmax per head (column); tokens spread over r */
		bool ok0 = t0 + r >= lo && t0 + r < hi;
		bool ok1 = t0 + r + 8 >= lo && t0 + r + 8 < hi;
		uint32_t pb[NT][2];
#pragma unroll
		for (int nt = 0; nt < NT; nt++) {
			float x[4];
#pragma unroll
			for (int e = 0; e < 2; e++) {
				x[e] = ok0 ? s[nt][e] * kmul0 : -INFINITY;
				x[2 + e] = ok1 ? s[nt][2 + e] * kmul1 : -INFINITY;
			}
			if constexpr (DT == 0)
				softmax_exact<HD>(x, m[nt], l[nt], o[nt]);
			else
				softmax_slack<HD>(x, m[nt], l[nt], o[nt], vcorr);
			pb[nt][0] = transpose8x8(kv_mma<M>::pack(x[0] * pf0, x[1] * pf0));
			pb[nt][1] = transpose8x8(kv_mma<M>::pack(x[2] * pf1, x[3] * pf1));
		}

		/* O^T += V^T P^T; m-tile (cg, ip): row r is dim (cg*8+r)*8+2ip */
#pragma unroll
		for (int cg = 0; cg < HD / 64; cg++) {
#pragma unroll
			for (int ip = 0; ip < 4; ip++) {
				uint32_t a[4];

				if constexpr (DT == 0) {
					a[0] = __byte_perm(word(vr[0][cg], ip), word(vr[1][cg], ip), 0x5410);
					a[1] = __byte_perm(word(vr[0][cg], ip), word(vr[1][cg], ip), 0x7632);
					a[2] = __byte_perm(word(vr[2][cg], ip), word(vr[3][cg], ip), 0x5410);
					a[3] = __byte_perm(word(vr[2][cg], ip), word(vr[3][cg], ip), 0x7632);
				} else {
					uint32_t s01 = 0, s23 = 0;

					if constexpr (DT == KV_DTYPE_INT4) {
						s01 = v_scales(cur.vw[0][cg], cur.vw[1][cg], r);
						s23 = v_scales(cur.vw[2][cg], cur.vw[3][cg], r);
					}
					v_frags<DT>(vr[0][cg], vr[1][cg], vr[2][cg], vr[3][cg], ip,
						    s01, s23, a);
				}
#pragma unroll
				for (int nt = 0; nt < NT; nt++)
					kv_mma<M>::mma(o[nt][cg * 4 + ip], a[0], a[1], a[2], a[3],
						   pb[nt][0], pb[nt][1]);
			}
		}
		if (PIPE && more)
			load_v<HD, VAR, DT>(p, table, fnext, t0 + W * kTile, lo, hi, voff, sv,
					    lane, bad, vr, sc);
		frame = fnext;
	}

	if constexpr (block_scaled<DT>()) {
#pragma unroll
		for (int nt = 0; nt < NT; nt++)
#pragma unroll
			for (int mt = 0; mt < HD / 16; mt++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					o[nt][mt][e] *= vref;
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

/*
 * A kernel's launch shape on one device, read once: its dynamic shared
 * memory in bytes << 8 | its CTAs per SM, one word so that threads
 * launching at once read a whole one (0: not read yet).
 */
typedef uint64_t launch_cfg;

template <typename T, int HD, int NT, int VAR, int DT>
int launch(const decode_params &p, uint32_t batch, bool want_split,
	   uint64_t ws_bytes, uint32_t max_tiles, uint32_t split_bound,
	   cudaStream_t st)
{
	constexpr bool TMA = (VAR & 16) != 0;
	constexpr int W = (VAR & 64) ? 16 : kWarps;	/* warps per CTA */
	constexpr bool PIPE = !TMA && HD * NT <= 256;
	auto kern = kv_decode_kernel<T, HD, NT, PIPE, VAR, DT>;
	static launch_cfg cfg[KV_CUDA_MAX_DEVICES];
	struct kv_cuda_dev d;
	decode_params q = p;
	const int dev = kv_cuda_device(&d) ? -1 : d.id;

	if (dev < 0)
		return -ENODEV;
	launch_cfg lc = __atomic_load_n(&cfg[dev], __ATOMIC_ACQUIRE);

	if (!lc) {
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
		lc = (uint64_t)smem << 8 | (occ < 255 ? occ : 255);
		__atomic_store_n(&cfg[dev], lc, __ATOMIC_RELEASE);
	}
	const size_t smem = lc >> 8;
	const uint32_t occupancy = lc & 255;

	/*
	 * Split heuristic: enough CTAs to fill every SM's resident slots, with
	 * the number of waves rounded so that the last wave is nearly full;
	 * each split keeps at least one tile per warp.
	 */
	uint32_t base = batch * p.kv_heads * p.hchunks;
	uint32_t slots = (uint32_t)d.sms * occupancy;
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
	kern<<<grid, W * 32, smem, st>>>(q);
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
		/* code built without sm_90's wait in the combine: plain stream order */
		attr[0].val.programmaticStreamSerializationAllowed = d.code_arch >= 90;
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

/*
 * bulk copies need an sm_90 device, code built for it, and tiles that
 * never straddle two blocks
 */
static bool tma_usable(const decode_params &p)
{
	struct kv_cuda_dev d;

	return !(p.block_tokens % kTile) && !kv_cuda_device(&d) && d.major >= 9 &&
	       d.code_arch >= 90;
}

/*
 * One CTA of 16 warps per (sequence, kv head) when those CTAs fill the
 * SMs once (85% or more, no more than one each) and every warp gets two
 * tiles: no split, so no combine launch and no partial results.
 */
static bool one_cta_fills(const decode_params &p, uint32_t batch, uint32_t max_tiles)
{
	uint64_t base = (uint64_t)batch * p.kv_heads * p.hchunks;
	struct kv_cuda_dev d;

	if (kv_cuda_device(&d))
		return false;
	return base <= (uint64_t)d.sms && base * 100 >= 85ull * d.sms && max_tiles >= 2 * 16;
}

/* quantized pools: the default variant (of kv_cuda_decode_variant, bits 2 and 8 only) */
template <typename T, int HD, int NT, int DT>
int launch_default(const decode_params &p, uint32_t batch, bool want_split,
		   uint64_t ws_bytes, uint32_t max_tiles, uint32_t bound,
		   cudaStream_t st)
{
	constexpr int V = HD > 128 ? KV_DECODE_VARIANT_DEFAULT & 1 : KV_DECODE_VARIANT_DEFAULT & 3;

	if constexpr (HD <= 128 && (KV_DECODE_VARIANT_DEFAULT & 64)) {
		if (one_cta_fills(p, batch, max_tiles))
			return launch<T, HD, NT, 67, DT>(p, batch, want_split, ws_bytes, max_tiles,
							 bound, st);
	}
	/* INT4, forced variants with bit 8: registers capped for 5 CTAs per SM */
	if constexpr (HD <= 128 && DT == KV_DTYPE_INT4) {
		if (kv_cuda_decode_variant >= 0 && (kv_cuda_decode_variant & 256))
			return launch<T, HD, NT, V | 256, DT>(p, batch, want_split, ws_bytes,
							      max_tiles, bound, st);
	}
	return launch<T, HD, NT, V, DT>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
}

template <typename T, int HD, int NT, int DT>
int launch_var(const decode_params &p, uint32_t batch, bool want_split,
	       uint64_t ws_bytes, uint32_t max_tiles, uint32_t bound,
	       cudaStream_t st)
{
	int v = kv_cuda_decode_variant < 0 ? KV_DECODE_VARIANT_DEFAULT :
		kv_cuda_decode_variant;

	if constexpr (HD <= 128) {
		if ((v & 64) && one_cta_fills(p, batch, max_tiles))
			return launch<T, HD, NT, 67, DT>(p, batch, want_split, ws_bytes, max_tiles,
						     bound, st);
		if ((v & 16) && tma_usable(p))
			return launch<T, HD, NT, 19, DT>(p, batch, want_split, ws_bytes, max_tiles,
						     bound, st);
	}

	/* the register cap only pays where the kernel fits in 128 registers */
	if constexpr (HD > 128) {
		if (v & 1)
			return launch<T, HD, NT, 1, DT>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
		return launch<T, HD, NT, 0, DT>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
	} else {
		switch (v & 3) {
		case 0:
			return launch<T, HD, NT, 0, DT>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
		case 1:
			return launch<T, HD, NT, 1, DT>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
		case 2:
			return launch<T, HD, NT, 2, DT>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
		default:
			return launch<T, HD, NT, 3, DT>(p, batch, want_split, ws_bytes, max_tiles, bound, st);
		}
	}
}

template <typename T, int HD, int DT>
int launch_hd(const decode_params &p, uint32_t batch, bool want_split,
	      uint64_t ws_bytes, uint32_t max_tiles, uint32_t bound,
	      cudaStream_t st, uint32_t nt)
{
	if (nt == 1) {
		if constexpr (DT != 0)
			return launch_default<T, HD, 1, DT>(p, batch, want_split, ws_bytes,
							    max_tiles, bound, st);
		else
			return launch_var<T, HD, 1, DT>(p, batch, want_split, ws_bytes,
							max_tiles, bound, st);
	}
	if (nt == 2)
		return launch<T, HD, 2, KV_DECODE_VARIANT_DEFAULT & 1, DT>(p, batch, want_split,
								   ws_bytes, max_tiles, bound, st);
	if constexpr (HD <= 128)
		return launch<T, HD, 4, KV_DECODE_VARIANT_DEFAULT & 1, DT>(p, batch, want_split,
								   ws_bytes, max_tiles, bound, st);
	return -EINVAL;
}

template <typename T, int DT>
int launch_t(const decode_params &p, uint32_t batch, bool want_split,
	     uint64_t ws_bytes, uint32_t max_tiles, uint32_t bound,
	     cudaStream_t st, uint32_t hd, uint32_t nt)
{
	switch (hd) {
	case 64:
		return launch_hd<T, 64, DT>(p, batch, want_split, ws_bytes, max_tiles, bound, st, nt);
	case 128:
		return launch_hd<T, 128, DT>(p, batch, want_split, ws_bytes, max_tiles, bound, st, nt);
	case 256:
		return launch_hd<T, 256, DT>(p, batch, want_split, ws_bytes, max_tiles, bound, st, nt);
	}
	return -EOPNOTSUPP;
}

/* pick the instantiation for the I/O type and the storage dtype */
static int launch_io(const decode_params &p, const struct kv_decode_args *a,
		     uint32_t dtype, uint32_t io, uint32_t max_tiles, uint32_t bound,
		     uint32_t nt)
{
	bool split = a->workspace != NULL;
	uint64_t ws = a->workspace_bytes;
	uint32_t hd = a->arena.g.head_dim;
	cudaStream_t st = static_cast<cudaStream_t>(a->stream);

#define KV_LAUNCH_IO(T)										\
	switch (dtype) {									\
	case KV_DTYPE_INT8:									\
		return launch_t<T, KV_DTYPE_INT8>(p, a->batch, split, ws, max_tiles, bound, st, hd, nt); \
	case KV_DTYPE_FP8_E4M3:									\
		return launch_t<T, KV_DTYPE_FP8_E4M3>(p, a->batch, split, ws, max_tiles, bound, st, hd, nt); \
	case KV_DTYPE_INT4:									\
		return launch_t<T, KV_DTYPE_INT4>(p, a->batch, split, ws, max_tiles, bound, st, hd, nt); \
	default:										\
		return launch_t<T, 0>(p, a->batch, split, ws, max_tiles, bound, st, hd, nt);	\
	}
	if (io == KV_DTYPE_BF16)
		KV_LAUNCH_IO(__nv_bfloat16)
	KV_LAUNCH_IO(__half)
#undef KV_LAUNCH_IO
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
	if (g->dtype == KV_DTYPE_FP32)
		return -EOPNOTSUPP;
	if (g->head_dim != 64 && g->head_dim != 128 && g->head_dim != 256)
		return -EOPNOTSUPP;
	if (!a->batch)
		return 0;
	if ((uintptr_t)a->arena.base & 15)
		return -EINVAL;		/* K/V rows are read 16 bytes at a time */

	p.kv = kv_layer_of(&a->arena, a->layer);
	if (kv_dtype_quantized(g->dtype)) {
		p.soff = kv_scale_offset(g, a->layer, KV_K, 0);
		p.hsb = kv_head_scale_bytes(g);
	}
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
	p.bt_shift = kv_bt_shift(g->block_tokens);
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

	/* the grid's z holds 65535 sequences: a larger batch in turns */
	const uint32_t io = kv_io_dtype(g, a->io_dtype);
	const size_t qbytes = (size_t)a->q_heads * g->head_dim * kv_dtype_size(io);
	for (uint32_t b0 = 0, n; b0 < a->batch; b0 += n) {
		struct kv_decode_args c = *a;

		n = a->batch - b0 < 65535u ? a->batch - b0 : 65535u;
		c.batch = n;
		c.q = static_cast<const char *>(a->q) + b0 * qbytes;
		c.out = static_cast<char *>(a->out) + b0 * qbytes;
		c.block_table = a->block_table + (size_t)b0 * a->table_stride;
		c.ctx_lens = a->ctx_lens + b0;
		p.q = c.q;
		p.out = c.out;
		p.table = c.block_table;
		p.ctx_lens = c.ctx_lens;
		err = launch_io(p, &c, g->dtype, io, max_tiles, bound, nt);
		if (err)
			return err;
	}
	return 0;
}
