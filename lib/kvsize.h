/* SPDX-License-Identifier: MIT */
/*
 * KV cache sizing: the bytes a geometry takes per token, per block and per
 * frame, in each KV element type (the pool dtypes, quantized ones included),
 * whole or split over tensor-parallel GPUs; what a memory size holds (the
 * largest batch for a context, the longest context for a batch); and the
 * block size to choose from the lengths of the sequences a pool has seen
 * (a histogram the daemon keeps, KVMEM_STATS_SEQLEN).
 *
 * `kvmemctl estimate' and `kvmemctl advise' print what these compute.
 * Nothing here keeps state.
 */
#ifndef _KV_LIB_KVSIZE_H
#define _KV_LIB_KVSIZE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Internal to kvmem's binaries: not exported by libkvclient.so. */
#define KV_SIZE_HIDDEN	__attribute__((visibility("hidden")))

/* KV element types of an estimate (indexes of kv_size_dtypes[]). */
#define KV_SIZE_FP16		0
#define KV_SIZE_BF16		1
#define KV_SIZE_FP32		2
#define KV_SIZE_INT8		3
#define KV_SIZE_FP8		4	/* E4M3 */
#define KV_SIZE_INT4		5
#define KV_SIZE_NR_DTYPES	6

/*
 * The scales of the quantized types, as uapi/kvmem/layout.h lays them out
 * after the values of a block: INT8 and FP8 one fp32 scale per block,
 * layer, K or V, and KV head; INT4 two values a byte and one fp16 scale per
 * group of KV_INT4_GROUP (32) values of a head vector. They are counted in
 * the block.
 */
#define KV_SIZE_BLOCK_SCALE_BYTES	4
#define KV_SIZE_INT4_GROUP		32
#define KV_SIZE_INT4_SCALE_BYTES	2

/* The most GPUs an estimate splits the KV heads over. */
#define KV_SIZE_TP_MAX		1024

/**
 * struct kv_size_dtype - a KV element type
 * @name:        as kvmemctl and kvmemd.conf write it: "bf16", "int8"...
 * @bits:        bits per value
 * @pool_dtype:  the KV_DTYPE_* of a pool that holds it (int8:
 *               KV_DTYPE_INT8, fp8: KV_DTYPE_FP8_E4M3, int4: KV_DTYPE_INT4)
 * @group:       values per scale: 0 for no scale, UINT32_MAX for one scale
 *               per block, layer, K or V, and head
 * @scale_bytes: bytes of a scale
 */
struct kv_size_dtype {
	const char *name;
	uint32_t bits;
	uint32_t pool_dtype;
	uint32_t group;
	uint32_t scale_bytes;
};

extern KV_SIZE_HIDDEN const struct kv_size_dtype kv_size_dtypes[KV_SIZE_NR_DTYPES];

/**
 * struct kv_size_params - what an estimate is of
 * @layers:       transformer layers
 * @kv_heads:     key/value heads per layer, all GPUs together
 * @head_dim:     values per head
 * @block_tokens: tokens per block
 * @dtype:        KV_SIZE_*
 * @tp:           GPUs the KV heads are split over (tensor parallel); 1
 *                for one GPU
 */
struct kv_size_params {
	uint32_t layers;
	uint32_t kv_heads;
	uint32_t head_dim;
	uint32_t block_tokens;
	uint32_t dtype;
	uint32_t tp;
};

/**
 * struct kv_size - the bytes of one block, on one GPU
 * @heads_per_gpu: KV heads each GPU holds
 * @replicas:      GPUs that hold each KV head: 1, or tp / kv_heads when
 *                 there are more GPUs than KV heads (heads are replicated)
 * @data_bytes:    the values of a block: K and V of every layer
 * @scale_bytes:   the scales of a block (quantized types), else 0
 * @block_bytes:   @data_bytes + @scale_bytes
 * @frame_bytes:   @block_bytes rounded up to 4 KiB: a frame of an arena
 */
struct kv_size {
	uint32_t heads_per_gpu;
	uint32_t replicas;
	uint64_t data_bytes;
	uint64_t scale_bytes;
	uint64_t block_bytes;
	uint64_t frame_bytes;
};

/**
 * struct kv_fit - what a memory size holds
 * @frames:         frames (blocks) of the memory
 * @tokens:         tokens they hold
 * @blocks_per_seq: blocks a sequence of the context needs (0: no context)
 * @batch:          the most sequences of the context that fit (0: no
 *                  context, or not even one fits)
 * @context:        the longest context each of the batch can have (0: no
 *                  batch, or the batch is larger than the frames)
 */
struct kv_fit {
	uint64_t frames;
	uint64_t tokens;
	uint64_t blocks_per_seq;
	uint64_t batch;
	uint64_t context;
};

KV_SIZE_HIDDEN int kv_size_dtype_find(const char *name);
KV_SIZE_HIDDEN int kv_size_dtype_of(uint32_t pool_dtype);
KV_SIZE_HIDDEN int kv_size_compute(const struct kv_size_params *p, struct kv_size *s,
				   char *err, size_t errlen);
KV_SIZE_HIDDEN void kv_size_fit(const struct kv_size *s, uint32_t block_tokens,
				uint64_t memory, uint64_t context, uint64_t batch,
				struct kv_fit *f);

/* ---- sequence lengths and block-size advice ---------------------------- */

/* Length buckets: 0, 1, 2-3, 4-7, ..., 2^31..2^32-1. */
#define KV_SEQLEN_BUCKETS	33
/* Lengths are also counted modulo this: every candidate block size divides it. */
#define KV_SEQLEN_MOD		128

/**
 * struct kv_seqlen_hist - the lengths of the sequences a pool has seen end
 * @count:  sequences
 * @tokens: their tokens, all together
 * @max:    the longest
 * @bucket: sequences per length bucket: [0] of 0 tokens, [k] of 2^(k-1)
 *          to 2^k - 1 tokens
 * @tail:   sequences per length modulo KV_SEQLEN_MOD: enough to count,
 *          for any block size that divides KV_SEQLEN_MOD, the blocks they
 *          took and the slots left empty in their last blocks
 */
struct kv_seqlen_hist {
	uint64_t count;
	uint64_t tokens;
	uint64_t max;
	uint64_t bucket[KV_SEQLEN_BUCKETS];
	uint64_t tail[KV_SEQLEN_MOD];
};

/* Candidate block sizes of the advice. */
#define KV_ADVISE_NR		5
/* Waste allowed by default, in percent of the KV memory the sequences took. */
#define KV_ADVISE_WASTE_PCT	5

/**
 * struct kv_advice_row - one candidate block size
 * @block_tokens:   tokens per block: 8, 16, 32, 64 or 128
 * @frame_bytes:    a frame of it, for the pool's bytes per token
 * @blocks:         blocks the sequences would have taken
 * @unused:         token slots left empty in their last blocks
 * @waste:          fraction of the frames' bytes not holding KV: the empty
 *                  slots and the rounding of a block up to its frame
 */
struct kv_advice_row {
	uint32_t block_tokens;
	uint64_t frame_bytes;
	uint64_t blocks;
	uint64_t unused;
	double waste;
};

/**
 * struct kv_advice - block sizes compared over a histogram
 * @rows:      one per candidate, smallest block first
 * @best:      index of the advised row
 * @max_waste: the waste allowed, a fraction
 * @within:    @rows[@best] keeps within @max_waste (else none does, and it
 *             is the one that wastes least)
 */
struct kv_advice {
	struct kv_advice_row rows[KV_ADVISE_NR];
	int best;
	double max_waste;
	int within;
};

KV_SIZE_HIDDEN void kv_seqlen_record(struct kv_seqlen_hist *h, uint32_t nr_tokens);
KV_SIZE_HIDDEN int kv_seqlen_print(const struct kv_seqlen_hist *h, FILE *f);
KV_SIZE_HIDDEN int kv_seqlen_parse(const char *text, size_t len, struct kv_seqlen_hist *h);
KV_SIZE_HIDDEN int kv_advise(const struct kv_seqlen_hist *h, uint64_t token_bytes,
			     double max_waste, struct kv_advice *a);
KV_SIZE_HIDDEN void kv_advise_print(const struct kv_seqlen_hist *h, const struct kv_advice *a,
				    uint32_t block_tokens, const char *pool, FILE *f);

#endif /* _KV_LIB_KVSIZE_H */
