// SPDX-License-Identifier: MIT
/*
 * The CPU kernels on quantized pools (INT8, FP8 E4M3, INT4):
 *
 *  - the e4m3 conversions against the format's definition: all 256 codes,
 *    every midpoint (ties to even), saturation, random floats against a
 *    nearest-code search;
 *  - append round trips from bf16 and fp16: each stored value, read back
 *    from the block's bytes and scales as uapi/kvmem/layout.h says (not
 *    through kernels/quant.c), is within half a quantization step of its
 *    input, the scales and bytes follow the rules of struct kv_append_args,
 *    and nothing outside the written tokens changes;
 *  - the per-block scale of INT8 and FP8: growth requantizes the block,
 *    a run at token 0 starts the block anew, two runs into one frame are
 *    -EINVAL with nothing written, negative slots are skipped;
 *  - decode and prefill attention on quantized KV against float64 attention
 *    on the unquantized inputs (gaussian data, ragged contexts, shuffled
 *    frames, GQA 4:1 and 8:1, head_dim 64/128, block_tokens 16/32), within
 *    the bounds below, and against float64 on the values the arena holds
 *    within the io dtype's bound (kvt_bound()); the errors are printed as
 *    TAP comments;
 *  - outliers (100x) give finite outputs; bad io_dtype and geometries fail.
 *
 * Arenas are filled with 0xff bytes: every scale is NaN until an append
 * writes it, 0xff is an e4m3 NaN and INT4 scales are per token, so a kernel
 * that reads another layer, a frame nobody wrote or (FP8, INT4) a token
 * past the context produces NaN and fails.
 */
#include <errno.h>
#include <math.h>

#include "kselftest_harness.h"
#include "kv_test.h"
#include "kernels/quant.h"

/*
 * ||out - ref|| / ||ref|| against float64 on the unquantized inputs. FP8:
 * e4m3 rounds a value by up to 2^-4 of it, and a prefill whose first rows
 * attend to one or two tokens carries that error unaveraged: one random
 * case reached 0.05003 (typically 0.030-0.035), so 6e-2, not 5e-2.
 */
#define QT_BOUND_INT8	2e-2
#define QT_BOUND_FP8	6e-2
#define QT_BOUND_INT4	1.5e-1

static const __u32 qtypes[] = { KV_DTYPE_INT8, KV_DTYPE_FP8_E4M3, KV_DTYPE_INT4 };

static double qt_bound(__u32 dtype)
{
	return dtype == KV_DTYPE_INT8 ? QT_BOUND_INT8 :
	       dtype == KV_DTYPE_FP8_E4M3 ? QT_BOUND_FP8 : QT_BOUND_INT4;
}

static float qt_qmax(__u32 dtype)
{
	return dtype == KV_DTYPE_INT8 ? 127.0f :
	       dtype == KV_DTYPE_FP8_E4M3 ? 448.0f : 7.0f;
}

/* standard normal (Box-Muller) */
static double qt_gauss(void)
{
	double u = ((double)(kvt_rand64() >> 11) + 0.5) * 0x1p-53;
	double v = (double)(kvt_rand64() >> 11) * 0x1p-53;

	return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static void qt_fill_gauss(void *p, __u32 dtype, __u64 n, double amp)
{
	__u64 i;

	for (i = 0; i < n; i++)
		kv_store_f32(p, dtype, i, (float)(amp * qt_gauss()));
}

/* ---- the formats, from their definitions -------------------------------- */

/* IEEE binary16 */
static double qt_f16(uint16_t h)
{
	int e = (h >> 10) & 31, m = h & 1023;
	double v;

	if (e == 31)
		v = m ? NAN : INFINITY;
	else
		v = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
	return h & 0x8000 ? -v : v;
}

/* OCP FP8 E4M3: bias 7, no infinities, S.1111.111 is NaN */
static double qt_e4m3(uint8_t c)
{
	int e = (c >> 3) & 15, m = c & 7;
	double v;

	if (e == 15 && m == 7)
		return NAN;
	v = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
	return c & 0x80 ? -v : v;
}

/* The e4m3 code nearest to @x by search, ties to the even code, saturating. */
static uint8_t qt_e4m3_nearest(double x)
{
	static double mag[0x7f];
	static int init;
	uint8_t sign = signbit(x) ? 0x80 : 0, lo = 0, hi = 0x7e;
	double a = fabs(x);

	if (!init) {
		for (lo = 0; lo < 0x7f; lo++)
			mag[lo] = qt_e4m3(lo);
		init = 1;
		lo = 0;
	}
	if (a >= mag[0x7e])
		return sign | 0x7e;
	while (hi - lo > 1) {		/* mag[lo] <= a < mag[hi] */
		uint8_t mid = (uint8_t)((lo + hi) / 2);

		if (mag[mid] <= a)
			lo = mid;
		else
			hi = mid;
	}
	if (a - mag[lo] < mag[hi] - a)
		return sign | lo;
	if (a - mag[lo] > mag[hi] - a)
		return sign | hi;
	return sign | (lo & 1 ? hi : lo);
}

/* The scale that applies to dim @d of token @tok of one head (layout.h). */
static double qt_scale_at(const struct kv_geometry *g, const uint8_t *block,
			  __u32 layer, __u32 kv, __u32 h, __u32 tok, __u32 d)
{
	const uint8_t *sc = block + kv_scale_offset(g, layer, kv, h);
	uint16_t s16;
	float s;

	if (g->dtype != KV_DTYPE_INT4) {
		memcpy(&s, sc, sizeof(s));
		return s;
	}
	memcpy(&s16, sc + 2 * ((size_t)tok * (g->head_dim / KV_INT4_GROUP) +
			       d / KV_INT4_GROUP), sizeof(s16));
	return qt_f16(s16);
}

/* The value stored for dim @d of token @tok of one head, from bytes and scale. */
static double qt_stored(const struct kv_geometry *g, const uint8_t *block,
			__u32 layer, __u32 kv, __u32 h, __u32 tok, __u32 d)
{
	const uint8_t *row = block + kv_elem_offset(g, layer, kv, h, tok);
	double s = qt_scale_at(g, block, layer, kv, h, tok, d);

	switch (g->dtype) {
	case KV_DTYPE_INT8:
		return (int8_t)row[d] * s;
	case KV_DTYPE_FP8_E4M3:
		return qt_e4m3(row[d]) * s;
	default:
		return ((d & 1 ? row[d / 2] >> 4 : row[d / 2] & 15) - 8) * s;
	}
}

/* Half a quantization step at @x with scale @s (+ float rounding). */
static double qt_halfstep(__u32 dtype, double x, double s)
{
	double t;

	if (dtype == KV_DTYPE_FP8_E4M3)	/* 3 mantissa bits; subnormal step 2^-9 */
		t = fmax(fabs(x) * 0x1p-4, s * 0x1p-10);
	else
		t = s / 2;
	return t * (1 + 0x1p-16) + fabs(x) * 0x1p-22;
}

static uint8_t *qt_block(const struct kv_geometry *g, void *arena, __u64 frame)
{
	return (uint8_t *)arena + frame * kv_frame_bytes(g);
}

static void *qt_arena(const struct kv_geometry *g, __u64 frames)
{
	void *a = aligned_alloc(KV_FRAME_ALIGN, frames * kv_frame_bytes(g));

	if (a)
		memset(a, 0xff, frames * kv_frame_bytes(g));
	return a;
}

/* ---- the e4m3 conversions --------------------------------------------- */

TEST(fp8_e4m3_codes)
{
	unsigned int c, sign;

	for (c = 0; c < 256; c++) {
		float f = kv_fp8_to_f32((uint8_t)c);
		double want = qt_e4m3((uint8_t)c);

		if ((c & 0x7f) == 0x7f) {
			ASSERT_TRUE(isnan(f));
			ASSERT_EQ(0x7fu, kv_f32_to_fp8(f) & 0x7fu);
			continue;
		}
		ASSERT_EQ(want, (double)f);
		ASSERT_EQ(!!signbit(want), !!signbit(f));
		/* decoding then encoding gives the code back */
		ASSERT_EQ(c, (unsigned int)kv_f32_to_fp8(f));
	}
	/* midpoints round to the even code, their neighbours to the nearest */
	for (sign = 0; sign <= 0x80; sign += 0x80) {
		for (c = 0; c < 0x7e; c++) {
			float lo = kv_fp8_to_f32((uint8_t)(sign | c));
			float hi = kv_fp8_to_f32((uint8_t)(sign | (c + 1)));
			float mid = (lo + hi) / 2;
			unsigned int even = c & 1 ? c + 1 : c;

			/* the midpoint is exact in float */
			ASSERT_EQ((double)mid, (qt_e4m3(sign | c) + qt_e4m3(sign | (c + 1))) / 2);
			ASSERT_EQ(sign | even, (unsigned int)kv_f32_to_fp8(mid));
			lo = nextafterf(mid, lo);
			hi = nextafterf(mid, hi);
			ASSERT_EQ(sign | c, (unsigned int)kv_f32_to_fp8(lo));
			ASSERT_EQ(sign | (c + 1), (unsigned int)kv_f32_to_fp8(hi));
		}
	}
	/* saturation at +-448, infinities included */
	{
		const float big[] = { 448.0f, 448.5f, 464.0f, 479.9f, 480.0f, 1e6f,
				      3.4e38f, INFINITY };

		for (c = 0; c < sizeof(big) / sizeof(big[0]); c++) {
			ASSERT_EQ(0x7eu, (unsigned int)kv_f32_to_fp8(big[c]));
			ASSERT_EQ(0xfeu, (unsigned int)kv_f32_to_fp8(-big[c]));
		}
	}
	ASSERT_EQ(0x7fu, kv_f32_to_fp8(NAN) & 0x7fu);
	ASSERT_EQ(0x7fu, kv_f32_to_fp8(-NAN) & 0x7fu);
}

/* Random floats (all exponents, and the e4m3 range densely) against search. */
TEST(fp8_e4m3_random)
{
	uint32_t i, bad = 0;

	kvt_seed(__func__);
	for (i = 0; i < 400000; i++) {
		float f;
		uint8_t got, want;

		if (i % 4 == 0)
			f = kv_bits_f32((uint32_t)kvt_rand64());
		else
			f = (float)ldexp(1.0 + (double)(kvt_rand64() >> 40) * 0x1p-24,
					 (int)kvt_below(30) - 20) * (i & 1 ? -1.0f : 1.0f);
		if (isnan(f))
			continue;
		got = kv_f32_to_fp8(f);
		want = qt_e4m3_nearest(f);
		if (got != want && bad++ < 5)
			TH_LOG("e4m3(%a): got 0x%02x, want 0x%02x", f, got, want);
	}
	EXPECT_EQ(0u, bad);
}

/* ---- append round trips ------------------------------------------------ */

/*
 * One run's writes to one head's K or V, as qt_check_run() checks them:
 * the inputs are rows @row0.. of @x (io dtype @io), written to tokens
 * @tok[0..n) of @block.
 */
struct qt_run {
	const struct kv_geometry *g;
	const uint8_t *block;
	const void *x;
	const __u32 *tok;
	__u64 row0;
	__u32 layer, kv, h, io, n;
	uint64_t bad;		/* values off the rule */
	double worst;		/* largest error / half a step */
};

/* Input value of dim @d of the run's @i-th token. */
static float qt_in(const struct qt_run *r, __u32 i, __u32 d)
{
	return kv_load_f32(r->x, r->io, ((r->row0 + i) * r->g->kv_heads + r->h) *
			   r->g->head_dim + d);
}

/*
 * Dim @d of the run's @i-th token: its code is @want and its value, read
 * back from the bytes and scale, within half a step of the input.
 */
static void qt_check_value(struct qt_run *r, __u32 i, __u32 d, int code, int want)
{
	float xv = qt_in(r, i, d);
	double s = qt_scale_at(r->g, r->block, r->layer, r->kv, r->h, r->tok[i], d);
	double got = qt_stored(r->g, r->block, r->layer, r->kv, r->h, r->tok[i], d);
	double e = fabs(got - xv), t = qt_halfstep(r->g->dtype, xv, s);

	if (s > 0)
		r->worst = fmax(r->worst, e / t);
	if (code == want && e <= t)
		return;
	if (r->bad++ < 5)
		TH_LOG("%s tok %u kv %u h %u d %u: x %g stored %g (code %d, want %d) scale %g",
		       kv_dtype_name(r->g->dtype), r->tok[i], r->kv, r->h, d, xv, got, code,
		       want, s);
}

/* INT8, FP8: scale amax / qmax of the whole run, codes of x * (1 / scale) */
static void qt_check_run8(struct qt_run *r)
{
	const uint8_t *row;
	__u32 hd = r->g->head_dim, i, d;
	float amax = 0.0f, s, inv, y;
	int want;

	for (i = 0; i < r->n; i++)
		for (d = 0; d < hd; d++)
			amax = fmaxf(amax, fabsf(qt_in(r, i, d)));
	s = (float)qt_scale_at(r->g, r->block, r->layer, r->kv, r->h, 0, 0);
	if (s != amax / qt_qmax(r->g->dtype) && r->bad++ < 5)
		TH_LOG("%s kv %u head %u: scale %a, want %a", kv_dtype_name(r->g->dtype),
		       r->kv, r->h, s, amax / qt_qmax(r->g->dtype));
	inv = s > 0.0f ? 1.0f / s : 0.0f;
	for (i = 0; i < r->n; i++) {
		row = r->block + kv_elem_offset(r->g, r->layer, r->kv, r->h, r->tok[i]);
		for (d = 0; d < hd; d++) {
			y = qt_in(r, i, d) * inv;
			if (r->g->dtype == KV_DTYPE_INT8)
				want = (uint8_t)(int8_t)rintf(fminf(fmaxf(y, -127.0f), 127.0f));
			else
				want = qt_e4m3_nearest(y);
			qt_check_value(r, i, d, row[d], want);
		}
	}
}

/* INT4: per token and group, scale binary16(amax / 7), nibbles q + 8 */
static void qt_check_run4(struct qt_run *r)
{
	const uint8_t *row;
	__u32 i, d, grp, dim;
	double s;
	float amax, inv;
	int want, nib;

	for (i = 0; i < r->n; i++) {
		row = r->block + kv_elem_offset(r->g, r->layer, r->kv, r->h, r->tok[i]);
		for (grp = 0; grp < r->g->head_dim / KV_INT4_GROUP; grp++) {
			amax = 0.0f;
			for (d = 0; d < KV_INT4_GROUP; d++)
				amax = fmaxf(amax, fabsf(qt_in(r, i, grp * KV_INT4_GROUP + d)));
			s = qt_scale_at(r->g, r->block, r->layer, r->kv, r->h, r->tok[i],
					grp * KV_INT4_GROUP);
			/* the nearest binary16 */
			if (!(fabs(s - amax / 7.0) <= amax / 7.0 * (0x1p-11 + 0x1p-20) + 0x1p-25) &&
			    r->bad++ < 5)
				TH_LOG("int4 tok %u kv %u h %u group %u: scale %g, amax %g",
				       r->tok[i], r->kv, r->h, grp, s, amax);
			inv = s > 0 ? 1.0f / (float)s : 0.0f;
			for (d = 0; d < KV_INT4_GROUP; d++) {
				dim = grp * KV_INT4_GROUP + d;
				want = (int)rintf(fminf(fmaxf(qt_in(r, i, dim) * inv, -7.0f),
							7.0f)) + 8;
				nib = dim & 1 ? row[dim / 2] >> 4 : row[dim / 2] & 15;
				qt_check_value(r, i, dim, nib, want);
			}
		}
	}
}

/*
 * Check the bytes of frame @frame, layer @layer, for the @n tokens whose
 * inputs are rows @row0.. of @k/@v (io dtype @io) and which one run wrote
 * to tokens @tok[i] of the block, starting it anew (token 0 among them, or
 * a block never written): the scales and codes of the documented rule,
 * each value within half a step of its input. Returns the number of bad
 * values; raises @worst to the largest error as a fraction of half a step.
 */
static uint64_t qt_check_run(const struct kv_geometry *g, void *arena, __u64 frame,
			     __u32 layer, const void *k, const void *v, __u32 io,
			     __u64 row0, const __u32 *tok, __u32 n, double *worst)
{
	struct qt_run r = {
		.g = g, .block = qt_block(g, arena, frame), .tok = tok, .row0 = row0,
		.layer = layer, .io = io, .n = n, .worst = *worst,
	};

	for (r.kv = KV_K; r.kv <= KV_V; r.kv++) {
		r.x = r.kv == KV_K ? k : v;
		for (r.h = 0; r.h < g->kv_heads; r.h++) {
			if (g->dtype == KV_DTYPE_INT4)
				qt_check_run4(&r);
			else
				qt_check_run8(&r);
		}
	}
	*worst = r.worst;
	return r.bad;
}

/*
 * Mark in @mask the bytes an append of the tokens at @slots may write:
 * their rows of layer @layer and the scales of their heads.
 */
static void qt_mark(const struct kv_geometry *g, uint8_t *mask, __u32 layer,
		    const __s64 *slots, __u32 n)
{
	__u32 i, kv, h, bt = g->block_tokens;

	for (i = 0; i < n; i++) {
		__u64 frame, tok, fo;

		if (slots[i] < 0)
			continue;
		frame = (__u64)slots[i] / bt;
		tok = (__u64)slots[i] % bt;
		fo = frame * kv_frame_bytes(g);
		for (kv = KV_K; kv <= KV_V; kv++) {
			for (h = 0; h < g->kv_heads; h++) {
				__u64 so = fo + kv_scale_offset(g, layer, kv, h);

				memset(mask + fo + kv_elem_offset(g, layer, kv, h, (__u32)tok), 1,
				       kv_row_bytes(g));
				if (g->dtype == KV_DTYPE_INT4)
					memset(mask + so + 2 * tok * (g->head_dim / KV_INT4_GROUP),
					       1, 2 * (g->head_dim / KV_INT4_GROUP));
				else
					memset(mask + so, 1, 4);
			}
		}
	}
}

static void roundtrip(struct __test_metadata *_metadata, __u32 dtype, __u32 io,
		      __u32 hd, __u32 bt)
{
	struct kv_geometry g = { .layers = 2, .kv_heads = 2, .head_dim = hd,
				 .block_tokens = bt, .dtype = dtype };
	__u32 frames = 7, nblk = 5, ntok = 4 * bt + 5, layer = 1, perm[7], i, b;
	__u64 fb = kv_frame_bytes(&g), asz = frames * fb, esz = kv_dtype_size(io);
	__u64 nval = (__u64)ntok * g.kv_heads * hd, off;
	uint8_t *arena = qt_arena(&g, frames), *arena1 = qt_arena(&g, frames);
	uint8_t *mask = calloc(asz, 1);
	void *k = malloc(nval * esz), *v = malloc(nval * esz);
	__s64 *slots = malloc(sizeof(*slots) * ntok);
	__u32 *tok = malloc(sizeof(*tok) * bt);
	struct kv_append_args a;
	double worst = 0.0;
	uint64_t bad = 0, changed = 0;

	ASSERT_TRUE(arena && arena1 && mask && k && v && slots && tok);
	for (i = 0; i < frames; i++)
		perm[i] = i;
	kvt_shuffle_u32(perm, frames);
	/* head 1's values larger than head 0's, K larger than V: own scales */
	for (i = 0; i < ntok * g.kv_heads; i++) {
		qt_fill_gauss((char *)k + (size_t)i * hd * esz, io, hd, i % 2 ? 3.0 : 1.5);
		qt_fill_gauss((char *)v + (size_t)i * hd * esz, io, hd, i % 2 ? 1.0 : 0.25);
	}
	/* blocks in a shuffled order: runs of consecutive tokens, one per frame */
	for (i = 0; i < ntok; i++)
		slots[i] = (__s64)perm[i / bt] * bt + i % bt;
	qt_mark(&g, mask, layer, slots, ntok);

	a = (struct kv_append_args){
		.arena = { .base = arena, .frames = frames, .g = g },
		.layer = layer, .tokens = ntok, .k = k, .v = v, .slots = slots,
		.threads = 3, .io_dtype = io,
	};
	ASSERT_EQ(0, kv_append_cpu(&a));
	for (b = 0; b < nblk; b++) {
		__u32 n = b + 1 < nblk ? bt : ntok - b * bt;

		for (i = 0; i < n; i++)
			tok[i] = i;
		bad += qt_check_run(&g, arena, perm[b], layer, k, v, io, (__u64)b * bt,
				    tok, n, &worst);
	}
	/* nothing else written: the other layer, the unused frames, the tail */
	for (off = 0; off < asz; off++) {
		if (mask[off])
			continue;
		if (arena[off] != 0xff && changed++ < 3)
			TH_LOG("byte %llu (frame %llu + %llu) written",
			       (unsigned long long)off, (unsigned long long)(off / fb),
			       (unsigned long long)(off % fb));
	}
	/* threads only share out the work: the same bytes */
	a.arena.base = arena1;
	a.threads = 1;
	ASSERT_EQ(0, kv_append_cpu(&a));
	EXPECT_EQ(0, memcmp(arena, arena1, asz));
	ksft_print_msg("roundtrip %s from %s hd %u bt %u: worst error %.3f of half a step\n",
		       kv_dtype_name(dtype), kv_dtype_name(io), hd, bt, worst);
	EXPECT_EQ(0u, bad);
	EXPECT_EQ(0u, changed);
	free(arena);
	free(arena1);
	free(mask);
	free(k);
	free(v);
	free(slots);
	free(tok);
}

TEST(roundtrip_int8)
{
	kvt_seed(__func__);
	roundtrip(_metadata, KV_DTYPE_INT8, KV_DTYPE_BF16, 64, 16);
	roundtrip(_metadata, KV_DTYPE_INT8, KV_DTYPE_FP16, 128, 32);
}

TEST(roundtrip_fp8)
{
	kvt_seed(__func__);
	roundtrip(_metadata, KV_DTYPE_FP8_E4M3, KV_DTYPE_BF16, 128, 16);
	roundtrip(_metadata, KV_DTYPE_FP8_E4M3, KV_DTYPE_FP16, 64, 32);
}

TEST(roundtrip_int4)
{
	kvt_seed(__func__);
	roundtrip(_metadata, KV_DTYPE_INT4, KV_DTYPE_BF16, 64, 32);
	roundtrip(_metadata, KV_DTYPE_INT4, KV_DTYPE_FP16, 128, 16);
}

/* ---- the per-block scale of INT8 and FP8 ---------------------------------- */

/* Append @n tokens of @k/@v (rows from 0) at @slots; the kernel's return. */
static int qt_append(const struct kv_geometry *g, void *arena, __u64 frames,
		     __u32 layer, const void *k, const void *v, __u32 io,
		     const __s64 *slots, __u32 n, __s32 *status)
{
	struct kv_append_args a = {
		.arena = { .base = arena, .frames = frames, .g = *g },
		.layer = layer, .tokens = n, .k = k, .v = v, .slots = slots,
		.status = status, .threads = 1 + kvt_below(3), .io_dtype = io,
	};

	return kv_append_cpu(&a);
}

/*
 * Tokens appended one at a time into one block, a few with a larger amax
 * than all before: the scale is the largest amax / qmax so far, and every
 * token written stays within the half steps of the scales it has been
 * quantized to (once, then once per growth); a token that does not raise
 * the scale leaves the others' bytes alone.
 */
static void scale_growth(struct __test_metadata *_metadata, __u32 dtype, __u32 io)
{
	struct kv_geometry g = { 1, 2, 64, 16, dtype, 0 };
	const __u32 hd = 64, kvh = 2, bt = 16, frame = 1;
	__u64 fb = kv_frame_bytes(&g), esz = kv_dtype_size(io), row = (__u64)kvh * hd;
	float qmax = qt_qmax(dtype);
	uint8_t *arena = qt_arena(&g, 3), *prev = malloc(fb);
	void *k = malloc(bt * row * esz), *v = malloc(bt * row * esz);
	double *tol = calloc((size_t)bt * 2 * row, sizeof(double));
	__u32 t, u, kv, h, d, growths = 0, kept = 0;
	uint64_t bad = 0;

	ASSERT_TRUE(arena && prev && k && v && tol);
	for (t = 0; t < bt; t++) {
		/* tokens 3 and 9 raise the amax; the others are below it */
		double amp = t == 3 ? 10.0 : t == 9 ? 100.0 : t == 0 ? 1.0 : 0.1;

		for (h = 0; h < kvh; h++) {
			qt_fill_gauss((char *)k + (t * row + h * hd) * esz, io, hd,
				      amp * (h ? 2.0 : 1.0));
			qt_fill_gauss((char *)v + (t * row + h * hd) * esz, io, hd,
				      amp * (h ? 0.5 : 3.0));
		}
	}
	for (t = 0; t < bt; t++) {
		__s64 slot = (__s64)frame * bt + t;
		float old[2][2];

		for (kv = 0; kv < 2; kv++)
			for (h = 0; h < kvh; h++)
				old[kv][h] = (float)qt_scale_at(&g, qt_block(&g, arena, frame),
								0, kv, h, 0, 0);
		memcpy(prev, qt_block(&g, arena, frame), fb);
		ASSERT_EQ(0, qt_append(&g, arena, 3, 0, (char *)k + t * row * esz,
				       (char *)v + t * row * esz, io, &slot, 1, NULL));
		for (kv = 0; kv < 2; kv++) {
			const void *x = kv == KV_K ? k : v;

			for (h = 0; h < kvh; h++) {
				const uint8_t *blk = qt_block(&g, arena, frame);
				float amax = 0.0f, want, s;
				const uint8_t *rows = blk + kv_elem_offset(&g, 0, kv, h, 0);
				const uint8_t *prows = prev + kv_elem_offset(&g, 0, kv, h, 0);
				double *tl = tol + ((size_t)kv * kvh + h) * bt * hd;

				for (d = 0; d < hd; d++)
					amax = fmaxf(amax, fabsf(kv_load_f32(x, io, t * row + h * hd + d)));
				want = t == 0 || amax / qmax > old[kv][h] ? amax / qmax : old[kv][h];
				s = (float)qt_scale_at(&g, blk, 0, kv, h, 0, 0);
				ASSERT_EQ(want, s);
				if (t && s > old[kv][h]) {
					growths++;
					for (u = 0; u < t; u++)
						for (d = 0; d < hd; d++)
							tl[u * hd + d] += 1.125 * qt_halfstep(dtype,
								kv_load_f32(x, io, u * row + h * hd + d), s);
				} else if (t) {
					kept++;
					/* the earlier tokens' bytes are as they were */
					EXPECT_EQ(0, memcmp(rows, prows, (size_t)t * hd));
				}
				for (d = 0; d < hd; d++)
					tl[t * hd + d] = qt_halfstep(dtype,
						kv_load_f32(x, io, t * row + h * hd + d), s);
				for (u = 0; u <= t; u++) {
					for (d = 0; d < hd; d++) {
						float xv = kv_load_f32(x, io, u * row + h * hd + d);
						double got = qt_stored(&g, blk, 0, kv, h, u, d);

						if (!(fabs(got - xv) <= tl[u * hd + d]) && bad++ < 5)
							TH_LOG("%s after token %u: token %u kv %u h %u d %u: x %g stored %g tol %g",
							       kv_dtype_name(dtype), t, u, kv, h, d, xv,
							       got, tl[u * hd + d]);
					}
				}
			}
		}
	}
	ksft_print_msg("scale_growth %s: %u growths, %u kept\n", kv_dtype_name(dtype), growths,
		       kept);
	EXPECT_EQ(8u, growths);		/* tokens 3 and 9, K and V, 2 heads */
	EXPECT_EQ(0u, bad);
	free(arena);
	free(prev);
	free(k);
	free(v);
	free(tol);
}

TEST(scale_growth_int8)
{
	kvt_seed(__func__);
	scale_growth(_metadata, KV_DTYPE_INT8, KV_DTYPE_BF16);
	scale_growth(_metadata, KV_DTYPE_INT8, KV_DTYPE_FP16);
}

TEST(scale_growth_fp8)
{
	kvt_seed(__func__);
	scale_growth(_metadata, KV_DTYPE_FP8_E4M3, KV_DTYPE_BF16);
}

/*
 * A run that writes token 0 starts the block anew: a reused frame whose
 * scale is huge (from large values, or stale bytes) gets the run's small
 * scale. A run that does not write token 0 keeps the larger old scale.
 */
static void scale_reset(struct __test_metadata *_metadata, __u32 dtype)
{
	struct kv_geometry g = { 2, 2, 64, 16, dtype, 0 };
	const __u32 hd = 64, kvh = 2, bt = 16, io = KV_DTYPE_BF16;
	__u64 row = (__u64)kvh * hd, esz = 2;
	float qmax = qt_qmax(dtype), stale = 1e30f;
	uint8_t *arena = qt_arena(&g, 4);
	void *big = malloc(bt * row * esz), *k = malloc(bt * row * esz);
	void *v = malloc(bt * row * esz);
	__s64 slots[16];
	__u32 i, kv, h, tok[16];
	double worst = 0.0;

	ASSERT_TRUE(arena && big && k && v);
	qt_fill_gauss(big, io, bt * row, 1000.0);
	qt_fill_gauss(k, io, bt * row, 1.0);
	qt_fill_gauss(v, io, bt * row, 0.5);
	for (i = 0; i < bt; i++) {
		slots[i] = 2 * bt + i;
		tok[i] = i;
	}
	/* frame 2: a full block of large values, then 4 small ones from token 0 */
	ASSERT_EQ(0, qt_append(&g, arena, 4, 1, big, big, io, slots, bt, NULL));
	ASSERT_EQ(0, qt_append(&g, arena, 4, 1, k, v, io, slots, 4, NULL));
	EXPECT_EQ(0u, qt_check_run(&g, arena, 2, 1, k, v, io, 0, tok, 4, &worst));
	for (kv = 0; kv < 2; kv++)
		for (h = 0; h < kvh; h++)
			EXPECT_LT(qt_scale_at(&g, qt_block(&g, arena, 2), 1, kv, h, 0, 0),
				  10.0 / qmax);

	/* frame 3: stale bytes, every scale 1e30, then a run from token 0 */
	for (kv = 0; kv < 2; kv++)
		for (h = 0; h < kvh; h++)
			memcpy(qt_block(&g, arena, 3) + kv_scale_offset(&g, 1, kv, h),
			       &stale, sizeof(stale));
	for (i = 0; i < 7; i++)
		slots[i] = 3 * bt + i;
	ASSERT_EQ(0, qt_append(&g, arena, 4, 1, k, v, io, slots, 7, NULL));
	EXPECT_EQ(0u, qt_check_run(&g, arena, 3, 1, k, v, io, 0, tok, 7, &worst));

	/* frame 1: large values, then small ones from token 5: the scale stays */
	for (i = 0; i < bt; i++)
		slots[i] = bt + i;
	ASSERT_EQ(0, qt_append(&g, arena, 4, 1, big, big, io, slots, bt, NULL));
	{
		float before[2][2];

		for (kv = 0; kv < 2; kv++)
			for (h = 0; h < kvh; h++)
				before[kv][h] = (float)qt_scale_at(&g, qt_block(&g, arena, 1),
								   1, kv, h, 0, 0);
		ASSERT_EQ(0, qt_append(&g, arena, 4, 1, k, v, io, slots + 5, 4, NULL));
		for (kv = 0; kv < 2; kv++)
			for (h = 0; h < kvh; h++)
				EXPECT_EQ(before[kv][h],
					  (float)qt_scale_at(&g, qt_block(&g, arena, 1), 1, kv,
							     h, 0, 0));
	}

	/*
	 * frame 0, never written (its scales NaN, from the poison), from
	 * token 5: a NaN scale cannot be the larger, the run's is taken
	 */
	for (i = 0; i < 4; i++) {
		slots[i] = 5 + i;
		tok[i] = 5 + i;
	}
	ASSERT_EQ(0, qt_append(&g, arena, 4, 1, k, v, io, slots, 4, NULL));
	EXPECT_EQ(0u, qt_check_run(&g, arena, 0, 1, k, v, io, 0, tok, 4, &worst));
	ksft_print_msg("scale_reset %s: worst error %.3f of half a step\n", kv_dtype_name(dtype),
		       worst);
	free(arena);
	free(big);
	free(k);
	free(v);
}

TEST(scale_reset_int8)
{
	kvt_seed(__func__);
	scale_reset(_metadata, KV_DTYPE_INT8);
}

TEST(scale_reset_fp8)
{
	kvt_seed(__func__);
	scale_reset(_metadata, KV_DTYPE_FP8_E4M3);
}

/* A frame written by two runs of one call: -EINVAL, nothing written. */
static void two_runs(struct __test_metadata *_metadata, __u32 dtype)
{
	struct kv_geometry g = { 2, 2, 64, 16, dtype, 0 };
	const __u32 io = KV_DTYPE_FP16, n = 6;
	__u64 asz = 4 * kv_frame_bytes(&g), row = 2 * 64;
	uint8_t *arena = qt_arena(&g, 4), *before = malloc(asz);
	void *k = malloc(n * row * 2), *v = malloc(n * row * 2);
	/* frame 1 twice: around frame 2, around padding, out of order */
	const __s64 bad[][6] = {
		{ 16, 17, 32, 18, 33, 34 },
		{ 16, 17, -1, 18, 32, 33 },
		{ 32, 16, 17, 33, 18, 19 },
		{ 16, -1, -1, 17, 48, 49 },
	};
	const __s64 good[6] = { 16, 17, -1, 32, 33, -1 };
	__s32 status;
	__u32 i;

	ASSERT_TRUE(arena && before && k && v);
	qt_fill_gauss(k, io, n * row, 1.0);
	qt_fill_gauss(v, io, n * row, 1.0);
	/* something in the frames first, so that "nothing written" means it */
	ASSERT_EQ(0, qt_append(&g, arena, 4, 0, k, v, io, good, n, NULL));
	ASSERT_EQ(0, qt_append(&g, arena, 4, 1, k, v, io, good, n, NULL));
	memcpy(before, arena, asz);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		status = 0;
		EXPECT_EQ(-EINVAL, qt_append(&g, arena, 4, 1, k, v, io, bad[i], n, &status));
		EXPECT_EQ(-EINVAL, status);
		EXPECT_EQ(0, memcmp(before, arena, asz));
	}
	status = 0;
	EXPECT_EQ(0, qt_append(&g, arena, 4, 1, k, v, io, good, n, &status));
	EXPECT_EQ(0, status);
	free(arena);
	free(before);
	free(k);
	free(v);
}

TEST(two_runs_one_frame)
{
	kvt_seed(__func__);
	two_runs(_metadata, KV_DTYPE_INT8);
	two_runs(_metadata, KV_DTYPE_FP8_E4M3);
}

/*
 * Negative slots are skipped: huge values at padded tokens reach neither
 * the bytes nor the scales; the arena is the one the same call without the
 * padding gives.
 */
TEST(negative_slots_skipped)
{
	const __s64 padded[8] = { 16, 17, 18, -1, 32, 33, -7, INT64_MIN };
	const __s64 packed[5] = { 16, 17, 18, 32, 33 };
	const __u32 map[5] = { 0, 1, 2, 4, 5 }, io = KV_DTYPE_FP16;
	__u32 qi, i, tok[3] = { 0, 1, 2 };

	kvt_seed(__func__);
	for (qi = 0; qi < 3; qi++) {
		struct kv_geometry g = { 2, 2, 64, 16, qtypes[qi], 0 };
		__u64 asz = 3 * kv_frame_bytes(&g), row = 2 * 64;
		uint8_t *a1 = qt_arena(&g, 3), *a2 = qt_arena(&g, 3);
		void *k = malloc(8 * row * 2), *v = malloc(8 * row * 2);
		void *k2 = malloc(5 * row * 2), *v2 = malloc(5 * row * 2);
		double worst = 0.0;

		ASSERT_TRUE(a1 && a2 && k && v && k2 && v2);
		qt_fill_gauss(k, io, 8 * row, 1.0);
		qt_fill_gauss(v, io, 8 * row, 1.0);
		for (i = 0; i < 8; i++) {
			if (padded[i] >= 0)
				continue;
			qt_fill_gauss((char *)k + i * row * 2, io, row, 10000.0);
			qt_fill_gauss((char *)v + i * row * 2, io, row, 10000.0);
		}
		for (i = 0; i < 5; i++) {
			memcpy((char *)k2 + i * row * 2, (char *)k + map[i] * row * 2, row * 2);
			memcpy((char *)v2 + i * row * 2, (char *)v + map[i] * row * 2, row * 2);
		}
		ASSERT_EQ(0, qt_append(&g, a1, 3, 1, k, v, io, padded, 8, NULL));
		ASSERT_EQ(0, qt_append(&g, a2, 3, 1, k2, v2, io, packed, 5, NULL));
		EXPECT_EQ(0, memcmp(a1, a2, asz));
		EXPECT_EQ(0u, qt_check_run(&g, a1, 1, 1, k, v, io, 0, tok, 3, &worst));
		/* all padding: nothing at all */
		memcpy(a2, a1, asz);
		ASSERT_EQ(0, qt_append(&g, a1, 3, 0, k, v, io, padded + 6, 2, NULL));
		EXPECT_EQ(0, memcmp(a1, a2, asz));
		free(a1);
		free(a2);
		free(k);
		free(v);
		free(k2);
		free(v2);
	}
}

/* ---- attention on quantized KV ------------------------------------------ */

/**
 * struct qt_case - paged KV of a batch, appended into a quantized arena
 * @k, @v:   [total][kv_heads][head_dim] of @io: the unquantized inputs,
 *           sequence b's token t at row first[b] + t
 * @kx, @vx: the same as double
 * @kq, @vq: the values stored for them, read back from the arena's bytes
 *           and scales (qt_stored())
 * @slots:   [total] the slot of each row (shuffled frames)
 * The block table is as kv_test.h's: entries past a context hold frame
 * numbers past the arena.
 */
struct qt_case {
	struct kv_geometry g;
	__u32 io, layer, batch, stride;
	__u64 frames, total;
	uint8_t *arena;
	__u32 *table, *ctx;
	__u64 *first;
	void *k, *v;
	double *kx, *vx, *kq, *vq;
	__s64 *slots;
};

/* relative errors of one run against float64 on the inputs and on the stored values */
struct qt_err {
	double in, stored;
};

static void qt_case_free(struct qt_case *c)
{
	free(c->arena);
	free(c->table);
	free(c->ctx);
	free(c->first);
	free(c->k);
	free(c->v);
	free(c->kx);
	free(c->vx);
	free(c->kq);
	free(c->vq);
	free(c->slots);
	memset(c, 0, sizeof(*c));
}

/* Read back what the arena holds for every row of the case. */
static void qt_case_readback(struct qt_case *c)
{
	const struct kv_geometry *g = &c->g;
	__u32 bt = g->block_tokens, hd = g->head_dim, b, t, h, d;

	for (b = 0; b < c->batch; b++) {
		const __u32 *trow = c->table + (size_t)b * c->stride;

		for (t = 0; t < c->ctx[b]; t++) {
			const uint8_t *blk = qt_block(g, c->arena, trow[t / bt]);

			for (h = 0; h < g->kv_heads; h++) {
				__u64 o = ((c->first[b] + t) * g->kv_heads + h) * hd;

				for (d = 0; d < hd; d++) {
					c->kq[o + d] = qt_stored(g, blk, c->layer, KV_K, h, t % bt, d);
					c->vq[o + d] = qt_stored(g, blk, c->layer, KV_V, h, t % bt, d);
				}
			}
		}
	}
}

/*
 * Build a case and append its KV in two calls split at @cut[b] in each
 * sequence (the cached prefix, then the new tokens; the other call's
 * tokens are padding), so blocks that straddle the cut are appended to.
 * @outliers: values made 100x larger in K and V.
 */
static int qt_case_init(struct qt_case *c, const struct kv_geometry *g, __u32 io,
			__u32 layer, __u32 batch, const __u32 *ctx, const __u32 *cut,
			__u32 outliers)
{
	__u32 bt = g->block_tokens, b, t, i, maxblk = 0, next = 0, *perm;
	__u64 used = 0, esz = kv_dtype_size(io), row = (__u64)g->kv_heads * g->head_dim, e;
	__s64 *part;
	int pass;

	memset(c, 0, sizeof(*c));
	c->g = *g;
	c->io = io;
	c->layer = layer;
	c->batch = batch;
	for (b = 0; b < batch; b++) {
		__u32 nb = (ctx[b] + bt - 1) / bt;

		used += nb;
		c->total += ctx[b];
		if (nb > maxblk)
			maxblk = nb;
	}
	c->stride = maxblk + 1;
	c->frames = used + 3;
	c->arena = qt_arena(g, c->frames);
	c->table = malloc(sizeof(__u32) * batch * c->stride);
	c->ctx = malloc(sizeof(__u32) * batch);
	c->first = malloc(sizeof(__u64) * batch);
	c->k = malloc(c->total * row * esz + 1);
	c->v = malloc(c->total * row * esz + 1);
	c->kx = malloc(sizeof(double) * (c->total * row + 1));
	c->vx = malloc(sizeof(double) * (c->total * row + 1));
	c->kq = malloc(sizeof(double) * (c->total * row + 1));
	c->vq = malloc(sizeof(double) * (c->total * row + 1));
	c->slots = malloc(sizeof(__s64) * (c->total + 1));
	part = malloc(sizeof(__s64) * (c->total + 1));
	perm = malloc(sizeof(__u32) * c->frames);
	if (!c->arena || !c->table || !c->ctx || !c->first || !c->k || !c->v ||
	    !c->kx || !c->vx || !c->kq || !c->vq || !c->slots || !part || !perm) {
		free(part);
		free(perm);
		qt_case_free(c);
		return -1;
	}
	for (i = 0; i < c->frames; i++)
		perm[i] = i;
	kvt_shuffle_u32(perm, (__u32)c->frames);
	qt_fill_gauss(c->k, io, c->total * row, 1.0);
	qt_fill_gauss(c->v, io, c->total * row, 1.0);
	for (i = 0; i < outliers; i++) {
		e = kvt_rand64() % (c->total * row);
		kv_store_f32(i % 2 ? c->v : c->k, io, e,
			     100.0f * kv_load_f32(i % 2 ? c->v : c->k, io, e));
	}
	for (e = 0; e < c->total * row; e++) {
		c->kx[e] = kv_load_f32(c->k, io, e);
		c->vx[e] = kv_load_f32(c->v, io, e);
	}
	for (b = 0, i = 0; b < batch; b++) {
		__u32 *trow = c->table + (size_t)b * c->stride;

		c->ctx[b] = ctx[b];
		c->first[b] = i;
		for (t = 0; t < c->stride; t++)
			trow[t] = t * bt < ctx[b] ? perm[next++] : 0xfffffff0u - t;
		for (t = 0; t < ctx[b]; t++, i++)
			c->slots[i] = (__s64)trow[t / bt] * bt + t % bt;
	}
	free(perm);
	for (pass = 0; pass < 2; pass++) {
		for (b = 0; b < batch; b++)
			for (t = 0; t < ctx[b]; t++)
				part[c->first[b] + t] = (t < cut[b]) == !pass ?
							c->slots[c->first[b] + t] : -1;
		if (qt_append(g, c->arena, c->frames, layer, c->k, c->v, io, part,
			      (__u32)c->total, NULL)) {
			free(part);
			qt_case_free(c);
			return -1;
		}
	}
	free(part);
	qt_case_readback(c);
	return 0;
}

/*
 * float64 attention of the query @q (head_dim doubles, times the softmax
 * scale) of sequence @b through kv head @h over tokens [lo, hi) of the K
 * and V rows @kd, @vd; @s: scratch of @hi doubles.
 */
static void qt_attend_ref(const struct qt_case *c, const double *kd, const double *vd,
			  __u32 b, const double *q, __u32 h, __u32 lo, __u32 hi,
			  double *s, double *ref)
{
	__u32 hd = c->g.head_dim, kvh = c->g.kv_heads, t, d;
	double mx = -INFINITY, sum = 0.0;

	for (t = lo; t < hi; t++) {
		const double *k = kd + ((c->first[b] + t) * kvh + h) * hd;
		double dot = 0.0;

		for (d = 0; d < hd; d++)
			dot += q[d] * k[d];
		s[t] = dot;
		mx = fmax(mx, dot);
	}
	for (d = 0; d < hd; d++)
		ref[d] = 0.0;
	for (t = lo; t < hi; t++) {
		const double *v = vd + ((c->first[b] + t) * kvh + h) * hd;
		double p = exp(s[t] - mx);

		sum += p;
		for (d = 0; d < hd; d++)
			ref[d] += p * v[d];
	}
	for (d = 0; d < hd && sum > 0.0; d++)
		ref[d] /= sum;
}

/* Both references of query row @qo of @q (io dtype) into @ref and @refq. */
static void qt_refs(const struct qt_case *c, const void *q, __u64 qo, float scale,
		    __u32 b, __u32 h, __u32 lo, __u32 hi, double *s, double *qd,
		    double *ref, double *refq)
{
	__u32 d;

	for (d = 0; d < c->g.head_dim; d++)
		qd[d] = (double)kv_load_f32(q, c->io, qo + d) * scale;
	qt_attend_ref(c, c->kx, c->vx, b, qd, h, lo, hi, s, ref);
	qt_attend_ref(c, c->kq, c->vq, b, qd, h, lo, hi, s, refq);
}

/*
 * struct qt_call - what an attention call on a case needs beside its
 * arguments: queries and outputs of @n values (io dtype), both float64
 * references, and the references' scratch
 */
struct qt_call {
	__u64 n;
	void *q, *out;
	double *ref, *refq, *qd, *s;
};

/* gaussian queries, poisoned outputs, for contexts up to the case's longest */
static void qt_call_init(struct qt_call *r, const struct qt_case *c, __u64 n)
{
	__u64 esz = kv_dtype_size(c->io);
	__u32 b, maxctx = 1;

	for (b = 0; b < c->batch; b++)
		maxctx = c->ctx[b] > maxctx ? c->ctx[b] : maxctx;
	r->n = n;
	r->q = malloc(n * esz + 1);
	r->out = malloc(n * esz + 1);
	r->ref = calloc(n + 1, sizeof(double));
	r->refq = calloc(n + 1, sizeof(double));
	r->qd = malloc(sizeof(double) * c->g.head_dim);
	r->s = malloc(sizeof(double) * maxctx);
	if (!r->q || !r->out || !r->ref || !r->refq || !r->qd || !r->s)
		abort();
	qt_fill_gauss(r->q, c->io, n, 1.0);
	kvt_fill_nan(r->out, c->io, n);
}

/*
 * The call's return @ret (0 expected) and its relative errors against
 * float64 (+inf when an output is not finite, e.g. still the NaN poison;
 * -1 when the call failed); frees @r.
 */
static struct qt_err qt_call_end(struct __test_metadata *_metadata, const struct qt_case *c,
				struct qt_call *r, int ret)
{
	struct qt_err err = { -1.0, -1.0 };

	EXPECT_EQ(0, ret);
	if (!ret) {
		err.in = kvt_rel_err(r->out, c->io, r->ref, r->n);
		err.stored = kvt_rel_err(r->out, c->io, r->refq, r->n);
	}
	free(r->q);
	free(r->out);
	free(r->ref);
	free(r->refq);
	free(r->qd);
	free(r->s);
	return err;
}

/* Decode on a case (a window of @window tokens, 0 for none). */
static struct qt_err qt_decode(struct __test_metadata *_metadata,
			       const struct qt_case *c, __u32 ratio, __u32 window)
{
	__u32 hd = c->g.head_dim, qh = ratio * c->g.kv_heads, b, j;
	float scale = 1.0f / sqrtf((float)hd);
	struct kv_decode_args a;
	struct qt_call r;

	qt_call_init(&r, c, (__u64)c->batch * qh * hd);
	for (b = 0; b < c->batch; b++) {
		__u32 ctx = c->ctx[b], lo = window && ctx > window ? ctx - window : 0;

		for (j = 0; j < qh; j++) {
			__u64 qo = ((__u64)b * qh + j) * hd;

			qt_refs(c, r.q, qo, scale, b, j / ratio, lo, ctx, r.s, r.qd, r.ref + qo,
				r.refq + qo);
		}
	}
	a = (struct kv_decode_args){
		.arena = { .base = c->arena, .frames = c->frames, .g = c->g },
		.layer = c->layer, .batch = c->batch, .q_heads = qh, .window = window,
		.scale = scale, .table_stride = c->stride, .q = r.q, .out = r.out,
		.block_table = c->table, .ctx_lens = c->ctx,
		.threads = 1 + kvt_below(3), .io_dtype = c->io,
	};
	return qt_call_end(_metadata, c, &r, kv_decode_cpu(&a));
}

/* Prefill of the last @nq[b] tokens of each sequence; as qt_decode(). */
static struct qt_err qt_prefill(struct __test_metadata *_metadata,
				const struct qt_case *c, __u32 ratio, const __u32 *nq)
{
	__u32 hd = c->g.head_dim, qh = ratio * c->g.kv_heads, b, i, j, maxq = 0;
	__u32 *q_start = malloc(sizeof(__u32) * (c->batch + 1));
	float scale = 1.0f / sqrtf((float)hd);
	struct kv_prefill_args a;
	struct qt_call r;
	struct qt_err err;

	if (!q_start)
		abort();
	q_start[0] = 0;
	for (b = 0; b < c->batch; b++) {
		q_start[b + 1] = q_start[b] + nq[b];
		maxq = nq[b] > maxq ? nq[b] : maxq;
	}
	qt_call_init(&r, c, (__u64)q_start[c->batch] * qh * hd);
	for (b = 0; b < c->batch; b++) {
		for (i = 0; i < nq[b]; i++) {
			__u32 pos = c->ctx[b] - nq[b] + i;

			for (j = 0; j < qh; j++) {
				__u64 qo = ((__u64)(q_start[b] + i) * qh + j) * hd;

				qt_refs(c, r.q, qo, scale, b, j / ratio, 0, pos + 1, r.s, r.qd,
					r.ref + qo, r.refq + qo);
			}
		}
	}
	a = (struct kv_prefill_args){
		.arena = { .base = c->arena, .frames = c->frames, .g = c->g },
		.layer = c->layer, .batch = c->batch, .q_heads = qh, .scale = scale,
		.table_stride = c->stride, .tokens = q_start[c->batch], .max_q_len = maxq,
		.threads = 1 + kvt_below(3), .io_dtype = c->io, .q = r.q, .out = r.out,
		.q_start = q_start, .block_table = c->table, .ctx_lens = c->ctx,
	};
	err = qt_call_end(_metadata, c, &r, kv_prefill_cpu(&a));
	free(q_start);
	return err;
}

/* hd, block_tokens, GQA ratio, io dtype, kv heads, decode window */
static const struct qt_cfg {
	__u32 hd, bt, ratio, io, kvh, window;
} qt_cfgs[] = {
	{ 64, 16, 4, KV_DTYPE_BF16, 2, 0 },
	{ 128, 32, 8, KV_DTYPE_FP16, 1, 0 },
	{ 128, 16, 8, KV_DTYPE_BF16, 2, 0 },
	{ 64, 32, 4, KV_DTYPE_FP16, 1, 50 },
};

static const __u32 prefixes[] = { 0, 1, 15, 16, 1000 };

/*
 * Check one run's errors: against the inputs within the quantized type's
 * bound; against the stored values within the unquantized bound of the io
 * dtype (kvt_bound(): float math, outputs rounded to fp16 or bf16), which
 * shows the kernel attends to exactly what the arena holds.
 */
static void qt_check_err(struct __test_metadata *_metadata, const char *what,
			 __u32 dtype, __u32 io, struct qt_err e)
{
	ksft_print_msg("%s: rel err %.5f vs inputs (bound %g), %.5f vs stored values (bound %g)\n",
		       what, e.in, qt_bound(dtype), e.stored, kvt_bound(io));
	EXPECT_GE(e.in, 0.0);
	EXPECT_LE(e.in, qt_bound(dtype));
	EXPECT_GE(e.stored, 0.0);
	EXPECT_LE(e.stored, kvt_bound(io));
}

static void attention(struct __test_metadata *_metadata, __u32 dtype)
{
	__u32 ci, b, ctx[6], cut[6], nq[6];
	char what[128];

	kvt_seed(kv_dtype_name(dtype));
	for (ci = 0; ci < sizeof(qt_cfgs) / sizeof(qt_cfgs[0]); ci++) {
		const struct qt_cfg *f = &qt_cfgs[ci];
		struct kv_geometry g = { 2, f->kvh, f->hd, f->bt, dtype, 0 };
		struct qt_case c;

		/* decode: ragged contexts (1, block edges, random) */
		kvt_ragged(ctx, 6, f->bt, 300);
		for (b = 0; b < 6; b++)
			cut[b] = kvt_below(ctx[b] + 1);
		ASSERT_EQ(0, qt_case_init(&c, &g, f->io, kvt_below(2), 6, ctx, cut, 0));
		snprintf(what, sizeof(what), "decode  %-4s hd %3u bt %2u gqa %u:1 io %s window %2u",
			 kv_dtype_name(dtype), f->hd, f->bt, f->ratio, kv_dtype_name(f->io), f->window);
		qt_check_err(_metadata, what, dtype, f->io,
			     qt_decode(_metadata, &c, f->ratio, f->window));
		qt_case_free(&c);

		/* prefill: cached prefixes 0, 1, 15, 16, 1000 and a random one */
		for (b = 0; b < 6; b++) {
			cut[b] = b < 5 ? prefixes[b] : kvt_below(300);
			nq[b] = b == 1 ? 1 : 1 + kvt_below(f->hd == 128 ? 12 : 24);
			ctx[b] = cut[b] + nq[b];
		}
		ASSERT_EQ(0, qt_case_init(&c, &g, f->io, kvt_below(2), 6, ctx, cut, 0));
		snprintf(what, sizeof(what), "prefill %-4s hd %3u bt %2u gqa %u:1 io %s",
			 kv_dtype_name(dtype), f->hd, f->bt, f->ratio, kv_dtype_name(f->io));
		qt_check_err(_metadata, what, dtype, f->io, qt_prefill(_metadata, &c, f->ratio, nq));
		qt_case_free(&c);
	}
}

/* the float64 reference dominates; sanitizer builds run it 5-20x slower */
TEST_TIMEOUT(attention_int8, 300)
{
	attention(_metadata, KV_DTYPE_INT8);
}

TEST_TIMEOUT(attention_fp8, 300)
{
	attention(_metadata, KV_DTYPE_FP8_E4M3);
}

TEST_TIMEOUT(attention_int4, 300)
{
	attention(_metadata, KV_DTYPE_INT4);
}

/*
 * A few values 100x the rest in K and V: the block's scale grows with
 * them and the small values lose precision, but every output is finite.
 */
TEST_TIMEOUT(outliers_finite, 300)
{
	__u32 qi, b, ctx[6], cut[6], nq[6];

	kvt_seed(__func__);
	for (qi = 0; qi < 3; qi++) {
		struct kv_geometry g = { 1, 2, 128, 16, qtypes[qi], 0 };
		struct qt_case c;
		struct qt_err err;

		kvt_ragged(ctx, 6, 16, 400);
		for (b = 0; b < 6; b++)
			cut[b] = kvt_below(ctx[b] + 1);
		ASSERT_EQ(0, qt_case_init(&c, &g, qi == 1 ? KV_DTYPE_FP16 : KV_DTYPE_BF16,
					  0, 6, ctx, cut, 40));
		err = qt_decode(_metadata, &c, 4, 0);
		ksft_print_msg("outliers decode  %-4s: rel err %.4f vs inputs, %.5f vs stored values\n",
			       kv_dtype_name(qtypes[qi]), err.in, err.stored);
		EXPECT_TRUE(err.in >= 0.0 && isfinite(err.in));
		EXPECT_LE(err.stored, kvt_bound(c.io));
		qt_case_free(&c);

		for (b = 0; b < 6; b++) {
			cut[b] = b < 5 ? prefixes[b] : kvt_below(300);
			nq[b] = 1 + kvt_below(16);
			ctx[b] = cut[b] + nq[b];
		}
		ASSERT_EQ(0, qt_case_init(&c, &g, KV_DTYPE_BF16, 0, 6, ctx, cut, 60));
		err = qt_prefill(_metadata, &c, 8, nq);
		ksft_print_msg("outliers prefill %-4s: rel err %.4f vs inputs, %.5f vs stored values\n",
			       kv_dtype_name(qtypes[qi]), err.in, err.stored);
		EXPECT_TRUE(err.in >= 0.0 && isfinite(err.in));
		EXPECT_LE(err.stored, kvt_bound(c.io));
		qt_case_free(&c);
	}
}

/*
 * Values so small that amax / qmax is below FLT_MIN (only bf16 holds them):
 * the inverse of the scale would overflow, so they are stored as 0 (never
 * NaN, never saturated), and decode gives finite zeros.
 */
TEST(tiny_values)
{
	static const float tiny[] = { 1e-37f, -3e-38f, 1e-38f, 0.0f };
	__u32 qi, i;

	for (qi = 0; qi < 2; qi++) {
		struct kv_geometry g = { 1, 1, 32, 16, qtypes[qi], 0 };
		uint16_t k[32] = { 0 }, v[32] = { 0 }, q[32], out[32];
		__s64 slot = 0;
		void *arena = qt_arena(&g, 1);
		struct kv_decode_args a = {
			.arena = { .base = arena, .frames = 1, .g = g },
			.batch = 1, .q_heads = 1, .scale = 1.0f, .table_stride = 1,
			.q = q, .out = out, .io_dtype = KV_DTYPE_BF16,
		};
		__u32 table = 0, ctx = 1;

		ASSERT_TRUE(arena != NULL);
		for (i = 0; i < 4; i++) {
			k[i] = kv_f32_to_bf16(tiny[i]);
			v[5 * i] = kv_f32_to_bf16(tiny[3 - i]);
		}
		for (i = 0; i < 32; i++)
			q[i] = kv_f32_to_bf16(1.0f);
		ASSERT_EQ(0, qt_append(&g, arena, 1, 0, k, v, KV_DTYPE_BF16, &slot, 1, NULL));
		for (i = 0; i < 32; i++) {
			EXPECT_EQ(0, qt_stored(&g, qt_block(&g, arena, 0), 0, KV_K, 0, 0, i));
			EXPECT_EQ(0, qt_stored(&g, qt_block(&g, arena, 0), 0, KV_V, 0, 0, i));
		}
		a.block_table = &table;
		a.ctx_lens = &ctx;
		ASSERT_EQ(0, kv_decode_cpu(&a));
		for (i = 0; i < 32; i++)
			EXPECT_EQ(0.0f, kv_bf16_to_f32(out[i]));
		free(arena);
	}
}

/* ---- bad arguments ----------------------------------------------------- */

/*
 * Run decode, prefill and append on @g with @io as io_dtype over a small
 * valid problem; @want: the return each must give. Outputs and arena are
 * compared with their state before when @want is an error.
 */
static void qt_try(struct __test_metadata *_metadata, const struct kv_geometry *g,
		   __u32 io, int want)
{
	const __u32 bt = g->block_tokens, qh = 2 * g->kv_heads, hd = g->head_dim;
	__u32 table[2] = { 1, 0 }, ctx[1] = { bt + 3 }, q_start[2] = { 0, 2 };
	__s64 slots[2] = { bt, bt + 1 };
	__u64 fb = kv_frame_bytes(g), n = (__u64)2 * qh * hd;
	uint8_t *arena = aligned_alloc(KV_FRAME_ALIGN, 2 * fb), *snap = malloc(2 * fb);
	/* activations as fp32, the widest type any io_dtype asks for */
	float *q = calloc(n + 1, 4), *out = malloc(n * 4 + 4), *keep = malloc(n * 4 + 4);
	float *k = calloc((size_t)2 * g->kv_heads * hd + 1, 4);
	struct kv_decode_args d = {
		.arena = { .base = arena, .frames = 2, .g = *g },
		.batch = 1, .q_heads = qh, .scale = 0.125f, .table_stride = 2,
		.q = q, .out = out, .block_table = table, .ctx_lens = ctx, .io_dtype = io,
	};
	struct kv_prefill_args p = {
		.arena = d.arena, .batch = 1, .q_heads = qh, .scale = 0.125f,
		.table_stride = 2, .tokens = 2, .io_dtype = io, .q = q, .out = out,
		.q_start = q_start, .block_table = table, .ctx_lens = ctx,
	};
	struct kv_append_args a = {
		.arena = d.arena, .tokens = 2, .k = k, .v = k, .slots = slots,
		.io_dtype = io,
	};

	ASSERT_TRUE(arena && snap && q && out && keep && k);
	/* a valid arena: zero values, zero scales (any dtype reads finite) */
	memset(arena, 0, 2 * fb);
	memset(out, 0xff, n * 4);
	memcpy(keep, out, n * 4);
	memcpy(snap, arena, 2 * fb);
	EXPECT_EQ(want, kv_decode_cpu(&d));
	if (want)
		EXPECT_EQ(0, memcmp(keep, out, n * 4));
	EXPECT_EQ(want, kv_prefill_cpu(&p));
	if (want)
		EXPECT_EQ(0, memcmp(keep, out, n * 4));
	EXPECT_EQ(want, kv_append_cpu(&a));
	if (want)
		EXPECT_EQ(0, memcmp(snap, arena, 2 * fb));
	free(arena);
	free(snap);
	free(q);
	free(out);
	free(keep);
	free(k);
}

TEST(bad_arguments)
{
	__u32 qi;

	for (qi = 0; qi < 3; qi++) {
		struct kv_geometry g = { 2, 2, 64, 16, qtypes[qi], 0 };
		const __u32 hds[] = { 48, 16, 100, 1056 };
		__u32 i;

		/* a quantized pool's activations are fp16 or bf16 */
		qt_try(_metadata, &g, 0, -EINVAL);
		qt_try(_metadata, &g, KV_DTYPE_FP32, -EINVAL);
		qt_try(_metadata, &g, qtypes[qi], -EINVAL);
		qt_try(_metadata, &g, 7, -EINVAL);
		qt_try(_metadata, &g, KV_DTYPE_BF16, 0);
		qt_try(_metadata, &g, KV_DTYPE_FP16, 0);
		/* head_dim not a multiple of KV_INT4_GROUP (or too large) */
		for (i = 0; i < sizeof(hds) / sizeof(hds[0]); i++) {
			g.head_dim = hds[i];
			EXPECT_EQ(0, kv_geometry_valid(&g));
			qt_try(_metadata, &g, KV_DTYPE_BF16, -EINVAL);
		}
		g.head_dim = 32;
		EXPECT_EQ(1, kv_geometry_valid(&g));
		qt_try(_metadata, &g, KV_DTYPE_FP16, 0);
	}
	/* unquantized pools: their own dtype (or 0), nothing else */
	{
		const __u32 dts[] = { KV_DTYPE_FP16, KV_DTYPE_BF16, KV_DTYPE_FP32 };
		__u32 i, j;

		for (i = 0; i < 3; i++) {
			struct kv_geometry g = { 2, 2, 48, 16, dts[i], 0 };

			EXPECT_EQ(1, kv_geometry_valid(&g));
			qt_try(_metadata, &g, 0, 0);
			qt_try(_metadata, &g, dts[i], 0);
			for (j = 0; j < 3; j++)
				if (j != i)
					qt_try(_metadata, &g, dts[j], -EINVAL);
			qt_try(_metadata, &g, KV_DTYPE_INT8, -EINVAL);
		}
	}
	/* reserved dtypes are no pool's */
	{
		struct kv_geometry g = { 2, 2, 64, 16, 7, 0 };

		EXPECT_EQ(0, kv_geometry_valid(&g));
		g.dtype = 15;
		EXPECT_EQ(0, kv_geometry_valid(&g));
	}
}

TEST_HARNESS_MAIN
