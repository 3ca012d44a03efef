// SPDX-License-Identifier: MIT
/*
 * kvdemo: a small transformer serving a stream of requests through kvmemd
 * (see kvdemo.h and Documentation/kvdemo.md).
 *
 *   kvdemo [--check] [--weights FILE] [--requests N] [--batch N] ...
 *
 * Exit status: 0 when every request was served (and, with --check, every
 * step's logits agreed with the dense recomputation), 1 on any error or
 * mismatch, 2 for a bad command line.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "lib/config.h"
#include "kvdemo.h"

#define STATS_TEXT	65536

/**
 * struct kvd_run - what main() holds
 * @o:       options
 * @c:       connection
 * @pool:    the pool
 * @m:       the model
 * @s:       the engine
 * @t0:      start of the stream, seconds
 * @next:    time of the next progress line
 * @tty:     stdout is a terminal (progress rewrites one line)
 * @vm0:     the pool's vmstat text at the start
 * @text:    a stats buffer
 */
struct kvd_run {
	struct kvd_opts o;
	struct kvc *c;
	struct kvc_pool *pool;
	struct kvd_model m;
	struct kvd_sched *s;
	double t0;
	double next;
	bool tty;
	char *vm0;
	char *text;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: kvdemo [OPTION]...\n"
		"A small decoder-only transformer serving a stream of requests through kvmemd.\n\n"
		"  -s, --socket PATH      kvmemd's socket ($KVMEM_SOCKET, else the default)\n"
		"  -p, --pool NAME        pool holding the model's K/V (default: default)\n"
		"  -w, --weights FILE     safetensors weights (default: random from the seed)\n"
		"      --save-weights FILE  write the weights to a safetensors file\n"
		"  -S, --seed N           seed of the weights and the requests (default 1)\n"
		"  -n, --requests N       requests in the stream (default 96)\n"
		"  -b, --batch N          most sequences running at once (default 16)\n"
		"      --prefill N        most prompt tokens computed per step (default 256)\n"
		"      --draft N          draft tokens per step of drafting requests (default 3)\n"
		"  -c, --check            compare every step's logits with a dense recomputation\n"
		"      --staged           K/V through kvc_frame_read/write, not the mapped arena\n"
		"  -t, --threads N        CPU threads of the attention kernels (0: automatic)\n"
		"      --progress SEC     seconds between progress lines (0: none; default 1)\n"
		"  -q, --quiet            no progress lines\n"
		"      --dim N, --q-heads N, --ffn N, --vocab N\n"
		"                         shape of the random model (default 256, 2 per kv head,\n"
		"                         512, 512; layers, kv heads and head_dim are the pool's)\n"
		"  -h, --help             this text\n");
}

static int parse_u64(const char *opt, const char *arg, uint64_t min, uint64_t max,
		     uint64_t *out)
{
	if (kv_parse_uint(arg, min, max, out)) {
		fprintf(stderr, "kvdemo: %s: '%s' is not a number from %" PRIu64 " to %" PRIu64
			"\n", opt, arg, min, max);
		return -EINVAL;
	}
	return 0;
}

static int parse_u32(const char *opt, const char *arg, uint32_t min, uint32_t max,
		     uint32_t *out)
{
	uint64_t v;
	int err = parse_u64(opt, arg, min, max, &v);

	if (!err)
		*out = (uint32_t)v;
	return err;
}

enum { OPT_SAVE = 256, OPT_PREFILL, OPT_DRAFT, OPT_STAGED, OPT_PROGRESS, OPT_DIM,
       OPT_QHEADS, OPT_FFN, OPT_VOCAB, OPT_FAULT };

static const struct option long_opts[] = {
	{ "socket", required_argument, NULL, 's' },
	{ "pool", required_argument, NULL, 'p' },
	{ "weights", required_argument, NULL, 'w' },
	{ "save-weights", required_argument, NULL, OPT_SAVE },
	{ "seed", required_argument, NULL, 'S' },
	{ "requests", required_argument, NULL, 'n' },
	{ "batch", required_argument, NULL, 'b' },
	{ "prefill", required_argument, NULL, OPT_PREFILL },
	{ "draft", required_argument, NULL, OPT_DRAFT },
	{ "check", no_argument, NULL, 'c' },
	{ "staged", no_argument, NULL, OPT_STAGED },
	{ "threads", required_argument, NULL, 't' },
	{ "progress", required_argument, NULL, OPT_PROGRESS },
	{ "quiet", no_argument, NULL, 'q' },
	{ "dim", required_argument, NULL, OPT_DIM },
	{ "q-heads", required_argument, NULL, OPT_QHEADS },
	{ "ffn", required_argument, NULL, OPT_FFN },
	{ "vocab", required_argument, NULL, OPT_VOCAB },
	{ "inject-fault", required_argument, NULL, OPT_FAULT },	/* testing, see kvdemo.md */
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* One option; 0, -EINVAL (printed), or 1 for --help. */
static int parse_opt(struct kvd_opts *o, int opt, const char *arg)
{
	uint32_t p = 0;
	int err = 0;

	switch (opt) {
	case 's': o->socket = arg; break;
	case 'p': o->pool = arg; break;
	case 'w': o->weights = arg; break;
	case OPT_SAVE: o->save = arg; break;
	case 'S': err = parse_u64("--seed", arg, 0, UINT64_MAX, &o->seed); break;
	case 'n': err = parse_u32("--requests", arg, 1, 1000000, &o->requests); break;
	case 'b': err = parse_u32("--batch", arg, 1, KVMEM_STEP_MAX_SEQS, &o->batch); break;
	case OPT_PREFILL: err = parse_u32("--prefill", arg, 1, 4096, &o->prefill); break;
	case OPT_DRAFT: err = parse_u32("--draft", arg, 0, 16, &o->draft); break;
	case 'c': o->check = true; break;
	case OPT_STAGED: o->staged = true; break;
	case 't': err = parse_u32("--threads", arg, 0, 1024, &o->threads); break;
	case OPT_PROGRESS:
		err = parse_u32("--progress", arg, 0, 3600, &p);
		o->progress = p;
		break;
	case 'q': o->progress = 0; break;
	case OPT_DIM: err = parse_u32("--dim", arg, 1, 65536, &o->cfg.dim); break;
	case OPT_QHEADS: err = parse_u32("--q-heads", arg, 1, 4096, &o->cfg.q_heads); break;
	case OPT_FFN: err = parse_u32("--ffn", arg, 1, 1 << 20, &o->cfg.ffn); break;
	case OPT_VOCAB: err = parse_u32("--vocab", arg, 2, KVD_VOCAB_MAX, &o->cfg.vocab); break;
	case OPT_FAULT: err = parse_u64("--inject-fault", arg, 1, UINT64_MAX, &o->fault_step); break;
	case 'h': return 1;
	default: return -EINVAL;
	}
	return err;
}

static int parse_args(struct kvd_opts *o, int argc, char **argv)
{
	int opt, err;

	*o = (struct kvd_opts){
		.pool = "default", .seed = 1, .requests = 96, .batch = 16, .prefill = 256,
		.draft = 3, .progress = 1,
		.cfg = { .vocab = 512, .dim = 256, .ffn = 512, .rope_theta = 10000.0f,
			 .norm_eps = 1e-5f },
	};
	while ((opt = getopt_long(argc, argv, "s:p:w:S:n:b:ct:qh", long_opts, NULL)) != -1) {
		err = parse_opt(o, opt, optarg);
		if (err)
			return err;
	}
	if (optind < argc) {
		fprintf(stderr, "kvdemo: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* The model: read from --weights, or random from the seed, for @pool. */
static int model_setup(struct kvd_run *r)
{
	const struct kv_geometry *g = &r->pool->geom;
	struct kvd_model_cfg cfg = r->o.cfg;
	int err;

	if (r->o.weights) {
		err = kvd_safetensors_load(&r->m, r->o.weights, g->layers, g->kv_heads, g->head_dim);
		if (err)
			return err;
	} else {
		cfg.layers = g->layers;
		cfg.kv_heads = g->kv_heads;
		cfg.head_dim = g->head_dim;
		if (!cfg.q_heads)
			cfg.q_heads = 2 * g->kv_heads;
		if (cfg.q_heads % cfg.kv_heads) {
			fprintf(stderr, "kvdemo: --q-heads %u query heads: not a multiple of the pool's "
				"%u kv heads\n", cfg.q_heads, cfg.kv_heads);
			return -EINVAL;
		}
		err = kvd_model_init(&r->m, &cfg);
		if (err) {
			fprintf(stderr, "kvdemo: a model of dim %u, %u query heads over %u kv heads "
				"of %u, ffn %u, vocab %u: %s\n", cfg.dim, cfg.q_heads, cfg.kv_heads,
				cfg.head_dim, cfg.ffn, cfg.vocab, strerror(-err));
			return err;
		}
		err = kvd_model_randomize(&r->m, r->o.seed);
		if (err)
			return err;
	}
	kvd_model_finish(&r->m);
	return r->o.save ? kvd_safetensors_save(&r->m, r->o.save) : 0;
}

static int connect_pool(struct kvd_run *r)
{
	const char *path = r->o.socket ? r->o.socket : getenv(KVMEM_SOCKET_ENV);
	int err;

	err = kvc_connect(r->o.socket, &r->c);
	if (err) {
		fprintf(stderr, "kvdemo: cannot connect to kvmemd at %s: %s\n",
			path ? path : KVMEM_DEFAULT_SOCKET, strerror(-err));
		return err;
	}
	err = kvc_pool_open(r->c, r->o.pool, &r->pool);
	if (err)
		fprintf(stderr, "kvdemo: pool %s: %s\n", r->o.pool,
			err == -ENOENT ? "no such pool in kvmemd's configuration" : strerror(-err));
	return err;
}

/* A `Name: N kB` (or `name N`) value of stats text; 0 when absent. */
static uint64_t stat_num(const char *text, const char *name)
{
	const char *p = strstr(text, name);

	return p ? strtoull(p + strlen(name), NULL, 10) : 0;
}

static void free_blocks(struct kvd_run *r, uint64_t fr[3])
{
	uint64_t kb = r->pool->frame_bytes / 1024;

	memset(fr, 0, 3 * sizeof(*fr));
	if (kvc_stats(r->c, KVMEM_STATS_MEMINFO, r->pool->handle, r->text, STATS_TEXT) < 0)
		return;
	fr[0] = stat_num(r->text, "DeviceFree:") / kb;
	fr[1] = stat_num(r->text, "HostFree:") / kb;
	fr[2] = strstr(r->text, "SwapTotal:") ? stat_num(r->text, "SwapFree:") / kb : UINT64_MAX;
}

static double hit_ratio(const struct kvd_stats *st)
{
	return st->prompt_tokens ? 100.0 * st->prompt_hit / st->prompt_tokens : 0;
}

/* The progress line: requests, tokens/s, prefix hits, free blocks per tier. */
static void progress(struct kvd_run *r, bool last)
{
	const struct kvd_stats *st = kvd_sched_stats(r->s);
	uint32_t run, wait, pre;
	double t = now();
	uint64_t fr[3];
	char swap[32];

	if (!r->o.progress || (!last && t < r->next))
		return;
	r->next = t + r->o.progress;
	kvd_sched_counts(r->s, &run, &wait, &pre);
	free_blocks(r, fr);
	snprintf(swap, sizeof(swap), fr[2] == UINT64_MAX ? ", no swap" : ", swap %" PRIu64,
		 fr[2]);
	printf("%s[%5.1fs] requests %" PRIu64 "/%u done, %u running, %u waiting, %u preempted"
	       " | %6.0f tok/s | prefix hits %3.0f%% | free blocks: device %" PRIu64 ", host %"
	       PRIu64 "%s%s", r->tty ? "\r\033[K" : "", t - r->t0,
	       st->served + st->rejected, r->o.requests, run, wait, pre,
	       (double)st->rows / (t - r->t0), hit_ratio(st), fr[0], fr[1], swap,
	       r->tty && !last ? "" : "\n");
	fflush(stdout);
}

static void banner(struct kvd_run *r)
{
	const struct kvd_model_cfg *c = &r->m.cfg;
	const struct kvc_pool *p = r->pool;
	uint64_t fr[3];
	char swap[48] = "";

	printf("kvdemo: model: %u layers, dim %u, %u query heads over %u kv heads of %u (GQA), "
	       "SwiGLU %u, vocab %u: %.1fM parameters, %s (tag %04x)\n", c->layers, c->dim,
	       c->q_heads, c->kv_heads, c->head_dim, c->ffn, c->vocab, r->m.params / 1e6,
	       r->o.weights ? r->o.weights : "random weights", r->m.tag);
	free_blocks(r, fr);
	if (fr[2] != UINT64_MAX)
		snprintf(swap, sizeof(swap), " + %" PRIu64 " swap",
			 stat_num(r->text, "SwapTotal:") / (p->frame_bytes / 1024));
	printf("kvdemo: pool %s: %u device + %u host%s blocks of %u tokens, %s backend\n",
	       r->o.pool, p->nr_frames[KVMEM_TIER_DEVICE], p->nr_frames[KVMEM_TIER_HOST], swap,
	       p->geom.block_tokens, p->backend == KVMEM_BACKEND_CUDA ? "cuda" : "cpu");
	printf("kvdemo: %u requests (seed %" PRIu64 "), up to %u sequences at once%s\n",
	       r->o.requests, r->o.seed, r->o.batch,
	       r->o.check ? "; --check: every step's logits against a dense recomputation" : "");
}

/* vmstat counter @name now minus at the start. */
static uint64_t vm_delta(const struct kvd_run *r, const char *name)
{
	char key[64];

	snprintf(key, sizeof(key), "\n%s ", name);
	return stat_num(r->text, key) - stat_num(r->vm0, key);
}

static void summary(struct kvd_run *r, double secs)
{
	const struct kvd_stats *st = kvd_sched_stats(r->s);
	const struct kvd_check *ck = kvd_sched_check(r->s);

	printf("kvdemo: summary\n");
	printf("  requests    %" PRIu64 " served (%" PRIu64 " with 2 samples, forked; %" PRIu64
	       " drafting; %" PRIu64 " second turns), %" PRIu64 " refused (never fit the device "
	       "tier)\n", st->served, st->forked, st->drafting, st->followups, st->rejected);
	printf("  prompts     %" PRIu64 " tokens: %" PRIu64 " from the prefix cache (%.0f%%), %"
	       PRIu64 " computed\n", st->prompt_tokens, st->prompt_hit, hit_ratio(st),
	       st->prompt_computed);
	printf("  generated   %" PRIu64 " tokens; drafts: %" PRIu64 " of %" PRIu64 " guesses "
	       "accepted, %" PRIu64 " truncations\n", st->generated, st->draft_accepted,
	       st->draft_proposed, st->truncations);
	printf("  admission   ADMIT on whole requests: %" PRIu64 " now, %" PRIu64 " later, %" PRIu64
	       " never; %" PRIu64 " waited for room; %" PRIu64 " preemptions, %" PRIu64
	       " resumes\n", st->admit_now, st->admit_later, st->admit_never, st->admit_waited,
	       st->preemptions, st->resumes);
	if (st->recomputes)
		printf("  recompute   %" PRIu64 " preempted requests freed their sequences (no "
		       "room below the device tier); %" PRIu64 " tokens computed again on "
		       "resume\n", st->recomputes, st->recomputed);
	printf("  steps       %" PRIu64 ": %" PRIu64 " with no STEP (tokens appended locally), %"
	       PRIu64 " STEP messages\n", st->steps, st->local_steps, st->step_msgs);
	if (st->enomem_waits)
		printf("  waited      %" PRIu64 " x 2 ms for other clients' blocks (a STEP "
		       "out of memory, nothing of ours left to free), %" PRIu64 " times "
		       "preempting our last request for them\n", st->enomem_waits, st->yields);
	printf("  throughput  %" PRIu64 " tokens through the model in %.1f s: %.0f tokens/s%s\n",
	       st->rows, secs, st->rows / secs, r->o.check ? " (with --check's recomputation)" : "");
	if (kvc_stats(r->c, KVMEM_STATS_VMSTAT, r->pool->handle, r->text, STATS_TEXT) >= 0)
		printf("  kvmemd      blocks demoted %" PRIu64 ", promoted %" PRIu64 ", swapped out %"
		       PRIu64 ", swapped in %" PRIu64 "; prefix blocks evicted %" PRIu64
		       "; copy-on-write %" PRIu64 "\n", vm_delta(r, "pgdemote"),
		       vm_delta(r, "pgpromote"), vm_delta(r, "pswpout"), vm_delta(r, "pswpin"),
		       vm_delta(r, "prefix_evict"), vm_delta(r, "cow_copy"));
	if (r->o.check)
		printf("  check       %" PRIu64 " rows of logits equal to the dense recomputation "
		       "(largest relative error %.2g, tolerance %g)\n", ck->rows, ck->max_err,
		       ck->tol);
	printf("  output      token checksum %016" PRIx64 " (seed %" PRIu64 ")\n", st->checksum,
	       r->o.seed);
}

static int serve(struct kvd_run *r)
{
	int err;

	err = kvd_sched_create(&r->s, &r->o, r->c, r->pool, &r->m);
	if (err) {
		fprintf(stderr, "kvdemo: %s\n", strerror(-err));
		return err;
	}
	printf("kvdemo: K/V %s\n", kvd_sched_kv_mode(r->s));
	if (kvc_stats(r->c, KVMEM_STATS_VMSTAT, r->pool->handle, r->vm0, STATS_TEXT) < 0)
		r->vm0[0] = '\0';
	r->t0 = now();
	r->next = r->t0 + r->o.progress;
	while (!kvd_sched_done(r->s)) {
		err = kvd_sched_step(r->s);
		if (err) {
			if (r->tty && r->o.progress)
				printf("\n");
			fprintf(stderr, "kvdemo: stopped after %" PRIu64 " steps (%" PRIu64
				" yields to other clients): %s\n", kvd_sched_stats(r->s)->steps,
				kvd_sched_stats(r->s)->yields, strerror(-err));
			return err;
		}
		progress(r, false);
	}
	progress(r, true);
	summary(r, now() - r->t0);
	return 0;
}

int main(int argc, char **argv)
{
	struct kvd_run r = { 0 };
	int err;

	err = parse_args(&r.o, argc, argv);
	if (err) {
		usage(err > 0 ? stdout : stderr);
		return err > 0 ? 0 : 2;
	}
	r.tty = isatty(STDOUT_FILENO);
	r.vm0 = calloc(1, STATS_TEXT);
	r.text = calloc(1, STATS_TEXT);
	err = r.vm0 && r.text ? connect_pool(&r) : -ENOMEM;
	if (err)
		goto out;
	err = model_setup(&r);
	if (err)
		goto out;
	banner(&r);
	err = serve(&r);
out:
	kvd_sched_destroy(r.s);
	kvd_model_free(&r.m);
	if (r.c)
		kvc_close(r.c);
	free(r.vm0);
	free(r.text);
	return err ? 1 : 0;
}
