// SPDX-License-Identifier: MIT
/*
 * CPU paged decode attention against a float64 reference: every dtype,
 * head_dim 64/128/256, GQA ratios 1, 4, 7, 8 and 32, ragged contexts
 * (length 1, block edges, random), shuffled frames, sliding windows, and
 * the argument checks. Also the fp16/bf16 conversions the CPU kernels use.
 */
#include <errno.h>
#include <math.h>

#include "kselftest_harness.h"
#include "kv_test.h"
#include "kernels/internal.h"

static const __u32 ratios[] = { 1, 4, 7, 8, 32 };
static const __u32 head_dims[] = { 64, 128, 256 };

/*
 * Run one case through kv_decode_cpu() and check it: the call succeeds,
 * every output element is written (outputs are NaN-poisoned before) and the
 * error against float64 is within the dtype's bound.
 */
static void check_case(struct __test_metadata *_metadata,
		       const struct kv_geometry *g, __u32 layer, __u32 ratio,
		       __u32 window, __u32 batch, const __u32 *ctx,
		       __u32 threads)
{
	struct kvt_decode_case c;
	struct kv_decode_args a;
	float scale = 1.0f / sqrtf((float)g->head_dim);
	__u64 n = (__u64)batch * ratio * g->kv_heads * g->head_dim;
	double err;

	ASSERT_EQ(0, kvt_decode_case_init(&c, g, layer, ratio * g->kv_heads,
					  window, batch, ctx));
	kvt_decode_reference(&c, scale);
	kvt_fill_nan(c.out, g->dtype, n);
	a = kvt_decode_args(&c, scale);
	a.threads = threads;
	EXPECT_EQ(0, kv_decode_cpu(&a));
	err = kvt_rel_err(c.out, g->dtype, c.ref, n);
	if (getenv("KVT_VERBOSE") || !(err <= kvt_bound(g->dtype)))
		TH_LOG("dtype %u hd %u bt %u kvh %u ratio %u window %u batch %u: rel err %g",
		       g->dtype, g->head_dim, g->block_tokens, g->kv_heads, ratio,
		       window, batch, err);
	EXPECT_LE(err, kvt_bound(g->dtype));
	kvt_decode_case_free(&c);
}

static void sweep(struct __test_metadata *_metadata, __u32 dtype)
{
	__u32 i, j, ctx[6];

	kvt_seed(__func__);
	for (i = 0; i < sizeof(head_dims) / sizeof(head_dims[0]); i++) {
		for (j = 0; j < sizeof(ratios) / sizeof(ratios[0]); j++) {
			struct kv_geometry g = {
				.layers = 3,
				.kv_heads = ratios[j] >= 8 ? 1 + kvt_below(2) : 2,
				.head_dim = head_dims[i],
				.block_tokens = (i + j) % 3 == 0 ? 16 : (i + j) % 3 == 1 ? 5 : 32,
				.dtype = dtype,
			};
			__u32 batch = 6, layer = kvt_below(3);

			kvt_ragged(ctx, batch, g.block_tokens, 300);
			check_case(_metadata, &g, layer, ratios[j], 0, batch, ctx, 0);
		}
	}
}

TEST(decode_fp32)
{
	sweep(_metadata, KV_DTYPE_FP32);
}

TEST(decode_fp16)
{
	sweep(_metadata, KV_DTYPE_FP16);
}

TEST(decode_bf16)
{
	sweep(_metadata, KV_DTYPE_BF16);
}

/* Long contexts, one block_tokens of 1 (every token its own frame). */
TEST(decode_long_and_tiny_blocks)
{
	struct kv_geometry g = { 2, 2, 128, 16, KV_DTYPE_BF16, 0 };
	__u32 ctx[3];

	kvt_seed(__func__);
	ctx[0] = 4000 + kvt_below(200);
	ctx[1] = 1;
	ctx[2] = 1000 + kvt_below(100);
	check_case(_metadata, &g, 1, 4, 0, 3, ctx, 0);
	g.block_tokens = 1;
	ctx[0] = 200 + kvt_below(50);
	check_case(_metadata, &g, 0, 8, 0, 3, ctx, 0);
}

/* Sliding windows shorter than, equal to and longer than the context. */
TEST(decode_window)
{
	struct kv_geometry g = { 2, 2, 64, 16, KV_DTYPE_FP16, 0 };
	__u32 ctx[6], windows[] = { 1, 7, 16, 100, 1000 }, i;

	kvt_seed(__func__);
	for (i = 0; i < 5; i++) {
		kvt_ragged(ctx, 6, g.block_tokens, 400);
		check_case(_metadata, &g, 1, 4, windows[i], 6, ctx, 0);
	}
}

/* Threads only change who does the work: the output is bit for bit equal. */
TEST(decode_threads_equal)
{
	struct kv_geometry g = { 1, 4, 128, 16, KV_DTYPE_BF16, 0 };
	struct kvt_decode_case c;
	struct kv_decode_args a;
	__u32 ctx[8];
	size_t n;
	void *one;

	kvt_seed(__func__);
	kvt_ragged(ctx, 8, 16, 2000);
	ASSERT_EQ(0, kvt_decode_case_init(&c, &g, 0, 16, 0, 8, ctx));
	n = (size_t)8 * 16 * 128 * 2;
	one = malloc(n);
	ASSERT_NE_NULL(one);
	a = kvt_decode_args(&c, 0.088f);
	a.threads = 1;
	ASSERT_EQ(0, kv_decode_cpu(&a));
	memcpy(one, c.out, n);
	kvt_fill_nan(c.out, g.dtype, n / 2);
	a.threads = 3;
	ASSERT_EQ(0, kv_decode_cpu(&a));
	EXPECT_EQ(0, memcmp(one, c.out, n));
	free(one);
	kvt_decode_case_free(&c);
}

/* A context of 0 tokens attends to nothing: the output is zeros. */
TEST(decode_empty_context)
{
	struct kv_geometry g = { 1, 2, 64, 16, KV_DTYPE_FP32, 0 };
	struct kvt_decode_case c;
	struct kv_decode_args a;
	__u32 ctx[2] = { 0, 20 }, d;
	const float *out;

	kvt_seed(__func__);
	ASSERT_EQ(0, kvt_decode_case_init(&c, &g, 0, 4, 0, 2, ctx));
	kvt_fill_nan(c.out, g.dtype, 2 * 4 * 64);
	a = kvt_decode_args(&c, 0.125f);
	ASSERT_EQ(0, kv_decode_cpu(&a));
	out = c.out;
	for (d = 0; d < 4 * 64; d++)
		ASSERT_EQ(0.0f, out[d]);
	for (d = 4 * 64; d < 2 * 4 * 64; d++)
		ASSERT_TRUE(isfinite(out[d]));
	kvt_decode_case_free(&c);
}

/* Bad arguments: an error, the output untouched, no read past the arena. */
TEST(decode_bad_arguments)
{
	struct kv_geometry g = { 2, 4, 64, 16, KV_DTYPE_BF16, 0 };
	struct kvt_decode_case c;
	struct kv_decode_args a;
	__u32 ctx[3] = { 40, 17, 33 };
	__s32 status = 0;
	size_t n = (size_t)3 * 8 * 64 * 2;
	void *poison = malloc(n);

	kvt_seed(__func__);
	ASSERT_NE_NULL(poison);
	ASSERT_EQ(0, kvt_decode_case_init(&c, &g, 1, 8, 0, 3, ctx));
	kvt_fill_nan(c.out, g.dtype, n / 2);
	memcpy(poison, c.out, n);

	/* H_q % H_kv != 0 */
	a = kvt_decode_args(&c, 0.125f);
	a.q_heads = 6;
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));
	a.q_heads = 0;
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));
	a.q_heads = KV_MAX_Q_HEADS + 4;		/* a multiple of the 4 kv heads, too many */
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));
	/* layer past the geometry, broken geometry */
	a = kvt_decode_args(&c, 0.125f);
	a.layer = 2;
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));
	a = kvt_decode_args(&c, 0.125f);
	a.arena.g.pad = 1;
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));
	a = kvt_decode_args(&c, 0.125f);
	a.arena.g.dtype = 9;
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));
	/* a scale that is not finite */
	a = kvt_decode_args(&c, NAN);
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));
	a = kvt_decode_args(&c, INFINITY);
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));

	/* a frame number past the arena, in the middle of a context */
	c.table[1 * c.stride + 1] = (__u32)c.frames;
	a = kvt_decode_args(&c, 0.125f);
	a.status = &status;
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));
	EXPECT_EQ(-EINVAL, status);
	c.table[1 * c.stride + 1] = 0xffffffffu;
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));
	c.table[1 * c.stride + 1] = c.table[0];

	/* a context longer than its block table */
	c.ctx[2] = c.stride * g.block_tokens + 1;
	EXPECT_EQ(-EINVAL, kv_decode_cpu(&a));
	c.ctx[2] = 33;

	EXPECT_EQ(0, memcmp(poison, c.out, n));
	/* and the repaired case runs */
	EXPECT_EQ(0, kv_decode_cpu(&a));
	free(poison);
	kvt_decode_case_free(&c);
}

/*
 * The CUDA decode's workspace: enough for every split it may make (at most
 * one per block of the table), and none once a batch has KV_SPLIT_ITEMS_MAX
 * (sequence, kv head) pairs, which fill the GPU without splits; so a batch
 * launched in turns (more than 65535 sequences) never splits a turn.
 */
TEST(workspace_only_for_small_batches)
{
	struct kv_geometry g = { 1, 1, 64, 16, KV_DTYPE_FP16, 0 };
	struct kv_decode_args a = { .arena = { .g = g }, .q_heads = 4, .table_stride = 313 };

	a.batch = 2;
	EXPECT_EQ(313u, kv_decode_split_bound(&a));
	EXPECT_EQ(2ull * 4 * 313 * (64 + 2) * sizeof(float), kv_decode_workspace_bytes(&a));
	a.batch = 8191;
	EXPECT_EQ(2u, kv_decode_split_bound(&a));
	EXPECT_EQ(8191ull * 4 * 2 * (64 + 2) * sizeof(float), kv_decode_workspace_bytes(&a));
	a.batch = 8192;
	EXPECT_EQ(1u, kv_decode_split_bound(&a));
	EXPECT_EQ(0ull, kv_decode_workspace_bytes(&a));
	a.batch = 65536;
	EXPECT_EQ(0ull, kv_decode_workspace_bytes(&a));
	a.batch = 2;
	a.arena.g.kv_heads = 4096;	/* the pairs count, not the sequences */
	a.q_heads = 4096;
	EXPECT_EQ(0ull, kv_decode_workspace_bytes(&a));
}

/* Every binary16 value survives the trip through float; rounding is RNE. */
TEST(dtype_fp16)
{
	uint32_t i;

	for (i = 0; i < 0x10000; i++) {
		float f = kv_f16_to_f32((uint16_t)i);

		if (isnan(f))
			ASSERT_TRUE((i & 0x7c00) == 0x7c00 && (i & 0x3ff));
		else
			ASSERT_EQ(i, kv_f32_to_f16(f));
	}
#ifdef __FLT16_MAX__
	kvt_seed(__func__);
	for (i = 0; i < 1000000; i++) {
		float f = kv_bits_f32((uint32_t)kvt_rand64());
		_Float16 h = (_Float16)f;
		uint16_t want;

		if (isnan(f))
			continue;
		memcpy(&want, &h, 2);
		ASSERT_EQ(want, kv_f32_to_f16(f));
	}
#endif
}

TEST(dtype_bf16)
{
	uint32_t i;

	kvt_seed(__func__);
	for (i = 0; i < 0x10000; i++) {
		float f = kv_bf16_to_f32((uint16_t)i);

		if (!isnan(f))
			ASSERT_EQ(i, kv_f32_to_bf16(f));
	}
	for (i = 0; i < 1000000; i++) {
		float f = kv_bits_f32((uint32_t)kvt_rand64());
		uint16_t r = kv_f32_to_bf16(f);
		double lo, hi, x = f;

		if (isnan(f)) {
			ASSERT_TRUE(isnan(kv_bf16_to_f32(r)));
			continue;
		}
		/* nearest: no neighbour of the result is closer */
		lo = kv_bf16_to_f32((uint16_t)(r - 1));
		hi = kv_bf16_to_f32((uint16_t)(r + 1));
		if (isfinite(kv_bf16_to_f32(r)) && isfinite(lo) && isfinite(hi) &&
		    (r & 0x7fff) != 0) {
			ASSERT_LE(fabs(x - kv_bf16_to_f32(r)), fabs(x - lo));
			ASSERT_LE(fabs(x - kv_bf16_to_f32(r)), fabs(x - hi));
		}
	}
}

TEST_HARNESS_MAIN
