// SPDX-License-Identifier: MIT
/*
 * Block copies on the CPU: whole blocks between frames (copy-on-write), and
 * many frames to or from one contiguous buffer (the staging buffer of a
 * batch of swap I/O). Only kv_block_bytes() of each frame is copied; the
 * alignment tail of a frame holds nothing.
 */
#include <errno.h>
#include <string.h>

#include "kernels/kvkernels.h"
#include "kernels/internal.h"

/* A block copy is worth a thread of its own above this many bytes. */
#define KV_COPY_THREAD_BYTES	(4u << 20)

static int kv_frames_check(const struct kv_arena_ref *r, const __u32 *f,
			   __u32 n)
{
	__u32 i;

	for (i = 0; i < n; i++)
		if (f[i] >= r->frames)
			return -EINVAL;
	return 0;
}

static __u64 kv_copy_min_items(const struct kv_geometry *g)
{
	return KV_COPY_THREAD_BYTES / kv_block_bytes(g) + 1;
}

static void kv_copy_item(void *arg, uint64_t i)
{
	const struct kv_copy_args *a = arg;
	const struct kv_geometry *g = &a->arena.g;
	char *base = a->arena.base;
	__u64 fb = kv_frame_bytes(g);

	if (a->src[i] != a->dst[i])
		memcpy(base + a->dst[i] * fb, base + a->src[i] * fb,
		       kv_block_bytes(g));
}

/**
 * kv_copy_blocks_cpu() - copy whole blocks between frames of one arena
 * @a: arguments (see struct kv_copy_args)
 *
 * Return: 0, or -EINVAL (nothing copied).
 */
int kv_copy_blocks_cpu(const struct kv_copy_args *a)
{
	int err = kv_copy_check(a);

	if (!err)
		err = kv_frames_check(&a->arena, a->src, a->pairs);
	if (!err)
		err = kv_frames_check(&a->arena, a->dst, a->pairs);
	if (err) {
		if (a->status)
			*a->status = err;
		return err;
	}
	kv_parallel_for(a->pairs, a->threads, kv_copy_min_items(&a->arena.g),
			kv_copy_item, (void *)a);
	return 0;
}

static void kv_gather_item(void *arg, uint64_t i)
{
	const struct kv_gather_args *a = arg;
	const struct kv_geometry *g = &a->arena.g;
	__u64 bb = kv_block_bytes(g);

	memcpy((char *)a->buf + i * bb,
	       (const char *)a->arena.base + a->frames[i] * kv_frame_bytes(g), bb);
}

static void kv_scatter_item(void *arg, uint64_t i)
{
	const struct kv_gather_args *a = arg;
	const struct kv_geometry *g = &a->arena.g;
	__u64 bb = kv_block_bytes(g);

	memcpy((char *)a->arena.base + a->frames[i] * kv_frame_bytes(g),
	       (const char *)a->buf + i * bb, bb);
}

static int kv_gather_common(const struct kv_gather_args *a,
			    void (*fn)(void *arg, uint64_t i))
{
	int err = kv_gather_check(a);

	if (!err)
		err = kv_frames_check(&a->arena, a->frames, a->nframes);
	if (err) {
		if (a->status)
			*a->status = err;
		return err;
	}
	kv_parallel_for(a->nframes, a->threads, kv_copy_min_items(&a->arena.g),
			fn, (void *)a);
	return 0;
}

/**
 * kv_gather_cpu() - copy frames into one contiguous buffer
 * @a: arguments (see struct kv_gather_args)
 *
 * Return: 0, or -EINVAL (nothing copied).
 */
int kv_gather_cpu(const struct kv_gather_args *a)
{
	return kv_gather_common(a, kv_gather_item);
}

/**
 * kv_scatter_cpu() - copy one contiguous buffer out to frames
 * @a: arguments (see struct kv_gather_args)
 *
 * Return: 0, or -EINVAL (nothing copied).
 */
int kv_scatter_cpu(const struct kv_gather_args *a)
{
	return kv_gather_common(a, kv_scatter_item);
}
