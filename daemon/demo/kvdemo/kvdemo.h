/* SPDX-License-Identifier: MIT */
/*
 * kvdemo: a small decoder-only transformer (RMSNorm, RoPE, GQA attention,
 * SwiGLU MLP) serving a stream of requests through kvmemd with continuous
 * batching. See Documentation/kvdemo.md.
 *
 *   model.c       the weights (random from a seed) and the forward pass
 *   safetensors.c reading (with shape checks) and writing the weights
 *   kvcache.c     attention over the pool's blocks: K/V written into the
 *                 slots kvmemd hands out, paged decode attention from
 *                 kernels/ over the block tables
 *   check.c       --check: the same model with dense attention over K/V
 *                 kept apart from the cache, logits compared every step
 *   sched.c       requests, admission (ADMIT), continuous batching,
 *                 fork, drafts and truncation, preemption
 *   main.c        options, progress line and summary
 *
 * Nothing here is global: every function gets the structs it works on.
 * Errors are negative errno values; the functions that can fail for a
 * reason the user must see also print it.
 */
#ifndef _KVDEMO_H
#define _KVDEMO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kernels/kvkernels.h"
#include "lib/kvclient/kvclient.h"

/* Token ids below 2^16; the daemon sees them tagged with the model's tag. */
#define KVD_TOKEN_BITS		16
#define KVD_VOCAB_MAX		(1u << KVD_TOKEN_BITS)
#define KVD_NAME_MAX		96	/* tensor names */
#define KVD_TOLERANCE		2e-2	/* --check: largest relative logit error */
/*
 * --check on a quantized pool: the cache rounds K and V to INT8, FP8 or
 * INT4 (with per-block or per-group scales that depend on which tokens
 * share a block), the dense reference does not, so the logits may differ
 * by that rounding too (kvd_check_tolerance()).
 */
#define KVD_TOLERANCE_INT8	2e-2
#define KVD_TOLERANCE_FP8	5e-2
#define KVD_TOLERANCE_INT4	1.5e-1

/**
 * struct kvd_model_cfg - the shape of the model
 * @vocab:      tokens, up to KVD_VOCAB_MAX
 * @dim:        width of the residual stream
 * @layers:     transformer layers (the pool's layers)
 * @q_heads:    query heads, a multiple of @kv_heads (GQA)
 * @kv_heads:   key/value heads (the pool's kv_heads)
 * @head_dim:   elements per head (the pool's head_dim), even
 * @ffn:        hidden width of the SwiGLU MLP
 * @rope_theta: RoPE base
 * @norm_eps:   RMSNorm epsilon
 */
struct kvd_model_cfg {
	uint32_t vocab;
	uint32_t dim;
	uint32_t layers;
	uint32_t q_heads;
	uint32_t kv_heads;
	uint32_t head_dim;
	uint32_t ffn;
	float rope_theta;
	float norm_eps;
};

/**
 * struct kvd_layer - one transformer layer's weights, float32
 *
 * Matrices are kept as [in][out] (the transpose of the [out][in] of a
 * safetensors file), so that a matrix product streams them row by row.
 */
struct kvd_layer {
	float *attn_norm;	/* [dim] */
	float *wq;		/* [dim][q_heads * head_dim] */
	float *wk;		/* [dim][kv_heads * head_dim] */
	float *wv;		/* [dim][kv_heads * head_dim] */
	float *wo;		/* [q_heads * head_dim][dim] */
	float *mlp_norm;	/* [dim] */
	float *w_gate;		/* [dim][ffn] */
	float *w_up;		/* [dim][ffn] */
	float *w_down;		/* [ffn][dim] */
};

/**
 * struct kvd_model - the weights
 * @cfg:        shape
 * @embed:      [vocab][dim] token embeddings
 * @layers:     [cfg.layers]
 * @final_norm: [dim]
 * @lm_head:    [dim][vocab]
 * @inv_freq:   [head_dim / 2] RoPE frequencies
 * @tag:        16 bits of a hash of the weights: the upper half of every
 *              token id the daemon sees, so that two models never share
 *              a cached prefix in one pool
 * @params:     number of parameters
 */
struct kvd_model {
	struct kvd_model_cfg cfg;
	float *embed;
	struct kvd_layer *layers;
	float *final_norm;
	float *lm_head;
	double *inv_freq;
	uint32_t tag;
	uint64_t params;
};

/**
 * struct kvd_tensor - one weight tensor as a safetensors file names it
 * @name:  Hugging Face Llama name (model.layers.0.self_attn.q_proj.weight)
 * @data:  where the model keeps it
 * @ndim:  1 or 2
 * @shape: the file's shape: [out, in] for matrices
 * @transposed: kept as [in][out] in @data
 */
struct kvd_tensor {
	char name[KVD_NAME_MAX];
	float *data;
	uint32_t ndim;
	uint64_t shape[2];
	bool transposed;
};

/**
 * struct kvd_row - one token of a forward pass
 * @token:  model token id
 * @pos:    its position in its sequence
 * @seq:    index of its sequence in struct kvd_batch.seqs
 * @slot:   the cache's slot for its K and V (frame * block_tokens + offset)
 * @logits: row of struct kvd_batch.logits that receives its logits, or -1
 */
struct kvd_row {
	uint32_t token;
	uint32_t pos;
	uint32_t seq;
	int64_t slot;
	int32_t logits;
};

struct kvd_ref;

/**
 * struct kvd_batch_seq - a sequence with rows in a batch
 * @frames:    its block table (device frames), valid during the pass
 * @nr_blocks: entries of @frames
 * @tokens:    every token of the sequence up to its last row (model ids)
 * @ref:       --check: its dense K/V, kept apart from the cache
 * @who:       request number, for messages
 */
struct kvd_batch_seq {
	const uint32_t *frames;
	uint32_t nr_blocks;
	const uint32_t *tokens;
	struct kvd_ref *ref;
	uint32_t who;
};

/**
 * struct kvd_batch - one forward pass: rows of many sequences
 * @rows:      the tokens, each sequence's in position order
 * @nr_rows:   entries of @rows
 * @seqs:      the sequences
 * @nr_seqs:   entries of @seqs
 * @logits:    [nr_logits][vocab] out
 * @nr_logits: rows that want logits
 */
struct kvd_batch {
	struct kvd_row *rows;
	uint32_t nr_rows;
	struct kvd_batch_seq *seqs;
	uint32_t nr_seqs;
	float *logits;
	uint32_t nr_logits;
};

/**
 * struct kvd_attn_ops - where a forward pass keeps K/V and how it attends
 * @store:  put the rows' K and V of @layer (activations' dtype,
 *          kvd_io_dtype(); [rows][kv_heads * head_dim]) where @attend
 *          finds them
 * @attend: causal attention of each row's query ([rows][q_heads *
 *          head_dim], activations' dtype) over its sequence's tokens
 *          0..pos of @layer, into @out (same shape and dtype)
 */
struct kvd_attn_ops {
	int (*store)(void *ctx, uint32_t layer, const struct kvd_batch *b, const void *k,
		     const void *v);
	int (*attend)(void *ctx, uint32_t layer, const struct kvd_batch *b, const void *q,
		      void *out);
};

/**
 * struct kvd_work - scratch of the forward pass, grown as needed
 * @rows:  rows it has room for
 * @buf:   the float buffers below, one allocation
 * @x:     [rows][dim] the residual stream
 * @h:     [rows][dim] its normed copy; the rows that want logits, gathered
 * @q, @k, @v: [rows][heads * head_dim] projections
 * @att:   [rows][q_heads * head_dim] attention output
 * @gate, @up: [rows][ffn] the MLP's halves
 * @last:  [rows][dim] final norm of the rows that want logits
 * @q16, @k16, @v16, @out16: q, K, V and attention output in the
 *         activations' dtype (kvd_io_dtype())
 * @cos, @sin: [rows][head_dim / 2] RoPE rotations (@cos's allocation)
 */
struct kvd_work {
	uint32_t rows;
	float *buf;
	float *x, *h, *q, *k, *v, *att, *gate, *up, *last;
	void *q16, *k16, *v16, *out16;
	double *cos, *sin;
};

/* model.c */
int kvd_model_init(struct kvd_model *m, const struct kvd_model_cfg *cfg);
void kvd_model_free(struct kvd_model *m);
int kvd_model_randomize(struct kvd_model *m, uint64_t seed);
void kvd_model_finish(struct kvd_model *m);
uint32_t kvd_model_tensors(struct kvd_model *m, struct kvd_tensor *t, uint32_t max);
int kvd_forward(const struct kvd_model *m, struct kvd_work *w, uint32_t dtype,
		struct kvd_batch *b, const struct kvd_attn_ops *ops, void *ctx);
void kvd_work_free(struct kvd_work *w);
int kvd_grow(void *p, uint32_t *cap, uint64_t n, size_t size);
void kvd_to_dtype(uint32_t dtype, const float *src, void *dst, size_t n);
uint32_t kvd_io_dtype(uint32_t pool_dtype);
void kvd_from_dtype(uint32_t dtype, const void *src, float *dst, size_t n);

/* safetensors.c */
int kvd_safetensors_load(struct kvd_model *m, const char *path, uint32_t layers,
			 uint32_t kv_heads, uint32_t head_dim);
int kvd_safetensors_save(struct kvd_model *m, const char *path);

/**
 * struct kvd_cache - attention over kvmemd's blocks
 * @pool:    the pool
 * @arena:   where the kernels find frame 0: the pool's arena (direct), or
 *           the staging copy (staged)
 * @q_heads: query heads of the model
 * @staged:  K/V go through kvc_frame_read/kvc_frame_write and a host
 *           copy of the blocks a pass touches (a GPU's memory, or
 *           --staged); else the kernels work on the shared arena in place
 * @threads: CPU threads for the kernels (0: their choice)
 * @stride:  entries per row of @table in this pass
 * @table:   [rows][stride] block table per row, for the decode kernel
 * @ctx:     [rows] context lengths
 * @slots:   [rows] slots in @arena
 * @stage:   staged: each sequence's blocks, one frame after another
 * @first:   staged: per sequence of the batch, its first frame in @stage
 * @dirty:   staged: per frame of @stage, whether the pass wrote into it
 * @cap_*, @stage_frames: entries allocated
 */
/**
 * struct kvd_gpu - device buffers of the GPU path (kvcache_gpu.c)
 * @base:  the pool's arena, mapped in this process
 * @rows:  the rows' K and V, or queries, of one layer
 * @out:   the rows' attention outputs
 * @table, @ctx, @q_start, @slots: the pass's block tables, context
 *         lengths, rows per sequence, slots
 * @cap_*: bytes each holds
 */
struct kvd_gpu {
	void *base;
	void *rows, *out, *table, *ctx, *q_start, *slots;
	size_t cap_rows, cap_out, cap_table, cap_ctx, cap_q_start, cap_slots;
};

struct kvd_cache {
	struct kvc_pool *pool;
	struct kv_arena_ref arena;
	uint32_t io;		/* the activations' dtype, kvd_io_dtype() */
	uint32_t q_heads;
	bool staged;
	bool on_gpu;		/* the CUDA kernels on the mapped arena */
	struct kvd_gpu gpu;
	uint32_t threads;
	uint32_t stride;
	uint32_t *table;	/* [seqs][stride] */
	uint32_t *ctx;		/* [seqs] */
	uint32_t *q_start;	/* [seqs + 1] rows of each sequence */
	uint32_t max_q;		/* most rows of one sequence */
	int64_t *slots;		/* [rows] */
	char *stage;
	uint32_t *first;
	bool *dirty;
	uint32_t cap_table, cap_ctx, cap_q_start, cap_slots, cap_first, cap_dirty, stage_frames;
};

int kvd_cache_init(struct kvd_cache *kc, struct kvc_pool *pool, uint32_t q_heads, bool staged,
		   uint32_t threads);
void kvd_cache_free(struct kvd_cache *kc);
const char *kvd_cache_mode(const struct kvd_cache *kc);
int kvd_cache_begin(struct kvd_cache *kc, const struct kvd_batch *b);
int kvd_cache_end(struct kvd_cache *kc, const struct kvd_batch *b);
int kvd_cache_corrupt(struct kvd_cache *kc, const uint32_t *frames, uint32_t pos);
extern const struct kvd_attn_ops kvd_cache_ops;

/* kvcache_gpu.c */
int kvd_gpu_init(struct kvd_gpu *gpu, struct kvc_pool *pool);
void kvd_gpu_free(struct kvd_gpu *gpu);
int kvd_gpu_begin(struct kvd_cache *kc, const struct kvd_batch *b);
int kvd_gpu_store(struct kvd_cache *kc, uint32_t layer, const struct kvd_batch *b,
		  const void *k, const void *v);
int kvd_gpu_attend(struct kvd_cache *kc, uint32_t layer, const struct kvd_batch *b,
		   const void *q, void *out);

/**
 * struct kvd_check - --check: the dense recomputation and its verdicts
 * @m:          the model
 * @w:          its own forward scratch
 * @dtype:      the activations' dtype (K, V, q and attention output are
 *              rounded to it as in the cached pass; kvd_io_dtype())
 * @tol:        largest relative logit error accepted (kvd_check_tolerance())
 * @batch:      the reference pass's batch
 * @rows_cap:   rows allocated in @batch
 * @logits_cap: logit rows allocated in @batch
 * @map:        per reference logit row, the cached pass's logit row
 * @rows:       logit rows compared so far
 * @max_err:    largest relative error seen
 */
struct kvd_check {
	const struct kvd_model *m;
	struct kvd_work w;
	uint32_t dtype;
	double tol;
	struct kvd_batch batch;
	uint32_t rows_cap;
	uint32_t logits_cap;
	int32_t *map;
	uint64_t rows;
	double max_err;
};

struct kvd_ref *kvd_ref_new(const struct kvd_model_cfg *cfg);
struct kvd_ref *kvd_ref_clone(const struct kvd_ref *r);
void kvd_ref_truncate(struct kvd_ref *r, uint32_t len);
void kvd_ref_free(struct kvd_ref *r);
int kvd_check_init(struct kvd_check *ck, const struct kvd_model *m, uint32_t pool_dtype);
double kvd_check_tolerance(uint32_t pool_dtype);
void kvd_check_free(struct kvd_check *ck);
int kvd_check_batch(struct kvd_check *ck, const struct kvd_batch *b);

/**
 * struct kvd_opts - what the command line asked for
 * @socket:      kvmemd's socket, or NULL ($KVMEM_SOCKET, the default)
 * @pool:        pool name
 * @weights:     safetensors file to read, or NULL for random weights
 * @save:        safetensors file to write the weights to, or NULL
 * @seed:        seed of the weights and of the request stream
 * @requests:    requests to serve
 * @batch:       most sequences running at once
 * @prefill:     most prompt tokens computed in one step
 * @draft:       draft tokens per step of a drafting request
 * @check:       compare every step's logits with the dense recomputation
 * @staged:      K/V through kvc_frame_read/write even on the cpu backend
 * @threads:     CPU threads for the attention kernels (0: automatic)
 * @progress:    seconds between progress lines (0: none)
 * @fault_step:  testing: corrupt one cached V vector after this step (0:
 *               never); --check must then fail
 * @cfg:         the model's shape for random weights
 */
struct kvd_opts {
	const char *socket;
	const char *pool;
	const char *weights;
	const char *save;
	uint64_t seed;
	uint32_t requests;
	uint32_t batch;
	uint32_t prefill;
	uint32_t draft;
	bool check;
	bool staged;
	uint32_t threads;
	double progress;
	uint64_t fault_step;
	struct kvd_model_cfg cfg;
};

/**
 * struct kvd_stats - what the run did, for the progress line and summary
 */
struct kvd_stats {
	uint64_t served, rejected, forked, drafting, followups;
	uint64_t prompt_tokens, prompt_hit, prompt_computed;
	uint64_t generated, rows;
	uint64_t draft_proposed, draft_accepted, truncations;
	uint64_t steps, step_msgs, local_steps, enomem_waits, yields;
	uint64_t admit_now, admit_later, admit_never, admit_waited;
	uint64_t preemptions, resumes, recomputes, recomputed;
	uint64_t checksum;
};

struct kvd_sched;

int kvd_sched_create(struct kvd_sched **out, const struct kvd_opts *o, struct kvc *c,
		     struct kvc_pool *pool, const struct kvd_model *m);
void kvd_sched_destroy(struct kvd_sched *s);
int kvd_sched_step(struct kvd_sched *s);
bool kvd_sched_done(const struct kvd_sched *s);
const struct kvd_stats *kvd_sched_stats(const struct kvd_sched *s);
void kvd_sched_counts(const struct kvd_sched *s, uint32_t *running, uint32_t *waiting,
		      uint32_t *preempted);
const struct kvd_check *kvd_sched_check(const struct kvd_sched *s);
const char *kvd_sched_kv_mode(const struct kvd_sched *s);

/*
 * The hot loops (matrix products, the reference attention) are built for
 * AVX-512, AVX2 and the baseline, one picked at load time as kernels/
 * does; sanitizer builds keep one. Helpers they call must be KV_INLINE
 * (kernels/simd.h).
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define KVD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KVD_CLONES
#endif

/* Random numbers: splitmix64, deterministic everywhere. */
static inline uint64_t kvd_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A double in [0, 1). */
static inline double kvd_rand_unit(uint64_t *state)
{
	return (double)(kvd_rand(state) >> 11) * 0x1p-53;
}

#endif /* _KVDEMO_H */
