// SPDX-License-Identifier: MIT
/*
 * Paged decode attention on the CPU: one query token per sequence against
 * the K and V of one layer, read block by block through a block table.
 *
 * Work is split by (sequence, kv head): the query heads of one GQA group are
 * handled together, so each K and V vector is read from the arena once and
 * used by every query head of its group. Tokens are taken in chunks of at
 * most KV_CPU_CHUNK inside a block, widened to float, and folded into a
 * running (online) softmax in float arithmetic.
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/dtype.h"
#include "kernels/simd.h"

#define KV_CPU_CHUNK	32u

struct kv_decode_job {
	const struct kv_decode_args *a;
	__u32 group;
	_Atomic int err;
};

/* Widen @n elements of @dtype to float. */
static KV_SIMD_CLONES void kv_widen(float *restrict dst,
				    const void *restrict src, __u32 dtype,
				    __u32 n)
{
	__u32 i;

	if (dtype == KV_DTYPE_BF16) {
		const uint16_t *s = src;

		KV_SIMD
		for (i = 0; i < n; i++)
			dst[i] = kv_bf16_to_f32(s[i]);
	} else if (dtype == KV_DTYPE_FP16) {
		const uint16_t *s = src;

		KV_SIMD
		for (i = 0; i < n; i++)
			dst[i] = kv_f16_to_f32(s[i]);
	} else {
		memcpy(dst, src, (size_t)n * sizeof(float));
	}
}

/*
 * Fold @n tokens (K rows @kf, V rows @vf, @hd floats each) into the running
 * softmax state of @group query heads: max @m, sum @l, unnormalized
 * output @acc ([group][hd]). @qf holds the scaled queries, @s is scratch.
 */
static KV_SIMD_CLONES void kv_decode_fold(const float *restrict qf,
					  const float *restrict kf,
					  const float *restrict vf, __u32 n,
					  __u32 hd, __u32 group,
					  float *restrict m, float *restrict l,
					  float *restrict acc,
					  float *restrict s)
{
	__u32 j, t, d;

	for (j = 0; j < group; j++) {
		const float *q = qf + (size_t)j * hd;
		float *o = acc + (size_t)j * hd;
		float mx = m[j], c, sum = 0.0f;

		for (t = 0; t < n; t++) {
			const float *k = kf + (size_t)t * hd;
			float dot = 0.0f;

			KV_SIMD_SUM(dot)
			for (d = 0; d < hd; d++)
				dot += q[d] * k[d];
			s[t] = dot;
			if (dot > mx)
				mx = dot;
		}
		c = expf(m[j] - mx);
		for (t = 0; t < n; t++) {
			s[t] = expf(s[t] - mx);
			sum += s[t];
		}
		l[j] = l[j] * c + sum;
		m[j] = mx;
		if (c != 1.0f) {
			KV_SIMD
			for (d = 0; d < hd; d++)
				o[d] *= c;
		}
		for (t = 0; t < n; t++) {
			const float *v = vf + (size_t)t * hd;
			float p = s[t];

			KV_SIMD
			for (d = 0; d < hd; d++)
				o[d] += p * v[d];
		}
	}
}

static void kv_decode_item(void *arg, uint64_t item)
{
	struct kv_decode_job *job = arg;
	const struct kv_decode_args *a = job->a;
	const struct kv_geometry *g = &a->arena.g;
	__u32 group = job->group, hd = g->head_dim, bt = g->block_tokens;
	__u32 b = (__u32)(item / g->kv_heads), h = (__u32)(item % g->kv_heads);
	__u32 ctx = a->ctx_lens[b], t, j, d;
	__u32 start = a->window && ctx > a->window ? ctx - a->window : 0;
	__u32 esz = kv_dtype_size(g->dtype), chunk = bt < KV_CPU_CHUNK ? bt : KV_CPU_CHUNK;
	__u64 fb = kv_frame_bytes(g), qoff = ((__u64)b * a->q_heads + (__u64)h * group) * hd;
	const __u32 *table = a->block_table + (size_t)b * a->table_stride;
	const char *base = a->arena.base;
	float *qf, *acc, *kf, *vf, *m, *l, *s;

	qf = malloc(sizeof(float) * ((size_t)2 * group * hd + 2 * (size_t)chunk * hd +
				     chunk + 2 * (size_t)group));
	if (!qf) {
		atomic_store(&job->err, -ENOMEM);
		return;
	}
	acc = qf + (size_t)group * hd;
	kf = acc + (size_t)group * hd;
	vf = kf + (size_t)chunk * hd;
	s = vf + (size_t)chunk * hd;
	m = s + chunk;
	l = m + group;

	kv_widen(qf, (const char *)a->q + qoff * esz, g->dtype, group * hd);
	for (d = 0; d < group * hd; d++)
		qf[d] *= a->scale;
	memset(acc, 0, sizeof(float) * group * hd);
	for (j = 0; j < group; j++) {
		m[j] = -INFINITY;
		l[j] = 0.0f;
	}

	for (t = start; t < ctx;) {
		__u32 tib = t % bt, n = bt - tib;
		const char *frame = base + table[t / bt] * fb;

		if (n > chunk)
			n = chunk;
		if (n > ctx - t)
			n = ctx - t;
		kv_widen(kf, frame + kv_elem_offset(g, a->layer, KV_K, h, tib),
			 g->dtype, n * hd);
		kv_widen(vf, frame + kv_elem_offset(g, a->layer, KV_V, h, tib),
			 g->dtype, n * hd);
		kv_decode_fold(qf, kf, vf, n, hd, group, m, l, acc, s);
		t += n;
	}

	for (j = 0; j < group; j++) {
		float inv = l[j] > 0.0f ? 1.0f / l[j] : 0.0f;

		for (d = 0; d < hd; d++)
			kv_store_f32(a->out, g->dtype, qoff + (__u64)j * hd + d,
				     acc[(size_t)j * hd + d] * inv);
	}
	free(qf);
}

/*
 * Data-dependent checks, before anything is written: every context fits its
 * block table and every frame it reads is inside the arena.
 */
static int kv_decode_check_tables(const struct kv_decode_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	__u32 b, i;

	for (b = 0; b < a->batch; b++) {
		const __u32 *table = a->block_table + (size_t)b * a->table_stride;
		__u32 ctx = a->ctx_lens[b];
		__u32 start = a->window && ctx > a->window ? ctx - a->window : 0;

		if ((__u64)ctx > (__u64)a->table_stride * g->block_tokens)
			return -EINVAL;
		if (!ctx)
			continue;
		for (i = start / g->block_tokens; i <= (ctx - 1) / g->block_tokens; i++)
			if (table[i] >= a->arena.frames)
				return -EINVAL;
	}
	return 0;
}

/**
 * kv_decode_cpu() - paged decode attention on the CPU
 * @a: arguments (see struct kv_decode_args)
 *
 * Return: 0, -EINVAL for bad arguments (nothing written), -ENOMEM.
 */
int kv_decode_cpu(const struct kv_decode_args *a)
{
	struct kv_decode_job job = { .a = a };
	const struct kv_geometry *g = &a->arena.g;
	__u64 items, per_item;
	int err;

	err = kv_decode_check(a);
	if (!err)
		err = kv_decode_check_tables(a);
	if (err) {
		if (a->status)
			*a->status = err;
		return err;
	}
	job.group = a->q_heads / g->kv_heads;
	atomic_init(&job.err, 0);
	items = (__u64)a->batch * g->kv_heads;
	/* a thread pays for itself above a few hundred KB of KV */
	per_item = 2 * kv_head_bytes(g) * (a->table_stride ? a->table_stride : 1);
	kv_parallel_for(items, a->threads, per_item >= (256u << 10) ? 1 :
			(256u << 10) / per_item + 1, kv_decode_item, &job);
	err = atomic_load(&job.err);
	if (err && a->status)
		*a->status = err;
	return err;
}
