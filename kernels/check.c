// SPDX-License-Identifier: MIT
/*
 * Argument checks shared by the CPU and CUDA implementations, and the
 * workspace bound of the split-context decode.
 */
#include <errno.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"

/**
 * kv_arena_check() - an arena reference the kernels can index safely
 * @r: arena
 *
 * The geometry must be valid and the arena's last byte addressable in 64 bits.
 */
int kv_arena_check(const struct kv_arena_ref *r)
{
	if (!r->base || !kv_geometry_valid(&r->g))
		return -EINVAL;
	if (r->frames > UINT64_MAX / kv_frame_bytes(&r->g))
		return -EINVAL;
	return 0;
}

/* What decode and prefill check alike: arena, layer, GQA, scale, table. */
static int kv_attn_check(const struct kv_arena_ref *r, __u32 layer, __u32 q_heads,
			 float scale, __u32 table_stride, __u32 io_dtype)
{
	int err = kv_arena_check(r);

	if (err)
		return err;
	if (!kv_io_dtype(&r->g, io_dtype))
		return -EINVAL;
	if (layer >= r->g.layers || !q_heads || q_heads % r->g.kv_heads ||
	    q_heads > KV_MAX_Q_HEADS)
		return -EINVAL;
	if (!(scale - scale == 0.0f))	/* NaN or infinite */
		return -EINVAL;
	if ((__u64)table_stride * r->g.block_tokens > UINT32_MAX)
		return -EINVAL;
	return 0;
}

int kv_decode_check(const struct kv_decode_args *a)
{
	int err = kv_attn_check(&a->arena, a->layer, a->q_heads, a->scale, a->table_stride,
				  a->io_dtype);

	if (err)
		return err;
	if (a->batch && (!a->q || !a->out || !a->ctx_lens ||
			 !a->block_table || !a->table_stride))
		return -EINVAL;
	return 0;
}

int kv_prefill_check(const struct kv_prefill_args *a)
{
	int err = kv_attn_check(&a->arena, a->layer, a->q_heads, a->scale, a->table_stride,
				  a->io_dtype);

	if (err)
		return err;
	if (a->batch && (!a->q_start || !a->ctx_lens || !a->block_table ||
			 !a->table_stride))
		return -EINVAL;
	if (a->tokens && (!a->q || !a->out || !a->batch))
		return -EINVAL;
	return 0;
}

int kv_append_check(const struct kv_append_args *a)
{
	int err = kv_arena_check(&a->arena);

	if (err)
		return err;
	if (a->layer >= a->arena.g.layers || !kv_io_dtype(&a->arena.g, a->io_dtype))
		return -EINVAL;
	if (a->tokens && (!a->k || !a->v || !a->slots))
		return -EINVAL;
	return 0;
}

int kv_copy_check(const struct kv_copy_args *a)
{
	int err = kv_arena_check(&a->arena);

	if (err)
		return err;
	if (a->pairs && (!a->src || !a->dst))
		return -EINVAL;
	return 0;
}

int kv_gather_check(const struct kv_gather_args *a)
{
	int err = kv_arena_check(&a->arena);

	if (err)
		return err;
	if (a->nframes && (!a->frames || !a->buf))
		return -EINVAL;
	return 0;
}

/**
 * kv_decode_split_bound() - most splits the CUDA decode may use per sequence
 * @a: decode arguments
 *
 * Splitting beyond one KV block per split gains nothing, and the number of
 * work items is capped at KV_SPLIT_ITEMS_MAX so that the workspace stays
 * small at every batch size.
 */
__u32 kv_decode_split_bound(const struct kv_decode_args *a)
{
	__u64 base = (__u64)a->batch * a->arena.g.kv_heads;
	__u64 cap;

	if (!base)
		return 1;
	cap = (KV_SPLIT_ITEMS_MAX + base - 1) / base;
	if (cap > a->table_stride)
		cap = a->table_stride;
	if (cap > KV_SPLIT_MAX)
		cap = KV_SPLIT_MAX;
	return cap ? (__u32)cap : 1;
}

__u64 kv_decode_workspace_bytes(const struct kv_decode_args *a)
{
	__u32 splits = kv_decode_split_bound(a);

	if (splits <= 1)
		return 0;
	/* per split and query head: head_dim partial outputs, max and sum */
	return (__u64)a->batch * a->q_heads * splits *
	       (a->arena.g.head_dim + 2) * sizeof(float);
}

/**
 * kv_verify_check() - arguments of speculative verification checkable on the host
 * @a: verification arguments
 *
 * @dtype must be fp32, fp16 or bf16; @vocab non-zero and at most INT32_MAX
 * (token ids are __s32); @max_draft + 1 must not wrap and the logits' bytes
 * must be addressable in 64 bits; with @batch > 0 no array may be NULL
 * (@status is optional; @draft may be with @max_draft 0, as an empty
 * tensor's address is). Nothing is read through the pointers.
 *
 * Return: 0, or -EINVAL.
 */
int kv_verify_check(const struct kv_verify_args *a)
{
	__u64 rows = (__u64)a->max_draft + 1;
	__u32 esz = kv_dtype_size(a->dtype);

	if (!esz || !a->vocab || a->vocab > INT32_MAX || a->max_draft == UINT32_MAX)
		return -EINVAL;
	if (rows * a->batch > UINT64_MAX / a->vocab / esz)
		return -EINVAL;
	if (a->batch && ((!a->draft && a->max_draft) || !a->draft_lens || !a->logits ||
			 !a->accepted || !a->next))
		return -EINVAL;
	return 0;
}
