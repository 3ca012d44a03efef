// SPDX-License-Identifier: MIT
/*
 * Swap I/O engines (see swap_io.h).
 *
 * A kv_swap_io_run() call turns its requests into a batch of ops, puts the
 * batch on the engine's queue and sleeps on the batch's condition variable.
 * Engine threads claim ops from the head of the queue one at a time, in
 * order, under io->lock; claiming numbers the transfer (op->seq), which is
 * what kv_swap_io_inject() aims at. The last op of a batch to finish wakes
 * its caller. A batch of one transfer is done on the caller's thread with
 * pread/pwrite instead (batch_direct()): with nothing to batch, the
 * hand-off to an engine thread and back would cost more than it saves.
 *
 * io_uring: one thread creates the ring, registers the file and the
 * arenas, and is the only one to touch the ring until it tears it down
 * (IORING_SETUP_SINGLE_ISSUER and DEFER_TASKRUN where the kernel has them).
 * It keeps a poll armed on an eventfd that callers write after queueing a
 * batch, so one io_uring_submit_and_wait() both submits and sleeps until a
 * transfer completes or new work arrives. At most SWAP_URING_DEPTH - 1 ops
 * are in flight (the last SQE is the poll's), so the SQ always has room and
 * the CQ, twice the SQ, never overflows.
 *
 * psync: SWAP_PSYNC_THREADS threads claim ops and pread() or pwrite() them.
 *
 * Both engines move a transfer through op_chunk() (how much to ask for)
 * and op_advance() (what the kernel answered), so short transfers, -EAGAIN
 * and the injected faults take the same path in each.
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <lib/list.h>
#include "swap_io.h"

#define SWAP_URING_DEPTH	256		/* SQ entries; the CQ has twice as many */
#define SWAP_URING_FLAGS	(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | \
				 IORING_SETUP_SUBMIT_ALL)
#define SWAP_PSYNC_THREADS	4
#define SWAP_REG_MAX		(1ull << 30)	/* largest buffer io_uring registers */
#define SWAP_REAP_BATCH		64

/* Index of each KV_SWAP_INJECT_* bit in kv_swap_io.inject_at[]. */
#define SWAP_INJ_EIO		0
#define SWAP_INJ_SHORT		1
#define SWAP_INJ_FLIP		2
#define SWAP_NR_INJ		3

struct swap_batch;

/**
 * struct swap_op - a request on its way through an engine
 * @req:       the caller's request
 * @batch:     the batch it belongs to
 * @done:      bytes moved so far
 * @buf_index: registered buffer that holds all of @req->buf, or -1
 * @inject:    KV_SWAP_INJECT_* faults still to apply to this transfer
 * @seq:       number of the transfer among the engine's, from 1
 */
struct swap_op {
	struct kv_swap_req *req;
	struct swap_batch *batch;
	uint32_t done;
	int buf_index;
	unsigned int inject;
	uint64_t seq;
};

/**
 * struct swap_batch - the requests of one kv_swap_io_run() call
 * @node:    link on kv_swap_io.queue while it has ops not yet claimed
 * @done:    signalled, under kv_swap_io.lock, when @pending drops to 0
 * @nr:      ops
 * @next:    next op to claim
 * @pending: ops not finished yet
 * @ops:     the ops, in request order
 */
struct swap_batch {
	struct list_head node;
	pthread_cond_t done;
	unsigned int nr;
	unsigned int next;
	unsigned int pending;
	struct swap_op ops[];
};

/**
 * struct swap_region - an arena given to kv_swap_io_create()
 * @base:  first byte
 * @len:   bytes
 * @first: index of its first registered buffer; each buffer covers
 *         SWAP_REG_MAX bytes of the region, the last one the rest
 */
struct swap_region {
	uintptr_t base;
	uint64_t len;
	unsigned int first;
};

/**
 * struct kv_swap_io - a swap I/O engine
 * @fd:           the swap area, owned by the caller
 * @engine:       KV_SWAP_ENGINE_IO_URING or KV_SWAP_ENGINE_PSYNC
 * @lock:         guards @queue, @stop, @nr_xfers, @nr_reads, @inject_at,
 *                the batches' @next and @pending, and @setup_*
 * @work:         psync threads wait here for work; kv_swap_io_create()
 *                waits here for the io_uring thread's setup
 * @queue:        batches with ops not yet claimed, oldest first
 * @stop:         the threads must exit once @queue is empty
 * @threads:      the engine's threads
 * @nr_threads:   how many of @threads run
 * @nr_xfers:     transfers claimed so far
 * @nr_reads:     reads among them
 * @inject_at:    per injection, the @nr_xfers (@nr_reads for FLIP) value
 *                of the transfer it falls on, 0 when disarmed
 * @stats:        counters, updated and read with atomics
 * @regions:      the arenas, @nr_regions of them
 * @nr_regions:   entries of @regions
 * @nr_reg_bufs:  buffers the arenas make when registered
 * @ring:         the io_uring, touched only by its thread
 * @efd:          eventfd callers write after queueing work, or -1
 * @inflight:     ops in the ring (io_uring thread only)
 * @fixed_file:   @fd is registered: SQEs name file index 0
 * @registered:   the arenas are registered buffers
 * @setup_done:   the io_uring thread has finished setting up
 * @setup_err:    its result, 0 or -errno
 */
struct kv_swap_io {
	int fd;
	int engine;
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct list_head queue;
	bool stop;
	pthread_t threads[SWAP_PSYNC_THREADS];
	unsigned int nr_threads;
	uint64_t nr_xfers;
	uint64_t nr_reads;
	uint64_t inject_at[SWAP_NR_INJ];
	struct kv_swap_io_stats stats;
	struct swap_region *regions;
	unsigned int nr_regions;
	unsigned int nr_reg_bufs;
	struct io_uring ring;
	int efd;
	unsigned int inflight;
	bool fixed_file;
	bool registered;
	bool setup_done;
	int setup_err;
};

static void stat_add(uint64_t *counter, uint64_t v)
{
	__atomic_fetch_add(counter, v, __ATOMIC_RELAXED);
}

/* ---- ops, common to both engines ---------------------------------------- */

/* -EINVAL unless @req follows struct kv_swap_req's rules. */
static int req_check(const struct kv_swap_req *req)
{
	if (!req->buf || !req->len ||
	    ((uintptr_t)req->buf | req->off | req->len) & (KV_SWAP_IO_ALIGN - 1))
		return -EINVAL;
	if (req->off > (uint64_t)INT64_MAX - req->len)
		return -EINVAL;
	return 0;
}

/* Index of the registered buffer that holds @len bytes at @buf, or -1. */
static int reg_index(const struct kv_swap_io *io, const void *buf, uint32_t len)
{
	uintptr_t p = (uintptr_t)buf;
	const struct swap_region *r;
	uint64_t at, end;
	unsigned int i;

	if (!io->registered)
		return -1;
	for (i = 0; i < io->nr_regions; i++) {
		r = &io->regions[i];
		if (p < r->base || p - r->base >= r->len)
			continue;
		at = p - r->base;
		end = (at / SWAP_REG_MAX + 1) * SWAP_REG_MAX;
		if (end > r->len)
			end = r->len;
		if (at + len > end)
			return -1;
		return r->first + at / SWAP_REG_MAX;
	}
	return -1;
}

static void op_number(struct kv_swap_io *io, struct swap_op *op);

/*
 * Claim the next op of the oldest batch and number it, arming the faults
 * that fall on it. Called with io->lock held; NULL when nothing is queued.
 */
static struct swap_op *op_claim(struct kv_swap_io *io)
{
	struct swap_batch *b;
	struct swap_op *op;

	if (list_empty(&io->queue))
		return NULL;
	b = list_first_entry(&io->queue, struct swap_batch, node);
	op = &b->ops[b->next++];
	if (b->next == b->nr)
		list_del_init(&b->node);
	op_number(io, op);
	return op;
}

/* Number @op among all transfers and arm the faults that fall on it; locked. */
static void op_number(struct kv_swap_io *io, struct swap_op *op)
{
	op->seq = ++io->nr_xfers;
	if (io->inject_at[SWAP_INJ_EIO] == op->seq) {
		io->inject_at[SWAP_INJ_EIO] = 0;
		op->inject |= KV_SWAP_INJECT_EIO;
		op->req->res = -EIO;
	}
	if (io->inject_at[SWAP_INJ_SHORT] == op->seq) {
		io->inject_at[SWAP_INJ_SHORT] = 0;
		op->inject |= KV_SWAP_INJECT_SHORT;
	}
	if (!op->req->write && io->inject_at[SWAP_INJ_FLIP] == ++io->nr_reads) {
		io->inject_at[SWAP_INJ_FLIP] = 0;
		op->inject |= KV_SWAP_INJECT_FLIP;
	}
}

/*
 * Bytes to ask for next: all that is left, or, the first time for an
 * injected short transfer, half of it rounded down to the alignment (a
 * transfer of one alignment unit cannot be split and goes whole).
 */
static uint32_t op_chunk(struct swap_op *op)
{
	uint32_t left = op->req->len - op->done, half;

	if (!(op->inject & KV_SWAP_INJECT_SHORT))
		return left;
	op->inject &= ~KV_SWAP_INJECT_SHORT;
	half = (left / 2) & ~(KV_SWAP_IO_ALIGN - 1);
	return half ? half : left;
}

/* Flip one bit of a finished read, at a place that depends on its number. */
static void op_flip(struct swap_op *op)
{
	uint64_t h = op->seq * 0x9e3779b97f4a7c15ull;
	unsigned char *p = op->req->buf;

	p[(h >> 32) % op->req->len] ^= 1u << ((h >> 29) & 7);
}

/*
 * Take the result @res of one transfer of @op's (bytes moved, or -errno).
 * Return: true when the op is finished, with op->req->res set; false when
 * the rest must be issued again (from op->done on).
 */
static bool op_advance(struct kv_swap_io *io, struct swap_op *op, long res)
{
	struct kv_swap_req *req = op->req;

	if (res == -EAGAIN) {
		stat_add(&io->stats.eagain_retries, 1);
		return false;
	}
	if (res == -EINTR)
		return false;
	if (res <= 0) {
		/* 0: end of file, which a swap area never has in the middle */
		req->res = res ? (int)res : -EIO;
		return true;
	}
	op->done += res;
	if (op->done < req->len) {
		stat_add(&io->stats.short_retries, 1);
		return false;
	}
	if (op->inject & KV_SWAP_INJECT_FLIP)
		op_flip(op);
	req->res = 0;
	return true;
}

/* Count a finished op. */
static void op_count(struct kv_swap_io *io, struct swap_op *op)
{
	struct kv_swap_req *req = op->req;

	if (req->res) {
		stat_add(&io->stats.errors, 1);
	} else if (req->write) {
		stat_add(&io->stats.writes, 1);
		stat_add(&io->stats.bytes_written, req->len);
	} else {
		stat_add(&io->stats.reads, 1);
		stat_add(&io->stats.bytes_read, req->len);
	}
}

/* Count a finished op and wake its caller if it was the batch's last. */
static void op_finish(struct kv_swap_io *io, struct swap_op *op)
{
	op_count(io, op);
	if (!--op->batch->pending)
		pthread_cond_signal(&op->batch->done);
}

/* Start a thread with every signal blocked: signals are for the caller's threads. */
static int swap_spawn(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int err;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -err;
}

/* ---- io_uring engine ---------------------------------------------------- */

static struct io_uring_sqe *uring_sqe(struct kv_swap_io *io)
{
	struct io_uring_sqe *sqe;

	/* The in-flight bound leaves room; should the SQ still be full, push it. */
	while (!(sqe = io_uring_get_sqe(&io->ring)))
		io_uring_submit(&io->ring);
	return sqe;
}

/* Queue an SQE for the part of @op not done yet. */
static void uring_prep(struct kv_swap_io *io, struct swap_op *op)
{
	struct kv_swap_req *req = op->req;
	struct io_uring_sqe *sqe = uring_sqe(io);
	char *buf = (char *)req->buf + op->done;
	uint64_t off = req->off + op->done;
	uint32_t len = op_chunk(op);
	int fd = io->fixed_file ? 0 : io->fd;

	if (op->buf_index >= 0 && req->write)
		io_uring_prep_write_fixed(sqe, fd, buf, len, off, op->buf_index);
	else if (op->buf_index >= 0)
		io_uring_prep_read_fixed(sqe, fd, buf, len, off, op->buf_index);
	else if (req->write)
		io_uring_prep_write(sqe, fd, buf, len, off);
	else
		io_uring_prep_read(sqe, fd, buf, len, off);
	if (io->fixed_file)
		sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, op);
}

/* Empty the eventfd and poll it again; its CQE carries no op. */
static void uring_arm_poll(struct kv_swap_io *io)
{
	struct io_uring_sqe *sqe;
	eventfd_t v;

	eventfd_read(io->efd, &v);
	sqe = uring_sqe(io);
	io_uring_prep_poll_add(sqe, io->efd, POLLIN);
	io_uring_sqe_set_data(sqe, NULL);
}

/*
 * Claim queued ops into SQEs while the ring has room; injected -EIO ops
 * finish at once. Return: true when told to stop and nothing is queued.
 */
static bool uring_pull(struct kv_swap_io *io)
{
	struct swap_op *op;
	bool stop;

	pthread_mutex_lock(&io->lock);
	while (io->inflight < SWAP_URING_DEPTH - 1 && (op = op_claim(io))) {
		if (op->inject & KV_SWAP_INJECT_EIO) {
			op_finish(io, op);
			continue;
		}
		uring_prep(io, op);
		io->inflight++;
	}
	stop = io->stop && list_empty(&io->queue);
	pthread_mutex_unlock(&io->lock);
	return stop;
}

/* Reap every CQE there is, in batches: reissue or finish their ops. */
static void uring_reap(struct kv_swap_io *io)
{
	struct io_uring_cqe *cqes[SWAP_REAP_BATCH];
	struct swap_op *fin[SWAP_REAP_BATCH], *op;
	unsigned int n, i, nr_fin;

	while ((n = io_uring_peek_batch_cqe(&io->ring, cqes, SWAP_REAP_BATCH))) {
		nr_fin = 0;
		for (i = 0; i < n; i++) {
			op = io_uring_cqe_get_data(cqes[i]);
			if (!op)
				uring_arm_poll(io);
			else if (op_advance(io, op, cqes[i]->res))
				fin[nr_fin++] = op;
			else
				uring_prep(io, op);
		}
		io_uring_cq_advance(&io->ring, n);
		if (!nr_fin)
			continue;
		io->inflight -= nr_fin;
		pthread_mutex_lock(&io->lock);
		for (i = 0; i < nr_fin; i++)
			op_finish(io, fin[i]);
		pthread_mutex_unlock(&io->lock);
	}
}

/* -EOPNOTSUPP unless the ring has every opcode the engine uses (5.6+). */
static int uring_probe(struct io_uring *ring)
{
	static const int ops[] = {
		IORING_OP_READ, IORING_OP_WRITE, IORING_OP_READ_FIXED,
		IORING_OP_WRITE_FIXED, IORING_OP_POLL_ADD,
	};
	struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
	unsigned int i;
	int err = 0;

	if (!probe)
		return -EOPNOTSUPP;
	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (!io_uring_opcode_supported(probe, ops[i]))
			err = -EOPNOTSUPP;
	io_uring_free_probe(probe);
	return err;
}

/* Register the arenas, cut into buffers of at most SWAP_REG_MAX bytes. */
static void uring_register_bufs(struct kv_swap_io *io)
{
	const struct swap_region *r;
	struct iovec *iov;
	unsigned int i, n = 0;
	uint64_t at;

	if (!io->nr_reg_bufs)
		return;
	iov = calloc(io->nr_reg_bufs, sizeof(*iov));
	if (!iov)
		return;
	for (i = 0; i < io->nr_regions; i++) {
		r = &io->regions[i];
		for (at = 0; at < r->len; at += SWAP_REG_MAX) {
			iov[n].iov_base = (void *)(r->base + at);
			iov[n++].iov_len = r->len - at < SWAP_REG_MAX ? r->len - at : SWAP_REG_MAX;
		}
	}
	io->registered = io_uring_register_buffers(&io->ring, iov, n) == 0;
	free(iov);
}

/*
 * Create the ring with the flags that suit one owner thread, falling back
 * to none on kernels before 6.1; register the file and the arenas where
 * the kernel lets us (refusals only cost speed).
 */
static int uring_setup(struct kv_swap_io *io)
{
	struct io_uring_params p = { .flags = SWAP_URING_FLAGS };
	int err;

	err = io_uring_queue_init_params(SWAP_URING_DEPTH, &io->ring, &p);
	if (err == -EINVAL) {
		memset(&p, 0, sizeof(p));
		err = io_uring_queue_init_params(SWAP_URING_DEPTH, &io->ring, &p);
	}
	if (err)
		return err;
	err = uring_probe(&io->ring);
	if (err) {
		io_uring_queue_exit(&io->ring);
		return err;
	}
	io->fixed_file = io_uring_register_files(&io->ring, &io->fd, 1) == 0;
	uring_register_bufs(io);
	return 0;
}

static void uring_teardown(struct kv_swap_io *io)
{
	if (io->registered)
		io_uring_unregister_buffers(&io->ring);
	if (io->fixed_file)
		io_uring_unregister_files(&io->ring);
	io_uring_queue_exit(&io->ring);
}

/* The thread that owns the ring: set it up, serve batches until told to stop. */
static void *uring_thread(void *arg)
{
	struct kv_swap_io *io = arg;
	int err = uring_setup(io);

	pthread_mutex_lock(&io->lock);
	io->setup_err = err;
	io->setup_done = true;
	pthread_cond_broadcast(&io->work);
	pthread_mutex_unlock(&io->lock);
	if (err)
		return NULL;
	uring_arm_poll(io);
	while (!uring_pull(io) || io->inflight) {
		io_uring_submit_and_wait(&io->ring, 1);
		uring_reap(io);
	}
	uring_teardown(io);
	return NULL;
}

static int uring_start(struct kv_swap_io *io)
{
	int err;

	io->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (io->efd < 0)
		return -errno;
	err = swap_spawn(&io->threads[0], uring_thread, io);
	if (err)
		goto out_efd;
	pthread_mutex_lock(&io->lock);
	while (!io->setup_done)
		pthread_cond_wait(&io->work, &io->lock);
	err = io->setup_err;
	pthread_mutex_unlock(&io->lock);
	if (!err) {
		io->nr_threads = 1;
		return 0;
	}
	pthread_join(io->threads[0], NULL);
out_efd:
	close(io->efd);
	io->efd = -1;
	return err;
}

/* ---- psync engine ------------------------------------------------------- */

/* One pread() or pwrite() of @len bytes at @op's progress: bytes or -errno. */
static long psync_xfer(struct kv_swap_io *io, struct swap_op *op, uint32_t len)
{
	struct kv_swap_req *req = op->req;
	char *buf = (char *)req->buf + op->done;
	off_t off = (off_t)(req->off + op->done);
	ssize_t r;

	if (req->write)
		r = pwrite(io->fd, buf, len, off);
	else
		r = pread(io->fd, buf, len, off);
	return r < 0 ? -errno : r;
}

static void *psync_thread(void *arg)
{
	struct kv_swap_io *io = arg;
	struct swap_op *op;

	pthread_mutex_lock(&io->lock);
	for (;;) {
		op = op_claim(io);
		if (!op) {
			if (io->stop)
				break;
			pthread_cond_wait(&io->work, &io->lock);
			continue;
		}
		if (!(op->inject & KV_SWAP_INJECT_EIO)) {
			pthread_mutex_unlock(&io->lock);
			while (!op_advance(io, op, psync_xfer(io, op, op_chunk(op))))
				;
			pthread_mutex_lock(&io->lock);
		}
		op_finish(io, op);
	}
	pthread_mutex_unlock(&io->lock);
	return NULL;
}

static void swap_stop(struct kv_swap_io *io)
{
	unsigned int i;

	pthread_mutex_lock(&io->lock);
	io->stop = true;
	pthread_cond_broadcast(&io->work);
	pthread_mutex_unlock(&io->lock);
	if (io->efd >= 0)
		eventfd_write(io->efd, 1);
	for (i = 0; i < io->nr_threads; i++)
		pthread_join(io->threads[i], NULL);
	io->nr_threads = 0;
}

static int psync_start(struct kv_swap_io *io)
{
	int err = 0;

	while (io->nr_threads < SWAP_PSYNC_THREADS) {
		err = swap_spawn(&io->threads[io->nr_threads], psync_thread, io);
		if (err)
			break;
		io->nr_threads++;
	}
	if (err)
		swap_stop(io);
	return err;
}

/* ---- the interface ------------------------------------------------------ */

static int regions_init(struct kv_swap_io *io, const struct iovec *bufs, unsigned int nr_bufs)
{
	struct swap_region *r;
	unsigned int i;

	if (!nr_bufs)
		return 0;
	io->regions = calloc(nr_bufs, sizeof(*io->regions));
	if (!io->regions)
		return -ENOMEM;
	for (i = 0; i < nr_bufs; i++) {
		r = &io->regions[i];
		r->base = (uintptr_t)bufs[i].iov_base;
		r->len = bufs[i].iov_len;
		r->first = io->nr_reg_bufs;
		io->nr_reg_bufs += (r->len + SWAP_REG_MAX - 1) / SWAP_REG_MAX;
	}
	io->nr_regions = nr_bufs;
	return 0;
}

static int swap_lock_init(struct kv_swap_io *io)
{
	int err;

	err = pthread_mutex_init(&io->lock, NULL);
	if (err)
		return -err;
	err = pthread_cond_init(&io->work, NULL);
	if (err) {
		pthread_mutex_destroy(&io->lock);
		return -err;
	}
	return 0;
}

/**
 * kv_swap_io_create() - start a swap I/O engine on a swap area
 * @fd:      the swap area, open for reading and writing (O_DIRECT as a rule);
 *           it stays the caller's, and must stay open until
 *           kv_swap_io_destroy()
 * @engine:  KV_SWAP_ENGINE_AUTO (io_uring, else psync when io_uring fails
 *           to start: disabled by sysctl or seccomp, kernel too old...),
 *           KV_SWAP_ENGINE_IO_URING or KV_SWAP_ENGINE_PSYNC
 * @bufs:    the arenas the transfers' buffers lie in; io_uring registers
 *           them as fixed buffers (pinning their pages). May be NULL when
 *           @nr_bufs is 0. Only the array is copied: the memory must stay
 *           mapped until kv_swap_io_destroy()
 * @nr_bufs: entries of @bufs
 * @out:     the engine, on success
 *
 * A refused registration (RLIMIT_MEMLOCK, memory the kernel cannot pin
 * for long) is no error: transfers then go through plain buffers, and
 * kv_swap_io_registered() says 0.
 *
 * Return: 0; -EINVAL for a bad argument; with KV_SWAP_ENGINE_IO_URING, the
 * error that kept io_uring from starting; -ENOMEM, -EAGAIN when memory or
 * threads run out.
 */
int kv_swap_io_create(int fd, int engine, const struct iovec *bufs, unsigned int nr_bufs,
		      struct kv_swap_io **out)
{
	struct kv_swap_io *io;
	int err;

	if (fd < 0 || engine < KV_SWAP_ENGINE_AUTO || engine > KV_SWAP_ENGINE_PSYNC ||
	    (nr_bufs && !bufs))
		return -EINVAL;
	io = calloc(1, sizeof(*io));
	if (!io)
		return -ENOMEM;
	io->fd = fd;
	io->efd = -1;
	INIT_LIST_HEAD(&io->queue);
	err = swap_lock_init(io);
	if (err)
		goto out_free;
	err = regions_init(io, bufs, nr_bufs);
	if (err)
		goto out_lock;
	if (engine != KV_SWAP_ENGINE_PSYNC) {
		io->engine = KV_SWAP_ENGINE_IO_URING;
		err = uring_start(io);
		if (!err || engine == KV_SWAP_ENGINE_IO_URING)
			goto out_started;
	}
	io->engine = KV_SWAP_ENGINE_PSYNC;
	err = psync_start(io);
out_started:
	if (err)
		goto out_regions;
	*out = io;
	return 0;

out_regions:
	free(io->regions);
out_lock:
	pthread_cond_destroy(&io->work);
	pthread_mutex_destroy(&io->lock);
out_free:
	free(io);
	return err;
}

/**
 * kv_swap_io_destroy() - stop an engine and free it
 * @io: the engine, or NULL
 *
 * Joins its threads; the io_uring thread unregisters the buffers and the
 * file and closes the ring. The swap area's fd stays open. No
 * kv_swap_io_run() may be in progress or start.
 */
void kv_swap_io_destroy(struct kv_swap_io *io)
{
	if (!io)
		return;
	swap_stop(io);
	if (io->efd >= 0)
		close(io->efd);
	free(io->regions);
	pthread_cond_destroy(&io->work);
	pthread_mutex_destroy(&io->lock);
	free(io);
}

/* Turn @reqs into ops; invalid requests finish at once with -EINVAL. */
static void batch_init(struct kv_swap_io *io, struct swap_batch *b,
		       struct kv_swap_req *reqs, unsigned int n)
{
	struct swap_op *op;
	unsigned int i;

	b->nr = 0;
	b->next = 0;
	for (i = 0; i < n; i++) {
		reqs[i].res = req_check(&reqs[i]);
		if (reqs[i].res) {
			stat_add(&io->stats.errors, 1);
			continue;
		}
		op = &b->ops[b->nr++];
		memset(op, 0, sizeof(*op));
		op->req = &reqs[i];
		op->batch = b;
		op->buf_index = reg_index(io, reqs[i].buf, reqs[i].len);
	}
	b->pending = b->nr;
}

/*
 * A batch of one transfer is served on the calling thread with pread or
 * pwrite: there is nothing to batch, and the hand-off to the engine's
 * thread and back (tens of microseconds) would cost more than it saves.
 * Numbered and fault-injected like any transfer.
 */
static void batch_direct(struct kv_swap_io *io, struct swap_op *op, void (*work)(void *),
			 void *arg)
{
	pthread_mutex_lock(&io->lock);
	op_number(io, op);
	pthread_mutex_unlock(&io->lock);
	if (work)
		work(arg);
	if (!(op->inject & KV_SWAP_INJECT_EIO))
		while (!op_advance(io, op, psync_xfer(io, op, op_chunk(op))))
			;
	op_count(io, op);
}

/*
 * Queue @b and wake the engine; run @work (if any) while the transfers are
 * in flight; then sleep until every op of @b has finished.
 */
static void batch_run(struct kv_swap_io *io, struct swap_batch *b, void (*work)(void *),
		      void *arg)
{
	unsigned int i;
	int err;

	err = pthread_cond_init(&b->done, NULL);
	if (err) {
		for (i = 0; i < b->nr; i++)
			b->ops[i].req->res = -err;
		stat_add(&io->stats.errors, b->nr);
		return;
	}
	pthread_mutex_lock(&io->lock);
	list_add_tail(&b->node, &io->queue);
	if (io->engine == KV_SWAP_ENGINE_PSYNC)
		pthread_cond_broadcast(&io->work);
	pthread_mutex_unlock(&io->lock);
	if (io->efd >= 0)
		eventfd_write(io->efd, 1);
	if (work)
		work(arg);
	pthread_mutex_lock(&io->lock);
	while (b->pending)
		pthread_cond_wait(&b->done, &io->lock);
	pthread_mutex_unlock(&io->lock);
	pthread_cond_destroy(&b->done);
}

/**
 * kv_swap_io_run() - do a batch of transfers and wait for all of them
 * @io:   the engine
 * @reqs: the transfers; each one's @res is set
 * @n:    how many
 *
 * Safe to call from several threads at once; transfers of one batch, and
 * of concurrent batches, may complete in any order, so no two transfers in
 * flight together should touch the same file range or the same memory if
 * one of them writes it. A request that breaks struct kv_swap_req's rules
 * fails with -EINVAL and the others still run.
 *
 * Return: 0 when every request succeeded, else the @res of the first one
 * that failed; -ENOMEM (and no request done) when the batch cannot be
 * allocated.
 */
int kv_swap_io_run(struct kv_swap_io *io, struct kv_swap_req *reqs, unsigned int n)
{
	return kv_swap_io_run_with(io, reqs, n, NULL, NULL);
}

/**
 * kv_swap_io_run_with() - kv_swap_io_run(), with work done on the calling
 * thread while the transfers are in flight
 * @io:   the engine
 * @reqs: the transfers
 * @n:    how many
 * @work: called once the batch is queued, before waiting (the swap tier
 *        checksums the frames it writes: they do not change until the
 *        batch completes); may be NULL
 * @arg:  passed to @work
 *
 * Return: as kv_swap_io_run(). @work runs whenever at least one request
 * is valid; when none is (or the batch cannot be allocated), it does not.
 */
int kv_swap_io_run_with(struct kv_swap_io *io, struct kv_swap_req *reqs, unsigned int n,
			void (*work)(void *), void *arg)
{
	struct swap_batch *b;
	unsigned int i;
	int err = 0;

	if (!n)
		return 0;
	b = malloc(sizeof(*b) + (size_t)n * sizeof(b->ops[0]));
	if (!b)
		return -ENOMEM;
	batch_init(io, b, reqs, n);
	if (b->nr == 1)
		batch_direct(io, &b->ops[0], work, arg);
	else if (b->nr)
		batch_run(io, b, work, arg);
	for (i = 0; i < n && !err; i++)
		err = reqs[i].res;
	free(b);
	return err;
}

/**
 * kv_swap_io_bind() - name the engine's threads and run them on @cpus
 * @io:   engine
 * @cpus: CPUs (the pool's NUMA placement), or NULL or empty to leave them
 *
 * Return: threads bound, or the negative errno of the first refusal.
 */
int kv_swap_io_bind(struct kv_swap_io *io, const cpu_set_t *cpus)
{
	char comm[16];
	unsigned int i;
	int err;

	for (i = 0; i < io->nr_threads; i++) {
		snprintf(comm, sizeof(comm), "kvswapio/%u", i % 100u);
		pthread_setname_np(io->threads[i], comm);
	}
	if (!cpus || !CPU_COUNT(cpus))
		return 0;
	for (i = 0; i < io->nr_threads; i++) {
		err = pthread_setaffinity_np(io->threads[i], sizeof(*cpus), cpus);
		if (err)
			return -err;
	}
	return (int)io->nr_threads;
}

/**
 * kv_swap_io_engine() - the engine that runs
 * @io: the engine
 *
 * Return: "io_uring" or "psync".
 */
const char *kv_swap_io_engine(const struct kv_swap_io *io)
{
	return io->engine == KV_SWAP_ENGINE_IO_URING ? "io_uring" : "psync";
}

/**
 * kv_swap_io_registered() - whether the arenas are registered buffers
 * @io: the engine
 *
 * Return: 1 when io_uring registered the arenas given at creation, so that
 * transfers inside them use READ_FIXED and WRITE_FIXED; 0 with psync, with
 * no arenas, or when the kernel refused to register them.
 */
int kv_swap_io_registered(const struct kv_swap_io *io)
{
	return io->registered;
}

/**
 * kv_swap_io_inject() - arm or disarm a fault, for tests
 * @io:   the engine
 * @what: KV_SWAP_INJECT_* bits, each armed (or disarmed) on its own
 * @nth:  the fault falls on the @nth transfer claimed from now on,
 *        counting from 1 (for KV_SWAP_INJECT_FLIP, the @nth read); 0
 *        disarms
 *
 * Transfers are claimed in the order of the batches' arrival, and within a
 * batch in request order, so for one caller the nth request of its next
 * batch is the nth transfer. Each fault fires once.
 *
 * KV_SWAP_INJECT_EIO: the transfer is not done and completes with -EIO.
 * KV_SWAP_INJECT_SHORT: the transfer is issued for half its length first
 * (rounded down to KV_SWAP_IO_ALIGN; one of KV_SWAP_IO_ALIGN bytes goes
 * whole), and the engine issues the rest, as after a short transfer from
 * the kernel. KV_SWAP_INJECT_FLIP: the read succeeds, then one bit of its
 * buffer is flipped, as by a medium that corrupts data silently.
 */
void kv_swap_io_inject(struct kv_swap_io *io, unsigned int what, uint64_t nth)
{
	unsigned int i;

	pthread_mutex_lock(&io->lock);
	for (i = 0; i < SWAP_NR_INJ; i++) {
		if (!(what & (1u << i)))
			continue;
		if (!nth)
			io->inject_at[i] = 0;
		else
			io->inject_at[i] = (i == SWAP_INJ_FLIP ? io->nr_reads : io->nr_xfers) + nth;
	}
	pthread_mutex_unlock(&io->lock);
}

/**
 * kv_swap_io_stats() - read an engine's counters
 * @io: the engine
 * @st: filled in; see struct kv_swap_io_stats
 *
 * Each counter is read atomically, not all of them at one instant: read
 * them when no batch is in progress for exact totals.
 */
void kv_swap_io_stats(const struct kv_swap_io *io, struct kv_swap_io_stats *st)
{
	st->reads = __atomic_load_n(&io->stats.reads, __ATOMIC_RELAXED);
	st->writes = __atomic_load_n(&io->stats.writes, __ATOMIC_RELAXED);
	st->bytes_read = __atomic_load_n(&io->stats.bytes_read, __ATOMIC_RELAXED);
	st->bytes_written = __atomic_load_n(&io->stats.bytes_written, __ATOMIC_RELAXED);
	st->short_retries = __atomic_load_n(&io->stats.short_retries, __ATOMIC_RELAXED);
	st->eagain_retries = __atomic_load_n(&io->stats.eagain_retries, __ATOMIC_RELAXED);
	st->errors = __atomic_load_n(&io->stats.errors, __ATOMIC_RELAXED);
}
