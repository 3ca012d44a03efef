/* SPDX-License-Identifier: MIT */
/*
 * kvmem kernels: paged decode and prefill attention, KV append, block copy,
 * the gather/scatter used for swap, and the greedy acceptance of speculative
 * drafts, on KV laid out as uapi/kvmem/layout.h says.
 *
 * Every op has a CPU implementation (kv_*_cpu, in libkvkernels.a, the CPU
 * backend and the reference) and a CUDA implementation (kv_*_cuda, in
 * libkvkernels_cuda.a) with the same signature: one argument struct.
 *
 * Memory: for the CPU implementations every pointer is host memory. For the
 * CUDA implementations every pointer the kernels read or write (arena, q,
 * out, block table, context lengths, slots, frame lists, status, workspace)
 * must be accessible from the device (device memory, or mapped pinned host
 * memory); the argument struct itself is read on the host. CUDA calls are
 * asynchronous on @stream (a cudaStream_t, NULL for the default stream).
 *
 * Errors: a negative errno. Arguments that can be checked without reading
 * memory the kernel reads (geometry, head counts, null pointers) are
 * checked by both implementations before anything is launched or written.
 * Data-dependent faults (a frame number past the arena, a context longer
 * than its block table, a slot past the arena) are checked by the CPU
 * implementation before it writes anything (-EINVAL, nothing written); the
 * CUDA implementation checks them on the device: it never touches memory
 * outside the arena, stores -EINVAL in *status when @status is not NULL,
 * and writes NaN to the outputs of the affected sequence (decode) or skips
 * the affected item (append, copy, gather, scatter).
 */
#ifndef _KVMEM_KERNELS_H
#define _KVMEM_KERNELS_H

#include <stddef.h>
#include <linux/types.h>
#include "uapi/kvmem/layout.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most query heads of decode and prefill (q_heads): any model's, with room. */
#define KV_MAX_Q_HEADS	65536u

/**
 * struct kv_arena_ref - the arena a kernel works on
 * @base:   address of frame 0
 * @frames: number of frames in the arena; frame numbers >= @frames are errors
 * @g:      the pool's geometry (must pass kv_geometry_valid())
 */
struct kv_arena_ref {
	void *base;
	__u64 frames;
	struct kv_geometry g;
};

/**
 * struct kv_decode_args - paged decode attention, one query token per sequence
 * @arena:        the KV arena
 * @layer:        layer whose K and V are attended to
 * @batch:        number of sequences
 * @q_heads:      query heads; a multiple of arena.g.kv_heads (GQA groups of
 *                q_heads / kv_heads consecutive query heads share a KV head),
 *                at most KV_MAX_Q_HEADS
 * @window:       sliding window in tokens (0: attend to the whole context);
 *                with a window W only the last W tokens are attended to
 * @scale:        softmax scale (usually 1/sqrt(head_dim))
 * @q:            [batch][q_heads][head_dim] elements of the I/O dtype
 * @out:          [batch][q_heads][head_dim] elements of the I/O dtype
 * @block_table:  [batch][table_stride] frame numbers; entry i of sequence b
 *                holds tokens i*block_tokens .. (i+1)*block_tokens-1
 * @table_stride: entries per row of @block_table (the table's width)
 * @ctx_lens:     [batch] tokens of context per sequence, at most
 *                table_stride * block_tokens; 0 gives an output of zeros
 * @status:       optional; set to a negative errno on a data-dependent fault
 * @workspace:    scratch for the split-context path of the CUDA
 *                implementation, kv_decode_workspace_bytes() bytes; may be
 *                NULL, which disables splitting (the CPU one ignores it)
 * @workspace_bytes: size of @workspace
 * @threads:      CPU threads to use (0: as many as helps, up to the CPUs
 *                online); the CUDA implementation ignores it
 * @io_dtype:     the I/O dtype, element type of @q and @out: 0 for
 *                arena.g.dtype; a quantized pool needs KV_DTYPE_FP16 or
 *                KV_DTYPE_BF16 here (kv_io_dtype())
 * @stream:       cudaStream_t for the CUDA implementation; ignored on the CPU
 */
struct kv_decode_args {
	struct kv_arena_ref arena;
	__u32 layer;
	__u32 batch;
	__u32 q_heads;
	__u32 window;
	float scale;
	__u32 table_stride;
	const void *q;
	void *out;
	const __u32 *block_table;
	const __u32 *ctx_lens;
	__s32 *status;
	void *workspace;
	__u64 workspace_bytes;
	__u32 threads;
	__u32 io_dtype;
	void *stream;
};

/**
 * struct kv_append_args - write new tokens' K and V of one layer into blocks
 * @arena:   the KV arena
 * @layer:   layer written
 * @tokens:  number of tokens (a ragged batch flattened)
 * @k:       [tokens][kv_heads][head_dim] elements of the I/O dtype
 * @v:       [tokens][kv_heads][head_dim] elements of the I/O dtype
 * @slots:   [tokens] slot of each token (frame * block_tokens + token in
 *           block); a negative slot skips the token (padding)
 * @status:  optional; set to a negative errno on a data-dependent fault
 * @threads: CPU threads (0: automatic); ignored by the CUDA implementation
 * @io_dtype: element type of @k and @v, as for struct kv_decode_args
 * @stream:  cudaStream_t for the CUDA implementation
 *
 * Quantized pools quantize on append. INT4: each token's values get a
 * scale per group of KV_INT4_GROUP dims (amax / 7, as binary16). INT8 and
 * FP8 keep one scale per (block, layer, K or V, head), amax / 127 or
 * amax / 448: the tokens are taken in runs, a run being consecutive
 * entries of @slots in one frame (a negative slot ends a run), and for
 * each run and head the scale becomes the run's own when the run writes
 * the block's token 0 (a block starts anew), else the larger of the old
 * one and the run's; when it grows, the block's other values are
 * requantized to it first. A block whose stored scale is not a finite
 * number >= 0 (never written) starts anew too. An INT8 or FP8 frame may be
 * written by one run per call (the CPU returns -EINVAL otherwise; on CUDA
 * that block's values are undefined); INT4 has no such rule. A slot given
 * twice in one INT8 or FP8 run keeps the later token's values; elsewhere
 * (INT4, or 16-bit pools) which of the two is kept is undefined. Both
 * implementations give the same bytes.
 */
struct kv_append_args {
	struct kv_arena_ref arena;
	__u32 layer;
	__u32 tokens;
	const void *k;
	const void *v;
	const __s64 *slots;
	__s32 *status;
	__u32 threads;
	__u32 io_dtype;
	void *stream;
};

/**
 * struct kv_copy_args - copy whole blocks (all layers) between frames
 * @arena:  the KV arena
 * @pairs:  number of (src, dst) pairs
 * @src:    [pairs] source frames
 * @dst:    [pairs] destination frames; no frame may be a destination twice
 *          or both a source and a destination in one call
 * @status, @threads, @stream: as for struct kv_append_args
 *
 * Used for copy-on-write: a shared block is copied before it is written.
 */
struct kv_copy_args {
	struct kv_arena_ref arena;
	__u32 pairs;
	__u32 threads;
	const __u32 *src;
	const __u32 *dst;
	__s32 *status;
	void *stream;
};

/**
 * struct kv_gather_args - move many blocks to or from one contiguous buffer
 * @arena:   the KV arena
 * @nframes: number of frames
 * @frames:  [nframes] frame numbers
 * @buf:     nframes * kv_block_bytes() bytes; block i of @buf is frame
 *           frames[i] (for swap: the staging buffer of one batch of I/O)
 * @status, @threads, @stream: as for struct kv_append_args
 *
 * Gather copies frames -> @buf, scatter copies @buf -> frames. For scatter
 * no frame may appear twice.
 */
struct kv_gather_args {
	struct kv_arena_ref arena;
	__u32 nframes;
	__u32 threads;
	const __u32 *frames;
	void *buf;
	__s32 *status;
	void *stream;
};

/**
 * struct kv_prefill_args - paged prefill attention for a ragged batch of queries
 * @arena:        the KV arena
 * @layer:        layer whose K and V are attended to
 * @batch:        number of sequences
 * @q_heads:      query heads; a multiple of arena.g.kv_heads (GQA as for decode)
 * @window:       sliding window in tokens (0: none); a query at position p
 *                attends to tokens max(0, p - window + 1) .. p
 * @scale:        softmax scale (usually 1/sqrt(head_dim))
 * @tokens:       query tokens in all (q_start[batch])
 * @q:            [tokens][q_heads][head_dim] elements of the I/O dtype
 * @out:          [tokens][q_heads][head_dim] elements of the I/O dtype
 * @q_start:      [batch + 1] ascending, q_start[0] = 0: the queries of
 *                sequence b are rows q_start[b] .. q_start[b + 1] - 1
 * @block_table:  [batch][table_stride] frame numbers, as for decode
 * @table_stride: entries per row of @block_table
 * @ctx_lens:     [batch] tokens in each sequence's KV, the new ones included
 *                (append them first); the n queries of sequence b are its
 *                last n tokens, at positions ctx_lens[b] - n .. ctx_lens[b] - 1,
 *                and attend causally to the cached prefix and to each other
 * @max_q_len:    the most queries of one sequence (0: take @tokens); sizes
 *                the CUDA launch, which is planned without reading @q_start
 * @io_dtype:     element type of @q and @out, as for struct kv_decode_args
 * @status, @threads, @stream: as for struct kv_decode_args; the
 *                data-dependent faults are those of decode plus @q_start not
 *                ascending from 0 to @tokens, a sequence with more queries
 *                than its context or than @max_q_len (CUDA: NaN outputs for
 *                that sequence where it has rows to write)
 *
 * Plain prefill (nothing cached), chunked prefill (new tokens onto a cached
 * prefix) and speculative verification (draft tokens onto the context) are
 * all this one case.
 */
struct kv_prefill_args {
	struct kv_arena_ref arena;
	__u32 layer;
	__u32 batch;
	__u32 q_heads;
	__u32 window;
	float scale;
	__u32 table_stride;
	__u32 tokens;
	__u32 max_q_len;
	__u32 threads;
	__u32 io_dtype;
	const void *q;
	void *out;
	const __u32 *q_start;
	const __u32 *block_table;
	const __u32 *ctx_lens;
	__s32 *status;
	void *stream;
};

/**
 * struct kv_verify_args - greedy acceptance of speculative draft tokens
 * @batch:      number of sequences
 * @max_draft:  width of a row of @draft (drafts per sequence at most)
 * @vocab:      logits per position
 * @dtype:      KV_DTYPE_FP32, KV_DTYPE_FP16 or KV_DTYPE_BF16: @logits' type
 * @draft:      [batch][max_draft] draft token ids (may be NULL when
 *              @max_draft is 0)
 * @draft_lens: [batch] draft tokens of each sequence, at most @max_draft
 * @logits:     [batch][max_draft + 1][vocab] the target model's logits: row
 *              j of sequence b is its prediction for the token after the
 *              context and draft[b][0 .. j-1]
 * @accepted:   [batch] out: the length of the longest draft prefix whose
 *              every token is the argmax of its row
 * @next:       [batch] out: the argmax of row @accepted (the token that
 *              follows the accepted drafts: a correction or a bonus token)
 * @status:     optional; set to -EINVAL when a draft length exceeds
 *              @max_draft or a draft token is outside the vocabulary (that
 *              sequence then gets accepted = 0, next = -1)
 * @stream:     cudaStream_t for the CUDA implementation
 *
 * The argmax is the first index of the largest value; NaN counts as larger
 * than any number (as torch.argmax does). The caller then truncates each
 * sequence to context + accepted tokens (kvc_seq_truncate()) and appends
 * @next.
 */
struct kv_verify_args {
	__u32 batch;
	__u32 max_draft;
	__u32 vocab;
	__u32 dtype;
	const __s32 *draft;
	const __u32 *draft_lens;
	const void *logits;
	__s32 *accepted;
	__s32 *next;
	__s32 *status;
	void *stream;
};

/* CPU implementations (libkvkernels.a). */
int kv_decode_cpu(const struct kv_decode_args *a);
int kv_append_cpu(const struct kv_append_args *a);
int kv_copy_blocks_cpu(const struct kv_copy_args *a);
int kv_gather_cpu(const struct kv_gather_args *a);
int kv_scatter_cpu(const struct kv_gather_args *a);
int kv_prefill_cpu(const struct kv_prefill_args *a);
int kv_verify_cpu(const struct kv_verify_args *a);

/* CUDA implementations (libkvkernels_cuda.a); same contracts. */
int kv_decode_cuda(const struct kv_decode_args *a);
int kv_append_cuda(const struct kv_append_args *a);
int kv_copy_blocks_cuda(const struct kv_copy_args *a);
int kv_gather_cuda(const struct kv_gather_args *a);
int kv_scatter_cuda(const struct kv_gather_args *a);
int kv_prefill_cuda(const struct kv_prefill_args *a);
int kv_verify_cuda(const struct kv_verify_args *a);

/**
 * kv_decode_workspace_bytes() - scratch the CUDA decode may use for @a
 * @a: decode arguments (batch, q_heads, table_stride and geometry are read)
 *
 * Return: bytes of workspace that let the CUDA implementation split every
 * context as finely as its heuristic wants (0 for the CPU implementation).
 */
__u64 kv_decode_workspace_bytes(const struct kv_decode_args *a);

/**
 * kv_io_dtype() - the element type of a kernel's activations
 * @g:        the pool's geometry
 * @io_dtype: the io_dtype field of the arguments
 *
 * Return: @io_dtype, or @g->dtype when it is 0; 0 when the pair is not
 * allowed (an unquantized pool's activations are of its own dtype, a
 * quantized pool's are fp16 or bf16).
 */
static inline __u32 kv_io_dtype(const struct kv_geometry *g, __u32 io_dtype)
{
	if (!kv_dtype_quantized(g->dtype))
		return !io_dtype || io_dtype == g->dtype ? g->dtype : 0;
	return io_dtype == KV_DTYPE_FP16 || io_dtype == KV_DTYPE_BF16 ? io_dtype : 0;
}

/* Argument checks shared by both implementations (kernels/check.c). */
int kv_arena_check(const struct kv_arena_ref *r);
int kv_decode_check(const struct kv_decode_args *a);
int kv_append_check(const struct kv_append_args *a);
int kv_copy_check(const struct kv_copy_args *a);
int kv_gather_check(const struct kv_gather_args *a);
int kv_prefill_check(const struct kv_prefill_args *a);
int kv_verify_check(const struct kv_verify_args *a);

#ifdef __cplusplus
}
#endif

#endif /* _KVMEM_KERNELS_H */
