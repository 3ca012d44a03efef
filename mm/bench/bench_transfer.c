// SPDX-License-Identifier: MIT
/*
 * bench-transfer: demotion (device -> host) and promotion (host -> device)
 * throughput of the mm's own paths on a GPU, beside one cuMemcpyAsync of
 * the same bytes between pinned host memory and device memory, measured in
 * the same run. Prints a table; asserts nothing about time. Exits 4 where
 * there is no GPU (unless --cpu), 1 only when something is broken: a pool
 * or a copy that fails, a block whose contents do not survive a round
 * trip, a pool that fails kv_pool_check().
 *
 *   bench-transfer [--cpu] [-g GPU] [-r REPS] [-b KIB] [-n BATCH]
 *                  [-l natural|contig|shuffled|all] [-o CSV]
 *
 * Points: blocks of 256 KiB, 1 MiB and 2 MiB (a Llama-3-8B-like block,
 * 8 KV heads x 128 x bf16 x 16 tokens, holding 4, 16 or 32 layers: frame
 * bytes equal block bytes, nothing rounded), in batches of 1, 64 and 1024
 * blocks. Each (block size, batch) gets its own pool of batch + 16 frames
 * per tier (CUDA device tier, memfd host tier; no kvswapd, no prefix
 * cache) holding one sequence of batch blocks. A cycle is:
 *
 *   demote   kv_reclaim(device, batch) with the sequence inactive: its
 *            blocks go to the host tier, in reclaim batches of at most
 *            256 blocks (KV_RECLAIM_BATCH_MAX; one copy submission each,
 *            whatever vm.reclaim_batch says, which only direct reclaim
 *            and kvswapd use): 1024 blocks are 4 submissions
 *   promote  kv_seq_activate() of the sequence: its blocks come back in
 *            one chunk (seq_promote()), one copy submission
 *
 * each timed by the wall clock around the call, which returns once the
 * copies completed. The reference: cuMemcpyAsync of batch x block bytes
 * (cuMemAllocHost <-> cuMemAlloc) on a stream of its own, timed by the wall
 * clock around the call and cuStreamSynchronize(), D2H beside demote and
 * H2D beside promote, in the same cycle. Rows give the median of -r
 * cycles (default 11) after an untimed one.
 *
 * Frame layouts, arranged before each copy through the free lists
 * (kv_frames_alloc() of every free frame above the min watermark, freed
 * again in the order wanted: the next allocations pop them in that order):
 *
 *   natural   none: frames as the mm hands them out by itself
 *   contig    ascending frames on both sides: the CUDA backend merges a
 *             submission into one copy
 *   shuffled  a random permutation: nearly every block its own copy
 *
 * The runs column counts the copies a submission turns into after
 * consecutive frames are merged (mm/arena_cuda.c), from the frames each
 * block had before and after (the submission order is the sequence's
 * order; the arranged layouts check that it was).
 *
 * Contents: before each promotion every block's host frame is stamped
 * (head, middle, tail) with the block's index and the cycle's tag; after
 * the next demotion the host tier is scanned for them: each block must be
 * found once, whole. This also tells where the mm put each block. The last
 * promotion of a point is checked by one more (untimed) demotion.
 *
 * --cpu runs the same measurements on the CPU backend (device tier in a
 * memfd, copies by memcpy) with memcpy between two buffers as the
 * reference, to check the logic where there is no GPU; there the device
 * frames are checked directly too.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include "lib/config.h"
#include "lib/cudrv.h"
#include "mm/bench/bench_util.h"
#include "mm/mm.h"

#define KiB			(1ull << 10)
#define MiB			(1ull << 20)
#define NR_BS			3
#define NR_BATCH		3
#define SLACK			16	/* frames per tier above the batch */
#define RECLAIM_MAX		256	/* vm.reclaim_batch's bound (mm.h) */
#define REPS_DEFAULT		11
#define REPS_MAX		1000
#define RATIO_TARGET		0.9
#define TARGET_BATCH		64	/* the target holds from this batch on */
#define MEM_SHARE		0.8	/* of MemAvailable / free GPU memory a point may take */
#define GPU_MARGIN		(256 * MiB)
#define EXIT_SKIP		4

#define STAMP_MAGIC		0x6b76ull	/* "kv" */
#define STAMP_MID		0x5a5a5a5a5a5a5a5aull

enum { DIR_DEMOTE, DIR_PROMOTE, NR_DIRS };
enum { LAYOUT_NATURAL, LAYOUT_CONTIG, LAYOUT_SHUFFLED, NR_LAYOUTS };

/* Frame bytes 256 KiB, 1 MiB, 2 MiB: 4, 16, 32 layers of 8 x 128 x bf16 x 16 tokens. */
static const struct kv_geometry geoms[NR_BS] = {
	{ 4, 8, 128, 16, KV_DTYPE_BF16, 0 },
	{ 16, 8, 128, 16, KV_DTYPE_BF16, 0 },
	{ 32, 8, 128, 16, KV_DTYPE_BF16, 0 },
};
static const u64 bs_list[NR_BS] = { 256 * KiB, 1 * MiB, 2 * MiB };
static const u32 batch_list[NR_BATCH] = { 1, 64, 1024 };
static const char *const layout_name[NR_LAYOUTS] = { "natural", "contig", "shuffled" };
static const char *const dir_name[NR_DIRS] = { "demote D2H", "promote H2D" };

/**
 * struct bench - settings, the driver, and what the run found
 * @cpu:         --cpu: CPU backend, memcpy reference
 * @gpu:         -g: device ordinal
 * @reps:        -r: timed cycles per layout
 * @only_bs:     -b: the one block size (bytes), or 0
 * @only_batch:  -n: the one batch, or 0
 * @layouts:     -l: bit per LAYOUT_*
 * @csv_path:    -o: machine-readable copy, or NULL
 * @csv:         that file, open
 * @drv:         the CUDA driver (not --cpu)
 * @cuda:        the pools' CUDA parameters (outlive every pool)
 * @dev:         the device
 * @ctx:         its primary context, retained
 * @stream:      the reference's stream
 * @ctx_held:    @ctx is retained
 * @name:        the device's name ("cpu" with --cpu)
 * @desc_shown:  the device tier's description was printed
 * @rng:         splitmix64 state (shuffled layouts)
 * @broken:      blocks whose contents did not survive, failed checks
 * @failed:      points that failed
 * @skipped:     points that did not fit
 * @order_diff:  arranged copies whose blocks did not go in sequence order
 * @target_rows: rows the target applies to
 * @target_miss: of those, rows below it
 */
struct bench {
	bool cpu;
	int gpu;
	u32 reps;
	u64 only_bs;
	u32 only_batch;
	u32 layouts;
	const char *csv_path;
	FILE *csv;
	struct cudrv drv;
	struct kv_cuda_params cuda;
	cu_device dev;
	cu_ctx ctx;
	cu_stream stream;
	bool ctx_held;
	char name[128];
	bool desc_shown;
	u64 rng;
	u64 broken;
	u32 failed;
	u32 skipped;
	u32 order_diff;
	u32 target_rows;
	u32 target_miss;
};

/**
 * struct ref - the reference's buffers, of one batch's bytes
 * @bytes: size of each
 * @host:  pinned host memory (cuMemAllocHost), or mmap'ed memory (--cpu)
 * @dev:   device memory (cuMemAlloc)
 * @cpu:   --cpu: the second buffer, standing for device memory
 */
struct ref {
	u64 bytes;
	void *host;
	cu_devptr dev;
	void *cpu;
};

/**
 * struct point - one (block size, batch): its pool, sequence and samples
 * @pool:      the pool
 * @seq:       one sequence of @batch blocks
 * @ref:       the reference's buffers
 * @fb:        bytes per frame (= per block)
 * @bi:        index in bs_list
 * @batch:     blocks per copy
 * @nr_host:   frames of the host tier
 * @dev:       per block, its device frame (valid while on the device)
 * @host:      per block, its host frame (valid while on the host)
 * @pop:       arranged layouts: the order the next allocations pop frames in
 * @nr_pop:    entries of @pop; 0 when not arranged
 * @buf:       scratch, a tier's frames
 * @tag:       tag of the stamps the blocks carry; 0: none yet
 * @t:         per direction, per rep, seconds of the mm
 * @tref:      the same for the reference
 * @runs_min:  per direction, fewest copies after merging seen in a rep
 * @runs_max:  and most
 */
struct point {
	struct kv_pool *pool;
	struct kv_seq *seq;
	struct ref ref;
	u64 fb;
	int bi;
	u32 batch;
	u32 nr_host;
	u32 *dev;
	u32 *host;
	u32 *pop;
	u32 nr_pop;
	u32 *buf;
	u32 tag;
	double *t[NR_DIRS];
	double *tref[NR_DIRS];
	u32 runs_min[NR_DIRS];
	u32 runs_max[NR_DIRS];
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int cmp_u32(const void *a, const void *b)
{
	u32 x = *(const u32 *)a, y = *(const u32 *)b;

	return x < y ? -1 : x > y;
}

/* Median of @n samples (sorted in place). */
static double median(double *v, u32 n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void bs_str(u64 bs, char *buf, size_t len)
{
	if (bs >= MiB)
		snprintf(buf, len, "%lluM", (unsigned long long)(bs / MiB));
	else
		snprintf(buf, len, "%lluK", (unsigned long long)(bs / KiB));
}

/* ---- arguments ---------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: bench-transfer [--cpu] [-g GPU] [-r REPS] [-b KIB] [-n BATCH]\n"
		"                      [-l natural|contig|shuffled|all] [-o CSV]\n"
		"  --cpu, -c   CPU backend and memcpy reference (a dry run without a GPU)\n"
		"  -g GPU      device ordinal (default 0)\n"
		"  -r REPS     timed cycles per row (default %u)\n"
		"  -b KIB      only this block size: 256, 1024 or 2048\n"
		"  -n BATCH    only this batch: 1, 64 or 1024\n"
		"  -l LAYOUT   frame layout (default all)\n"
		"  -o CSV      also write the rows as CSV to this file\n",
		REPS_DEFAULT);
	exit(2);
}

static u64 parse_u64(const char *s, u64 min, u64 max)
{
	return bench_parse_u64(s, min, max, usage);
}

static u32 parse_layouts(const char *s)
{
	int i;

	if (!strcmp(s, "all"))
		return (1u << NR_LAYOUTS) - 1;
	for (i = 0; i < NR_LAYOUTS; i++)
		if (!strcmp(s, layout_name[i]))
			return 1u << i;
	usage();
	return 0;
}

static bool in_list(u64 v, const u64 *l, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		if (l[i] == v)
			return true;
	return false;
}

static void parse_args(struct bench *b, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cpu", no_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const u64 batches[NR_BATCH] = { 1, 64, 1024 };
	int c;

	b->reps = REPS_DEFAULT;
	b->layouts = (1u << NR_LAYOUTS) - 1;
	while ((c = getopt_long(argc, argv, "cg:r:b:n:l:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			b->cpu = true;
			break;
		case 'g':
			b->gpu = (int)parse_u64(optarg, 0, 1023);
			break;
		case 'r':
			b->reps = (u32)parse_u64(optarg, 1, REPS_MAX);
			break;
		case 'b':
			b->only_bs = parse_u64(optarg, 1, 1 << 20) * KiB;
			if (!in_list(b->only_bs, bs_list, NR_BS))
				usage();
			break;
		case 'n':
			b->only_batch = (u32)parse_u64(optarg, 1, 1 << 20);
			if (!in_list(b->only_batch, batches, NR_BATCH))
				usage();
			break;
		case 'l':
			b->layouts = parse_layouts(optarg);
			break;
		case 'o':
			b->csv_path = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind < argc)
		usage();
}

/* ---- the driver --------------------------------------------------------- */

/* Report a failed driver call; returns its errno. */
static int cu_fail(struct bench *b, const char *what, cu_result r)
{
	fprintf(stderr, "bench-transfer: %s: %s (CUDA error %d)\n", what,
		cudrv_strerror(&b->drv, r), r);
	return cudrv_errno(r) ?: -EIO;
}

/* Make the device's context current on this thread (the pools' backend does too). */
static int ctx_set(struct bench *b)
{
	cu_result r = b->drv.CtxSetCurrent(b->ctx);

	return r ? cu_fail(b, "cuCtxSetCurrent", r) : 0;
}

/*
 * Load the driver and take the device. Exits EXIT_SKIP where there is no
 * GPU, 1 where there is one that cannot be used.
 */
static void gpu_open(struct bench *b)
{
	char why[256];
	cu_result r;
	int err;

	if (cudrv_open(&b->drv, why, sizeof(why))) {
		printf("bench-transfer: no GPU: %s\n", why);
		fprintf(stderr, "bench-transfer: --cpu runs the same measurements on the "
			"CPU backend\n");
		exit(EXIT_SKIP);
	}
	if (b->gpu >= b->drv.nr_devices) {
		printf("bench-transfer: no GPU: no device %d (this process sees %d)\n", b->gpu,
		       b->drv.nr_devices);
		cudrv_close(&b->drv);
		exit(EXIT_SKIP);
	}
	err = cudrv_device_ctx(&b->drv, b->gpu, &b->dev, &b->ctx);
	if (err) {
		fprintf(stderr, "bench-transfer: GPU %d: cannot make its context current: %s\n",
			b->gpu, strerror(-err));
		cudrv_close(&b->drv);
		exit(1);
	}
	b->ctx_held = true;
	r = b->drv.DeviceGetName(b->name, sizeof(b->name), b->dev);
	if (r)
		snprintf(b->name, sizeof(b->name), "?");
	r = b->drv.StreamCreate(&b->stream, CUDRV_STREAM_NON_BLOCKING);
	if (r) {
		cu_fail(b, "cuStreamCreate", r);
		b->drv.DevicePrimaryCtxRelease(b->dev);
		cudrv_close(&b->drv);
		exit(1);
	}
	b->cuda = (struct kv_cuda_params){ .drv = &b->drv, .device = b->gpu };
}

static void gpu_close(struct bench *b)
{
	if (b->cpu)
		return;
	ctx_set(b);
	if (b->stream)
		b->drv.StreamDestroy(b->stream);
	if (b->ctx_held)
		b->drv.DevicePrimaryCtxRelease(b->dev);
	cudrv_close(&b->drv);
}

/* ---- memory: what a point needs, what there is -------------------------- */

/* MemAvailable in bytes, or 0 when unknown. */
static u64 mem_available(void)
{
	unsigned long long kb = 0;
	char line[256];
	FILE *f;

	f = fopen("/proc/meminfo", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return kb * KiB;
}

/*
 * Whether a point of @batch blocks of @fb bytes fits: host RAM for the
 * host tier and the reference's host buffer (with --cpu, the device tier
 * and the second buffer too), GPU memory for the device tier and the
 * reference's device buffer. Writes the reason into @why when not.
 */
static bool point_fits(struct bench *b, u64 fb, u32 batch, char *why, size_t len)
{
	u64 tier = (u64)(batch + SLACK) * fb, refb = (u64)batch * fb;
	u64 host = tier + refb, gpu = tier + refb + GPU_MARGIN, avail;
	size_t free_b = 0, total_b = 0;
	cu_result r;

	if (b->cpu)
		host += tier + refb;
	avail = mem_available();
	if (avail && host > avail * MEM_SHARE) {
		snprintf(why, len, "needs %llu MiB of host memory, %llu MiB available",
			 (unsigned long long)(host / MiB), (unsigned long long)(avail / MiB));
		return false;
	}
	if (b->cpu)
		return true;
	r = b->drv.CtxSetCurrent(b->ctx);
	r = r ?: b->drv.MemGetInfo(&free_b, &total_b);
	if (r) {
		snprintf(why, len, "cuMemGetInfo: %s", cudrv_strerror(&b->drv, r));
		return false;
	}
	if (gpu > free_b * MEM_SHARE) {
		snprintf(why, len, "needs %llu MiB of GPU memory, %llu MiB free",
			 (unsigned long long)(gpu / MiB), (unsigned long long)(free_b / MiB));
		return false;
	}
	return true;
}

/* ---- the reference ------------------------------------------------------ */

static void *map_buffer(u64 bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void ref_destroy(struct bench *b, struct ref *r)
{
	if (b->cpu) {
		if (r->host)
			munmap(r->host, r->bytes);
		if (r->cpu)
			munmap(r->cpu, r->bytes);
	} else if (r->host || r->dev) {
		ctx_set(b);
		if (r->host)
			b->drv.MemFreeHost(r->host);
		if (r->dev)
			b->drv.MemFree(r->dev);
	}
	memset(r, 0, sizeof(*r));
}

/* Buffers of @bytes, written once (so that no copy faults pages in). */
static int ref_create(struct bench *b, struct ref *r, u64 bytes)
{
	cu_result cr;
	int err;

	r->bytes = bytes;
	if (b->cpu) {
		r->host = map_buffer(bytes);
		r->cpu = map_buffer(bytes);
		if (!r->host || !r->cpu) {
			ref_destroy(b, r);
			return -ENOMEM;
		}
		memset(r->host, 1, bytes);
		memset(r->cpu, 2, bytes);
		return 0;
	}
	err = ctx_set(b);
	if (err)
		return err;
	cr = b->drv.MemAllocHost(&r->host, bytes);
	if (cr) {
		r->host = NULL;
		err = cu_fail(b, "cuMemAllocHost", cr);
		goto out_destroy;
	}
	memset(r->host, 1, bytes);
	cr = b->drv.MemAlloc(&r->dev, bytes);
	if (cr) {
		r->dev = 0;
		err = cu_fail(b, "cuMemAlloc", cr);
		goto out_destroy;
	}
	cr = b->drv.MemsetD8(r->dev, 2, bytes);
	if (cr) {
		err = cu_fail(b, "cuMemsetD8", cr);
		goto out_destroy;
	}
	/* The memset ran on the legacy stream, which ours does not wait for. */
	cr = b->drv.StreamSynchronize(NULL);
	if (cr) {
		err = cu_fail(b, "cuStreamSynchronize(legacy stream)", cr);
		goto out_destroy;
	}
	return 0;

out_destroy:
	ref_destroy(b, r);
	return err;
}

/* One copy of the reference's bytes, D2H for demote, H2D for promote. */
static int ref_copy(struct bench *b, struct ref *r, int dir, double *secs)
{
	cu_devptr host = (cu_devptr)(uintptr_t)r->host;
	cu_result cr;
	double t0;

	if (b->cpu) {
		t0 = now();
		if (dir == DIR_DEMOTE)
			memcpy(r->host, r->cpu, r->bytes);
		else
			memcpy(r->cpu, r->host, r->bytes);
		*secs = now() - t0;
		return 0;
	}
	if (ctx_set(b))
		return -EIO;
	t0 = now();
	if (dir == DIR_DEMOTE)
		cr = b->drv.MemcpyAsync(host, r->dev, r->bytes, b->stream);
	else
		cr = b->drv.MemcpyAsync(r->dev, host, r->bytes, b->stream);
	if (cr)
		return cu_fail(b, "cuMemcpyAsync", cr);
	cr = b->drv.StreamSynchronize(b->stream);
	*secs = now() - t0;
	if (cr)
		return cu_fail(b, "cuStreamSynchronize", cr);
	return 0;
}

/* Report what went wrong at a point; returns @err, or -EIO for none. */
static int fail(struct point *p, const char *what, int err)
{
	char bsz[16];

	bs_str(p->fb, bsz, sizeof(bsz));
	fprintf(stderr, "bench-transfer: %s batch %u: %s%s%s\n", bsz, p->batch, what,
		err ? ": " : "", err ? strerror(-err) : "");
	return err ?: -EIO;
}

/* ---- stamps: what each block must hold ---------------------------------- */

static u64 stamp_head(u32 tag, u32 id)
{
	return STAMP_MAGIC << 48 | (u64)(tag & 0xffffff) << 24 | (id & 0xffffff);
}

static void stamp_put(void *frame, u64 fb, u64 head)
{
	u64 *w = frame;

	w[0] = head;
	w[fb / 16] = head ^ STAMP_MID;
	w[fb / 8 - 1] = ~head;
}

/* 1: a whole stamp, its head in *@head; 0: none; -1: a torn one. */
static int stamp_get(const void *frame, u64 fb, u32 tag, u64 *head)
{
	const u64 *w = frame;

	*head = w[0];
	if (*head >> 48 != STAMP_MAGIC || (*head >> 24 & 0xffffff) != (tag & 0xffffff))
		return 0;
	return w[fb / 16] == (*head ^ STAMP_MID) && w[fb / 8 - 1] == ~*head ? 1 : -1;
}

static void broken(struct bench *b, struct point *p, const char *what, u32 id, u32 frame)
{
	char bsz[16];

	if (b->broken++ < 8) {
		bs_str(p->fb, bsz, sizeof(bsz));
		if (frame == KV_FRAME_NONE)
			fprintf(stderr, "bench-transfer: %s batch %u: block %u: %s\n", bsz,
				p->batch, id, what);
		else
			fprintf(stderr, "bench-transfer: %s batch %u: block %u (frame %u): %s\n",
				bsz, p->batch, id, frame, what);
	}
}

/*
 * After a demotion: find every block's host frame by its stamp, each once
 * and whole. Before any stamp (the first demotion on a GPU, whose frames
 * the CPU cannot write), the blocks went where the arranged pops put them.
 * Returns 0, or -EIO when a block is missing (it cannot be stamped).
 */
static int host_locate(struct bench *b, struct point *p)
{
	u32 f, i, id, diff = 0, missing = 0;
	u64 head;
	int s;

	if (!p->tag) {
		if (p->nr_pop < p->batch)
			return fail(p, "blocks demoted to unknown frames", 0);
		memcpy(p->host, p->pop, p->batch * sizeof(*p->host));
		return 0;
	}
	for (i = 0; i < p->batch; i++)
		p->host[i] = KV_FRAME_NONE;
	for (f = 0; f < p->nr_host; f++) {
		s = stamp_get(kv_pool_frame_addr(p->pool, KV_TIER_HOST, f), p->fb, p->tag, &head);
		id = (u32)(head & 0xffffff);
		if (!s)
			continue;
		if (s < 0 || id >= p->batch || p->host[id] != KV_FRAME_NONE)
			broken(b, p, s < 0 ? "torn (head, middle, tail differ)" :
			       "found twice, or no such block", id, f);
		else
			p->host[id] = f;
	}
	for (i = 0; i < p->batch; i++) {
		if (p->host[i] == KV_FRAME_NONE) {
			broken(b, p, "not found on the host tier after demotion", i,
			       KV_FRAME_NONE);
			missing++;
		} else if (p->nr_pop && p->host[i] != p->pop[i]) {
			diff++;
		}
	}
	if (diff)
		b->order_diff++;
	return missing ? fail(p, "blocks lost their contents; the point stops", 0) : 0;
}

/* Before a promotion: stamp each block's host frame with a new tag. */
static void host_stamp(struct point *p)
{
	u32 i;

	p->tag++;
	for (i = 0; i < p->batch; i++)
		stamp_put(kv_pool_frame_addr(p->pool, KV_TIER_HOST, p->host[i]), p->fb,
			  stamp_head(p->tag, i));
}

/* After a promotion: wipe the stamps left in the freed host frames. */
static void host_wipe(struct point *p)
{
	u32 i;

	for (i = 0; i < p->batch; i++)
		stamp_put(kv_pool_frame_addr(p->pool, KV_TIER_HOST, p->host[i]), p->fb, 0);
}

/* --cpu: the device frames are CPU-addressable; check them directly. */
static void device_check(struct bench *b, struct point *p)
{
	u64 head;
	u32 i;

	if (!b->cpu)
		return;
	for (i = 0; i < p->batch; i++)
		if (stamp_get(kv_pool_frame_addr(p->pool, KV_TIER_DEVICE, p->dev[i]), p->fb,
			      p->tag, &head) != 1 || head != stamp_head(p->tag, i))
			broken(b, p, "wrong contents on the device tier after promotion", i,
			       p->dev[i]);
}

/* ---- frame layouts ------------------------------------------------------ */

/*
 * Make the next allocations of @tier pop its free frames (those above the
 * min watermark) in @layout's order, kept in p->pop. Natural: no change.
 */
static int arrange(struct bench *b, struct point *p, int tier, int layout)
{
	struct kv_meminfo mi;
	u32 n, i, j, t;
	int err;

	p->nr_pop = 0;
	if (layout == LAYOUT_NATURAL)
		return 0;
	kv_pool_meminfo(p->pool, &mi);
	n = mi.tier[tier].free > mi.tier[tier].wmark[KV_WMARK_MIN] ?
	    mi.tier[tier].free - mi.tier[tier].wmark[KV_WMARK_MIN] : 0;
	if (n < p->batch)
		return fail(p, "too few free frames to arrange", -ENOSPC);
	err = kv_frames_alloc(p->pool, tier, n, KV_ALLOC_NOWAIT, p->buf);
	if (err)
		return fail(p, "kv_frames_alloc (arranging free frames)", err);
	qsort(p->buf, n, sizeof(*p->buf), cmp_u32);
	for (i = n - 1; layout == LAYOUT_SHUFFLED && i > 0; i--) {
		j = (u32)(rnd(&b->rng) % (i + 1));
		t = p->buf[i];
		p->buf[i] = p->buf[j];
		p->buf[j] = t;
	}
	for (i = 0; i < n; i++)
		p->pop[i] = p->buf[n - 1 - i];
	/* Freed in reverse: the last one freed is on top, popped first. */
	kv_frames_free(p->pool, tier, n, p->pop);
	memcpy(p->pop, p->buf, n * sizeof(*p->pop));
	p->nr_pop = n;
	return 0;
}

/*
 * Copies after merging, as mm/arena_cuda.c merges: a frame joins the last
 * run when both sides follow on from its end or both end where it starts.
 */
static u32 count_runs(const u32 *src, const u32 *dst, u32 n, u32 seg)
{
	u32 i, runs = 0, s_lo = 0, s_hi = 0, d_lo = 0, d_hi = 0;

	for (i = 0; i < n; i++) {
		if (i % seg && src[i] == s_hi && dst[i] == d_hi) {
			s_hi++;
			d_hi++;
		} else if (i % seg && src[i] + 1 == s_lo && dst[i] + 1 == d_lo) {
			s_lo--;
			d_lo--;
		} else {
			runs++;
			s_lo = src[i];
			s_hi = src[i] + 1;
			d_lo = dst[i];
			d_hi = dst[i] + 1;
		}
	}
	return runs;
}

static void note_runs(struct point *p, int dir, u32 runs)
{
	if (runs < p->runs_min[dir])
		p->runs_min[dir] = runs;
	if (runs > p->runs_max[dir])
		p->runs_max[dir] = runs;
}

/* ---- the mm's copies ---------------------------------------------------- */

/* Demote the inactive sequence's blocks to the host tier; *@secs: the call's time. */
static int demote(struct point *p, double *secs)
{
	u64 dem = kv_vmstat_read(p->pool, KV_PGDEMOTE);
	double t0;
	u32 n;

	t0 = now();
	n = kv_reclaim(p->pool, KV_TIER_DEVICE, p->batch);
	*secs = now() - t0;
	if (n != p->batch)
		return fail(p, "kv_reclaim(device) demoted too few blocks", 0);
	if (kv_vmstat_read(p->pool, KV_PGDEMOTE) - dem != p->batch)
		return fail(p, "pgdemote does not count the batch", 0);
	return 0;
}

/*
 * Promote the sequence (activate it), read its device frames, leave it
 * active; *@secs: the activation's time. No allocation may fail on the
 * way: seq_promote() then moves the batch in one chunk.
 */
static int promote(struct point *p, double *secs)
{
	u64 pro = kv_vmstat_read(p->pool, KV_PGPROMOTE);
	u64 afail = kv_vmstat_read(p->pool, KV_ALLOC_FAIL);
	double t0;
	int err;

	t0 = now();
	err = kv_seq_activate(p->seq, 0);
	*secs = now() - t0;
	if (err)
		return fail(p, "kv_seq_activate", err);
	err = kv_seq_block_frames(p->seq, 0, p->batch, p->dev);
	if (err)
		return fail(p, "kv_seq_block_frames", err);
	if (kv_vmstat_read(p->pool, KV_PGPROMOTE) - pro != p->batch)
		return fail(p, "pgpromote does not count the batch", 0);
	if (kv_vmstat_read(p->pool, KV_ALLOC_FAIL) != afail)
		return fail(p, "the promotion was split (a device allocation failed)", 0);
	return 0;
}

/*
 * One cycle in @layout: demote, locate, stamp; promote, check, wipe;
 * each beside its reference copy. @rep < 0: untimed.
 */
static int cycle(struct bench *b, struct point *p, int layout, int rep)
{
	double t[NR_DIRS], tr[NR_DIRS];
	int err;

	err = arrange(b, p, KV_TIER_HOST, layout);
	err = err ?: demote(p, &t[DIR_DEMOTE]);
	err = err ?: ref_copy(b, &p->ref, DIR_DEMOTE, &tr[DIR_DEMOTE]);
	err = err ?: host_locate(b, p);
	if (err)
		return err;
	if (rep >= 0)
		note_runs(p, DIR_DEMOTE, count_runs(p->dev, p->host, p->batch, RECLAIM_MAX));
	host_stamp(p);
	err = arrange(b, p, KV_TIER_DEVICE, layout);
	err = err ?: promote(p, &t[DIR_PROMOTE]);
	if (err)
		return err;
	if (rep >= 0)
		note_runs(p, DIR_PROMOTE, count_runs(p->host, p->dev, p->batch, p->batch));
	if (p->nr_pop && memcmp(p->dev, p->pop, p->batch * sizeof(*p->dev)))
		b->order_diff++;
	device_check(b, p);
	host_wipe(p);
	kv_seq_deactivate(p->seq);
	err = ref_copy(b, &p->ref, DIR_PROMOTE, &tr[DIR_PROMOTE]);
	if (err)
		return err;
	if (rep >= 0) {
		p->t[DIR_DEMOTE][rep] = t[DIR_DEMOTE];
		p->t[DIR_PROMOTE][rep] = t[DIR_PROMOTE];
		p->tref[DIR_DEMOTE][rep] = tr[DIR_DEMOTE];
		p->tref[DIR_PROMOTE][rep] = tr[DIR_PROMOTE];
	}
	return 0;
}

/* ---- the table ---------------------------------------------------------- */

static void print_header(struct bench *b)
{
	if (b->cpu)
		printf("kvmem bench-transfer: CPU backend dry run (--cpu): device tier in a memfd, "
		       "copies by memcpy\n");
	else
		printf("kvmem bench-transfer: GPU%d %s, CUDA driver %d.%d, cuMemcpyBatchAsync %s\n",
		       b->gpu, b->name, b->drv.version / 1000, b->drv.version % 1000 / 10,
		       b->drv.batch ? "available" : "absent (one cuMemcpyAsync per run)");
	if (b->cpu)
		printf("reference: one memcpy of the batch's bytes between two buffers, in the\n"
		       "  same cycle as the mm's copy\n");
	else
		printf("reference: one cuMemcpyAsync of the batch's bytes, cuMemAllocHost <->\n"
		       "  cuMemAlloc, on its own stream, wall time to cuStreamSynchronize(), in\n"
		       "  the same cycle as the mm's copy\n");
	printf("demote: kv_reclaim(device, batch), at most %u blocks per submission;\n"
	       "promote: kv_seq_activate() of the batch's sequence, one submission\n",
	       RECLAIM_MAX);
	printf("layouts: natural (frames as the mm hands them out), contig (ascending on both\n"
	       "  sides), shuffled (random); runs: copies after merging consecutive frames\n"
	       "  (min-max over the cycles)\n");
	printf("each row: median of %u cycles after an untimed one; wall time of the call;\n"
	       "  GB = 1e9 bytes; ratio = GB/s over ref GB/s\n", b->reps);
}

/*
 * Before the first row: the device tier as the first pool describes it
 * (@desc; NULL before any pool), and the column heads. Later pools are
 * described only where the host tier could not be registered for DMA.
 */
static void table_start(struct bench *b, const char *desc)
{
	if (b->desc_shown) {
		if (desc && strstr(desc, "NOT"))
			printf("  (this pool's device tier: %s)\n", desc);
		return;
	}
	printf("device tier: %s\n\n", desc ? desc : "(no pool created yet)");
	printf("%5s %6s %-9s %-12s %5s %9s %10s %9s %9s %7s\n", "bs", "batch", "layout",
	       "direction", "subm", "runs", "us", "GB/s", "ref GB/s", "ratio");
	b->desc_shown = true;
}

static void csv_row(struct bench *b, struct point *p, int layout, int dir, u32 subm,
		    double med, double min, double ref)
{
	double bytes = (double)p->batch * p->fb;

	if (!b->csv)
		return;
	fprintf(b->csv, "%s,\"%s\",%llu,%u,%s,%s,%u,%u,%u,%u,%.9f,%.9f,%.3f,%.3f,%.4f\n",
		b->cpu ? "cpu" : "cuda", b->name, (unsigned long long)p->fb, p->batch,
		layout_name[layout], dir == DIR_DEMOTE ? "demote" : "promote", subm,
		p->runs_min[dir], p->runs_max[dir], b->reps, med, min, bytes / med / 1e9,
		bytes / ref / 1e9, ref / med);
}

static void print_row(struct bench *b, struct point *p, int layout, int dir)
{
	u32 subm = dir == DIR_DEMOTE ? (p->batch + RECLAIM_MAX - 1) / RECLAIM_MAX : 1;
	double med, min, ref, ratio, bytes = (double)p->batch * p->fb;
	bool target = p->batch >= TARGET_BATCH;
	char bsz[16], runs[24];

	med = median(p->t[dir], b->reps);
	min = p->t[dir][0];
	ref = median(p->tref[dir], b->reps);
	ratio = ref / med;	/* = mm GB/s over reference GB/s */
	bs_str(p->fb, bsz, sizeof(bsz));
	if (p->runs_min[dir] == p->runs_max[dir])
		snprintf(runs, sizeof(runs), "%u", p->runs_min[dir]);
	else
		snprintf(runs, sizeof(runs), "%u-%u", p->runs_min[dir], p->runs_max[dir]);
	printf("%5s %6u %-9s %-12s %5u %9s %10.1f %9.2f %9.2f %6.2f%c\n", bsz, p->batch,
	       layout_name[layout], dir_name[dir], subm, runs, med * 1e6, bytes / med / 1e9,
	       bytes / ref / 1e9, ratio, target && ratio < RATIO_TARGET ? '*' : ' ');
	fflush(stdout);
	b->target_rows += target;
	b->target_miss += target && ratio < RATIO_TARGET;
	csv_row(b, p, layout, dir, subm, med, min, ref);
}

static void print_skip(struct bench *b, u64 fb, u32 batch, const char *why)
{
	char bsz[16];

	table_start(b, NULL);
	bs_str(fb, bsz, sizeof(bsz));
	printf("%5s %6u skipped: %s\n", bsz, batch, why);
	fflush(stdout);
	b->skipped++;
}

/* ---- one point ---------------------------------------------------------- */

static void point_free(struct point *p)
{
	int d;

	for (d = 0; d < NR_DIRS; d++) {
		free(p->t[d]);
		free(p->tref[d]);
	}
	free(p->dev);
	free(p->host);
	free(p->pop);
	free(p->buf);
}

static int point_alloc(struct bench *b, struct point *p)
{
	u32 frames = p->batch + SLACK;
	int d;

	p->dev = calloc(p->batch, sizeof(*p->dev));
	p->host = calloc(p->batch, sizeof(*p->host));
	p->pop = calloc(frames, sizeof(*p->pop));
	p->buf = calloc(frames, sizeof(*p->buf));
	if (!p->dev || !p->host || !p->pop || !p->buf)
		return -ENOMEM;
	for (d = 0; d < NR_DIRS; d++) {
		p->t[d] = calloc(b->reps, sizeof(*p->t[d]));
		p->tref[d] = calloc(b->reps, sizeof(*p->tref[d]));
		if (!p->t[d] || !p->tref[d])
			return -ENOMEM;
	}
	return 0;
}

static int pool_create(struct bench *b, struct point *p)
{
	struct kv_pool_params pp = {
		.name = "bench-transfer",
		.geom = geoms[p->bi],
		.nr_frames = { p->batch + SLACK, p->batch + SLACK },
		.vm = { .min_free_kbytes = 4,
			.reclaim_batch = p->batch < RECLAIM_MAX ? p->batch : RECLAIM_MAX },
		.flags = KV_POOL_NO_KVSWAPD | KV_POOL_NO_PREFIX,
		.cuda = b->cpu ? NULL : &b->cuda,
	};

	p->nr_host = pp.nr_frames[KV_TIER_HOST];
	return kv_pool_create(&pp, &p->pool);
}

/*
 * Write every frame once, so that no timed copy faults pages in: the host
 * tier, and with --cpu the device tier (on a GPU the backend clears it).
 */
static void arenas_touch(struct bench *b, struct point *p)
{
	u32 f, nr = p->batch + SLACK;
	void *a;

	for (f = 0; f < nr; f++) {
		a = kv_pool_frame_addr(p->pool, KV_TIER_HOST, f);
		if (a)
			memset(a, 0, p->fb);
		a = b->cpu ? kv_pool_frame_addr(p->pool, KV_TIER_DEVICE, f) : NULL;
		if (a)
			memset(a, 0, p->fb);
	}
}

/*
 * The sequence of p->batch blocks, on the device, inactive. With --cpu its
 * device frames are stamped (tag 1), so that even the first demotion is
 * checked; on a GPU the first stamps go on after it.
 */
static int seq_fill(struct bench *b, struct point *p)
{
	u32 i;
	int err;

	arenas_touch(b, p);
	err = kv_seq_create(p->pool, &p->seq);
	if (err) {
		p->seq = NULL;
		return fail(p, "kv_seq_create", err);
	}
	err = kv_seq_activate(p->seq, 0);
	err = err ?: kv_seq_append(p->seq, p->batch * geoms[p->bi].block_tokens, NULL, 0);
	err = err ?: kv_seq_block_frames(p->seq, 0, p->batch, p->dev);
	if (err)
		return fail(p, "filling the sequence", err);
	if (b->cpu) {
		p->tag = 1;
		for (i = 0; i < p->batch; i++)
			stamp_put(kv_pool_frame_addr(p->pool, KV_TIER_DEVICE, p->dev[i]), p->fb,
				  stamp_head(p->tag, i));
	}
	kv_seq_deactivate(p->seq);
	return 0;
}

/* Warm-up, then every selected layout: an untimed cycle and the timed ones. */
static int point_measure(struct bench *b, struct point *p)
{
	u32 r;
	int l, d, err;

	/* The first cycle is arranged: on a GPU, it tells where blocks went. */
	err = cycle(b, p, LAYOUT_CONTIG, -1);
	for (l = 0; l < NR_LAYOUTS && !err; l++) {
		if (!(b->layouts & 1u << l))
			continue;
		for (d = 0; d < NR_DIRS; d++) {
			p->runs_min[d] = UINT32_MAX;
			p->runs_max[d] = 0;
		}
		err = cycle(b, p, l, -1);
		for (r = 0; r < b->reps && !err; r++)
			err = cycle(b, p, l, (int)r);
		if (err)
			break;
		print_row(b, p, l, DIR_DEMOTE);
		print_row(b, p, l, DIR_PROMOTE);
	}
	if (err)
		return err;
	/* The last promotion's contents: one more demotion, checked. */
	err = arrange(b, p, KV_TIER_HOST, LAYOUT_NATURAL);
	err = err ?: demote(p, &(double){ 0 });
	return err ?: host_locate(b, p);
}

static void point_destroy(struct bench *b, struct point *p)
{
	if (p->pool && kv_pool_check(p->pool)) {
		fail(p, "kv_pool_check", 0);
		b->broken++;
	}
	if (p->seq)
		kv_seq_free(p->seq);
	kv_pool_destroy(p->pool);
	ref_destroy(b, &p->ref);
	point_free(p);
}

/* One (block size, batch): its own pool, sequence and reference buffers. */
static void bench_point(struct bench *b, int bi, u32 batch)
{
	struct point p = { .bi = bi, .batch = batch, .fb = kv_frame_bytes(&geoms[bi]) };
	char why[192];
	int err;

	if (!point_fits(b, p.fb, batch, why, sizeof(why))) {
		print_skip(b, p.fb, batch, why);
		return;
	}
	err = point_alloc(b, &p);
	if (err)
		goto out;
	err = pool_create(b, &p);
	if (err) {
		p.pool = NULL;
		if (err == -ENOMEM) {
			print_skip(b, p.fb, batch, "kv_pool_create: out of memory");
			goto out_skip;
		}
		fail(&p, "kv_pool_create", err);
		goto out;
	}
	table_start(b, kv_pool_device_desc(p.pool));
	err = ref_create(b, &p.ref, (u64)batch * p.fb);
	if (err == -ENOMEM) {
		print_skip(b, p.fb, batch, "no memory for the reference's buffers");
		goto out_skip;
	}
	err = err ?: seq_fill(b, &p);
	err = err ?: point_measure(b, &p);
out:
	if (err)
		b->failed++;
out_skip:
	point_destroy(b, &p);
}

/* ---- main --------------------------------------------------------------- */

/* The geometries must give frames of exactly the block sizes wanted. */
static void geoms_check(void)
{
	int i;

	for (i = 0; i < NR_BS; i++) {
		if (!kv_geometry_valid(&geoms[i]) || kv_block_bytes(&geoms[i]) != bs_list[i] ||
		    kv_frame_bytes(&geoms[i]) != bs_list[i]) {
			fprintf(stderr, "bench-transfer: geometry %d gives %llu-byte frames, not "
				"%llu\n", i, (unsigned long long)kv_frame_bytes(&geoms[i]),
				(unsigned long long)bs_list[i]);
			exit(1);
		}
	}
}

static int csv_open(struct bench *b)
{
	if (!b->csv_path)
		return 0;
	b->csv = fopen(b->csv_path, "w");
	if (!b->csv) {
		fprintf(stderr, "bench-transfer: %s: %s\n", b->csv_path, strerror(errno));
		return -errno;
	}
	fprintf(b->csv, "backend,device,block_bytes,batch,layout,direction,submissions,"
		"runs_min,runs_max,reps,median_s,min_s,gbps,ref_gbps,ratio\n");
	return 0;
}

static int csv_close(struct bench *b)
{
	if (b->csv && fclose(b->csv)) {
		fprintf(stderr, "bench-transfer: %s: %s\n", b->csv_path, strerror(errno));
		return -EIO;
	}
	return 0;
}

static int print_footer(struct bench *b)
{
	printf("\n* below the %.1fx target (batches of %u blocks and more): %u of %u rows\n",
	       RATIO_TARGET, TARGET_BATCH, b->target_miss, b->target_rows);
	printf("subm: kv_reclaim() moves at most %u blocks per copy submission\n"
	       "  (KV_RECLAIM_BATCH_MAX): a batch of 1024 demotes in 4; vm.reclaim_batch\n"
	       "  (set to min(batch, %u) here) bounds only direct reclaim and kvswapd\n",
	       RECLAIM_MAX, RECLAIM_MAX);
	if (b->order_diff)
		printf("order: in %u arranged copies the blocks did not move in sequence order "
		       "(runs are then estimates)\n", b->order_diff);
	if (b->skipped)
		printf("skipped: %u points that did not fit\n", b->skipped);
	if (b->failed)
		printf("FAILED: %u points (see the messages above)\n", b->failed);
	if (b->broken)
		printf("BROKEN: %llu blocks or checks whose contents or state were wrong\n",
		       (unsigned long long)b->broken);
	return b->failed || b->broken ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct bench b = { .rng = 0x6b766d656dull };
	int i, j, ret;

	parse_args(&b, argc, argv);
	geoms_check();
	if (b.cpu)
		snprintf(b.name, sizeof(b.name), "cpu");
	else
		gpu_open(&b);
	if (csv_open(&b)) {
		gpu_close(&b);
		return 1;
	}
	print_header(&b);
	for (i = 0; i < NR_BS; i++) {
		if (b.only_bs && b.only_bs != bs_list[i])
			continue;
		for (j = 0; j < NR_BATCH; j++)
			if (!b.only_batch || b.only_batch == batch_list[j])
				bench_point(&b, i, batch_list[j]);
	}
	ret = print_footer(&b);
	if (csv_close(&b))
		ret = 1;
	gpu_close(&b);
	return ret;
}
