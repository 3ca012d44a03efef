// SPDX-License-Identifier: MIT
/*
 * kvdemo's model: a Llama-shaped decoder-only transformer. Per layer:
 * RMSNorm, q/k/v projections, RoPE (the rotate-half form of Hugging Face
 * Llama), GQA attention (through the caller's struct kvd_attn_ops: the
 * paged cache, or --check's dense reference), the output projection, then
 * RMSNorm and a SwiGLU MLP, each added to the residual stream; a final
 * RMSNorm and the LM head give the logits.
 *
 * Every row's result depends on its own token, position and context only,
 * never on the other rows of the batch: products are summed in one fixed
 * order whatever the batch holds. So the tokens a run generates depend on
 * the seed alone, not on how the scheduler batched them.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/dtype.h"
#include "kernels/simd.h"
#include "kvdemo.h"

/*
 * Rows r0..r0+nr-1 (nr <= 4, a constant where it is inlined), columns
 * o..o+31 of y = (y +) x w, in registers over the whole of i.
 */
KV_INLINE void mm_tile(float *y, const float *x, const float *w, uint32_t r0, uint32_t nr,
			uint32_t o, uint32_t in, uint32_t out, bool acc)
{
	kv_v16f a0[4], a1[4], w0, w1;
	uint32_t r, i;
	float xv;

	for (r = 0; r < nr; r++) {
		a0[r] = acc ? kv_v16_load(y + (size_t)(r0 + r) * out + o) : (kv_v16f){ 0 };
		a1[r] = acc ? kv_v16_load(y + (size_t)(r0 + r) * out + o + 16) : (kv_v16f){ 0 };
	}
	for (i = 0; i < in; i++) {
		w0 = kv_v16_load(w + (size_t)i * out + o);
		w1 = kv_v16_load(w + (size_t)i * out + o + 16);
		for (r = 0; r < nr; r++) {
			xv = x[(size_t)(r0 + r) * in + i];
			a0[r] += xv * w0;
			a1[r] += xv * w1;
		}
	}
	for (r = 0; r < nr; r++) {
		kv_v16_store(y + (size_t)(r0 + r) * out + o, a0[r]);
		kv_v16_store(y + (size_t)(r0 + r) * out + o + 16, a1[r]);
	}
}

/*
 * y[rows][out] = x[rows][in] w[in][out], plus y's old value when @acc.
 * Every element is summed over i in order, starting from 0 or its old
 * value, whatever tile computes it: rows do not affect each other.
 */
KVD_CLONES
static void matmul(float *y, const float *x, const float *w, uint32_t rows, uint32_t in,
		   uint32_t out, bool acc)
{
	uint32_t r0, o, i;
	size_t yo;
	float s;

	for (o = 0; o + 32 <= out; o += 32) {
		for (r0 = 0; r0 + 4 <= rows; r0 += 4)
			mm_tile(y, x, w, r0, 4, o, in, out, acc);
		for (; r0 < rows; r0++)
			mm_tile(y, x, w, r0, 1, o, in, out, acc);
	}
	for (; o < out; o++) {
		for (r0 = 0; r0 < rows; r0++) {
			yo = (size_t)r0 * out + o;
			s = acc ? y[yo] : 0.0f;
			for (i = 0; i < in; i++)
				s += x[(size_t)r0 * in + i] * w[(size_t)i * out + o];
			y[yo] = s;
		}
	}
}

/** kvd_to_dtype() - round @n floats to a 16- or 32-bit dtype (KV_DTYPE_*) */
void kvd_to_dtype(uint32_t dtype, const float *src, void *dst, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		kv_store_f32(dst, dtype, i, src[i]);
}

/**
 * kvd_io_dtype() - the dtype of the model's q, K, V and attention output
 * over a pool of @pool_dtype: the pool's own, or bf16 for a quantized pool
 * (whose kernels quantize K and V as they store them and take bf16 or
 * fp16 activations; bf16 keeps float's range)
 */
uint32_t kvd_io_dtype(uint32_t pool_dtype)
{
	return kv_dtype_quantized(pool_dtype) ? KV_DTYPE_BF16 : pool_dtype;
}

/** kvd_from_dtype() - widen @n elements of a 16- or 32-bit dtype to float */
void kvd_from_dtype(uint32_t dtype, const void *src, float *dst, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		dst[i] = kv_load_f32(src, dtype, i);
}

/* Floats of each tensor, in kvd_model_tensors() order, and their sum. */
static uint64_t model_floats(const struct kvd_model_cfg *c)
{
	uint64_t qd = (uint64_t)c->q_heads * c->head_dim, kvd = (uint64_t)c->kv_heads * c->head_dim;
	uint64_t layer = 2 * c->dim + 2 * c->dim * qd + 2 * c->dim * kvd + 3 * c->dim * c->ffn;

	return 2 * (uint64_t)c->vocab * c->dim + c->dim + c->layers * layer;
}

/* Whether @c is a shape this program runs. */
static int model_cfg_check(const struct kvd_model_cfg *c)
{
	if (!c->vocab || c->vocab > KVD_VOCAB_MAX || !c->dim || c->dim > 65536 ||
	    !c->layers || c->layers > KV_MAX_LAYERS || !c->kv_heads ||
	    c->kv_heads > KV_MAX_KV_HEADS || !c->q_heads || c->q_heads % c->kv_heads ||
	    c->q_heads > 4096 || !c->head_dim || c->head_dim % 2 ||
	    c->head_dim > KV_MAX_HEAD_DIM || !c->ffn || c->ffn > (1u << 20) ||
	    !(c->rope_theta > 0) || !(c->norm_eps > 0))
		return -EINVAL;
	return model_floats(c) > (1ull << 32) ? -EFBIG : 0;
}

/**
 * kvd_model_init() - allocate the weights of a model of shape @cfg
 * @m:   the model, filled in (weights zero)
 * @cfg: shape
 *
 * Return: 0, -EINVAL (a shape out of range: q_heads not a multiple of
 * kv_heads, an odd head_dim, ...), -EFBIG (over 2^32 parameters),
 * -ENOMEM.
 */
int kvd_model_init(struct kvd_model *m, const struct kvd_model_cfg *cfg)
{
	uint64_t qd = (uint64_t)cfg->q_heads * cfg->head_dim;
	uint64_t kvd = (uint64_t)cfg->kv_heads * cfg->head_dim;
	float *p;
	uint32_t l;
	int err;

	memset(m, 0, sizeof(*m));
	err = model_cfg_check(cfg);
	if (err)
		return err;
	m->cfg = *cfg;
	m->params = model_floats(cfg);
	p = calloc(m->params, sizeof(float));
	m->layers = calloc(cfg->layers, sizeof(*m->layers));
	m->inv_freq = calloc(cfg->head_dim / 2, sizeof(*m->inv_freq));
	if (!p || !m->layers || !m->inv_freq) {
		free(p);
		kvd_model_free(m);
		return -ENOMEM;
	}
	m->embed = p;
	p += (size_t)cfg->vocab * cfg->dim;
	for (l = 0; l < cfg->layers; l++) {
		struct kvd_layer *ly = &m->layers[l];

		ly->attn_norm = p, p += cfg->dim;
		ly->wq = p, p += cfg->dim * qd;
		ly->wk = p, p += cfg->dim * kvd;
		ly->wv = p, p += cfg->dim * kvd;
		ly->wo = p, p += qd * cfg->dim;
		ly->mlp_norm = p, p += cfg->dim;
		ly->w_gate = p, p += (size_t)cfg->dim * cfg->ffn;
		ly->w_up = p, p += (size_t)cfg->dim * cfg->ffn;
		ly->w_down = p, p += (size_t)cfg->ffn * cfg->dim;
	}
	m->final_norm = p, p += cfg->dim;
	m->lm_head = p;
	return 0;
}

/** kvd_model_free() - free the weights of a model (kvd_model_init()) */
void kvd_model_free(struct kvd_model *m)
{
	free(m->embed);
	free(m->layers);
	free(m->inv_freq);
	memset(m, 0, sizeof(*m));
}

static void tensor(struct kvd_tensor *t, uint32_t *n, uint32_t max, float *data,
		   uint64_t out, uint64_t in, bool transposed, const char *fmt, int layer)
{
	struct kvd_tensor *e;

	if (*n >= max) {
		(*n)++;
		return;
	}
	e = &t[(*n)++];
	snprintf(e->name, sizeof(e->name), fmt, layer);
	e->data = data;
	e->ndim = in ? 2 : 1;
	e->shape[0] = out;
	e->shape[1] = in;
	e->transposed = transposed;
}

/**
 * kvd_model_tensors() - the model's tensors under their Hugging Face
 * Llama names, with the shapes a safetensors file gives them
 * @m:   model
 * @t:   receives up to @max entries
 * @max: room in @t
 *
 * Return: the number of tensors (more than @max when @t is too small).
 */
uint32_t kvd_model_tensors(struct kvd_model *m, struct kvd_tensor *t, uint32_t max)
{
	const struct kvd_model_cfg *c = &m->cfg;
	uint64_t qd = (uint64_t)c->q_heads * c->head_dim, kvd = (uint64_t)c->kv_heads * c->head_dim;
	uint32_t n = 0, l;

	tensor(t, &n, max, m->embed, c->vocab, c->dim, false, "model.embed_tokens.weight", 0);
	for (l = 0; l < c->layers; l++) {
		const struct kvd_layer *ly = &m->layers[l];
		int i = (int)l;

		tensor(t, &n, max, ly->attn_norm, c->dim, 0, false,
		       "model.layers.%d.input_layernorm.weight", i);
		tensor(t, &n, max, ly->wq, qd, c->dim, true, "model.layers.%d.self_attn.q_proj.weight", i);
		tensor(t, &n, max, ly->wk, kvd, c->dim, true, "model.layers.%d.self_attn.k_proj.weight", i);
		tensor(t, &n, max, ly->wv, kvd, c->dim, true, "model.layers.%d.self_attn.v_proj.weight", i);
		tensor(t, &n, max, ly->wo, c->dim, qd, true, "model.layers.%d.self_attn.o_proj.weight", i);
		tensor(t, &n, max, ly->mlp_norm, c->dim, 0, false,
		       "model.layers.%d.post_attention_layernorm.weight", i);
		tensor(t, &n, max, ly->w_gate, c->ffn, c->dim, true, "model.layers.%d.mlp.gate_proj.weight", i);
		tensor(t, &n, max, ly->w_up, c->ffn, c->dim, true, "model.layers.%d.mlp.up_proj.weight", i);
		tensor(t, &n, max, ly->w_down, c->dim, c->ffn, true, "model.layers.%d.mlp.down_proj.weight", i);
	}
	tensor(t, &n, max, m->final_norm, c->dim, 0, false, "model.norm.weight", 0);
	tensor(t, &n, max, m->lm_head, c->vocab, c->dim, true, "lm_head.weight", 0);
	return n;
}

static uint64_t name_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ull;
	return h;
}

/* Uniform values of standard deviation @std (the tensor's own stream). */
static void fill_uniform(const struct kvd_tensor *t, uint64_t seed, double std)
{
	uint64_t st = seed ^ name_hash(t->name), n = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
	double a = std * sqrt(3.0);
	uint64_t i;

	for (i = 0; i < n; i++)
		t->data[i] = (float)((2.0 * kvd_rand_unit(&st) - 1.0) * a);
}

/**
 * kvd_model_randomize() - random weights from @seed
 * @m:    model from kvd_model_init()
 * @seed: seed; the same seed and shape give the same weights everywhere
 *
 * Norm weights are 1; a matrix of fan-in n has standard deviation
 * 1/sqrt(n), the projections into the residual stream another
 * 1/sqrt(2 layers); embeddings 1, the LM head 2/sqrt(dim), so that the
 * logits are spread enough for sampling to mean something.
 *
 * Return: 0 or -ENOMEM.
 */
int kvd_model_randomize(struct kvd_model *m, uint64_t seed)
{
	struct kvd_tensor *t;
	uint32_t n = kvd_model_tensors(m, NULL, 0), i;
	double std;

	t = calloc(n, sizeof(*t));
	if (!t)
		return -ENOMEM;
	kvd_model_tensors(m, t, n);
	for (i = 0; i < n; i++) {
		if (t[i].ndim == 1) {
			uint64_t k;

			for (k = 0; k < t[i].shape[0]; k++)
				t[i].data[k] = 1.0f;
			continue;
		}
		std = 1.0 / sqrt((double)t[i].shape[1]);
		if (strstr(t[i].name, "o_proj") || strstr(t[i].name, "down_proj"))
			std /= sqrt(2.0 * m->cfg.layers);
		else if (!strcmp(t[i].name, "model.embed_tokens.weight"))
			std = 1.0;
		else if (!strcmp(t[i].name, "lm_head.weight"))
			std *= 2.0;
		fill_uniform(&t[i], seed, std);
	}
	free(t);
	return 0;
}

/**
 * kvd_model_finish() - derive what follows from the weights: RoPE
 * frequencies, the parameter count and the model's tag
 * @m: model whose weights are set (random or loaded)
 */
void kvd_model_finish(struct kvd_model *m)
{
	const uint32_t *wds = (const uint32_t *)m->embed;
	uint64_t h = 0xcbf29ce484222325ull, i;
	uint32_t k, half = m->cfg.head_dim / 2;

	for (k = 0; k < half; k++)
		m->inv_freq[k] = pow(m->cfg.rope_theta, -2.0 * k / m->cfg.head_dim);
	for (i = 0; i < m->params; i++)
		h = (h ^ wds[i]) * 0x100000001b3ull;
	h ^= h >> 32;
	m->tag = (uint32_t)((h ^ (h >> 16)) & 0xffff);
}

/* Room for @rows rows in the forward scratch. */
static int work_reserve(struct kvd_work *w, const struct kvd_model_cfg *c, uint32_t rows)
{
	size_t qd = (size_t)c->q_heads * c->head_dim, kvd = (size_t)c->kv_heads * c->head_dim;
	size_t per = 3 * c->dim + 2 * qd + 2 * kvd + 2 * c->ffn, n;
	float *p;

	if (rows <= w->rows)
		return 0;
	kvd_work_free(w);
	/* floats, then elements of up to 4 bytes for q, k, v and out */
	n = per * rows + (2 * qd + 2 * kvd) * rows;
	w->buf = malloc(n * sizeof(float));
	w->cos = malloc((size_t)rows * (c->head_dim / 2) * sizeof(double) * 2);
	if (!w->buf || !w->cos) {
		kvd_work_free(w);
		return -ENOMEM;
	}
	w->sin = w->cos + (size_t)rows * (c->head_dim / 2);
	p = w->buf;
	w->x = p, p += (size_t)rows * c->dim;
	w->h = p, p += (size_t)rows * c->dim;
	w->last = p, p += (size_t)rows * c->dim;
	w->q = p, p += rows * qd;
	w->att = p, p += rows * qd;
	w->k = p, p += rows * kvd;
	w->v = p, p += rows * kvd;
	w->gate = p, p += (size_t)rows * c->ffn;
	w->up = p, p += (size_t)rows * c->ffn;
	w->q16 = p, p += rows * qd;
	w->out16 = p, p += rows * qd;
	w->k16 = p, p += rows * kvd;
	w->v16 = p;
	w->rows = rows;
	return 0;
}

/** kvd_work_free() - free a forward scratch */
void kvd_work_free(struct kvd_work *w)
{
	free(w->buf);
	free(w->cos);
	memset(w, 0, sizeof(*w));
}

/* out = x / rms(x) * weight, per row. */
static void rmsnorm(float *out, const float *x, const float *weight, uint32_t rows,
		    uint32_t dim, float eps)
{
	uint32_t r, i;
	float s, k;

	for (r = 0; r < rows; r++, x += dim, out += dim) {
		for (s = 0, i = 0; i < dim; i++)
			s += x[i] * x[i];
		k = 1.0f / sqrtf(s / (float)dim + eps);
		for (i = 0; i < dim; i++)
			out[i] = x[i] * k * weight[i];
	}
}

/* cos and sin of every row's position times every RoPE frequency. */
static void rope_angles(const struct kvd_model *m, struct kvd_work *w, const struct kvd_batch *b)
{
	uint32_t half = m->cfg.head_dim / 2, r, i;
	double a;

	for (r = 0; r < b->nr_rows; r++) {
		for (i = 0; i < half; i++) {
			a = b->rows[r].pos * m->inv_freq[i];
			w->cos[(size_t)r * half + i] = cos(a);
			w->sin[(size_t)r * half + i] = sin(a);
		}
	}
}

/* Rotate each head of @x ([rows][heads][head_dim]), rotate-half form. */
static void rope(const struct kvd_model *m, const struct kvd_work *w, float *x, uint32_t rows,
		 uint32_t heads)
{
	uint32_t half = m->cfg.head_dim / 2, r, h, i;
	float *v, x1, x2, c, s;

	for (r = 0; r < rows; r++) {
		for (h = 0; h < heads; h++) {
			v = x + ((size_t)r * heads + h) * m->cfg.head_dim;
			for (i = 0; i < half; i++) {
				c = (float)w->cos[(size_t)r * half + i];
				s = (float)w->sin[(size_t)r * half + i];
				x1 = v[i];
				x2 = v[i + half];
				v[i] = x1 * c - x2 * s;
				v[i + half] = x2 * c + x1 * s;
			}
		}
	}
}

/* The attention half of layer @l: x += o_proj(attention(norm(x))). */
static int attention_block(const struct kvd_model *m, struct kvd_work *w, uint32_t dtype,
			   uint32_t l, struct kvd_batch *b, const struct kvd_attn_ops *ops,
			   void *ctx)
{
	const struct kvd_model_cfg *c = &m->cfg;
	const struct kvd_layer *ly = &m->layers[l];
	uint32_t qd = c->q_heads * c->head_dim, kvd = c->kv_heads * c->head_dim, n = b->nr_rows;
	int err;

	rmsnorm(w->h, w->x, ly->attn_norm, n, c->dim, c->norm_eps);
	matmul(w->q, w->h, ly->wq, n, c->dim, qd, false);
	matmul(w->k, w->h, ly->wk, n, c->dim, kvd, false);
	matmul(w->v, w->h, ly->wv, n, c->dim, kvd, false);
	rope(m, w, w->q, n, c->q_heads);
	rope(m, w, w->k, n, c->kv_heads);
	kvd_to_dtype(dtype, w->q, w->q16, (size_t)n * qd);
	kvd_to_dtype(dtype, w->k, w->k16, (size_t)n * kvd);
	kvd_to_dtype(dtype, w->v, w->v16, (size_t)n * kvd);
	err = ops->store(ctx, l, b, w->k16, w->v16);
	if (err)
		return err;
	err = ops->attend(ctx, l, b, w->q16, w->out16);
	if (err)
		return err;
	kvd_from_dtype(dtype, w->out16, w->att, (size_t)n * qd);
	matmul(w->x, w->att, ly->wo, n, qd, c->dim, true);
	return 0;
}

/* The MLP half of layer @l: x += down(silu(gate(norm(x))) * up(norm(x))). */
static void mlp_block(const struct kvd_model *m, struct kvd_work *w, uint32_t l, uint32_t n)
{
	const struct kvd_model_cfg *c = &m->cfg;
	const struct kvd_layer *ly = &m->layers[l];
	size_t i, e = (size_t)n * c->ffn;
	float g;

	rmsnorm(w->h, w->x, ly->mlp_norm, n, c->dim, c->norm_eps);
	matmul(w->gate, w->h, ly->w_gate, n, c->dim, c->ffn, false);
	matmul(w->up, w->h, ly->w_up, n, c->dim, c->ffn, false);
	for (i = 0; i < e; i++) {
		g = w->gate[i];
		w->gate[i] = g / (1.0f + expf(-g)) * w->up[i];
	}
	matmul(w->x, w->gate, ly->w_down, n, c->ffn, c->dim, true);
}

/* Logits of the rows that want them. */
static void lm_head(const struct kvd_model *m, struct kvd_work *w, struct kvd_batch *b)
{
	const struct kvd_model_cfg *c = &m->cfg;
	uint32_t r, k;

	for (r = 0; r < b->nr_rows; r++) {
		k = (uint32_t)b->rows[r].logits;
		if (b->rows[r].logits >= 0)
			memcpy(w->h + (size_t)k * c->dim, w->x + (size_t)r * c->dim,
			       c->dim * sizeof(float));
	}
	rmsnorm(w->last, w->h, m->final_norm, b->nr_logits, c->dim, c->norm_eps);
	matmul(b->logits, w->last, m->lm_head, b->nr_logits, c->dim, c->vocab, false);
}

/**
 * kvd_forward() - one forward pass of a batch of rows
 * @m:     model
 * @w:     scratch (grown as needed; kvd_work_free() when done)
 * @dtype: KV_DTYPE_* of the activations (kvd_io_dtype() of the pool's): q,
 *         K, V and the attention output are rounded to it
 * @b:     rows in, logits out; each row's logits index must be unique and
 *         below @b->nr_logits
 * @ops:   where K/V go and how attention reads them
 * @ctx:   their argument
 *
 * Return: 0, -EINVAL (a token past the vocabulary, a logits index out of
 * range), -ENOMEM, or the error of @ops.
 */
int kvd_forward(const struct kvd_model *m, struct kvd_work *w, uint32_t dtype,
		struct kvd_batch *b, const struct kvd_attn_ops *ops, void *ctx)
{
	const struct kvd_model_cfg *c = &m->cfg;
	uint32_t r, l;
	int err;

	if (!b->nr_rows)
		return 0;
	for (r = 0; r < b->nr_rows; r++)
		if (b->rows[r].token >= c->vocab || b->rows[r].logits >= (int32_t)b->nr_logits)
			return -EINVAL;
	err = work_reserve(w, c, b->nr_rows);
	if (err)
		return err;
	for (r = 0; r < b->nr_rows; r++)
		memcpy(w->x + (size_t)r * c->dim, m->embed + (size_t)b->rows[r].token * c->dim,
		       c->dim * sizeof(float));
	rope_angles(m, w, b);
	for (l = 0; l < c->layers; l++) {
		err = attention_block(m, w, dtype, l, b, ops, ctx);
		if (err)
			return err;
		mlp_block(m, w, l, b->nr_rows);
	}
	if (b->nr_logits)
		lm_head(m, w, b);
	return 0;
}
