// SPDX-License-Identifier: MIT
/*
 * bench-kernels-gpu: the CUDA kernels on the GPU, against ceilings measured
 * in the same run: device-to-device copy bandwidth (bytes read + written)
 * and, when given (-s FILE, from kernels/bench/sdpa_ref.py), PyTorch SDPA
 * on contiguous KV for the same decode shapes. Prints a table; asserts
 * nothing about time.
 *
 *	bench-kernels-gpu [-s sdpa.tsv] [-r REPS] [-q] [-D] [-v VARIANT] [-F read|write]
 *			  [-o SHAPE] [-U] [-P] [-p VARIANT] [-I TILES] [-Q] [-L]
 *
 * -q: a reduced set of shapes; -D: decode only; -v: a decode kernel variant
 * (see kv_cuda_decode_variant), for comparing variants in one run; -o: only
 * the decode shape of that index in the table (for a profiler); -U: frames
 * in order instead of shuffled (what paging costs the same kernel); -P:
 * prefill only; -p: a prefill kernel variant (kv_cuda_prefill_variant);
 * -I: query tiles per CTA of the wgmma prefill (kv_cuda_prefill_ipc);
 * -Q: only the table of decode on INT8, FP8 and INT4 pools beside bf16
 * (which the full run prints after the decode table; KV_BENCH_QUANT_ROW=N:
 * its row N alone, for a profiler); -L: only the table of decode's fixed
 * cost (contexts from one tile up, time beyond the bytes at copy speed).
 *
 * Every timed launch follows a pass over 256 MiB (more than L2) so that no
 * run finds its KV in cache; time is the median of REPS event-timed runs.
 * -F read (the default) reads the 256 MiB: L2 is left holding clean lines,
 * as after the weight reads that precede attention in a model. -F write
 * writes them (a memset): L2 is left full of dirty lines, whose write-back
 * to memory (up to L2's size) then falls inside the timed launch.
 */
#include <math.h>
#include <unistd.h>
#include <cuda_runtime_api.h>

#include "kernels/bench/bench_common.h"
#include "kernels/cuda/cuda_internal.h"

#define CK(call) do {							\
	cudaError_t e_ = (call);					\
	if (e_ != cudaSuccess) {					\
		fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__,	\
			#call, cudaGetErrorString(e_));			\
		exit(1);						\
	}								\
} while (0)

#define FLUSH_BYTES (256u << 20)

static int reps = 30;
static void *flush_buf;
static int flush_write;
static int in_order;	/* -U: every sequence's frames consecutive, in order */
static int quant_only;	/* -Q: the quantized decode table alone */
static int fixed_only;	/* -L: the table of decode's fixed cost alone */
static int quant_row = -1;	/* KV_BENCH_QUANT_ROW: that row of it alone */
static cudaEvent_t ev0, ev1;

struct sdpa_row {
	struct bench_shape s;
	double flash_ms, cudnn_ms;
};
static struct sdpa_row sdpa[64];
static int nsdpa;

struct prefill_shape {
	__u32 batch, nq, ctx;		/* nq new tokens on a context of ctx */
	double flash_ms, cudnn_ms;	/* SDPA, when the file had the shape */
};
static struct prefill_shape prefills[] = {
	{ 8, 2048, 2048, NAN, NAN }, { 2, 8192, 8192, NAN, NAN },
	{ 1, 16384, 16384, NAN, NAN }, { 1, 512, 4096, NAN, NAN },
	{ 1, 512, 8192, NAN, NAN }, { 1, 512, 16384, NAN, NAN },
	{ 1, 512, 32768, NAN, NAN },
};
#define NPREFILL (sizeof(prefills) / sizeof(prefills[0]))

/* a "P batch nq ctx flash_ms cudnn_ms" line of sdpa_ref.py */
static void load_prefill_ref(const char *line)
{
	struct prefill_shape r;
	unsigned int i;

	if (sscanf(line, "P %u %u %u %lf %lf", &r.batch, &r.nq, &r.ctx, &r.flash_ms,
		   &r.cudnn_ms) != 5)
		return;
	for (i = 0; i < NPREFILL; i++)
		if (prefills[i].batch == r.batch && prefills[i].nq == r.nq &&
		    prefills[i].ctx == r.ctx)
			prefills[i] = r;
}

static void load_sdpa(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[256];

	if (!f) {
		perror(path);
		return;
	}
	while (nsdpa < 64 && fgets(line, sizeof(line), f)) {
		struct sdpa_row *r = &sdpa[nsdpa];
		char dt[8];

		if (line[0] == 'P') {
			load_prefill_ref(line);
			continue;
		}
		if (sscanf(line, "%u %u %u %7s %u %u %lf %lf", &r->s.q_heads,
			   &r->s.kv_heads, &r->s.head_dim, dt, &r->s.batch,
			   &r->s.ctx, &r->flash_ms, &r->cudnn_ms) != 8)
			continue;
		r->s.dtype = !strcmp(dt, "fp16") ? KV_DTYPE_FP16 : KV_DTYPE_BF16;
		nsdpa++;
	}
	fclose(f);
}

static const struct sdpa_row *find_sdpa(const struct bench_shape *s)
{
	int i;

	for (i = 0; i < nsdpa; i++)
		if (!memcmp(&sdpa[i].s, s, sizeof(*s)))
			return &sdpa[i];
	return NULL;
}

typedef int (*launch_fn)(void *arg);

/* median milliseconds of fn(arg), each run after an L2 flush */
static double time_ms(launch_fn fn, void *arg)
{
	double t[64];
	int i, n = reps > 64 ? 64 : reps;

	if (fn(arg))	/* warm up: module load, first-use setup */
		exit(1);
	CK(cudaDeviceSynchronize());
	for (i = 0; i < n; i++) {
		float ms;

		if (flush_write)
			CK(cudaMemsetAsync(flush_buf, i, FLUSH_BYTES, 0));
		else if (kv_cuda_read_all(flush_buf, FLUSH_BYTES - 64,
					  (char *)flush_buf + FLUSH_BYTES - 64, NULL))
			exit(1);
		CK(cudaEventRecord(ev0, 0));
		if (fn(arg))
			exit(1);
		CK(cudaEventRecord(ev1, 0));
		CK(cudaEventSynchronize(ev1));
		CK(cudaEventElapsedTime(&ms, ev0, ev1));
		t[i] = ms;
	}
	return bench_median(t, n);
}

struct memcpy_arg {
	void *dst, *src;
	size_t bytes;
};

static int do_memcpy(void *p)
{
	struct memcpy_arg *m = p;

	return cudaMemcpyAsync(m->dst, m->src, m->bytes, cudaMemcpyDeviceToDevice, 0) !=
	       cudaSuccess;
}

static int do_decode(void *p)
{
	return kv_decode_cuda(p);
}

static int do_append(void *p)
{
	return kv_append_cuda(p);
}

static int do_copy(void *p)
{
	return kv_copy_blocks_cuda(p);
}

static int do_gather(void *p)
{
	return kv_gather_cuda(p);
}

static int do_scatter(void *p)
{
	return kv_scatter_cuda(p);
}

static int do_tiny(void *p)
{
	return cudaMemsetAsync(p, 0, 4, 0) != cudaSuccess;
}

/* D2D copy bandwidth, bytes read + written, GB/s */
static double copy_bandwidth(void)
{
	struct memcpy_arg m = { .bytes = 1ull << 30 };

	CK(cudaMalloc(&m.src, m.bytes));
	CK(cudaMalloc(&m.dst, m.bytes));
	CK(cudaMemset(m.src, 1, m.bytes));
	double ms = time_ms(do_memcpy, &m);
	CK(cudaFree(m.src));
	CK(cudaFree(m.dst));
	return 2.0 * m.bytes / (ms * 1e-3) / 1e9;
}

/*
 * The time of one decode of @s on @arena (@frames of its geometry); a
 * quantized shape takes bf16 queries.
 */
static double decode_ms(const struct bench_shape *s, void *arena, __u64 frames,
			void *ws, __u64 ws_bytes)
{
	struct kv_geometry g = bench_geometry(s);
	__u32 io = kv_dtype_quantized(s->dtype) ? KV_DTYPE_BF16 : s->dtype;
	__u64 per = (s->ctx + 15) / 16;
	size_t qbytes = (size_t)s->batch * s->q_heads * s->head_dim * 2;
	__u32 *table = malloc(sizeof(__u32) * per * s->batch), *ctx = malloc(4 * s->batch), b;
	void *d_q, *d_out, *d_table, *d_ctx;
	struct kv_decode_args a;
	__s32 *d_status, status = 0;
	double ms;

	if (!table || !ctx)
		abort();
	bench_table(table, s, frames);
	for (b = 0; in_order && b < per * s->batch; b++)
		table[b] = (__u32)b;
	for (b = 0; b < s->batch; b++)
		ctx[b] = s->ctx;
	CK(cudaMalloc(&d_q, qbytes));
	CK(cudaMalloc(&d_out, qbytes));
	CK(cudaMalloc(&d_table, sizeof(__u32) * per * s->batch));
	CK(cudaMalloc(&d_ctx, 4 * s->batch));
	CK(cudaMalloc((void **)&d_status, 4));
	CK(cudaMemcpy(d_table, table, sizeof(__u32) * per * s->batch, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_ctx, ctx, 4 * s->batch, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_status, &status, 4, cudaMemcpyHostToDevice));
	if (kv_cuda_fill_uniform(d_q, qbytes / 2, io, 7, 1.0f, NULL))
		abort();
	a = (struct kv_decode_args){
		.arena = { arena, frames, g }, .layer = 0, .batch = s->batch,
		.q_heads = s->q_heads, .scale = 1.0f / sqrtf((float)s->head_dim),
		.table_stride = (__u32)per, .q = d_q, .out = d_out,
		.block_table = d_table, .ctx_lens = d_ctx, .status = d_status,
		.workspace = ws, .workspace_bytes = ws_bytes, .io_dtype = io,
	};
	if (kv_decode_workspace_bytes(&a) > ws_bytes)
		fprintf(stderr, "# workspace short for batch %u ctx %u\n", s->batch, s->ctx);
	ms = time_ms(do_decode, &a);
	CK(cudaMemcpy(&status, d_status, 4, cudaMemcpyDeviceToHost));
	if (status)
		fprintf(stderr, "# decode reported status %d\n", status);
	CK(cudaFree(d_q));
	CK(cudaFree(d_out));
	CK(cudaFree(d_table));
	CK(cudaFree(d_ctx));
	CK(cudaFree(d_status));
	free(table);
	free(ctx);
	return ms;
}

static void bench_decode(const struct bench_shape *s, void *arena, __u64 frames,
			 void *ws, __u64 ws_bytes, double copy_bw)
{
	double bytes = bench_kv_bytes(s), ms, gbs, floor_ms;
	const struct sdpa_row *ref = find_sdpa(s);

	ms = decode_ms(s, arena, frames, ws, ws_bytes);
	gbs = bytes / (ms * 1e-3) / 1e9;
	floor_ms = bytes / (copy_bw * 1e9) * 1e3;
	printf("| %2u:%u hd%u %s | %3u | %6u | %8.1f | %8.4f | %6.0f | %5.1f%% | %5.2f |",
	       s->q_heads, s->kv_heads, s->head_dim, kv_dtype_name(s->dtype),
	       s->batch, s->ctx, bytes / 1e6, ms, gbs, 100.0 * gbs / copy_bw, ms / floor_ms);
	if (ref)
		printf(" %8.4f | %8.4f | %5.2f | %5.2f |\n", ref->flash_ms, ref->cudnn_ms,
		       ref->flash_ms / ms, ref->cudnn_ms / ms);
	else
		printf(" - | - | - | - |\n");
	fflush(stdout);
}

/*
 * -L: what a decode launch costs beyond its bytes: 32:8, head_dim 128,
 * batch 16 and 64, contexts from one tile to 16384 tokens, on bf16, INT8
 * and INT4 pools; the time, and the time less the bytes read at the copy
 * bandwidth measured in the same run (what the launch, the first loads
 * and the last tiles' drain cost together).
 */
static void bench_fixed(void *arena, __u64 arena_bytes, void *ws, __u64 ws_bytes,
			double copy_bw)
{
	static const __u32 dtypes[] = { KV_DTYPE_BF16, KV_DTYPE_INT8, KV_DTYPE_INT4 };
	static const __u32 batches[] = { 16, 64 }, ctxs[] = { 16, 256, 1024, 4096, 16384 };
	unsigned int i, j, k;

	printf("\n# decode's fixed cost: 32:8 hd128, block_tokens 16, frames shuffled; "
	       "over = ms - KV bytes / copy bandwidth\n");
	printf("| dtype | batch | ctx | KV MB | ms | over us |\n|---|---|---|---|---|---|\n");
	for (i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		for (j = 0; j < sizeof(batches) / sizeof(batches[0]); j++)
			for (k = 0; k < sizeof(ctxs) / sizeof(ctxs[0]); k++) {
				struct bench_shape s = { 32, 8, 128, dtypes[i], batches[j], ctxs[k] };
				struct kv_geometry g = bench_geometry(&s);
				double bytes = bench_kv_bytes(&s), ms;

				ms = decode_ms(&s, arena, arena_bytes / kv_frame_bytes(&g), ws,
					       ws_bytes);
				printf("| %s | %u | %u | %.1f | %.4f | %.1f |\n",
				       kv_dtype_name(s.dtype), s.batch, s.ctx, bytes / 1e6, ms,
				       (ms * 1e-3 - bytes / (copy_bw * 1e9)) * 1e6);
				fflush(stdout);
			}
}

/*
 * Decode on quantized pools beside bf16 on the same shapes: time, the
 * bytes read (values and scales) per second, and the speed-up over bf16.
 * The arena holds random bytes (the timing does not depend on them;
 * gpu_quant_test checks the results).
 */
static void bench_quant(void *arena, __u64 arena_bytes, void *ws, __u64 ws_bytes,
			double copy_bw)
{
	static const __u32 dtypes[] = { KV_DTYPE_INT8, KV_DTYPE_FP8_E4M3, KV_DTYPE_INT4 };
	static const struct bench_shape base[] = {
		{ 32, 8, 128, KV_DTYPE_BF16, 16, 4096 },
		{ 32, 8, 128, KV_DTYPE_BF16, 16, 16384 },
		{ 32, 8, 128, KV_DTYPE_BF16, 64, 4096 },
		{ 32, 8, 128, KV_DTYPE_BF16, 64, 16384 },
		{ 64, 8, 128, KV_DTYPE_BF16, 16, 4096 },
		{ 64, 8, 128, KV_DTYPE_BF16, 64, 16384 },
		{ 32, 8, 128, KV_DTYPE_BF16, 1, 131072 },
	};
	unsigned int i, j;

	printf("\n# quantized decode: bf16 queries and outputs, block_tokens 16, frames "
	       "shuffled; GB/s = bytes read (values and scales) / time\n");
	printf("| heads | batch | ctx | bf16 ms | int8 ms | fp8 ms | int4 ms | "
	       "int8 GB/s | fp8 GB/s | int4 GB/s | int8 x | fp8 x | int4 x |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
	for (i = 0; i < sizeof(base) / sizeof(base[0]); i++) {
		double ms[4], gbs[3];

		if (quant_row >= 0 && (int)i != quant_row)
			continue;
		for (j = 0; j < 4; j++) {
			struct bench_shape s = base[i];
			struct kv_geometry g;

			if (j)
				s.dtype = dtypes[j - 1];
			g = bench_geometry(&s);
			ms[j] = decode_ms(&s, arena, arena_bytes / kv_frame_bytes(&g), ws, ws_bytes);
			if (j)
				gbs[j - 1] = bench_kv_bytes(&s) / (ms[j] * 1e-3) / 1e9;
		}
		printf("| %u:%u | %u | %u | %.4f | %.4f | %.4f | %.4f | %.0f | %.0f | %.0f |"
		       " %.2f | %.2f | %.2f |\n", base[i].q_heads, base[i].kv_heads,
		       base[i].batch, base[i].ctx, ms[0], ms[1], ms[2], ms[3], gbs[0], gbs[1],
		       gbs[2], ms[0] / ms[1], ms[0] / ms[2], ms[0] / ms[3]);
		fflush(stdout);
	}
	printf("# (copy bandwidth %.0f GB/s)\n", copy_bw);
}

static int do_prefill(void *p)
{
	return kv_prefill_cuda(p);
}

/*
 * Time a causal prefill of @s (32:8, head_dim 128, block_tokens 16, frames
 * shuffled) on a pool of @dtype (bf16 queries) in @arena_bytes; *@tflops:
 * its rate, counting 4 * head_dim * q_heads FLOPs per (query, visible token).
 */
static double prefill_ms(const struct prefill_shape *s, __u32 dtype, void *arena,
			 __u64 arena_bytes, double *tflops)
{
	struct bench_shape bs = { 32, 8, 128, dtype, s->batch, s->ctx };
	struct kv_geometry g = bench_geometry(&bs);
	__u64 frames = arena_bytes / kv_frame_bytes(&g);
	__u64 per = (s->ctx + 15) / 16, tokens = (__u64)s->batch * s->nq, i;
	size_t qbytes = tokens * 32 * 128 * 2;
	__u32 *table = malloc(sizeof(__u32) * per * s->batch), *ctx = malloc(4 * s->batch);
	__u32 *qs = malloc(4 * (s->batch + 1)), b;
	void *d_q, *d_out, *d_table, *d_ctx, *d_qs;
	__s32 *d_status, status = 0;
	struct kv_prefill_args a;
	double flops = 0.0, ms;

	if (!table || !ctx || !qs)
		abort();
	bench_table(table, &bs, frames);
	for (b = 0; b < s->batch; b++) {
		ctx[b] = s->ctx;
		qs[b] = b * s->nq;
		for (i = 0; i < s->nq; i++)
			flops += 4.0 * 128 * 32 * (double)(s->ctx - s->nq + i + 1);
	}
	qs[s->batch] = (__u32)tokens;
	CK(cudaMalloc(&d_q, qbytes));
	CK(cudaMalloc(&d_out, qbytes));
	CK(cudaMalloc(&d_table, sizeof(__u32) * per * s->batch));
	CK(cudaMalloc(&d_ctx, 4 * s->batch));
	CK(cudaMalloc(&d_qs, 4 * (s->batch + 1)));
	CK(cudaMalloc((void **)&d_status, 4));
	CK(cudaMemcpy(d_table, table, sizeof(__u32) * per * s->batch, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_ctx, ctx, 4 * s->batch, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_qs, qs, 4 * (s->batch + 1), cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_status, &status, 4, cudaMemcpyHostToDevice));
	if (kv_cuda_fill_uniform(d_q, qbytes / 2, KV_DTYPE_BF16, 11, 1.0f, NULL))
		abort();
	a = (struct kv_prefill_args){
		.arena = { arena, frames, g }, .batch = s->batch, .q_heads = 32,
		.scale = 1.0f / sqrtf(128.0f), .table_stride = (__u32)per,
		.tokens = (__u32)tokens, .max_q_len = s->nq, .q = d_q, .out = d_out,
		.q_start = d_qs, .block_table = d_table, .ctx_lens = d_ctx,
		.status = d_status,
		.io_dtype = kv_dtype_quantized(dtype) ? KV_DTYPE_BF16 : 0,
	};
	ms = time_ms(do_prefill, &a);
	CK(cudaMemcpy(&status, d_status, 4, cudaMemcpyDeviceToHost));
	if (status)
		fprintf(stderr, "# prefill reported status %d\n", status);
	*tflops = flops / (ms * 1e-3) / 1e12;
	CK(cudaFree(d_q));
	CK(cudaFree(d_out));
	CK(cudaFree(d_table));
	CK(cudaFree(d_ctx));
	CK(cudaFree(d_qs));
	CK(cudaFree(d_status));
	free(table);
	free(ctx);
	free(qs);
	return ms;
}

static void bench_prefill(const struct prefill_shape *s, void *arena, __u64 frames)
{
	double tf, ms = prefill_ms(s, KV_DTYPE_BF16, arena, frames * 65536, &tf);

	printf("| %u x %u on %u | %8.3f | %6.1f | %8.3f | %8.3f | %5.2f | %5.2f |\n",
	       s->batch, s->nq, s->ctx, ms, tf, s->flash_ms, s->cudnn_ms,
	       s->flash_ms / ms, s->cudnn_ms / ms);
	fflush(stdout);
}

/* Prefill on quantized pools beside bf16: a full and a chunked shape. */
static void bench_prefill_quant(void *arena, __u64 frames)
{
	static const __u32 dtypes[] = { KV_DTYPE_BF16, KV_DTYPE_INT8, KV_DTYPE_FP8_E4M3,
					KV_DTYPE_INT4 };
	static const unsigned int rows[] = { 0, 4 };
	unsigned int i, j;

	printf("\n# prefill on quantized pools (bf16 queries; the same shapes)\n");
	printf("| batch x new on ctx | bf16 ms | int8 ms | fp8 ms | int4 ms | "
	       "bf16 TFLOP/s | int8 | fp8 | int4 |\n|---|---|---|---|---|---|---|---|---|\n");
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct prefill_shape *s = &prefills[rows[i]];
		double ms[4], tf[4];

		for (j = 0; j < 4; j++)
			ms[j] = prefill_ms(s, dtypes[j], arena, frames * 65536, &tf[j]);
		printf("| %u x %u on %u | %.3f | %.3f | %.3f | %.3f | %.1f | %.1f | %.1f | %.1f |\n",
		       s->batch, s->nq, s->ctx, ms[0], ms[1], ms[2], ms[3], tf[0], tf[1],
		       tf[2], tf[3]);
		fflush(stdout);
	}
}

static void bench_moves(double copy_bw)
{
	struct kv_geometry g = { 1, 8, 128, 16, KV_DTYPE_BF16, 0 };
	struct kv_geometry gb = { 32, 8, 128, 16, KV_DTYPE_BF16, 0 };
	static const __u32 dtypes[] = { KV_DTYPE_BF16, KV_DTYPE_INT8, KV_DTYPE_FP8_E4M3,
					KV_DTYPE_INT4 };
	/*
	 * decode-like (one token per sequence: the first two), then
	 * prefill-like, the last in blocks of 64 tokens
	 */
	__u32 tokens_list[] = { 256, 4096, 4096, 65536, 65536 }, pairs = 512, i, ti, di;
	__u64 frames = 65536 / 16 + 1, vec = 8 * 128 * 2;
	void *arena, *k, *v, *barena, *buf, *d_slots, *d_src, *d_dst;
	__s64 *slots = malloc(sizeof(__s64) * 65536);
	__u32 *perm = malloc(sizeof(__u32) * 2 * pairs);
	double ms, bytes;

	CK(cudaMalloc(&arena, frames * kv_frame_bytes(&g)));
	CK(cudaMalloc(&k, 65536 * vec));
	CK(cudaMalloc(&v, 65536 * vec));
	CK(cudaMalloc(&d_slots, sizeof(__s64) * 65536));
	kv_cuda_fill_uniform(k, 65536 * vec / 2, KV_DTYPE_BF16, 1, 1.0f, NULL);
	kv_cuda_fill_uniform(v, 65536 * vec / 2, KV_DTYPE_BF16, 2, 1.0f, NULL);

	printf("\n| op | bytes read + written | ms | GB/s | %% of copy |\n|---|---|---|---|---|\n");
	for (di = 0; di < 4; di++) {
		/* bf16, then the quantized pools: bf16 input quantized on append */
		g.dtype = dtypes[di];
		for (ti = 0; ti < 5; ti++) {
			__u32 tokens = tokens_list[ti], bt = ti == 4 ? 64 : 16;
			__u64 nfr = bt == 16 ? frames : 65536 / bt;	/* within the arena */
			__u32 *fperm = malloc(sizeof(__u32) * nfr);

			g.block_tokens = bt;
			for (i = 0; i < nfr; i++)
				fperm[i] = i;
			bench_shuffle(fperm, nfr);
			/* decode-like: one token per sequence, scattered slots;
			 * prefill-like: runs of bt tokens filling shuffled blocks */
			for (i = 0; i < tokens; i++)
				slots[i] = ti < 2 ? (__s64)fperm[i] * bt + (i * 7) % bt :
					   (__s64)fperm[i / bt] * bt + i % bt;
			free(fperm);
			CK(cudaMemcpy(d_slots, slots, sizeof(__s64) * tokens, cudaMemcpyHostToDevice));
			struct kv_append_args ap = {
				.arena = { arena, nfr, g }, .tokens = tokens, .k = k, .v = v,
				.slots = d_slots, .io_dtype = di ? KV_DTYPE_BF16 : 0,
			};
			bytes = 2.0 * tokens * (vec + 8 * kv_row_bytes(&g));
			ms = time_ms(do_append, &ap);
			printf("| append %u tokens %s%s (8 kv heads x 128, %s%s) | %.1f MB | %.4f | "
			       "%.0f | %.1f%% |\n", tokens, ti < 2 ? "decode" : "prefill",
			       bt == 16 ? "" : ", 64-token blocks", kv_dtype_name(g.dtype),
			       di ? " from bf16" : "", bytes / 1e6, ms, bytes / ms / 1e6,
			       100.0 * bytes / ms / 1e6 / copy_bw);
		}
		g.block_tokens = 16;
	}
	g.dtype = KV_DTYPE_BF16;

	CK(cudaMalloc(&barena, 2 * pairs * kv_frame_bytes(&gb)));
	CK(cudaMalloc(&buf, pairs * kv_block_bytes(&gb)));
	kv_cuda_fill_uniform(barena, 2 * pairs * kv_frame_bytes(&gb) / 2, KV_DTYPE_BF16, 3,
			     1.0f, NULL);
	for (i = 0; i < 2 * pairs; i++)
		perm[i] = i;
	bench_shuffle(perm, 2 * pairs);
	CK(cudaMalloc(&d_src, 4 * pairs));
	CK(cudaMalloc(&d_dst, 4 * pairs));
	CK(cudaMemcpy(d_src, perm, 4 * pairs, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_dst, perm + pairs, 4 * pairs, cudaMemcpyHostToDevice));
	struct kv_copy_args cp = {
		.arena = { barena, 2 * pairs, gb }, .pairs = pairs, .src = d_src, .dst = d_dst,
	};
	bytes = 2.0 * pairs * kv_block_bytes(&gb);
	ms = time_ms(do_copy, &cp);
	printf("| copy %u blocks of %.1f MB (32 layers) | %.0f MB | %.4f | %.0f | %.1f%% |\n",
	       pairs, kv_block_bytes(&gb) / 1e6, bytes / 1e6, ms, bytes / ms / 1e6,
	       100.0 * bytes / ms / 1e6 / copy_bw);
	struct kv_gather_args ga = {
		.arena = { barena, 2 * pairs, gb }, .nframes = pairs, .frames = d_src, .buf = buf,
	};
	ms = time_ms(do_gather, &ga);
	printf("| gather %u blocks to a contiguous buffer | %.0f MB | %.4f | %.0f | %.1f%% |\n",
	       pairs, bytes / 1e6, ms, bytes / ms / 1e6, 100.0 * bytes / ms / 1e6 / copy_bw);
	ms = time_ms(do_scatter, &ga);
	printf("| scatter %u blocks from a contiguous buffer | %.0f MB | %.4f | %.0f | %.1f%% |\n",
	       pairs, bytes / 1e6, ms, bytes / ms / 1e6, 100.0 * bytes / ms / 1e6 / copy_bw);
	/* small COW batch: 16 blocks */
	cp.pairs = 16;
	bytes = 2.0 * 16 * kv_block_bytes(&gb);
	ms = time_ms(do_copy, &cp);
	printf("| copy 16 blocks (COW batch) | %.0f MB | %.4f | %.0f | %.1f%% |\n",
	       bytes / 1e6, ms, bytes / ms / 1e6, 100.0 * bytes / ms / 1e6 / copy_bw);

	CK(cudaFree(arena));
	CK(cudaFree(k));
	CK(cudaFree(v));
	CK(cudaFree(d_slots));
	CK(cudaFree(barena));
	CK(cudaFree(buf));
	CK(cudaFree(d_src));
	CK(cudaFree(d_dst));
	free(slots);
	free(perm);
}

int main(int argc, char **argv)
{
	static const __u32 batches[] = { 1, 16, 64, 256 }, ctxs[] = { 1024, 4096, 16384 };
	struct bench_shape shapes[64];
	struct cudaDeviceProp prop;
	int opt, quick = 0, decode_only = 0, prefill_only = 0, n = 0, ndev = 0, i, only = -1;
	__u64 frames = 0, ws_bytes = 0;
	unsigned int qi, bi, ci;
	void *arena, *ws = NULL;
	double copy_bw;

	while ((opt = getopt(argc, argv, "s:r:qDv:F:o:UPp:I:QL")) != -1) {
		if (opt == 'Q') {
			quant_only = 1;
			continue;
		}
		if (opt == 'L') {
			fixed_only = 1;
			continue;
		}

		if (opt == 'P')
			prefill_only = 1;
		else if (opt == 'p' && !bench_uint("-p", optarg, 0, 1023, &kv_cuda_prefill_variant))
			continue;
		else if (opt == 'I' && !bench_uint("-I", optarg, 1, 64, &kv_cuda_prefill_ipc))
			continue;
		else if (opt == 'U')
			in_order = 1;
		else if (opt == 'o' && !bench_uint("-o", optarg, 0, 63, &only))
			continue;
		else if (opt == 'F' && (!strcmp(optarg, "read") || !strcmp(optarg, "write")))
			flush_write = !strcmp(optarg, "write");
		else if (opt == 'v' && !bench_uint("-v", optarg, 0, 1023, &kv_cuda_decode_variant))
			continue;
		else if (opt == 'D')
			decode_only = 1;
		else if (opt == 's')
			load_sdpa(optarg);
		else if (opt == 'r' && !bench_uint("-r", optarg, 3, 100000, &reps))
			continue;
		else if (opt == 'q')
			quick = 1;
		else
			goto usage;
	}
	if (optind < argc || (getenv("KV_BENCH_QUANT_ROW") &&
			      bench_uint("KV_BENCH_QUANT_ROW", getenv("KV_BENCH_QUANT_ROW"), 0, 6,
					&quant_row)))
		goto usage;
	if (cudaGetDeviceCount(&ndev) != cudaSuccess || !ndev) {
		printf("# no CUDA device\n");
		return 4;
	}
	CK(cudaGetDeviceProperties(&prop, 0));
	for (qi = 0; qi < 2; qi++)
		for (bi = 0; bi < 4; bi++)
			for (ci = 0; ci < 3; ci++) {
				if (quick && (bi == 0 || bi == 3 || ci == 0))
					continue;
				shapes[n++] = (struct bench_shape){ qi ? 64 : 32, 8, 128,
					KV_DTYPE_BF16, batches[bi], ctxs[ci] };
			}
	shapes[n++] = (struct bench_shape){ 32, 8, 128, KV_DTYPE_BF16, 1, 131072 };
	shapes[n++] = (struct bench_shape){ 64, 8, 128, KV_DTYPE_BF16, 1, 131072 };
	shapes[n++] = (struct bench_shape){ 32, 8, 64, KV_DTYPE_FP16, 16, 2048 };

	for (i = 0; i < n; i++) {
		struct kv_geometry g = bench_geometry(&shapes[i]);
		__u64 need = (__u64)shapes[i].batch * ((shapes[i].ctx + 15) / 16);
		struct kv_decode_args a = { .arena = { (void *)1, 0, g },
			.batch = shapes[i].batch, .q_heads = shapes[i].q_heads,
			.table_stride = (shapes[i].ctx + 15) / 16 };

		if (kv_frame_bytes(&g) != 65536 && g.head_dim == 128)
			abort();
		if (need > frames)
			frames = need;
		if (kv_decode_workspace_bytes(&a) > ws_bytes)
			ws_bytes = kv_decode_workspace_bytes(&a);
	}
	frames += 16;
	/* one arena for all shapes, sized for the largest (hd128: 64 KiB frames) */
	CK(cudaMalloc(&arena, frames * 65536));
	CK(cudaMalloc(&ws, ws_bytes));
	CK(cudaMalloc(&flush_buf, FLUSH_BYTES));
	CK(cudaMemset(flush_buf, 0x5a, FLUSH_BYTES));
	CK(cudaEventCreate(&ev0));
	CK(cudaEventCreate(&ev1));
	if (kv_cuda_fill_uniform(arena, frames * 65536 / 2, KV_DTYPE_BF16, 42, 2.0f, NULL))
		return 1;
	CK(cudaDeviceSynchronize());

	copy_bw = copy_bandwidth();
	printf("# %s, %d SMs; device-to-device copy (cudaMemcpy, 1 GiB): %.0f GB/s read+written\n",
	       prop.name, prop.multiProcessorCount, copy_bw);
	/* what the method costs on its own: a 4-byte memset after the flush */
	printf("# L2 flush before each timed run: %s 256 MiB\n",
	       flush_write ? "a memset (write) of" : "a read of");
	printf("# a 4-byte memset timed the same way (after the flush): %.4f ms\n",
	       time_ms(do_tiny, ws ? ws : arena));
	if (quant_only) {
		bench_quant(arena, frames * 65536, ws, ws_bytes, copy_bw);
		return 0;
	}
	if (fixed_only) {
		bench_fixed(arena, frames * 65536, ws, ws_bytes, copy_bw);
		return 0;
	}
	if (kv_cuda_decode_variant >= 0)
		printf("# decode kernel variant %d\n", kv_cuda_decode_variant);
	printf("# decode: block_tokens 16, frames %s; GB/s = KV bytes read / time; "
	       "floor = KV bytes / copy bandwidth; SDPA on contiguous KV, enable_gqa\n",
	       in_order ? "in order (-U)" : "shuffled");
	printf("| heads dtype | batch | ctx | KV MB | ms | GB/s | %% of copy | time/floor | "
	       "SDPA flash ms | SDPA cuDNN ms | flash/ours | cuDNN/ours |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
	for (i = 0; i < n; i++) {
		/* fp16 head_dim 64 frames are smaller: the same arena holds more */
		struct kv_geometry g = bench_geometry(&shapes[i]);
		__u64 f = frames * 65536 / kv_frame_bytes(&g);

		if ((only >= 0 && i != only) || prefill_only)
			continue;
		bench_decode(&shapes[i], arena, f, ws, ws_bytes, copy_bw);
	}
	if (only < 0 && !prefill_only && !quick)
		bench_quant(arena, frames * 65536, ws, ws_bytes, copy_bw);
	if (only < 0 && !decode_only) {
		if (kv_cuda_prefill_variant >= 0)
			printf("# prefill kernel variant %d\n", kv_cuda_prefill_variant);
		if (kv_cuda_prefill_ipc > 0)
			printf("# wgmma prefill: %d query tiles per CTA\n", kv_cuda_prefill_ipc);
		printf("\n# prefill: causal, 32:8 hd128 bf16, block_tokens 16, frames shuffled; "
		       "SDPA on contiguous KV (lower-right causal mask where new < ctx)\n");
		printf("| batch x new on ctx | ms | TFLOP/s | SDPA flash ms | SDPA cuDNN ms | "
		       "flash/ours | cuDNN/ours |\n|---|---|---|---|---|---|---|\n");
		for (i = 0; i < (int)NPREFILL; i++)
			bench_prefill(&prefills[i], arena, frames);
		bench_prefill_quant(arena, frames);
	}
	CK(cudaFree(arena));
	if (!decode_only && !prefill_only)
		bench_moves(copy_bw);
	return 0;
usage:
	fprintf(stderr, "usage: bench-kernels-gpu [-s sdpa.tsv] [-r REPS (3-100000)] [-q] [-D] "
		"[-v VARIANT (0-1023)] [-F read|write] [-o SHAPE (0-63)] [-U] [-P] "
		"[-p VARIANT (0-1023)] [-I TILES (1-64)] [-Q] [-L]; KV_BENCH_QUANT_ROW 0-6\n");
	return 2;
}
