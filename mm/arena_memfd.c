// SPDX-License-Identifier: MIT
/*
 * memfd arenas: the host tier, and the CPU backend of the device tier used
 * where no GPU is present. Both map a memfd MAP_SHARED (huge pages when the
 * size allows and the system has them), sealed against shrink and grow, so
 * the daemon can hand the same frames to clients. Both are bound to the
 * pool's NUMA node, if it has one (mm/mempolicy.c), before their first
 * page is faulted in; the host tier is then locked in RAM where
 * RLIMIT_MEMLOCK allows.
 *
 * Copies are memcpy on the calling thread: they complete before
 * copy_submit() returns, and copy_wait() reports their status.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "internal.h"

#define HUGE_2M (2ull << 20)

/**
 * struct memfd_arena - backend state of a memfd arena
 * @fd:    the memfd
 * @bytes: mapped size
 */
struct memfd_arena {
	int fd;
	u64 bytes;
};

static int memfd_open(const char *name, u64 bytes, unsigned int flags)
{
	int fd;

	fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | flags);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)bytes) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		close(fd);
		return -ENOMEM;
	}
	return fd;
}

/* Map a fresh memfd of @bytes; huge pages first where the size allows. */
static void *memfd_map(const char *name, u64 bytes, int *fdp)
{
	bool huge = bytes % HUGE_2M == 0;
	void *base;
	int fd;

again:
	fd = memfd_open(name, bytes, huge ? MFD_HUGETLB : 0);
	if (fd < 0) {
		if (huge) {
			huge = false;
			goto again;
		}
		*fdp = fd;
		return MAP_FAILED;
	}
	base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		close(fd);
		if (huge) {
			huge = false;
			goto again;
		}
		*fdp = -ENOMEM;
		return MAP_FAILED;
	}
	*fdp = fd;
	return base;
}

static int memfd_arena_create(struct kv_tier *t, const char *name, bool lock)
{
	u64 bytes = (u64)t->fa.nr_total * t->pool->frame_bytes;
	struct memfd_arena *a;
	void *base;
	int err;

	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->bytes = bytes ? bytes : KV_FRAME_ALIGN;
	base = memfd_map(name, a->bytes, &a->fd);
	if (base == MAP_FAILED) {
		err = a->fd;
		free(a);
		return err;
	}
	if (t->fa.nr_total)
		arena_bind_node(t, base, a->bytes);
	t->mlocked = lock && !mlock(base, a->bytes);
	t->base = base;
	t->priv = a;
	return 0;
}

static void memfd_arena_destroy(struct kv_tier *t)
{
	struct memfd_arena *a = t->priv;

	if (!a)
		return;
	munmap(t->base, a->bytes);
	close(a->fd);
	free(a);
	t->priv = NULL;
	t->base = NULL;
}

static int memfd_arena_export(struct kv_tier *t, struct kv_device_export *e)
{
	struct memfd_arena *a = t->priv;

	e->backend = KV_BACKEND_CPU;
	e->arena_bytes = a->bytes;
	e->chunk_bytes = a->bytes;
	e->nr_chunks = 1;
	e->fds = &a->fd;
	e->gpu = -1;
	return 0;
}

static int host_arena_create(struct kv_tier *t)
{
	return memfd_arena_create(t, "kvmem-host", true);
}

static int cpu_device_arena_create(struct kv_tier *t)
{
	return memfd_arena_create(t, "kvmem-device", false);
}

static int memcpy_submit(struct kv_pool *pool, const struct kv_copy *c, u32 n, void **cookie)
{
	u64 fb = pool->frame_bytes;
	char *src, *dst;
	u32 i;

	for (i = 0; i < n; i++) {
		src = pool->tier[c[i].src_tier].base;
		dst = pool->tier[c[i].dst_tier].base;
		if (!src || !dst)
			return -EOPNOTSUPP;
		memcpy(dst + c[i].dst_frame * fb, src + c[i].src_frame * fb, fb);
	}
	*cookie = NULL;
	return 0;
}

static int memcpy_wait(struct kv_pool *pool, void *cookie)
{
	return 0;
}

const struct kv_tier_ops kv_cpu_device_ops = {
	.name = "cpu",
	.arena_create = cpu_device_arena_create,
	.arena_destroy = memfd_arena_destroy,
	.arena_export = memfd_arena_export,
	.copy_submit = memcpy_submit,
	.copy_wait = memcpy_wait,
};

const struct kv_tier_ops kv_host_memfd_ops = {
	.name = "memfd",
	.arena_create = host_arena_create,
	.arena_destroy = memfd_arena_destroy,
	.copy_submit = memcpy_submit,
	.copy_wait = memcpy_wait,
};
