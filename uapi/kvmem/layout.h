/* SPDX-License-Identifier: MIT */
/*
 * kvmem block layout: the one definition of where a token's K and V live.
 *
 * A block holds, for block_tokens consecutive tokens of one sequence, the K
 * and V of every layer in one contiguous region. Inside a block, per layer l,
 * K then V, each laid out as [kv_heads][block_tokens][head_dim] elements:
 *
 *	block = L0.K L0.V L1.K L1.V ... L(n-1).K L(n-1).V
 *	L.K   = [kv_heads][block_tokens][head_dim]
 *
 * A frame is a block-sized slot in a tier's arena; frame f starts at
 * arena base + f * kv_frame_bytes(). kv_frame_bytes() rounds the block up to
 * KV_FRAME_ALIGN so that a frame can be the unit of O_DIRECT I/O and DMA.
 *
 * The daemon, clients and kernels compute addresses from these functions
 * alone; nothing else in kvmem may assume a layout.
 */
#ifndef _UAPI_KVMEM_LAYOUT_H
#define _UAPI_KVMEM_LAYOUT_H

#include <linux/types.h>

/* Element types of a pool's KV (struct kv_geometry.dtype). */
#define KV_DTYPE_FP16	1
#define KV_DTYPE_BF16	2
#define KV_DTYPE_FP32	3
/* 4..15 are reserved for quantized types (INT8, FP8 E4M3, INT4). */

/* Alignment of a frame inside an arena, in bytes. */
#define KV_FRAME_ALIGN	4096u

/* Upper bounds accepted for a geometry; they keep every product in 64 bits. */
#define KV_MAX_LAYERS		1024u
#define KV_MAX_KV_HEADS		1024u
#define KV_MAX_HEAD_DIM		1024u
#define KV_MAX_BLOCK_TOKENS	4096u

/* K or V half of a layer (the @kv argument of kv_elem_offset()). */
#define KV_K	0
#define KV_V	1

/**
 * struct kv_geometry - the shape of a pool's KV cache
 * @layers:       transformer layers held in each block
 * @kv_heads:     key/value heads (GQA groups) per layer
 * @head_dim:     elements per head
 * @block_tokens: tokens per block
 * @dtype:        KV_DTYPE_* element type
 * @pad:          must be zero
 */
struct kv_geometry {
	__u32 layers;
	__u32 kv_heads;
	__u32 head_dim;
	__u32 block_tokens;
	__u32 dtype;
	__u32 pad;
};

/**
 * kv_dtype_size() - bytes per element of a dtype
 * @dtype: KV_DTYPE_*
 *
 * Return: element size in bytes, or 0 for an unknown dtype.
 */
static inline __u32 kv_dtype_size(__u32 dtype)
{
	switch (dtype) {
	case KV_DTYPE_FP16:
	case KV_DTYPE_BF16:
		return 2;
	case KV_DTYPE_FP32:
		return 4;
	default:
		return 0;
	}
}

/**
 * kv_geometry_valid() - check a geometry against the limits above
 * @g: geometry
 *
 * Return: 1 when every field is in range and @g->pad is zero, else 0.
 */
static inline int kv_geometry_valid(const struct kv_geometry *g)
{
	return g->layers && g->layers <= KV_MAX_LAYERS &&
	       g->kv_heads && g->kv_heads <= KV_MAX_KV_HEADS &&
	       g->head_dim && g->head_dim <= KV_MAX_HEAD_DIM &&
	       g->block_tokens && g->block_tokens <= KV_MAX_BLOCK_TOKENS &&
	       kv_dtype_size(g->dtype) && !g->pad;
}

/**
 * kv_head_bytes() - bytes of one head's K (or V) in one block of one layer
 * @g: geometry
 */
static inline __u64 kv_head_bytes(const struct kv_geometry *g)
{
	return (__u64)g->block_tokens * g->head_dim * kv_dtype_size(g->dtype);
}

/**
 * kv_layer_bytes() - bytes of one layer (K and V) in one block
 * @g: geometry
 */
static inline __u64 kv_layer_bytes(const struct kv_geometry *g)
{
	return 2 * (__u64)g->kv_heads * kv_head_bytes(g);
}

/**
 * kv_block_bytes() - bytes of KV one block holds (all layers, K and V)
 * @g: geometry
 */
static inline __u64 kv_block_bytes(const struct kv_geometry *g)
{
	return (__u64)g->layers * kv_layer_bytes(g);
}

/**
 * kv_frame_bytes() - stride between frames in an arena
 * @g: geometry
 *
 * The block size rounded up to KV_FRAME_ALIGN.
 */
static inline __u64 kv_frame_bytes(const struct kv_geometry *g)
{
	__u64 b = kv_block_bytes(g);

	return (b + KV_FRAME_ALIGN - 1) / KV_FRAME_ALIGN * KV_FRAME_ALIGN;
}

/**
 * kv_elem_offset() - byte offset of an element inside a block
 * @g:     geometry
 * @layer: layer index, < layers
 * @kv:    KV_K or KV_V
 * @head:  kv head index, < kv_heads
 * @token: token index inside the block, < block_tokens
 *
 * Offset of element 0 of the head_dim vector; the vector is contiguous.
 */
static inline __u64 kv_elem_offset(const struct kv_geometry *g, __u32 layer,
				   __u32 kv, __u32 head, __u32 token)
{
	return layer * kv_layer_bytes(g) +
	       ((__u64)kv * g->kv_heads + head) * kv_head_bytes(g) +
	       (__u64)token * g->head_dim * kv_dtype_size(g->dtype);
}

/**
 * kv_token_offset() - byte offset of a token's vector inside an arena
 * @g:     geometry
 * @slot:  frame * block_tokens + token-in-block (vLLM's slot mapping)
 * @layer: layer index
 * @kv:    KV_K or KV_V
 * @head:  kv head index
 */
static inline __u64 kv_token_offset(const struct kv_geometry *g, __u64 slot,
				    __u32 layer, __u32 kv, __u32 head)
{
	__u64 frame = slot / g->block_tokens;
	__u32 token = (__u32)(slot % g->block_tokens);

	return frame * kv_frame_bytes(g) +
	       kv_elem_offset(g, layer, kv, head, token);
}

#endif /* _UAPI_KVMEM_LAYOUT_H */
