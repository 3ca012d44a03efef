// SPDX-License-Identifier: MIT
/*
 * --check: "cached attention equals uncached". Every forward pass of the
 * cached path is done again by the same model with a different attention:
 * each sequence keeps its own K and V in a plain dense array (struct
 * kvd_ref), computed from its token ids by this second pass and never
 * read from or written to the pool; attention is a plain double-precision
 * softmax over all of the sequence's tokens. Tokens the cached path took
 * from the prefix cache are computed here from their ids; a fork copies
 * the array, a truncation shortens it.
 *
 * q, K, V and the attention output are rounded to the activations' dtype
 * (kvd_io_dtype(): the pool's, or bf16 over a quantized pool) at the same
 * points as in the cached pass, so the comparison measures the cache
 * (blocks, slots, tables, copy-on-write, prefix sharing, demotion, swap,
 * truncation), not fp16 rounding. The logits of every row that has them
 * must agree within KVD_TOLERANCE: the largest difference, relative to the
 * largest magnitude of the row's reference logits. A quantized pool also
 * rounds K and V to its 8 or 4 bits, which the reference does not; its
 * tolerance is wider (kvd_check_tolerance()).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvdemo.h"

/**
 * struct kvd_ref - one sequence's K and V, dense
 * @len:    positions computed
 * @cap:    positions allocated
 * @stride: floats per position: layers x (K, V) x kv_heads x head_dim
 * @kv:     [cap][layers][2][kv_heads * head_dim]
 */
struct kvd_ref {
	uint32_t len;
	uint32_t cap;
	uint32_t stride;
	float *kv;
};

/** kvd_ref_new() - an empty dense K/V store for a model of shape @cfg */
struct kvd_ref *kvd_ref_new(const struct kvd_model_cfg *cfg)
{
	struct kvd_ref *r = calloc(1, sizeof(*r));

	if (r)
		r->stride = cfg->layers * 2 * cfg->kv_heads * cfg->head_dim;
	return r;
}

/** kvd_ref_clone() - a copy of @r (a fork); NULL when out of memory */
struct kvd_ref *kvd_ref_clone(const struct kvd_ref *r)
{
	struct kvd_ref *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	*n = *r;
	n->kv = NULL;
	if (r->cap) {
		n->kv = malloc((size_t)r->cap * r->stride * sizeof(float));
		if (!n->kv) {
			free(n);
			return NULL;
		}
		memcpy(n->kv, r->kv, (size_t)r->len * r->stride * sizeof(float));
	}
	return n;
}

/** kvd_ref_truncate() - keep the first @len positions */
void kvd_ref_truncate(struct kvd_ref *r, uint32_t len)
{
	if (len < r->len)
		r->len = len;
}

/** kvd_ref_free() - free a dense K/V store; NULL is ignored */
void kvd_ref_free(struct kvd_ref *r)
{
	if (!r)
		return;
	free(r->kv);
	free(r);
}

static int ref_grow(struct kvd_ref *r, uint32_t pos)
{
	return kvd_grow(&r->kv, &r->cap, pos < 64 ? 64 : (uint64_t)pos + 1,
			(size_t)r->stride * sizeof(float));
}

static int ref_store(void *ctx, uint32_t layer, const struct kvd_batch *b, const void *k,
		     const void *v)
{
	const struct kvd_check *ck = ctx;
	const struct kvd_model_cfg *c = &ck->m->cfg;
	size_t kvd = (size_t)c->kv_heads * c->head_dim, esz = kv_dtype_size(ck->dtype);
	struct kvd_ref *ref;
	uint32_t r;
	float *p;

	for (r = 0; r < b->nr_rows; r++) {
		ref = b->seqs[b->rows[r].seq].ref;
		if (ref_grow(ref, b->rows[r].pos))
			return -ENOMEM;
		p = ref->kv + (size_t)b->rows[r].pos * ref->stride + layer * 2 * kvd;
		kvd_from_dtype(ck->dtype, (const char *)k + r * kvd * esz, p, kvd);
		kvd_from_dtype(ck->dtype, (const char *)v + r * kvd * esz, p + kvd, kvd);
	}
	return 0;
}

/*
 * Dense causal attention of one query head over positions 0..pos, in
 * double precision: scores, softmax, then the weighted sum of V.
 */
KVD_CLONES
static void ref_head(const struct kvd_model_cfg *c, const struct kvd_ref *ref, uint32_t layer,
		     uint32_t kvh, uint32_t pos, const float *q, double *score, float *out)
{
	size_t kvd = (size_t)c->kv_heads * c->head_dim, base = layer * 2 * kvd + kvh * c->head_dim;
	double scale = 1.0 / sqrt((double)c->head_dim), max = -INFINITY, sum = 0, acc;
	double o[KV_MAX_HEAD_DIM];
	const float *kj, *vj;
	uint32_t j, d, hd = c->head_dim;

	for (j = 0; j <= pos; j++) {
		kj = ref->kv + (size_t)j * ref->stride + base;
		acc = 0;
#pragma omp simd reduction(+ : acc)
		for (d = 0; d < hd; d++)
			acc += (double)q[d] * kj[d];
		score[j] = acc * scale;
		if (score[j] > max)
			max = score[j];
	}
	for (d = 0; d < hd; d++)
		o[d] = 0;
	for (j = 0; j <= pos; j++) {
		score[j] = exp(score[j] - max);
		sum += score[j];
		vj = ref->kv + (size_t)j * ref->stride + base + kvd;
#pragma omp simd
		for (d = 0; d < hd; d++)
			o[d] += score[j] * vj[d];
	}
	for (d = 0; d < hd; d++)
		out[d] = (float)(o[d] / sum);
}

static int ref_attend(void *ctx, uint32_t layer, const struct kvd_batch *b, const void *q,
		      void *out)
{
	const struct kvd_check *ck = ctx;
	const struct kvd_model_cfg *c = &ck->m->cfg;
	size_t qd = (size_t)c->q_heads * c->head_dim, esz = kv_dtype_size(ck->dtype);
	uint32_t r, h, group = c->q_heads / c->kv_heads, maxpos = 0;
	float *qf, *of;
	double *score;
	int err = -ENOMEM;

	for (r = 0; r < b->nr_rows; r++)
		if (b->rows[r].pos > maxpos)
			maxpos = b->rows[r].pos;
	qf = malloc(2 * qd * sizeof(float));
	score = malloc(((size_t)maxpos + 1) * sizeof(double));
	if (!qf || !score)
		goto out_free;
	of = qf + qd;
	for (r = 0; r < b->nr_rows; r++) {
		kvd_from_dtype(ck->dtype, (const char *)q + r * qd * esz, qf, qd);
		for (h = 0; h < c->q_heads; h++)
			ref_head(c, b->seqs[b->rows[r].seq].ref, layer, h / group, b->rows[r].pos,
				 qf + (size_t)h * c->head_dim, score, of + (size_t)h * c->head_dim);
		kvd_to_dtype(ck->dtype, of, (char *)out + r * qd * esz, qd);
	}
	err = 0;
out_free:
	free(qf);
	free(score);
	return err;
}

static const struct kvd_attn_ops ref_ops = {
	.store = ref_store,
	.attend = ref_attend,
};

/**
 * kvd_check_tolerance() - the largest relative logit error --check accepts
 * over a pool of @pool_dtype
 */
double kvd_check_tolerance(uint32_t pool_dtype)
{
	switch (pool_dtype) {
	case KV_DTYPE_INT8:
		return KVD_TOLERANCE_INT8;
	case KV_DTYPE_FP8_E4M3:
		return KVD_TOLERANCE_FP8;
	case KV_DTYPE_INT4:
		return KVD_TOLERANCE_INT4;
	default:
		return KVD_TOLERANCE;
	}
}

/**
 * kvd_check_init() - set up --check
 * @ck:         filled in
 * @m:          the model (shared with the cached path)
 * @pool_dtype: the pool's KV dtype
 *
 * Return: 0.
 */
int kvd_check_init(struct kvd_check *ck, const struct kvd_model *m, uint32_t pool_dtype)
{
	memset(ck, 0, sizeof(*ck));
	ck->m = m;
	ck->dtype = kvd_io_dtype(pool_dtype);
	ck->tol = kvd_check_tolerance(pool_dtype);
	return 0;
}

/** kvd_check_free() - free what --check allocated (not the refs) */
void kvd_check_free(struct kvd_check *ck)
{
	kvd_work_free(&ck->w);
	free(ck->batch.rows);
	free(ck->batch.logits);
	free(ck->map);
	memset(ck, 0, sizeof(*ck));
}

static int check_reserve(struct kvd_check *ck, uint32_t rows, uint32_t logits)
{
	size_t vocab = ck->m->cfg.vocab;
	void *p;

	if (rows > ck->rows_cap) {
		p = realloc(ck->batch.rows, rows * sizeof(*ck->batch.rows));
		if (!p)
			return -ENOMEM;
		ck->batch.rows = p;
		ck->rows_cap = rows;
	}
	if (logits > ck->logits_cap) {
		p = realloc(ck->batch.logits, logits * vocab * sizeof(float));
		if (!p)
			return -ENOMEM;
		ck->batch.logits = p;
		p = realloc(ck->map, logits * sizeof(*ck->map));
		if (!p)
			return -ENOMEM;
		ck->map = p;
		ck->logits_cap = logits;
	}
	return 0;
}

/*
 * The reference batch: for each sequence of @b, every position from what
 * its dense store holds up to its last row in @b (more than @b's rows
 * where the cached path found a prefix in the cache).
 */
/*
 * Whether rows @k .. @r - 1 of @b (one sequence's) that lie below @len,
 * what the dense store holds, want no logits: they are known tokens that
 * the cached path computes again after a preemption freed the sequence,
 * and are not recomputed here
 */
static bool known_rows_ok(const struct kvd_batch *b, uint32_t k, uint32_t r, uint32_t len)
{
	for (; k < r && b->rows[k].pos < len; k++)
		if (b->rows[k].logits >= 0)
			return false;
	return true;
}

static int check_build(struct kvd_check *ck, const struct kvd_batch *b)
{
	uint32_t r = 0, n = 0, nl = 0, s, p, first, last, k;
	struct kvd_row *row;
	int err;

	for (k = 0; k < b->nr_rows; k = r) {
		s = b->rows[k].seq;
		for (r = k; r < b->nr_rows && b->rows[r].seq == s; r++)
			;
		if (!known_rows_ok(b, k, r, b->seqs[s].ref->len)) {
			fprintf(stderr, "kvdemo: --check: request %u: dense store at %u tokens, "
				"the step starts at %u\n", b->seqs[s].who, b->seqs[s].ref->len,
				b->rows[k].pos);
			return -EUCLEAN;
		}
		first = b->seqs[s].ref->len;
		last = b->rows[r - 1].pos;
		if (last < first)	/* known tokens only */
			continue;
		err = check_reserve(ck, n + last - first + 1, nl + (r - k));
		if (err)
			return err;
		for (p = first; p <= last; p++) {
			row = &ck->batch.rows[n++];
			*row = (struct kvd_row){ .token = b->seqs[s].tokens[p], .pos = p,
						 .seq = s, .slot = -1, .logits = -1 };
			if (p >= b->rows[k].pos && b->rows[k + p - b->rows[k].pos].logits >= 0) {
				ck->map[nl] = b->rows[k + p - b->rows[k].pos].logits;
				row->logits = (int32_t)nl++;
			}
		}
	}
	ck->batch.nr_rows = n;
	ck->batch.nr_logits = nl;
	ck->batch.seqs = b->seqs;
	ck->batch.nr_seqs = b->nr_seqs;
	return 0;
}

/* Relative difference of two logit rows; NaN anywhere compares as 1e30. */
static double logits_error(const float *got, const float *want, uint32_t n)
{
	double diff = 0, mag = 0, d;
	uint32_t i;

	for (i = 0; i < n; i++) {
		d = fabs((double)got[i] - want[i]);
		if (isnan(d))
			return 1e30;
		if (d > diff)
			diff = d;
		if (fabs(want[i]) > mag)
			mag = fabs(want[i]);
	}
	return mag > 1e-6 ? diff / mag : diff;
}

static int check_compare(struct kvd_check *ck, const struct kvd_batch *b)
{
	uint32_t vocab = ck->m->cfg.vocab, i, r;
	const struct kvd_row *row;
	double e;

	for (r = 0; r < ck->batch.nr_rows; r++) {
		row = &ck->batch.rows[r];
		if (row->logits < 0)
			continue;
		i = (uint32_t)row->logits;
		e = logits_error(b->logits + (size_t)ck->map[i] * vocab,
				 ck->batch.logits + (size_t)i * vocab, vocab);
		ck->rows++;
		if (e > ck->max_err)
			ck->max_err = e;
		if (!(e <= ck->tol)) {
			fprintf(stderr, "kvdemo: --check: request %u, token %u: logits differ from "
				"the dense recomputation by %.3g (relative; tolerance %g)\n",
				b->seqs[row->seq].who, row->pos, e, ck->tol);
			return -EUCLEAN;
		}
	}
	return 0;
}

/**
 * kvd_check_batch() - recompute a cached pass densely and compare logits
 * @ck: --check state
 * @b:  the batch the cached path just ran (its logits filled in); rows of
 *      one sequence consecutive, in position order
 *
 * Each sequence's dense store then holds every position up to its last
 * row, as the cache does.
 *
 * Return: 0, -EUCLEAN (a mismatch, printed), -ENOMEM.
 */
int kvd_check_batch(struct kvd_check *ck, const struct kvd_batch *b)
{
	uint32_t r;
	int err;

	err = check_build(ck, b);
	if (!err)
		err = kvd_forward(ck->m, &ck->w, ck->dtype, &ck->batch, &ref_ops, ck);
	if (err)
		return err;
	for (r = 0; r < ck->batch.nr_rows; r++) {
		struct kvd_ref *ref = b->seqs[ck->batch.rows[r].seq].ref;

		if (ck->batch.rows[r].pos + 1 > ref->len)
			ref->len = ck->batch.rows[r].pos + 1;
	}
	return check_compare(ck, b);
}
