// SPDX-License-Identifier: MIT
/*
 * The CUDA backend of the device tier: the arena is GPU memory reserved and
 * mapped with the driver's virtual memory API, in physical chunks created
 * exportable as POSIX file descriptors, so that clients import the same
 * chunks and address the same frames. The host tier's arena is registered
 * for DMA when the pool is put together (attach).
 *
 * Copies: every copy that involves the device tier comes here. A batch is
 * split by direction (device to host, host to device, device to device),
 * runs of consecutive frames are merged, and each direction goes to its own
 * non-blocking stream as one cuMemcpyBatchAsync (CUDA 13 drivers) or one
 * cuMemcpyAsync per run; completion is an event per stream, waited for in
 * copy_wait(). Nothing synchronizes per block.
 *
 * The driver's context is made current on the calling thread at every
 * entry: the event loop, kvswapd and the swap thread all copy.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lib/cudrv.h>
#include "internal.h"

#define CUDA_CHUNK_MIN	(2ull << 30)

enum { DIR_D2H, DIR_H2D, DIR_D2D, NR_DIRS };

/*
 * Streams per direction: a batch of many separate copies is split between
 * them by bytes, so that the GPU's copy engines work on its parts side by
 * side (one engine spends a fixed time per copy; a batch of 256 KiB
 * copies on one stream reaches about 0.85 of one large copy on an H100).
 */
#ifndef CUDA_LANES
#define CUDA_LANES	4
#endif
#define CUDA_LANE_MIN	8	/* copies a lane gets at least */
#define NR_STREAMS	(NR_DIRS * CUDA_LANES)

/**
 * struct cuda_arena - backend state of a GPU arena
 * @drv:        the driver
 * @dev:        device
 * @ordinal:    its ordinal in this process
 * @ctx:        its primary context, retained
 * @uuid:       its UUID
 * @va:         reserved address range; frame f at @va + f * frame_bytes
 * @chunk:      bytes per physical chunk
 * @nr_chunks:  chunks mapped
 * @handles:    their allocation handles
 * @fds:        their exported descriptors
 * @stream:     CUDA_LANES streams per direction
 * @lock:       guards @events
 * @events:     free events, reused
 * @nr_events:  entries in @events
 * @host:       the host arena registered for DMA, or NULL
 * @host_bytes: its size
 * @batch_off:  cuMemcpyBatchAsync refused once: runs are copied one by one
 * @desc:       meminfo's backend text
 */
struct cuda_arena {
	struct cudrv *drv;
	cu_device dev;
	int ordinal;
	cu_ctx ctx;
	struct cu_uuid uuid;
	cu_devptr va;
	u64 chunk;
	u32 nr_chunks;
	cu_memhandle *handles;
	int *fds;
	cu_stream stream[NR_STREAMS];
	pthread_mutex_t lock;
	cu_event *events;
	u32 nr_events;
	void *host;
	u64 host_bytes;
	bool batch_off;
	char desc[160];
};

/**
 * struct cuda_copy - the copies of one copy_submit(), in flight
 * @ev:  an event recorded after them on each stream used
 * @nr:  events in @ev
 */
struct cuda_copy {
	cu_event ev[NR_STREAMS];
	u32 nr;
};

static int cuda_ctx(struct cuda_arena *a)
{
	return cudrv_errno(a->drv->CtxSetCurrent(a->ctx));
}

static void alloc_prop(struct cuda_arena *a, struct cu_mem_alloc_prop *p)
{
	memset(p, 0, sizeof(*p));
	p->type = CUDRV_MEM_ALLOCATION_TYPE_PINNED;
	p->requested_handle_types = CUDRV_MEM_HANDLE_TYPE_POSIX_FD;
	p->location.type = CUDRV_MEM_LOCATION_TYPE_DEVICE;
	p->location.id = a->ordinal;
}

/* Chunk size: asked for, else the arena in <= KV_CUDA_MAX_CHUNKS of >= 2 GiB. */
static u64 chunk_size(u64 bytes, u64 asked, u64 gran)
{
	u64 c = asked;

	if (!c) {
		c = (bytes + KV_CUDA_MAX_CHUNKS - 1) / KV_CUDA_MAX_CHUNKS;
		c = c > CUDA_CHUNK_MIN ? c : CUDA_CHUNK_MIN;
		c = c < bytes ? c : bytes;
	}
	return (c + gran - 1) / gran * gran;
}

static int device_check(struct cuda_arena *a, u64 bytes)
{
	struct cudrv *drv = a->drv;
	int vmm = 0, fd = 0;
	size_t free_b = 0, total_b = 0;

	drv->DeviceGetAttribute(&vmm, CUDRV_ATTR_VMM_SUPPORTED, a->dev);
	drv->DeviceGetAttribute(&fd, CUDRV_ATTR_POSIX_FD_SUPPORTED, a->dev);
	if (!vmm || !fd)
		return -EOPNOTSUPP;
	if (drv->MemGetInfo(&free_b, &total_b))
		return -EIO;
	if (bytes > free_b)
		return -ENOMEM;		/* never more than the GPU has free */
	return 0;
}

/* Create, export and map chunk @i. */
static int chunk_create(struct cuda_arena *a, u32 i)
{
	struct cudrv *drv = a->drv;
	struct cu_mem_alloc_prop prop;
	cu_result r;

	alloc_prop(a, &prop);
	r = drv->MemCreate(&a->handles[i], a->chunk, &prop, 0);
	if (r)
		return cudrv_errno(r);
	r = drv->MemExportToShareableHandle(&a->fds[i], a->handles[i],
					    CUDRV_MEM_HANDLE_TYPE_POSIX_FD, 0);
	if (!r)
		r = drv->MemMap(a->va + i * a->chunk, a->chunk, 0, a->handles[i], 0);
	if (r) {
		if (a->fds[i] >= 0)
			close(a->fds[i]);
		a->fds[i] = -1;
		drv->MemRelease(a->handles[i]);
		return cudrv_errno(r);
	}
	return 0;
}

static void chunks_destroy(struct cuda_arena *a, u32 n)
{
	while (n--) {
		a->drv->MemUnmap(a->va + n * a->chunk, a->chunk);
		a->drv->MemRelease(a->handles[n]);
		close(a->fds[n]);
	}
}

static int map_arena(struct cuda_arena *a, u64 bytes, u64 asked)
{
	struct cudrv *drv = a->drv;
	struct cu_mem_alloc_prop prop;
	struct cu_mem_access_desc acc;
	size_t gran = 0;
	u32 i;
	int err;

	alloc_prop(a, &prop);
	if (drv->MemGetAllocationGranularity(&gran, &prop, CUDRV_MEM_ALLOC_GRANULARITY_RECOMMENDED) ||
	    !gran)
		return -EIO;
	a->chunk = chunk_size(bytes, asked, gran);
	a->nr_chunks = (u32)((bytes + a->chunk - 1) / a->chunk);
	if (a->nr_chunks > KV_CUDA_MAX_CHUNKS)
		return -E2BIG;
	a->handles = calloc(a->nr_chunks, sizeof(*a->handles));
	a->fds = calloc(a->nr_chunks, sizeof(*a->fds));
	if (!a->handles || !a->fds)
		return -ENOMEM;
	err = cudrv_errno(drv->MemAddressReserve(&a->va, a->chunk * a->nr_chunks, gran, 0, 0));
	if (err)
		return err;
	for (i = 0; i < a->nr_chunks; i++) {
		a->fds[i] = -1;
		err = chunk_create(a, i);
		if (err)
			goto out_chunks;
	}
	acc.location.type = CUDRV_MEM_LOCATION_TYPE_DEVICE;
	acc.location.id = a->ordinal;
	acc.flags = CUDRV_MEM_ACCESS_FLAGS_PROT_READWRITE;
	err = cudrv_errno(drv->MemSetAccess(a->va, a->chunk * a->nr_chunks, &acc, 1));
	/* No process sees what the memory held before; the copy streams do
	 * not order after the legacy stream, so wait for the memset here. */
	if (!err)
		err = cudrv_errno(drv->MemsetD8(a->va, 0, a->chunk * a->nr_chunks));
	if (!err)
		err = cudrv_errno(drv->StreamSynchronize(NULL));
	if (!err)
		return 0;
	i = a->nr_chunks;
out_chunks:
	chunks_destroy(a, i);
	drv->MemAddressFree(a->va, a->chunk * a->nr_chunks);
	a->va = 0;
	return err;
}

static int streams_create(struct cuda_arena *a)
{
	int i, err;

	for (i = 0; i < NR_STREAMS; i++) {
		err = cudrv_errno(a->drv->StreamCreate(&a->stream[i], CUDRV_STREAM_NON_BLOCKING));
		if (err) {
			/* cuda_arena_free() destroys the ones created. */
			a->stream[i] = NULL;
			return err;
		}
	}
	return 0;
}

static void cuda_arena_free(struct cuda_arena *a)
{
	u32 i;

	if (a->va) {
		for (i = 0; i < NR_STREAMS; i++)
			if (a->stream[i])
				a->drv->StreamDestroy(a->stream[i]);
		for (i = 0; i < a->nr_events; i++)
			a->drv->EventDestroy(a->events[i]);
		chunks_destroy(a, a->nr_chunks);
		a->drv->MemAddressFree(a->va, a->chunk * a->nr_chunks);
	}
	if (a->ctx)
		a->drv->DevicePrimaryCtxRelease(a->dev);
	pthread_mutex_destroy(&a->lock);
	free(a->events);
	free(a->handles);
	free(a->fds);
	free(a);
}

static void describe(struct cuda_arena *a, const char *host)
{
	char name[96] = "?";

	a->drv->DeviceGetName(name, sizeof(name), a->dev);
	snprintf(a->desc, sizeof(a->desc), "cuda GPU%d %s, %u x %llu MiB%s%s", a->ordinal, name,
		 a->nr_chunks, (unsigned long long)(a->chunk >> 20),
		 a->drv->batch && !a->batch_off ? ", batched copies" : "", host);
}

static int cuda_arena_create(struct kv_tier *t)
{
	const struct kv_cuda_params *cp = t->arg;
	u64 bytes = (u64)t->fa.nr_total * t->pool->frame_bytes;
	struct cuda_arena *a;
	int err;

	if (!cp || !cp->drv)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	pthread_mutex_init(&a->lock, NULL);
	a->drv = cp->drv;
	a->ordinal = cp->device;
	err = cudrv_device_ctx(a->drv, cp->device, &a->dev, &a->ctx);
	if (err) {
		a->ctx = NULL;
		goto out_free;
	}
	a->drv->DeviceGetUuid(&a->uuid, a->dev);
	err = device_check(a, bytes);
	if (!err)
		err = map_arena(a, bytes, cp->chunk_bytes);
	if (!err)
		err = streams_create(a);
	if (err)
		goto out_free;
	describe(a, "");
	t->priv = a;
	t->base = NULL;		/* not CPU-addressable */
	t->desc = a->desc;
	t->mlocked = true;	/* GPU memory is never paged out */
	return 0;

out_free:
	cuda_arena_free(a);
	return err;
}

static void cuda_arena_destroy(struct kv_tier *t)
{
	struct cuda_arena *a = t->priv;

	if (!a)
		return;
	cuda_ctx(a);
	cuda_arena_free(a);
	t->priv = NULL;
	t->desc = NULL;
}

static int cuda_arena_export(struct kv_tier *t, struct kv_device_export *e)
{
	struct cuda_arena *a = t->priv;

	e->backend = KV_BACKEND_CUDA;
	e->arena_bytes = a->chunk * a->nr_chunks;
	e->chunk_bytes = a->chunk;
	e->nr_chunks = a->nr_chunks;
	e->fds = a->fds;
	e->gpu = a->ordinal;
	memcpy(e->uuid, a->uuid.bytes, sizeof(e->uuid));
	return 0;
}

/* Register the host arena for DMA: the copies to and from it are async. */
static int cuda_attach(struct kv_tier *t)
{
	struct kv_tier *h = &t->pool->tier[KV_TIER_HOST];
	struct cuda_arena *a = t->priv;
	u64 bytes = (u64)h->fa.nr_total * t->pool->frame_bytes;
	cu_result r;

	if (!h->base || !bytes)
		return 0;
	cuda_ctx(a);
	r = a->drv->MemHostRegister(h->base, bytes, CUDRV_MEMHOSTREGISTER_PORTABLE);
	if (r && r != CUDRV_ERROR_HOST_MEMORY_ALREADY_REGISTERED) {
		describe(a, ", host tier NOT registered for DMA");
		return 0;	/* copies still work, staged by the driver */
	}
	if (!r) {
		a->host = h->base;
		a->host_bytes = bytes;
	}
	h->dma = true;
	describe(a, ", host tier registered for DMA");
	return 0;
}

static void cuda_detach(struct kv_tier *t)
{
	struct cuda_arena *a = t->priv;

	if (!a || !a->host)
		return;
	cuda_ctx(a);
	a->drv->MemHostUnregister(a->host);
	a->host = NULL;
	t->pool->tier[KV_TIER_HOST].dma = false;
}

static cu_event event_get(struct cuda_arena *a)
{
	cu_event e = NULL;

	pthread_mutex_lock(&a->lock);
	if (a->nr_events)
		e = a->events[--a->nr_events];
	pthread_mutex_unlock(&a->lock);
	if (!e && a->drv->EventCreate(&e, CUDRV_EVENT_DISABLE_TIMING))
		e = NULL;
	return e;
}

static void event_put(struct cuda_arena *a, cu_event e)
{
	cu_event *n;

	pthread_mutex_lock(&a->lock);
	n = realloc(a->events, (a->nr_events + 1) * sizeof(*n));
	if (n) {
		a->events = n;
		a->events[a->nr_events++] = e;
		e = NULL;
	}
	pthread_mutex_unlock(&a->lock);
	if (e)
		a->drv->EventDestroy(e);
}

/**
 * struct copy_list - one direction's merged copies
 * @dst:  destination addresses
 * @src:  source addresses
 * @len:  lengths
 * @n:    entries
 */
struct copy_list {
	cu_devptr *dst;
	cu_devptr *src;
	size_t *len;
	size_t n;
};

static cu_devptr frame_ptr(struct kv_pool *pool, struct cuda_arena *a, u32 tier, u32 frame)
{
	if (tier == KV_TIER_DEVICE)
		return a->va + (u64)frame * pool->frame_bytes;
	return (cu_devptr)(uintptr_t)pool->tier[tier].base + (u64)frame * pool->frame_bytes;
}

static int copy_dir(const struct kv_copy *c)
{
	if (c->src_tier == KV_TIER_DEVICE)
		return c->dst_tier == KV_TIER_DEVICE ? DIR_D2D : DIR_D2H;
	return DIR_H2D;
}

/*
 * Append one copy, merged with the previous one where both sides follow on
 * from it, or both sides end where it starts (frames taken from a free
 * stack often come in descending order).
 */
static void copies_add(struct copy_list *l, cu_devptr dst, cu_devptr src, size_t len)
{
	size_t k = l->n;

	if (k && l->dst[k - 1] + l->len[k - 1] == dst && l->src[k - 1] + l->len[k - 1] == src) {
		l->len[k - 1] += len;
		return;
	}
	if (k && dst + len == l->dst[k - 1] && src + len == l->src[k - 1]) {
		l->dst[k - 1] = dst;
		l->src[k - 1] = src;
		l->len[k - 1] += len;
		return;
	}
	l->dst[k] = dst;
	l->src[k] = src;
	l->len[k] = len;
	l->n++;
}

static int copies_submit(struct cuda_arena *a, struct copy_list *l, cu_stream s)
{
	struct cu_memcpy_attrs attr;
	size_t idx = 0, i;
	cu_result r;

	if (l->n > 1 && a->drv->batch && !__atomic_load_n(&a->batch_off, __ATOMIC_RELAXED)) {
		memset(&attr, 0, sizeof(attr));
		attr.src_access_order = CUDRV_MEMCPY_SRC_ACCESS_ORDER_STREAM;
		attr.src_loc_hint.type = CUDRV_MEM_LOCATION_TYPE_DEVICE;
		attr.src_loc_hint.id = a->ordinal;
		attr.dst_loc_hint = attr.src_loc_hint;
		r = a->drv->MemcpyBatchAsync(l->dst, l->src, l->len, l->n, &attr, &idx, 1, s);
		if (!r)
			return 0;
		/* Refused (not a stream error): copy run by run from now on. */
		__atomic_store_n(&a->batch_off, true, __ATOMIC_RELAXED);
	}
	for (i = 0; i < l->n; i++) {
		r = a->drv->MemcpyAsync(l->dst[i], l->src[i], l->len[i], s);
		if (r)
			return cudrv_errno(r);
	}
	return 0;
}

/* Queue @l on stream @s and record an event after it in @cc. */
static int lane_submit(struct cuda_arena *a, struct copy_list *l, cu_stream s,
		       struct cuda_copy *cc)
{
	int err = copies_submit(a, l, s);

	if (err)
		return err;
	cc->ev[cc->nr] = event_get(a);
	if (!cc->ev[cc->nr])
		return -ENOMEM;
	return cudrv_errno(a->drv->EventRecord(cc->ev[cc->nr++], s));
}

/* Direction @d's copies, split by bytes over its lanes when there are many. */
static int dir_submit(struct cuda_arena *a, struct copy_list *l, int d, struct cuda_copy *cc)
{
	u32 lanes = l->n >= (size_t)CUDA_LANE_MIN * CUDA_LANES ? CUDA_LANES : 1, k;
	size_t total = 0, done = 0, at = 0, i;
	struct copy_list part;
	int err;

	for (i = 0; i < l->n; i++)
		total += l->len[i];
	for (k = 0; k < lanes && at < l->n; k++) {
		part = (struct copy_list){ l->dst + at, l->src + at, l->len + at, 0 };
		while (at < l->n && (k == lanes - 1 || !part.n ||
				     done + l->len[at] <= total / lanes * (k + 1))) {
			done += l->len[at++];
			part.n++;
		}
		err = lane_submit(a, &part, a->stream[d * CUDA_LANES + k], cc);
		if (err)
			return err;
	}
	return 0;
}

static int cuda_copy_submit(struct kv_pool *pool, const struct kv_copy *c, u32 n, void **cookie)
{
	struct cuda_arena *a = pool->tier[KV_TIER_DEVICE].priv;
	struct copy_list l[NR_DIRS];
	struct cuda_copy *cc;
	cu_devptr *mem;
	int err, d;
	u32 i;

	err = cuda_ctx(a);
	if (err)
		return err;
	for (i = 0; i < n; i++)
		if (c[i].src_tier == KV_TIER_SWAP || c[i].dst_tier == KV_TIER_SWAP ||
		    (c[i].src_tier != KV_TIER_DEVICE && !pool->tier[c[i].src_tier].base) ||
		    (c[i].dst_tier != KV_TIER_DEVICE && !pool->tier[c[i].dst_tier].base))
			return -EOPNOTSUPP;
	cc = calloc(1, sizeof(*cc));
	mem = malloc((size_t)n * NR_DIRS * 3 * sizeof(*mem));
	if (!cc || !mem) {
		err = -ENOMEM;
		goto out;
	}
	for (d = 0; d < NR_DIRS; d++) {
		l[d].dst = mem + (size_t)n * (3 * d);
		l[d].src = mem + (size_t)n * (3 * d + 1);
		l[d].len = (size_t *)(mem + (size_t)n * (3 * d + 2));
		l[d].n = 0;
	}
	for (i = 0; i < n; i++)
		copies_add(&l[copy_dir(&c[i])],
			 frame_ptr(pool, a, c[i].dst_tier, c[i].dst_frame),
			 frame_ptr(pool, a, c[i].src_tier, c[i].src_frame), pool->frame_bytes);
	for (d = 0; d < NR_DIRS && !err; d++)
		if (l[d].n)
			err = dir_submit(a, &l[d], d, cc);
out:
	free(mem);
	if (err && cc) {
		/* What was queued must finish before the frames change hands. */
		for (d = 0; d < NR_STREAMS; d++)
			a->drv->StreamSynchronize(a->stream[d]);
		for (i = 0; i < cc->nr; i++)
			event_put(a, cc->ev[i]);
		free(cc);
		cc = NULL;
	}
	*cookie = cc;
	return err;
}

static int cuda_copy_wait(struct kv_pool *pool, void *cookie)
{
	struct cuda_arena *a = pool->tier[KV_TIER_DEVICE].priv;
	struct cuda_copy *cc = cookie;
	int err = 0, e;
	u32 i;

	if (!cc)
		return 0;
	cuda_ctx(a);
	for (i = 0; i < cc->nr; i++) {
		e = cudrv_errno(a->drv->EventSynchronize(cc->ev[i]));
		err = err ? err : e;
		event_put(a, cc->ev[i]);
	}
	free(cc);
	return err;
}

const struct kv_tier_ops kv_cuda_device_ops = {
	.name = "cuda",
	.arena_create = cuda_arena_create,
	.arena_destroy = cuda_arena_destroy,
	.arena_export = cuda_arena_export,
	.attach = cuda_attach,
	.detach = cuda_detach,
	.copy_submit = cuda_copy_submit,
	.copy_wait = cuda_copy_wait,
};
