// SPDX-License-Identifier: MIT
/*
 * CPU paged prefill against float64: ragged batches of new tokens on
 * cached prefixes of 0, 1, 15, 16 and 1000 tokens (and random ones), every
 * dtype, head_dim 64/128/256, GQA 1/4/7/8, block sizes 16/5/32, shuffled
 * frames, sliding windows; one query per sequence equals decode; outputs
 * poisoned with NaN before each run (a row not written fails); bad
 * arguments and bad tables return -EINVAL with nothing written.
 */
#include <errno.h>
#include <math.h>

#include "kselftest_harness.h"
#include "kv_test.h"

static const __u32 prefixes[] = { 0, 1, 15, 16, 1000 };

/* Run one case through kv_prefill_cpu() and check it against float64. */
static void prefill_case(struct __test_metadata *_metadata,
			 const struct kv_geometry *g, __u32 ratio, __u32 window,
			 __u32 batch, const __u32 *cached, const __u32 *nq)
{
	struct kvt_prefill_case c;
	struct kv_prefill_args a;
	float scale = 1.0f / sqrtf((float)g->head_dim);
	__u32 qh = ratio * g->kv_heads;
	double err;

	ASSERT_EQ(0, kvt_prefill_case_init(&c, g, kvt_below(g->layers), qh, window,
					   batch, cached, nq));
	kvt_prefill_reference(&c, scale);
	a = kvt_prefill_args(&c, scale);
	a.threads = 1 + kvt_below(3);
	ASSERT_EQ(0, kv_prefill_cpu(&a));
	err = kvt_rel_err(c.out, g->dtype, c.ref, (__u64)c.tokens * qh * g->head_dim);
	if (err > kvt_bound(g->dtype))
		TH_LOG("dtype %u hd %u bt %u ratio %u window %u batch %u: error %g",
		       g->dtype, g->head_dim, g->block_tokens, ratio, window, batch, err);
	EXPECT_LE(err, kvt_bound(g->dtype));
	kvt_prefill_case_free(&c);
}

/* A batch of 6: the prefixes above (one random) with ragged new tokens. */
static void ragged_batch(__u32 *cached, __u32 *nq, __u32 maxq)
{
	__u32 b;

	for (b = 0; b < 6; b++) {
		cached[b] = b < 5 ? prefixes[b] : kvt_below(300);
		nq[b] = b == 0 ? 1 + kvt_below(maxq) : b == 1 ? 1 : 1 + kvt_below(maxq);
	}
}

/* the float64 reference dominates; sanitizer builds run it 5-20x slower */
TEST_TIMEOUT(prefill_sweep, 600)
{
	static const __u32 dtypes[] = { KV_DTYPE_FP32, KV_DTYPE_FP16, KV_DTYPE_BF16 };
	static const __u32 ratios[] = { 1, 4, 7, 8 };
	static const __u32 hds[] = { 64, 128, 256 };
	__u32 di, ri, hi, cached[6], nq[6];

	kvt_seed(__func__);
	for (di = 0; di < 3; di++)
		for (hi = 0; hi < 3; hi++)
			for (ri = 0; ri < 4; ri++) {
				struct kv_geometry g = {
					.layers = 2, .kv_heads = 1 + kvt_below(2),
					.head_dim = hds[hi],
					.block_tokens = (di + hi + ri) % 3 == 0 ? 16 :
							(di + hi + ri) % 3 == 1 ? 5 : 32,
					.dtype = dtypes[di],
				};

				if ((di + hi + ri) % 2 && hi == 2)
					continue;	/* keep the run short */
				ragged_batch(cached, nq, hi == 2 ? 12 : 24);
				prefill_case(_metadata, &g, ratios[ri], 0, 6, cached, nq);
			}
}

/* Long new runs (several query chunks) and sliding windows. */
TEST_TIMEOUT(prefill_long_window, 600)
{
	struct kv_geometry g = { 2, 2, 128, 16, KV_DTYPE_BF16, 0 };
	__u32 windows[] = { 0, 1, 17, 100 }, cached[3] = { 0, 16, 1000 };
	__u32 nq[3] = { 200, 33, 70 }, w;

	kvt_seed(__func__);
	for (w = 0; w < 4; w++)
		prefill_case(_metadata, &g, 4, windows[w], 3, cached, nq);
	g.dtype = KV_DTYPE_FP32;
	g.block_tokens = 7;
	prefill_case(_metadata, &g, 8, 50, 3, cached, nq);
}

/* With one query per sequence prefill is decode: the same result. */
TEST(prefill_one_query_is_decode)
{
	struct kv_geometry g = { 1, 2, 64, 16, KV_DTYPE_FP32, 0 };
	struct kvt_prefill_case c;
	struct kv_prefill_args a;
	struct kv_decode_args da;
	__u32 cached[5], nq[5] = { 1, 1, 1, 1, 1 }, b, n;
	void *dout;

	kvt_seed(__func__);
	for (b = 0; b < 5; b++)
		cached[b] = kvt_below(500);
	ASSERT_EQ(0, kvt_prefill_case_init(&c, &g, 0, 8, 30, 5, cached, nq));
	a = kvt_prefill_args(&c, 0.125f);
	ASSERT_EQ(0, kv_prefill_cpu(&a));
	n = 5 * 8 * 64;
	dout = malloc(n * 4);
	ASSERT_NE(NULL, dout);
	da = kvt_decode_args(&c.d, 0.125f);
	da.q = c.q;
	da.out = dout;
	ASSERT_EQ(0, kv_decode_cpu(&da));
	EXPECT_LE(kvt_rel_err_vs(c.out, dout, g.dtype, n), 1e-6);
	free(dout);
	kvt_prefill_case_free(&c);
}

/* Nothing written: every output element is still the NaN poison. */
static int untouched(const struct kvt_prefill_case *c)
{
	__u64 n = (__u64)c->tokens * c->d.q_heads * c->d.g.head_dim, i;

	for (i = 0; i < n; i++)
		if (!isnan(kv_load_f32(c->out, c->d.g.dtype, i)))
			return 0;
	return 1;
}

TEST(prefill_bad_arguments)
{
	struct kv_geometry g = { 2, 2, 64, 16, KV_DTYPE_FP16, 0 };
	struct kvt_prefill_case c;
	struct kv_prefill_args a, bad;
	__u32 cached[3] = { 20, 0, 40 }, nq[3] = { 5, 9, 3 }, keep;
	__s32 status;

	kvt_seed(__func__);
	ASSERT_EQ(0, kvt_prefill_case_init(&c, &g, 1, 4, 0, 3, cached, nq));
	a = kvt_prefill_args(&c, 0.125f);

	bad = a;
	bad.q_heads = 3;			/* not a multiple of kv_heads */
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&bad));
	bad.q_heads = 1u << 28;		/* past KV_MAX_Q_HEADS (16 x 2^28 rows wrapped) */
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&bad));
	bad = a;
	bad.layer = 2;
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&bad));
	bad = a;
	bad.q_start = NULL;
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&bad));
	bad = a;
	bad.tokens = a.tokens + 1;		/* q_start[batch] != tokens */
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&bad));
	bad = a;
	bad.max_q_len = 8;			/* a sequence has 9 */
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&bad));
	bad = a;
	bad.scale = NAN;
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&bad));
	bad.scale = INFINITY;
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&bad));
	bad.scale = -INFINITY;
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&bad));
	EXPECT_TRUE(untouched(&c));

	/* q_start not ascending */
	keep = c.q_start[1];
	c.q_start[1] = c.q_start[2] + 1;
	status = 0;
	bad = a;
	bad.status = &status;
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&bad));
	EXPECT_EQ(-EINVAL, status);
	c.q_start[1] = keep;
	/* more queries than context */
	c.d.ctx[1] = 8;
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&a));
	c.d.ctx[1] = 9;
	/* a frame past the arena, and a context longer than its table */
	keep = c.d.table[2 * c.d.stride + 1];
	c.d.table[2 * c.d.stride + 1] = (__u32)c.d.frames;
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&a));
	c.d.table[2 * c.d.stride + 1] = keep;
	c.d.ctx[2] = c.d.stride * g.block_tokens + 1;
	EXPECT_EQ(-EINVAL, kv_prefill_cpu(&a));
	c.d.ctx[2] = 43;
	EXPECT_TRUE(untouched(&c));

	/* and the same arguments, repaired, compute */
	kvt_prefill_reference(&c, 0.125f);
	EXPECT_EQ(0, kv_prefill_cpu(&a));
	EXPECT_LE(kvt_rel_err(c.out, g.dtype, c.ref, (__u64)c.tokens * 4 * 64),
		  kvt_bound(g.dtype));
	kvt_prefill_case_free(&c);
}

TEST_HARNESS_MAIN
