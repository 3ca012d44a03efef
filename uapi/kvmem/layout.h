/* SPDX-License-Identifier: MIT */
/*
 * kvmem block layout: the one definition of where a token's K and V live.
 *
 * A block holds, for block_tokens consecutive tokens of one sequence, the K
 * and V of every layer in one contiguous region. Inside a block, per layer l,
 * K then V, each laid out as [kv_heads][block_tokens][head_dim] elements:
 *
 *	block = L0.K L0.V L1.K L1.V ... L(n-1).K L(n-1).V [scales]
 *	L.K   = [kv_heads][block_tokens][head_dim]
 *
 * A quantized pool (KV_DTYPE_INT8, _FP8_E4M3, _INT4) stores its values in
 * the same order, head_dim * bits / 8 bytes per token vector (INT4: two
 * values per byte, the even one in the low nibble), and after the last
 * layer the scales, laid out as kv_scale_offset() says:
 *
 *	INT8, FP8: one float per (layer, K or V, kv head) of the block;
 *		   value = q * scale (q: int8 in -127..127, or e4m3)
 *	INT4:	   one binary16 per (layer, K or V, kv head, token, group of
 *		   KV_INT4_GROUP dims); value = (nibble - 8) * scale
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
/* Quantized KV types of a pool (see above); 7..15 are reserved. */
#define KV_DTYPE_INT8		4
#define KV_DTYPE_FP8_E4M3	5
#define KV_DTYPE_INT4		6

/* Values per INT4 scale, along head_dim. */
#define KV_INT4_GROUP	32u

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
 * kv_dtype_size() - bytes per element of an unquantized dtype
 * @dtype: KV_DTYPE_*
 *
 * Return: element size in bytes (fp16, bf16, fp32), or 0 for a quantized
 * or unknown dtype.
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
 * kv_dtype_bits() - bits per stored value of any pool dtype
 * @dtype: KV_DTYPE_*
 *
 * Return: 16, 32, 8 or 4, or 0 for an unknown dtype.
 */
static inline __u32 kv_dtype_bits(__u32 dtype)
{
	switch (dtype) {
	case KV_DTYPE_INT8:
	case KV_DTYPE_FP8_E4M3:
		return 8;
	case KV_DTYPE_INT4:
		return 4;
	default:
		return 8 * kv_dtype_size(dtype);
	}
}

/**
 * kv_dtype_name() - a pool dtype's name, as kvmemd.conf and the tables
 * write it
 * @dtype: KV_DTYPE_*
 *
 * Return: "fp16", "bf16", "fp32", "int8", "fp8", "int4", or "?" for an
 * unknown dtype.
 */
static inline const char *kv_dtype_name(__u32 dtype)
{
	switch (dtype) {
	case KV_DTYPE_FP16:
		return "fp16";
	case KV_DTYPE_BF16:
		return "bf16";
	case KV_DTYPE_FP32:
		return "fp32";
	case KV_DTYPE_INT8:
		return "int8";
	case KV_DTYPE_FP8_E4M3:
		return "fp8";
	case KV_DTYPE_INT4:
		return "int4";
	default:
		return "?";
	}
}

/**
 * kv_dtype_quantized() - whether a dtype stores scaled values
 * @dtype: KV_DTYPE_*
 */
static inline int kv_dtype_quantized(__u32 dtype)
{
	return dtype == KV_DTYPE_INT8 || dtype == KV_DTYPE_FP8_E4M3 ||
	       dtype == KV_DTYPE_INT4;
}

/**
 * kv_geometry_valid() - check a geometry against the limits above
 * @g: geometry
 *
 * A quantized pool also needs head_dim to be a multiple of KV_INT4_GROUP
 * (whole bytes, whole groups, 16-byte vectors for the kernels).
 *
 * Return: 1 when every field is in range and @g->pad is zero, else 0.
 */
static inline int kv_geometry_valid(const struct kv_geometry *g)
{
	return g->layers && g->layers <= KV_MAX_LAYERS &&
	       g->kv_heads && g->kv_heads <= KV_MAX_KV_HEADS &&
	       g->head_dim && g->head_dim <= KV_MAX_HEAD_DIM &&
	       g->block_tokens && g->block_tokens <= KV_MAX_BLOCK_TOKENS &&
	       kv_dtype_bits(g->dtype) && !g->pad &&
	       (!kv_dtype_quantized(g->dtype) || g->head_dim % KV_INT4_GROUP == 0);
}

/**
 * kv_row_bytes() - bytes of one token's K (or V) vector of one head
 * @g: geometry
 */
static inline __u64 kv_row_bytes(const struct kv_geometry *g)
{
	return (__u64)g->head_dim * kv_dtype_bits(g->dtype) / 8;
}

/**
 * kv_head_bytes() - bytes of one head's K (or V) in one block of one layer
 * @g: geometry
 */
static inline __u64 kv_head_bytes(const struct kv_geometry *g)
{
	return (__u64)g->block_tokens * kv_row_bytes(g);
}

/**
 * kv_layer_bytes() - bytes of one layer's values (K and V) in one block
 * @g: geometry
 *
 * The stride between layers; a quantized block's scales come after all of
 * them (kv_scale_offset()).
 */
static inline __u64 kv_layer_bytes(const struct kv_geometry *g)
{
	return 2 * (__u64)g->kv_heads * kv_head_bytes(g);
}

/**
 * kv_head_scale_bytes() - bytes of the scales of one head's K (or V) in a block
 * @g: geometry
 *
 * 4 (one float) for INT8 and FP8, 2 * block_tokens * head_dim / 32 for
 * INT4 (a binary16 per token and group), 0 for an unquantized dtype.
 */
static inline __u64 kv_head_scale_bytes(const struct kv_geometry *g)
{
	switch (g->dtype) {
	case KV_DTYPE_INT8:
	case KV_DTYPE_FP8_E4M3:
		return 4;
	case KV_DTYPE_INT4:
		return 2ull * g->block_tokens * (g->head_dim / KV_INT4_GROUP);
	default:
		return 0;
	}
}

/**
 * kv_scale_offset() - byte offset of one head's scales inside a block
 * @g:     geometry (quantized)
 * @layer: layer index, < layers
 * @kv:    KV_K or KV_V
 * @head:  kv head index, < kv_heads
 *
 * The scales follow the values of the last layer, ordered by layer, then K
 * before V, then head. INT4: token t's scales (one per KV_INT4_GROUP dims)
 * start 2 * t * head_dim / KV_INT4_GROUP bytes further.
 */
static inline __u64 kv_scale_offset(const struct kv_geometry *g, __u32 layer,
				    __u32 kv, __u32 head)
{
	return (__u64)g->layers * kv_layer_bytes(g) +
	       (((__u64)layer * 2 + kv) * g->kv_heads + head) * kv_head_scale_bytes(g);
}

/**
 * kv_block_bytes() - bytes of KV one block holds (all layers, K and V)
 * @g: geometry
 *
 * The values and, for a quantized pool, their scales.
 */
static inline __u64 kv_block_bytes(const struct kv_geometry *g)
{
	return (__u64)g->layers * kv_layer_bytes(g) +
	       2ull * g->layers * g->kv_heads * kv_head_scale_bytes(g);
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
	       (__u64)token * kv_row_bytes(g);
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
