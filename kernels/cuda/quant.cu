// SPDX-License-Identifier: MIT
/*
 * The quantizing KV append on CUDA (struct kv_append_args gives the rules,
 * kernels/quant.h the rounding): the same bytes as kv_append_cpu().
 *
 * Both kernels give a warp a chunk of consecutive tokens and one head
 * column (K or V of one kv head), and a lane four dims of a token per
 * 8-byte load. Every load of a chunk is issued before any value is used,
 * so a warp has a whole chunk in flight (up to 16 tokens at head_dim 128;
 * fewer per warp where a small batch would leave the GPU idle).
 *
 * INT4 (kv_quant4_kernel()): each token's groups on their own; a group of
 * 32 dims sits on 8 lanes, whose transposing reduction leaves each lane
 * two groups' amax to turn into scales.
 *
 * INT8, FP8 (kv_quant8_kernel()): the runs (consecutive slots in one
 * frame) that start in the chunk are found by ballots over the slots; each
 * run's amax, scale (grown, the block requantized, as the rules say) and
 * values follow from the registers. A run longer than the warp's window
 * reads its inputs twice (quant_run_long()).
 *
 * Finite inputs are rounded by a magic number (round_bits()); a warp with
 * a NaN or an infinity, or an INT4 scale off binary16's normal range,
 * rounds each value as the CPU does.
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
#include "kernels/cuda/attn.cuh"

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
	uint32_t chunk;		/* tokens per warp (kv_quant_chunk()) */
	int32_t bt_shift;	/* log2(block_tokens) when a power of two, else -1 */
	float qmax;
};

/* the largest @x of each aligned group of @W lanes, on all of them */
template <int W = 32>
__device__ __forceinline__ float lanes_max(float x)
{
#pragma unroll
	for (int o = W / 2; o; o >>= 1)
		x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, o));
	return x;
}

/*
 * kv_quant_int(): x * inv rounded into -qmax..qmax, NaN to 0. The
 * conversion rounds to nearest even, saturates and takes NaN to 0; the
 * clamp after rounding gives what rounding after the clamp would.
 */
__device__ __forceinline__ int quant_int(float x, float inv, int qmax)
{
	return max(min(__float2int_rn(__fmul_rn(x, inv)), qmax), -qmax);
}

__device__ __forceinline__ uint8_t quant8(uint32_t dtype, float x, float inv)
{
	if (dtype == KV_DTYPE_FP8_E4M3)
		return (uint8_t)__nv_cvt_float_to_fp8(__fmul_rn(x, inv), __NV_SATFINITE,
						      __NV_E4M3);
	return (uint8_t)(int8_t)quant_int(x, inv, 127);
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

/* ---- the inputs: words of four values ---------------------------------- */

constexpr int kWords = 32;	/* input words a lane holds (INT8, FP8) */

/* four inputs at @s: one 8-byte load (VEC, 8-byte aligned), else four */
template <bool VEC>
__device__ __forceinline__ uint2 load_vec(const uint16_t *s)
{
	if (VEC)
		return __ldg(reinterpret_cast<const uint2 *>(s));
	return make_uint2(s[0] | (uint32_t)s[1] << 16, s[2] | (uint32_t)s[3] << 16);
}

/* four inputs from element @i of @src: one 8-byte load where @vec, else four */
__device__ __forceinline__ uint2 load_word(const void *src, size_t i, bool vec)
{
	const uint16_t *s = static_cast<const uint16_t *>(src) + i;

	return vec ? load_vec<true>(s) : load_vec<false>(s);
}

/*
 * load_chunk()'s loads: token tt's row at @row + tt * @stride, a pointer
 * per word stepped from token to token
 */
template <int M, int WT, bool VEC, int N>
__device__ __forceinline__ void load_rows(const uint16_t *row, size_t stride, uint32_t hd,
					  uint32_t mask, int lane, uint2 (&raw)[N])
{
#pragma unroll
	for (int w = 0; w < WT; w++) {
		const uint32_t d = (w * 32 + lane) * 4, m = d < hd ? mask : 0;
		const uint16_t *s = row + d;

#pragma unroll
		for (int tt = 0; tt < M; tt++, s += stride) {
			raw[tt * WT + w] = make_uint2(0, 0);
			if (m >> tt & 1)
				raw[tt * WT + w] = load_vec<VEC>(s);
		}
	}
}

/*
 * Lane @lane's words of the tokens in @mask among the @M from @c0 (WT
 * words each: dims 4 (32 w + lane) .. + 3), head @h of @src, into @raw;
 * zeros elsewhere. Every load is issued before any is used; the loads'
 * width is chosen once for all of them.
 */
template <int M, int WT, int N>
__device__ __forceinline__ void load_chunk(const quant_params &p, const void *src, uint64_t c0,
					   uint32_t h, uint32_t mask, int lane, bool vec,
					   uint2 (&raw)[N])
{
	const size_t stride = (size_t)p.kv_heads * p.head_dim;
	const uint16_t *row = static_cast<const uint16_t *>(src) + c0 * stride +
			      (size_t)h * p.head_dim;

	static_assert(M * WT <= N, "the chunk's words fit");
	if (vec)
		load_rows<M, WT, true>(row, stride, p.head_dim, mask, lane, raw);
	else
		load_rows<M, WT, false>(row, stride, p.head_dim, mask, lane, raw);
}

/*
 * Lane @lane's words of the tokens in @mask among the @B whose rows start
 * at element @first of @src, @stride apart; zeros elsewhere
 */
template <int B, int WT>
__device__ __forceinline__ void run_words(const void *src, size_t first, size_t stride,
					  uint32_t hd, uint32_t mask, int lane, bool vec,
					  uint2 (&x)[B * WT])
{
	const uint16_t *row = static_cast<const uint16_t *>(src) + first;

	if (vec)
		load_rows<B, WT, true>(row, stride, hd, mask, lane, x);
	else
		load_rows<B, WT, false>(row, stride, hd, mask, lane, x);
}

/* the lower and the upper input of a 16-bit pair: bf16 (BF) or fp16 */
template <bool BF>
__device__ __forceinline__ float pair_lo(uint32_t x)
{
	return BF ? __uint_as_float(x << 16) : __half2float(__ushort_as_half((uint16_t)x));
}

template <bool BF>
__device__ __forceinline__ float pair_hi(uint32_t x)
{
	return BF ? __uint_as_float(x & 0xffff0000u) :
		    __half2float(__ushort_as_half((uint16_t)(x >> 16)));
}

/* input @j (0..3) of word @w */
template <bool BF>
__device__ __forceinline__ float word_val(uint2 w, int j)
{
	const uint32_t x = j < 2 ? w.x : w.y;

	return j & 1 ? pair_hi<BF>(x) : pair_lo<BF>(x);
}

/* the largest magnitude of a word's inputs, NaN ignored (as the CPU's fmaxf) */
template <bool BF>
__device__ __forceinline__ float word_amax(uint2 w, float m)
{
#pragma unroll
	for (int j = 0; j < 4; j++)
		m = fmaxf(m, fabsf(word_val<BF>(w, j)));
	return m;
}

/*
 * The fast path's magnitudes: the bit patterns of |x| as unsigned 16-bit
 * integers, which order as the values do, past infinity (kInf) NaN. Where
 * no pattern reaches kInf, the largest is the amax, and every x * inv
 * below is finite.
 */
template <bool BF>
constexpr uint32_t kInf = BF ? 0x7f80 : 0x7c00;

/* the larger pattern of |x| in each half of a word's two pairs */
__device__ __forceinline__ uint32_t word_mag(uint2 w)
{
	return __vmaxu2(w.x & 0x7fff7fff, w.y & 0x7fff7fff);
}

/* the larger of the two halves of @m */
__device__ __forceinline__ uint32_t mag_max(uint32_t m)
{
	return max(m & 0xffff, m >> 16);
}

/* the value of a magnitude's pattern */
template <bool BF>
__device__ __forceinline__ float mag_val(uint32_t m)
{
	return BF ? __uint_as_float(m << 16) : __half2float(__ushort_as_half((uint16_t)m));
}

/*
 * x * inv, rounded to nearest even, is an integer n: v + 1.5 * 2^23 puts it
 * in the low mantissa bits (exact for |v| < 2^22), its low byte n's (n +
 * @off's with @off in the constant). The fast path's inputs are finite and
 * their scale bounds |x * inv| by qmax plus a few ulps, so this is
 * kv_quant_int(), which rounds after the clamp, with no clamp to do.
 */
__device__ __forceinline__ uint32_t round_bits(float x, float inv, float magic)
{
	return __float_as_uint(__fadd_rn(__fmul_rn(x, inv), magic));
}

constexpr float kMagic = 12582912.0f;	/* 1.5 * 2^23 */

/* four inputs times @inv as INT8 bytes (the fast path), the first lowest */
template <bool BF>
__device__ __forceinline__ uint32_t int8_word(uint2 w, float inv)
{
	const uint32_t r0 = round_bits(pair_lo<BF>(w.x), inv, kMagic);
	const uint32_t r1 = round_bits(pair_hi<BF>(w.x), inv, kMagic);
	const uint32_t r2 = round_bits(pair_lo<BF>(w.y), inv, kMagic);
	const uint32_t r3 = round_bits(pair_hi<BF>(w.y), inv, kMagic);

	return __byte_perm(__byte_perm(r0, r1, 0x0040), __byte_perm(r2, r3, 0x0040), 0x5410);
}

/* four inputs times @inv as FP8 bytes, two per conversion (as quant8()) */
template <bool BF>
__device__ __forceinline__ uint32_t fp8_word(uint2 w, float inv)
{
	const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(__fmul_rn(pair_lo<BF>(w.x), inv),
								 __fmul_rn(pair_hi<BF>(w.x), inv)),
						     __NV_SATFINITE, __NV_E4M3);
	const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(__fmul_rn(pair_lo<BF>(w.y), inv),
								 __fmul_rn(pair_hi<BF>(w.y), inv)),
						     __NV_SATFINITE, __NV_E4M3);

	return lo | hi << 16;
}

/*
 * four inputs times @inv as INT4 nibbles (the fast path), the first
 * lowest: n + 8 in each result's low byte, the bytes gathered as n0, n2,
 * n1, n3, then folded into 16 bits
 */
template <bool BF>
__device__ __forceinline__ uint32_t int4_word(uint2 w, float inv)
{
	constexpr float magic = kMagic + 8.0f;
	const uint32_t r0 = round_bits(pair_lo<BF>(w.x), inv, magic);
	const uint32_t r1 = round_bits(pair_hi<BF>(w.x), inv, magic);
	const uint32_t r2 = round_bits(pair_lo<BF>(w.y), inv, magic);
	const uint32_t r3 = round_bits(pair_hi<BF>(w.y), inv, magic);
	const uint32_t u = __byte_perm(__byte_perm(r0, r2, 0x0040), __byte_perm(r1, r3, 0x0040),
				       0x5410);

	return (u | u >> 12) & 0xffff;
}

/*
 * four bytes (little-endian in @b) at @dst: a value row's dims 4 i .. 4 i
 * + 3, 4-byte aligned in an arena that is (head_dim is a multiple of 32,
 * frames of KV_FRAME_ALIGN)
 */
__device__ __forceinline__ void store_word(uint8_t *dst, uint32_t b)
{
	asm("st.global.b32 [%0], %1;" : : "l"(dst), "r"(b) : "memory");	/* not a generic one */
}

__device__ __forceinline__ uint64_t shfl_u64(uint64_t x, int src)
{
	return __shfl_sync(0xffffffff, (unsigned long long)x, src);
}

__device__ __forceinline__ uint64_t shfl_up_u64(uint64_t x)
{
	return __shfl_up_sync(0xffffffff, (unsigned long long)x, 1);
}

/* the frame of slot @s (>= 0), and its place in the block */
__device__ __forceinline__ uint64_t slot_frame(const quant_params &p, int64_t s, uint32_t &tib)
{
	const uint64_t f = p.bt_shift >= 0 ? (uint64_t)s >> p.bt_shift :
			   (uint64_t)s / p.block_tokens;

	tib = (uint32_t)((uint64_t)s - f * p.block_tokens);
	return f;
}

/*
 * struct tok_lane - the token a lane looks at (INT8/FP8: lane i, token c0
 * + i of the window; INT4: of the chunk): its slot (-1 for none or
 * padding), frame and place in the block, and the K or V row it goes to.
 */
struct tok_lane {
	int64_t slot;
	uint64_t frame;
	uint32_t tib;
	uint8_t *vals;		/* the head's values in the frame's block */
	char *block;
};

/* lane @lane's token of those from @c0, @n of them; no token past p.tokens */
__device__ __forceinline__ void tok_init(const quant_params &p, uint64_t c0, int lane, int n,
					 uint32_t col, tok_lane &tl)
{
	tl.slot = lane < n && c0 + lane < p.tokens ? p.slots[c0 + lane] : -1;
	tl.tib = 0;
	tl.frame = tl.slot >= 0 ? slot_frame(p, tl.slot, tl.tib) : 0;
	tl.block = p.arena + (tl.frame < p.frames ? tl.frame : 0) * p.frame_bytes;
	tl.vals = reinterpret_cast<uint8_t *>(tl.block + p.koff + col * p.head_bytes);
}

/* four inputs times @inv as INT8 or FP8 bytes, the first lowest */
template <bool BF>
__device__ __forceinline__ uint32_t quant_word(const quant_params &p, uint2 w, float inv)
{
	uint32_t b = 0;

#pragma unroll
	for (int j = 0; j < 4; j++)
		b |= (uint32_t)quant8(p.dtype, word_val<BF>(w, j), inv) << (8 * j);
	return b;
}

/*
 * The block's values at @vals requantized by @ratio (old scale / new); by
 * the warp, eight words per lane loaded before any is stored.
 */
__device__ __forceinline__ void requant_block(const quant_params &p, uint8_t *vals, float ratio,
					      int lane)
{
	const uint32_t n = p.block_tokens * p.head_dim;

	for (uint32_t i0 = lane * 4; i0 < n; i0 += 8 * 128) {
		uint32_t w[8];

#pragma unroll
		for (int k = 0; k < 8; k++) {
			const uint32_t i = i0 + k * 128;

			w[k] = i >= n ? 0 : *reinterpret_cast<const uint32_t *>(vals + i);
		}
#pragma unroll
		for (int k = 0; k < 8; k++) {
			uint32_t b = 0;

			if (i0 + k * 128 >= n)
				break;
#pragma unroll
			for (int j = 0; j < 4; j++)
				b |= (uint32_t)quant8(p.dtype, dequant8(p.dtype, (uint8_t)(w[k] >> (8 * j))),
						      ratio) << (8 * j);
			store_word(vals + i0 + k * 128, b);
		}
	}
}

/*
 * A run's scale from its @amax: its own where @fresh (the run writes the
 * block's token 0) or the block's scale @old was never written, else the
 * larger of @old and its own. @grow: the block's values are to be
 * requantized to it (requant_block()).
 */
__device__ __forceinline__ float run_scale(const quant_params &p, float old, float amax,
					   bool fresh, bool &grow)
{
	const float scale = __fdiv_rn(amax, p.qmax);

	fresh |= !(old >= 0.f && old < INFINITY);
	grow = !fresh && scale > old;
	return fresh || grow ? scale : old;
}

/*
 * A run that reaches past the warp's window (kv_quant8_kernel()), from
 * token @t0, head column @col, into the values @vals and scale @scp of its
 * block @frame: its end found 32 slots at a time, then its inputs read
 * twice, for the amax and to quantize, B tokens' words in flight (B * WT
 * words a lane), rounded by the fast path's words unless one is not
 * finite.
 */
template <int B, int WT, bool BF>
__device__ __forceinline__ void quant_run_long(const quant_params &p, uint64_t t0, uint64_t frame,
					       uint32_t col, uint8_t *vals, float *scp, int lane,
					       bool vec)
{
	const uint32_t hd = p.head_dim, h = col % p.kv_heads;
	const void *src = col < p.kv_heads ? p.k : p.v;
	const size_t stride = (size_t)p.kv_heads * hd;
	uint64_t base = t0, t1, tb;
	bool fresh = false, grow;
	float amax = 0.f, old = *scp;
	uint32_t mag = 0;
	uint2 x[B * WT];

	for (;; base += 32) {
		const int64_t sl = base + lane < p.tokens ? p.slots[base + lane] : -1;
		uint32_t tib = 1;
		const bool in = sl >= 0 && slot_frame(p, sl, tib) == frame;
		const uint32_t out = __ballot_sync(0xffffffff, !in);
		const uint32_t before = out ? (1u << (__ffs(out) - 1)) - 1 : 0xffffffff;

		fresh |= (__ballot_sync(0xffffffff, in && !tib) & before) != 0;
		if (out) {
			t1 = base + __ffs(out) - 1;
			break;
		}
	}
	/* the amax from the magnitudes' patterns; by floats where one is not finite */
	for (tb = t0; tb < t1; tb += B) {
		const uint32_t m = t1 - tb >= B ? (1u << B) - 1 : (1u << (t1 - tb)) - 1;

		run_words<B, WT>(src, tb * stride + (size_t)h * hd, stride, hd, m, lane, vec, x);
#pragma unroll
		for (int i = 0; i < B * WT; i++) {
			mag = __vmaxu2(mag, word_mag(x[i]));
			amax = word_amax<BF>(x[i], amax);
		}
	}
	const bool exact = __any_sync(0xffffffff, mag_max(mag) >= kInf<BF>);
	const float scale = run_scale(p, old, lanes_max(exact ? amax : mag_val<BF>(mag_max(mag))),
				      fresh, grow);
	const float inv = quant_inv(scale);

	if (grow)
		requant_block(p, vals, __fdiv_rn(old, scale), lane);
	__syncwarp();
	if (lane == 0)
		*scp = scale;
	for (tb = t0; tb < t1; tb += B) {
		const uint32_t m = t1 - tb >= B ? (1u << B) - 1 : (1u << (t1 - tb)) - 1;
		uint32_t mine = 0;	/* lane tt: token tb + tt's place in the block */

		if (m >> lane & 1)
			slot_frame(p, p.slots[tb + lane], mine);
		run_words<B, WT>(src, tb * stride + (size_t)h * hd, stride, hd, m, lane, vec, x);
#pragma unroll
		for (int tt = 0; tt < B; tt++) {
			const uint32_t tib = __shfl_sync(0xffffffff, mine, tt);

			if (!(m >> tt & 1))
				continue;
#pragma unroll
			for (int w = 0; w < WT; w++) {
				const uint32_t d = (w * 32 + lane) * 4;
				const uint2 xi = x[tt * WT + w];
				const uint32_t b = p.dtype == KV_DTYPE_FP8_E4M3 ? fp8_word<BF>(xi, inv) :
						   exact ? quant_word<BF>(p, xi, inv) :
						   int8_word<BF>(xi, inv);

				if (d < hd)
					store_word(vals + (size_t)tib * hd + d, b);
			}
		}
	}
}

/* the larger of two floats (NaN ignored), or of each half of two patterns */
__device__ __forceinline__ float vmax(float a, float b)
{
	return fmaxf(a, b);
}

__device__ __forceinline__ uint32_t vmax(uint32_t a, uint32_t b)
{
	return __vmaxu2(a, b);
}

/*
 * One step of a transposing reduction: of the first 2 H values, keep H (the
 * upper half where the lane has bit O), give the other H to lane ^ O.
 * After the steps O = G / 2 .. 1 (H = N / 2 .. N / G) over groups of G
 * lanes, value k of N / G on a lane is the largest value k + (N / G) *
 * (lane % G) of its group's lanes.
 */
template <int O, int H, int N, typename T>
__device__ __forceinline__ void transpose_step(T (&v)[N], int lane)
{
	const bool up = lane & O;

	static_assert(2 * H <= N, "the values are there");
#pragma unroll
	for (int i = 0; i < H; i++) {
		const T keep = up ? v[i + H] : v[i];
		const T give = up ? v[i] : v[i + H];

		v[i] = vmax(keep, __shfl_xor_sync(0xffffffff, give, O));
	}
}

/*
 * Of 32 values per lane, lane i gets the largest value i of all lanes: a
 * transposing reduction (each step halves what a lane keeps), 31 shuffles.
 */
__device__ __forceinline__ float warp_max_transpose(float (&v)[32], int lane)
{
	transpose_step<16, 16>(v, lane);
	transpose_step<8, 8>(v, lane);
	transpose_step<4, 4>(v, lane);
	transpose_step<2, 2>(v, lane);
	transpose_step<1, 1>(v, lane);
	return v[0];
}

/*
 * This lane's amax of token @tt's WT words in @raw (zeros where no token
 * was loaded): from the magnitudes' patterns, @mag keeping the largest,
 * which is right where no pattern reaches kInf; where one does, EXACT, by
 * floats, NaN ignored.
 */
template <int WT, bool BF, bool EXACT>
__device__ __forceinline__ float tok_amax(const uint2 (&raw)[kWords], int tt, uint32_t &mag)
{
	uint32_t m = 0;
	float amax = 0.f;

#pragma unroll
	for (int w = 0; w < WT; w++) {
		if (EXACT)
			amax = word_amax<BF>(raw[tt * WT + w], amax);
		else
			m = __vmaxu2(m, word_mag(raw[tt * WT + w]));
	}
	if (EXACT)
		return amax;
	m = mag_max(m);
	mag = max(mag, m);
	return mag_val<BF>(m);
}

/*
 * The magnitudes' patterns of tokens 2 j and 2 j + 1 in @raw (0 past
 * @M), each folded to its largest, in the low and the high half
 */
template <int WT, int M>
__device__ __forceinline__ uint32_t pair_mag(const uint2 (&raw)[kWords], int j)
{
	uint32_t a = 0, b = 0;

#pragma unroll
	for (int w = 0; w < WT; w++) {
		if (2 * j < M)
			a = __vmaxu2(a, word_mag(raw[2 * j * WT + w]));
		if (2 * j + 1 < M)
			b = __vmaxu2(b, word_mag(raw[(2 * j + 1) * WT + w]));
	}
	return __vmaxu2(__byte_perm(a, b, 0x5410), __byte_perm(a, b, 0x7632));
}

/* the amax of the one run a kv_quant8_kernel() of ONE warp takes, on every lane */
template <int WT, int M, bool BF, bool EXACT>
__device__ __forceinline__ float one_amax(const uint2 (&raw)[kWords], uint32_t &mag)
{
	float amax = 0.f;

#pragma unroll
	for (int tt = 0; tt < M; tt++)
		amax = fmaxf(amax, tok_amax<WT, BF, EXACT>(raw, tt, mag));
	return lanes_max(amax);
}

/*
 * kv_quant8_kernel(), several runs: each token's amax on its lane (a
 * transposing reduction), then each run's on its first lane (a segmented
 * one over the lanes before @end, the end of the lane's run).
 */
template <int WT, int M, bool BF, bool EXACT>
__device__ __forceinline__ float run_amax(const uint2 (&raw)[kWords], uint32_t end, int lane,
					  uint32_t &mag)
{
	float v[32], amax;

	if (EXACT) {
#pragma unroll
		for (int tt = 0; tt < 32; tt++)
			v[tt] = tt < M ? tok_amax<WT, BF, true>(raw, tt, mag) : 0.f;
		amax = warp_max_transpose(v, lane);
	} else {
		/* patterns two tokens to a word: lane i ends with tokens 2 (i / 2) and + 1 */
		uint32_t u[16];

#pragma unroll
		for (int j = 0; j < 16; j++) {
			u[j] = pair_mag<WT, M>(raw, j);
			mag = __vmaxu2(mag, u[j]);
		}
		transpose_step<16, 8>(u, lane);
		transpose_step<8, 4>(u, lane);
		transpose_step<4, 2>(u, lane);
		transpose_step<2, 1>(u, lane);
		u[0] = __vmaxu2(u[0], __shfl_xor_sync(0xffffffff, u[0], 1));
		amax = mag_val<BF>(lane & 1 ? u[0] >> 16 : u[0] & 0xffff);
	}
#pragma unroll
	for (int o = 1; o < 32; o <<= 1) {
		const float x = __shfl_down_sync(0xffffffff, amax, o);

		if (lane + o < end)
			amax = fmaxf(amax, x);
	}
	return amax;
}

/*
 * The tokens in @need of the M whose words @raw holds, each quantized by
 * its lane's @inv into its row (that lane's @tl), in order (a slot given
 * twice keeps the later). The fast path's INT8 (FP8: fp8_word(), which is
 * exact for every input) has no NaN or infinity among the inputs.
 */
template <int WT, int M, bool BF, bool FP8>
__device__ __forceinline__ void store_tokens(const quant_params &p, const uint2 (&raw)[kWords],
					     uint32_t need, float inv, const tok_lane &tl, int lane,
					     bool vec)
{
	const uint64_t row = (uint64_t)(tl.vals + (size_t)tl.tib * p.head_dim);	/* my token's */

#pragma unroll
	for (int tt = 0; tt < M; tt++) {
		if (!(need >> tt & 1))
			continue;
		const float ti = __shfl_sync(0xffffffff, inv, tt);
		uint8_t *dst = reinterpret_cast<uint8_t *>(shfl_u64(row, tt));
#pragma unroll
		for (int w = 0; w < WT; w++) {
			const uint32_t d = (w * 32 + lane) * 4;
			const uint32_t b = FP8 ? fp8_word<BF>(raw[tt * WT + w], ti) :
					   int8_word<BF>(raw[tt * WT + w], ti);

			if (d < p.head_dim)
				store_word(dst + d, b);
		}
	}
}

/*
 * store_tokens() where an INT8 input is not finite: token by token, the
 * inputs read again and rounded one by one (quant_word()), as the CPU does.
 */
template <int WT, bool BF>
__device__ __forceinline__ void store_tokens_exact(const quant_params &p, const void *src,
						   uint64_t c0, uint32_t h, uint32_t need,
						   float inv, const tok_lane &tl, int lane,
						   bool vec)
{
	const uint32_t hd = p.head_dim;

#pragma unroll 1
	for (uint32_t m = need; m; m &= m - 1) {
		const int tt = __ffs(m) - 1;
		const float ti = __shfl_sync(0xffffffff, inv, tt);
		uint8_t *dst = reinterpret_cast<uint8_t *>(shfl_u64((uint64_t)tl.vals, tt)) +
			       (size_t)__shfl_sync(0xffffffff, tl.tib, tt) * hd;
#pragma unroll
		for (int w = 0; w < WT; w++) {
			const uint32_t d = (w * 32 + lane) * 4;

			if (d < hd)
				store_word(dst + d,
					   quant_word<BF>(p, load_word(src, ((c0 + tt) * p.kv_heads +
									     h) * hd + d, vec),
							  ti));
		}
	}
}

/*
 * INT8, FP8: a warp per (chunk of C = p.chunk tokens, head column); lane i
 * looks at token c0 + i of a window of W tokens, the chunk and up to
 * M / 2 after it (M = 32 / WT, the most a window holds), so that a run of
 * up to M / 2 tokens starting in the chunk ends inside it. With ONE (a
 * small batch: more warps, fewer registers each) a warp takes one token
 * (M = 1, one more slot to see the run's end) and the run it may start.
 * The runs starting in the chunk are found by ballots over the window's
 * slots. Those that end inside the window (closed) have their tokens' WT
 * words per lane (head_dim <= 128 WT) loaded at once and kept in
 * registers, and their blocks' old scales read by their first lanes, all
 * before any is used. Each token's amax lands on its lane (a transposing
 * reduction), each run's on its first lane (a segmented one), which then
 * works out the run's scale; the blocks whose scale grows are requantized
 * one by one, then every token is written. A run reaching past the window
 * takes quant_run_long().
 */
template <int WT, bool ONE, bool BF>
__global__ void __launch_bounds__(kWarps * 32, ONE ? 4 : 2)
kv_quant8_kernel(const quant_params p, bool vec)
{
	constexpr int M = ONE ? 1 : kWords / WT;
	/* a long run's tokens in flight: 16 words a lane, 8 where ONE keeps to 64 registers */
	constexpr int kLongB = (ONE ? 8 : 16) / WT > 1 ? (ONE ? 8 : 16) / WT : 1;
	const uint32_t full = 0xffffffff, C = ONE ? 1 : p.chunk;
	const uint32_t W = ONE ? M : min(M, C + M / 2), S = ONE ? M + 1 : W;
	const int lane = threadIdx.x & 31;
	const uint32_t cols = 2 * p.kv_heads, item = blockIdx.x * kWarps + (threadIdx.x >> 5);
	const uint64_t c0 = (uint64_t)(item / cols) * C;
	const uint32_t col = item % cols, h = col % p.kv_heads;
	const void *src = col < p.kv_heads ? p.k : p.v;
	tok_lane tl;

	if (c0 >= p.tokens)
		return;
	tok_init(p, c0, lane, S, col, tl);

	/* the runs: a token continues its predecessor's, or breaks */
	long long prev = __shfl_up_sync(full, (long long)tl.slot, 1);
	uint64_t pframe = shfl_up_u64(tl.frame);
	if (lane == 0) {
		uint32_t tib;

		prev = c0 ? p.slots[c0 - 1] : -1;
		pframe = prev >= 0 ? slot_frame(p, prev, tib) : 0;
	}
	const bool cont = tl.slot >= 0 && prev >= 0 && pframe == tl.frame;
	const bool start = tl.slot >= 0 && !cont && lane < C;
	const uint32_t brk = __ballot_sync(full, lane < S && !cont);
	const uint32_t zero = __ballot_sync(full, tl.slot >= 0 && tl.tib == 0);
	const uint32_t rest = lane < 31 ? brk >> (lane + 1) : 0;
	const uint32_t end = rest ? lane + __ffs(rest) : S;	/* my run's, if I am in one */
	const uint32_t bad = __ballot_sync(full, start && tl.frame >= p.frames);
	const uint32_t open = __ballot_sync(full, start && !rest) & ~bad;
	const uint32_t closed = __ballot_sync(full, start) & ~bad & ~open;
	const uint32_t below = brk & (lane == 31 ? full : (2u << lane) - 1);
	const int first = below ? 31 - __clz(below) : 0;	/* my run's first lane */
	const bool mine = tl.slot >= 0 && lane < W && below && (closed >> first & 1);
	const uint32_t need = __ballot_sync(full, mine);
	const bool lead = closed >> lane & 1;
	float *const scp = reinterpret_cast<float *>(tl.block + p.soff + col * p.head_sbytes);

	if (bad && lane == 0 && col == 0)
		set_status(p.status);

	/* every load of the closed runs, then the arithmetic */
	const float old = lead ? *scp : 0.f;
	uint2 raw[kWords];

	load_chunk<M, WT>(p, src, c0, h, need, lane, vec, raw);

	uint32_t mag = 0;	/* the largest magnitude's pattern */
	float amax = ONE ? one_amax<WT, M, BF, false>(raw, mag) :
			   run_amax<WT, M, BF, false>(raw, end, lane, mag);
	const bool exact = __any_sync(full, mag_max(mag) >= kInf<BF>);	/* a NaN or an infinity */

	if (exact)
		amax = ONE ? one_amax<WT, M, BF, true>(raw, mag) :
			     run_amax<WT, M, BF, true>(raw, end, lane, mag);

	/* the first lanes' scales; the blocks whose scale grows requantized in turn */
	const uint32_t in = lead ? ((1u << end) - 1) & ~((1u << lane) - 1) : 0;	/* end < 32 */
	bool grow;
	const float scale = run_scale(p, old, amax, zero & in, grow);
	const float ratio = lead && grow ? __fdiv_rn(old, scale) : 0.f;
	for (uint32_t m = __ballot_sync(full, lead && grow); m; m &= m - 1) {
		const int a = __ffs(m) - 1;

		requant_block(p, reinterpret_cast<uint8_t *>(shfl_u64((uint64_t)tl.vals, a)),
			      __shfl_sync(full, ratio, a), lane);
	}
	const float inv = __shfl_sync(full, quant_inv(scale), first);	/* my token's */

	/* requantized values before the new ones */
	__syncwarp();
	if (lead)
		*scp = scale;
	/* a lane writes the same dims of every token: a slot given twice keeps the later */
	if (p.dtype == KV_DTYPE_FP8_E4M3)
		store_tokens<WT, M, BF, true>(p, raw, need, inv, tl, lane, vec);
	else if (!exact)
		store_tokens<WT, M, BF, false>(p, raw, need, inv, tl, lane, vec);
	else
		store_tokens_exact<WT, BF>(p, src, c0, h, need, inv, tl, lane, vec);
	/* last, with nothing left to keep across the calls: other frames */
	for (uint32_t m = open; m; m &= m - 1) {
		const int a = __ffs(m) - 1;

		quant_run_long<kLongB, WT, BF>(p, c0 + a, shfl_u64(tl.frame, a), col,
				   reinterpret_cast<uint8_t *>(shfl_u64((uint64_t)tl.vals, a)),
				   reinterpret_cast<float *>(shfl_u64((uint64_t)scp, a)), lane, vec);
	}
}

/* @nib (four nibbles, the first lowest) at @dst, 2-byte aligned as store_word()'s */
__device__ __forceinline__ void store_nibbles(uint8_t *dst, uint32_t nib)
{
	asm("st.global.b16 [%0], %1;" : : "l"(dst), "h"((uint16_t)nib) : "memory");
}

/* kv_int4_scale(): the binary16 scale of a group whose largest |x| is @amax */
__device__ __forceinline__ __half int4_scale(float amax)
{
	return __float2half_rn(fminf(__fdiv_rn(amax, 7.0f), 65504.0f));
}

/*
 * kv_quant4_kernel() where the fast path's bounds do not hold: token by
 * token, the inputs read again, each group's amax (NaN ignored) and scale
 * on its 8 lanes, every value rounded and clamped as the CPU does.
 */
template <int WT, bool BF>
__device__ __forceinline__ void quant4_exact(const quant_params &p, const void *src, uint64_t c0,
					     uint32_t h, uint32_t col, uint32_t live,
					     const tok_lane &tl, int lane, bool vec)
{
	const uint32_t hd = p.head_dim;

#pragma unroll 1
	for (uint32_t m = live; m; m &= m - 1) {
		const int tt = __ffs(m) - 1;
		const uint32_t tib = __shfl_sync(0xffffffff, tl.tib, tt);
		char *block = reinterpret_cast<char *>(shfl_u64((uint64_t)tl.block, tt));
		uint8_t *dst = reinterpret_cast<uint8_t *>(shfl_u64((uint64_t)tl.vals, tt)) +
			       (size_t)tib * hd / 2;
		__half *sc = reinterpret_cast<__half *>(block + p.soff + col * p.head_sbytes) +
			     (size_t)tib * (hd / KV_INT4_GROUP);
#pragma unroll
		for (int w = 0; w < WT; w++) {
			const uint32_t d = (w * 32 + lane) * 4;
			const uint2 x = d < hd ? load_word(src, ((c0 + tt) * p.kv_heads + h) * hd + d,
							   vec) : make_uint2(0, 0);
			const __half s = int4_scale(lanes_max<8>(word_amax<BF>(x, 0.f)));
			const float inv = quant_inv(__half2float(s));
			uint32_t nib = 0;

			if (d >= hd)
				continue;
#pragma unroll
			for (int j = 0; j < 4; j++)
				nib |= (uint32_t)(quant_int(word_val<BF>(x, j), inv, 7) + 8) << (4 * j);
			store_nibbles(dst + d / 2, nib);
			if (!(lane & 7))
				sc[d / KV_INT4_GROUP] = s;
		}
	}
}

/*
 * INT4: a warp per (chunk of C = p.chunk tokens, head column), lane i
 * looking at token c0 + i; every token's words loaded at once (N = 16
 * words per lane: four dims of a token each, a group of 32 dims on 8
 * lanes). A transposing reduction over each group's 8 lanes leaves the
 * group amax of two words on each lane (14 shuffles for the 16 words),
 * which works out their scales and writes them; each word's inverse comes
 * back by one shuffle, and its nibbles are one 16-bit store. The fast path
 * rounds by the magic number (int4_word()): it needs finite inputs and a
 * normal binary16 scale below the cap (|x * inv| < 7.5); a warp whose
 * chunk has other values takes quant4_exact(). Two tokens with one slot
 * race (as on the CPU, which takes tokens in parallel).
 */
template <int WT, bool BF>
__global__ void __launch_bounds__(kWarps * 32, 4) kv_quant4_kernel(const quant_params p, bool vec)
{
	constexpr int M = kWords / 2 / WT;	/* the most tokens a chunk holds */
	constexpr int N = M * WT;		/* words per lane */
	const uint32_t full = 0xffffffff, C = p.chunk;
	const int lane = threadIdx.x & 31;
	const uint32_t cols = 2 * p.kv_heads, item = blockIdx.x * kWarps + (threadIdx.x >> 5);
	const uint64_t c0 = (uint64_t)(item / cols) * C;
	const uint32_t col = item % cols, h = col % p.kv_heads, hd = p.head_dim;
	const void *src = col < p.kv_heads ? p.k : p.v;
	tok_lane tl;

	static_assert(N == 16, "two words' groups per lane");
	if (c0 >= p.tokens)
		return;
	tok_init(p, c0, lane, C, col, tl);
	const uint32_t live = __ballot_sync(full, tl.slot >= 0 && tl.frame < p.frames);
	if (__ballot_sync(full, tl.slot >= 0 && tl.frame >= p.frames) && lane == 0 && col == 0)
		set_status(p.status);

	uint2 raw[N];
	float a[N];
	uint32_t mag = 0;

	if (C == 1) {	/* a small batch: one token per warp, its groups on their lanes */
		quant4_exact<WT, BF>(p, src, c0, h, col, live, tl, lane, vec);
		return;
	}
	load_chunk<M, WT>(p, src, c0, h, live, lane, vec, raw);
	/* word i (token i / WT, word i % WT) of my dims: its amax, zeros where none */
#pragma unroll
	for (int i = 0; i < N; i++) {
		const uint32_t m = mag_max(word_mag(raw[i]));

		mag = max(mag, m);
		a[i] = mag_val<BF>(m);
	}
	/* group j = lane / 8 of words 2 (lane % 8) and + 1 here */
	transpose_step<4, 8>(a, lane);
	transpose_step<2, 4>(a, lane);
	transpose_step<1, 2>(a, lane);

	__half s[2];
	float inv[2];
	bool fast = mag < kInf<BF>;

#pragma unroll
	for (int k = 0; k < 2; k++) {
		s[k] = int4_scale(a[k]);
		inv[k] = quant_inv(__half2float(s[k]));
		fast &= a[k] == 0.f || (a[k] >= 7.0f * 0x1p-14f && a[k] <= 7.0f * 65504.0f);
	}
	if (__any_sync(full, !fast)) {
		quant4_exact<WT, BF>(p, src, c0, h, col, live, tl, lane, vec);
		return;
	}
#pragma unroll
	for (int k = 0; k < 2; k++) {
		const uint32_t i = 2 * (lane & 7) + k, tt = i / WT;
		const uint32_t g = 4 * (i % WT) + lane / 8;	/* the group in the token */
		const uint32_t tib = __shfl_sync(full, tl.tib, tt);
		char *block = reinterpret_cast<char *>(shfl_u64((uint64_t)tl.block, tt));

		if ((live >> tt & 1) && g * KV_INT4_GROUP < hd)
			reinterpret_cast<__half *>(block + p.soff + col * p.head_sbytes)
				[(size_t)tib * (hd / KV_INT4_GROUP) + g] = s[k];
	}
#pragma unroll
	for (int tt = 0; tt < M; tt++) {
		if (!(live >> tt & 1))
			continue;
		uint8_t *dst = reinterpret_cast<uint8_t *>(shfl_u64((uint64_t)tl.vals, tt)) +
			       (size_t)__shfl_sync(full, tl.tib, tt) * hd / 2;
#pragma unroll
		for (int w = 0; w < WT; w++) {
			const int i = tt * WT + w;
			const uint32_t d = (w * 32 + lane) * 4;
			const float wi = __shfl_sync(full, inv[i & 1], (lane & ~7) | (i >> 1));

			if (d < hd)
				store_nibbles(dst + d / 2, int4_word<BF>(raw[i], wi));
		}
	}
}

/*
 * Tokens per warp, at most @most: as many as leave some 8K warps, so
 * that a small batch (decode: a token per sequence) still spreads over
 * the GPU.
 */
static uint32_t kv_quant_chunk(uint32_t tokens, uint32_t kv_heads, uint32_t most)
{
	uint64_t c = (uint64_t)tokens * 2 * kv_heads / 8192;

	return c < 1 ? 1 : c > most ? most : (uint32_t)c;
}

/* the kernel of p.dtype for WT words per lane and token, BF bf16 inputs */
template <int WT, bool BF>
void launch_io(const quant_params &p, unsigned int grid, cudaStream_t st, bool vec)
{
	if (p.dtype == KV_DTYPE_INT4)
		kv_quant4_kernel<WT, BF><<<grid, kWarps * 32, 0, st>>>(p, vec);
	else if (p.chunk == 1)
		kv_quant8_kernel<WT, true, BF><<<grid, kWarps * 32, 0, st>>>(p, vec);
	else
		kv_quant8_kernel<WT, false, BF><<<grid, kWarps * 32, 0, st>>>(p, vec);
}

template <int WT>
void launch_wt(const quant_params &p, unsigned int grid, cudaStream_t st, bool bf16, bool vec)
{
	if (bf16)
		launch_io<WT, true>(p, grid, st, vec);
	else
		launch_io<WT, false>(p, grid, st, vec);
}

} /* namespace */

/**
 * kv_append_quant_cuda() - kv_append_cuda() for a quantized pool
 * @a: arguments, checked by kv_append_cuda()
 *
 * Return: 0 once launched, -EINVAL for too many tokens or an arena not
 * 4-byte aligned (the scales are stored as floats and binary16 pairs),
 * -EIO.
 */
extern "C" int kv_append_quant_cuda(const struct kv_append_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	uint32_t io = kv_io_dtype(g, a->io_dtype);
	quant_params p = {};

	if ((uintptr_t)a->arena.base % 4)
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

	cudaStream_t st = static_cast<cudaStream_t>(a->stream);
	bool vec = !((uintptr_t)a->k % 8) && !((uintptr_t)a->v % 8);
	bool bf16 = io == KV_DTYPE_BF16;
	/* words of four dims a lane takes per token, a power of two */
	uint32_t wt = g->head_dim <= 128 ? 1 : g->head_dim <= 256 ? 2 : g->head_dim <= 512 ? 4 : 8;
	uint64_t items;

	p.chunk = kv_quant_chunk(a->tokens, g->kv_heads, kWords / 2 / wt);
	p.bt_shift = kv_bt_shift(g->block_tokens);
	items = ((uint64_t)a->tokens + p.chunk - 1) / p.chunk * 2 * g->kv_heads;
	uint64_t grid = (items + kWarps - 1) / kWarps;

	if (grid * kWarps > UINT32_MAX)	/* the kernels count warps in 32 bits */
		return -EINVAL;
	switch (wt) {
	case 1:
		launch_wt<1>(p, (unsigned int)grid, st, bf16, vec);
		break;
	case 2:
		launch_wt<2>(p, (unsigned int)grid, st, bf16, vec);
		break;
	case 4:
		launch_wt<4>(p, (unsigned int)grid, st, bf16, vec);
		break;
	default:
		launch_wt<8>(p, (unsigned int)grid, st, bf16, vec);
	}
	return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}
