// SPDX-License-Identifier: MIT
/*
 * lib/models.c: the presets carry their published numbers (layers, KV
 * heads, head_dim) and are found by name; Hugging Face config.json files
 * as published (Llama 2 and 3, Mistral 7B v0.1 with its sliding window,
 * Gemma 2 with its alternating one, Falcon 7B multi-query in its old and
 * new forms, Falcon 40B, Phi-3 without num_key_value_heads, Qwen2.5 with
 * use_sliding_window false, a multimodal config with text_config) give the
 * same numbers; configs that are not usable are refused with the reason.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "lib/models.h"

/* The published numbers: config.json of each model's repository. */
static const struct {
	const char *name;
	uint32_t layers, kv_heads, head_dim, dtype;
} published[] = {
	{ "llama2-7b", 32, 32, 128, KV_DTYPE_FP16 },
	{ "llama2-13b", 40, 40, 128, KV_DTYPE_FP16 },
	{ "llama2-70b", 80, 8, 128, KV_DTYPE_FP16 },
	{ "llama3-8b", 32, 8, 128, KV_DTYPE_BF16 },
	{ "llama3.1-8b", 32, 8, 128, KV_DTYPE_BF16 },
	{ "llama3-70b", 80, 8, 128, KV_DTYPE_BF16 },
	{ "llama3.1-70b", 80, 8, 128, KV_DTYPE_BF16 },
	{ "llama3.1-405b", 126, 8, 128, KV_DTYPE_BF16 },
	{ "mistral-7b", 32, 8, 128, KV_DTYPE_BF16 },
	{ "mixtral-8x7b", 32, 8, 128, KV_DTYPE_BF16 },
	{ "phi-3-mini", 32, 32, 96, KV_DTYPE_BF16 },
	{ "phi-3-medium", 40, 10, 128, KV_DTYPE_BF16 },
	{ "qwen2.5-7b", 28, 4, 128, KV_DTYPE_BF16 },
	{ "qwen2.5-72b", 80, 8, 128, KV_DTYPE_BF16 },
	{ "gemma-2-9b", 42, 8, 256, KV_DTYPE_BF16 },
	{ "gemma-2-27b", 46, 16, 128, KV_DTYPE_BF16 },
	{ "falcon-7b", 32, 1, 64, KV_DTYPE_BF16 },
	/* 8192 hidden over 128 heads: head_dim 64, 8 KV groups */
	{ "falcon-40b", 60, 8, 64, KV_DTYPE_BF16 },
};

TEST(presets_have_the_published_numbers)
{
	const struct kv_model *m;
	size_t i;

	for (i = 0; i < sizeof(published) / sizeof(published[0]); i++) {
		m = kv_model_find(published[i].name);
		ASSERT_NE_NULL(m);
		EXPECT_STREQ(published[i].name, m->name);
		EXPECT_EQ(published[i].layers, m->layers);
		EXPECT_EQ(published[i].kv_heads, m->kv_heads);
		EXPECT_EQ(published[i].head_dim, m->head_dim);
		EXPECT_EQ(published[i].dtype, m->dtype);
	}
	/* Sliding windows: all of Mistral 7B v0.1, every other layer of Gemma 2. */
	m = kv_model_find("mistral-7b");
	EXPECT_EQ(4096, m->window);
	EXPECT_EQ(32, m->window_layers);
	m = kv_model_find("gemma-2-9b");
	EXPECT_EQ(4096, m->window);
	EXPECT_EQ(21, m->window_layers);
	EXPECT_EQ(0, kv_model_find("llama3-8b")->window);
	EXPECT_EQ(0, kv_model_find("mixtral-8x7b")->window);
	EXPECT_EQ(8192, kv_model_find("llama3-8b")->max_context);
	EXPECT_EQ(131072, kv_model_find("llama3.1-8b")->max_context);
	EXPECT_STREQ("meta-llama/Meta-Llama-3-8B", kv_model_find("llama3-8b")->hf_id);
}

TEST(every_preset_is_sane)
{
	const struct kv_model *m, *o;
	struct kv_geometry g;
	size_t i, j;

	for (i = 0; (m = kv_model_at(i)); i++) {
		EXPECT_TRUE(m == kv_model_find(m->name));
		for (j = 0; j < i; j++) {
			o = kv_model_at(j);
			EXPECT_STRNE(o->name, m->name);
		}
		kv_model_geometry(m, 16, &g);
		EXPECT_TRUE(kv_geometry_valid(&g));
		EXPECT_EQ(0, m->attn_heads % m->kv_heads);
		EXPECT_TRUE(m->window_layers <= m->layers);
		EXPECT_EQ(!m->window, !m->window_layers);
		EXPECT_LT(0, m->max_context);
		EXPECT_STRNE("?", kv_dtype_name(m->dtype));
	}
	EXPECT_EQ(i, kv_model_count());
	EXPECT_NULL(kv_model_find("llama3"));
	EXPECT_NULL(kv_model_find(""));
	EXPECT_NULL(kv_model_find("LLAMA3-8B"));
}

static int from_text(const char *json, struct kv_model *m, char *err, size_t len)
{
	char jerr[KV_JSON_ERR_MAX];
	struct kv_json *root;
	int ret;

	ret = kv_json_parse(json, strlen(json), &root, jerr, sizeof(jerr));
	if (ret) {
		snprintf(err, len, "%s", jerr);
		return ret;
	}
	ret = kv_model_from_hf(root, m, err, len);
	kv_json_free(root);
	return ret;
}

/* Published config.json files (the members that matter, and some others). */
static const struct {
	const char *preset;
	const char *json;
} hf[] = {
	{ "llama2-7b",
	  "{\"_name_or_path\": \"meta-llama/Llama-2-7b-hf\", \"architectures\": [\"LlamaForCausalLM\"],"
	  " \"hidden_size\": 4096, \"max_position_embeddings\": 4096, \"model_type\": \"llama\","
	  " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 32,"
	  " \"rms_norm_eps\": 1e-05, \"rope_scaling\": null, \"torch_dtype\": \"float16\"}" },
	{ "llama3-8b",
	  "{\"hidden_size\": 4096, \"max_position_embeddings\": 8192, \"model_type\": \"llama\","
	  " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
	  " \"rope_theta\": 500000.0, \"torch_dtype\": \"bfloat16\"}" },
	{ "mistral-7b",
	  "{\"hidden_size\": 4096, \"max_position_embeddings\": 32768, \"model_type\": \"mistral\","
	  " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
	  " \"sliding_window\": 4096, \"torch_dtype\": \"bfloat16\"}" },
	{ "mixtral-8x7b",
	  "{\"hidden_size\": 4096, \"max_position_embeddings\": 32768, \"model_type\": \"mixtral\","
	  " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
	  " \"num_local_experts\": 8, \"sliding_window\": null, \"torch_dtype\": \"bfloat16\"}" },
	{ "gemma-2-9b",
	  "{\"head_dim\": 256, \"hidden_size\": 3584, \"max_position_embeddings\": 8192,"
	  " \"model_type\": \"gemma2\", \"num_attention_heads\": 16, \"num_hidden_layers\": 42,"
	  " \"num_key_value_heads\": 8, \"sliding_window\": 4096, \"torch_dtype\": \"float32\"}" },
	{ "gemma-2-27b",
	  "{\"head_dim\": 128, \"hidden_size\": 4608, \"max_position_embeddings\": 8192,"
	  " \"model_type\": \"gemma2\", \"num_attention_heads\": 32, \"num_hidden_layers\": 46,"
	  " \"num_key_value_heads\": 16, \"sliding_window\": 4096, \"torch_dtype\": \"float32\"}" },
	{ "phi-3-mini",
	  "{\"hidden_size\": 3072, \"max_position_embeddings\": 4096, \"model_type\": \"phi3\","
	  " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"torch_dtype\": \"bfloat16\"}" },
	{ "qwen2.5-7b",
	  "{\"hidden_size\": 3584, \"max_position_embeddings\": 32768, \"max_window_layers\": 28,"
	  " \"model_type\": \"qwen2\", \"num_attention_heads\": 28, \"num_hidden_layers\": 28,"
	  " \"num_key_value_heads\": 4, \"sliding_window\": 131072, \"use_sliding_window\": false,"
	  " \"torch_dtype\": \"bfloat16\"}" },
	/* Falcon 7B as first published (RefinedWebModel) and as in transformers */
	{ "falcon-7b",
	  "{\"hidden_size\": 4544, \"model_type\": \"RefinedWebModel\", \"multi_query\": true,"
	  " \"n_head\": 71, \"n_layer\": 32, \"parallel_attn\": true, \"torch_dtype\": \"bfloat16\"}" },
	{ "falcon-7b",
	  "{\"hidden_size\": 4544, \"model_type\": \"falcon\", \"multi_query\": true,"
	  " \"new_decoder_architecture\": false, \"num_attention_heads\": 71,"
	  " \"num_hidden_layers\": 32, \"torch_dtype\": \"bfloat16\"}" },
	{ "falcon-40b",
	  "{\"hidden_size\": 8192, \"model_type\": \"falcon\", \"new_decoder_architecture\": true,"
	  " \"num_attention_heads\": 128, \"num_hidden_layers\": 60, \"num_kv_heads\": 8,"
	  " \"torch_dtype\": \"bfloat16\"}" },
	{ "falcon-40b",
	  "{\"hidden_size\": 8192, \"model_type\": \"RefinedWeb\", \"n_head\": 128,"
	  " \"n_head_kv\": 8, \"n_layer\": 60, \"new_decoder_architecture\": true}" },
};

TEST(hf_configs_match_the_presets)
{
	char err[KV_MODEL_ERR_MAX];
	const struct kv_model *p;
	struct kv_model m;
	size_t i;

	for (i = 0; i < sizeof(hf) / sizeof(hf[0]); i++) {
		p = kv_model_find(hf[i].preset);
		ASSERT_NE_NULL(p);
		memset(&m, 0x5a, sizeof(m));
		EXPECT_EQ(0, from_text(hf[i].json, &m, err, sizeof(err)));
		EXPECT_STREQ("", err);
		EXPECT_EQ(p->layers, m.layers);
		EXPECT_EQ(p->attn_heads, m.attn_heads);
		EXPECT_EQ(p->kv_heads, m.kv_heads);
		EXPECT_EQ(p->head_dim, m.head_dim);
		EXPECT_EQ(p->dtype, m.dtype);
		EXPECT_EQ(p->window, m.window);
		EXPECT_EQ(p->window_layers, m.window_layers);
		if (m.max_context)
			EXPECT_EQ(p->max_context, m.max_context);
		if (p->layers != m.layers || p->kv_heads != m.kv_heads ||
		    p->head_dim != m.head_dim || p->window != m.window)
			TH_LOG("config %zu (%s)", i, hf[i].preset);
	}
}

TEST(hf_config_details)
{
	char err[KV_MODEL_ERR_MAX];
	struct kv_model m;

	/* A multimodal model: the language model's numbers are in text_config. */
	ASSERT_EQ(0, from_text("{\"_name_or_path\": \"llava-hf/llava-1.5-7b-hf\","
			       " \"model_type\": \"llava\", \"vision_config\": {\"num_hidden_layers\": 24},"
			       " \"text_config\": {\"model_type\": \"llama\", \"num_hidden_layers\": 32,"
			       " \"num_attention_heads\": 32, \"hidden_size\": 4096,"
			       " \"torch_dtype\": \"float16\"}}", &m, err, sizeof(err)));
	EXPECT_STREQ("llama", m.name);
	EXPECT_STREQ("llava-hf/llava-1.5-7b-hf", m.hf_id);
	EXPECT_EQ(32, m.layers);
	EXPECT_EQ(32, m.kv_heads);
	EXPECT_EQ(128, m.head_dim);
	EXPECT_EQ(KV_DTYPE_FP16, m.dtype);
	/* head_dim null is as if absent; newer transformers write "dtype". */
	ASSERT_EQ(0, from_text("{\"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
			       " \"num_key_value_heads\": 2, \"hidden_size\": 256, \"head_dim\": null,"
			       " \"dtype\": \"float16\"}", &m, err, sizeof(err)));
	EXPECT_EQ(64, m.head_dim);
	EXPECT_EQ(KV_DTYPE_FP16, m.dtype);
	EXPECT_EQ(0, m.max_context);
	EXPECT_STREQ("", m.name);
	/* No dtype: bf16; one kvmem has no pool dtype for: 0. */
	ASSERT_EQ(0, from_text("{\"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
			       " \"head_dim\": 64}", &m, err, sizeof(err)));
	EXPECT_EQ(KV_DTYPE_BF16, m.dtype);
	EXPECT_EQ(4, m.kv_heads);
	ASSERT_EQ(0, from_text("{\"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
			       " \"head_dim\": 64, \"torch_dtype\": \"float8_e4m3fn\"}",
			       &m, err, sizeof(err)));
	EXPECT_EQ(0, m.dtype);
	/* Gemma 3: every sixth layer is global; layer_types, where given, decides. */
	ASSERT_EQ(0, from_text("{\"num_hidden_layers\": 34, \"num_attention_heads\": 8,"
			       " \"num_key_value_heads\": 4, \"head_dim\": 256,"
			       " \"sliding_window\": 1024, \"sliding_window_pattern\": 6}",
			       &m, err, sizeof(err)));
	EXPECT_EQ(1024, m.window);
	EXPECT_EQ(29, m.window_layers);
	ASSERT_EQ(0, from_text("{\"num_hidden_layers\": 3, \"num_attention_heads\": 8,"
			       " \"head_dim\": 64, \"sliding_window\": 512, \"layer_types\":"
			       " [\"sliding_attention\", \"full_attention\", \"sliding_attention\"]}",
			       &m, err, sizeof(err)));
	EXPECT_EQ(512, m.window);
	EXPECT_EQ(2, m.window_layers);
}

TEST(hf_config_errors)
{
	static const struct {
		const char *json, *err;
	} bad[] = {
		{ "[]", "the top level is an array, not an object" },
		{ "{}", "num_hidden_layers is missing" },
		{ "{\"num_hidden_layers\": 0, \"num_attention_heads\": 32}",
		  "num_hidden_layers (line 1): 0 is out of range (1..1024)" },
		{ "{\"num_hidden_layers\": -32, \"num_attention_heads\": 32}",
		  "num_hidden_layers (line 1) is -32, not a positive integer" },
		{ "{\"num_hidden_layers\": true, \"num_attention_heads\": 32}",
		  "num_hidden_layers (line 1) is true, not a positive integer" },
		{ "{\"num_hidden_layers\": 32, \"num_attention_heads\": 32,"
		  " \"num_key_value_heads\": 2000, \"head_dim\": 64}",
		  "num_key_value_heads (line 1): 2000 is out of range (1..1024)" },
		{ "{\"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"head_dim\": 2048}",
		  "head_dim (line 1): 2048 is out of range (1..1024)" },
		{ "{\"num_hidden_layers\": 32, \"num_attention_heads\": 2, \"hidden_size\": 4096}",
		  "head_dim 2048 (hidden_size / num_attention_heads) is out of range (1..1024)" },
		{ "{\"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"hidden_size\": 4001}",
		  "hidden_size 4001 is not a multiple of num_attention_heads 32 (and head_dim is missing)" },
		{ "{\"num_hidden_layers\": 32, \"num_attention_heads\": 8,"
		  " \"num_key_value_heads\": 16, \"head_dim\": 64}",
		  "num_attention_heads 8 is not a multiple of the 16 key/value heads" },
		{ "{\"num_hidden_layers\": 32, \"num_attention_heads\": 2048, \"head_dim\": 64}",
		  "2048 key/value heads are out of range (1..1024)" },
	};
	char err[KV_MODEL_ERR_MAX];
	struct kv_model m;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&m, 0x5a, sizeof(m));
		EXPECT_EQ(-EINVAL, from_text(bad[i].json, &m, err, sizeof(err)));
		EXPECT_STREQ(bad[i].err, err);
		EXPECT_EQ(0x5a5a5a5a, m.layers);
	}
	EXPECT_EQ(-EINVAL, kv_model_from_hf(NULL, &m, err, sizeof(err)));
	EXPECT_STREQ("the top level is missing, not an object", err);
}

TEST(hf_config_files)
{
	char path[] = "/tmp/kvmem-hf-XXXXXX", err[KV_MODEL_ERR_MAX + 64], want[256];
	struct kv_model m;
	FILE *f;
	int fd;

	fd = mkstemp(path);
	ASSERT_LE(0, fd);
	f = fdopen(fd, "w");
	fputs(hf[1].json, f);
	fclose(f);
	ASSERT_EQ(0, kv_model_load_hf(path, &m, err, sizeof(err)));
	EXPECT_EQ(8, m.kv_heads);
	EXPECT_STREQ("llama", m.name);
	f = fopen(path, "w");
	fputs("{\"num_attention_heads\": 32}", f);
	fclose(f);
	EXPECT_EQ(-EINVAL, kv_model_load_hf(path, &m, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: num_hidden_layers is missing", path);
	EXPECT_STREQ(want, err);
	f = fopen(path, "w");
	fputs("{\"num_attention_heads\": 32,\n\"num_hidden_layers\": 32,,}", f);
	fclose(f);
	EXPECT_EQ(-EINVAL, kv_model_load_hf(path, &m, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s:2:25: expected a member name", path);
	EXPECT_EQ(0, strncmp(want, err, strlen(want)));
	unlink(path);
	EXPECT_EQ(-ENOENT, kv_model_load_hf(path, &m, err, sizeof(err)));
}

TEST_HARNESS_MAIN
