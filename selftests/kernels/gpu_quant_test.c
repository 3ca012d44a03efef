// SPDX-License-Identifier: MIT
/*
 * The CUDA kernels on quantized pools (INT8, FP8, INT4) against the CPU
 * ones: the same appends (in two calls per sequence, so that the second
 * grows block scales and requantizes) give the same arena bytes, and
 * decode on that arena gives the CPU's outputs, over head_dim 64/128/256,
 * GQA 1/4/8/32, block sizes 16/5/32, ragged contexts, shuffled frames,
 * fp16 and bf16 queries, with and without the split-context path; and so
 * does prefill (head_dim 64/128; by the default kernel and the mma.sync one),
 * each sequence's last tokens as queries.
 *
 * Skips (exit 4) where no GPU is found or the build has no CUDA;
 * KV_TEST_SMALL=1 runs a reduced sweep (for compute-sanitizer);
 * KV_DECODE_VARIANT=N decodes with kernel variant N (kv_cuda_decode_variant).
 */
#include <errno.h>
#include <math.h>

#include "kselftest_harness.h"
#include "kv_test.h"

#ifndef KV_HAVE_CUDA

TEST(gpu_quant)
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
	return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

static void *dev_alloc(const void *src, size_t n)
{
	void *d = NULL;

	if (cudaMalloc(&d, n ? n : 1) != cudaSuccess)
		return NULL;
	if (n && (src ? cudaMemcpy(d, src, n, cudaMemcpyHostToDevice) :
		  cudaMemset(d, 0, n)) != cudaSuccess) {
		cudaFree(d);
		return NULL;
	}
	return d;
}

/*
 * A quantized case: sequence b's tokens in @table rows (shuffled frames),
 * their K and V ([tokens][kv_heads][head_dim] of @io, gaussian-like) and
 * slots, laid out sequence after sequence.
 */
struct qcase {
	struct kv_geometry g;
	__u32 io, layer, batch, q_heads, stride, tokens;
	__u64 frames;
	__u32 *table, *ctx, *first;	/* first: [batch + 1] first token of b */
	__s64 *slots;
	void *k, *v, *q;
};

static void qcase_free(struct qcase *c)
{
	free(c->table);
	free(c->ctx);
	free(c->first);
	free(c->slots);
	free(c->k);
	free(c->v);
	free(c->q);
}

static int qcase_init(struct qcase *c, const struct kv_geometry *g, __u32 io,
		      __u32 ratio, __u32 batch, const __u32 *ctx)
{
	__u32 bt = g->block_tokens, b, i, next = 0, maxblk = 0, *perm;
	__u64 used = 0, esz = kv_dtype_size(io), vec;

	memset(c, 0, sizeof(*c));
	c->g = *g;
	c->io = io;
	c->layer = g->layers - 1;
	c->batch = batch;
	c->q_heads = ratio * g->kv_heads;
	c->first = malloc(sizeof(__u32) * (batch + 1));
	c->ctx = malloc(sizeof(__u32) * batch);
	if (!c->first || !c->ctx)
		return -1;
	c->first[0] = 0;
	for (b = 0; b < batch; b++) {
		__u32 nb = (ctx[b] + bt - 1) / bt;

		c->ctx[b] = ctx[b];
		c->first[b + 1] = c->first[b] + ctx[b];
		used += nb;
		maxblk = nb > maxblk ? nb : maxblk;
	}
	c->tokens = c->first[batch];
	c->stride = maxblk + 1;
	c->frames = used + 2;
	vec = (__u64)g->kv_heads * g->head_dim;
	c->table = malloc(sizeof(__u32) * batch * c->stride);
	c->slots = malloc(sizeof(__s64) * (c->tokens + 1));
	c->k = malloc(c->tokens * vec * esz + 1);
	c->v = malloc(c->tokens * vec * esz + 1);
	c->q = malloc((size_t)batch * c->q_heads * g->head_dim * esz);
	perm = malloc(sizeof(__u32) * c->frames);
	if (!c->table || !c->slots || !c->k || !c->v || !c->q || !perm) {
		free(perm);
		return -1;
	}
	for (i = 0; i < c->frames; i++)
		perm[i] = i;
	kvt_shuffle_u32(perm, (__u32)c->frames);
	for (b = 0; b < batch; b++) {
		__u32 *row = c->table + (size_t)b * c->stride;

		for (i = 0; i < c->stride; i++)
			row[i] = i * bt < ctx[b] ? perm[next++] : 0xfffffff0u - i;
		for (i = 0; i < ctx[b]; i++)
			c->slots[c->first[b] + i] = (__s64)row[i / bt] * bt + i % bt;
	}
	/* the sum of three uniforms: roughly gaussian, K wider than V */
	for (i = 0; i < c->tokens * vec; i++) {
		kv_store_f32(c->k, io, i, (float)(kvt_uniform() + kvt_uniform() + kvt_uniform()));
		kv_store_f32(c->v, io, i, (float)(0.5 * (kvt_uniform() + kvt_uniform() +
						       kvt_uniform())));
	}
	kvt_fill(c->q, io, (__u64)batch * c->q_heads * g->head_dim, 1.0);
	free(perm);
	return 0;
}

/* Append sequence b's tokens [t0, t1) of @c (host or device pointers). */
static struct kv_append_args qcase_append(const struct qcase *c, void *arena,
					  const void *k, const void *v,
					  const __s64 *slots, __u32 t0, __u32 t1)
{
	size_t off = (size_t)t0 * c->g.kv_heads * c->g.head_dim * kv_dtype_size(c->io);
	struct kv_append_args a = {
		.arena = { .base = arena, .frames = c->frames, .g = c->g },
		.layer = c->layer,
		.tokens = t1 - t0,
		.k = (const char *)k + off,
		.v = (const char *)v + off,
		.slots = slots + t0,
		.io_dtype = c->io,
	};

	return a;
}

/*
 * Fill both arenas: every sequence in two appends, the first of a third of
 * its tokens, so the second call continues a block.
 */
static void qcase_fill(struct __test_metadata *_metadata, const struct qcase *c,
		       void *host, void *dev, void *dk, void *dv, __s64 *dslots)
{
	__u32 b, part;

	for (b = 0; b < c->batch; b++) {
		__u32 t0 = c->first[b], t1 = c->first[b + 1], mid = t0 + (t1 - t0) / 3;

		for (part = 0; part < 2; part++) {
			__u32 lo = part ? mid : t0, hi = part ? t1 : mid;
			struct kv_append_args a;

			if (lo == hi)
				continue;
			a = qcase_append(c, host, c->k, c->v, c->slots, lo, hi);
			ASSERT_EQ(0, kv_append_cpu(&a));
			a = qcase_append(c, dev, dk, dv, dslots, lo, hi);
			ASSERT_EQ(0, kv_append_cuda(&a));
		}
	}
	CU(cudaDeviceSynchronize());
}

/*
 * The arenas of a case, host and device, filled by the same appends
 * (qcase_fill()), and the case's tables and a zero status on the device.
 */
struct qdev {
	__u64 abytes;
	void *host, *dev, *dk, *dv, *dtable, *dctx;
	__s64 *dslots;
	__s32 *dstatus;
};

static void qdev_free(struct qdev *d)
{
	free(d->host);
	cudaFree(d->dev);
	cudaFree(d->dk);
	cudaFree(d->dv);
	cudaFree(d->dtable);
	cudaFree(d->dctx);
	cudaFree(d->dslots);
	cudaFree(d->dstatus);
}

static int qdev_init(struct __test_metadata *_metadata, const struct qcase *c,
		     struct qdev *d)
{
	const struct kv_geometry *g = &c->g;
	size_t kvb = (size_t)c->tokens * g->kv_heads * g->head_dim * kv_dtype_size(c->io);
	__s32 zero = 0;

	d->abytes = c->frames * kv_frame_bytes(g);
	d->host = calloc(d->abytes, 1);
	d->dev = dev_alloc(NULL, d->abytes);
	d->dk = dev_alloc(c->k, kvb);
	d->dv = dev_alloc(c->v, kvb);
	d->dslots = dev_alloc(c->slots, sizeof(__s64) * c->tokens);
	d->dtable = dev_alloc(c->table, sizeof(__u32) * c->batch * c->stride);
	d->dctx = dev_alloc(c->ctx, sizeof(__u32) * c->batch);
	d->dstatus = dev_alloc(&zero, sizeof(zero));
	if (!d->host || !d->dev || !d->dk || !d->dv || !d->dslots || !d->dtable ||
	    !d->dctx || !d->dstatus)
		return -ENOMEM;
	qcase_fill(_metadata, c, d->host, d->dev, d->dk, d->dv, d->dslots);
	return 0;
}

/* bytes of @n that differ */
static __u64 bytes_differ(const unsigned char *x, const unsigned char *y, __u64 n)
{
	__u64 i, d = 0;

	for (i = 0; i < n; i++)
		d += x[i] != y[i];
	return d;
}

/*
 * Wait for the launch, fetch its @n outputs of @io into @host and its
 * status, and compare with the CPU's @cpu: 3e-3 (fp16 I/O), 1.5e-2 (bf16).
 */
static void gpu_result(struct __test_metadata *_metadata, const char *what,
		       const struct kv_geometry *g, __u32 io, __u32 ratio, void *host,
		       const void *dev, const void *cpu, __u64 n, const __s32 *dstatus)
{
	double err, bound = io == KV_DTYPE_FP16 ? 3e-3 : 1.5e-2;
	__s32 status = 0;

	CU(cudaDeviceSynchronize());
	CU(cudaMemcpy(host, dev, n * kv_dtype_size(io), cudaMemcpyDeviceToHost));
	CU(cudaMemcpy(&status, dstatus, sizeof(status), cudaMemcpyDeviceToHost));
	EXPECT_EQ(0, status);
	err = kvt_rel_err_vs(host, cpu, io, n);
	if (getenv("KVT_VERBOSE") || !(err <= bound))
		TH_LOG("%s: dtype %u io %u hd %u bt %u kvh %u ratio %u: vs cpu %g", what,
		       g->dtype, io, g->head_dim, g->block_tokens, g->kv_heads, ratio, err);
	EXPECT_LE(err, bound);
}

/*
 * Scale sequence b's token i (its K and V) by 1 + @ramp * i / ctx[b]: the
 * scores grow along the context, so the decode's softmax reference moves
 * many times over (by more than its slack, kSlack), and INT8/FP8 block
 * scales grow block after block.
 */
static void qcase_ramp(struct qcase *c, float ramp)
{
	__u64 vec = (__u64)c->g.kv_heads * c->g.head_dim, j, t;
	__u32 b, i;

	for (b = 0; b < c->batch; b++) {
		for (i = 0; i < c->ctx[b]; i++) {
			float f = 1.f + ramp * (float)i / (float)c->ctx[b];

			t = (__u64)(c->first[b] + i) * vec;
			for (j = t; j < t + vec; j++) {
				kv_store_f32(c->k, c->io, j, f * kv_load_f32(c->k, c->io, j));
				kv_store_f32(c->v, c->io, j, f * kv_load_f32(c->v, c->io, j));
			}
		}
	}
}

static void quant_case(struct __test_metadata *_metadata, const struct kv_geometry *g,
		       __u32 io, __u32 ratio, __u32 batch, const __u32 *ctx, size_t q_off,
		       float ramp)
{
	struct qcase c;
	struct qdev d = { 0 };
	__u64 n, diff;
	size_t obytes;
	unsigned char *back;
	void *dq, *dout, *dws = NULL, *cpu_out, *gpu_out;
	struct kv_decode_args a;
	int split;

	ASSERT_EQ(0, qcase_init(&c, g, io, ratio, batch, ctx));
	if (ramp)
		qcase_ramp(&c, ramp);
	ASSERT_EQ(0, qdev_init(_metadata, &c, &d));
	n = (__u64)batch * c.q_heads * g->head_dim;
	obytes = n * kv_dtype_size(io);
	back = malloc(d.abytes);
	cpu_out = malloc(obytes);
	gpu_out = malloc(obytes);
	ASSERT_TRUE(back && cpu_out && gpu_out);

	CU(cudaMemcpy(back, d.dev, d.abytes, cudaMemcpyDeviceToHost));
	diff = bytes_differ(d.host, back, d.abytes);
	if (diff || getenv("KVT_VERBOSE"))
		TH_LOG("append: dtype %u io %u hd %u bt %u kvh %u: %llu of %llu bytes differ",
		       g->dtype, io, g->head_dim, g->block_tokens, g->kv_heads,
		       (unsigned long long)diff, (unsigned long long)d.abytes);
	EXPECT_EQ(0, diff);

	a = (struct kv_decode_args){
		.arena = { .base = d.host, .frames = c.frames, .g = *g },
		.layer = c.layer, .batch = batch, .q_heads = c.q_heads,
		.scale = 1.0f / sqrtf((float)g->head_dim), .table_stride = c.stride,
		.q = c.q, .out = cpu_out, .block_table = c.table, .ctx_lens = c.ctx,
		.io_dtype = io,
	};
	kvt_fill_nan(cpu_out, io, n);
	ASSERT_EQ(0, kv_decode_cpu(&a));

	/*
	 * the GPU decodes its own arena, equal to the CPU's when append passed;
	 * its queries start @q_off bytes into their buffer
	 */
	dq = dev_alloc(NULL, obytes + q_off);
	dout = dev_alloc(NULL, obytes);
	ASSERT_TRUE(dq && dout);
	CU(cudaMemcpy((char *)dq + q_off, c.q, obytes, cudaMemcpyHostToDevice));
	a.arena.base = d.dev;
	a.q = (char *)dq + q_off;
	a.out = dout;
	a.block_table = d.dtable;
	a.ctx_lens = d.dctx;
	a.status = d.dstatus;
	a.workspace_bytes = kv_decode_workspace_bytes(&a);
	if (a.workspace_bytes)
		CU(cudaMalloc(&dws, a.workspace_bytes));
	for (split = 0; split < 2; split++) {
		a.workspace = split ? dws : NULL;
		kvt_fill_nan(gpu_out, io, n);
		CU(cudaMemcpy(dout, gpu_out, obytes, cudaMemcpyHostToDevice));
		EXPECT_EQ(0, kv_decode_cuda(&a));
		gpu_result(_metadata, split ? "decode, split" : "decode", g, io, ratio,
			   gpu_out, dout, cpu_out, n, d.dstatus);
	}
	cudaFree(dws);
	cudaFree(dq);
	cudaFree(dout);
	qdev_free(&d);
	free(back);
	free(cpu_out);
	free(gpu_out);
	qcase_free(&c);
}

/* Prefill: the last 1 .. 40 tokens of each sequence are its queries. */
static void quant_prefill_case(struct __test_metadata *_metadata,
			       const struct kv_geometry *g, __u32 io, __u32 ratio,
			       __u32 batch, const __u32 *ctx)
{
	/* the default kernel, the mma.sync one, the wgmma one's CTAs taking two pairs of tiles */
	static const struct { const char *what; int variant, ipc; } runs[] = {
		{ "prefill", -1, 0 },
		{ "prefill (mma.sync)", 6, 0 },
		{ "prefill (4 tiles a CTA)", -1, 4 },
	};
	struct qcase c;
	struct qdev d = { 0 };
	__u32 b, *qs, max_q = 0;
	size_t i;
	__u64 n;
	size_t obytes;
	void *q, *cpu_out, *gpu_out, *dq, *dout, *dqs;
	struct kv_prefill_args a;

	ASSERT_EQ(0, qcase_init(&c, g, io, ratio, batch, ctx));
	ASSERT_EQ(0, qdev_init(_metadata, &c, &d));
	qs = malloc(sizeof(__u32) * (batch + 1));
	ASSERT_TRUE(qs != NULL);
	qs[0] = 0;
	for (b = 0; b < batch; b++) {
		__u32 nq = 1 + kvt_below(ctx[b] < 40 ? ctx[b] : 40);

		qs[b + 1] = qs[b] + nq;
		max_q = nq > max_q ? nq : max_q;
	}
	n = (__u64)qs[batch] * c.q_heads * g->head_dim;
	obytes = n * kv_dtype_size(io);
	q = malloc(obytes);
	cpu_out = malloc(obytes);
	gpu_out = malloc(obytes);
	ASSERT_TRUE(q && cpu_out && gpu_out);
	kvt_fill(q, io, n, 1.0);

	a = (struct kv_prefill_args){
		.arena = { .base = d.host, .frames = c.frames, .g = *g },
		.layer = c.layer, .batch = batch, .q_heads = c.q_heads,
		.scale = 1.0f / sqrtf((float)g->head_dim), .table_stride = c.stride,
		.tokens = qs[batch], .max_q_len = max_q, .io_dtype = io,
		.q = q, .out = cpu_out, .q_start = qs, .block_table = c.table,
		.ctx_lens = c.ctx,
	};
	kvt_fill_nan(cpu_out, io, n);
	ASSERT_EQ(0, kv_prefill_cpu(&a));

	dq = dev_alloc(q, obytes);
	kvt_fill_nan(gpu_out, io, n);
	dout = dev_alloc(gpu_out, obytes);
	dqs = dev_alloc(qs, sizeof(__u32) * (batch + 1));
	ASSERT_TRUE(dq && dout && dqs);
	a.arena.base = d.dev;
	a.q = dq;
	a.out = dout;
	a.q_start = dqs;
	a.block_table = d.dtable;
	a.ctx_lens = d.dctx;
	a.status = d.dstatus;
	for (i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
		kv_cuda_prefill_variant = runs[i].variant;
		kv_cuda_prefill_ipc = runs[i].ipc;
		kvt_fill_nan(gpu_out, io, n);
		CU(cudaMemcpy(dout, gpu_out, obytes, cudaMemcpyHostToDevice));
		EXPECT_EQ(0, kv_prefill_cuda(&a));
		gpu_result(_metadata, runs[i].what, g, io, ratio, gpu_out, dout, cpu_out, n,
			   d.dstatus);
	}
	kv_cuda_prefill_variant = -1;
	kv_cuda_prefill_ipc = 0;
	cudaFree(dq);
	cudaFree(dout);
	cudaFree(dqs);
	qdev_free(&d);
	free(q);
	free(cpu_out);
	free(gpu_out);
	free(qs);
	qcase_free(&c);
}

static void quant_sweep(struct __test_metadata *_metadata, __u32 dtype)
{
	static const __u32 ratios[] = { 1, 4, 8, 32 };
	static const __u32 hds[] = { 64, 128, 256 };
	int small = getenv("KV_TEST_SMALL") != NULL;
	__u32 i, j, ctx[5];

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	for (i = 0; i < 3; i++) {
		for (j = 0; j < 4; j++) {
			struct kv_geometry g = {
				.layers = 2,
				.kv_heads = ratios[j] >= 8 ? 1 + kvt_below(2) : 2,
				.head_dim = hds[i],
				.block_tokens = (i + j) % 3 == 0 ? 16 : (i + j) % 3 == 1 ? 5 : 32,
				.dtype = dtype,
			};

			if (small && (i + j) % 2)
				continue;
			kvt_ragged(ctx, 5, g.block_tokens, small ? 100 : 700);
			quant_case(_metadata, &g, (i + j) % 2 ? KV_DTYPE_BF16 : KV_DTYPE_FP16,
				   ratios[j], 5, ctx, 0, 0.f);
			if (g.head_dim <= 128)
				quant_prefill_case(_metadata, &g, (i + j) % 2 ? KV_DTYPE_FP16 :
						   KV_DTYPE_BF16, ratios[j], 5, ctx);
		}
	}
}

TEST(int8_equal_cpu)
{
	quant_sweep(_metadata, KV_DTYPE_INT8);
}

TEST(fp8_equal_cpu)
{
	quant_sweep(_metadata, KV_DTYPE_FP8_E4M3);
}

TEST(int4_equal_cpu)
{
	quant_sweep(_metadata, KV_DTYPE_INT4);
}

/*
 * 16 sequences x 8 kv heads fill 132 SMs: the 16-warp variant, at 4 and 8
 * query heads per kv head (INT4: with the score offsets of k_offsets() for
 * every warp), queries aligned or 2 bytes past 16-byte alignment, blocks
 * of @bt tokens (32: two tiles per block, and for INT8/FP8 per scale).
 */
static void one_cta_case(struct __test_metadata *_metadata, __u32 dtype, __u32 ratio,
			 size_t q_off, __u32 bt, float ramp)
{
	struct kv_geometry g = { .layers = 1, .kv_heads = 8, .head_dim = 128,
				 .block_tokens = bt, .dtype = dtype };
	__u32 ctx[16], b;

	for (b = 0; b < 16; b++)
		ctx[b] = 1024 + kvt_below(64);
	quant_case(_metadata, &g, KV_DTYPE_BF16, ratio, 16, ctx, q_off, ramp);
}

TEST(int8_one_cta_per_head)
{
	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	one_cta_case(_metadata, KV_DTYPE_INT8, 4, 0, 16, 0.f);
}

TEST(fp8_one_cta_per_head)
{
	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	one_cta_case(_metadata, KV_DTYPE_FP8_E4M3, 8, 2, 32, 0.f);
}

TEST(int4_one_cta_per_head)
{
	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	one_cta_case(_metadata, KV_DTYPE_INT4, 4, 0, 16, 0.f);
	one_cta_case(_metadata, KV_DTYPE_INT4, 8, 2, 32, 0.f);
}

/*
 * Scores that grow along the context (qcase_ramp()) on every quantized
 * dtype: through the 16-warp kernel and, on a smaller batch, the
 * split-context one (with and without its workspace).
 */
TEST(rising_scores)
{
	static const __u32 dtypes[] = { KV_DTYPE_INT8, KV_DTYPE_FP8_E4M3, KV_DTYPE_INT4 };
	__u32 i, ctx[3];

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	for (i = 0; i < 3; i++) {
		struct kv_geometry g = { .layers = 1, .kv_heads = 2, .head_dim = 128,
					 .block_tokens = 16, .dtype = dtypes[i] };

		one_cta_case(_metadata, dtypes[i], 4, 0, 16, 12.f);
		ctx[0] = 2000;
		ctx[1] = 600 + kvt_below(1400);
		ctx[2] = 1 + kvt_below(600);
		quant_case(_metadata, &g, KV_DTYPE_FP16, 8, 3, ctx, 0, 12.f);
	}
}

/*
 * The slots of one call of odd_slots_case(): for each of @n frames of
 * @perm from @f0, a run at @from[i] (or anywhere in the block where @from
 * is NULL) of 1 .. what is left of the block tokens, 0 .. 2 padding
 * tokens before it; INT8 and FP8 give one slot in four twice (the later
 * token is kept; INT4 leaves that undefined); @to[i] gets where it ended.
 * Return: the tokens written into @slots.
 */
static __u32 odd_runs(const struct kv_geometry *g, const __u32 *perm, __u32 n,
		      const __u32 *from, __u32 *to, __s64 *slots)
{
	__u32 bt = g->block_tokens, i, t = 0, j;

	for (i = 0; i < n; i++) {
		__u32 o = from ? from[i] : kvt_below(bt), len;

		for (j = kvt_below(3); j; j--)
			slots[t++] = -1;
		if (o >= bt) {
			to[i] = o;
			continue;
		}
		len = 1 + kvt_below(bt - o);
		for (j = 0; j < len; j++) {
			slots[t++] = (__s64)perm[i] * bt + o + j;
			if (g->dtype != KV_DTYPE_INT4 && !kvt_below(4))
				slots[t++] = (__s64)perm[i] * bt + o + j;
		}
		to[i] = o + len;
	}
	return t;
}

/*
 * Values the CUDA append's fast path leaves to its exact one, in V of
 * three different tokens of @n (@vec bytes each; @n >= 3): a token 1e-6
 * times the rest (INT4 scales below binary16's normal range), one 1e6
 * times (bf16: INT4 scales past binary16's largest; fp16: infinities) and
 * an infinity.
 */
static void odd_values(void *v, __u32 io, __u32 n, size_t vec)
{
	const __u64 per = vec / kv_dtype_size(io);
	const __u32 t = kvt_below(n), t1 = (t + 1 + kvt_below(n - 2)) % n;
	const __u64 tiny = t * per, huge = t1 * per;
	__u32 t2 = (t + 1) % n;
	__u64 e;

	if (t2 == t1)
		t2 = (t1 + 1) % n;
	for (e = 0; e < per; e++) {
		kv_store_f32(v, io, tiny + e, kv_load_f32(v, io, tiny + e) * 1e-6f);
		kv_store_f32(v, io, huge + e, kv_load_f32(v, io, huge + e) * 1e6f);
	}
	kv_store_f32(v, io, t2 * per + kvt_below(per), INFINITY);
}

/*
 * Appends a batch gives only in odd cases, the same bytes on both: runs
 * starting anywhere in their blocks, shorter and longer than a warp's
 * window, padding between them, slots given twice (INT8, FP8), a NaN
 * input and odd_values(); a second
 * call continues the blocks with values 4x larger (the scales grow, the
 * blocks are requantized) and starts others at token 0; inputs @in_off
 * bytes past their buffers' alignment; runs in @nf frames per call (a few
 * hundred tokens take a token per warp, thousands whole chunks). The
 * second call's GPU slots also hold one token of a frame past the arena:
 * status -EINVAL, every other token written as by the CPU without it.
 */
static void odd_slots_case(struct __test_metadata *_metadata, const struct kv_geometry *g,
			   __u32 io, size_t in_off, __u32 nf)
{
	const __u32 bt = g->block_tokens, frames = 2 * nf, maxt = 2 * nf * (2 * bt + 2) + 2;
	const size_t vec = (size_t)g->kv_heads * g->head_dim * kv_dtype_size(io);
	const __u64 abytes = frames * kv_frame_bytes(g);
	__u32 *perm = malloc(sizeof(__u32) * 3 * frames), *mid = perm + frames, *end = mid + nf;
	__u32 i, n[2], call;
	__s64 *slots = malloc(sizeof(__s64) * maxt);
	char *k = malloc(maxt * vec), *v = malloc(maxt * vec);
	unsigned char *host = calloc(abytes, 1), *back = malloc(abytes);
	void *dev = dev_alloc(NULL, abytes), *dk = dev_alloc(NULL, maxt * vec + in_off);
	void *dv = dev_alloc(NULL, maxt * vec + in_off);
	__s64 *dslots = dev_alloc(NULL, sizeof(__s64) * maxt);
	__s32 *dstatus = dev_alloc(NULL, sizeof(__s32)), status;

	ASSERT_TRUE(perm && slots && k && v && host && back && dev && dk && dv && dslots && dstatus);
	for (i = 0; i < frames; i++)
		perm[i] = i;
	kvt_shuffle_u32(perm, frames);
	for (call = 0; call < 2; call++) {
		struct kv_append_args a = {
			.arena = { .base = host, .frames = frames, .g = *g },
			.layer = g->layers - 1, .k = k, .v = v, .slots = slots, .io_dtype = io,
		};
		__u32 bad;

		/* call 1: the first nf frames; call 2: on from there, and nf fresh ones */
		n[call] = odd_runs(g, perm, nf, call ? end : NULL, call ? mid : end, slots);
		if (call) {
			for (i = 0; i < nf; i++)
				mid[i] = 0;
			n[call] += odd_runs(g, perm + nf, nf, mid, end, slots + n[call]);
		}
		a.tokens = n[call];
		kvt_fill(k, io, (__u64)n[call] * vec / kv_dtype_size(io), call ? 4.0 : 1.0);
		kvt_fill(v, io, (__u64)n[call] * vec / kv_dtype_size(io), call ? 2.0 : 0.5);
		kv_store_f32(k, io, kvt_below(n[call]) * vec / kv_dtype_size(io), NAN);
		odd_values(v, io, n[call], vec);
		ASSERT_EQ(0, kv_append_cpu(&a));

		/* the GPU's copy: one padding token (or the last) in a frame past the arena */
		for (bad = n[call] - 1, i = 0; call && i < n[call]; i++)
			if (slots[i] < 0)
				bad = i;
		if (call && slots[bad] >= 0)
			slots[n[call]++] = -1, bad = n[call] - 1;
		if (call)
			slots[bad] = (__s64)(frames + 3) * bt + 1;
		status = 0;
		CU(cudaMemcpy(dstatus, &status, sizeof(status), cudaMemcpyHostToDevice));
		CU(cudaMemcpy((char *)dk + in_off, k, n[call] * vec, cudaMemcpyHostToDevice));
		CU(cudaMemcpy((char *)dv + in_off, v, n[call] * vec, cudaMemcpyHostToDevice));
		CU(cudaMemcpy(dslots, slots, sizeof(__s64) * n[call], cudaMemcpyHostToDevice));
		a.k = (char *)dk + in_off;
		a.v = (char *)dv + in_off;
		a.slots = dslots;
		a.tokens = n[call];
		a.status = dstatus;
		/* an arena 2 bytes past alignment: refused, nothing launched */
		a.arena.base = (char *)dev + 2;
		EXPECT_EQ(-EINVAL, kv_append_cuda(&a));
		a.arena.base = dev;
		EXPECT_EQ(0, kv_append_cuda(&a));
		CU(cudaDeviceSynchronize());
		CU(cudaMemcpy(&status, dstatus, sizeof(status), cudaMemcpyDeviceToHost));
		EXPECT_EQ(call ? -EINVAL : 0, status);
	}
	CU(cudaMemcpy(back, dev, abytes, cudaMemcpyDeviceToHost));
	i = (__u32)bytes_differ(host, back, abytes);
	if (i || getenv("KVT_VERBOSE"))
		TH_LOG("odd slots: dtype %u io %u hd %u bt %u kvh %u off %zu, %u + %u tokens: "
		       "%u of %llu bytes differ", g->dtype, io, g->head_dim, bt, g->kv_heads,
		       in_off, n[0], n[1], i, (unsigned long long)abytes);
	EXPECT_EQ(0, i);
	cudaFree(dev);
	cudaFree(dk);
	cudaFree(dv);
	cudaFree(dslots);
	cudaFree(dstatus);
	free(perm);
	free(slots);
	free(k);
	free(v);
	free(host);
	free(back);
}

TEST(append_odd_slots)
{
	static const __u32 dtypes[] = { KV_DTYPE_INT8, KV_DTYPE_FP8_E4M3, KV_DTYPE_INT4 };
	static const __u32 hds[] = { 32, 128, 256, 512 };
	static const __u32 bts[] = { 16, 5, 32, 1 };
	__u32 d, i;

	if (!gpu_present())
		SKIP(return, "no CUDA device");
	kvt_seed(__func__);
	for (d = 0; d < 3; d++) {
		for (i = 0; i < 4; i++) {
			struct kv_geometry g = { .layers = 2, .kv_heads = 1 + i, .head_dim = hds[i],
						 .block_tokens = bts[(i + d) % 4], .dtype = dtypes[d] };

			odd_slots_case(_metadata, &g, i % 2 ? KV_DTYPE_BF16 : KV_DTYPE_FP16,
				       (i + d) % 3 ? 0 : 2, 48);
		}
		if (getenv("KV_TEST_SMALL"))
			continue;
		/* thousands of tokens: whole chunks per warp, runs found by ballots */
		for (i = 0; i < 5; i++) {
			static const __u32 big_hd[] = { 128, 256, 512, 160, 1024 };
			static const __u32 big_bt[] = { 16, 5, 64, 16, 16 };
			static const __u32 big_kvh[] = { 8, 8, 4, 8, 2 };
			static const __u32 big_nf[] = { 1024, 512, 128, 512, 512 };
			struct kv_geometry g = { .layers = 2, .kv_heads = big_kvh[i],
						 .head_dim = big_hd[i], .block_tokens = big_bt[i],
						 .dtype = dtypes[d] };

			odd_slots_case(_metadata, &g, i % 2 ? KV_DTYPE_FP16 : KV_DTYPE_BF16,
				       i % 2 ? 2 : 0, big_nf[i]);
		}
	}
}

#endif /* KV_HAVE_CUDA */

TEST_HARNESS_MAIN
