// SPDX-License-Identifier: MIT
/*
 * The weights in a safetensors file (https://huggingface.co/docs/safetensors):
 * an 8-byte little-endian header length, a JSON header naming each tensor
 * with its dtype, shape and byte range, then the data.
 *
 * Reading takes a Llama-style model under the Hugging Face names
 * (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ...,
 * lm_head.weight; without lm_head.weight the embeddings are tied), in F32,
 * F16 or BF16. The model's shape follows from the shapes in the file and
 * must fit the pool: as many layers, kv_heads x head_dim rows in k_proj
 * and v_proj. Every tensor's shape is checked against that shape; any
 * difference, a missing tensor, a byte range outside the file or of the
 * wrong length stops with a message naming the file and the tensor.
 * Writing (--save-weights) stores the model in F32, with its RoPE base and
 * norm epsilon in __metadata__.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "kernels/dtype.h"
#include "lib/json.h"
#include "kvdemo.h"

#define ST_HEADER_MAX	(4u << 20)	/* as lib/json.h's KV_JSON_SIZE_MAX */

/**
 * struct st_file - a safetensors file being read
 * @path:   its name, for messages
 * @fd:     open file
 * @data:   offset of the data section
 * @size:   bytes of the data section
 * @root:   the parsed header
 */
struct st_file {
	const char *path;
	int fd;
	uint64_t data;
	uint64_t size;
	struct kv_json *root;
};

static int st_error(const struct st_file *f, int err, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "kvdemo: %s: ", f->path);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return err;
}

static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	while (len) {
		n = pread(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf = (char *)buf + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Open @path and parse its header into @f. */
static int st_open(struct st_file *f, const char *path)
{
	char jerr[KV_JSON_ERR_MAX], *text;
	unsigned char len8[8];
	uint64_t hlen = 0;
	struct stat sb;
	int err, i;

	memset(f, 0, sizeof(*f));
	f->path = path;
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return st_error(f, -errno, "cannot open the weights: %s", strerror(errno));
	if (fstat(f->fd, &sb) || read_full(f->fd, len8, 8, 0))
		return st_error(f, -EINVAL, "not a safetensors file (shorter than 8 bytes)");
	for (i = 7; i >= 0; i--)
		hlen = hlen << 8 | len8[i];
	if (hlen < 2 || hlen > ST_HEADER_MAX || hlen > (uint64_t)sb.st_size - 8)
		return st_error(f, -EINVAL, "not a safetensors file (header length %" PRIu64
				" in a file of %lld bytes)", hlen, (long long)sb.st_size);
	text = malloc(hlen);
	if (!text)
		return -ENOMEM;
	err = read_full(f->fd, text, hlen, 8);
	if (!err)
		err = kv_json_parse(text, hlen, &f->root, jerr, sizeof(jerr));
	free(text);
	if (err == -EINVAL)
		return st_error(f, err, "header: %s", jerr);
	if (err)
		return st_error(f, err, "header: %s", strerror(-err));
	if (f->root->type != KV_JSON_OBJECT)
		return st_error(f, -EINVAL, "header: not a JSON object");
	f->data = 8 + hlen;
	f->size = (uint64_t)sb.st_size - f->data;
	return 0;
}

static void st_close(struct st_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	kv_json_free(f->root);
}

/* The shape of tensor @name: ndim (1 or 2) into @shape, 0 when absent. */
static int st_shape(const struct st_file *f, const char *name, uint64_t shape[2])
{
	const struct kv_json *t = kv_json_get(f->root, name), *s, *e;
	uint32_t n = 0;

	s = kv_json_get(t, "shape");
	if (!t)
		return 0;
	if (!s || s->type != KV_JSON_ARRAY || !s->nr || s->nr > 2)
		return st_error(f, -EINVAL, "%s: shape is not a list of 1 or 2 sizes", name);
	for (e = s->child; e; e = e->next)
		if (kv_json_uint(e, UINT32_MAX, &shape[n++]))
			return st_error(f, -EINVAL, "%s: shape has a size that is not a number "
					"below 2^32", name);
	return (int)n;
}

static void shape_text(const uint64_t *s, uint32_t n, char *buf, size_t len)
{
	if (n == 1)
		snprintf(buf, len, "[%" PRIu64 "]", s[0]);
	else
		snprintf(buf, len, "[%" PRIu64 ", %" PRIu64 "]", s[0], s[1]);
}

/* Dimension @i of the 2-D tensor @name, which must be there. */
static int st_dim(const struct st_file *f, const char *name, int i, uint64_t *out)
{
	uint64_t s[2];
	int n = st_shape(f, name, s);

	if (n < 0)
		return n;
	if (n != 2)
		return st_error(f, -EINVAL, n ? "%s: a matrix expected, the file has a vector" :
				"no tensor %s: not a Llama-style model", name);
	*out = s[i];
	return 0;
}

/* Transformer layers in the file: model.layers.N.input_layernorm.weight for N = 0.. */
static uint32_t st_layers(const struct st_file *f)
{
	char name[KVD_NAME_MAX];
	uint32_t n;

	for (n = 0; n < KV_MAX_LAYERS; n++) {
		snprintf(name, sizeof(name), "model.layers.%u.input_layernorm.weight", n);
		if (!kv_json_get(f->root, name))
			break;
	}
	return n;
}

static float st_metadata_float(const struct st_file *f, const char *key, float dflt)
{
	const struct kv_json *v = kv_json_get(kv_json_get(f->root, "__metadata__"), key);
	char *end;
	double d;

	if (!v || v->type != KV_JSON_STRING)
		return dflt;
	d = strtod(v->str, &end);
	return *end || !(d > 0) ? dflt : (float)d;
}

/*
 * The model's shape from the file, checked against the pool's (@layers,
 * @kv_heads, @head_dim).
 */
static int st_config(const struct st_file *f, struct kvd_model_cfg *c, uint32_t layers,
		     uint32_t kv_heads, uint32_t head_dim)
{
	const char *k = "model.layers.0.self_attn.k_proj.weight";
	uint64_t vocab = 0, dim = 0, qd = 0, kvd = 0, ffn = 0;
	int err;

	err = st_dim(f, "model.embed_tokens.weight", 0, &vocab);
	err = err ?: st_dim(f, "model.embed_tokens.weight", 1, &dim);
	err = err ?: st_dim(f, "model.layers.0.self_attn.q_proj.weight", 0, &qd);
	err = err ?: st_dim(f, k, 0, &kvd);
	err = err ?: st_dim(f, "model.layers.0.mlp.gate_proj.weight", 0, &ffn);
	if (err)
		return err;
	if (st_layers(f) != layers)
		return st_error(f, -EINVAL, "%u transformer layers; the pool holds K/V of %u",
				st_layers(f), layers);
	if (kvd != (uint64_t)kv_heads * head_dim)
		return st_error(f, -EINVAL, "%s has %" PRIu64 " rows; the pool holds %u kv heads "
				"of %u, %u rows", k, kvd, kv_heads, head_dim, kv_heads * head_dim);
	if (qd % head_dim || (qd / head_dim) % kv_heads)
		return st_error(f, -EINVAL, "model.layers.0.self_attn.q_proj.weight has %" PRIu64
				" rows: not query heads of %u, a multiple of %u", qd, head_dim,
				kv_heads);
	if (!vocab || vocab > KVD_VOCAB_MAX)
		return st_error(f, -EINVAL, "a vocabulary of %" PRIu64 " tokens; at most %u",
				vocab, KVD_VOCAB_MAX);
	*c = (struct kvd_model_cfg){
		.vocab = (uint32_t)vocab, .dim = (uint32_t)dim, .layers = layers,
		.q_heads = (uint32_t)(qd / head_dim), .kv_heads = kv_heads,
		.head_dim = head_dim, .ffn = (uint32_t)ffn,
		.rope_theta = st_metadata_float(f, "kvdemo.rope_theta", 10000.0f),
		.norm_eps = st_metadata_float(f, "kvdemo.rms_norm_eps", 1e-5f),
	};
	return 0;
}

/* KV_DTYPE_* of a safetensors dtype name, 0 for one not read here. */
static uint32_t st_dtype(const char *dt)
{
	if (!strcmp(dt, "F32"))
		return KV_DTYPE_FP32;
	if (!strcmp(dt, "F16"))
		return KV_DTYPE_FP16;
	return !strcmp(dt, "BF16") ? KV_DTYPE_BF16 : 0;
}

/* Convert the elements of @dtype at @raw to float, transposing [out][in]. */
static void st_convert(uint32_t dtype, const void *raw, const struct kvd_tensor *t)
{
	uint64_t n = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1), i, r, col;

	if (!t->transposed) {
		kvd_from_dtype(dtype, raw, t->data, n);
		return;
	}
	for (i = 0; i < n; i++) {
		r = i / t->shape[1];
		col = i % t->shape[1];
		t->data[col * t->shape[0] + r] = kv_load_f32(raw, dtype, i);
	}
}

/* Check tensor @t's entry in the file and read it. */
static int st_tensor(const struct st_file *f, const struct kvd_tensor *t)
{
	const struct kv_json *e = kv_json_get(f->root, t->name), *dt, *off;
	uint64_t shape[2], range[2], n;
	char want[64], got[64];
	uint32_t dtype;
	size_t es;
	void *raw;
	int nd, err;

	nd = st_shape(f, t->name, shape);
	if (nd <= 0)
		return nd ? nd : st_error(f, -EINVAL, "no tensor %s", t->name);
	shape_text(t->shape, t->ndim, want, sizeof(want));
	shape_text(shape, (uint32_t)nd, got, sizeof(got));
	if ((uint32_t)nd != t->ndim || shape[0] != t->shape[0] ||
	    (nd == 2 && shape[1] != t->shape[1]))
		return st_error(f, -EINVAL, "%s has shape %s, expected %s", t->name, got, want);
	dt = kv_json_get(e, "dtype");
	dtype = dt && dt->type == KV_JSON_STRING ? st_dtype(dt->str) : 0;
	es = kv_dtype_size(dtype);
	if (!es)
		return st_error(f, -EINVAL, "%s: dtype %s; F32, F16 or BF16 expected", t->name,
				dt && dt->type == KV_JSON_STRING ? dt->str : "missing");
	off = kv_json_get(e, "data_offsets");
	n = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
	if (!off || off->type != KV_JSON_ARRAY || off->nr != 2 ||
	    kv_json_uint(off->child, f->size, &range[0]) ||
	    kv_json_uint(off->child->next, f->size, &range[1]) || range[1] < range[0] ||
	    range[1] - range[0] != n * es)
		return st_error(f, -EINVAL, "%s: data_offsets are not the %" PRIu64 " bytes of "
				"its shape within the file's %" PRIu64 " bytes of data", t->name,
				n * es, f->size);
	raw = malloc(n * es);
	if (!raw)
		return -ENOMEM;
	err = read_full(f->fd, raw, n * es, f->data + range[0]);
	if (!err)
		st_convert(dtype, raw, t);
	free(raw);
	return err ? st_error(f, err, "%s: %s", t->name, strerror(-err)) : 0;
}

/*
 * Read every tensor of @m from @f; without lm_head.weight, the LM head is
 * the embedding matrix (tied), transposed.
 */
static int st_read_tensors(const struct st_file *f, struct kvd_model *m)
{
	uint32_t n = kvd_model_tensors(m, NULL, 0), i;
	struct kvd_tensor *t = calloc(n, sizeof(*t));
	uint64_t r, k;
	int err = 0;

	if (!t)
		return -ENOMEM;
	kvd_model_tensors(m, t, n);
	for (i = 0; i < n && !err; i++) {
		if (!strcmp(t[i].name, "lm_head.weight") && !kv_json_get(f->root, t[i].name)) {
			for (r = 0; r < m->cfg.vocab; r++)
				for (k = 0; k < m->cfg.dim; k++)
					m->lm_head[k * m->cfg.vocab + r] = m->embed[r * m->cfg.dim + k];
			continue;
		}
		err = st_tensor(f, &t[i]);
	}
	free(t);
	return err;
}

/**
 * kvd_safetensors_load() - read a model from a safetensors file
 * @m:        receives the model (kvd_model_init() is done here); free it
 *            with kvd_model_free() after success
 * @path:     the file
 * @layers:   layers of the pool the model serves
 * @kv_heads: its kv heads
 * @head_dim: its head_dim
 *
 * Errors are printed with the file's name and the tensor's.
 *
 * Return: 0, -ENOENT and the other errors of open(2), -EINVAL (not a
 * safetensors file, a missing tensor, a shape, dtype or byte range that
 * does not fit), -ENOMEM.
 */
int kvd_safetensors_load(struct kvd_model *m, const char *path, uint32_t layers,
			 uint32_t kv_heads, uint32_t head_dim)
{
	struct kvd_model_cfg cfg;
	struct st_file f;
	int err;

	memset(m, 0, sizeof(*m));
	err = st_open(&f, path);
	if (!err)
		err = st_config(&f, &cfg, layers, kv_heads, head_dim);
	if (err)
		goto out_close;
	err = kvd_model_init(m, &cfg);
	if (err) {
		st_error(&f, err, "cannot hold the model: %s", strerror(-err));
		goto out_close;
	}
	err = st_read_tensors(&f, m);
	if (err)
		kvd_model_free(m);
out_close:
	st_close(&f);
	return err;
}

/* The JSON header of kvd_safetensors_save(), padded to 8 bytes. */
static char *st_header(const struct kvd_model *m, const struct kvd_tensor *t, uint32_t n,
		       size_t *len)
{
	size_t cap = 512 + (size_t)n * 320, at;
	uint64_t off = 0, bytes;
	char *h = malloc(cap);
	uint32_t i;

	if (!h)
		return NULL;
	at = (size_t)snprintf(h, cap, "{\"__metadata__\":{\"format\":\"pt\",\"kvdemo.rope_theta\":"
			      "\"%.9g\",\"kvdemo.rms_norm_eps\":\"%.9g\"}",
			      m->cfg.rope_theta, m->cfg.norm_eps);
	for (i = 0; i < n; i++) {
		bytes = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1) * 4;
		at += (size_t)snprintf(h + at, cap - at, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%" PRIu64,
				       t[i].name, t[i].shape[0]);
		if (t[i].ndim == 2)
			at += (size_t)snprintf(h + at, cap - at, ",%" PRIu64, t[i].shape[1]);
		at += (size_t)snprintf(h + at, cap - at, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64
				       "]}", off, off + bytes);
		off += bytes;
	}
	h[at++] = '}';
	while (at % 8)
		h[at++] = ' ';
	*len = at;
	return h;
}

/* One tensor's data as F32 [out][in]. */
static int st_write_tensor(FILE *fp, const struct kvd_tensor *t)
{
	uint64_t r, k;
	float v;

	if (!t->transposed) {
		r = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
		return fwrite(t->data, sizeof(float), r, fp) == r ? 0 : -EIO;
	}
	for (r = 0; r < t->shape[0]; r++) {
		for (k = 0; k < t->shape[1]; k++) {
			v = t->data[k * t->shape[0] + r];
			if (fwrite(&v, sizeof(v), 1, fp) != 1)
				return -EIO;
		}
	}
	return 0;
}

/**
 * kvd_safetensors_save() - write a model to a safetensors file (F32)
 * @m:    model
 * @path: file, created or replaced
 *
 * Return: 0, or a negative errno (printed).
 */
int kvd_safetensors_save(struct kvd_model *m, const char *path)
{
	uint32_t n = kvd_model_tensors(m, NULL, 0), i;
	struct kvd_tensor *t = calloc(n, sizeof(*t));
	unsigned char len8[8];
	char *h = NULL;
	size_t hlen = 0;
	FILE *fp = NULL;
	int err = -ENOMEM, b;

	if (!t)
		goto out;
	kvd_model_tensors(m, t, n);
	h = st_header(m, t, n, &hlen);
	if (!h)
		goto out;
	fp = fopen(path, "wb");
	if (!fp) {
		err = -errno;
		goto out;
	}
	for (b = 0; b < 8; b++)
		len8[b] = (unsigned char)((uint64_t)hlen >> (8 * b));
	err = fwrite(len8, 8, 1, fp) == 1 && fwrite(h, hlen, 1, fp) == 1 ? 0 : -EIO;
	for (i = 0; i < n && !err; i++)
		err = st_write_tensor(fp, &t[i]);
	if (fclose(fp) && !err)
		err = -errno;
out:
	if (err)
		fprintf(stderr, "kvdemo: %s: cannot write the weights: %s\n", path, strerror(-err));
	free(h);
	free(t);
	return err;
}
