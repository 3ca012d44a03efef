// SPDX-License-Identifier: MIT
/*
 * lib/kvsize.c - KV cache sizing and block-size advice (see kvsize.h).
 *
 * A block holds, for block_tokens tokens, the K and V of every layer
 * (uapi/kvmem/layout.h): 2 x layers x kv_heads x block_tokens vectors of
 * head_dim values. With tensor parallelism each GPU holds its share of
 * the KV heads (all of the layers and tokens), so a GPU's block is the
 * same formula with kv_heads / tp heads; a quantized type adds its scales.
 * Each type is a pool dtype, and for a geometry a pool takes (a quantized
 * one needs head_dim a multiple of KV_INT4_GROUP) gives exactly
 * kv_block_bytes(); other head_dims are rounded up, for estimates only.
 *
 * The advice counts, from the histogram of sequence lengths modulo 128,
 * the blocks each candidate size would have taken and the slots left empty
 * in the last block of each sequence, exactly (every candidate divides
 * 128), and weighs that waste against the benefit of fewer, larger blocks.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lib/config.h"
#include "lib/kvsize.h"
#include "uapi/kvmem/layout.h"

const struct kv_size_dtype kv_size_dtypes[KV_SIZE_NR_DTYPES] = {
	[KV_SIZE_FP16] = { "fp16", 16, KV_DTYPE_FP16, 0, 0 },
	[KV_SIZE_BF16] = { "bf16", 16, KV_DTYPE_BF16, 0, 0 },
	[KV_SIZE_FP32] = { "fp32", 32, KV_DTYPE_FP32, 0, 0 },
	[KV_SIZE_INT8] = { "int8", 8, KV_DTYPE_INT8, UINT32_MAX, KV_SIZE_BLOCK_SCALE_BYTES },
	[KV_SIZE_FP8] = { "fp8", 8, KV_DTYPE_FP8_E4M3, UINT32_MAX, KV_SIZE_BLOCK_SCALE_BYTES },
	[KV_SIZE_INT4] = { "int4", 4, KV_DTYPE_INT4, KV_SIZE_INT4_GROUP, KV_SIZE_INT4_SCALE_BYTES },
};

_Static_assert(KV_SIZE_INT4_GROUP == KV_INT4_GROUP, "int4 scale groups as layout.h has them");

static const uint32_t advise_sizes[KV_ADVISE_NR] = { 8, 16, 32, 64, 128 };

_Static_assert(KV_SEQLEN_MOD % 128 == 0, "every candidate block size divides KV_SEQLEN_MOD");

/**
 * kv_size_dtype_find() - a KV element type by name
 * @name: "fp16", "bf16", "fp32", "int8", "fp8" or "int4"
 *
 * Return: its KV_SIZE_* index, or -EINVAL.
 */
int kv_size_dtype_find(const char *name)
{
	int i;

	for (i = 0; i < KV_SIZE_NR_DTYPES; i++) {
		if (!strcmp(kv_size_dtypes[i].name, name))
			return i;
	}
	return -EINVAL;
}

/**
 * kv_size_dtype_of() - the KV element type of a pool dtype
 * @pool_dtype: KV_DTYPE_*
 *
 * Return: its KV_SIZE_* index, or -EINVAL for no pool dtype.
 */
int kv_size_dtype_of(uint32_t pool_dtype)
{
	int i;

	for (i = 0; pool_dtype && i < KV_SIZE_NR_DTYPES; i++) {
		if (kv_size_dtypes[i].pool_dtype == pool_dtype)
			return i;
	}
	return -EINVAL;
}

/* @bytes rounded up to a whole frame (KV_FRAME_ALIGN), as kv_frame_bytes() does. */
static uint64_t frame_round(uint64_t bytes)
{
	return (bytes + KV_FRAME_ALIGN - 1) / KV_FRAME_ALIGN * KV_FRAME_ALIGN;
}

static int range_check(const char *what, uint32_t v, uint32_t max, char *err, size_t errlen)
{
	if (v && v <= max)
		return 0;
	return kv_errorf(err, errlen, "%s %u is out of range (1..%u)", what, v, max);
}

/* KV heads per GPU and GPUs per KV head for @tp GPUs. */
static int tp_split(const struct kv_size_params *p, struct kv_size *s, char *err,
		    size_t errlen)
{
	if (p->kv_heads >= p->tp) {
		if (p->kv_heads % p->tp)
			return kv_errorf(err, errlen,
					  "the %u kv heads do not split evenly over %u GPUs (tensor parallel needs kv_heads a multiple of tp)",
					  p->kv_heads, p->tp);
		s->heads_per_gpu = p->kv_heads / p->tp;
		s->replicas = 1;
		return 0;
	}
	if (p->tp % p->kv_heads)
		return kv_errorf(err, errlen,
				  "%u GPUs for %u kv heads: with more GPUs than kv heads, each head is replicated, so tp must be a multiple of kv_heads",
				  p->tp, p->kv_heads);
	s->heads_per_gpu = 1;
	s->replicas = p->tp / p->kv_heads;
	return 0;
}

/**
 * kv_size_compute() - the bytes of a block of a geometry, on one GPU
 * @p:      the geometry, element type and tensor-parallel GPUs
 * @s:      receives the sizes; written only on success
 * @err:    on error, why; may be NULL
 * @errlen: size of @err
 *
 * A block is 2 x layers x heads x block_tokens vectors of head_dim values,
 * where heads is the GPU's share of the KV heads: kv_heads / tp, or 1 when
 * tp > kv_heads (each head then lives on tp / kv_heads GPUs). A vector of
 * a quantized type takes head_dim x bits / 8 bytes, rounded up; int8 and
 * fp8 add a 4-byte scale per block, layer, K or V and head; int4 a 2-byte
 * scale per 32 values of each vector (rounded up). The frame is the block
 * rounded up to KV_FRAME_ALIGN. With tp 1, for any geometry that
 * kv_geometry_valid() takes with the type's pool dtype, the block is
 * kv_block_bytes() and the frame kv_frame_bytes().
 *
 * Return: 0; -EINVAL for a field out of the ranges of layout.h, an unknown
 * type, tp outside 1..KV_SIZE_TP_MAX, or KV heads that do not split over
 * tp GPUs (kv_heads not a multiple of tp, or tp > kv_heads and not a
 * multiple of it), with the reason in @err.
 */
int kv_size_compute(const struct kv_size_params *p, struct kv_size *s, char *err,
		    size_t errlen)
{
	const struct kv_size_dtype *d;
	struct kv_size r = { 0 };
	uint64_t vecs;
	int ret;

	ret = range_check("layers", p->layers, KV_MAX_LAYERS, err, errlen);
	ret = ret ?: range_check("kv_heads", p->kv_heads, KV_MAX_KV_HEADS, err, errlen);
	ret = ret ?: range_check("head_dim", p->head_dim, KV_MAX_HEAD_DIM, err, errlen);
	ret = ret ?: range_check("block_tokens", p->block_tokens, KV_MAX_BLOCK_TOKENS, err,
				 errlen);
	ret = ret ?: range_check("tp", p->tp, KV_SIZE_TP_MAX, err, errlen);
	if (!ret && p->dtype >= KV_SIZE_NR_DTYPES)
		ret = kv_errorf(err, errlen, "unknown KV dtype %u", p->dtype);
	ret = ret ?: tp_split(p, &r, err, errlen);
	if (ret)
		return ret;
	d = &kv_size_dtypes[p->dtype];
	vecs = 2ull * p->layers * r.heads_per_gpu * p->block_tokens;
	r.data_bytes = vecs * (((uint64_t)p->head_dim * d->bits + 7) / 8);
	if (d->group == UINT32_MAX)
		r.scale_bytes = 2ull * p->layers * r.heads_per_gpu * d->scale_bytes;
	else if (d->group)
		r.scale_bytes = vecs * ((p->head_dim + d->group - 1) / d->group) * d->scale_bytes;
	r.block_bytes = r.data_bytes + r.scale_bytes;
	r.frame_bytes = frame_round(r.block_bytes);
	*s = r;
	return 0;
}

/**
 * kv_size_fit() - what a memory holds in frames of a size
 * @s:            the sizes, from kv_size_compute()
 * @block_tokens: tokens per block
 * @memory:       bytes of KV memory (of each GPU with tensor parallelism)
 * @context:      tokens of each sequence, for @f->batch; 0 for none
 * @batch:        sequences, for @f->context; 0 for none
 * @f:            receives the frames of @memory, their tokens, the blocks a
 *                sequence of @context needs and how many such sequences
 *                fit, and the longest context each of @batch sequences can
 *                have (in whole blocks)
 */
void kv_size_fit(const struct kv_size *s, uint32_t block_tokens, uint64_t memory,
		 uint64_t context, uint64_t batch, struct kv_fit *f)
{
	memset(f, 0, sizeof(*f));
	f->frames = memory / s->frame_bytes;
	f->tokens = f->frames * block_tokens;
	if (context) {
		f->blocks_per_seq = (context + block_tokens - 1) / block_tokens;
		f->batch = f->frames / f->blocks_per_seq;
	}
	if (batch)
		f->context = f->frames / batch * block_tokens;
}

/* ---- the histogram ------------------------------------------------------ */

static unsigned int bucket_of(uint64_t n)
{
	return n ? 64 - (unsigned int)__builtin_clzll(n) : 0;
}

/**
 * kv_seqlen_record() - count a sequence that ended
 * @h:         the histogram
 * @nr_tokens: the tokens it held when it ended
 */
void kv_seqlen_record(struct kv_seqlen_hist *h, uint32_t nr_tokens)
{
	h->count++;
	h->tokens += nr_tokens;
	if (nr_tokens > h->max)
		h->max = nr_tokens;
	h->bucket[bucket_of(nr_tokens)]++;
	h->tail[nr_tokens % KV_SEQLEN_MOD]++;
}

/* "0", "1", "2-3", "4-7"...: the lengths of bucket @b. */
static void bucket_label(unsigned int b, char *buf, size_t len)
{
	unsigned long long lo = b ? 1ull << (b - 1) : 0, hi = b ? (1ull << b) - 1 : 0;

	if (lo == hi)
		snprintf(buf, len, "%llu", lo);
	else
		snprintf(buf, len, "%llu-%llu", lo, hi);
}

/**
 * kv_seqlen_print() - a histogram as meminfo-style text
 * @h: the histogram
 * @f: where to write: `Sequences:', `Tokens:' and `MaxTokens:' lines, then
 *     `Length LO-HI:' (or `Length N:') for each length bucket that is not
 *     empty, then `Tail R:' for each length modulo 128 that is not
 *     empty, each with a count
 *
 * kv_seqlen_parse() reads it back.
 *
 * Return: 0, or -EIO when writing failed.
 */
int kv_seqlen_print(const struct kv_seqlen_hist *h, FILE *f)
{
	char label[48], range[32];
	unsigned int i;

	fprintf(f, "%-18s %12llu\n", "Sequences:", (unsigned long long)h->count);
	fprintf(f, "%-18s %12llu\n", "Tokens:", (unsigned long long)h->tokens);
	fprintf(f, "%-18s %12llu\n", "MaxTokens:", (unsigned long long)h->max);
	for (i = 0; i < KV_SEQLEN_BUCKETS; i++) {
		if (!h->bucket[i])
			continue;
		bucket_label(i, range, sizeof(range));
		snprintf(label, sizeof(label), "Length %s:", range);
		fprintf(f, "%-24s %12llu\n", label, (unsigned long long)h->bucket[i]);
	}
	for (i = 0; i < KV_SEQLEN_MOD; i++) {
		if (!h->tail[i])
			continue;
		snprintf(label, sizeof(label), "Tail %u:", i);
		fprintf(f, "%-24s %12llu\n", label, (unsigned long long)h->tail[i]);
	}
	return ferror(f) ? -EIO : 0;
}

/* One `Length LO[-HI]: N' line into @h. */
static int length_parse(const char *line, struct kv_seqlen_hist *h)
{
	unsigned long long lo, hi, n;
	unsigned int b;

	if (sscanf(line, "Length %llu-%llu: %llu", &lo, &hi, &n) != 3) {
		if (sscanf(line, "Length %llu: %llu", &lo, &n) != 2)
			return -EINVAL;
		hi = lo;
	}
	b = bucket_of(lo);
	if (b >= KV_SEQLEN_BUCKETS || (lo && lo != 1ull << (b - 1)) ||
	    hi != (b ? (1ull << b) - 1 : 0))
		return -EINVAL;
	h->bucket[b] = n;
	return 0;
}

static int hist_line(const char *line, struct kv_seqlen_hist *h)
{
	unsigned long long v, n;

	if (sscanf(line, "Sequences: %llu", &v) == 1)
		h->count = v;
	else if (sscanf(line, "Tokens: %llu", &v) == 1)
		h->tokens = v;
	else if (sscanf(line, "MaxTokens: %llu", &v) == 1)
		h->max = v;
	else if (!strncmp(line, "Length ", 7))
		return length_parse(line, h);
	else if (!strncmp(line, "Tail ", 5)) {
		if (sscanf(line, "Tail %llu: %llu", &v, &n) != 2 || v >= KV_SEQLEN_MOD)
			return -EINVAL;
		h->tail[v] = n;
	}
	return 0;	/* other lines: fields of a later version */
}

/*
 * The counts of @h agree: the buckets and the tails each sum to @count,
 * and the tokens are the tails' lengths modulo KV_SEQLEN_MOD plus whole
 * multiples of it.
 */
static bool hist_consistent(const struct kv_seqlen_hist *h)
{
	uint64_t b = 0, t = 0, rem = 0;
	unsigned int i;

	for (i = 0; i < KV_SEQLEN_BUCKETS; i++)
		b += h->bucket[i];
	for (i = 0; i < KV_SEQLEN_MOD; i++) {
		t += h->tail[i];
		rem += h->tail[i] * i;
	}
	return b == h->count && t == h->count && rem <= h->tokens &&
	       (h->tokens - rem) % KV_SEQLEN_MOD == 0;
}

/**
 * kv_seqlen_parse() - read back what kv_seqlen_print() wrote
 * @text: the text (one pool's section of a KVMEM_STATS_SEQLEN reply)
 * @len:  its bytes
 * @h:    receives the histogram
 *
 * Lines it does not know are skipped, so that a daemon may append fields.
 *
 * Return: 0; -EINVAL for a malformed line or counts that disagree.
 */
int kv_seqlen_parse(const char *text, size_t len, struct kv_seqlen_hist *h)
{
	const char *p = text, *end = text + len, *nl;
	char line[128];
	size_t n;
	int ret;

	memset(h, 0, sizeof(*h));
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		n = (size_t)((nl ? nl : end) - p);
		if (n >= sizeof(line))
			return -EINVAL;
		memcpy(line, p, n);
		line[n] = '\0';
		ret = hist_line(line, h);
		if (ret)
			return ret;
		p += n + 1;
	}
	return hist_consistent(h) ? 0 : -EINVAL;
}

/* ---- the advice ----------------------------------------------------------- */

/* Row @r of the advice: blocks and empty slots for r->block_tokens. */
static void advise_row(const struct kv_seqlen_hist *h, uint64_t token_bytes,
		       struct kv_advice_row *r)
{
	uint64_t b = r->block_tokens, rem = 0, partial = 0;
	unsigned int i;

	for (i = 0; i < KV_SEQLEN_MOD; i++) {
		rem += h->tail[i] * (i % b);
		partial += i % b ? h->tail[i] : 0;
	}
	r->blocks = (h->tokens - rem) / b + partial;
	r->unused = r->blocks * b - h->tokens;
	r->frame_bytes = frame_round(b * token_bytes);
	r->waste = 1.0 - (double)h->tokens * (double)token_bytes /
			 ((double)r->blocks * (double)r->frame_bytes);
}

/**
 * kv_advise() - which block size suits the sequences a pool has seen
 * @h:           their lengths
 * @token_bytes: the pool's KV bytes per token (a block's bytes divided by
 *               its tokens)
 * @max_waste:   the waste allowed, a fraction of the KV memory the
 *               sequences took (KV_ADVISE_WASTE_PCT / 100.0 by default)
 * @a:           receives, for 8, 16, 32, 64 and 128 tokens per block, the
 *               blocks the sequences would have taken, the slots left empty
 *               in their last blocks, the frame, and the waste: the part of
 *               the frames' bytes that holds no KV (empty slots, and the
 *               rounding of a block up to a 4 KiB frame); and the advice
 *
 * The advice is the largest block size whose waste is at most @max_waste,
 * since fewer, larger blocks mean shorter block tables, fewer allocations
 * and block-boundary steps and fewer, larger swap I/Os; when none keeps
 * within it, the one that wastes least (the larger on a tie).
 *
 * Return: 0; -ENODATA when no sequence with a token has been counted;
 * -EINVAL for @token_bytes 0, or a histogram whose counts disagree.
 */
int kv_advise(const struct kv_seqlen_hist *h, uint64_t token_bytes, double max_waste,
	      struct kv_advice *a)
{
	int i, least = 0;

	if (!token_bytes || !hist_consistent(h))
		return -EINVAL;
	if (!h->count || !h->tokens)
		return -ENODATA;
	memset(a, 0, sizeof(*a));
	a->max_waste = max_waste;
	a->best = -1;
	for (i = 0; i < KV_ADVISE_NR; i++) {
		a->rows[i].block_tokens = advise_sizes[i];
		advise_row(h, token_bytes, &a->rows[i]);
		if (a->rows[i].waste <= max_waste + 1e-12)
			a->best = i;
		if (a->rows[i].waste <= a->rows[least].waste + 1e-12)
			least = i;
	}
	a->within = a->best >= 0;
	if (!a->within)
		a->best = least;
	return 0;
}

static void histogram_print(const struct kv_seqlen_hist *h, FILE *f)
{
	char range[32];
	unsigned int i;

	fprintf(f, "  %-22s %10s\n", "tokens", "sequences");
	for (i = 0; i < KV_SEQLEN_BUCKETS; i++) {
		if (!h->bucket[i])
			continue;
		bucket_label(i, range, sizeof(range));
		fprintf(f, "  %-22s %10llu\n", range, (unsigned long long)h->bucket[i]);
	}
}

static void size_text(uint64_t bytes, char *buf, size_t len)
{
	if (bytes >= 1ull << 20 && !(bytes & ((1ull << 20) - 1)))
		snprintf(buf, len, "%llu MiB", (unsigned long long)(bytes >> 20));
	else
		snprintf(buf, len, "%llu KiB", (unsigned long long)(bytes >> 10));
}

/**
 * kv_advise_print() - the advice, as `kvmemctl advise' shows it
 * @h:            the histogram it came from
 * @a:            the advice, from kv_advise()
 * @block_tokens: the pool's block size now
 * @pool:         the pool's name
 * @f:            where to write: a summary, the length histogram, a table
 *                of the candidates, and the advice with its reasons
 */
void kv_advise_print(const struct kv_seqlen_hist *h, const struct kv_advice *a,
		     uint32_t block_tokens, const char *pool, FILE *f)
{
	const struct kv_advice_row *best = &a->rows[a->best];
	char frame[32], bt[24];
	int i;

	fprintf(f, "Pool %s: %llu sequences ended, %llu tokens (mean %.1f, longest %llu); block_tokens %u now\n",
		pool, (unsigned long long)h->count, (unsigned long long)h->tokens,
		(double)h->tokens / (double)h->count, (unsigned long long)h->max, block_tokens);
	histogram_print(h, f);
	fprintf(f, "  %-12s %12s %16s %10s %8s\n", "block_tokens", "blocks/seq",
		"empty slots/seq", "frame", "waste");
	for (i = 0; i < KV_ADVISE_NR; i++) {
		const struct kv_advice_row *r = &a->rows[i];

		snprintf(bt, sizeof(bt), "%u%s", r->block_tokens,
			 r->block_tokens == block_tokens ? " (now)" : "");
		size_text(r->frame_bytes, frame, sizeof(frame));
		fprintf(f, "  %-12s %12.1f %16.1f %10s %7.1f%%\n", bt,
			(double)r->blocks / (double)h->count,
			(double)r->unused / (double)h->count, frame, 100.0 * r->waste);
	}
	if (a->within)
		fprintf(f, "advice: %sblock_tokens = %u, the largest block that keeps the waste "
			"(empty slots in each sequence's last block, and blocks rounded up to "
			"4 KiB frames) within %.0f%% of the KV memory: %.1f%% here.\n",
			best->block_tokens == block_tokens ? "keep " : "", best->block_tokens,
			100.0 * a->max_waste, 100.0 * best->waste);
	else
		fprintf(f, "advice: %sblock_tokens = %u: no block size keeps the waste within "
			"%.0f%% of the KV memory; this one wastes least (%.1f%%).\n",
			best->block_tokens == block_tokens ? "keep " : "", best->block_tokens,
			100.0 * a->max_waste, 100.0 * best->waste);
	fprintf(f, "  Larger blocks mean fewer per sequence: shorter block tables, fewer "
		"allocations and block-boundary steps, fewer and larger swap I/Os. Smaller "
		"ones leave fewer slots empty and cache shared prefixes in finer steps "
		"(only whole blocks are cached).\n");
	if (best->block_tokens != block_tokens)
		fprintf(f, "  To use it: pool.%s.block_tokens = %u in kvmemd.conf (needs a restart).\n",
			pool, best->block_tokens);
}
