// SPDX-License-Identifier: MIT
/*
 * Quantized KV on the CPU: widening a block's INT8, FP8 or INT4 values to
 * float for decode and prefill, and the quantizing append (kernels/quant.h
 * gives the rounding, struct kv_append_args the scale rules).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/quant.h"
#include "kernels/simd.h"

/* the 16-value loops below and decode's tile layout assume it */
_Static_assert(KV_LANES == 16, "kv_dequant_rows() writes 16 dims per chunk");

static inline size_t kv_dst_at(size_t t, uint32_t d, size_t row_stride,
			       size_t chunk_stride)
{
	return t * row_stride + (d / 16) * chunk_stride + d % 16;
}

/* Widen @r INT8 or FP8 rows from @src, each value times @scale. */
static void kv_dequant8_rows(uint32_t dtype, const uint8_t *src, uint32_t hd,
			     uint32_t r, float scale, float *dst,
			     size_t row_stride, size_t chunk_stride)
{
	uint32_t t, d, i;

	for (t = 0; t < r; t++, src += hd) {
		for (d = 0; d < hd; d += 16) {
			float *o = dst + kv_dst_at(t, d, row_stride, chunk_stride);

			if (dtype == KV_DTYPE_INT8) {
				KV_SIMD
				for (i = 0; i < 16; i++)
					o[i] = (float)(int8_t)src[d + i] * scale;
			} else {
				for (i = 0; i < 16; i++)
					o[i] = kv_fp8_to_f32(src[d + i]) * scale;
			}
		}
	}
}

/* Widen @r INT4 rows from @src with their binary16 scales @sc. */
static void kv_dequant4_rows(const uint8_t *src, const uint16_t *sc, uint32_t hd,
			     uint32_t r, float *dst, size_t row_stride,
			     size_t chunk_stride)
{
	uint32_t groups = hd / KV_INT4_GROUP, t, d, i;

	for (t = 0; t < r; t++, src += hd / 2, sc += groups) {
		for (d = 0; d < hd; d += 16) {
			float s = kv_f16_to_f32(sc[d / KV_INT4_GROUP]);
			float *o = dst + kv_dst_at(t, d, row_stride, chunk_stride);
			const uint8_t *b = src + d / 2;

			for (i = 0; i < 16; i += 2) {
				o[i] = (float)((int)(b[i / 2] & 15) - 8) * s;
				o[i + 1] = (float)((int)(b[i / 2] >> 4) - 8) * s;
			}
		}
	}
}

/**
 * kv_dequant_rows() - widen token vectors of a quantized block to float
 * @g:     geometry (quantized dtype)
 * @block: the block (its frame)
 * @layer: layer
 * @kv:    KV_K or KV_V
 * @head:  kv head
 * @tok:   first token in the block
 * @r:     tokens, tok + r <= block_tokens
 * @dst:   output, see kernels/quant.h
 * @row_stride, @chunk_stride: where row t, dims 16c.. go
 */
void kv_dequant_rows(const struct kv_geometry *g, const char *block,
		     uint32_t layer, uint32_t kv, uint32_t head, uint32_t tok,
		     uint32_t r, float *dst, size_t row_stride, size_t chunk_stride)
{
	const uint8_t *src = (const uint8_t *)block +
			     kv_elem_offset(g, layer, kv, head, tok);
	const char *sc = block + kv_scale_offset(g, layer, kv, head);

	if (g->dtype == KV_DTYPE_INT4) {
		kv_dequant4_rows(src, (const uint16_t *)sc +
				 (size_t)tok * (g->head_dim / KV_INT4_GROUP),
				 g->head_dim, r, dst, row_stride, chunk_stride);
		return;
	}
	float scale;

	memcpy(&scale, sc, sizeof(scale));
	kv_dequant8_rows(g->dtype, src, g->head_dim, r, scale, dst, row_stride,
			 chunk_stride);
}

/* ---- append ------------------------------------------------------------- */

struct kv_quant_job {
	const struct kv_append_args *a;
	uint32_t io;		/* dtype of k and v */
	uint32_t *start;	/* [nruns] first token of each run */
	uint32_t *end;		/* [nruns] one past its last */
	uint32_t nruns;
};

static inline uint64_t kv_slot_frame(const struct kv_append_args *a, uint32_t t)
{
	return (uint64_t)a->slots[t] / a->arena.g.block_tokens;
}

/* The input vector of token @t, head @h, K or V. */
static inline const void *kv_quant_src(const struct kv_quant_job *job,
				       uint32_t kv, uint32_t t, uint32_t h)
{
	const struct kv_geometry *g = &job->a->arena.g;
	size_t off = ((size_t)t * g->kv_heads + h) * g->head_dim *
		     kv_dtype_size(job->io);

	return (const char *)(kv == KV_K ? job->a->k : job->a->v) + off;
}

/* INT4: each token's groups on their own. */
static void kv_quant4_token(const struct kv_quant_job *job, uint32_t t)
{
	const struct kv_append_args *a = job->a;
	const struct kv_geometry *g = &a->arena.g;
	uint32_t groups = g->head_dim / KV_INT4_GROUP, h, kv, gi, i;
	uint64_t frame = kv_slot_frame(a, t);
	uint32_t tok = (uint32_t)((uint64_t)a->slots[t] % g->block_tokens);
	char *block = (char *)a->arena.base + frame * kv_frame_bytes(g);

	for (kv = KV_K; kv <= KV_V; kv++) {
		for (h = 0; h < g->kv_heads; h++) {
			const void *x = kv_quant_src(job, kv, t, h);
			uint8_t *dst = (uint8_t *)block +
				       kv_elem_offset(g, a->layer, kv, h, tok);
			uint16_t *sc = (uint16_t *)(block + kv_scale_offset(g, a->layer, kv, h)) +
				       (size_t)tok * groups;

			for (gi = 0; gi < groups; gi++) {
				float v[KV_INT4_GROUP], amax = 0.0f, inv;

				for (i = 0; i < KV_INT4_GROUP; i++) {
					v[i] = kv_load_f32(x, job->io, gi * KV_INT4_GROUP + i);
					amax = fmaxf(amax, fabsf(v[i]));
				}
				sc[gi] = kv_int4_scale(amax);
				inv = kv_quant_inv(kv_f16_to_f32(sc[gi]));
				for (i = 0; i < KV_INT4_GROUP; i += 2) {
					int lo = kv_quant_int(v[i], inv, KV_INT4_QMAX) + 8;
					int hi = kv_quant_int(v[i + 1], inv, KV_INT4_QMAX) + 8;

					dst[(gi * KV_INT4_GROUP + i) / 2] = (uint8_t)(lo | hi << 4);
				}
			}
		}
	}
}

/* INT8/FP8: one run of tokens [t0, t1) into one frame, head @h, K or V. */
static void kv_quant8_run(const struct kv_quant_job *job, uint32_t t0,
			  uint32_t t1, uint32_t kv, uint32_t h)
{
	const struct kv_append_args *a = job->a;
	const struct kv_geometry *g = &a->arena.g;
	uint32_t hd = g->head_dim, bt = g->block_tokens, t, d;
	char *block = (char *)a->arena.base + kv_slot_frame(a, t0) * kv_frame_bytes(g);
	uint8_t *vals = (uint8_t *)block + kv_elem_offset(g, a->layer, kv, h, 0);
	char *scp = block + kv_scale_offset(g, a->layer, kv, h);
	float qmax = kv_quant_qmax(g->dtype), amax = 0.0f, old, scale, inv;
	int fresh = 0;

	for (t = t0; t < t1; t++) {
		const void *x = kv_quant_src(job, kv, t, h);

		fresh |= (uint64_t)a->slots[t] % bt == 0;
		for (d = 0; d < hd; d++)
			amax = fmaxf(amax, fabsf(kv_load_f32(x, job->io, d)));
	}
	memcpy(&old, scp, sizeof(old));
	fresh |= !(old >= 0.0f && old < INFINITY);	/* never written: garbage */
	scale = amax / qmax;
	if (!fresh && !(scale > old)) {
		scale = old;
	} else if (!fresh) {
		/* the scale grows: requantize the block's values to it */
		float ratio = old / scale;

		for (d = 0; d < (size_t)bt * hd; d++)
			vals[d] = kv_quant8(g->dtype, kv_dequant8(g->dtype, vals[d]), ratio);
	}
	memcpy(scp, &scale, sizeof(scale));
	inv = kv_quant_inv(scale);
	for (t = t0; t < t1; t++) {
		const void *x = kv_quant_src(job, kv, t, h);
		uint8_t *dst = vals + (size_t)((uint64_t)a->slots[t] % bt) * hd;

		for (d = 0; d < hd; d++)
			dst[d] = kv_quant8(g->dtype, kv_load_f32(x, job->io, d), inv);
	}
}

static void kv_quant8_item(void *arg, uint64_t i)
{
	const struct kv_quant_job *job = arg;
	uint32_t heads = job->a->arena.g.kv_heads;
	uint32_t run = (uint32_t)(i / (2 * heads)), kv = (uint32_t)(i / heads % 2);

	kv_quant8_run(job, job->start[run], job->end[run], kv, (uint32_t)(i % heads));
}

static void kv_quant4_item(void *arg, uint64_t t)
{
	const struct kv_quant_job *job = arg;

	if (job->a->slots[t] >= 0)
		kv_quant4_token(job, (uint32_t)t);
}

static int kv_cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

/*
 * Cut the tokens into runs: consecutive slots in one frame, padding
 * dropped and ending a run; -EINVAL when a frame has two runs.
 */
static int kv_quant_runs(struct kv_quant_job *job)
{
	const struct kv_append_args *a = job->a;
	uint64_t *frames;
	uint32_t t, n = 0, i;
	int err = 0;

	job->start = malloc(sizeof(*job->start) * ((size_t)a->tokens + 1));
	job->end = malloc(sizeof(*job->end) * ((size_t)a->tokens + 1));
	frames = malloc(sizeof(*frames) * ((size_t)a->tokens + 1));
	if (!job->start || !job->end || !frames) {
		free(frames);
		return -ENOMEM;
	}
	for (t = 0; t < a->tokens; t++) {
		if (a->slots[t] < 0)
			continue;
		if (n && job->end[n - 1] == t && kv_slot_frame(a, t) == frames[n - 1]) {
			job->end[n - 1] = t + 1;
			continue;
		}
		frames[n] = kv_slot_frame(a, t);
		job->start[n] = t;
		job->end[n++] = t + 1;
	}
	job->nruns = n;
	qsort(frames, n, sizeof(*frames), kv_cmp_u64);
	for (i = 1; i < n; i++)
		if (frames[i] == frames[i - 1])
			err = -EINVAL;
	free(frames);
	return err;
}

/**
 * kv_append_quant_cpu() - the append of a quantized pool
 * @a: arguments, already checked by kv_append_cpu() (slots in the arena)
 *
 * Return: 0, -EINVAL for a frame written by two runs (nothing written),
 * -ENOMEM.
 */
int kv_append_quant_cpu(const struct kv_append_args *a)
{
	struct kv_quant_job job = { .a = a, .io = kv_io_dtype(&a->arena.g, a->io_dtype) };
	int err;

	if (a->arena.g.dtype == KV_DTYPE_INT4) {
		kv_parallel_for(a->tokens, a->threads, 64, kv_quant4_item, &job);
		return 0;
	}
	err = kv_quant_runs(&job);
	if (!err)
		kv_parallel_for((uint64_t)job.nruns * 2 * a->arena.g.kv_heads, a->threads,
				16, kv_quant8_item, &job);
	free(job.start);
	free(job.end);
	return err;
}
