// SPDX-License-Identifier: MIT
/*
 * lib/models.c - decoder models' KV geometry: the presets, and a Hugging
 * Face config.json read into the same struct kv_model.
 *
 * The presets carry the numbers of each model's published config.json:
 * num_hidden_layers, num_attention_heads, num_key_value_heads (or what
 * stands for it: Falcon 7B is multi-query, one KV head), head_dim (or
 * hidden_size / num_attention_heads), max_position_embeddings, and the
 * sliding window where attention has one. The dtype is the one the model is
 * served in: its torch_dtype, except Gemma 2, published in float32 and
 * served in bfloat16.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lib/config.h"
#include "lib/kvsize.h"
#include "lib/models.h"

#define BF16	KV_DTYPE_BF16
#define FP16	KV_DTYPE_FP16

/* name, repository, layers, heads, kv heads, head_dim, dtype, context, window, window layers */
static const struct kv_model presets[] = {
	{ "llama2-7b", "meta-llama/Llama-2-7b-hf", 32, 32, 32, 128, FP16, 4096, 0, 0 },
	{ "llama2-13b", "meta-llama/Llama-2-13b-hf", 40, 40, 40, 128, FP16, 4096, 0, 0 },
	{ "llama2-70b", "meta-llama/Llama-2-70b-hf", 80, 64, 8, 128, FP16, 4096, 0, 0 },
	{ "llama3-8b", "meta-llama/Meta-Llama-3-8B", 32, 32, 8, 128, BF16, 8192, 0, 0 },
	{ "llama3-70b", "meta-llama/Meta-Llama-3-70B", 80, 64, 8, 128, BF16, 8192, 0, 0 },
	{ "llama3.1-8b", "meta-llama/Llama-3.1-8B", 32, 32, 8, 128, BF16, 131072, 0, 0 },
	{ "llama3.1-70b", "meta-llama/Llama-3.1-70B", 80, 64, 8, 128, BF16, 131072, 0, 0 },
	{ "llama3.1-405b", "meta-llama/Llama-3.1-405B", 126, 128, 8, 128, BF16, 131072, 0, 0 },
	{ "llama3.2-1b", "meta-llama/Llama-3.2-1B", 16, 32, 8, 64, BF16, 131072, 0, 0 },
	{ "llama3.2-3b", "meta-llama/Llama-3.2-3B", 28, 24, 8, 128, BF16, 131072, 0, 0 },
	{ "mistral-7b", "mistralai/Mistral-7B-v0.1", 32, 32, 8, 128, BF16, 32768, 4096, 32 },
	{ "mistral-7b-v0.3", "mistralai/Mistral-7B-v0.3", 32, 32, 8, 128, BF16, 32768, 0, 0 },
	{ "mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1", 32, 32, 8, 128, BF16, 32768, 0, 0 },
	{ "mixtral-8x22b", "mistralai/Mixtral-8x22B-v0.1", 56, 48, 8, 128, BF16, 65536, 0, 0 },
	{ "phi-3-mini", "microsoft/Phi-3-mini-4k-instruct", 32, 32, 32, 96, BF16, 4096, 0, 0 },
	{ "phi-3-medium", "microsoft/Phi-3-medium-4k-instruct", 40, 40, 10, 128, BF16, 4096, 0, 0 },
	{ "qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 28, 28, 4, 128, BF16, 32768, 0, 0 },
	{ "qwen2.5-72b", "Qwen/Qwen2.5-72B-Instruct", 80, 64, 8, 128, BF16, 32768, 0, 0 },
	{ "gemma-2-2b", "google/gemma-2-2b", 26, 8, 4, 256, BF16, 8192, 4096, 13 },
	{ "gemma-2-9b", "google/gemma-2-9b", 42, 16, 8, 256, BF16, 8192, 4096, 21 },
	{ "gemma-2-27b", "google/gemma-2-27b", 46, 32, 16, 128, BF16, 8192, 4096, 23 },
	{ "falcon-7b", "tiiuae/falcon-7b", 32, 71, 1, 64, BF16, 2048, 0, 0 },
	{ "falcon-40b", "tiiuae/falcon-40b", 60, 128, 8, 64, BF16, 2048, 0, 0 },
};
#define NR_PRESETS	(sizeof(presets) / sizeof(presets[0]))

/**
 * kv_model_count() - how many presets there are
 */
size_t kv_model_count(void)
{
	return NR_PRESETS;
}

/**
 * kv_model_at() - a preset by position, for listing them
 * @i: 0 to kv_model_count() - 1
 *
 * Return: the preset, or NULL past the last.
 */
const struct kv_model *kv_model_at(size_t i)
{
	return i < NR_PRESETS ? &presets[i] : NULL;
}

/**
 * kv_model_find() - a preset by name
 * @name: its name, as kv_model_at() lists it ("llama3-8b")
 *
 * Return: the preset, or NULL when there is none of that name.
 */
const struct kv_model *kv_model_find(const char *name)
{
	size_t i;

	for (i = 0; i < NR_PRESETS; i++) {
		if (!strcmp(presets[i].name, name))
			return &presets[i];
	}
	return NULL;
}

/**
 * kv_model_geometry() - the pool geometry of a model
 * @m:            the model
 * @block_tokens: tokens per block
 * @g:            receives layers, kv_heads and head_dim of @m, @block_tokens,
 *                and @m's dtype (bf16 when it has none)
 */
void kv_model_geometry(const struct kv_model *m, uint32_t block_tokens,
		       struct kv_geometry *g)
{
	memset(g, 0, sizeof(*g));
	g->layers = m->layers;
	g->kv_heads = m->kv_heads;
	g->head_dim = m->head_dim;
	g->block_tokens = block_tokens;
	g->dtype = m->dtype ? m->dtype : KV_DTYPE_BF16;
}

/* ---- config.json -------------------------------------------------------- */

/* The first of the members @keys (NULL-terminated) of @cfg that is there and not null. */
static const struct kv_json *hf_member(const struct kv_json *cfg, const char *const *keys,
				       const char **which)
{
	const struct kv_json *v;

	for (; *keys; keys++) {
		v = kv_json_get(cfg, *keys);
		if (v && v->type != KV_JSON_NULL) {
			*which = *keys;
			return v;
		}
	}
	return NULL;
}

/*
 * An integer member, the first of @keys there, into *@out within
 * [1, @max]; *@out is left alone when none is there and @required is
 * false.
 */
static int hf_uint(const struct kv_json *cfg, const char *const *keys, bool required,
		   uint32_t max, uint32_t *out, char *err, size_t errlen)
{
	const char *key = keys[0];
	const struct kv_json *v = hf_member(cfg, keys, &key);
	uint64_t n;
	int ret;

	if (!v)
		return required ? kv_errorf(err, errlen, "%s is missing", key) : 0;
	ret = kv_json_uint(v, max, &n);
	if (ret == -ERANGE || (!ret && !n))
		return kv_errorf(err, errlen, "%s (line %u): %s is out of range (1..%u)", key,
				v->line, v->str, max);
	if (ret)
		return kv_errorf(err, errlen, "%s (line %u) is %s, not a positive integer", key,
				v->line, v->type == KV_JSON_NUMBER ? v->str :
				kv_json_type_name(v->type));
	*out = (uint32_t)n;
	return 0;
}

static bool hf_true(const struct kv_json *cfg, const char *key)
{
	const struct kv_json *v = kv_json_get(cfg, key);

	return v && v->type == KV_JSON_TRUE;
}

/* A string member @key of @cfg into @buf, "" when absent or not a string. */
static void hf_string(const struct kv_json *cfg, const char *key, char *buf, size_t len)
{
	const struct kv_json *v = kv_json_get(cfg, key);

	snprintf(buf, len, "%s", v && v->type == KV_JSON_STRING ? v->str : "");
}

/*
 * num_key_value_heads, or Falcon's: with new_decoder_architecture,
 * num_kv_heads (n_head_kv); else multi_query means one; else every query
 * head has its own (as transformers' FalconAttention decides).
 */
static int hf_kv_heads(const struct kv_json *cfg, struct kv_model *m, char *err, size_t errlen)
{
	static const char *const gqa[] = { "num_key_value_heads", NULL };
	static const char *const falcon[] = { "num_kv_heads", "n_head_kv", NULL };
	const char *key;

	m->kv_heads = m->attn_heads;
	if (hf_member(cfg, gqa, &key))
		return hf_uint(cfg, gqa, true, KV_MAX_KV_HEADS, &m->kv_heads, err, errlen);
	if (hf_true(cfg, "new_decoder_architecture"))
		return hf_uint(cfg, falcon, false, KV_MAX_KV_HEADS, &m->kv_heads, err, errlen);
	if (hf_true(cfg, "multi_query")) {
		m->kv_heads = 1;
		return 0;
	}
	return hf_uint(cfg, falcon, false, KV_MAX_KV_HEADS, &m->kv_heads, err, errlen);
}

/* head_dim, else hidden_size / num_attention_heads, which must divide. */
static int hf_head_dim(const struct kv_json *cfg, struct kv_model *m, char *err, size_t errlen)
{
	static const char *const hd[] = { "head_dim", NULL };
	static const char *const hidden[] = { "hidden_size", "n_embd", "d_model", NULL };
	const char *key;
	uint32_t h = 0;
	int ret;

	if (hf_member(cfg, hd, &key))
		return hf_uint(cfg, hd, true, KV_MAX_HEAD_DIM, &m->head_dim, err, errlen);
	if (!hf_member(cfg, hidden, &key))
		return kv_errorf(err, errlen, "head_dim and hidden_size are both missing");
	ret = hf_uint(cfg, hidden, true, UINT32_MAX, &h, err, errlen);
	if (ret)
		return ret;
	if (h % m->attn_heads)
		return kv_errorf(err, errlen,
				"hidden_size %u is not a multiple of num_attention_heads %u (and head_dim is missing)",
				h, m->attn_heads);
	m->head_dim = h / m->attn_heads;
	if (m->head_dim > KV_MAX_HEAD_DIM)
		return kv_errorf(err, errlen, "head_dim %u (hidden_size / num_attention_heads) is out of range (1..%u)",
				m->head_dim, KV_MAX_HEAD_DIM);
	return 0;
}

/* torch_dtype (or dtype, as newer transformers write it) as a pool dtype. */
static void hf_dtype(const struct kv_json *cfg, struct kv_model *m)
{
	static const char *const keys[] = { "torch_dtype", "dtype", NULL };
	const struct kv_json *v;
	const char *key;

	v = hf_member(cfg, keys, &key);
	if (!v || v->type != KV_JSON_STRING || !strcmp(v->str, "float32") ||
	    !strcmp(v->str, "bfloat16") || !strcmp(v->str, "auto"))
		m->dtype = KV_DTYPE_BF16;
	else if (!strcmp(v->str, "float16"))
		m->dtype = KV_DTYPE_FP16;
	else
		m->dtype = 0;
}

/*
 * The sliding window: sliding_window, unless use_sliding_window is false;
 * the layers it applies to: those layer_types names "sliding_attention",
 * every other one for Gemma 2, all but every sliding_window_pattern-th one
 * (Gemma 3), else all.
 */
static void hf_window(const struct kv_json *cfg, struct kv_model *m)
{
	const struct kv_json *v = kv_json_get(cfg, "sliding_window"), *t;
	const struct kv_json *use = kv_json_get(cfg, "use_sliding_window");
	char type[32];
	uint64_t w;

	m->window = m->window_layers = 0;
	if ((use && use->type == KV_JSON_FALSE) || kv_json_uint(v, UINT32_MAX, &w) || !w)
		return;
	m->window = (uint32_t)w;
	t = kv_json_get(cfg, "layer_types");
	hf_string(cfg, "model_type", type, sizeof(type));
	if (t && t->type == KV_JSON_ARRAY) {
		for (t = t->child; t; t = t->next)
			m->window_layers += t->type == KV_JSON_STRING &&
					    !strcmp(t->str, "sliding_attention");
	} else if (!strcmp(type, "gemma2")) {
		m->window_layers = (m->layers + 1) / 2;
	} else if (!kv_json_uint(kv_json_get(cfg, "sliding_window_pattern"), UINT32_MAX, &w) && w) {
		m->window_layers = m->layers - m->layers / (uint32_t)w;
	} else {
		m->window_layers = m->layers;
	}
	if (!m->window_layers)
		m->window = 0;
}

/**
 * kv_model_from_hf() - a model's KV facts from a parsed Hugging Face config.json
 * @root:   the parsed file
 * @m:      receives the model; written only on success
 * @err:    on error, the member at fault and why ("num_hidden_layers is
 *          missing"); may be NULL
 * @errlen: size of @err; KV_MODEL_ERR_MAX is enough
 *
 * Reads num_hidden_layers (or n_layer), num_attention_heads (or n_head),
 * num_key_value_heads (default num_attention_heads; Falcon's
 * multi_query, new_decoder_architecture and num_kv_heads are understood),
 * head_dim (default hidden_size / num_attention_heads), torch_dtype
 * (float16 gives fp16; bfloat16, float32, auto or none give bf16; any other
 * gives 0), max_position_embeddings and sliding_window. A config whose
 * top level lacks the layers but has a "text_config" object (a multimodal
 * model) is read from that object. Every number must be a positive
 * integer within the limits of layout.h, and num_attention_heads a
 * multiple of num_key_value_heads.
 *
 * Return: 0, or -EINVAL with the reason in @err.
 */
int kv_model_from_hf(const struct kv_json *root, struct kv_model *m, char *err,
		     size_t errlen)
{
	static const char *const layers[] = { "num_hidden_layers", "n_layer", NULL };
	static const char *const heads[] = { "num_attention_heads", "n_head", NULL };
	static const char *const ctx[] = { "max_position_embeddings", "n_positions", NULL };
	const struct kv_json *cfg = root, *text = kv_json_get(root, "text_config");
	struct kv_model t;
	const char *key;
	int ret;

	if (!root || root->type != KV_JSON_OBJECT)
		return kv_errorf(err, errlen, "the top level is %s, not an object",
				root ? kv_json_type_name(root->type) : "missing");
	if (!hf_member(root, layers, &key) && text && text->type == KV_JSON_OBJECT)
		cfg = text;
	memset(&t, 0, sizeof(t));
	hf_string(cfg, "model_type", t.name, sizeof(t.name));
	hf_string(root, "_name_or_path", t.hf_id, sizeof(t.hf_id));
	ret = hf_uint(cfg, layers, true, KV_MAX_LAYERS, &t.layers, err, errlen);
	ret = ret ?: hf_uint(cfg, heads, true, UINT32_MAX, &t.attn_heads, err, errlen);
	ret = ret ?: hf_kv_heads(cfg, &t, err, errlen);
	ret = ret ?: hf_head_dim(cfg, &t, err, errlen);
	ret = ret ?: hf_uint(cfg, ctx, false, UINT32_MAX, &t.max_context, err, errlen);
	if (ret)
		return ret;
	if (t.kv_heads > KV_MAX_KV_HEADS)	/* num_attention_heads, by default */
		return kv_errorf(err, errlen, "%u key/value heads are out of range (1..%u)",
				t.kv_heads, KV_MAX_KV_HEADS);
	if (t.attn_heads % t.kv_heads)
		return kv_errorf(err, errlen,
				"num_attention_heads %u is not a multiple of the %u key/value heads",
				t.attn_heads, t.kv_heads);
	hf_dtype(cfg, &t);
	hf_window(cfg, &t);
	*m = t;
	if (err && errlen)
		err[0] = '\0';
	return 0;
}

/**
 * kv_model_load_hf() - a model's KV facts from a Hugging Face config.json file
 * @path:   the file
 * @m:      receives the model; written only on success
 * @err:    on error, "PATH:LINE:COLUMN: reason" for a file that is not
 *          JSON, "PATH: reason" otherwise; may be NULL
 * @errlen: size of @err; KV_MODEL_ERR_MAX plus the path's length is enough
 *
 * kv_json_load_file() then kv_model_from_hf().
 *
 * Return: 0; -EINVAL for a file that is not JSON or not a usable config;
 * the errors of kv_json_load_file() (-ENOENT, -EACCES, -EFBIG...).
 */
int kv_model_load_hf(const char *path, struct kv_model *m, char *err, size_t errlen)
{
	char msg[KV_MODEL_ERR_MAX];
	struct kv_json *root;
	int ret;

	ret = kv_json_load_file(path, &root, err, errlen);
	if (ret)
		return ret;
	ret = kv_model_from_hf(root, m, msg, sizeof(msg));
	kv_json_free(root);
	if (ret && err && errlen)
		snprintf(err, errlen, "%s: %s", path, msg);
	return ret;
}
