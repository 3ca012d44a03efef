// SPDX-License-Identifier: MIT
/*
 * bench-kernels: the CPU kernels, timed against a memcpy of the same bytes
 * (one memcpy call, measured in the same run). Prints a table; asserts
 * nothing about time.
 *
 *	bench-kernels [-t THREADS] [-r REPS]
 */
#include <stdint.h>
#include <unistd.h>

#include "kernels/bench/bench_common.h"

static const struct bench_shape shapes[] = {
	{ 32, 8, 128, KV_DTYPE_BF16, 1, 1024 },
	{ 32, 8, 128, KV_DTYPE_BF16, 1, 4096 },
	{ 32, 8, 128, KV_DTYPE_BF16, 1, 16384 },
	{ 32, 8, 128, KV_DTYPE_BF16, 16, 1024 },
	{ 32, 8, 128, KV_DTYPE_BF16, 16, 4096 },
	{ 64, 8, 128, KV_DTYPE_BF16, 16, 4096 },
	{ 32, 8, 64, KV_DTYPE_FP16, 16, 2048 },
};

static unsigned int threads;
static int reps = 5;

/* memcpy of @bytes, median seconds */
static double time_memcpy(size_t bytes)
{
	char *a = malloc(bytes), *b = malloc(bytes);
	double t[16];
	int i;

	if (!a || !b)
		abort();
	memset(a, 1, bytes);
	memset(b, 2, bytes);
	for (i = 0; i < reps; i++) {
		double t0 = bench_now();

		memcpy(b, a, bytes);
		t[i] = bench_now() - t0;
	}
	if (b[bytes / 2] != 1)
		abort();
	free(a);
	free(b);
	return bench_median(t, reps);
}

/* random finite values of modest size in 16-bit types, or floats */
static void fill(void *p, size_t bytes, __u32 dtype)
{
	size_t i;

	if (dtype == KV_DTYPE_FP32) {
		for (i = 0; i < bytes / 4; i++)
			((float *)p)[i] = (float)(bench_rand() % 2001) / 1000.0f - 1.0f;
		return;
	}
	for (i = 0; i < bytes / 2; i++) {
		uint64_t r = bench_rand();
		/* exponent near 2^-2..2^0 in both fp16 and bf16 layouts */
		uint16_t v = dtype == KV_DTYPE_BF16 ? (uint16_t)(0x3e00 | (r & 0x1ff)) :
			     (uint16_t)(0x3400 | (r & 0x7ff));

		((uint16_t *)p)[i] = v | (uint16_t)(r >> 20 & 0x8000);
	}
}

static void bench_decode(const struct bench_shape *s)
{
	struct kv_geometry g = bench_geometry(s);
	__u64 per = (s->ctx + 15) / 16, frames = per * s->batch + 1;
	size_t qbytes = (size_t)s->batch * s->q_heads * s->head_dim * kv_dtype_size(s->dtype);
	void *arena = aligned_alloc(KV_FRAME_ALIGN, frames * kv_frame_bytes(&g));
	void *q = malloc(qbytes), *out = malloc(qbytes);
	__u32 *table = malloc(sizeof(__u32) * per * s->batch), *ctx = malloc(4 * s->batch), b;
	struct kv_decode_args a;
	double t[16], td, tm, bytes = bench_kv_bytes(s);
	int i;

	if (!arena || !q || !out || !table || !ctx)
		abort();
	fill(arena, frames * kv_frame_bytes(&g), s->dtype);
	fill(q, qbytes, s->dtype);
	bench_table(table, s, frames);
	for (b = 0; b < s->batch; b++)
		ctx[b] = s->ctx;
	a = (struct kv_decode_args){
		.arena = { arena, frames, g }, .layer = 0, .batch = s->batch,
		.q_heads = s->q_heads, .scale = 1.0f / 11.3f, .table_stride = (__u32)per,
		.q = q, .out = out, .block_table = table, .ctx_lens = ctx,
		.threads = threads,
	};
	if (kv_decode_cpu(&a))
		abort();
	for (i = 0; i < reps; i++) {
		double t0 = bench_now();

		kv_decode_cpu(&a);
		t[i] = bench_now() - t0;
	}
	td = bench_median(t, reps);
	tm = time_memcpy((size_t)bytes);
	printf("| decode %2u:%u hd%-3u %s | %5u | %6u | %8.1f | %9.3f | %7.2f | %7.2f | %5.2f |\n",
	       s->q_heads, s->kv_heads, s->head_dim, kv_dtype_name(s->dtype),
	       s->batch, s->ctx, bytes / 1e6, td * 1e3, bytes / td / 1e9,
	       bytes / tm / 1e9, tm / td);
	free(arena);
	free(q);
	free(out);
	free(table);
	free(ctx);
}

/* append (prefill-sized), copy and gather: bytes read + written per second */
static void bench_moves(void)
{
	struct kv_geometry g = { 1, 8, 128, 16, KV_DTYPE_BF16, 0 };
	struct kv_geometry gb = { 32, 8, 128, 16, KV_DTYPE_BF16, 0 };
	__u32 tokens = 32768, i, pairs = 48;
	__u64 frames = tokens / 16 + 1, vec = 8 * 128 * 2;
	void *arena = aligned_alloc(KV_FRAME_ALIGN, frames * kv_frame_bytes(&g));
	void *k = malloc(tokens * vec), *v = malloc(tokens * vec);
	__s64 *slots = malloc(sizeof(__s64) * tokens);
	__u32 *perm = malloc(sizeof(__u32) * frames);
	void *barena = aligned_alloc(KV_FRAME_ALIGN, 2 * pairs * kv_frame_bytes(&gb));
	void *buf = malloc(pairs * kv_block_bytes(&gb));
	__u32 src[48], dst[48];
	double t[16], tm, bytes;
	int r;

	if (!arena || !k || !v || !slots || !perm || !barena || !buf)
		abort();
	fill(k, tokens * vec, KV_DTYPE_BF16);
	fill(v, tokens * vec, KV_DTYPE_BF16);
	fill(barena, 2 * pairs * kv_frame_bytes(&gb), KV_DTYPE_BF16);
	memset(arena, 0, frames * kv_frame_bytes(&g));
	for (i = 0; i < frames; i++)
		perm[i] = i;
	bench_shuffle(perm, frames);
	for (i = 0; i < tokens; i++)
		slots[i] = (__s64)perm[i / 16] * 16 + i % 16;

	struct kv_append_args ap = {
		.arena = { arena, frames, g }, .tokens = tokens, .k = k, .v = v,
		.slots = slots, .threads = threads,
	};
	bytes = 2.0 * 2 * tokens * vec;
	kv_append_cpu(&ap);
	for (r = 0; r < reps; r++) {
		double t0 = bench_now();

		kv_append_cpu(&ap);
		t[r] = bench_now() - t0;
	}
	tm = time_memcpy((size_t)(bytes / 2));
	printf("| append %u tokens 8x128 bf16 | %.1f MB | %.2f GB/s | memcpy %.2f GB/s | %.2f |\n",
	       tokens, bytes / 2 / 1e6, bytes / bench_median(t, reps) / 1e9,
	       bytes / tm / 1e9, tm / bench_median(t, reps));

	for (i = 0; i < pairs; i++) {
		src[i] = i;
		dst[i] = pairs + i;
	}
	struct kv_copy_args cp = {
		.arena = { barena, 2 * pairs, gb }, .pairs = pairs, .src = src,
		.dst = dst, .threads = threads,
	};
	bytes = 2.0 * pairs * kv_block_bytes(&gb);
	kv_copy_blocks_cpu(&cp);
	for (r = 0; r < reps; r++) {
		double t0 = bench_now();

		kv_copy_blocks_cpu(&cp);
		t[r] = bench_now() - t0;
	}
	tm = time_memcpy((size_t)(bytes / 2));
	printf("| copy %u blocks of %.1f MB | %.1f MB | %.2f GB/s | memcpy %.2f GB/s | %.2f |\n",
	       pairs, kv_block_bytes(&gb) / 1e6, bytes / 2 / 1e6,
	       bytes / bench_median(t, reps) / 1e9, bytes / tm / 1e9,
	       tm / bench_median(t, reps));

	struct kv_gather_args ga = {
		.arena = { barena, 2 * pairs, gb }, .nframes = pairs, .frames = src,
		.buf = buf, .threads = threads,
	};
	kv_gather_cpu(&ga);
	for (r = 0; r < reps; r++) {
		double t0 = bench_now();

		kv_gather_cpu(&ga);
		t[r] = bench_now() - t0;
	}
	printf("| gather %u blocks | %.1f MB | %.2f GB/s | memcpy %.2f GB/s | %.2f |\n",
	       pairs, bytes / 2 / 1e6, bytes / bench_median(t, reps) / 1e9,
	       bytes / tm / 1e9, tm / bench_median(t, reps));
	free(arena);
	free(k);
	free(v);
	free(slots);
	free(perm);
	free(barena);
	free(buf);
}

int main(int argc, char **argv)
{
	unsigned int i;
	int opt, t;

	while ((opt = getopt(argc, argv, "t:r:")) != -1) {
		if (opt == 't' && !bench_uint("-t", optarg, 0, 1024, &t))
			threads = (unsigned int)t;
		else if (opt == 'r' && !bench_uint("-r", optarg, 1, 16, &reps))
			continue;
		else
			goto usage;
	}
	if (optind < argc)
		goto usage;
	printf("# CPU kernels, %ld CPUs online, threads=%u (0: all), median of %d\n",
	       sysconf(_SC_NPROCESSORS_ONLN), threads, reps);
	printf("# GB/s for decode: KV bytes read / time; memcpy: the same bytes copied by one memcpy call\n");
	printf("| op | batch | ctx | KV MB | ms | GB/s | memcpy GB/s | decode/memcpy speed |\n");
	printf("|---|---|---|---|---|---|---|---|\n");
	for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
		bench_decode(&shapes[i]);
	printf("\n| op | bytes moved | GB/s (read+written) | memcpy GB/s (read+written) | ratio |\n");
	printf("|---|---|---|---|---|\n");
	bench_moves();
	return 0;
usage:
	fprintf(stderr, "usage: bench-kernels [-t THREADS (0-1024)] [-r REPS (1-16)]\n");
	return 2;
}
