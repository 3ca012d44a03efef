// SPDX-License-Identifier: MIT
/*
 * CUDA kernels against the CPU ones on the same inputs: decode over the
 * sweep of decode_test (fp16/bf16, head_dim 64/128/256, GQA 1/4/7/8/32,
 * ragged contexts, shuffled frames, NaN everywhere a kernel must not read),
 * with and without the split-context path, sliding windows, and the
 * device-side fault checks; append, copy, gather and scatter bit for bit.
 *
 * Skips (exit 4) where no GPU is found or the build has no CUDA.
 * KV_TEST_SMALL=1 runs a reduced sweep (for compute-sanitizer);
 * KV_DECODE_VARIANT=N tests decode kernel variant N (kv_cuda_decode_variant),
 * KV_PREFILL_VARIANT=N prefill kernel variant N (kv_cuda_prefill_variant).
 */
#include <errno.h>
#include <math.h>

#include "kselftest_harness.h"
#include "kv_test.h"

#ifndef KV_HAVE_CUDA

TEST(gpu)
{
	SKIP(return, "built without CUDA");
}

#else
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_internal.h"

#define CU(call) ASSERT_EQ(cudaSuccess, (call))

static int gpu_present(void)
{
	int n = 0;

	kvt_env_variant("KV_DECODE_VARIANT", 1023, &kv_cuda_decode_variant);
	kvt_env_variant("KV_PREFILL_VARIANT", 1023, &kv_cuda_prefill_variant);
	return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

static void *dev_copy(const void *src, size_t n)
{
	void *d = NULL;

	if (cudaMalloc(&d, n ? n : 1) != cudaSuccess)
		return NULL;
	if (n && cudaMemcpy(d, src, n, cudaMemcpyHostToDevice) != cudaSuccess) {
		cudaFree(d);
		return NULL;
	}
	return d;
}

/* The device buffers of a decode case, NULL ones skipped. */
static void dev_free_decode(void *ws, void *arena, void *q, void *out, void *table, void *ctx,
			    void *status)
{
	void *p[] = { ws, arena, q, out, table, ctx, status };
	size_t i;

	for (i = 0; i < sizeof(p) / sizeof(p[0]); i++)
		cudaFree(p[i]);
}

static int small(void)
{
	return getenv("KV_TEST_SMALL") != NULL;
}

/* GPU vs CPU bound: the CUDA kernel also rounds P to the KV type. */
static double gpu_bound(uint32_t dtype)
{
	return dtype == KV_DTYPE_FP16 ? 3e-3 : 1.5e-2;
}

/*
 * One decode case on both implementations: the CPU output against float64,
 * then the CUDA output against both, once without a workspace (one pass)
 * and once with one (the heuristic may split the contexts). The device
 * queries start @q_off bytes into their buffer.
 */
static void gpu_case(struct __test_metadata *_metadata,
		     const struct kv_geometry *g, __u32 layer, __u32 ratio,
		     __u32 window, __u32 batch, const __u32 *ctx, size_t q_off)
{
	struct kvt_decode_case c;
	struct kv_decode_args a;
	float scale = 1.0f / sqrtf((float)g->head_dim);
	__u32 qh = ratio * g->kv_heads;
	__u64 n = (__u64)batch * qh * g->head_dim, ws_bytes;
	size_t esz = kv_dtype_size(g->dtype), obytes = n * esz;
	void *cpu_out = malloc(obytes), *gpu_out = malloc(obytes), *h_q;
	void *d_arena, *d_q, *d_out, *d_table, *d_ctx, *d_ws = NULL;
	__s32 *d_status, status;
	int split;

	ASSERT_TRUE(cpu_out && gpu_out);
	ASSERT_EQ(0, kvt_decode_case_init(&c, g, layer, qh, window, batch, ctx));
	kvt_decode_reference(&c, scale);
	kvt_fill_nan(c.out, g->dtype, n);
	a = kvt_decode_args(&c, scale);
	ASSERT_EQ(0, kv_decode_cpu(&a));
	memcpy(cpu_out, c.out, obytes);
	EXPECT_LE(kvt_rel_err(cpu_out, g->dtype, c.ref, n), kvt_bound(g->dtype));

	d_arena = dev_copy(c.arena, c.frames * kv_frame_bytes(g));
	h_q = calloc(1, obytes + q_off);
	ASSERT_TRUE(h_q);
	memcpy((char *)h_q + q_off, c.q, obytes);
	d_q = dev_copy(h_q, obytes + q_off);
	free(h_q);
	kvt_fill_nan(c.out, g->dtype, n);
	d_out = dev_copy(c.out, obytes);
	d_table = dev_copy(c.table, sizeof(__u32) * batch * c.stride);
	d_ctx = dev_copy(c.ctx, sizeof(__u32) * batch);
	status = 0;
	d_status = dev_copy(&status, sizeof(status));
	ASSERT_TRUE(d_arena && d_q && d_out && d_table && d_ctx && d_status);

	a.arena.base = d_arena;
	a.q = (char *)d_q + q_off;
	a.out = d_out;
	a.block_table = d_table;
	a.ctx_lens = d_ctx;
	a.status = d_status;
	ws_bytes = kv_decode_workspace_bytes(&a);
	if (ws_bytes)
		CU(cudaMalloc(&d_ws, ws_bytes));

	for (split = 0; split < 2; split++) {
		double err, err64;

		a.workspace = split ? d_ws : NULL;
		a.workspace_bytes = split ? ws_bytes : 0;
		CU(cudaMemcpy(d_out, c.out, obytes, cudaMemcpyHostToDevice));
		EXPECT_EQ(0, kv_decode_cuda(&a));
		CU(cudaDeviceSynchronize());
		CU(cudaMemcpy(gpu_out, d_out, obytes, cudaMemcpyDeviceToHost));
		CU(cudaMemcpy(&status, d_status, sizeof(status), cudaMemcpyDeviceToHost));
		EXPECT_EQ(0, status);
		err = kvt_rel_err_vs(gpu_out, cpu_out, g->dtype, n);
		err64 = kvt_rel_err(gpu_out, g->dtype, c.ref, n);
		if (getenv("KVT_VERBOSE") || !(err <= gpu_bound(g->dtype)) ||
		    !(err64 <= kvt_bound(g->dtype)))
			TH_LOG("dtype %u hd %u bt %u kvh %u ratio %u window %u batch %u split %d q_off %zu: vs cpu %g vs f64 %g",
			       g->dtype, g->head_dim, g->block_tokens, g->kv_heads,
			       ratio, window, batch, split, q_off, err, err64);
		EXPECT_LE(err, gpu_bound(g->dtype));
		EXPECT_LE(err64, kvt_bound(g->dtype));
	}
	dev_free_decode(d_ws, d_arena, d_q, d_out, d_table, d_ctx, d_status);
	free(cpu_out);
	free(gpu_out);
	kvt_decode_case_free(&c);
}

static void sweep(struct __test_metadata *_metadata, __u32 dtype)
{
	static const __u32 ratios[] = { 1, 4, 7, 8, 32 };
	static const __u32 hds[] = { 64, 128, 256 };
	__u32 i, j, ctx[6];

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	for (i = 0; i < 3; i++) {
		for (j = 0; j < 5; j++) {
			struct kv_geometry g = {
				.layers = 3,
				.kv_heads = ratios[j] >= 8 ? 1 + kvt_below(2) : 2,
				.head_dim = hds[i],
				.block_tokens = (i + j) % 3 == 0 ? 16 : (i + j) % 3 == 1 ? 5 : 32,
				.dtype = dtype,
			};

			if (small() && (i + j) % 2)
				continue;
			kvt_ragged(ctx, 6, g.block_tokens, small() ? 100 : 600);
			gpu_case(_metadata, &g, kvt_below(3), ratios[j], 0, 6, ctx, 0);
		}
	}
}

/*
 * kv_cuda_device() agrees with the runtime, and the code it reports loaded
 * is of an architecture the device runs: 80 or later (the library is
 * built for sm_80 and sm_90a) and not past the device's.
 */
TEST(device_info)
{
	struct kv_cuda_dev d, again;
	int dev, sms, major, minor;

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	CU(cudaGetDevice(&dev));
	CU(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
	CU(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
	CU(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
	ASSERT_EQ(0, kv_cuda_device(&d));
	TH_LOG("device %d: %d SMs, compute capability %d.%d, code for %d",
	       d.id, d.sms, d.major, d.minor, d.code_arch);
	EXPECT_EQ(dev, d.id);
	EXPECT_EQ(sms, d.sms);
	EXPECT_EQ(major, d.major);
	EXPECT_EQ(minor, d.minor);
	EXPECT_GE(d.code_arch, 80);
	EXPECT_LE(d.code_arch, major * 10 + minor);
	ASSERT_EQ(0, kv_cuda_device(&again));	/* the cached copy */
	EXPECT_EQ(0, memcmp(&d, &again, sizeof(d)));
}

TEST(decode_fp16)
{
	sweep(_metadata, KV_DTYPE_FP16);
}

TEST(decode_bf16)
{
	sweep(_metadata, KV_DTYPE_BF16);
}

/* Long contexts at small batch (the split path) and sliding windows. */
TEST(decode_long_split_window)
{
	struct kv_geometry g = { 2, 8, 128, 16, KV_DTYPE_BF16, 0 };
	__u32 ctx[3], w, windows[] = { 0, 1, 100, 1000 };

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	for (w = 0; w < 4; w++) {
		ctx[0] = (small() ? 700 : 9000) + kvt_below(300);
		ctx[1] = 1 + kvt_below(40);
		ctx[2] = (small() ? 300 : 3000) + kvt_below(300);
		gpu_case(_metadata, &g, 1, 4, windows[w], 3, ctx, 0);
	}
	g.block_tokens = 64;
	g.head_dim = 64;
	g.dtype = KV_DTYPE_FP16;
	ctx[0] = 2048;
	ctx[1] = 2047;
	ctx[2] = 17;
	gpu_case(_metadata, &g, 0, 8, 0, 3, ctx, 0);
}

/*
 * The batch whose (sequence, kv head) pairs fill the GPU's SMs once at 2
 * kv heads (at most 512 sequences), 0 if the device cannot say
 */
static __u32 one_cta_batch(void)
{
	int sms = 0;

	if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess)
		return 0;
	return sms / 2 > 512 ? 512 : (__u32)(sms / 2);
}

/*
 * Batches whose (sequence, kv head) pairs fill the GPU's SMs once: the
 * shape where decode variant bit 6 takes one 16-warp CTA per pair.
 */
TEST(decode_one_cta_per_head)
{
	struct kv_geometry g = { 2, 2, 128, 16, KV_DTYPE_BF16, 0 };
	__u32 ctx[512], batch;

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	batch = one_cta_batch();
	ASSERT_NE(0, batch);
	kvt_seed(__func__);
	kvt_ragged(ctx, batch, g.block_tokens, small() ? 300 : 1200);
	ctx[0] = small() ? 600 : 2048;
	gpu_case(_metadata, &g, 1, 4, 0, batch, ctx, 0);
	g.head_dim = 64;
	g.dtype = KV_DTYPE_FP16;
	g.block_tokens = 32;
	kvt_ragged(ctx, batch, g.block_tokens, small() ? 300 : 1200);
	ctx[batch - 1] = small() ? 700 : 2049;
	gpu_case(_metadata, &g, 0, 8, 0, batch, ctx, 0);
}

/*
 * More sequences than a grid's z holds (65535): launched in turns, the
 * same results as the CPU's. Such a batch gets no workspace
 * (decode_test's workspace_only_for_small_batches), so no turn splits.
 */
TEST(decode_past_65535_sequences)
{
	static __u32 ctx[70000];
	struct kv_geometry g = { 1, 1, 64, 16, KV_DTYPE_FP16, 0 };

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	if (small())
		SKIP(return, "KV_TEST_SMALL");
	kvt_seed(__func__);
	kvt_ragged(ctx, 70000, g.block_tokens, 40);
	gpu_case(_metadata, &g, 0, 4, 0, 70000, ctx, 0);
}

/*
 * Queries that are not 16-byte aligned (2 and 8 bytes past, as a view at
 * an odd element would be): the same results as aligned ones, on the
 * split and the one-CTA-per-head paths, GQA ratios 1, 4 and 8 (quantized
 * pools: gpu_quant_test int4_one_cta_per_head).
 */
TEST(decode_unaligned_q)
{
	static const size_t offs[] = { 2, 8 };
	struct kv_geometry g = { 2, 2, 128, 16, KV_DTYPE_BF16, 0 };
	__u32 ctx[512], batch, i;

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	batch = one_cta_batch();
	ASSERT_NE(0, batch);
	kvt_seed(__func__);
	for (i = 0; i < 2; i++) {
		g.head_dim = 128;
		g.dtype = KV_DTYPE_BF16;
		kvt_ragged(ctx, 5, g.block_tokens, 700);
		gpu_case(_metadata, &g, 1, 4, 0, 5, ctx, offs[i]);
		g.head_dim = 64;
		g.dtype = KV_DTYPE_FP16;
		gpu_case(_metadata, &g, 0, 1, 0, 5, ctx, offs[i]);
		kvt_ragged(ctx, batch, g.block_tokens, small() ? 300 : 1200);
		ctx[0] = small() ? 600 : 2048;
		gpu_case(_metadata, &g, 0, 8, 0, batch, ctx, offs[i]);
	}
}

/*
 * A launch of @a that must succeed; *status after it (reset to 0 first),
 * or 1 when the launch or a copy failed.
 */
static __s32 prefill_status(const struct kv_prefill_args *a, __s32 *d_status)
{
	__s32 status = 0;

	if (cudaMemcpy(d_status, &status, sizeof(status), cudaMemcpyHostToDevice) ||
	    kv_prefill_cuda(a) || cudaDeviceSynchronize() ||
	    cudaMemcpy(&status, d_status, sizeof(status), cudaMemcpyDeviceToHost))
		return 1;
	return status;
}

/*
 * One prefill case on both implementations: CPU against float64, CUDA
 * against both; with @bad_frame a frame of the last sequence lies past the
 * arena: *status is -EINVAL, that sequence's rows are NaN, the rest right;
 * then the other faults fail too (an arena base not 16-byte aligned,
 * q_start not from 0, max_q_len under the first sequence's queries, a
 * context shorter than them, outputs not 4-byte aligned);
 * with @q_off the device queries start that many bytes into their buffer
 * (not 16-byte aligned; not 4-byte aligned, the call must fail).
 */
static void gpu_prefill_case(struct __test_metadata *_metadata,
			     const struct kv_geometry *g, __u32 ratio, __u32 window,
			     __u32 batch, const __u32 *cached, const __u32 *nq,
			     int bad_frame, size_t q_off)
{
	struct kvt_prefill_case c;
	struct kv_prefill_args a;
	float scale = 1.0f / sqrtf((float)g->head_dim);
	__u32 qh = ratio * g->kv_heads;
	__u64 n, good;
	size_t esz = kv_dtype_size(g->dtype), obytes;
	void *cpu_out, *gpu_out, *d_arena, *d_q, *d_out, *d_qs, *d_table, *d_ctx, *h_q;
	__s32 *d_status, status = 0;
	__u32 good_frame;
	double err, err64;

	ASSERT_EQ(0, kvt_prefill_case_init(&c, g, kvt_below(g->layers), qh, window,
					   batch, cached, nq));
	n = (__u64)c.tokens * qh * g->head_dim;
	good = (__u64)c.q_start[batch - 1] * qh * g->head_dim;
	obytes = n * esz;
	cpu_out = malloc(obytes + 1);
	gpu_out = malloc(obytes + 1);
	ASSERT_TRUE(cpu_out && gpu_out);
	kvt_prefill_reference(&c, scale);
	a = kvt_prefill_args(&c, scale);
	ASSERT_EQ(0, kv_prefill_cpu(&a));
	memcpy(cpu_out, c.out, obytes);
	EXPECT_LE(kvt_rel_err(cpu_out, g->dtype, c.ref, n), kvt_bound(g->dtype));
	good_frame = c.d.table[(size_t)(batch - 1) * c.d.stride];
	if (bad_frame)
		c.d.table[(size_t)(batch - 1) * c.d.stride] = (__u32)c.d.frames + 7;

	d_arena = dev_copy(c.d.arena, c.d.frames * kv_frame_bytes(g));
	h_q = calloc(1, obytes + q_off);
	ASSERT_TRUE(h_q != NULL);
	memcpy((char *)h_q + q_off, c.q, obytes);
	d_q = dev_copy(h_q, obytes + q_off);
	free(h_q);
	kvt_fill_nan(c.out, g->dtype, n);
	d_out = dev_copy(c.out, obytes);
	d_qs = dev_copy(c.q_start, sizeof(__u32) * (batch + 1));
	d_table = dev_copy(c.d.table, sizeof(__u32) * batch * c.d.stride);
	d_ctx = dev_copy(c.d.ctx, sizeof(__u32) * batch);
	d_status = dev_copy(&status, sizeof(status));
	ASSERT_TRUE(d_arena && d_q && d_out && d_qs && d_table && d_ctx && d_status);
	a.arena.base = d_arena;
	a.q = (char *)d_q + q_off;
	a.out = d_out;
	a.q_start = d_qs;
	a.block_table = d_table;
	a.ctx_lens = d_ctx;
	a.status = d_status;
	if (q_off & 3) {			/* refused before any launch */
		EXPECT_EQ(-EINVAL, kv_prefill_cuda(&a));
		goto out;
	}
	EXPECT_EQ(0, kv_prefill_cuda(&a));
	CU(cudaDeviceSynchronize());
	CU(cudaMemcpy(gpu_out, d_out, obytes, cudaMemcpyDeviceToHost));
	CU(cudaMemcpy(&status, d_status, sizeof(status), cudaMemcpyDeviceToHost));
	EXPECT_EQ(bad_frame ? -EINVAL : 0, status);
	if (bad_frame) {
		__u64 i;

		for (i = good; i < n; i++)
			if (!isnan(kv_load_f32(gpu_out, g->dtype, i)))
				break;
		EXPECT_EQ(n, i);
		n = good;
	}
	err = kvt_rel_err_vs(gpu_out, cpu_out, g->dtype, n);
	err64 = kvt_rel_err(gpu_out, g->dtype, c.ref, n);
	if (getenv("KVT_VERBOSE") || !(err <= gpu_bound(g->dtype)) ||
	    !(err64 <= kvt_bound(g->dtype)))
		TH_LOG("prefill dtype %u hd %u bt %u kvh %u ratio %u window %u batch %u: vs cpu %g vs f64 %g",
		       g->dtype, g->head_dim, g->block_tokens, g->kv_heads, ratio, window,
		       batch, err, err64);
	EXPECT_LE(err, gpu_bound(g->dtype));
	EXPECT_LE(err64, kvt_bound(g->dtype));
	if (bad_frame) {
		__u32 one = 1, ctx0, mq = a.max_q_len;

		ASSERT_GE(c.q_start[1], 2);	/* the first sequence has 2 queries or more */
		/* an arena base not 16-byte aligned: refused before any launch */
		a.arena.base = (char *)d_arena + 8;
		EXPECT_EQ(-EINVAL, kv_prefill_cuda(&a));
		a.arena.base = d_arena;
		/* the bad frame mended, a clean run; then one fault at a time */
		CU(cudaMemcpy((char *)d_table + (size_t)(batch - 1) * c.d.stride * sizeof(__u32),
			      &good_frame, sizeof(good_frame), cudaMemcpyHostToDevice));
		EXPECT_EQ(0, prefill_status(&a, d_status));
		/* q_start[0] != 0, which the CPU refuses */
		CU(cudaMemcpy(d_qs, &one, sizeof(one), cudaMemcpyHostToDevice));
		EXPECT_EQ(-EINVAL, prefill_status(&a, d_status));
		CU(cudaMemcpy(d_qs, c.q_start, sizeof(one), cudaMemcpyHostToDevice));
		/* max_q_len under a sequence's queries: the grid misses rows */
		a.max_q_len = c.q_start[1] - 1;
		EXPECT_EQ(-EINVAL, prefill_status(&a, d_status));
		a.max_q_len = mq;
		EXPECT_EQ(0, prefill_status(&a, d_status));
		/* a context shorter than the sequence's queries */
		ctx0 = c.q_start[1] - 1;
		CU(cudaMemcpy(d_ctx, &ctx0, sizeof(ctx0), cudaMemcpyHostToDevice));
		EXPECT_EQ(-EINVAL, prefill_status(&a, d_status));
		/* outputs not 4-byte aligned: refused before any launch */
		a.out = (char *)d_out + 2;
		EXPECT_EQ(-EINVAL, kv_prefill_cuda(&a));
	}
out:
	cudaFree(d_arena);
	cudaFree(d_q);
	cudaFree(d_out);
	cudaFree(d_qs);
	cudaFree(d_table);
	cudaFree(d_ctx);
	cudaFree(d_status);
	free(cpu_out);
	free(gpu_out);
	kvt_prefill_case_free(&c);
}

/*
 * Prefill, CUDA against CPU: fp16 and bf16, head_dim 64 and 128, GQA
 * 1/4/7/8, block sizes 16/5/32, cached prefixes of 0, 1, 15, 16 and 1000
 * tokens with ragged new runs (several query tiles), sliding windows, and
 * a frame past the arena, queries not 16-byte aligned; by the default
 * kernels, then by the mma.sync variants 6 and 8 (which an sm_90 device
 * runs only for head_dim 64 by default), unless KV_PREFILL_VARIANT names
 * one.
 */
static void prefill_sweep(struct __test_metadata *_metadata)
{
	static const __u32 ratios[] = { 1, 4, 7, 8 }, pre[] = { 0, 1, 15, 16, 1000 };
	static const __u32 windows[] = { 0, 0, 1, 100 };
	__u32 di, hi, ri, b, cached[6], nq[6];

	for (di = 0; di < 2; di++)
		for (hi = 0; hi < 2; hi++)
			for (ri = 0; ri < 4; ri++) {
				struct kv_geometry g = {
					.layers = 2, .kv_heads = 1 + kvt_below(2),
					.head_dim = hi ? 128 : 64,
					.block_tokens = (di + hi + ri) % 3 == 0 ? 16 :
							(di + hi + ri) % 3 == 1 ? 5 : 32,
					.dtype = di ? KV_DTYPE_BF16 : KV_DTYPE_FP16,
				};

				if (small() && (di + hi + ri) % 2)
					continue;
				for (b = 0; b < 6; b++) {
					cached[b] = b < 5 ? pre[b] : kvt_below(300);
					nq[b] = b == 1 ? 1 : 1 + kvt_below(small() ? 40 : 150);
				}
				gpu_prefill_case(_metadata, &g, ratios[ri], windows[ri], 6,
						 cached, nq, 0, 0);
			}
	{
		struct kv_geometry g = { 2, 2, 128, 16, KV_DTYPE_BF16, 0 };

		nq[0] = 20;	/* for the faults of max_q_len and ctx */
		gpu_prefill_case(_metadata, &g, 4, 0, 6, cached, nq, 1, 0);
		/* queries 4 bytes past 16-byte alignment: variant 6, even if forced */
		gpu_prefill_case(_metadata, &g, 4, 0, 6, cached, nq, 0, 4);
		/* 2 bytes past: -EINVAL */
		gpu_prefill_case(_metadata, &g, 4, 0, 6, cached, nq, 0, 2);
	}
}

/*
 * Every kernel: the default, the two mma.sync shapes, and the wgmma one
 * (where it runs; else variant 6) with its CTAs taking a pair and two
 * pairs of query tiles (kv_cuda_prefill_ipc), whatever the grid's size.
 * The five sweeps against the CPU kernel run close to the harness's
 * default 30 s on an H100 machine (one run timed out), so 120.
 */
TEST_TIMEOUT(prefill_equal_cpu, 120)
{
	static const int variants[][2] = { { -1, 0 }, { 6, 0 }, { 8, 0 }, { 12, 2 }, { 12, 4 } };
	const int named = kv_cuda_prefill_variant;
	unsigned int i;

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	for (i = 0; i < (named >= 0 ? 1 : sizeof(variants) / sizeof(variants[0])); i++) {
		kv_cuda_prefill_variant = named >= 0 ? named : variants[i][0];
		kv_cuda_prefill_ipc = named >= 0 ? 0 : variants[i][1];
		prefill_sweep(_metadata);
	}
	kv_cuda_prefill_variant = named;
	kv_cuda_prefill_ipc = 0;
}

/*
 * One decode fault: sequence @bs reads a frame past the arena (block @blk
 * of its table), or (@blk == ~0u) has a context longer than its table.
 * *status gets -EINVAL and that sequence's heads NaN; the others are
 * right. @ws: with a workspace (the split path where it applies).
 */
static void fault_case(struct __test_metadata *_metadata, const struct kv_geometry *g,
		       __u32 batch, const __u32 *ctx, __u32 bs, __u32 blk, int ws)
{
	struct kvt_decode_case c;
	struct kv_decode_args a;
	__u64 per = 8 * g->head_dim, n = batch * per;
	void *d_arena, *d_q, *d_out, *d_table, *d_ctx, *d_ws = NULL, *out = malloc(n * 2);
	__s32 *d_status, status = 0;

	ASSERT_TRUE(out);
	ASSERT_EQ(0, kvt_decode_case_init(&c, g, 0, 8, 0, batch, ctx));
	kvt_decode_reference(&c, 0.088f);
	if (blk != ~0u) {
		c.table[bs * c.stride + blk] = (__u32)c.frames + 5;
	} else {
		c.table[bs * c.stride + 2] = c.table[0];
		c.ctx[bs] = c.stride * g->block_tokens + 1;
	}
	d_arena = dev_copy(c.arena, c.frames * kv_frame_bytes(g));
	d_q = dev_copy(c.q, n * 2);
	kvt_fill_nan(c.out, g->dtype, n);
	d_out = dev_copy(c.out, n * 2);
	d_table = dev_copy(c.table, sizeof(__u32) * batch * c.stride);
	d_ctx = dev_copy(c.ctx, sizeof(__u32) * batch);
	d_status = dev_copy(&status, sizeof(status));
	ASSERT_TRUE(d_arena && d_q && d_out && d_table && d_ctx && d_status);
	a = kvt_decode_args(&c, 0.088f);
	a.arena.base = d_arena;
	a.q = d_q;
	a.out = d_out;
	a.block_table = d_table;
	a.ctx_lens = d_ctx;
	a.status = d_status;
	if (ws) {
		a.workspace_bytes = kv_decode_workspace_bytes(&a);
		ASSERT_NE(0, a.workspace_bytes);
		CU(cudaMalloc(&d_ws, a.workspace_bytes));
		a.workspace = d_ws;
	}
	EXPECT_EQ(0, kv_decode_cuda(&a));
	CU(cudaDeviceSynchronize());
	CU(cudaMemcpy(out, d_out, n * 2, cudaMemcpyDeviceToHost));
	CU(cudaMemcpy(&status, d_status, sizeof(status), cudaMemcpyDeviceToHost));
	EXPECT_EQ(-EINVAL, status);
	EXPECT_TRUE(isnan(kv_load_f32(out, g->dtype, bs * per)));
	EXPECT_TRUE(isnan(kv_load_f32(out, g->dtype, (bs + 1) * per - 1)));
	if (bs)
		EXPECT_LE(kvt_rel_err(out, g->dtype, c.ref, bs * per), kvt_bound(g->dtype));
	if (bs + 1 < batch)
		EXPECT_LE(kvt_rel_err((char *)out + (bs + 1) * per * 2, g->dtype,
				      c.ref + (bs + 1) * per, (batch - bs - 1) * per),
			  kvt_bound(g->dtype));
	/* host-checkable errors come back at once */
	a.q_heads = 7;
	EXPECT_EQ(-EINVAL, kv_decode_cuda(&a));
	a.q_heads = 8;
	a.arena.base = (char *)d_arena + 8;	/* not 16-byte aligned */
	EXPECT_EQ(-EINVAL, kv_decode_cuda(&a));
	a.arena.base = d_arena;
	a.arena.g.dtype = KV_DTYPE_FP32;
	EXPECT_EQ(-EOPNOTSUPP, kv_decode_cuda(&a));
	dev_free_decode(d_ws, d_arena, d_q, d_out, d_table, d_ctx, d_status);
	free(out);
	kvt_decode_case_free(&c);
}

/*
 * Device-side faults: a frame past the arena and a context longer than its
 * table set *status and give NaN for that sequence alone: on the 4-warp
 * path, split (one long context among short ones) and not, and on the
 * one-CTA-of-16-warps path, the bad frame late in a long context.
 */
TEST(decode_faults)
{
	struct kv_geometry g = { 1, 2, 128, 16, KV_DTYPE_BF16, 0 };
	__u32 ctx[512] = { 100, 70, 50 }, batch;

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	fault_case(_metadata, &g, 3, ctx, 1, 2, 0);
	fault_case(_metadata, &g, 3, ctx, 1, ~0u, 0);
	ctx[1] = small() ? 1600 : 6000;
	fault_case(_metadata, &g, 3, ctx, 1, ctx[1] / 16 - 5, 1);
	batch = one_cta_batch();
	ASSERT_NE(0, batch);
	kvt_ragged(ctx, batch, g.block_tokens, 300);
	ctx[0] = small() ? 1600 : 6000;
	fault_case(_metadata, &g, batch, ctx, 0, ctx[0] / 16 - 5, 1);
}

/* No drafts at all (max_draft 0, draft NULL): the CPU's argmax of row 0. */
TEST(verify_without_drafts)
{
	const __u32 batch = 5, vocab = 1000;
	static __s32 acc[5], next[5], gacc[5], gnext[5];
	static __u32 lens[5];
	float logits[5 * 1000];
	__s32 *d_acc, *d_next;
	void *d_logits, *d_lens;
	struct kv_verify_args a = {
		.batch = batch, .max_draft = 0, .vocab = vocab, .dtype = KV_DTYPE_FP32,
		.draft = NULL, .draft_lens = lens, .logits = logits,
		.accepted = acc, .next = next,
	};
	__u32 b;

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	kvt_fill(logits, KV_DTYPE_FP32, batch * vocab, 4.0);
	ASSERT_EQ(0, kv_verify_cpu(&a));
	d_logits = dev_copy(logits, sizeof(logits));
	d_lens = dev_copy(lens, sizeof(lens));
	ASSERT_TRUE(d_logits && d_lens);
	CU(cudaMalloc((void **)&d_acc, sizeof(acc)));
	CU(cudaMalloc((void **)&d_next, sizeof(next)));
	a.logits = d_logits;
	a.draft_lens = d_lens;
	a.accepted = d_acc;
	a.next = d_next;
	EXPECT_EQ(0, kv_verify_cuda(&a));
	CU(cudaDeviceSynchronize());
	CU(cudaMemcpy(gacc, d_acc, sizeof(gacc), cudaMemcpyDeviceToHost));
	CU(cudaMemcpy(gnext, d_next, sizeof(gnext), cudaMemcpyDeviceToHost));
	for (b = 0; b < batch; b++) {
		EXPECT_EQ(0, gacc[b]);
		EXPECT_EQ(kvt_argmax(logits, KV_DTYPE_FP32, (__u64)b * vocab, vocab), next[b]);
		EXPECT_EQ(next[b], gnext[b]);
	}
	cudaFree(d_logits);
	cudaFree(d_lens);
	cudaFree(d_acc);
	cudaFree(d_next);
}

/*
 * Speculative verification: the CUDA kernel against the CPU one on the same
 * inputs, every dtype, vocab sizes that take the 16-byte and the element
 * path, more sequences than the grid has CTAs, ties and NaN rows, ragged
 * drafts accepted to random lengths, and two bad drafts (with a status).
 */
TEST(verify_equal_cpu)
{
	static const __u32 dtypes[] = { KV_DTYPE_FP32, KV_DTYPE_FP16, KV_DTYPE_BF16 };
	static const __u32 shapes[][2] = {	/* vocab, batch */
		{ 1, 9 }, { 7, 70000 }, { 16, 33 }, { 32000, 40 }, { 50257, 24 },
	};
	const __u32 md = 7;
	unsigned int di, si;

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	for (di = 0; di < 3; di++) {
		for (si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
			__u32 dt = dtypes[di], vocab = shapes[si][0], batch = shapes[si][1];
			__u64 rows = (__u64)batch * (md + 1), n = rows * vocab, r;
			size_t lbytes = n * kv_dtype_size(dt), obytes = sizeof(__s32) * batch;
			void *logits = malloc(lbytes);
			__s32 *draft = malloc(sizeof(__s32) * batch * md);
			__u32 *lens = malloc(sizeof(__u32) * batch), b, j;
			__s32 *acc = malloc(obytes), *next = malloc(obytes);
			__s32 *gacc = malloc(obytes), *gnext = malloc(obytes);
			__s32 *d_acc, *d_next, *d_draft, *d_status, status;
			void *d_logits, *d_lens;
			struct kv_verify_args a;
			int nostat;

			ASSERT_TRUE(logits && draft && lens && acc && next && gacc && gnext);
			kvt_fill(logits, dt, n, 4.0);
			for (r = 0; r < rows; r++) {
				__u32 k = kvt_below(8);
				__u64 o = r * vocab;

				if (k == 0) {	/* a tie between two equal maxima */
					kv_store_f32(logits, dt, o + kvt_below(vocab), 8.0f);
					kv_store_f32(logits, dt, o + kvt_below(vocab), 8.0f);
				} else if (k == 1) {
					kv_store_f32(logits, dt, o + kvt_below(vocab), NAN);
				}
			}
			for (b = 0; b < batch; b++) {
				__s32 *d = draft + (__u64)b * md;
				__u32 len = b == 0 ? 0 : b == 1 ? md : kvt_below(md + 1);
				__u32 keep = kvt_below(len + 1);

				lens[b] = len;
				for (j = 0; j < md; j++) {
					__s32 top = kvt_argmax(logits, dt, ((__u64)b * (md + 1) + j) *
							       vocab, vocab);

					if (j >= len)
						d[j] = -7;	/* never read as a draft */
					else if (j < keep || vocab == 1)
						d[j] = top;
					else	/* any other token */
						d[j] = (__s32)((top + 1 +
								kvt_below(vocab - 1)) % vocab);
				}
			}
			/* bad drafts: one too long, one with a token past the vocabulary */
			lens[batch - 3] = md + 1;
			lens[batch - 2] = md;
			for (j = 0; j < md; j++)
				draft[(__u64)(batch - 2) * md + j] = (__s32)kvt_below(vocab);
			draft[(__u64)(batch - 2) * md + md - 1] = (__s32)vocab;

			a = (struct kv_verify_args){
				.batch = batch, .max_draft = md, .vocab = vocab, .dtype = dt,
				.draft = draft, .draft_lens = lens, .logits = logits,
				.accepted = acc, .next = next, .status = &status,
			};
			status = 0;
			EXPECT_EQ(-EINVAL, kv_verify_cpu(&a));
			EXPECT_EQ(-EINVAL, status);
			EXPECT_EQ(-1, next[batch - 3]);
			EXPECT_EQ(-1, next[batch - 2]);

			d_logits = dev_copy(logits, lbytes);
			d_draft = dev_copy(draft, sizeof(__s32) * batch * md);
			d_lens = dev_copy(lens, sizeof(__u32) * batch);
			status = 0;
			d_status = dev_copy(&status, sizeof(status));
			ASSERT_TRUE(d_logits && d_draft && d_lens && d_status);
			CU(cudaMalloc((void **)&d_acc, obytes));
			CU(cudaMalloc((void **)&d_next, obytes));
			a.draft = d_draft;
			a.draft_lens = d_lens;
			a.logits = d_logits;
			a.accepted = d_acc;
			a.next = d_next;
			for (nostat = 0; nostat < 2; nostat++) {
				a.status = nostat ? NULL : d_status;
				CU(cudaMemset(d_acc, 0x5a, obytes));
				CU(cudaMemset(d_next, 0x5a, obytes));
				EXPECT_EQ(0, kv_verify_cuda(&a));
				CU(cudaDeviceSynchronize());
				CU(cudaMemcpy(gacc, d_acc, obytes, cudaMemcpyDeviceToHost));
				CU(cudaMemcpy(gnext, d_next, obytes, cudaMemcpyDeviceToHost));
				for (b = 0; b < batch; b++) {
					if (gacc[b] == acc[b] && gnext[b] == next[b])
						continue;
					TH_LOG("dtype %u vocab %u seq %u of %u (len %u): cuda %d %d, cpu %d %d",
					       dt, vocab, b, batch, lens[b], gacc[b], gnext[b],
					       acc[b], next[b]);
					EXPECT_EQ(acc[b], gacc[b]);
					EXPECT_EQ(next[b], gnext[b]);
					break;
				}
			}
			CU(cudaMemcpy(&status, d_status, sizeof(status), cudaMemcpyDeviceToHost));
			EXPECT_EQ(-EINVAL, status);

			/* host-checked arguments come back at once; an empty batch is 0 */
			a.vocab = 0;
			EXPECT_EQ(-EINVAL, kv_verify_cuda(&a));
			a.vocab = vocab;
			a.dtype = 0;
			EXPECT_EQ(-EINVAL, kv_verify_cuda(&a));
			a.dtype = dt;
			a.batch = 0;
			EXPECT_EQ(0, kv_verify_cuda(&a));
			CU(cudaDeviceSynchronize());

			cudaFree(d_logits);
			cudaFree(d_draft);
			cudaFree(d_lens);
			cudaFree(d_acc);
			cudaFree(d_next);
			cudaFree(d_status);
			free(logits);
			free(draft);
			free(lens);
			free(acc);
			free(next);
			free(gacc);
			free(gnext);
		}
	}
}

/* Append, copy, gather and scatter: the CUDA result equals the CPU one. */
TEST(blocks_equal_cpu)
{
	static const struct kv_geometry geoms[] = {
		{ 3, 2, 64, 16, KV_DTYPE_BF16, 0 },
		{ 2, 3, 128, 5, KV_DTYPE_FP16, 0 },
		{ 2, 1, 24, 7, KV_DTYPE_FP32, 0 },
		{ 1, 1, 7, 3, KV_DTYPE_FP16, 0 },
	};
	const __u32 nf = 29;
	unsigned int gi;

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	for (gi = 0; gi < sizeof(geoms) / sizeof(geoms[0]); gi++) {
		const struct kv_geometry *g = &geoms[gi];
		__u64 fb = kv_frame_bytes(g), bb = kv_block_bytes(g), bytes = nf * fb, i;
		__u32 tokens = 50, layer = kvt_below(g->layers), perm[29], src[6], dst[6];
		__u64 vecb = (__u64)g->kv_heads * g->head_dim * kv_dtype_size(g->dtype);
		__u32 *sperm = malloc(sizeof(__u32) * nf * g->block_tokens);
		__s64 slots[50];
		unsigned char *arena = malloc(bytes), *back = malloc(bytes);
		char *k = malloc(tokens * vecb), *v = malloc(tokens * vecb), *buf = malloc(10 * bb);
		void *d_arena, *d_k, *d_v, *d_slots, *d_src, *d_dst, *d_frames, *d_buf;
		__s32 *d_status, status = 0;
		struct kv_append_args ap;
		struct kv_copy_args cp;
		struct kv_gather_args ga;

		ASSERT_TRUE(sperm && arena && back && k && v && buf);
		for (i = 0; i < bytes; i++)
			arena[i] = (unsigned char)kvt_rand64();
		kvt_fill(k, g->dtype, tokens * vecb / kv_dtype_size(g->dtype), 1.0);
		kvt_fill(v, g->dtype, tokens * vecb / kv_dtype_size(g->dtype), 1.0);
		for (i = 0; i < nf * g->block_tokens; i++)
			sperm[i] = (__u32)i;
		kvt_shuffle_u32(sperm, nf * g->block_tokens);
		for (i = 0; i < tokens; i++)
			slots[i] = i % 9 == 4 ? -1 : (__s64)sperm[i];
		for (i = 0; i < nf; i++)
			perm[i] = (__u32)i;
		kvt_shuffle_u32(perm, nf);
		for (i = 0; i < 6; i++) {
			src[i] = perm[i];
			dst[i] = perm[6 + i];
		}

		d_arena = dev_copy(arena, bytes);
		d_k = dev_copy(k, tokens * vecb);
		d_v = dev_copy(v, tokens * vecb);
		d_slots = dev_copy(slots, sizeof(slots));
		d_src = dev_copy(src, sizeof(src));
		d_dst = dev_copy(dst, sizeof(dst));
		d_frames = dev_copy(perm + 12, 10 * sizeof(__u32));
		d_buf = dev_copy(buf, 10 * bb);
		d_status = dev_copy(&status, sizeof(status));
		ASSERT_TRUE(d_arena && d_k && d_v && d_slots && d_src && d_dst &&
			    d_frames && d_buf && d_status);

		ap = (struct kv_append_args){ .arena = { arena, nf, *g }, .layer = layer,
			.tokens = tokens, .k = k, .v = v, .slots = slots };
		cp = (struct kv_copy_args){ .arena = { arena, nf, *g }, .pairs = 6,
			.src = src, .dst = dst };
		ga = (struct kv_gather_args){ .arena = { arena, nf, *g }, .nframes = 10,
			.frames = perm + 12, .buf = buf };
		/* CPU: append, copy, gather, then scatter the gathered blocks shifted */
		ASSERT_EQ(0, kv_append_cpu(&ap));
		ASSERT_EQ(0, kv_copy_blocks_cpu(&cp));
		ASSERT_EQ(0, kv_gather_cpu(&ga));
		ga.frames = perm + 13;
		ASSERT_EQ(0, kv_scatter_cpu(&ga));

		ap.arena.base = cp.arena.base = ga.arena.base = d_arena;
		ap.k = d_k;
		ap.v = d_v;
		ap.slots = d_slots;
		cp.src = d_src;
		cp.dst = d_dst;
		ga.frames = d_frames;
		ga.buf = d_buf;
		ap.status = cp.status = ga.status = d_status;
		EXPECT_EQ(0, kv_append_cuda(&ap));
		EXPECT_EQ(0, kv_copy_blocks_cuda(&cp));
		EXPECT_EQ(0, kv_gather_cuda(&ga));
		CU(cudaMemcpy(d_frames, perm + 13, 10 * sizeof(__u32), cudaMemcpyHostToDevice));
		EXPECT_EQ(0, kv_scatter_cuda(&ga));
		CU(cudaDeviceSynchronize());
		CU(cudaMemcpy(back, d_arena, bytes, cudaMemcpyDeviceToHost));
		EXPECT_EQ(0, memcmp(arena, back, bytes));
		CU(cudaMemcpy(back, d_buf, 10 * bb, cudaMemcpyDeviceToHost));
		EXPECT_EQ(0, memcmp(buf, back, 10 * bb));
		CU(cudaMemcpy(&status, d_status, sizeof(status), cudaMemcpyDeviceToHost));
		EXPECT_EQ(0, status);

		/* device-side faults: a slot and a frame past the arena */
		slots[0] = (__s64)nf * g->block_tokens;
		CU(cudaMemcpy(d_slots, slots, sizeof(slots), cudaMemcpyHostToDevice));
		EXPECT_EQ(0, kv_append_cuda(&ap));
		CU(cudaDeviceSynchronize());
		CU(cudaMemcpy(&status, d_status, sizeof(status), cudaMemcpyDeviceToHost));
		EXPECT_EQ(-EINVAL, status);
		status = 0;
		CU(cudaMemcpy(d_status, &status, sizeof(status), cudaMemcpyHostToDevice));
		dst[2] = nf;
		CU(cudaMemcpy(d_dst, dst, sizeof(dst), cudaMemcpyHostToDevice));
		EXPECT_EQ(0, kv_copy_blocks_cuda(&cp));
		CU(cudaDeviceSynchronize());
		CU(cudaMemcpy(&status, d_status, sizeof(status), cudaMemcpyDeviceToHost));
		EXPECT_EQ(-EINVAL, status);

		cudaFree(d_arena);
		cudaFree(d_k);
		cudaFree(d_v);
		cudaFree(d_slots);
		cudaFree(d_src);
		cudaFree(d_dst);
		cudaFree(d_frames);
		cudaFree(d_buf);
		cudaFree(d_status);
		free(sperm);
		free(arena);
		free(back);
		free(k);
		free(v);
		free(buf);
	}
}
#endif /* KV_HAVE_CUDA */

TEST_HARNESS_MAIN
