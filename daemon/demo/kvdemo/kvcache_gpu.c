// SPDX-License-Identifier: MIT
/*
 * kvdemo's attention on the GPU, where the pool is GPU memory (the cuda
 * backend) and kvdemo was built with the CUDA kernels: the pool's arena is
 * mapped into this process (kvc_pool_map()), and each layer's new K and V
 * go into their slots with kv_append_cuda(), each sequence's rows attend
 * with kv_prefill_cuda(), in place in the daemon's blocks (a geometry the
 * CUDA prefill does not take stays staged: kvd_cache_init()). The model itself
 * stays on the CPU, so per layer the rows' K, V and queries are copied to
 * the GPU and the attention outputs back; the tables, context lengths,
 * rows per sequence and slots once per pass. The copy back synchronizes the default stream, so
 * every kernel of a pass is done before the client's next STEP lets the
 * daemon move blocks (the ordering rule of libkvclient(3)).
 *
 * Built without CUDA (no nvcc, or a sanitizer build) kvd_gpu_init()
 * returns -EOPNOTSUPP and kvdemo stages K/V through kvc_frame_read/write.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvdemo.h"

#ifdef KVD_HAVE_CUDA
#include <cuda_runtime_api.h>

/* Make *@p (device memory) hold @bytes; contents not kept. */
static int dev_grow(void **p, size_t *cap, size_t bytes)
{
	if (bytes <= *cap)
		return 0;
	bytes = bytes < 2 * *cap ? 2 * *cap : bytes;
	cudaFree(*p);
	*p = NULL;
	*cap = 0;
	if (cudaMalloc(p, bytes) != cudaSuccess)
		return -ENOMEM;
	*cap = bytes;
	return 0;
}

static int h2d(void *dst, const void *src, size_t bytes)
{
	return cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice) == cudaSuccess ? 0 : -EIO;
}

/**
 * kvd_gpu_init() - attention on the GPU over @pool's arena
 * @gpu:  filled in
 * @pool: a pool on the cuda backend
 *
 * Return: 0 (@gpu->base is frame 0 in this process), -EOPNOTSUPP where
 * the pool is not on a GPU this process can use, or kvc_pool_map()'s error.
 */
int kvd_gpu_init(struct kvd_gpu *gpu, struct kvc_pool *pool)
{
	int n = 0, err;

	memset(gpu, 0, sizeof(*gpu));
	if (pool->backend != KVMEM_BACKEND_CUDA || cudaGetDeviceCount(&n) != cudaSuccess || !n)
		return -EOPNOTSUPP;
	err = kvc_pool_map(pool);	/* finds the pool's GPU: pool->gpu */
	if (err)
		return err;
	if (pool->gpu < 0 || pool->gpu >= n || cudaSetDevice(pool->gpu) != cudaSuccess)
		return -EOPNOTSUPP;
	gpu->base = (void *)(uintptr_t)pool->device_ptr;
	return 0;
}

/** kvd_gpu_free() - free the device buffers of @gpu */
void kvd_gpu_free(struct kvd_gpu *gpu)
{
	cudaFree(gpu->rows);
	cudaFree(gpu->out);
	cudaFree(gpu->table);
	cudaFree(gpu->ctx);
	cudaFree(gpu->q_start);
	cudaFree(gpu->slots);
	memset(gpu, 0, sizeof(*gpu));
}

/**
 * kvd_gpu_begin() - copy a pass's tables, context lengths, rows per
 * sequence and slots over
 * @kc: cache, after kvd_cache_begin() built them for @b
 * @b:  the pass's batch
 *
 * Return: 0, -ENOMEM or -EIO.
 */
int kvd_gpu_begin(struct kvd_cache *kc, const struct kvd_batch *b)
{
	struct kvd_gpu *gpu = &kc->gpu;
	size_t nt = (size_t)b->nr_seqs * kc->stride * sizeof(uint32_t);
	size_t ns = b->nr_seqs * sizeof(uint32_t);
	int err;

	err = dev_grow(&gpu->table, &gpu->cap_table, nt);
	err = err ?: dev_grow(&gpu->ctx, &gpu->cap_ctx, ns);
	err = err ?: dev_grow(&gpu->q_start, &gpu->cap_q_start, ns + sizeof(uint32_t));
	err = err ?: dev_grow(&gpu->slots, &gpu->cap_slots, b->nr_rows * sizeof(int64_t));
	err = err ?: h2d(gpu->table, kc->table, nt);
	err = err ?: h2d(gpu->ctx, kc->ctx, ns);
	err = err ?: h2d(gpu->q_start, kc->q_start, ns + sizeof(uint32_t));
	return err ?: h2d(gpu->slots, kc->slots, b->nr_rows * sizeof(int64_t));
}

/* the rows' K and V of @layer into their slots, kv_append_cuda() */
int kvd_gpu_store(struct kvd_cache *kc, uint32_t layer, const struct kvd_batch *b,
		  const void *k, const void *v)
{
	struct kvd_gpu *gpu = &kc->gpu;
	const struct kv_geometry *g = &kc->arena.g;
	size_t bytes = (size_t)b->nr_rows * g->kv_heads * g->head_dim * kv_dtype_size(kc->io);
	struct kv_append_args a = {
		.arena = kc->arena, .layer = layer, .tokens = b->nr_rows,
		.slots = gpu->slots, .io_dtype = kc->io,
	};
	int err;

	err = dev_grow(&gpu->rows, &gpu->cap_rows, 2 * bytes);
	err = err ?: h2d(gpu->rows, k, bytes);
	err = err ?: h2d((char *)gpu->rows + bytes, v, bytes);
	if (err)
		return err;
	a.k = gpu->rows;
	a.v = (char *)gpu->rows + bytes;
	return kv_append_cuda(&a);
}

/* each sequence's rows attend over its table, kv_prefill_cuda(), into @out */
int kvd_gpu_attend(struct kvd_cache *kc, uint32_t layer, const struct kvd_batch *b,
		   const void *q, void *out)
{
	struct kvd_gpu *gpu = &kc->gpu;
	const struct kv_geometry *g = &kc->arena.g;
	size_t bytes = (size_t)b->nr_rows * kc->q_heads * g->head_dim * kv_dtype_size(kc->io);
	struct kv_prefill_args a = {
		.arena = kc->arena, .layer = layer, .batch = b->nr_seqs,
		.q_heads = kc->q_heads, .scale = 1.0f / sqrtf((float)g->head_dim),
		.table_stride = kc->stride, .tokens = b->nr_rows, .max_q_len = kc->max_q,
		.q_start = gpu->q_start, .block_table = gpu->table, .ctx_lens = gpu->ctx,
		.io_dtype = kc->io,
	};
	int err;

	err = dev_grow(&gpu->rows, &gpu->cap_rows, bytes);
	err = err ?: dev_grow(&gpu->out, &gpu->cap_out, bytes);
	err = err ?: h2d(gpu->rows, q, bytes);
	if (err)
		return err;
	a.q = gpu->rows;
	a.out = gpu->out;
	err = kv_prefill_cuda(&a);
	if (err)
		return err;
	return cudaMemcpy(out, gpu->out, bytes, cudaMemcpyDeviceToHost) == cudaSuccess ? 0 : -EIO;
}

#else /* !KVD_HAVE_CUDA */

int kvd_gpu_init(struct kvd_gpu *gpu, struct kvc_pool *pool)
{
	(void)pool;
	memset(gpu, 0, sizeof(*gpu));
	return -EOPNOTSUPP;
}

void kvd_gpu_free(struct kvd_gpu *gpu)
{
	memset(gpu, 0, sizeof(*gpu));
}

int kvd_gpu_begin(struct kvd_cache *kc, const struct kvd_batch *b)
{
	(void)kc;
	(void)b;
	return -EOPNOTSUPP;
}

int kvd_gpu_store(struct kvd_cache *kc, uint32_t layer, const struct kvd_batch *b,
		  const void *k, const void *v)
{
	(void)kc, (void)layer, (void)b, (void)k, (void)v;
	return -EOPNOTSUPP;
}

int kvd_gpu_attend(struct kvd_cache *kc, uint32_t layer, const struct kvd_batch *b,
		   const void *q, void *out)
{
	(void)kc, (void)layer, (void)b, (void)q, (void)out;
	return -EOPNOTSUPP;
}

#endif /* KVD_HAVE_CUDA */
