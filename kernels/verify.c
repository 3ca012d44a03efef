// SPDX-License-Identifier: MIT
/*
 * Speculative verification on the CPU: greedy acceptance of draft tokens
 * against the target model's logits.
 *
 * For each sequence, rows 0, 1, ... of its logits are reduced to their
 * argmax until a row's argmax differs from the draft token it checks (or
 * the drafts run out): rows past the first rejection are never read.
 *
 * A row is scanned in chunks of KV_VERIFY_CHUNK elements, widened to float
 * (fp16 and bf16) into an L1-resident buffer. Each chunk gives its largest
 * value and whether it holds a NaN, in 16 independent lanes, so the loop
 * vectorizes without reordering floating-point results; only the chunk
 * that holds the winner is searched for its first index. The first NaN of
 * a row wins outright, so a chunk holding one ends the scan of its row.
 */
#include <errno.h>
#include <math.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/dtype.h"
#include "kernels/simd.h"

/* Elements of a row widened and reduced at a time (4 KiB of floats). */
#define KV_VERIFY_CHUNK	1024u

/* Independent max/NaN accumulators of kv_verify_chunk_max(). */
#define KV_VERIFY_LANES	16u

/* Widen @n elements of a 16-bit @dtype at @src into @dst. */
static void kv_verify_widen(float *restrict dst, const uint16_t *restrict src,
			    __u32 dtype, __u32 n)
{
	__u32 i;

	if (dtype == KV_DTYPE_FP16) {
		KV_SIMD
		for (i = 0; i < n; i++)
			dst[i] = kv_f16_to_f32(src[i]);
	} else {
		KV_SIMD
		for (i = 0; i < n; i++)
			dst[i] = kv_bf16_to_f32(src[i]);
	}
}

/*
 * Elements @c .. @c + @n - 1 of @row as floats: in place for fp32, else
 * widened into @buf (KV_VERIFY_CHUNK floats).
 */
static const float *kv_verify_chunk(float *buf, const void *row, __u32 dtype,
				    __u32 c, __u32 n)
{
	if (dtype == KV_DTYPE_FP32)
		return (const float *)row + c;
	kv_verify_widen(buf, (const uint16_t *)row + c, dtype, n);
	return buf;
}

/*
 * Largest non-NaN value of @x[0 .. n) (-INFINITY when there is none), and
 * in *@nan whether a NaN is present. The select keeps the accumulator on
 * a NaN and on an equal value, so the result is one of the elements.
 */
static float kv_verify_chunk_max(const float *x, __u32 n, int *nan)
{
	float lm[KV_VERIFY_LANES], m = -INFINITY;
	int ln[KV_VERIFY_LANES], any = 0;
	__u32 i, l;

	for (l = 0; l < KV_VERIFY_LANES; l++) {
		lm[l] = -INFINITY;
		ln[l] = 0;
	}
	for (i = 0; i + KV_VERIFY_LANES <= n; i += KV_VERIFY_LANES) {
		KV_SIMD
		for (l = 0; l < KV_VERIFY_LANES; l++) {
			float v = x[i + l];

			lm[l] = v > lm[l] ? v : lm[l];
			ln[l] |= v != v;
		}
	}
	for (; i < n; i++) {
		m = x[i] > m ? x[i] : m;
		any |= x[i] != x[i];
	}
	for (l = 0; l < KV_VERIFY_LANES; l++) {
		m = lm[l] > m ? lm[l] : m;
		any |= ln[l];
	}
	*nan = any;
	return m;
}

/* Index of the first element of @x[0 .. n) equal to @m, or of the first NaN when @m is NaN. */
static __u32 kv_verify_first(const float *x, __u32 n, float m)
{
	__u32 i;

	for (i = 0; i < n; i++)
		if (m != m ? x[i] != x[i] : x[i] == m)
			return i;
	return 0;	/* not reached: @m is an element of @x */
}

/**
 * kv_verify_argmax() - first index of the largest element of a row
 * @row:   @vocab elements of @dtype
 * @dtype: KV_DTYPE_*
 * @vocab: elements in the row, at least 1
 *
 * NaN counts as larger than any number: the first NaN wins.
 */
static __s32 kv_verify_argmax(const void *row, __u32 dtype, __u32 vocab)
{
	float buf[KV_VERIFY_CHUNK] __attribute__((aligned(64)));
	float best = -INFINITY, m;
	__u32 c, n, best_c = 0;
	const float *x;
	int nan;

	for (c = 0; c < vocab; c += n) {
		n = vocab - c < KV_VERIFY_CHUNK ? vocab - c : KV_VERIFY_CHUNK;
		x = kv_verify_chunk(buf, row, dtype, c, n);
		m = kv_verify_chunk_max(x, n, &nan);
		if (nan)
			return (__s32)(c + kv_verify_first(x, n, NAN));
		/* strictly larger: on a tie the earlier chunk keeps the lead */
		if (!c || m > best) {
			best = m;
			best_c = c;
		}
	}
	n = vocab - best_c < KV_VERIFY_CHUNK ? vocab - best_c : KV_VERIFY_CHUNK;
	x = kv_verify_chunk(buf, row, dtype, best_c, n);
	return (__s32)(best_c + kv_verify_first(x, n, best));
}

/* The drafts of sequence @b; NULL without any (max_draft 0, draft may be NULL) */
static const __s32 *kv_verify_draft(const struct kv_verify_args *a, __u32 b)
{
	return a->max_draft ? a->draft + (__u64)b * a->max_draft : NULL;
}

/*
 * Check the draft of sequence @b: its length at most max_draft, each of
 * its tokens inside the vocabulary. Return: 0 or -EINVAL.
 */
static int kv_verify_check_draft(const struct kv_verify_args *a, __u32 b)
{
	const __s32 *draft = kv_verify_draft(a, b);
	__u32 n = a->draft_lens[b], j;

	if (n > a->max_draft)
		return -EINVAL;
	for (j = 0; j < n; j++)
		if (draft[j] < 0 || (__u32)draft[j] >= a->vocab)
			return -EINVAL;
	return 0;
}

/* Verify sequence @b; Return: 0, or -EINVAL for a bad draft (accepted 0, next -1). */
static int kv_verify_seq(const struct kv_verify_args *a, __u32 b)
{
	__u64 row_bytes = (__u64)a->vocab * kv_dtype_size(a->dtype);
	const char *rows = (const char *)a->logits +
			   (__u64)b * ((__u64)a->max_draft + 1) * row_bytes;
	const __s32 *draft = kv_verify_draft(a, b);
	__u32 n = a->draft_lens[b], j;
	__s32 tok;
	int err = kv_verify_check_draft(a, b);

	if (err)
		goto bad;
	for (j = 0; ; j++) {
		tok = kv_verify_argmax(rows + j * row_bytes, a->dtype, a->vocab);
		if (j == n || draft[j] != tok)
			break;
	}
	a->accepted[b] = (__s32)j;
	a->next[b] = tok;
	return 0;
bad:
	a->accepted[b] = 0;
	a->next[b] = -1;
	return err;
}

/**
 * kv_verify_cpu() - greedy acceptance of speculative drafts on the CPU
 * @a: arguments (see struct kv_verify_args; host pointers)
 *
 * Writes accepted[b] and next[b] for every sequence. A sequence with a bad
 * draft (a length past max_draft, a token outside the vocabulary) gets
 * accepted 0 and next -1, and *status = -EINVAL when @status is set; the
 * others are verified all the same.
 *
 * Return: 0; -EINVAL for bad arguments (kv_verify_check(): nothing is
 * written) or when a sequence had a bad draft (every output written).
 */
int kv_verify_cpu(const struct kv_verify_args *a)
{
	__u32 b;
	int err = kv_verify_check(a), bad = 0;

	if (err)
		return err;
	for (b = 0; b < a->batch; b++) {
		err = kv_verify_seq(a, b);
		if (err)
			bad = err;
	}
	if (bad && a->status)
		*a->status = bad;
	return bad;
}
