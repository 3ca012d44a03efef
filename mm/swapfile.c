// SPDX-License-Identifier: MIT
/*
 * The swap tier, as the kernel's mm/swapfile.c and mm/page_io.c: a pool's
 * region of a swap file or block device opened O_DIRECT, cut into slots of
 * one frame each. The tier's frame allocator hands slots out, so reclaim
 * demotes host blocks to swap and activation promotes them back exactly as
 * it moves blocks between the other tiers; this backend turns those moves
 * into batches of reads and writes for mm/swap_io.c (io_uring, or a
 * pread/pwrite thread pool where io_uring is refused).
 *
 * Every slot carries a CRC-32C of the frame written to it, computed while
 * the write is in flight and checked after each read: a mismatch (a flipped bit on the
 * device, a torn write) fails the read with -EIO, which fails the
 * activation that needed it, and corrupt KV never reaches a client. The
 * slot is marked as failed until it is written again, so that the prefix
 * cache can forget a block it can no longer read (swap_slot_failed()).
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <lib/crc32c.h>
#include "internal.h"
#include "swap_io.h"

#define DIO_ALIGN_DEFAULT	4096u

/**
 * struct kv_swap_area - the swap tier's state (kv_tier.priv)
 * @fd:     the swap file or device (the pool's creator owns it)
 * @offset: byte offset of slot 0
 * @align:  the device's O_DIRECT alignment
 * @io:     the I/O engine
 * @crc:    per slot, CRC-32C of what was last written there
 * @failed: per slot, 1 when its last read failed (an I/O error or a
 *          checksum mismatch), 0 once it is read or written whole or
 *          restored; a byte each, as batches on different threads set
 *          different slots
 * @desc:   "swap (io_uring)", shown as the tier's backend
 */
struct kv_swap_area {
	int fd;
	u64 offset;
	u32 align;
	struct kv_swap_io *io;
	u32 *crc;
	u8 *failed;
	char desc[48];
};

/* O_DIRECT alignment: statx(STATX_DIOALIGN), a device's sector, or 4096. */
static u32 dio_align(int fd)
{
	struct statx stx;
	struct stat st;
	int ssz;

	if (!statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align)
		return stx.stx_dio_offset_align > stx.stx_dio_mem_align ?
		       stx.stx_dio_offset_align : stx.stx_dio_mem_align;
	if (!fstat(fd, &st) && S_ISBLK(st.st_mode) && !ioctl(fd, BLKSSZGET, &ssz) && ssz > 0)
		return (u32)ssz;
	return DIO_ALIGN_DEFAULT;
}

/* The region [@off, @off + @len) exists: a file is allocated, a device big enough. */
static int area_reserve(int fd, u64 off, u64 len)
{
	struct stat st;
	u64 size;

	if (fstat(fd, &st))
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size))
			return -errno;
		return size >= off + len ? 0 : -ENOSPC;
	}
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	/*
	 * Allocate, so that swap-out never finds the disk full: also a file
	 * long enough already, which may be sparse. Only a file system that
	 * cannot allocate ahead (EOPNOTSUPP) gets a length alone.
	 */
	if (!fallocate(fd, 0, (off_t)off, (off_t)len))
		return 0;
	if (errno != EOPNOTSUPP)
		return -errno;
	if ((u64)st.st_size >= off + len)
		return 0;
	return ftruncate(fd, (off_t)(off + len)) ? -errno : 0;
}

static int swap_arena_create(struct kv_tier *t)
{
	struct kv_pool *pool = t->pool;
	u32 n = t->fa.nr_total, nb = 0;
	struct kv_swap_area *a;
	struct iovec bufs[2];
	int i, err;

	t->base = NULL;
	t->priv = NULL;
	if (!n)
		return 0;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->crc = calloc(n, sizeof(*a->crc));
	a->failed = calloc(n, sizeof(*a->failed));
	err = -ENOMEM;
	if (!a->crc || !a->failed)
		goto out_free;
	a->fd = pool->swap.fd;
	a->offset = pool->swap.offset;
	a->align = dio_align(a->fd);
	err = -EINVAL;
	if (pool->frame_bytes % a->align || a->offset % a->align)
		goto out_free;
	err = area_reserve(a->fd, a->offset, (u64)n * pool->frame_bytes);
	if (err)
		goto out_free;
	/* The arenas a transfer's buffer lies in: registered where allowed. */
	for (i = KV_TIER_DEVICE; i <= KV_TIER_HOST; i++) {
		if (!pool->tier[i].base || !pool->tier[i].fa.nr_total)
			continue;
		bufs[nb].iov_base = pool->tier[i].base;
		bufs[nb++].iov_len = (size_t)pool->tier[i].fa.nr_total * pool->frame_bytes;
	}
	err = kv_swap_io_create(a->fd, (int)pool->swap.engine, bufs, nb, &a->io);
	if (err)
		goto out_free;
	/* The I/O threads run where kvswapd does (refused: they run anywhere). */
	kv_swap_io_bind(a->io, &pool->place.cpus);
	snprintf(a->desc, sizeof(a->desc), "swap (%s%s)", kv_swap_io_engine(a->io),
		 kv_swap_io_registered(a->io) ? "" : ", plain buffers");
	t->desc = a->desc;
	t->priv = a;
	return 0;

out_free:
	free(a->crc);
	free(a->failed);
	free(a);
	return err;
}

static void swap_arena_destroy(struct kv_tier *t)
{
	struct kv_swap_area *a = t->priv;

	if (!a)
		return;
	kv_swap_io_destroy(a->io);
	free(a->crc);
	free(a->failed);
	free(a);
	t->priv = NULL;
	t->desc = NULL;
}

/* Fill @r for copy @c. */
static void swap_req(struct kv_pool *pool, struct kv_swap_area *a, const struct kv_copy *c,
		     struct kv_swap_req *r)
{
	bool out = c->dst_tier == KV_TIER_SWAP;
	u32 slot = out ? c->dst_frame : c->src_frame;

	r->buf = out ? kv_pool_frame_addr(pool, (int)c->src_tier, c->src_frame) :
		       kv_pool_frame_addr(pool, (int)c->dst_tier, c->dst_frame);
	r->off = a->offset + (u64)slot * pool->frame_bytes;
	r->len = (u32)pool->frame_bytes;
	r->write = out;
	r->res = -ECANCELED;	/* until the engine takes it */
}

/* The checksums of a batch's writes, computed while they are in flight. */
struct swap_sums {
	const struct kv_swap_req *r;
	u32 *sums;
	u32 n;
};

static void swap_sum_writes(void *arg)
{
	struct swap_sums *s = arg;
	u32 i;

	for (i = 0; i < s->n; i++)
		if (s->r[i].write)
			s->sums[i] = crc32c(0, s->r[i].buf, s->r[i].len);
}

/*
 * Read errors that say the slot's data cannot be had: the medium's (EIO,
 * ENODATA, EILSEQ, EBADMSG, EREMOTEIO) or a device gone (ENXIO, ENODEV).
 * Others (a read that never ran: ECANCELED, ENOMEM; a refused request; a
 * timeout) say nothing of the slot.
 */
static bool read_lost(int err)
{
	return err == -EIO || err == -ENODATA || err == -EILSEQ || err == -EBADMSG ||
	       err == -EREMOTEIO || err == -ENXIO || err == -ENODEV;
}

/*
 * The outcome of read @r of @slot: a read_lost() error or data that does
 * not match the slot's checksum marks the slot failed; other errors say
 * nothing of it. Publishing reads the marks of blocks that other threads
 * hold locked, under the pool lock while this runs without it: relaxed
 * atomics.
 */
static int swap_read_done(struct kv_pool *pool, struct kv_swap_area *a,
			  const struct kv_swap_req *r, u32 slot)
{
	int err = r->res;

	if (err && !read_lost(err))
		return err;
	if (!err && crc32c(0, r->buf, r->len) != a->crc[slot]) {
		fprintf(stderr, "kvmem: %s: swap slot %u: checksum mismatch\n", pool->name,
			slot);
		err = -EIO;
	}
	__atomic_store_n(&a->failed[slot], err != 0, __ATOMIC_RELAXED);
	return err;
}

/*
 * Run @n copies between swap slots and CPU-addressable frames as one batch
 * of I/O; written slots get their new checksums, read frames are checked.
 * Every read's outcome is recorded, not only the first failure's.
 */
static int swap_copy_submit(struct kv_pool *pool, const struct kv_copy *c, u32 n, void **cookie)
{
	struct kv_swap_area *a = pool->tier[KV_TIER_SWAP].priv;
	struct kv_swap_req *r;
	u32 *sums, i;
	int err, e;

	*cookie = NULL;
	r = malloc(n * sizeof(*r));
	sums = malloc(n * sizeof(*sums));
	err = -ENOMEM;
	if (!r || !sums)
		goto out;
	err = -EINVAL;
	for (i = 0; i < n; i++) {
		swap_req(pool, a, &c[i], &r[i]);
		if (!r[i].buf || (c[i].src_tier == KV_TIER_SWAP) == (c[i].dst_tier == KV_TIER_SWAP))
			goto out;
	}
	/* The frames written stay as they are (their blocks are locked). */
	err = kv_swap_io_run_with(a->io, r, n, swap_sum_writes,
				  &(struct swap_sums){ .r = r, .sums = sums, .n = n });
	for (i = 0; i < n; i++) {
		if (!r[i].write) {
			e = swap_read_done(pool, a, &r[i], c[i].src_frame);
			err = err ?: e;
		} else if (!r[i].res) {
			a->crc[c[i].dst_frame] = sums[i];
			__atomic_store_n(&a->failed[c[i].dst_frame], 0, __ATOMIC_RELAXED);
		}
	}
out:
	free(r);
	free(sums);
	return err;
}

static int swap_copy_wait(struct kv_pool *pool, void *cookie)
{
	(void)pool;
	(void)cookie;
	return 0;
}

/** swap_slot_crc() - the checksum of what was last written to @slot */
u32 swap_slot_crc(struct kv_pool *pool, u32 slot)
{
	struct kv_swap_area *a = pool->tier[KV_TIER_SWAP].priv;

	return a ? a->crc[slot] : 0;
}

/**
 * swap_slot_set_crc() - record the checksum of @slot's contents (restore,
 * which has read them whole): no longer a failed slot
 */
void swap_slot_set_crc(struct kv_pool *pool, u32 slot, u32 crc)
{
	struct kv_swap_area *a = pool->tier[KV_TIER_SWAP].priv;

	if (!a)
		return;
	a->crc[slot] = crc;
	__atomic_store_n(&a->failed[slot], 0, __ATOMIC_RELAXED);
}

/**
 * swap_slot_failed() - whether the last read of @slot failed (an I/O error
 * or a checksum mismatch) and nothing has been written there since
 * @pool: pool; the caller holds the slot's block locked or the pool lock
 * @slot: slot
 */
bool swap_slot_failed(struct kv_pool *pool, u32 slot)
{
	struct kv_swap_area *a = pool->tier[KV_TIER_SWAP].priv;

	return a && slot < pool->tier[KV_TIER_SWAP].fa.nr_total &&
	       __atomic_load_n(&a->failed[slot], __ATOMIC_RELAXED);
}

/** swap_area_fd() - the swap area's descriptor, or -ENODEV without one */
int swap_area_fd(struct kv_pool *pool)
{
	struct kv_swap_area *a = pool->tier[KV_TIER_SWAP].priv;

	return a ? a->fd : -ENODEV;
}

/**
 * kv_pool_swap_inject() - test hook: make the swap engine fail, shorten or
 * corrupt its @nth transfer from now
 * @pool: pool with a swap tier
 * @what: KV_SWAP_INJECT_* of mm/swap_io.h (EIO, SHORT, FLIP); 0 disarms
 * @nth:  which transfer, from 1
 *
 * Return: 0, or -ENODEV when the pool has no swap tier.
 */
int kv_pool_swap_inject(struct kv_pool *pool, u32 what, u64 nth)
{
	struct kv_swap_area *a = pool->tier[KV_TIER_SWAP].priv;

	if (!a)
		return -ENODEV;
	kv_swap_io_inject(a->io, what, nth);
	return 0;
}

const struct kv_tier_ops kv_swap_file_ops = {
	.name = "swap",
	.arena_create = swap_arena_create,
	.arena_destroy = swap_arena_destroy,
	.copy_submit = swap_copy_submit,
	.copy_wait = swap_copy_wait,
};
