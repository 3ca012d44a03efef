// SPDX-License-Identifier: MIT
/*
 * Attention over kvmemd's blocks, the cached path of kvdemo's model: each
 * layer's new K and V go into the slots the daemon (or the client's
 * reserve) gave their tokens, with kv_append_cpu(); then each sequence's
 * rows, which are its newest tokens (a chunk of its prompt, or the token
 * or two it decodes), attend causally over its blocks through its block
 * table with the paged prefill kernel, kv_prefill_cpu(): one call for the
 * pass, a sequence's K/V read once for all of its rows.
 *
 * Direct: on the cpu backend the kernels work on the shared arena that
 * kvc_pool_open() mapped, in place. GPU: on the cuda backend, where kvdemo
 * was built with the CUDA kernels, sees the pool's GPU and the geometry is
 * one the CUDA prefill takes, the same two calls run as kv_append_cuda()
 * and kv_prefill_cuda() on the arena mapped with kvc_pool_map(), in place
 * (kvcache_gpu.c). Staged: otherwise on GPU
 * memory, or with --staged, a pass first reads each of its sequences'
 * blocks with kvc_frame_read() into a host copy laid out as an arena, runs
 * the CPU kernels on the copy, and writes the blocks it wrote into back
 * with kvc_frame_write(). A block a pass writes into belongs to one
 * sequence only (the daemon copied it on write if a fork shared it), so
 * writing the whole block back is safe.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/dtype.h"
#include "kvdemo.h"

/*
 * what kv_prefill_cuda() takes: fp16/bf16 or quantized pools, head_dim
 * 64/128, groups <= 64
 */
static bool cuda_geometry(const struct kv_geometry *g, uint32_t q_heads)
{
	return (g->dtype == KV_DTYPE_FP16 || g->dtype == KV_DTYPE_BF16 ||
		kv_dtype_quantized(g->dtype)) &&
	       (g->head_dim == 64 || g->head_dim == 128) && g->kv_heads &&
	       q_heads % g->kv_heads == 0 && q_heads / g->kv_heads <= 64;
}

/**
 * kvd_cache_init() - attention over a pool's blocks
 * @kc:      filled in
 * @pool:    the pool (kvc_pool_open())
 * @q_heads: query heads of the model
 * @staged:  go through kvc_frame_read/write even where the arena is mapped
 * @threads: CPU threads for the kernels, 0 for their own choice
 *
 * Return: 0, or -EINVAL for a geometry the kernels refuse.
 */
int kvd_cache_init(struct kvd_cache *kc, struct kvc_pool *pool, uint32_t q_heads, bool staged,
		   uint32_t threads)
{
	memset(kc, 0, sizeof(*kc));
	kc->pool = pool;
	kc->q_heads = q_heads;
	kc->threads = threads;
	kc->io = kvd_io_dtype(pool->geom.dtype);
	kc->arena.g = pool->geom;
	kc->arena.frames = pool->nr_frames[KVMEM_TIER_DEVICE];
	if (!staged && pool->backend == KVMEM_BACKEND_CUDA && cuda_geometry(&pool->geom, q_heads) &&
	    !kvd_gpu_init(&kc->gpu, pool)) {
		kc->on_gpu = true;
		kc->arena.base = kc->gpu.base;
		return kv_arena_check(&kc->arena);
	}
	kc->staged = staged || pool->backend != KVMEM_BACKEND_CPU || !pool->base;
	if (kc->staged)		/* the staging copy, from the first pass on */
		return kv_geometry_valid(&pool->geom) ? 0 : -EINVAL;
	kc->arena.base = pool->base;
	return kv_arena_check(&kc->arena);
}

/** kvd_cache_mode() - how the K/V of @kc are reached, in words */
const char *kvd_cache_mode(const struct kvd_cache *kc)
{
	if (kc->on_gpu)
		return "in place in the GPU arena, CUDA kernels (kv_append_cuda, kv_prefill_cuda)";
	if (kc->staged)
		return "staged through kvc_frame_read/write (kernels on the CPU: kv_append_cpu, "
		       "kv_prefill_cpu)";
	return "written and read in place in the shared arena (kernels on the CPU: "
	       "kv_append_cpu, kv_prefill_cpu)";
}

/** kvd_cache_free() - free what kvd_cache_init() and the passes allocated */
void kvd_cache_free(struct kvd_cache *kc)
{
	if (kc->on_gpu)
		kvd_gpu_free(&kc->gpu);
	free(kc->stage);
	free(kc->first);
	free(kc->dirty);
	free(kc->table);
	free(kc->ctx);
	free(kc->q_start);
	free(kc->slots);
	memset(kc, 0, sizeof(*kc));
}

/**
 * kvd_grow() - grow the array *@p of *@cap elements of @size to hold @n
 * (at least doubling); contents kept
 *
 * Return: 0 or -ENOMEM.
 */
int kvd_grow(void *p, uint32_t *cap, uint64_t n, size_t size)
{
	void *q;

	if (n <= *cap)
		return 0;
	if (n > UINT32_MAX / 2)
		return -ENOMEM;
	n = n < 2ull * *cap ? 2ull * *cap : n;
	q = realloc(*(void **)p, n * size);
	if (!q)
		return -ENOMEM;
	*(void **)p = q;
	*cap = (uint32_t)n;
	return 0;
}

static int cache_reserve(struct kvd_cache *kc, const struct kvd_batch *b, uint32_t staged)
{
	int err;

	err = kvd_grow(&kc->ctx, &kc->cap_ctx, b->nr_seqs, sizeof(*kc->ctx));
	err = err ?: kvd_grow(&kc->q_start, &kc->cap_q_start, b->nr_seqs + 1,
			      sizeof(*kc->q_start));
	err = err ?: kvd_grow(&kc->slots, &kc->cap_slots, b->nr_rows, sizeof(*kc->slots));
	err = err ?: kvd_grow(&kc->table, &kc->cap_table, (uint64_t)b->nr_seqs * kc->stride,
			  sizeof(*kc->table));
	if (err || !kc->staged)
		return err;
	err = kvd_grow(&kc->first, &kc->cap_first, b->nr_seqs, sizeof(*kc->first));
	err = err ?: kvd_grow(&kc->dirty, &kc->cap_dirty, staged, sizeof(*kc->dirty));
	return err ?: kvd_grow(&kc->stage, &kc->stage_frames, staged, kc->pool->frame_bytes);
}

/* Read every block of the batch's sequences into the staging copy. */
static int stage_in(struct kvd_cache *kc, const struct kvd_batch *b)
{
	uint64_t bb = kv_block_bytes(&kc->arena.g), fb = kc->pool->frame_bytes;
	uint32_t s, i, f = 0;
	int err;

	for (s = 0; s < b->nr_seqs; s++) {
		kc->first[s] = f;
		for (i = 0; i < b->seqs[s].nr_blocks; i++, f++) {
			err = kvc_frame_read(kc->pool, b->seqs[s].frames[i], 0,
					     kc->stage + (uint64_t)f * fb, bb);
			if (err)
				return err;
			kc->dirty[f] = false;
		}
	}
	kc->arena.base = kc->stage;
	kc->arena.frames = f ? f : 1;
	return 0;
}

/*
 * Row @r's slot. It must be where its sequence's table says position pos
 * lives: a slot the daemon gave and a table copy that disagree are a bug
 * in one of them. The rows of a sequence come together, in position order,
 * and are its newest tokens (what the prefill kernel's q_start describes).
 */
static int row_map(struct kvd_cache *kc, const struct kvd_batch *b, uint32_t r)
{
	const struct kvd_row *row = &b->rows[r];
	const struct kvd_batch_seq *s = &b->seqs[row->seq];
	uint32_t bt = kc->arena.g.block_tokens, bi = row->pos / bt;

	if (bi >= s->nr_blocks || row->slot < 0 ||
	    (uint64_t)row->slot != (uint64_t)s->frames[bi] * bt + row->pos % bt) {
		fprintf(stderr, "kvdemo: request %u, token %u: slot %lld is not where the "
			"block table puts it\n", s->who, row->pos, (long long)row->slot);
		return -EUCLEAN;
	}
	if (r && (row->seq == b->rows[r - 1].seq ? row->pos != b->rows[r - 1].pos + 1 :
		  row->seq < b->rows[r - 1].seq)) {
		fprintf(stderr, "kvdemo: request %u, token %u: rows out of order\n", s->who,
			row->pos);
		return -EUCLEAN;
	}
	kc->q_start[row->seq + 1] = r + 1;
	kc->ctx[row->seq] = row->pos + 1;
	kc->slots[r] = row->slot;
	if (kc->staged) {
		kc->slots[r] = (int64_t)(kc->first[row->seq] + bi) * bt + row->pos % bt;
		kc->dirty[kc->first[row->seq] + bi] = true;
	}
	return 0;
}

/* Sequence @q's block table: the pool's frames, or the staging copy's. */
static void seq_map(struct kvd_cache *kc, const struct kvd_batch *b, uint32_t q)
{
	const struct kvd_batch_seq *s = &b->seqs[q];
	uint32_t *t = kc->table + (uint64_t)q * kc->stride, i, f;

	for (i = 0; i < kc->stride; i++) {
		f = i < s->nr_blocks ? i : 0;
		t[i] = kc->staged ? kc->first[q] + f : s->frames[f];
	}
	kc->q_start[q + 1] = 0;
	kc->ctx[q] = 0;
}

/**
 * kvd_cache_begin() - prepare a forward pass over the blocks: the rows'
 * tables, context lengths and slots, and the staging copy when staged
 * @kc: cache
 * @b:  the batch; its sequences' block tables are those after the step
 *      that gave the rows their slots
 *
 * Return: 0, -ENOMEM, -EUCLEAN (a slot outside its sequence's table), or
 * kvc_frame_read()'s error.
 */
int kvd_cache_begin(struct kvd_cache *kc, const struct kvd_batch *b)
{
	uint32_t s, r, staged = 0;
	int err;

	kc->stride = 1;
	for (s = 0; s < b->nr_seqs; s++) {
		if (b->seqs[s].nr_blocks > kc->stride)
			kc->stride = b->seqs[s].nr_blocks;
		staged += b->seqs[s].nr_blocks;
	}
	err = cache_reserve(kc, b, staged);
	if (!err && kc->staged)
		err = stage_in(kc, b);
	if (err)
		return err;
	kc->q_start[0] = 0;
	for (s = 0; s < b->nr_seqs; s++)
		seq_map(kc, b, s);
	for (r = 0; !err && r < b->nr_rows; r++)
		err = row_map(kc, b, r);
	kc->max_q = 0;
	for (s = 0; !err && s < b->nr_seqs; s++) {
		if (kc->q_start[s + 1] < kc->q_start[s])	/* a sequence without rows */
			kc->q_start[s + 1] = kc->q_start[s];
		if (kc->q_start[s + 1] - kc->q_start[s] > kc->max_q)
			kc->max_q = kc->q_start[s + 1] - kc->q_start[s];
	}
	if (!err && kc->on_gpu)
		err = kvd_gpu_begin(kc, b);
	return err;
}

/**
 * kvd_cache_end() - finish a pass: staged, write the blocks it wrote into
 * back to the pool
 * @kc: cache
 * @b:  the batch of kvd_cache_begin()
 *
 * Return: 0 or kvc_frame_write()'s error.
 */
int kvd_cache_end(struct kvd_cache *kc, const struct kvd_batch *b)
{
	uint64_t bb = kv_block_bytes(&kc->arena.g), fb = kc->pool->frame_bytes;
	uint32_t s, i, f;
	int err;

	if (!kc->staged)
		return 0;
	for (s = 0; s < b->nr_seqs; s++) {
		for (i = 0; i < b->seqs[s].nr_blocks; i++) {
			f = kc->first[s] + i;
			if (!kc->dirty[f])
				continue;
			err = kvc_frame_write(kc->pool, b->seqs[s].frames[i], 0,
					      kc->stage + (uint64_t)f * fb, bb);
			if (err)
				return err;
		}
	}
	return 0;
}

static int cache_store(void *ctx, uint32_t layer, const struct kvd_batch *b, const void *k,
		       const void *v)
{
	struct kvd_cache *kc = ctx;
	struct kv_append_args a = {
		.arena = kc->arena, .layer = layer, .tokens = b->nr_rows, .k = k, .v = v,
		.slots = (const __s64 *)kc->slots, .threads = kc->threads, .io_dtype = kc->io,
	};

	if (kc->on_gpu)
		return kvd_gpu_store(kc, layer, b, k, v);
	return kv_append_cpu(&a);
}

static int cache_attend(void *ctx, uint32_t layer, const struct kvd_batch *b, const void *q,
			void *out)
{
	struct kvd_cache *kc = ctx;
	const struct kv_geometry *g = &kc->arena.g;
	struct kv_prefill_args a = {
		.arena = kc->arena, .layer = layer, .batch = b->nr_seqs,
		.q_heads = kc->q_heads, .scale = 1.0f / sqrtf((float)g->head_dim),
		.table_stride = kc->stride, .tokens = b->nr_rows, .max_q_len = kc->max_q,
		.threads = kc->threads, .q = q, .out = out, .q_start = kc->q_start,
		.block_table = kc->table, .ctx_lens = kc->ctx, .io_dtype = kc->io,
	};

	if (kc->on_gpu)
		return kvd_gpu_attend(kc, layer, b, q, out);
	return kv_prefill_cpu(&a);
}

/* The cached path's attention: struct kvd_attn_ops over struct kvd_cache. */
const struct kvd_attn_ops kvd_cache_ops = {
	.store = cache_store,
	.attend = cache_attend,
};

/*
 * A quantized pool: the V vector of token @tib of layer 0, kv head 0, in
 * frame @f set to the largest code (INT8 127, FP8 448, INT4 +7) and its
 * scale to 1000 (INT8/FP8: the head's scale in the block, which its other
 * tokens share; INT4: the token's group scales).
 */
static int corrupt_quantized(struct kvd_cache *kc, uint32_t f, uint32_t tib)
{
	const struct kv_geometry *g = &kc->arena.g;
	uint64_t so = kv_scale_offset(g, 0, KV_V, 0);
	uint8_t code = g->dtype == KV_DTYPE_INT8 ? 0x7f :
		       g->dtype == KV_DTYPE_FP8_E4M3 ? 0x7e : 0xff;
	uint8_t raw[KV_MAX_HEAD_DIM];
	uint16_t h[KV_MAX_HEAD_DIM / KV_INT4_GROUP];
	float scale = 1000.0f;
	uint32_t i;
	int err;

	memset(raw, code, sizeof(raw));
	err = kvc_frame_write(kc->pool, f, kv_elem_offset(g, 0, KV_V, 0, tib), raw,
			      kv_row_bytes(g));
	if (err)
		return err;
	if (g->dtype != KV_DTYPE_INT4)
		return kvc_frame_write(kc->pool, f, so, &scale, sizeof(scale));
	for (i = 0; i < g->head_dim / KV_INT4_GROUP; i++)
		h[i] = kv_f32_to_f16(scale);
	return kvc_frame_write(kc->pool, f, so + (uint64_t)tib * sizeof(h[0]) *
			       (g->head_dim / KV_INT4_GROUP), h,
			       sizeof(h[0]) * (g->head_dim / KV_INT4_GROUP));
}

/**
 * kvd_cache_corrupt() - testing: overwrite the V vector of token @pos,
 * layer 0, kv head 0, of a sequence with large values, through
 * kvc_frame_write() (so on either backend); --check must notice
 * @kc:     cache
 * @frames: the sequence's block table
 * @pos:    a token it holds
 *
 * Return: 0 or kvc_frame_write()'s error.
 */
int kvd_cache_corrupt(struct kvd_cache *kc, const uint32_t *frames, uint32_t pos)
{
	const struct kv_geometry *g = &kc->arena.g;
	uint32_t bt = g->block_tokens, i;
	float bad[KV_MAX_HEAD_DIM];
	char raw[KV_MAX_HEAD_DIM * 4];

	if (kv_dtype_quantized(g->dtype))
		return corrupt_quantized(kc, frames[pos / bt], pos % bt);
	for (i = 0; i < g->head_dim; i++)
		bad[i] = 1000.0f;
	kvd_to_dtype(g->dtype, bad, raw, g->head_dim);
	return kvc_frame_write(kc->pool, frames[pos / bt], kv_elem_offset(g, 0, KV_V, 0, pos % bt),
			       raw, (size_t)g->head_dim * kv_dtype_size(g->dtype));
}
