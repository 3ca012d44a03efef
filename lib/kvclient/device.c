// SPDX-License-Identifier: MIT
/*
 * Mapping a pool's device arena into the client: the CPU backend's memfd
 * with mmap, the CUDA backend's chunks of GPU memory by importing their
 * file descriptors (cuMemImportFromShareableHandle) and mapping them, in
 * order, into one reserved range on the same GPU (found by UUID), so that
 * frame f is at device_ptr + f * frame_bytes here as in every process.
 * And reading or writing a frame's bytes from the CPU, whichever backend.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <lib/cudrv.h>
#include "internal.h"

/**
 * struct kvc_cuda_map - a CUDA arena mapped in this process
 * @drv:       the driver, loaded for this mapping
 * @dev:       the device
 * @ordinal:   its ordinal in this process
 * @ctx:       its primary context, retained
 * @va:        the reserved range
 * @chunk:     bytes per chunk
 * @nr:        chunks mapped
 * @reserved:  bytes reserved at @va
 * @fds:       the chunks' descriptors until they are mapped, else -1
 * @nr_fds:    entries of @fds
 * @info:      the POOL_OPEN reply, for the mapping
 * @handles:   their imported handles
 */
struct kvc_cuda_map {
	struct cudrv drv;
	cu_device dev;
	int ordinal;
	cu_ctx ctx;
	cu_devptr va;
	uint64_t chunk;
	uint32_t nr;
	uint64_t reserved;
	int fds[KVMEM_MAX_FDS];
	uint32_t nr_fds;
	struct kvmem_pool_info info;
	cu_memhandle handles[KVMEM_MAX_FDS];
};

static void fds_close(struct kvc_cuda_map *m)
{
	while (m->nr_fds)
		close(m->fds[--m->nr_fds]);
}

/*
 * Undo cuda_map() as far as it went: the chunks mapped, the range, the
 * context and the driver. The descriptors stay (a later kvc_pool_map()
 * may try again).
 */
static void cuda_release(struct kvc_cuda_map *m)
{
	struct cudrv *drv = &m->drv;

	if (!drv->dl)
		return;			/* never mapped */
	drv->CtxSetCurrent(m->ctx);
	while (m->nr > 0) {
		m->nr--;
		drv->MemUnmap(m->va + m->nr * m->chunk, m->chunk);
		drv->MemRelease(m->handles[m->nr]);
	}
	if (m->va)
		drv->MemAddressFree(m->va, m->reserved);
	m->va = 0;
	drv->DevicePrimaryCtxRelease(m->dev);
	cudrv_close(drv);
}

static void cuda_unmap(struct kvc_cuda_map *m)
{
	fds_close(m);
	cuda_release(m);
	free(m);
}

static int cuda_map_chunks(struct kvc_cuda_map *m, const int *fds, uint32_t n)
{
	struct cudrv *drv = &m->drv;
	struct cu_mem_access_desc acc = {
		.location = { CUDRV_MEM_LOCATION_TYPE_DEVICE, m->ordinal },
		.flags = CUDRV_MEM_ACCESS_FLAGS_PROT_READWRITE,
	};
	cu_result r;

	r = drv->MemAddressReserve(&m->va, m->chunk * n, 0, 0, 0);
	if (r)
		return cudrv_errno(r);
	m->reserved = m->chunk * n;
	for (m->nr = 0; m->nr < n; m->nr++) {
		r = drv->MemImportFromShareableHandle(&m->handles[m->nr],
						      (void *)(uintptr_t)fds[m->nr],
						      CUDRV_MEM_HANDLE_TYPE_POSIX_FD);
		if (r)
			return cudrv_errno(r);
		r = drv->MemMap(m->va + m->nr * m->chunk, m->chunk, 0, m->handles[m->nr], 0);
		if (r) {
			drv->MemRelease(m->handles[m->nr]);
			return cudrv_errno(r);
		}
	}
	return cudrv_errno(drv->MemSetAccess(m->va, m->chunk * n, &acc, 1));
}

/* Load the driver, find the GPU, import and map the chunks. */
static int cuda_map(struct kvc_pool *p, struct kvc_cuda_map *m)
{
	struct cu_uuid uuid;
	char why[160];
	int err, ord;

	err = cudrv_open(&m->drv, why, sizeof(why));
	if (err)
		return -ENODEV;
	memcpy(uuid.bytes, m->info.gpu_uuid, sizeof(uuid.bytes));
	err = cudrv_find_uuid(&m->drv, &uuid, &ord);
	if (!err)
		err = cudrv_device_ctx(&m->drv, ord, &m->dev, &m->ctx);
	if (err) {
		cudrv_close(&m->drv);
		return err;
	}
	m->ordinal = ord;
	m->chunk = m->info.chunk_bytes;
	err = cuda_map_chunks(m, m->fds, m->nr_fds);
	if (err) {
		cuda_release(m);
		return err;
	}
	fds_close(m);
	p->gpu = ord;
	p->device_ptr = m->va;
	return 0;
}

/* Keep the chunks' descriptors: the mapping waits for kvc_pool_map(). */
static int cuda_defer(struct kvc_pool *p, const struct kvmem_pool_info *info, const int *fds,
		      uint32_t n)
{
	struct kvc_cuda_map *m;

	if (!n || n > KVMEM_MAX_FDS || !info->chunk_bytes ||
	    info->arena_bytes != info->chunk_bytes * n)
		return -EBADMSG;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->info = *info;
	for (m->nr_fds = 0; m->nr_fds < n; m->nr_fds++) {
		m->fds[m->nr_fds] = fcntl(fds[m->nr_fds], F_DUPFD_CLOEXEC, 0);
		if (m->fds[m->nr_fds] < 0) {
			fds_close(m);
			free(m);
			return -errno;
		}
	}
	p->map = m;
	return 0;
}

/**
 * kvc_pool_map() - map the pool's device arena into this process, if it is
 * not yet: with the CUDA backend, load the driver, import the arena's
 * chunks on its GPU (found by UUID) and map them; @p->device_ptr and
 * @p->gpu are valid from then on. The CPU backend's arena is mapped by
 * kvc_pool_open() already. A process that only manages sequences (a
 * router, kvmemctl) never calls it and never creates a CUDA context.
 * @p: pool
 *
 * Return: 0, -ENODEV when this process sees no such GPU (no driver, or
 * CUDA_VISIBLE_DEVICES hides it; also after fork() in a child of a process
 * that used CUDA), or the driver's error as an errno.
 */
int kvc_pool_map(struct kvc_pool *p)
{
	struct kvc_cuda_map *m = p->map;

	if (p->backend != KVMEM_BACKEND_CUDA || p->device_ptr)
		return 0;
	if (!m)
		return -EBADF;
	return cuda_map(p, m);
}

/**
 * kvc_device_map() - take a pool's device arena as POOL_OPEN described it:
 * the CPU backend's memfd is mapped now; the CUDA backend's descriptors are
 * kept (duplicated) for kvc_pool_map()
 * @p:    the pool being opened
 * @info: the reply
 * @fds:  the descriptors that came with it (the caller closes them)
 * @n:    their number
 *
 * Return: 0, -EBADMSG for a reply that does not add up, or the error of
 * mmap or fcntl.
 */
int kvc_device_map(struct kvc_pool *p, const struct kvmem_pool_info *info, const int *fds,
		   uint32_t n)
{
	p->backend = info->backend;
	p->gpu = -1;
	if (info->backend == KVMEM_BACKEND_CUDA)
		return cuda_defer(p, info, fds, n);
	if (info->backend != KVMEM_BACKEND_CPU || n != 1)
		return -EBADMSG;
	p->base = mmap(NULL, info->arena_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	if (p->base == MAP_FAILED) {
		p->base = NULL;
		return -errno;
	}
	p->device_ptr = (uint64_t)(uintptr_t)p->base;
	return 0;
}

/** kvc_device_unmap() - undo kvc_device_map() */
void kvc_device_unmap(struct kvc_pool *p)
{
	if (p->map)
		cuda_unmap(p->map);
	else if (p->base)
		munmap(p->base, p->arena_bytes);
	p->map = NULL;
	p->base = NULL;
	p->device_ptr = 0;
}

static int frame_io(struct kvc_pool *p, uint32_t frame, uint64_t off, void *buf,
		    size_t len, int write)
{
	struct kvc_cuda_map *m = p->map;
	uint64_t at;
	cu_result r;
	int err;

	if (frame >= p->nr_frames[KVMEM_TIER_DEVICE] || off > p->frame_bytes ||
	    len > p->frame_bytes - off)
		return -EINVAL;
	at = frame * p->frame_bytes + off;
	err = kvc_pool_map(p);
	if (err)
		return err;
	if (!m) {
		if (write)
			memcpy((char *)p->base + at, buf, len);
		else
			memcpy(buf, (char *)p->base + at, len);
		return 0;
	}
	r = m->drv.CtxSetCurrent(m->ctx);
	if (!r)
		r = write ? m->drv.MemcpyHtoD(m->va + at, buf, len) :
			    m->drv.MemcpyDtoH(buf, m->va + at, len);
	/* From pageable memory the copy may still be on its way to the GPU
	 * when cuMemcpyHtoD returns: another process must not read before
	 * it lands. */
	if (!r && write)
		r = m->drv.StreamSynchronize(NULL);
	return cudrv_errno(r);
}

/**
 * kvc_frame_read() - copy bytes of a device frame to memory, whichever the
 * backend (a synchronous copy from GPU memory with CUDA, after
 * kvc_pool_map() if the arena is not mapped yet)
 * @p:     pool
 * @frame: device frame, of a block this client has pinned
 * @off:   byte offset in the frame
 * @buf:   destination
 * @len:   bytes; @off + @len within the frame
 *
 * Return: 0, -EINVAL out of range, or the driver's error.
 */
int kvc_frame_read(struct kvc_pool *p, uint32_t frame, uint64_t off, void *buf,
		   size_t len)
{
	return frame_io(p, frame, off, buf, len, 0);
}

/**
 * kvc_frame_write() - copy bytes into a device frame, whichever the backend
 * @p:     pool
 * @frame: device frame, of a block this client has pinned and may write
 * @off:   byte offset in the frame
 * @buf:   source
 * @len:   bytes; @off + @len within the frame
 *
 * Return: 0, -EINVAL out of range, or the driver's error.
 */
int kvc_frame_write(struct kvc_pool *p, uint32_t frame, uint64_t off, const void *buf,
		    size_t len)
{
	return frame_io(p, frame, off, (void *)buf, len, 1);
}
