// SPDX-License-Identifier: MIT
/*
 * lib/kvsize.c: bytes per token, block and frame against numbers worked
 * out by hand (Llama 3 8B in bf16 is 2 x 32 layers x 8 heads x 128 x 2 =
 * 131072 bytes a token), quantized (int8/fp8 scales per block and head,
 * int4 scales per 32 values) and split over tensor-parallel GPUs (heads
 * split, replicated, or refused); the pool dtypes, quantized ones with their
 * scales, agree with layout.h;
 * what a memory holds. The histogram of sequence lengths, printed and
 * parsed back, and the block-size advice from it, worked by hand.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kselftest_harness.h"
#include "lib/kvsize.h"
#include "lib/models.h"

static int size_of(const char *model, int dtype, uint32_t block_tokens, uint32_t tp,
		   struct kv_size *s, char *err, size_t len)
{
	const struct kv_model *m = kv_model_find(model);
	struct kv_size_params p = {
		.layers = m->layers, .kv_heads = m->kv_heads, .head_dim = m->head_dim,
		.block_tokens = block_tokens, .dtype = (uint32_t)dtype, .tp = tp,
	};

	return kv_size_compute(&p, s, err, len);
}

TEST(dtypes_by_name)
{
	EXPECT_EQ(KV_SIZE_FP16, kv_size_dtype_find("fp16"));
	EXPECT_EQ(KV_SIZE_BF16, kv_size_dtype_find("bf16"));
	EXPECT_EQ(KV_SIZE_FP32, kv_size_dtype_find("fp32"));
	EXPECT_EQ(KV_SIZE_INT8, kv_size_dtype_find("int8"));
	EXPECT_EQ(KV_SIZE_FP8, kv_size_dtype_find("fp8"));
	EXPECT_EQ(KV_SIZE_INT4, kv_size_dtype_find("int4"));
	EXPECT_EQ(-EINVAL, kv_size_dtype_find("FP16"));
	EXPECT_EQ(-EINVAL, kv_size_dtype_find("int2"));
	EXPECT_EQ(KV_SIZE_BF16, kv_size_dtype_of(KV_DTYPE_BF16));
	EXPECT_EQ(KV_SIZE_FP32, kv_size_dtype_of(KV_DTYPE_FP32));
	EXPECT_EQ(KV_SIZE_INT8, kv_size_dtype_of(KV_DTYPE_INT8));
	EXPECT_EQ(KV_SIZE_FP8, kv_size_dtype_of(KV_DTYPE_FP8_E4M3));
	EXPECT_EQ(KV_SIZE_INT4, kv_size_dtype_of(KV_DTYPE_INT4));
	EXPECT_EQ(-EINVAL, kv_size_dtype_of(0));
	EXPECT_EQ(-EINVAL, kv_size_dtype_of(7));
}

TEST(bytes_by_hand)
{
	char err[256];
	struct kv_size s;

	/* Llama 3 8B, bf16: 2 x 32 x 8 x 128 x 2 = 131072 a token, 2M a block. */
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_BF16, 16, 1, &s, err, sizeof(err)));
	EXPECT_EQ(131072 * 16, s.block_bytes);
	EXPECT_EQ(2097152, s.frame_bytes);
	EXPECT_EQ(0, s.scale_bytes);
	EXPECT_EQ(8, s.heads_per_gpu);
	EXPECT_EQ(1, s.replicas);
	/* fp32 twice that. */
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_FP32, 16, 1, &s, err, sizeof(err)));
	EXPECT_EQ(262144 * 16, s.block_bytes);
	/* int8: 65536 bytes a token, and 2 x 32 x 8 fp32 scales a block. */
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_INT8, 16, 1, &s, err, sizeof(err)));
	EXPECT_EQ(65536 * 16, s.data_bytes);
	EXPECT_EQ(2048, s.scale_bytes);
	EXPECT_EQ(1050624, s.block_bytes);
	EXPECT_EQ(1052672, s.frame_bytes);	/* 257 pages */
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_FP8, 16, 1, &s, err, sizeof(err)));
	EXPECT_EQ(1050624, s.block_bytes);
	/* int4: a vector of 128 is 64 bytes and 4 fp16 scales: 72 bytes. */
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_INT4, 16, 1, &s, err, sizeof(err)));
	EXPECT_EQ(8192 * 64, s.data_bytes);
	EXPECT_EQ(8192 * 8, s.scale_bytes);
	EXPECT_EQ(589824, s.block_bytes);
	EXPECT_EQ(589824, s.frame_bytes);
	/* Llama 2 7B, no GQA, fp16: 2 x 32 x 32 x 128 x 2 = 512K a token. */
	ASSERT_EQ(0, size_of("llama2-7b", KV_SIZE_FP16, 16, 1, &s, err, sizeof(err)));
	EXPECT_EQ(524288 * 16, s.block_bytes);
	/* Falcon 7B, one KV head: 2 x 32 x 1 x 64 x 2 = 8K a token. */
	ASSERT_EQ(0, size_of("falcon-7b", KV_SIZE_BF16, 16, 1, &s, err, sizeof(err)));
	EXPECT_EQ(8192 * 16, s.block_bytes);
	/* Phi-3 mini, head_dim 96, int4 with 3 groups: 48 + 6 bytes a vector. */
	ASSERT_EQ(0, size_of("phi-3-mini", KV_SIZE_INT4, 16, 1, &s, err, sizeof(err)));
	EXPECT_EQ(2ull * 32 * 32 * 16 * 54, s.block_bytes);
	/* Gemma 2 9B, 16 tokens of 2 x 42 x 8 x 256 x 2 bytes: 5.25M. */
	ASSERT_EQ(0, size_of("gemma-2-9b", KV_SIZE_BF16, 16, 1, &s, err, sizeof(err)));
	EXPECT_EQ(5505024, s.block_bytes);
	/* Llama 3.1 405B, the largest block of the presets at 16 tokens: 7.875M. */
	ASSERT_EQ(0, size_of("llama3.1-405b", KV_SIZE_BF16, 16, 1, &s, err, sizeof(err)));
	EXPECT_EQ(8257536, s.block_bytes);
	/* An odd head_dim in int4: 5 values take 3 bytes. */
	{
		struct kv_size_params p = { 1, 1, 5, 2, KV_SIZE_INT4, 1 };

		ASSERT_EQ(0, kv_size_compute(&p, &s, err, sizeof(err)));
		EXPECT_EQ(2 * 2 * 3, s.data_bytes);
		EXPECT_EQ(2 * 2 * 2, s.scale_bytes);
		EXPECT_EQ(4096, s.frame_bytes);
	}
}

TEST(tensor_parallel)
{
	char err[256];
	struct kv_size s;

	/* 8 KV heads over 4 GPUs: 2 each, a quarter of the block. */
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_BF16, 16, 4, &s, err, sizeof(err)));
	EXPECT_EQ(2, s.heads_per_gpu);
	EXPECT_EQ(1, s.replicas);
	EXPECT_EQ(524288, s.block_bytes);
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_INT8, 16, 4, &s, err, sizeof(err)));
	EXPECT_EQ(262144 + 512, s.block_bytes);
	EXPECT_EQ(266240, s.frame_bytes);
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_BF16, 16, 8, &s, err, sizeof(err)));
	EXPECT_EQ(1, s.heads_per_gpu);
	EXPECT_EQ(262144, s.block_bytes);
	/* More GPUs than KV heads: each head on 2 of 16, as with 8. */
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_BF16, 16, 16, &s, err, sizeof(err)));
	EXPECT_EQ(1, s.heads_per_gpu);
	EXPECT_EQ(2, s.replicas);
	EXPECT_EQ(262144, s.block_bytes);
	ASSERT_EQ(0, size_of("falcon-7b", KV_SIZE_BF16, 16, 8, &s, err, sizeof(err)));
	EXPECT_EQ(8, s.replicas);
	EXPECT_EQ(131072, s.block_bytes);
	/* Heads that do not split. */
	EXPECT_EQ(-EINVAL, size_of("llama3-8b", KV_SIZE_BF16, 16, 3, &s, err, sizeof(err)));
	EXPECT_STREQ("the 8 kv heads do not split evenly over 3 GPUs (tensor parallel needs kv_heads a multiple of tp)",
		     err);
	EXPECT_EQ(-EINVAL, size_of("llama3-8b", KV_SIZE_BF16, 16, 12, &s, err, sizeof(err)));
	EXPECT_STREQ("12 GPUs for 8 kv heads: with more GPUs than kv heads, each head is replicated, so tp must be a multiple of kv_heads",
		     err);
	EXPECT_EQ(-EINVAL, size_of("phi-3-medium", KV_SIZE_BF16, 16, 4, &s, err, sizeof(err)));
	EXPECT_EQ(0, size_of("phi-3-medium", KV_SIZE_BF16, 16, 5, &s, err, sizeof(err)));
	EXPECT_EQ(-EINVAL, size_of("llama3-8b", KV_SIZE_BF16, 16, 0, &s, err, sizeof(err)));
	EXPECT_STREQ("tp 0 is out of range (1..1024)", err);
	EXPECT_EQ(-EINVAL, size_of("llama3-8b", KV_SIZE_BF16, 16, 2048, &s, err, sizeof(err)));
}

TEST(bad_geometries)
{
	struct kv_size_params p = { 32, 8, 128, 16, KV_SIZE_BF16, 1 };
	struct kv_size s = { 0 };
	char err[256];

	p.layers = 0;
	EXPECT_EQ(-EINVAL, kv_size_compute(&p, &s, err, sizeof(err)));
	EXPECT_STREQ("layers 0 is out of range (1..1024)", err);
	p.layers = 32;
	p.head_dim = 1025;
	EXPECT_EQ(-EINVAL, kv_size_compute(&p, &s, err, sizeof(err)));
	EXPECT_STREQ("head_dim 1025 is out of range (1..1024)", err);
	p.head_dim = 128;
	p.block_tokens = 4097;
	EXPECT_EQ(-EINVAL, kv_size_compute(&p, &s, NULL, 0));
	p.block_tokens = 16;
	p.dtype = KV_SIZE_NR_DTYPES;
	EXPECT_EQ(-EINVAL, kv_size_compute(&p, &s, err, sizeof(err)));
	EXPECT_STREQ("unknown KV dtype 6", err);
	EXPECT_EQ(0, s.block_bytes);
}

/* The pool dtypes give exactly what layout.h gives a pool. */
TEST(pool_dtypes_agree_with_layout)
{
	static const uint32_t tokens[] = { 1, 3, 16, 17, 128, 4096 };
	struct kv_geometry g = { 0 };
	const struct kv_model *m;
	struct kv_size_params p;
	struct kv_size s;
	size_t i, t;
	int d;

	for (i = 0; (m = kv_model_at(i)); i++) {
		for (t = 0; t < sizeof(tokens) / sizeof(tokens[0]); t++) {
			for (d = KV_SIZE_FP16; d <= KV_SIZE_FP32; d++) {
				g.layers = m->layers;
				g.kv_heads = m->kv_heads;
				g.head_dim = m->head_dim;
				g.block_tokens = tokens[t];
				g.dtype = kv_size_dtypes[d].pool_dtype;
				p = (struct kv_size_params){ m->layers, m->kv_heads, m->head_dim,
							     tokens[t], (uint32_t)d, 1 };
				ASSERT_EQ(0, kv_size_compute(&p, &s, NULL, 0));
				EXPECT_EQ(kv_block_bytes(&g), s.block_bytes);
				EXPECT_EQ(kv_frame_bytes(&g), s.frame_bytes);
			}
		}
	}
}

/*
 * The quantized types are pool dtypes too, and give what layout.h gives a
 * quantized pool, scales included, for every head_dim such a pool takes:
 * the presets' (all multiples of 32), and small or odd ones by hand.
 */
TEST(quantized_pool_dtypes_agree_with_layout)
{
	static const uint32_t geoms[][4] = {	/* layers, kv_heads, head_dim, block_tokens */
		{ 1, 1, 32, 1 }, { 2, 3, 96, 5 }, { 32, 8, 128, 16 }, { 3, 1, 160, 17 },
		{ 80, 8, 128, 128 }, { 1, 1024, 1024, 1 }, { 7, 2, 64, 4096 },
	};
	static const int quantized[] = { KV_SIZE_INT8, KV_SIZE_FP8, KV_SIZE_INT4 };
	struct kv_geometry g = { 0 };
	const struct kv_model *m;
	struct kv_size_params p;
	struct kv_size s;
	size_t i, d;

	for (d = 0; d < 3; d++)
		EXPECT_TRUE(kv_dtype_quantized(kv_size_dtypes[quantized[d]].pool_dtype));
	for (i = 0; i < sizeof(geoms) / sizeof(geoms[0]); i++) {
		for (d = 0; d < 3; d++) {
			g = (struct kv_geometry){ geoms[i][0], geoms[i][1], geoms[i][2], geoms[i][3],
						  kv_size_dtypes[quantized[d]].pool_dtype, 0 };
			ASSERT_TRUE(kv_geometry_valid(&g));
			p = (struct kv_size_params){ g.layers, g.kv_heads, g.head_dim,
						     g.block_tokens, (uint32_t)quantized[d], 1 };
			ASSERT_EQ(0, kv_size_compute(&p, &s, NULL, 0));
			EXPECT_EQ(kv_block_bytes(&g), s.block_bytes);
			EXPECT_EQ(kv_frame_bytes(&g), s.frame_bytes);
			EXPECT_EQ(kv_scale_offset(&g, 0, KV_K, 0), s.data_bytes);
			EXPECT_EQ(2ull * g.layers * g.kv_heads * kv_head_scale_bytes(&g),
				  s.scale_bytes);
		}
	}
	for (i = 0; (m = kv_model_at(i)); i++) {
		for (d = 0; d < 3 && m->head_dim % KV_INT4_GROUP == 0; d++) {
			g = (struct kv_geometry){ m->layers, m->kv_heads, m->head_dim, 16,
						  kv_size_dtypes[quantized[d]].pool_dtype, 0 };
			p = (struct kv_size_params){ m->layers, m->kv_heads, m->head_dim, 16,
						     (uint32_t)quantized[d], 1 };
			ASSERT_EQ(0, kv_size_compute(&p, &s, NULL, 0));
			EXPECT_EQ(kv_block_bytes(&g), s.block_bytes);
			EXPECT_EQ(kv_frame_bytes(&g), s.frame_bytes);
		}
	}
	/* A head_dim no quantized pool takes: estimated (rounded up), not valid. */
	g = (struct kv_geometry){ 4, 4, 80, 16, KV_DTYPE_INT4, 0 };
	EXPECT_FALSE(kv_geometry_valid(&g));
	p = (struct kv_size_params){ 4, 4, 80, 16, KV_SIZE_INT4, 1 };
	ASSERT_EQ(0, kv_size_compute(&p, &s, NULL, 0));
	EXPECT_EQ(512 * 40, s.data_bytes);
	EXPECT_EQ(512 * 3 * 2, s.scale_bytes);
}

TEST(what_a_memory_holds)
{
	struct kv_size s;
	struct kv_fit f;

	/* Llama 3 8B, bf16, 60G: 30720 blocks of 2M, 491520 tokens. */
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_BF16, 16, 1, &s, NULL, 0));
	kv_size_fit(&s, 16, 60ull << 30, 8192, 32, &f);
	EXPECT_EQ(30720, f.frames);
	EXPECT_EQ(491520, f.tokens);
	EXPECT_EQ(512, f.blocks_per_seq);
	EXPECT_EQ(60, f.batch);
	EXPECT_EQ(960 * 16, f.context);
	/* One token more takes a block more: 513 blocks, 59 sequences. */
	kv_size_fit(&s, 16, 60ull << 30, 8193, 0, &f);
	EXPECT_EQ(513, f.blocks_per_seq);
	EXPECT_EQ(59, f.batch);
	EXPECT_EQ(0, f.context);
	/* A batch larger than the blocks, a context longer than the memory. */
	kv_size_fit(&s, 16, 60ull << 30, 1ull << 30, 40000, &f);
	EXPECT_EQ(0, f.batch);
	EXPECT_EQ(0, f.context);
	/* int4: 60G / 576K = 109226 frames (and two thirds). */
	ASSERT_EQ(0, size_of("llama3-8b", KV_SIZE_INT4, 16, 1, &s, NULL, 0));
	kv_size_fit(&s, 16, 60ull << 30, 8192, 0, &f);
	EXPECT_EQ(109226, f.frames);
	EXPECT_EQ(213, f.batch);
	/* Less than a frame holds nothing. */
	kv_size_fit(&s, 16, 4096, 1, 1, &f);
	EXPECT_EQ(0, f.frames);
	EXPECT_EQ(0, f.batch);
}

/* ---- the histogram and the advice -------------------------------------- */

static void record_n(struct kv_seqlen_hist *h, uint32_t len, unsigned int n)
{
	while (n--)
		kv_seqlen_record(h, len);
}

/* The number after @label at the start of a line of @text, or -1. */
static long long labelled(const char *text, const char *label)
{
	size_t n = strlen(label);
	const char *p;

	for (p = text; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (!strncmp(p, label, n) && (p[n] == ' ' || p[n] == '\t'))
			return strtoll(p + n, NULL, 10);
	}
	return -1;
}

static char *hist_text(const struct kv_seqlen_hist *h)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	kv_seqlen_print(h, f);
	fclose(f);
	return buf;
}

TEST(histogram_buckets_and_round_trip)
{
	static const uint32_t lens[] = { 0, 1, 2, 3, 4, 7, 8, 127, 128, 129, 4095, 4096,
					 UINT32_MAX };
	struct kv_seqlen_hist h = { 0 }, back;
	char *t;
	size_t i;

	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		kv_seqlen_record(&h, lens[i]);
	EXPECT_EQ(13, h.count);
	EXPECT_EQ(UINT32_MAX, h.max);
	EXPECT_EQ(1, h.bucket[0]);	/* 0 */
	EXPECT_EQ(1, h.bucket[1]);	/* 1 */
	EXPECT_EQ(2, h.bucket[2]);	/* 2, 3 */
	EXPECT_EQ(2, h.bucket[3]);	/* 4, 7 */
	EXPECT_EQ(1, h.bucket[4]);	/* 8 */
	EXPECT_EQ(1, h.bucket[7]);	/* 127 */
	EXPECT_EQ(2, h.bucket[8]);	/* 128, 129 */
	EXPECT_EQ(1, h.bucket[12]);	/* 4095 */
	EXPECT_EQ(1, h.bucket[13]);	/* 4096 */
	EXPECT_EQ(1, h.bucket[32]);	/* 2^32 - 1 */
	EXPECT_EQ(3, h.tail[0]);	/* 0, 128, 4096 */
	EXPECT_EQ(3, h.tail[127]);	/* 127, 4095, 2^32 - 1 */
	EXPECT_EQ(2, h.tail[1]);	/* 1, 129 */
	t = hist_text(&h);
	ASSERT_NE_NULL(t);
	EXPECT_EQ(13, labelled(t, "Sequences:"));
	EXPECT_EQ(UINT32_MAX, labelled(t, "MaxTokens:"));
	EXPECT_EQ(1, labelled(t, "Length 0:"));
	EXPECT_EQ(2, labelled(t, "Length 2-3:"));
	EXPECT_EQ(1, labelled(t, "Length 2147483648-4294967295:"));
	EXPECT_EQ(2, labelled(t, "Tail 1:"));
	EXPECT_EQ(-1, labelled(t, "Length 16-31:"));
	EXPECT_EQ(-1, labelled(t, "Tail 5:"));
	ASSERT_EQ(0, kv_seqlen_parse(t, strlen(t), &back));
	EXPECT_EQ(0, memcmp(&h, &back, sizeof(h)));
	free(t);
	/* An empty one. */
	memset(&h, 0, sizeof(h));
	t = hist_text(&h);
	ASSERT_EQ(0, kv_seqlen_parse(t, strlen(t), &back));
	EXPECT_EQ(0, back.count);
	free(t);
}

TEST(histogram_parse_refuses_nonsense)
{
	static const char *const bad[] = {
		"Sequences: 2\nTokens: 10\nLength 4-7: 2\n",			/* no tails */
		"Sequences: 1\nTokens: 5\nLength 4-7: 1\nTail 5: 2\n",		/* tails */
		"Sequences: 1\nTokens: 5\nLength 4-6: 1\nTail 5: 1\n",		/* bucket */
		"Sequences: 1\nTokens: 5\nLength 3-7: 1\nTail 5: 1\n",
		"Sequences: 1\nTokens: 5\nLength 5: 1\nTail 5: 1\n",
		"Sequences: 1\nTokens: 5\nLength 4-7: 1\nTail 128: 1\n",
		"Sequences: 1\nTokens: 5\nLength 4-7: x\nTail 5: 1\n",
		"Sequences: 0\nTokens: 5\n",
		/* 5 tokens cannot be a sequence of 6 modulo 128 */
		"Sequences: 1\nTokens: 5\nLength 4-7: 1\nTail 6: 1\n",
		"Sequences: 1\nTokens: 133\nLength 4-7: 1\nTail 6: 1\n",
	};
	static const char good[] =
		"Pool: p\nBlockTokens: 16\nSomethingNew: 3\n"
		"Sequences: 1\nTokens: 5\nMaxTokens: 5\nLength 4-7: 1\nTail 5: 1";
	struct kv_seqlen_hist h;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		EXPECT_EQ(-EINVAL, kv_seqlen_parse(bad[i], strlen(bad[i]), &h));
		if (kv_seqlen_parse(bad[i], strlen(bad[i]), &h) != -EINVAL)
			TH_LOG("accepted: %s", bad[i]);
	}
	ASSERT_EQ(0, kv_seqlen_parse(good, strlen(good), &h));
	EXPECT_EQ(1, h.count);
	EXPECT_EQ(1, h.tail[5]);
	EXPECT_EQ(1, h.bucket[3]);
}

/* Index of @block_tokens among the candidates. */
static int row_of(uint32_t block_tokens)
{
	return block_tokens == 8 ? 0 : block_tokens == 16 ? 1 : block_tokens == 32 ? 2 :
	       block_tokens == 64 ? 3 : 4;
}

TEST(advice_by_hand)
{
	struct kv_seqlen_hist h = { 0 };
	struct kv_advice a;

	EXPECT_EQ(-ENODATA, kv_advise(&h, 4096, 0.05, &a));
	h.tokens = 7;	/* counts that disagree */
	EXPECT_EQ(-EINVAL, kv_advise(&h, 4096, 0.05, &a));
	h.tokens = 0;
	record_n(&h, 0, 3);
	EXPECT_EQ(-ENODATA, kv_advise(&h, 4096, 0.05, &a));
	EXPECT_EQ(-EINVAL, kv_advise(&h, 0, 0.05, &a));

	/*
	 * 10 sequences of 100 tokens, 4096 bytes a token (frames exact): 13
	 * blocks of 8 (4 slots empty), 7 of 16 (12), 4 of 32, 2 of 64, 1 of
	 * 128 (28). Only 8 wastes less than 5%: 4 / 104.
	 */
	memset(&h, 0, sizeof(h));
	record_n(&h, 100, 10);
	ASSERT_EQ(0, kv_advise(&h, 4096, 0.05, &a));
	EXPECT_EQ(130, a.rows[0].blocks);
	EXPECT_EQ(40, a.rows[0].unused);
	EXPECT_EQ(70, a.rows[1].blocks);
	EXPECT_EQ(120, a.rows[1].unused);
	EXPECT_EQ(40, a.rows[2].blocks);
	EXPECT_EQ(20, a.rows[3].blocks);
	EXPECT_EQ(10, a.rows[4].blocks);
	EXPECT_EQ(280, a.rows[4].unused);
	EXPECT_TRUE(a.rows[0].waste > 0.0384 && a.rows[0].waste < 0.0385);
	EXPECT_EQ(0, a.best);
	EXPECT_TRUE(a.within);
	/* With 15% allowed, 16 (12 / 112 = 10.7%) is the largest within. */
	ASSERT_EQ(0, kv_advise(&h, 4096, 0.15, &a));
	EXPECT_EQ(row_of(16), a.best);

	/*
	 * 1000 tokens: 0 empty of 8, 8 of 16, 24 of 32, 64 and 128: 2.3%,
	 * so the largest, 128.
	 */
	memset(&h, 0, sizeof(h));
	record_n(&h, 1000, 5);
	ASSERT_EQ(0, kv_advise(&h, 131072, 0.05, &a));
	EXPECT_EQ(0, a.rows[0].unused);
	EXPECT_EQ(5 * 8, a.rows[1].unused);
	EXPECT_EQ(5 * 24, a.rows[4].unused);
	EXPECT_EQ(row_of(128), a.best);

	/*
	 * 128 bytes a token (a tiny pool): blocks of 8 and 16 tokens fill a
	 * quarter and a half of their 4K frames. 96-token sequences fit 32
	 * exactly; 64 and 128 leave 32 and 32 of 128 empty: 32.
	 */
	memset(&h, 0, sizeof(h));
	record_n(&h, 96, 4);
	ASSERT_EQ(0, kv_advise(&h, 128, 0.05, &a));
	EXPECT_TRUE(a.rows[0].waste > 0.749 && a.rows[0].waste < 0.751);
	EXPECT_TRUE(a.rows[1].waste > 0.499 && a.rows[1].waste < 0.501);
	EXPECT_TRUE(a.rows[2].waste == 0.0);
	EXPECT_EQ(4096, a.rows[2].frame_bytes);
	EXPECT_EQ(row_of(32), a.best);
	EXPECT_TRUE(a.within);

	/* Nothing within: the least waste, the larger on a tie (32, 64, 128). */
	memset(&h, 0, sizeof(h));
	record_n(&h, 100, 2);
	ASSERT_EQ(0, kv_advise(&h, 128, 0.05, &a));
	EXPECT_FALSE(a.within);
	EXPECT_EQ(row_of(128), a.best);
}

TEST(advice_text)
{
	struct kv_seqlen_hist h = { 0 };
	struct kv_advice a;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	record_n(&h, 100, 10);
	record_n(&h, 3, 2);
	ASSERT_EQ(0, kv_advise(&h, 4096, 0.05, &a));
	f = open_memstream(&buf, &len);
	ASSERT_NE_NULL(f);
	kv_advise_print(&h, &a, 16, "chat", f);
	fclose(f);
	EXPECT_NE_NULL(strstr(buf, "Pool chat: 12 sequences ended, 1006 tokens (mean 83.8, "
			      "longest 100); block_tokens 16 now\n"));
	EXPECT_EQ(2, labelled(buf, "  2-3"));
	EXPECT_EQ(10, labelled(buf, "  64-127"));
	EXPECT_NE_NULL(strstr(buf, "\n  16 (now)     "));
	EXPECT_NE_NULL(strstr(buf, "advice: block_tokens = 8, the largest block"));
	EXPECT_NE_NULL(strstr(buf, "To use it: pool.chat.block_tokens = 8 in kvmemd.conf"));
	free(buf);
	buf = NULL;
	f = open_memstream(&buf, &len);
	kv_advise_print(&h, &a, 8, "chat", f);
	fclose(f);
	EXPECT_NE_NULL(strstr(buf, "advice: keep block_tokens = 8,"));
	EXPECT_NULL(strstr(buf, "To use it"));
	free(buf);
}

TEST_HARNESS_MAIN
