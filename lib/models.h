/* SPDX-License-Identifier: MIT */
/*
 * Decoder models as kvmem sees them: the facts of their KV cache (layers,
 * KV heads, head size, the dtype they are served in, sliding windows), for
 * a table of common models (presets, `pool.NAME.model`, `kvmemctl estimate
 * --model`) and for any Hugging Face config.json (`pool.NAME.hf_config`,
 * `kvmemctl estimate --hf-config`).
 *
 * Nothing here keeps state; the preset table is constant.
 */
#ifndef _KV_LIB_MODELS_H
#define _KV_LIB_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "lib/json.h"
#include "uapi/kvmem/layout.h"

/* Internal to kvmem's binaries: not exported by libkvclient.so. */
#define KV_MODELS_HIDDEN	__attribute__((visibility("hidden")))

/* Buffer sizes, NUL included. */
#define KV_MODEL_NAME_MAX	32
#define KV_MODEL_HF_ID_MAX	96

/* A good size for the error buffers of kv_model_load_hf(), path excluded. */
#define KV_MODEL_ERR_MAX	KV_JSON_ERR_MAX

/**
 * struct kv_model - the KV cache facts of a decoder model
 * @name:          preset name ("llama3-8b"); for a config.json, its
 *                 model_type ("llama"), or "" when it has none
 * @hf_id:         the Hugging Face repository of a preset
 *                 ("meta-llama/Meta-Llama-3-8B"); for a config.json its
 *                 _name_or_path, or ""
 * @layers:        transformer layers (num_hidden_layers)
 * @attn_heads:    query heads (num_attention_heads)
 * @kv_heads:      key/value heads per layer (num_key_value_heads; 1 for
 *                 multi-query attention, @attn_heads without GQA)
 * @head_dim:      elements per head
 * @dtype:         KV_DTYPE_* the model is served in: its torch_dtype, or
 *                 bf16 where that is float32 (Gemma 2) or not given; 0
 *                 for a config.json whose torch_dtype kvmem has no pool
 *                 dtype for
 * @max_context:   max_position_embeddings; 0 when not known
 * @window:        tokens of the sliding window of attention, 0 for none
 * @window_layers: layers that attend within @window only (all of them for
 *                 Mistral 7B v0.1, every other one for Gemma 2); 0 when
 *                 @window is 0
 */
struct kv_model {
	char name[KV_MODEL_NAME_MAX];
	char hf_id[KV_MODEL_HF_ID_MAX];
	uint32_t layers;
	uint32_t attn_heads;
	uint32_t kv_heads;
	uint32_t head_dim;
	uint32_t dtype;
	uint32_t max_context;
	uint32_t window;
	uint32_t window_layers;
};

KV_MODELS_HIDDEN size_t kv_model_count(void);
KV_MODELS_HIDDEN const struct kv_model *kv_model_at(size_t i);
KV_MODELS_HIDDEN const struct kv_model *kv_model_find(const char *name);
KV_MODELS_HIDDEN int kv_model_from_hf(const struct kv_json *root, struct kv_model *m,
				      char *err, size_t errlen);
KV_MODELS_HIDDEN int kv_model_load_hf(const char *path, struct kv_model *m,
				      char *err, size_t errlen);
KV_MODELS_HIDDEN void kv_model_geometry(const struct kv_model *m, uint32_t block_tokens,
					struct kv_geometry *g);

#endif /* _KV_LIB_MODELS_H */
