// SPDX-License-Identifier: MIT
/*
 * bench-swap: swap-out and swap-in throughput of the swap tier's I/O
 * engine (mm/swap_io.c), beside fio on the same file with the same block
 * size and queue depth. Prints a table; asserts nothing about time. Exits
 * 1 only when something is broken: an I/O error, a block read back that
 * differs from what was written (a CRC-32C mismatch), a pool that cannot
 * be made or fails kv_pool_check().
 *
 *   bench-swap [-e auto|io_uring|psync] [-s FILE_MIB] [-a ARENA_MIB]
 *              [-t SECONDS] [-b KIB] [-d QD] [-m] [-g GPU] [-F FIO_RESULTS]
 *              [-p] [FILE]
 *
 * FILE (default $TMPDIR/kvmem-bench-swap, /var/tmp without TMPDIR) is the
 * swap file, opened O_DIRECT; one this program creates is allocated with
 * fallocate, and removed at exit. Before measuring, the file is written
 * whole (untimed) with a pattern: the byte at offset x is the byte at x
 * modulo H in the arena's first half (H bytes). So every measured write
 * overwrites allocated, written blocks, as fio's do, and every block of
 * every size has known contents, so reads may go anywhere in the file, as
 * fio's do. -p only does that (allocate and write) and keeps the file: the
 * script (scripts/bench-swap.sh) prepares the file, runs fio on it, then
 * runs the bench on it.
 *
 * The arena (-a MiB, mmap, seeded random data) is registered with the
 * engine as fixed buffers, as the host and device arenas are by the swap
 * tier. Its first half is what swap-out writes (slot s of size bs gets
 * block s of the half, modulo its size, which keeps the pattern), its
 * second half is where swap-in reads to.
 *
 * For each block size (256 KiB, 1 MiB, 2 MiB; -b picks one) and queue
 * depth (1, 8, 32; -d picks one), -t seconds each way, in slices that
 * alternate with and without the checksum (so both see the same device):
 *
 *   swap-out  kv_swap_io_run() of qd writes of bs at consecutive offsets
 *             (fio's rw=write), batches back to back, wrapping at the end
 *             of the file; with crc, each block's CRC-32C is computed and
 *             stored per slot while its batch is in flight, as
 *             mm/swapfile.c does
 *   swap-in   kv_swap_io_run() of qd reads of bs at random bs-aligned
 *             offsets in the file (fio's rw=randread); with crc, each
 *             block's CRC-32C is checked against its slot's once its batch
 *             has completed, as mm/swapfile.c does; without, only each
 *             slice's last batch is checked (untimed)
 *
 * Then the real mm end to end (unless -m), 2 MiB blocks (a Llama-3-8B-like
 * geometry): a pool with device, host and swap tiers on FILE; per round,
 * the blocks are demoted device -> host (untimed), host -> swap by
 * kv_reclaim(host, qd) calls (swap-out), and brought back swap -> device
 * by kv_seq_activate() of sequences of qd blocks (swap-in), whose contents
 * are then checked (untimed).
 *
 * -g GPU runs the end-to-end rows a second time with the device tier in
 * that GPU's memory (the CUDA backend), which the swap engine cannot
 * address: swap-in then goes swap -> bounce frames (host) -> device in
 * pipelined parts (mm/tier.c). Swap-out is host -> swap either way. The
 * rows are printed beside those of the memfd device tier, as ratios. The
 * CPU cannot read GPU frames, so each block's contents are checked on the
 * host tier, after the next round's demotion: every host frame carries a
 * marker while it holds no block, the blocks are found by the stamp at
 * their start (block and round), each once, and their CRC-32C compared.
 * Every round gives every block new contents, so a copy left undone shows.
 *
 * fio's numbers come from -F, a text file of lines "OP BS QD GBPS" (OP
 * write or randread, BS in bytes, GB/s of 1e9 bytes) and "engine NAME".
 * OP may end in "+fixed": fio run with --fixedbufs --registerfiles, the
 * mode kvmem's io_uring engine runs in (registered file, fixed buffers).
 * Ratio columns: kvmem with crc (what the swap tier does) over plain fio,
 * and kvmem without crc (the I/O engine alone) over fio in the same mode.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "lib/config.h"
#include "lib/crc32c.h"
#include "lib/cudrv.h"
#include "mm/bench/bench_util.h"
#include "mm/mm.h"
#include "mm/swap_io.h"

#define MiB			(1ull << 20)
#define NR_BS			3
#define NR_QD			3
#define MAX_QD			32
#define MAX_BS			(2 * MiB)
#define FILE_MIB_DEFAULT	1024
#define ARENA_MIB_DEFAULT	256
#define SECONDS_DEFAULT		1.0
#define SLICES			4	/* crc / no-crc alternations per point */
#define E2E_BLOCKS		128	/* blocks moved per round */
#define E2E_SLACK		16	/* frames per tier above them, for watermarks */
#define E2E_MAX_ROUNDS		64
#define E2E_STAMP		0x6b766d73ull	/* high word of a block's first u64 */
#define E2E_NO_BLOCK		0xa5a5a5a5a5a5a5a5ull	/* first u64 of an empty host frame */
#define RATIO_TARGET		0.9
#define EXIT_SKIP		4	/* -g without a GPU */

enum { OP_OUT, OP_IN, NR_OPS };
enum { FIO_PLAIN, FIO_FIXED, NR_FIO };

static const u32 bs_list[NR_BS] = { 256u << 10, 1u << 20, 2u << 20 };
static const u32 qd_list[NR_QD] = { 1, 8, 32 };
static const char *const fio_op[NR_OPS] = { "write", "randread" };

/* Llama-3-8B-like: 32 layers, 8 kv heads, head_dim 128, 16 tokens, bf16: 2 MiB. */
static const struct kv_geometry e2e_geom = { 32, 8, 128, 16, KV_DTYPE_BF16, 0 };

/**
 * struct bench - the bench's settings and state
 * @path:        the swap file
 * @file_bytes:  its size used, a multiple of MAX_BS
 * @arena_bytes: bytes of @arena
 * @seconds:     time each (op, bs, qd) point runs for, crc and no crc, at least
 * @engine:      KV_SWAP_ENGINE_* asked for
 * @only_bs:     -b: the one block size to measure, or 0 for all
 * @only_qd:     -d: the one depth to measure, or 0 for all
 * @no_mm:       -m: skip the end-to-end rows
 * @gpu:         -g: the GPU of the second end-to-end run, or -1
 * @drv:         the CUDA driver, loaded for -g
 * @cuda:        the second run's CUDA device tier
 * @no_gpu:      -g found no such GPU (exit 4)
 * @prepare:     -p: prepare @path and exit
 * @fio_path:    -F file, or NULL
 * @fd:          @path, open O_DIRECT
 * @created:     this program created @path (and removes it)
 * @arena:       the buffers, registered with @io
 * @out:         first half of @arena: what swap-out writes
 * @in:          second half: where swap-in reads to
 * @half:        bytes of each half, a multiple of MAX_BS
 * @io:          the engine
 * @bs:          block size of the slots below
 * @nr_slots:    slots of @bs in the file
 * @cursor:      next slot swap-out writes
 * @in_next:     next block of @in swap-in reads to
 * @slot_crc:    per slot, CRC-32C of what it holds (the swap tier's table)
 * @out_crc:     per @bs block of @out, its CRC-32C
 * @rng:         splitmix64 state for swap-in offsets
 * @mismatches:  blocks whose checksum differs from the expected one
 * @fio:         fio's GB/s per variant (FIO_*), op, block size and depth;
 *               < 0 when absent
 * @fio_engine:  the engine fio ran with, "" without -F
 */
struct bench {
	const char *path;
	u64 file_bytes;
	u64 arena_bytes;
	double seconds;
	int engine;
	u32 only_bs;
	u32 only_qd;
	bool no_mm;
	int gpu;
	struct cudrv drv;
	struct kv_cuda_params cuda;
	bool no_gpu;
	bool prepare;
	const char *fio_path;
	int fd;
	bool created;
	unsigned char *arena;
	unsigned char *out;
	unsigned char *in;
	u64 half;
	struct kv_swap_io *io;
	u32 bs;
	u64 nr_slots;
	u64 cursor;
	u64 in_next;
	u32 *slot_crc;
	u32 *out_crc;
	u64 rng;
	u64 mismatches;
	double fio[NR_FIO][NR_OPS][NR_BS][NR_QD];
	char fio_engine[32];
};

/**
 * struct rate - bytes moved and time taken by one variant of a point
 * @bytes: bytes
 * @secs:  seconds
 */
struct rate {
	double bytes;
	double secs;
};

static char default_path[4096];
static volatile u32 sink;

static void fill_random(u64 *s, void *buf, size_t len)
{
	u64 *p = buf;
	size_t i;

	for (i = 0; i < len / sizeof(*p); i++)
		p[i] = rnd(s);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p) {
		fprintf(stderr, "bench-swap: out of memory\n");
		exit(1);
	}
	return p;
}

/* ---- arguments ---------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: bench-swap [-e auto|io_uring|psync] [-s FILE_MIB]\n"
		"                  [-a ARENA_MIB] [-t SECONDS] [-b KIB] [-d QD] [-m]\n"
		"                  [-g GPU] [-F FIO_RESULTS] [-p] [FILE]\n"
		"  -e ENGINE   swap I/O engine (default auto: io_uring, else psync)\n"
		"  -s MiB      swap file size (default %u, at least 64)\n"
		"  -a MiB      buffer arena (default %u, at least 128)\n"
		"  -t SECONDS  time per point, each of crc and no crc (default %.1f)\n"
		"  -b KIB      only this block size: 256, 1024 or 2048\n"
		"  -d QD       only this queue depth: 1, 8 or 32\n"
		"  -m          no end-to-end (mm) rows\n"
		"  -g GPU      end-to-end rows again, the device tier on this GPU\n"
		"  -F FILE     fio results: lines \"write|randread[+fixed] BS QD GBPS\",\n"
		"              \"engine NAME\"\n"
		"  -p          prepare FILE (create, allocate, write whole) and exit\n"
		"  FILE        swap file (default $TMPDIR/kvmem-bench-swap)\n",
		FILE_MIB_DEFAULT, ARENA_MIB_DEFAULT, SECONDS_DEFAULT);
	exit(2);
}

static u64 parse_u64(const char *s, u64 min, u64 max)
{
	return bench_parse_u64(s, min, max, usage);
}

static int parse_engine(const char *s)
{
	if (!strcmp(s, "auto"))
		return KV_SWAP_ENGINE_AUTO;
	if (!strcmp(s, "io_uring"))
		return KV_SWAP_ENGINE_IO_URING;
	if (!strcmp(s, "psync"))
		return KV_SWAP_ENGINE_PSYNC;
	usage();
	return -1;
}

static int bs_index(unsigned long long bs)
{
	int i;

	for (i = 0; i < NR_BS; i++)
		if (bs_list[i] == bs)
			return i;
	return -1;
}

static int qd_index(unsigned int qd)
{
	int i;

	for (i = 0; i < NR_QD; i++)
		if (qd_list[i] == qd)
			return i;
	return -1;
}

static void parse_opt(struct bench *b, int c, const char *arg)
{
	char *end;

	switch (c) {
	case 'e':
		b->engine = parse_engine(arg);
		break;
	case 's':
		b->file_bytes = parse_u64(arg, MAX_QD * MAX_BS / MiB, 1 << 30) * MiB;
		break;
	case 'a':
		b->arena_bytes = parse_u64(arg, 2 * MAX_QD * MAX_BS / MiB, 1 << 30) * MiB;
		break;
	case 't':
		b->seconds = strtod(arg, &end);
		if (*end || !(b->seconds > 0 && b->seconds <= 60))
			usage();
		break;
	case 'b':
		b->only_bs = (u32)parse_u64(arg, 1, 1 << 20) << 10;
		if (bs_index(b->only_bs) < 0)
			usage();
		break;
	case 'd':
		b->only_qd = (u32)parse_u64(arg, 1, MAX_QD);
		if (qd_index(b->only_qd) < 0)
			usage();
		break;
	case 'm':
		b->no_mm = true;
		break;
	case 'g':
		b->gpu = (int)parse_u64(arg, 0, 255);
		break;
	case 'F':
		b->fio_path = arg;
		break;
	case 'p':
		b->prepare = true;
		break;
	default:
		usage();
	}
}

static void parse_args(struct bench *b, int argc, char **argv)
{
	const char *tmp = getenv("TMPDIR");
	int c;

	b->file_bytes = FILE_MIB_DEFAULT * MiB;
	b->arena_bytes = ARENA_MIB_DEFAULT * MiB;
	b->seconds = SECONDS_DEFAULT;
	b->gpu = -1;
	while ((c = getopt(argc, argv, "e:s:a:t:b:d:mg:F:ph")) != -1)
		parse_opt(b, c, optarg);
	if (argc - optind > 1 || (b->no_mm && b->gpu >= 0))
		usage();	/* -g runs the end-to-end rows, which -m leaves out */
	if (optind < argc) {
		b->path = argv[optind];
	} else {
		snprintf(default_path, sizeof(default_path), "%s/kvmem-bench-swap",
			 tmp && *tmp ? tmp : "/var/tmp");
		b->path = default_path;
	}
	/* Whole 2 MiB slots, so that every block size divides the file. */
	b->file_bytes -= b->file_bytes % MAX_BS;
}

/* ---- fio's results ------------------------------------------------------ */

/* One line of the -F file; other lines are ignored. */
static void fio_line(struct bench *b, const char *line)
{
	unsigned long long bs;
	unsigned int qd;
	int op_i, bi, qi, v = FIO_PLAIN;
	char op[32], *plus;
	double gbps;

	if (sscanf(line, "engine %31s", b->fio_engine) == 1)
		return;
	if (sscanf(line, "%31s %llu %u %lf", op, &bs, &qd, &gbps) != 4 || !(gbps >= 0))
		return;
	plus = strchr(op, '+');
	if (plus) {
		if (strcmp(plus, "+fixed"))
			return;
		*plus = '\0';
		v = FIO_FIXED;
	}
	for (op_i = 0; op_i < NR_OPS; op_i++)
		if (!strcmp(op, fio_op[op_i]))
			break;
	bi = bs_index(bs);
	qi = qd_index(qd);
	if (op_i < NR_OPS && bi >= 0 && qi >= 0)
		b->fio[v][op_i][bi][qi] = gbps;
}

static void fio_read(struct bench *b)
{
	double *v = &b->fio[0][0][0][0];
	char line[256];
	size_t i;
	FILE *f;

	for (i = 0; i < sizeof(b->fio) / sizeof(*v); i++)
		v[i] = -1;	/* absent */
	if (!b->fio_path)
		return;
	f = fopen(b->fio_path, "r");
	if (!f) {
		fprintf(stderr, "bench-swap: %s: %s\n", b->fio_path, strerror(errno));
		exit(1);
	}
	while (fgets(line, sizeof(line), f))
		fio_line(b, line);
	fclose(f);
}

/* ---- the swap file, the arena, the engine ------------------------------- */

/* Open the swap file O_DIRECT; create it, allocate it where it is short. */
static void file_open(struct bench *b)
{
	struct stat st;

	b->fd = open(b->path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (b->fd < 0 && errno == ENOENT) {
		b->fd = open(b->path, O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
		b->created = b->fd >= 0;
	}
	if (b->fd < 0) {
		fprintf(stderr, "bench-swap: %s: %s%s\n", b->path, strerror(errno),
			errno == EINVAL ? " (no O_DIRECT on this file system? set TMPDIR)" : "");
		exit(1);
	}
	if (fstat(b->fd, &st) || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "bench-swap: %s: not a regular file\n", b->path);
		exit(1);
	}
	if ((u64)st.st_size >= b->file_bytes)
		return;
	if (fallocate(b->fd, 0, 0, (off_t)b->file_bytes) &&
	    ftruncate(b->fd, (off_t)b->file_bytes)) {
		fprintf(stderr, "bench-swap: %s: cannot allocate %llu MiB: %s\n", b->path,
			(unsigned long long)(b->file_bytes / MiB), strerror(errno));
		exit(1);
	}
}

static void file_close(struct bench *b)
{
	close(b->fd);
	if (b->created && !b->prepare)
		unlink(b->path);
}

static void arena_create(struct bench *b)
{
	u64 seed = 0x5eedull;
	void *p;

	p = mmap(NULL, b->arena_bytes, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "bench-swap: cannot map %llu MiB: %s\n",
			(unsigned long long)(b->arena_bytes / MiB), strerror(errno));
		exit(1);
	}
	b->arena = p;
	b->half = b->arena_bytes / 2 / MAX_BS * MAX_BS;
	b->out = b->arena;
	b->in = b->arena + b->half;
	fill_random(&seed, b->arena, b->arena_bytes);
}

static void engine_create(struct bench *b)
{
	struct iovec buf = { b->arena, b->arena_bytes };
	int err;

	err = kv_swap_io_create(b->fd, b->engine, &buf, 1, &b->io);
	if (err) {
		fprintf(stderr, "bench-swap: cannot start the swap I/O engine: %s\n",
			strerror(-err));
		exit(1);
	}
}

/* ---- swap-out and swap-in ----------------------------------------------- */

/* Run one batch, @work done while it is in flight; an I/O error ends the bench. */
static void run_batch(struct bench *b, struct kv_swap_req *r, u32 n, void (*work)(void *),
		      void *arg)
{
	int err = kv_swap_io_run_with(b->io, r, n, work, arg);

	if (err) {
		fprintf(stderr, "bench-swap: %s of %u bytes at %llu: %s\n",
			r->write ? "write" : "read", r->len, (unsigned long long)r->off,
			strerror(-err));
		exit(1);
	}
}

/*
 * Switch to slots of @bs. The file holds the pattern (offset x: out[x %
 * half]), so slot s holds block s % nob of @out at any block size.
 */
static void set_block_size(struct bench *b, u32 bs)
{
	u64 i, nob = b->half / bs;

	b->bs = bs;
	b->nr_slots = b->file_bytes / bs;
	b->cursor = 0;
	b->in_next = 0;
	free(b->slot_crc);
	free(b->out_crc);
	b->slot_crc = xcalloc(b->nr_slots, sizeof(*b->slot_crc));
	b->out_crc = xcalloc(nob, sizeof(*b->out_crc));
	for (i = 0; i < nob; i++)
		b->out_crc[i] = crc32c(0, b->out + i * bs, bs);
	for (i = 0; i < b->nr_slots; i++)
		b->slot_crc[i] = b->out_crc[i % nob];
}

/* Count a block whose checksum is not the expected one. */
static void mismatch(struct bench *b, const char *what, u64 idx)
{
	if (!b->mismatches++)
		fprintf(stderr, "bench-swap: %s %llu (bs %u): checksum differs\n", what,
			(unsigned long long)idx, b->bs);
}

/* Fill @r with the next @qd writes. */
static void out_batch(struct bench *b, struct kv_swap_req *r, u32 qd)
{
	u64 nob = b->half / b->bs, slot;
	u32 i;

	if (b->cursor + qd > b->nr_slots)
		b->cursor = 0;
	for (i = 0; i < qd; i++) {
		slot = b->cursor + i;
		r[i] = (struct kv_swap_req){ .buf = b->out + slot % nob * b->bs,
					     .off = slot * b->bs, .len = b->bs, .write = 1 };
	}
	b->cursor += qd;
}

/* A write batch's checksums, computed while it is in flight (as the tier does). */
struct out_sums {
	struct bench *b;
	const struct kv_swap_req *r;
	u32 qd;
};

static void out_sum(void *arg)
{
	struct out_sums *s = arg;
	struct bench *b = s->b;
	u64 nob = b->half / b->bs, slot;
	u32 i;

	for (i = 0; i < s->qd; i++) {
		slot = s->r[i].off / b->bs;
		b->slot_crc[slot] = crc32c(0, s->r[i].buf, b->bs);
		if (b->slot_crc[slot] != b->out_crc[slot % nob])
			mismatch(b, "arena block", slot % nob);
	}
}

/* Fill @r with @qd reads of random slots, into @slots. */
static void in_batch(struct bench *b, struct kv_swap_req *r, u64 *slots, u32 qd)
{
	u64 nib = b->half / b->bs;
	u32 i;

	for (i = 0; i < qd; i++) {
		slots[i] = rnd(&b->rng) % b->nr_slots;
		r[i] = (struct kv_swap_req){ .buf = b->in + b->in_next * b->bs,
					     .off = slots[i] * b->bs, .len = b->bs };
		b->in_next = (b->in_next + 1) % nib;
	}
}

static void in_verify(struct bench *b, const struct kv_swap_req *r, const u64 *slots, u32 qd)
{
	u32 i;

	for (i = 0; i < qd; i++)
		if (crc32c(0, r[i].buf, r[i].len) != b->slot_crc[slots[i]])
			mismatch(b, "slot", slots[i]);
}

/**
 * run_slice() - batches of @qd transfers back to back for @secs seconds
 * @b:    the bench, at its current block size
 * @op:   OP_OUT (sequential writes) or OP_IN (random reads)
 * @qd:   transfers per batch
 * @crc:  with the swap tier's checksum work: computed while each write
 *        batch is in flight, checked after each read batch
 * @secs: how long
 * @acc:  bytes moved and time taken are added here
 *
 * Without @crc, the slice's last read batch is still checked, untimed.
 */
static void run_slice(struct bench *b, int op, u32 qd, bool crc, double secs, struct rate *acc)
{
	struct kv_swap_req r[MAX_QD];
	u64 slots[MAX_QD], bytes = 0;
	double t0 = now(), dt;

	do {
		if (op == OP_OUT)
			out_batch(b, r, qd);
		else
			in_batch(b, r, slots, qd);
		if (op == OP_OUT && crc)
			run_batch(b, r, qd, out_sum, &(struct out_sums){ b, r, qd });
		else
			run_batch(b, r, qd, NULL, NULL);
		if (op == OP_IN && crc)
			in_verify(b, r, slots, qd);
		bytes += (u64)qd * b->bs;
		dt = now() - t0;
	} while (dt < secs);
	if (op == OP_IN && !crc)
		in_verify(b, r, slots, qd);
	acc->bytes += bytes;
	acc->secs += dt;
}

/* Write the whole file with the pattern, 2 MiB at a time, untimed. */
static void file_pattern(struct bench *b)
{
	struct kv_swap_req r[MAX_QD];
	u32 n;

	set_block_size(b, MAX_BS);
	while (b->cursor < b->nr_slots) {
		n = b->nr_slots - b->cursor < MAX_QD ? (u32)(b->nr_slots - b->cursor) : MAX_QD;
		out_batch(b, r, n);
		run_batch(b, r, n, NULL, NULL);
	}
}

/* ---- the table ---------------------------------------------------------- */

static void print_gbps(double v)
{
	if (v >= 0)
		printf(" %10.3f", v);
	else
		printf(" %10s", "-");
}

static void print_ratio(double v, double ref)
{
	if (v >= 0 && ref > 0)
		printf(" %7.2f%c", v / ref, v / ref < RATIO_TARGET ? '*' : ' ');
	else
		printf(" %7s ", "-");
}

/* One row: @fio is fio's plain and fixed-buffer GB/s at the same point. */
static void print_row(const char *op, u32 bs, u32 qd, double crc, double nocrc,
		      const double *fio)
{
	char bsz[16];

	if (bs >= MiB)
		snprintf(bsz, sizeof(bsz), "%uM", bs >> 20);
	else
		snprintf(bsz, sizeof(bsz), "%uK", bs >> 10);
	printf("%-12s %5s %4u", op, bsz, qd);
	print_gbps(crc);
	print_gbps(nocrc);
	print_gbps(fio[FIO_PLAIN]);
	print_gbps(fio[FIO_FIXED]);
	print_ratio(crc, fio[FIO_PLAIN]);
	print_ratio(nocrc, fio[FIO_FIXED]);
	printf("\n");
	fflush(stdout);
}

/* CRC-32C over the out half, one thread: GB/s. */
static double crc_gbps(struct bench *b)
{
	double t0 = now();
	u32 sum = 0;
	int i;

	for (i = 0; i < 4; i++)
		sum = crc32c(sum, b->out, b->half);
	sink = sum;
	return 4.0 * b->half / (now() - t0) / 1e9;
}

static void print_header(struct bench *b)
{
	printf("kvmem bench-swap: %s, %llu MiB, O_DIRECT; arena %llu MiB\n", b->path,
	       (unsigned long long)(b->file_bytes / MiB),
	       (unsigned long long)(b->arena_bytes / MiB));
	printf("engine: %s, arena %s; crc32c: %s, %.2f GB/s on one thread\n",
	       kv_swap_io_engine(b->io),
	       kv_swap_io_registered(b->io) ? "registered (fixed buffers)" :
	       "NOT registered (plain buffers)",
	       crc32c_hw_supported() ? "sse4.2" : "table", crc_gbps(b));
	if (b->fio_path)
		printf("fio: ioengine=%s, direct=1, same file, bs and iodepth; %s (%s)\n",
		       b->fio_engine[0] ? b->fio_engine : "?",
		       strcmp(b->fio_engine, "io_uring") ? "no fixed-buffer pass" :
		       "\"fixed bufs\": also --fixedbufs --registerfiles", b->fio_path);
	else
		printf("fio: columns absent (no -F; scripts/bench-swap.sh runs fio "
		       "where installed)\n");
	printf("each point: batches of qd transfers back to back, %.2f s with crc and %.2f s "
	       "without, in %u alternating slices; GB = 1e9 bytes\n\n",
	       b->seconds, b->seconds, SLICES);
	printf("%-12s %5s %4s %10s %10s %10s %10s %8s %8s\n", "", "", "", "kvmem", "kvmem",
	       "fio", "fio fixed", "kvmem", "no-crc /");
	printf("%-12s %5s %4s %10s %10s %10s %10s %8s %8s\n", "op", "bs", "qd", "crc GB/s",
	       "no-crc", "GB/s", "bufs GB/s", "crc/fio", "fio fix");
}

/* One (op, bs, qd) point: crc and no-crc slices alternate; print its row. */
static void bench_point(struct bench *b, int op, int bs_i, int qd_i)
{
	struct rate with = { 0, 0 }, without = { 0, 0 };
	double fio[NR_FIO] = { b->fio[FIO_PLAIN][op][bs_i][qd_i],
			       b->fio[FIO_FIXED][op][bs_i][qd_i] };
	u32 qd = qd_list[qd_i];
	int k;

	for (k = 0; k < SLICES; k++) {
		run_slice(b, op, qd, true, b->seconds / SLICES, &with);
		run_slice(b, op, qd, false, b->seconds / SLICES, &without);
	}
	print_row(op == OP_OUT ? "swap-out" : "swap-in", b->bs, qd, with.bytes / with.secs / 1e9,
		  without.bytes / without.secs / 1e9, fio);
}

/* Every selected point at one block size; bs_i indexes bs_list. */
static void bench_block_size(struct bench *b, int bs_i)
{
	int op, qi;

	if (b->only_bs && b->only_bs != bs_list[bs_i])
		return;
	set_block_size(b, bs_list[bs_i]);
	for (op = 0; op < NR_OPS; op++)
		for (qi = 0; qi < NR_QD; qi++)
			if (!b->only_qd || b->only_qd == qd_list[qi])
				bench_point(b, op, bs_i, qi);
}

/* ---- end to end through the mm ------------------------------------------ */

/**
 * struct e2e - the end-to-end run's pool and what its blocks must hold
 * @pool:    device, host and swap tiers, the swap tier on the bench's file
 * @seq:     sequences of @qd blocks each
 * @sum:     per block (sequence-major), CRC-32C of its contents
 * @nseq:    sequences
 * @qd:      blocks per sequence, and per kv_reclaim() call
 * @fb:      bytes per frame
 * @gpu:     the device tier is in GPU memory: blocks are checked on the host
 * @nr_host: host frames
 * @round:   the round whose contents the blocks hold (each round's differ,
 *           so that a copy left undone shows); on a GPU, none before the
 *           first round's demotion
 */
struct e2e {
	struct kv_pool *pool;
	struct kv_seq **seq;
	u32 *sum;
	u32 nseq;
	u32 qd;
	u64 fb;
	bool gpu;
	u32 nr_host;
	u32 round;
};

static void e2e_fail(const char *what, int err)
{
	fprintf(stderr, "bench-swap: end to end: %s%s%s\n", what, err ? ": " : "",
		err ? strerror(-err) : "");
	exit(1);
}

/*
 * Block @k's contents in round @round: a slice of the pattern that moves
 * each round, and at the start the stamp (E2E_STAMP, round, k).
 */
static u32 e2e_stamp(struct bench *b, struct e2e *e, void *p, u32 k, u32 round)
{
	u64 head = E2E_STAMP << 32 | (u64)(round & 0xff) << 24 | k;
	u64 nob = b->half / e->fb;

	memcpy(p, b->out + ((u64)k + (u64)round * e->nseq * e->qd) % nob * e->fb, e->fb);
	memcpy(p, &head, sizeof(head));
	return crc32c(0, p, e->fb);
}

/* A block of the end-to-end rounds that is wrong: say so (once) and count it. */
static void e2e_bad(struct bench *b, const char *what, u32 k)
{
	if (!b->mismatches++)
		fprintf(stderr, "bench-swap: end to end: block %u: %s\n", k, what);
}

/*
 * memfd: blocks of sequence @s, on the device tier, must hold this round's
 * contents; they get the next round's.
 */
static void e2e_verify(struct bench *b, struct e2e *e, u32 s)
{
	u32 frames[MAX_QD], j, k;
	void *p;
	int err;

	err = kv_seq_block_frames(e->seq[s], 0, e->qd, frames);
	if (err)
		e2e_fail("kv_seq_block_frames", err);
	for (j = 0; j < e->qd; j++) {
		k = s * e->qd + j;
		p = kv_pool_frame_addr(e->pool, KV_TIER_DEVICE, frames[j]);
		if (!p)
			e2e_fail("no device frame", 0);
		if (crc32c(0, p, e->fb) != e->sum[k])
			e2e_bad(b, "checksum differs on the device tier", k);
		e->sum[k] = e2e_stamp(b, e, p, k, e->round + 1);
	}
}

/* GPU: mark every host frame empty (no block lives on the host tier now). */
static void e2e_host_clear(struct e2e *e)
{
	const u64 mark = E2E_NO_BLOCK;
	u32 f;

	for (f = 0; f < e->nr_host; f++)
		memcpy(kv_pool_frame_addr(e->pool, KV_TIER_HOST, f), &mark, sizeof(mark));
}

/*
 * GPU, every block just demoted to the host tier: the first time, the
 * frames that lost their empty mark (the device arena starts zeroed) get
 * each block's contents; later, each block must be found once by its
 * stamp, of this round, with its CRC-32C. Then each gets the next round's
 * contents. Which frame holds which block the CPU cannot tell here, so a
 * block arriving whole in another block's frame would pass; selftests/cuda
 * (contents_survive_swap_bounce_parts) checks that, frame by frame.
 */
static void e2e_host_check(struct bench *b, struct e2e *e)
{
	u32 n = e->nseq * e->qd, found = 0, f, k;
	bool filled = e->round > 0;
	unsigned char *seen = xcalloc(n, 1);
	u64 head;
	void *p;

	for (f = 0; f < e->nr_host; f++) {
		p = kv_pool_frame_addr(e->pool, KV_TIER_HOST, f);
		memcpy(&head, p, sizeof(head));
		if (head == E2E_NO_BLOCK)
			continue;
		k = filled ? (u32)(head & 0xffffff) : found;
		if (filled && (head >> 32 != E2E_STAMP || k >= n || seen[k] ||
			       (head >> 24 & 0xff) != (e->round & 0xff))) {
			e2e_bad(b, "a stamp of another round, of no block, or found twice", k);
			continue;
		}
		if (k >= n)
			e2e_fail("more blocks than sequences hold on the host tier", 0);
		if (filled && crc32c(0, p, e->fb) != e->sum[k])
			e2e_bad(b, "checksum differs on the host tier", k);
		seen[k] = 1;
		found++;
		e->sum[k] = e2e_stamp(b, e, p, k, e->round + 1);
	}
	for (k = 0; k < n; k++)
		if (!seen[k])
			e2e_bad(b, "missing on the host tier after demotion", k);
	free(seen);
}

/* Sequences of e->qd blocks on the device tier, each block distinct data. */
static void e2e_fill(struct bench *b, struct e2e *e)
{
	u32 s, j, frame;
	void *p;
	int err;

	for (s = 0; s < e->nseq; s++) {
		err = kv_seq_create(e->pool, &e->seq[s]);
		err = err ?: kv_seq_activate(e->seq[s], 0);
		err = err ?: kv_seq_append(e->seq[s], e->qd * e2e_geom.block_tokens, NULL, 0);
		if (err)
			e2e_fail("filling sequences", err);
		for (j = 0; j < e->qd && !e->gpu; j++) {
			frame = kv_seq_block_frame(e->seq[s], j);
			p = kv_pool_frame_addr(e->pool, KV_TIER_DEVICE, frame);
			if (!p)
				e2e_fail("no device frame", 0);
			e->sum[s * e->qd + j] = e2e_stamp(b, e, p, s * e->qd + j, 0);
		}
		kv_seq_deactivate(e->seq[s]);
	}
}

static void e2e_create(struct bench *b, struct e2e *e, const struct kv_cuda_params *cuda)
{
	struct kv_pool_params p = {
		.name = "bench-swap", .geom = e2e_geom,
		.flags = KV_POOL_NO_KVSWAPD | KV_POOL_NO_PREFIX,
		.vm = { .min_free_kbytes = 4 },
		.swap = { .fd = b->fd, .offset = 0, .engine = (u32)b->engine },
		.cuda = cuda,
	};
	u64 slots;
	u32 n, frames;
	int err;

	memset(e, 0, sizeof(*e));
	e->fb = kv_frame_bytes(&e2e_geom);
	e->gpu = cuda != NULL;
	slots = b->file_bytes / e->fb;
	n = slots >= E2E_BLOCKS + E2E_SLACK ? E2E_BLOCKS : (u32)(slots - E2E_SLACK);
	e->qd = n < MAX_QD ? n : MAX_QD;
	e->nseq = n / e->qd;
	frames = e->nseq * e->qd + E2E_SLACK;
	p.nr_frames[KV_TIER_DEVICE] = frames;
	/*
	 * GPU: the pool takes an eighth of the host tier (at most
	 * KV_BOUNCE_FRAMES) for bounce frames; a quarter more leaves room
	 */
	p.nr_frames[KV_TIER_HOST] = e->gpu ? frames + frames / 4 : frames;
	p.nr_frames[KV_TIER_SWAP] = frames;
	e->nr_host = p.nr_frames[KV_TIER_HOST];
	err = kv_pool_create(&p, &e->pool);
	if (err)
		e2e_fail("kv_pool_create", err);
	e->seq = xcalloc(e->nseq, sizeof(*e->seq));
	e->sum = xcalloc((size_t)e->nseq * e->qd, sizeof(*e->sum));
	if (e->gpu)
		e2e_host_clear(e);
	e2e_fill(b, e);
}

static void e2e_destroy(struct bench *b, struct e2e *e)
{
	u32 s, n = e->nseq * e->qd;

	/* GPU: the last round's blocks, checked on the host tier */
	if (e->gpu) {
		if (kv_reclaim(e->pool, KV_TIER_DEVICE, n) != n)
			e2e_fail("kv_reclaim(device) fell short", 0);
		e2e_host_check(b, e);
	}
	if (kv_pool_check(e->pool))
		e2e_fail("kv_pool_check", 0);
	for (s = 0; s < e->nseq; s++)
		kv_seq_free(e->seq[s]);
	kv_pool_destroy(e->pool);
	free(e->seq);
	free(e->sum);
}

/*
 * One round: demote all to host (GPU: check them there), then to swap
 * (timed), then activate (timed; memfd: check them on the device). Each
 * check gives the blocks the next round's contents.
 */
static void e2e_round(struct bench *b, struct e2e *e, double *t_out, double *t_in)
{
	u32 n = e->nseq * e->qd, s;
	double t0;
	int err;

	if (kv_reclaim(e->pool, KV_TIER_DEVICE, n) != n)
		e2e_fail("kv_reclaim(device) fell short", 0);
	if (e->gpu)
		e2e_host_check(b, e);
	t0 = now();
	for (s = 0; s < e->nseq; s++)
		if (kv_reclaim(e->pool, KV_TIER_HOST, e->qd) != e->qd)
			e2e_fail("kv_reclaim(host) fell short", 0);
	*t_out += now() - t0;
	for (s = 0; s < e->nseq; s++) {
		t0 = now();
		err = kv_seq_activate(e->seq[s], 0);
		*t_in += now() - t0;
		if (err)
			e2e_fail("kv_seq_activate", err);
		if (!e->gpu)
			e2e_verify(b, e, s);
		kv_seq_deactivate(e->seq[s]);
	}
	if (e->gpu)
		e2e_host_clear(e);
	e->round++;
}

/**
 * struct e2e_rate - what one end-to-end run measured
 * @out:  swap-out GB/s (kv_reclaim() of the host tier)
 * @in:   swap-in GB/s (kv_seq_activate() from swap)
 * @fb:   bytes per block
 * @qd:   blocks per call
 * @rounds: rounds run
 */
struct e2e_rate {
	double out;
	double in;
	u64 fb;
	u32 qd;
	u32 rounds;
};

/* Rounds of the real mm's swap-out and swap-in until -t seconds each way. */
static void e2e_run(struct bench *b, const struct kv_cuda_params *cuda, struct e2e_rate *r)
{
	double t_out = 0, t_in = 0, bytes;
	u32 rounds = 0, n;
	struct e2e e;

	e2e_create(b, &e, cuda);
	n = e.nseq * e.qd;
	while (rounds < E2E_MAX_ROUNDS && (rounds < 2 || t_out < b->seconds || t_in < b->seconds)) {
		e2e_round(b, &e, &t_out, &t_in);
		rounds++;
	}
	if (kv_vmstat_read(e.pool, KV_PSWPOUT) != (u64)rounds * n ||
	    kv_vmstat_read(e.pool, KV_PSWPIN) != (u64)rounds * n)
		e2e_fail("pswpout/pswpin do not count every block", 0);
	bytes = (double)rounds * n * e.fb;
	*r = (struct e2e_rate){ bytes / t_out / 1e9, bytes / t_in / 1e9, e.fb, e.qd, rounds };
	e2e_destroy(b, &e);
}

/*
 * -g: the same rounds with the device tier on the GPU, beside the memfd
 * run @m. Where the driver or the GPU is missing, says so and sets
 * b->no_gpu (the bench exits 4, skipped).
 */
static void bench_e2e_gpu(struct bench *b, const struct e2e_rate *m)
{
	struct e2e_rate g;
	char why[256];

	if (cudrv_open(&b->drv, why, sizeof(why))) {
		printf("\nno GPU for -g: %s\n", why);
		b->no_gpu = true;
		return;
	}
	if (b->gpu >= b->drv.nr_devices) {
		printf("\nno GPU for -g: no device %d (this process sees %d)\n", b->gpu,
		       b->drv.nr_devices);
		cudrv_close(&b->drv);
		b->no_gpu = true;
		return;
	}
	b->cuda = (struct kv_cuda_params){ .drv = &b->drv, .device = b->gpu };
	e2e_run(b, &b->cuda, &g);
	printf("\nend to end with the device tier on GPU %d (swap-in through bounce frames),\n"
	       "beside the memfd device tier above (%u and %u rounds):\n", b->gpu, m->rounds,
	       g.rounds);
	printf("%-12s %4s %4s %12s %12s %10s\n", "op", "bs", "qd", "memfd GB/s", "GPU GB/s",
	       "GPU/memfd");
	printf("%-12s %3lluM %4u %12.3f %12.3f %10.2f\n", "mm reclaim",
	       (unsigned long long)(g.fb / MiB), g.qd, m->out, g.out, g.out / m->out);
	printf("%-12s %3lluM %4u %12.3f %12.3f %10.2f\n", "mm activate",
	       (unsigned long long)(g.fb / MiB), g.qd, m->in, g.in, g.in / m->in);
	cudrv_close(&b->drv);
}

/* The real mm's swap-out and swap-in of 2 MiB blocks, batches of qd. */
static void bench_e2e(struct bench *b)
{
	double fio_out[NR_FIO] = { -1, -1 }, fio_in[NR_FIO] = { -1, -1 };
	struct e2e_rate m;
	int v;

	e2e_run(b, NULL, &m);
	if (m.fb == MAX_BS && m.qd == MAX_QD) {
		for (v = 0; v < NR_FIO; v++) {
			fio_out[v] = b->fio[v][OP_OUT][NR_BS - 1][NR_QD - 1];
			fio_in[v] = b->fio[v][OP_IN][NR_BS - 1][NR_QD - 1];
		}
	}
	print_row("mm reclaim", (u32)m.fb, m.qd, m.out, -1, fio_out);
	print_row("mm activate", (u32)m.fb, m.qd, m.in, -1, fio_in);
	if (b->gpu >= 0)
		bench_e2e_gpu(b, &m);
}

/* ---- main --------------------------------------------------------------- */

static int print_footer(struct bench *b)
{
	struct kv_swap_io_stats st;

	kv_swap_io_stats(b->io, &st);
	printf("\n* below the %.1fx target\n", RATIO_TARGET);
	if (!b->no_mm)
		printf("mm rows: kv_reclaim(host) of qd blocks to swap, and kv_seq_activate() of\n"
		       "  qd-block sequences from swap, through the pool's own engine; crc always\n"
		       "  on; their fio columns are fio's 2M qd 32 points\n");
	printf("engine: %llu reads, %llu writes, %llu short retries, %llu EAGAIN retries, "
	       "%llu errors\n", (unsigned long long)st.reads, (unsigned long long)st.writes,
	       (unsigned long long)st.short_retries, (unsigned long long)st.eagain_retries,
	       (unsigned long long)st.errors);
	if (b->mismatches)
		printf("BROKEN: %llu blocks with a checksum that differs from the expected one\n",
		       (unsigned long long)b->mismatches);
	return b->mismatches || st.errors ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct bench b = { .rng = 0x6b766d656dull };
	int ret, i;

	parse_args(&b, argc, argv);
	fio_read(&b);
	file_open(&b);
	arena_create(&b);
	engine_create(&b);
	file_pattern(&b);
	if (!b.prepare) {
		print_header(&b);
		for (i = 0; i < NR_BS; i++)
			bench_block_size(&b, i);
		if (!b.no_mm)
			bench_e2e(&b);
	}
	ret = b.prepare ? 0 : print_footer(&b);
	if (!ret && b.no_gpu)
		ret = EXIT_SKIP;
	kv_swap_io_destroy(b.io);
	munmap(b.arena, b.arena_bytes);
	free(b.slot_crc);
	free(b.out_crc);
	file_close(&b);
	return ret;
}
