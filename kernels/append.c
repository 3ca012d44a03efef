// SPDX-License-Identifier: MIT
/*
 * KV append on the CPU: the K and V of new tokens of one layer, given as
 * [tokens][kv_heads][head_dim], written into their slots (vLLM's
 * reshape_and_cache). Each (token, head) vector is one contiguous copy.
 */
#include <errno.h>
#include <string.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"
#include "kernels/quant.h"

static void kv_append_item(void *arg, uint64_t t)
{
	const struct kv_append_args *a = arg;
	const struct kv_geometry *g = &a->arena.g;
	__u64 vec = kv_row_bytes(g);
	char *base = a->arena.base;
	__u32 h;

	if (a->slots[t] < 0)
		return;
	for (h = 0; h < g->kv_heads; h++) {
		__u64 src = (t * g->kv_heads + h) * vec;

		memcpy(base + kv_token_offset(g, (__u64)a->slots[t], a->layer, KV_K, h),
		       (const char *)a->k + src, vec);
		memcpy(base + kv_token_offset(g, (__u64)a->slots[t], a->layer, KV_V, h),
		       (const char *)a->v + src, vec);
	}
}

/**
 * kv_append_cpu() - write new tokens' K and V into their slots
 * @a: arguments (see struct kv_append_args)
 *
 * Quantized pools quantize (see struct kv_append_args).
 *
 * Return: 0, -EINVAL (bad arguments, a slot past the arena, a frame written
 * by two runs in a quantized pool: nothing is written then), -ENOMEM.
 */
int kv_append_cpu(const struct kv_append_args *a)
{
	const struct kv_geometry *g = &a->arena.g;
	__u64 slots_max, vec;
	__u32 t;
	int err = kv_append_check(a);

	if (err)
		goto out;
	slots_max = a->arena.frames * g->block_tokens;
	for (t = 0; t < a->tokens; t++) {
		if (a->slots[t] >= 0 && (__u64)a->slots[t] >= slots_max) {
			err = -EINVAL;
			goto out;
		}
	}
	if (kv_dtype_quantized(g->dtype)) {
		err = kv_append_quant_cpu(a);
		if (err)
			goto out;
		return 0;
	}
	vec = 2 * (__u64)g->kv_heads * kv_row_bytes(g);
	kv_parallel_for(a->tokens, a->threads, (1u << 20) / vec + 1,
			kv_append_item, (void *)a);
	return 0;
out:
	if (a->status)
		*a->status = err;
	return err;
}
