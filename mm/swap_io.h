/* SPDX-License-Identifier: MIT */
/*
 * Swap I/O engines: block-sized transfers between memory and a swap area,
 * one file descriptor opened O_DIRECT.
 *
 * Two engines do the same work. io_uring: one I/O thread owns the ring of
 * the swap area, submits the batches callers hand it and reaps their
 * completions in batches; the file and the caller's arenas (the host tier's
 * memfd mapping, the CPU device arena) are registered, so transfers inside
 * the arenas skip the per-I/O page pinning. psync: a few threads doing
 * pread() and pwrite(), for systems where io_uring is disabled (sysctl
 * kernel.io_uring_disabled, seccomp in containers) or missing.
 *
 * kv_swap_io_run() may be called from several threads at once: each call
 * hands its batch to the engine and sleeps until all of it has completed.
 * Both engines finish short transfers themselves and retry -EAGAIN and
 * -EINTR, so a request ends done in full or failed.
 */
#ifndef _KV_MM_SWAP_IO_H
#define _KV_MM_SWAP_IO_H

#include <sched.h>
#include <stdint.h>
#include <sys/uio.h>

#define KV_SWAP_ENGINE_AUTO	0	/* io_uring, else psync when io_uring is refused */
#define KV_SWAP_ENGINE_IO_URING	1
#define KV_SWAP_ENGINE_PSYNC	2

/* Alignment of every transfer's buffer, file offset and length. */
#define KV_SWAP_IO_ALIGN	4096u

/* kv_swap_io_inject() @what */
#define KV_SWAP_INJECT_EIO	0x1	/* transfer completes with -EIO, not done */
#define KV_SWAP_INJECT_SHORT	0x2	/* transfer first done for half its length */
#define KV_SWAP_INJECT_FLIP	0x4	/* read done, then one bit of it flipped */

/**
 * struct kv_swap_req - one transfer
 * @buf:   memory side, @len bytes, aligned to KV_SWAP_IO_ALIGN
 * @off:   file offset, aligned to KV_SWAP_IO_ALIGN
 * @len:   bytes, a non-zero multiple of KV_SWAP_IO_ALIGN
 * @write: 1: @buf -> file, 0: file -> @buf
 * @res:   out: 0 when all @len bytes moved, else a negative errno
 *         (-EINVAL for a request that breaks the rules above, -EIO for a
 *         read past the end of the file)
 */
struct kv_swap_req {
	void *buf;
	uint64_t off;
	uint32_t len;
	uint32_t write;
	int res;
};

/**
 * struct kv_swap_io_stats - what an engine has done since its creation
 * @reads:          read requests completed successfully
 * @writes:         write requests completed successfully
 * @bytes_read:     bytes of those reads
 * @bytes_written:  bytes of those writes
 * @short_retries:  times a transfer moved fewer bytes than asked and the
 *                  engine issued the rest (injected short transfers included)
 * @eagain_retries: times a transfer failed with -EAGAIN and was issued again
 * @errors:         requests completed with an error, injected ones and
 *                  invalid ones included
 *
 * Every request that kv_swap_io_run() has returned is counted once in
 * exactly one of @reads, @writes and @errors.
 */
struct kv_swap_io_stats {
	uint64_t reads;
	uint64_t writes;
	uint64_t bytes_read;
	uint64_t bytes_written;
	uint64_t short_retries;
	uint64_t eagain_retries;
	uint64_t errors;
};

struct kv_swap_io;

int kv_swap_io_create(int fd, int engine, const struct iovec *bufs, unsigned int nr_bufs,
		      struct kv_swap_io **out);
void kv_swap_io_destroy(struct kv_swap_io *io);
int kv_swap_io_run(struct kv_swap_io *io, struct kv_swap_req *reqs, unsigned int n);
int kv_swap_io_run_with(struct kv_swap_io *io, struct kv_swap_req *reqs, unsigned int n,
			void (*work)(void *), void *arg);
int kv_swap_io_bind(struct kv_swap_io *io, const cpu_set_t *cpus);
const char *kv_swap_io_engine(const struct kv_swap_io *io);
int kv_swap_io_registered(const struct kv_swap_io *io);
void kv_swap_io_inject(struct kv_swap_io *io, unsigned int what, uint64_t nth);
void kv_swap_io_stats(const struct kv_swap_io *io, struct kv_swap_io_stats *st);

#endif /* _KV_MM_SWAP_IO_H */
