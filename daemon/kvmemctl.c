// SPDX-License-Identifier: MIT
/*
 * kvmemctl: watch and tune kvmemd. See kvmemctl(8).
 *
 *   kvmemctl [-s SOCKET] meminfo|vmstat [POOL]
 *   kvmemctl [-s SOCKET] pools | clients
 *   kvmemctl [-s SOCKET] topology [POOL]
 *   kvmemctl [-s SOCKET] sysctl KEY[=VALUE]
 *   kvmemctl [-s SOCKET] drop-caches [POOL]
 *   kvmemctl [-s SOCKET] prefix [show] [POOL]
 *   kvmemctl [-s SOCKET] prefix pin|unpin|forget NAME [POOL]
 *   kvmemctl [-s SOCKET] prefix drop [POOL]
 *   kvmemctl [-s SOCKET] checkpoint [POOL]
 *   kvmemctl [-s SOCKET] advise [--max-waste PCT] [POOL]
 *   kvmemctl estimate --list | {--model NAME | --hf-config PATH | --layers N
 *            --kv-heads N --head-dim N} [--block-tokens N] [--kv-dtype T]
 *            [--tp N] [--memory SIZE] [--context N] [--batch N]
 *
 * estimate needs no daemon. Exit status: 0 done; 1 the daemon refused (the
 * reason is printed), or a config.json could not be read; 2 usage; 3 the
 * daemon cannot be reached.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/config.h"
#include "lib/kvclient/kvclient.h"
#include "lib/kvsize.h"
#include "lib/models.h"

#define EXIT_REFUSED	1
#define EXIT_USAGE	2
#define EXIT_CONNECT	3

static int usage(FILE *f)
{
	fprintf(f, "usage: kvmemctl [-s SOCKET] COMMAND\n"
		"  meminfo [POOL]      memory per tier (meminfo)\n"
		"  vmstat [POOL]       event counters\n"
		"  pools               pools: geometry, frames, watermarks (zoneinfo)\n"
		"  clients             connected clients\n"
		"  topology [POOL]     NUMA nodes, GPUs, where each pool's arenas live\n"
		"  sysctl KEY[=VALUE]  read or (admin) set a tunable\n"
		"  drop-caches [POOL]  (admin) demote every unpinned device block\n"
		"  prefix [show] [POOL] prefix cache: hits per tenant and tier, names, largest\n"
		"  prefix unpin|pin|forget NAME [POOL]\n"
		"                      unpin a named prefix, pin it again, or drop its name\n"
		"  prefix drop [POOL]  (admin) evict every evictable cached block\n"
		"  checkpoint [POOL]   (admin) write the prefix cache to the swap area\n"
		"  advise [--max-waste PCT] [POOL]\n"
		"                      block size advice from the lengths of ended sequences\n"
		"  estimate --list | --model NAME | --hf-config PATH | --layers N --kv-heads N\n"
		"           --head-dim N  [--block-tokens N] [--kv-dtype T] [--tp N]\n"
		"           [--memory SIZE] [--context N] [--batch N]\n"
		"                      KV bytes per token and block, what a memory holds\n"
		"                      (no daemon needed)\n"
		"The socket is -s, else $%s, else %s.\n", KVMEM_SOCKET_ENV,
		KVMEM_DEFAULT_SOCKET);
	return EXIT_USAGE;
}

static int refused(const char *what, int err)
{
	fprintf(stderr, "kvmemctl: %s: %s\n", what, strerror(-err));
	if (err == -EPERM)
		fprintf(stderr, "kvmemctl: admin operations need root or the daemon's admin.group "
			"(a named prefix: also the tenant that named it)\n");
	if (err == -EROFS && !strncmp(what, "tenant.", 7))
		fprintf(stderr, "kvmemctl: tenants change in the config file: edit it and "
			"reload kvmemd (SIGHUP)\n");
	else if (err == -EROFS)
		fprintf(stderr, "kvmemctl: this key is read at start only: edit the config "
			"file and restart kvmemd\n");
	if (err == -ENOENT)
		fprintf(stderr, "kvmemctl: no such key or pool\n");
	return EXIT_REFUSED;
}

static int pool_handle(struct kvc *c, const char *name, uint32_t *handle)
{
	struct kvc_pool *p;
	int err;

	*handle = 0;
	if (!name)
		return 0;
	err = kvc_pool_open(c, name, &p);
	if (err)
		return err;
	*handle = p->handle;
	return 0;
}

static int cmd_text(struct kvc *c, const char *cmd, uint32_t what, const char *pool)
{
	static char buf[KVMEM_MSG_MAX];
	uint32_t handle;
	int n;

	n = pool_handle(c, pool, &handle);
	if (n)
		return refused(pool, n);
	if (what)
		n = kvc_stats(c, what, handle, buf, sizeof(buf));
	else
		n = kvc_clients(c, buf, sizeof(buf));
	if (n < 0)
		return refused(cmd, n);
	fputs(buf, stdout);
	return 0;
}

static int cmd_sysctl(struct kvc *c, char *arg)
{
	char *eq = strchr(arg, '='), value[KVMEM_VALUE_MAX];
	int err;

	if (eq) {
		*eq = '\0';
		err = kvc_sysctl_set(c, arg, eq + 1);
		if (err)
			return refused(arg, err);
	}
	err = kvc_sysctl_get(c, arg, value, sizeof(value));
	if (err)
		return refused(arg, err);
	printf("%s = %s\n", arg, value);
	return 0;
}

static int cmd_drop(struct kvc *c, const char *pool)
{
	uint32_t handle;
	int n;

	n = pool_handle(c, pool, &handle);
	if (n)
		return refused(pool, n);
	n = kvc_drop_caches(c, handle, KVMEM_DROP_DEMOTE);
	if (n < 0)
		return refused("drop-caches", n);
	printf("%d blocks demoted\n", n);
	return 0;
}

static int cmd_checkpoint(struct kvc *c, const char *pool)
{
	uint32_t handle;
	int n;

	n = pool_handle(c, pool, &handle);
	n = n ?: kvc_checkpoint(c, handle);
	if (n < 0)
		return refused("checkpoint", n);
	printf("checkpoint of %d cached blocks\n", n);
	return 0;
}

static const char *const prefix_ops[] = {
	[KVMEM_PREFIX_UNPIN] = "unpin",
	[KVMEM_PREFIX_REPIN] = "pin",
	[KVMEM_PREFIX_FORGET] = "forget",
};

static int prefix_op(const char *word)
{
	int i;

	for (i = KVMEM_PREFIX_UNPIN; i <= KVMEM_PREFIX_FORGET; i++)
		if (!strcmp(word, prefix_ops[i]))
			return i;
	return 0;
}

/* prefix [POOL] | prefix drop [POOL] | prefix pin|unpin|forget NAME [POOL] */
static int cmd_prefix(struct kvc *c, int argc, char **argv)
{
	const char *pool = argc > 2 ? argv[2] : NULL;
	uint32_t handle;
	int n, op;

	if (argc == 1 || (argc == 2 && strcmp(argv[1], "drop") && strcmp(argv[1], "show")))
		return cmd_text(c, "prefix", KVMEM_STATS_PREFIX, argc > 1 ? argv[1] : NULL);
	if (!strcmp(argv[1], "show"))
		return cmd_text(c, "prefix", KVMEM_STATS_PREFIX, pool);
	if (!strcmp(argv[1], "drop")) {
		n = pool_handle(c, pool, &handle);
		n = n ?: kvc_drop_caches(c, handle, KVMEM_DROP_PREFIX);
		if (n < 0)
			return refused("prefix drop", n);
		printf("%d cached blocks dropped\n", n);
		return 0;
	}
	op = prefix_op(argv[1]);
	pool = argc > 3 ? argv[3] : NULL;
	n = pool_handle(c, pool, &handle);
	n = n ?: kvc_prefix_name_op(c, handle, argv[2], (uint32_t)op);
	if (n < 0)
		return refused(argv[2], n);
	printf("prefix %s: %s\n", argv[2], op == KVMEM_PREFIX_UNPIN ? "unpinned" :
	       op == KVMEM_PREFIX_REPIN ? "pinned" : "forgotten");
	return 0;
}

/* prefix's arguments: none, [show] POOL, drop [POOL], or OP NAME [POOL]. */
static int prefix_valid(int argc, char **argv)
{
	if (argc == 1)
		return 1;
	if (!strcmp(argv[1], "drop") || !strcmp(argv[1], "show"))
		return argc <= 3;
	if (prefix_op(argv[1]))
		return argc == 3 || argc == 4;
	return argc == 2;
}

/* ---- estimate: sizing without a daemon -------------------------------- */

/**
 * struct estimate - what `kvmemctl estimate' was asked
 * @m:            the model: a preset, a config.json, or the geometry given
 * @source:       0 geometry given, 'm' a preset (--model), 'h' a
 *                config.json (--hf-config)
 * @path:         the config.json
 * @block_tokens: tokens per block
 * @dtype:        KV_SIZE_*, or -1 for a table of every type
 * @tp:           tensor-parallel GPUs
 * @memory:       bytes of KV memory (each GPU's), 0 when not given
 * @context:      tokens per sequence, 0 when not given
 * @batch:        sequences, 0 when not given
 */
struct estimate {
	struct kv_model m;
	int source;
	const char *path;
	uint32_t block_tokens;
	int dtype;
	uint32_t tp;
	uint64_t memory;
	uint64_t context;
	uint64_t batch;
};

static int estimate_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int estimate_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "kvmemctl: estimate: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: kvmemctl estimate --list | {--model NAME | --hf-config PATH |\n"
		"         --layers N --kv-heads N --head-dim N} [--block-tokens N] [--kv-dtype T]\n"
		"         [--tp N] [--memory SIZE] [--context N] [--batch N]\n"
		"  T: fp16, bf16, fp32, int8, fp8 or int4; SIZE: a number with K, M, G or T\n");
	return EXIT_USAGE;
}

/*
 * @bytes in the largest binary unit that writes it exactly with at most
 * two decimals ("2 MiB", "12.5 MiB", "1026 KiB", "65664 B"), else to two
 * decimals in the largest unit it reaches ("0.33 B").
 */
static const char *size_str(double bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	char num[32], *end;
	double v;
	int u;

	for (u = 4; u >= 0; u--) {
		v = bytes / (double)(1ull << (10 * u));
		if (v >= 1 && v * 100 == (double)(uint64_t)(v * 100))
			break;
	}
	if (u < 0)
		for (u = 0, v = bytes; v >= 1024 && u < 4; u++)
			v /= 1024;
	snprintf(num, sizeof(num), "%.2f", v);
	end = num + strlen(num);
	while (end[-1] == '0')
		*--end = '\0';
	if (end[-1] == '.')
		end[-1] = '\0';
	snprintf(buf, len, "%s %s", num, units[u]);
	return buf;
}

/* "131072 bytes (128 KiB)", "65664 bytes", "37.33 bytes". */
static void bytes_print(double bytes)
{
	char s[32];

	if (bytes == (double)(uint64_t)bytes)
		printf("%llu bytes", (unsigned long long)bytes);
	else
		printf("%.2f bytes", bytes);
	if (!strstr(size_str(bytes, s, sizeof(s)), " B"))
		printf(" (%s)", s);
}

/* One numeric option of estimate, within [@min, @max]. */
static int estimate_number(const char *opt, const char *arg, uint64_t min, uint64_t max,
			   bool size, uint64_t *out)
{
	int err = size ? kv_parse_size(arg, min, max, out) : kv_parse_uint(arg, min, max, out);

	if (!err)
		return 0;
	fprintf(stderr, "kvmemctl: estimate: %s %s: %s (%llu..%llu)\n", opt, arg,
		err == -ERANGE ? "out of range" : size ? "not a size" : "not a number",
		(unsigned long long)min, (unsigned long long)max);
	return EXIT_USAGE;
}

static int estimate_model(struct estimate *e, int opt, const char *arg)
{
	const struct kv_model *m;
	char err[KV_MODEL_ERR_MAX + PATH_MAX];

	if (e->source)
		return estimate_usage("give one of --model and --hf-config");
	if (opt == 'm') {
		m = kv_model_find(arg);
		if (!m)
			return estimate_usage("unknown model '%s' (kvmemctl estimate --list shows the presets)",
					      arg);
		e->m = *m;
	} else if (kv_model_load_hf(arg, &e->m, err, sizeof(err))) {
		fprintf(stderr, "kvmemctl: estimate: %s\n", err);
		return EXIT_REFUSED;
	}
	e->source = opt;
	e->path = arg;
	return 0;
}

static const struct option estimate_opts[] = {
	{ "list", no_argument, NULL, 'L' },
	{ "model", required_argument, NULL, 'm' },
	{ "hf-config", required_argument, NULL, 'h' },
	{ "layers", required_argument, NULL, 'l' },
	{ "kv-heads", required_argument, NULL, 'k' },
	{ "head-dim", required_argument, NULL, 'd' },
	{ "block-tokens", required_argument, NULL, 'b' },
	{ "kv-dtype", required_argument, NULL, 't' },
	{ "tp", required_argument, NULL, 'p' },
	{ "memory", required_argument, NULL, 'M' },
	{ "context", required_argument, NULL, 'c' },
	{ "batch", required_argument, NULL, 'B' },
	{ NULL, 0, NULL, 0 }
};

/* One option of estimate into @e; @geom counts the geometry options. */
static int estimate_opt(struct estimate *e, int opt, const char *arg, int *geom)
{
	uint64_t v = 0;
	int ret = 0;

	switch (opt) {
	case 'm':
	case 'h':
		return estimate_model(e, opt, arg);
	case 'l':
	case 'k':
	case 'd':
		ret = estimate_number(opt == 'l' ? "--layers" : opt == 'k' ? "--kv-heads" :
				      "--head-dim", arg, 1, 1024, false, &v);
		*(opt == 'l' ? &e->m.layers : opt == 'k' ? &e->m.kv_heads : &e->m.head_dim) =
			(uint32_t)v;
		*geom += !ret;
		return ret;
	case 'b':
		ret = estimate_number("--block-tokens", arg, 1, KV_MAX_BLOCK_TOKENS, false, &v);
		e->block_tokens = (uint32_t)v;
		return ret;
	case 't':
		e->dtype = kv_size_dtype_find(arg);
		return e->dtype < 0 ? estimate_usage("--kv-dtype %s: not fp16, bf16, fp32, int8, fp8 or int4",
						     arg) : 0;
	case 'p':
		ret = estimate_number("--tp", arg, 1, KV_SIZE_TP_MAX, false, &v);
		e->tp = (uint32_t)v;
		return ret;
	case 'M':
		return estimate_number("--memory", arg, 1, UINT64_MAX, true, &e->memory);
	case 'c':
		return estimate_number("--context", arg, 1, UINT32_MAX, false, &e->context);
	case 'B':
		return estimate_number("--batch", arg, 1, UINT32_MAX, false, &e->batch);
	default:
		return estimate_usage("unknown option");
	}
}

static int estimate_parse(struct estimate *e, int argc, char **argv, bool *list)
{
	int opt, ret, geom = 0;

	memset(e, 0, sizeof(*e));
	e->block_tokens = 16;
	e->dtype = -1;
	e->tp = 1;
	*list = false;
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+", estimate_opts, NULL)) != -1) {
		if (opt == 'L') {
			*list = true;
			continue;
		}
		if (opt == '?')
			return estimate_usage("unknown option or missing value: %s", argv[optind - 1]);
		ret = estimate_opt(e, opt, optarg, &geom);
		if (ret)
			return ret;
	}
	if (optind < argc)
		return estimate_usage("unexpected '%s'", argv[optind]);
	if (*list)
		return 0;
	if (e->source && geom)
		return estimate_usage("--layers, --kv-heads and --head-dim go without --model or --hf-config");
	if (!e->source && geom != 3)
		return estimate_usage("give --model, --hf-config, or --layers, --kv-heads and --head-dim");
	return 0;
}

static void estimate_list(uint32_t block_tokens)
{
	struct kv_size_params p = { .block_tokens = block_tokens, .tp = 1 };
	const struct kv_model *m;
	char a[32], b[32], note[64], bt[32];
	struct kv_size s;
	size_t i;

	snprintf(bt, sizeof(bt), "block of %u", block_tokens);
	printf("%-16s %6s %5s %8s %8s %5s %7s %10s %12s  %s\n", "model", "layers", "heads",
	       "kv_heads", "head_dim", "dtype", "context", "per token", bt, "notes");
	for (i = 0; (m = kv_model_at(i)); i++) {
		p.layers = m->layers;
		p.kv_heads = m->kv_heads;
		p.head_dim = m->head_dim;
		p.dtype = (uint32_t)kv_size_dtype_of(m->dtype);
		kv_size_compute(&p, &s, NULL, 0);
		note[0] = '\0';
		if (m->window && m->window_layers == m->layers)
			snprintf(note, sizeof(note), "sliding window %u", m->window);
		else if (m->window)
			snprintf(note, sizeof(note), "sliding window %u on %u of the layers",
				 m->window, m->window_layers);
		else if (m->kv_heads == 1)
			snprintf(note, sizeof(note), "multi-query");
		printf("%-16s %6u %5u %8u %8u %5s %7u %10s %12s  %s\n", m->name, m->layers,
		       m->attn_heads, m->kv_heads, m->head_dim, kv_dtype_name(m->dtype),
		       m->max_context, size_str((double)s.block_bytes / block_tokens, a, sizeof(a)),
		       size_str((double)s.block_bytes, b, sizeof(b)), note);
	}
}

static void estimate_header(const struct estimate *e)
{
	const struct kv_model *m = &e->m;
	char ctx[32] = "";

	if (m->max_context)
		snprintf(ctx, sizeof(ctx), ", up to %u tokens", m->max_context);
	if (e->source == 'm')
		printf("model:         %s (%s)\n", m->name, m->hf_id);
	else if (e->source == 'h')
		printf("hf_config:     %s%s%s%s\n", e->path, m->name[0] ? " (" : "", m->name,
		       m->name[0] ? ")" : "");
	if (e->source)
		printf("               %u layers, %u query heads, %u kv heads, head_dim %u, %s%s\n",
		       m->layers, m->attn_heads, m->kv_heads, m->head_dim,
		       m->dtype ? kv_dtype_name(m->dtype) : "dtype unknown", ctx);
	else
		printf("geometry:      %u layers, %u kv heads, head_dim %u\n", m->layers,
		       m->kv_heads, m->head_dim);
	printf("block_tokens:  %u\n", e->block_tokens);
}

/* The tensor-parallel split, from the sizes of the first dtype. */
static void estimate_tp(const struct estimate *e, const struct kv_size *s)
{
	if (e->tp == 1)
		return;
	if (s->replicas > 1)
		printf("tp:            %u GPUs, 1 kv head on each: with more GPUs than the %u kv heads, "
		       "each head is replicated on %u GPUs\n", e->tp, e->m.kv_heads, s->replicas);
	else
		printf("tp:            %u GPUs, %u of the %u kv heads on each\n", e->tp,
		       s->heads_per_gpu, e->m.kv_heads);
	printf("               the sizes are per GPU; --memory is each GPU's\n");
}

static void estimate_notes(const struct estimate *e)
{
	const struct kv_model *m = &e->m;

	if (m->window && m->window_layers == m->layers)
		printf("note: every layer attends within a %u-token sliding window; a kvmem block "
		       "holds every layer, so the sizes count every token of the context\n",
		       m->window);
	else if (m->window)
		printf("note: %u of the %u layers attend within a %u-token sliding window; a kvmem "
		       "block holds every layer, so the sizes count every token for all of them\n",
		       m->window_layers, m->layers, m->window);
	if (m->max_context && e->context > m->max_context)
		printf("note: --context %llu is longer than the model's %u tokens "
		       "(max_position_embeddings)\n", (unsigned long long)e->context,
		       m->max_context);
	if (e->dtype >= 0 && !kv_dtype_quantized(kv_size_dtypes[e->dtype].pool_dtype))
		return;
	printf("note: int8 and fp8 take a byte a value and an fp32 scale per block, layer, "
	       "K or V and kv head; int4 half a byte a value and an fp16 scale per %u "
	       "values (pool.NAME.dtype = int8, fp8 or int4).\n", KV_SIZE_INT4_GROUP);
	if (m->head_dim % KV_INT4_GROUP)
		printf("note: head_dim %u is not a multiple of %u: a kvmem pool cannot hold this "
		       "KV in int8, fp8 or int4; those sizes are for comparison only\n",
		       m->head_dim, KV_INT4_GROUP);
}

/* The sizes of one dtype, one line per figure. */
static void estimate_one(const struct estimate *e, const struct kv_size *s)
{
	char a[32];
	struct kv_fit f;

	printf("kv dtype:      %s\n", kv_size_dtypes[e->dtype].name);
	printf("per token:     ");
	bytes_print((double)s->block_bytes / e->block_tokens);
	if (e->tp > 1) {
		printf(" per GPU, ");
		bytes_print((double)s->block_bytes * e->tp / e->block_tokens);
		printf(" over the %u GPUs", e->tp);
	}
	printf("\nper block:     ");
	bytes_print((double)s->block_bytes);
	if (s->scale_bytes)
		printf(", %llu of them scales", (unsigned long long)s->scale_bytes);
	printf("\nframe:         ");
	bytes_print((double)s->frame_bytes);
	printf(", the block rounded up to 4 KiB\n");
	if (!e->memory)
		return;
	kv_size_fit(s, e->block_tokens, e->memory, e->context, e->batch, &f);
	printf("memory:        %s%s holds %llu frames, %llu tokens\n",
	       size_str((double)e->memory, a, sizeof(a)), e->tp > 1 ? " per GPU" : "",
	       (unsigned long long)f.frames, (unsigned long long)f.tokens);
	if (e->context)
		printf("batch:         %llu sequences of %llu tokens (%llu blocks each)\n",
		       (unsigned long long)f.batch, (unsigned long long)e->context,
		       (unsigned long long)f.blocks_per_seq);
	if (e->batch)
		printf("context:       %llu tokens for each of %llu sequences\n",
		       (unsigned long long)f.context, (unsigned long long)e->batch);
}

/* Every dtype, one line each; the model's marked. */
static void estimate_table(const struct estimate *e, const struct kv_size *s)
{
	char h1[32] = "", h2[32] = "", a[32], b[32], c[32];
	struct kv_fit f;
	int i;

	if (e->context)
		snprintf(h1, sizeof(h1), "batch@%llu", (unsigned long long)e->context);
	if (e->batch)
		snprintf(h2, sizeof(h2), "context@%llu", (unsigned long long)e->batch);
	printf("\n%-8s %12s %12s %12s", "kv dtype", "per token", "per block", "frame");
	if (e->memory)
		printf(" %10s %11s", "frames", "tokens");
	if (e->memory && e->context)
		printf(" %12s", h1);
	if (e->memory && e->batch)
		printf(" %12s", h2);
	printf("\n");
	for (i = 0; i < KV_SIZE_NR_DTYPES; i++) {
		printf("%-8s %12s %12s %12s", kv_size_dtypes[i].name,
		       size_str((double)s[i].block_bytes / e->block_tokens, a, sizeof(a)),
		       size_str((double)s[i].block_bytes, b, sizeof(b)),
		       size_str((double)s[i].frame_bytes, c, sizeof(c)));
		if (e->memory) {
			kv_size_fit(&s[i], e->block_tokens, e->memory, e->context, e->batch, &f);
			printf(" %10llu %11llu", (unsigned long long)f.frames,
			       (unsigned long long)f.tokens);
			if (e->context)
				printf(" %12llu", (unsigned long long)f.batch);
			if (e->batch)
				printf(" %12llu", (unsigned long long)f.context);
		}
		printf("%s\n", e->m.dtype && kv_size_dtypes[i].pool_dtype == e->m.dtype ?
		       "   (the model's)" : "");
	}
}

/*
 * kvmemctl estimate: the KV bytes per token, block and frame of a model,
 * and what a memory holds; no daemon needed.
 */
static int cmd_estimate(int argc, char **argv)
{
	struct kv_size s[KV_SIZE_NR_DTYPES];
	struct kv_size_params p;
	struct estimate e;
	char err[256], a[32];
	bool list;
	int i, ret;

	ret = estimate_parse(&e, argc, argv, &list);
	if (ret || list) {
		if (!ret)
			estimate_list(e.block_tokens);
		return ret;
	}
	p = (struct kv_size_params){
		.layers = e.m.layers, .kv_heads = e.m.kv_heads, .head_dim = e.m.head_dim,
		.block_tokens = e.block_tokens, .tp = e.tp,
	};
	for (i = 0; i < KV_SIZE_NR_DTYPES; i++) {
		p.dtype = (uint32_t)i;
		if (kv_size_compute(&p, &s[i], err, sizeof(err)))
			return estimate_usage("%s", err);
	}
	estimate_header(&e);
	estimate_tp(&e, &s[0]);
	if (e.memory && e.dtype < 0)
		printf("memory:        %s%s\n", size_str((double)e.memory, a, sizeof(a)),
		       e.tp > 1 ? " per GPU" : "");
	if (e.dtype >= 0)
		estimate_one(&e, &s[e.dtype]);
	else
		estimate_table(&e, s);
	estimate_notes(&e);
	return 0;
}

/* ---- advise: block size from the sequences a pool saw ------------------ */

/* One pool's section of the SEQLEN text: the advice, or why there is none. */
static int advise_pool(const char *name, const char *text, size_t len, double max_waste)
{
	unsigned long long bt = 0, tb = 0;
	struct kv_seqlen_hist h;
	struct kv_advice a;
	const char *p;
	int err;

	p = memmem(text, len, "BlockTokens:", 12);
	if (p)
		sscanf(p, "BlockTokens: %llu", &bt);
	p = memmem(text, len, "TokenBytes:", 11);
	if (p)
		sscanf(p, "TokenBytes: %llu", &tb);
	if (!bt || !tb || kv_seqlen_parse(text, len, &h)) {
		fprintf(stderr, "kvmemctl: advise: pool %s: the daemon's reply is malformed\n", name);
		return EXIT_REFUSED;
	}
	err = kv_advise(&h, tb, max_waste, &a);
	if (err == -ENODATA) {
		printf("Pool %s: no sequence with tokens has ended yet, nothing to advise from "
		       "(a sequence counts once it is freed, or its client goes)\n", name);
		return 0;
	}
	kv_advise_print(&h, &a, (uint32_t)bt, name, stdout);
	return 0;
}

/*
 * The arguments of advise [--max-waste PCT] [POOL], checked before the
 * daemon is asked: -EINVAL for a missing or bad PCT, an unknown option or
 * a second pool.
 */
static int advise_args(int argc, char **argv, const char **pool, uint64_t *pct)
{
	int i;

	*pool = NULL;
	*pct = KV_ADVISE_WASTE_PCT;
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--max-waste")) {
			if (i + 1 == argc || kv_parse_uint(argv[++i], 1, 100, pct))
				return -EINVAL;
		} else if (!*pool && argv[i][0] != '-') {
			*pool = argv[i];
		} else {
			return -EINVAL;
		}
	}
	return 0;
}

/* advise [--max-waste PCT] [POOL] */
static int cmd_advise(struct kvc *c, int argc, char **argv)
{
	static char buf[KVMEM_MSG_MAX];
	const char *pool, *p, *end, *next;
	char name[KVMEM_NAME_MAX];
	uint32_t handle;
	uint64_t pct;
	int n, ret = 0;

	if (advise_args(argc, argv, &pool, &pct))
		return usage(stderr);
	n = pool_handle(c, pool, &handle);
	if (n)
		return refused(pool, n);
	n = kvc_stats(c, KVMEM_STATS_SEQLEN, handle, buf, sizeof(buf));
	if (n == -EINVAL)
		fprintf(stderr, "kvmemctl: advise: the daemon keeps no sequence lengths "
			"(a kvmemd older than this kvmemctl)\n");
	if (n < 0)
		return refused("advise", n);
	end = buf + n;
	for (p = strstr(buf, "Pool: "); p && !ret; p = next) {
		next = strstr(p + 6, "\nPool: ");
		next = next ? next + 1 : NULL;
		if (sscanf(p, "Pool: %31s", name) != 1)
			break;
		ret = advise_pool(name, p, (size_t)((next ? next : end) - p),
				  (double)pct / 100.0);
		if (next && !ret)
			printf("\n");
	}
	return ret;
}

/* Whether argv names a command kvmemctl knows, with the right arguments. */
static int valid(int argc, char **argv)
{
	const char *cmd = argv[0], *pool;
	uint64_t pct;

	if (!strcmp(cmd, "prefix"))
		return prefix_valid(argc, argv);
	if (!strcmp(cmd, "advise"))
		return !advise_args(argc, argv, &pool, &pct);
	if (argc > 2)
		return 0;
	if (!strcmp(cmd, "meminfo") || !strcmp(cmd, "vmstat") || !strcmp(cmd, "drop-caches") ||
	    !strcmp(cmd, "checkpoint") || !strcmp(cmd, "topology"))
		return 1;
	if (!strcmp(cmd, "pools") || !strcmp(cmd, "clients"))
		return argc == 1;
	return !strcmp(cmd, "sysctl") && argc == 2;
}

static int run(struct kvc *c, int argc, char **argv)
{
	const char *cmd = argv[0], *arg = argc > 1 ? argv[1] : NULL;

	if (!strcmp(cmd, "meminfo"))
		return cmd_text(c, cmd, KVMEM_STATS_MEMINFO, arg);
	if (!strcmp(cmd, "vmstat"))
		return cmd_text(c, cmd, KVMEM_STATS_VMSTAT, arg);
	if (!strcmp(cmd, "pools"))
		return cmd_text(c, cmd, KVMEM_STATS_ZONEINFO, NULL);
	if (!strcmp(cmd, "topology"))
		return cmd_text(c, cmd, KVMEM_STATS_TOPOLOGY, arg);
	if (!strcmp(cmd, "clients"))
		return cmd_text(c, cmd, 0, NULL);
	if (!strcmp(cmd, "sysctl"))
		return cmd_sysctl(c, argv[1]);
	if (!strcmp(cmd, "prefix"))
		return cmd_prefix(c, argc, argv);
	if (!strcmp(cmd, "checkpoint"))
		return cmd_checkpoint(c, arg);
	if (!strcmp(cmd, "advise"))
		return cmd_advise(c, argc, argv);
	return cmd_drop(c, arg);
}

int main(int argc, char **argv)
{
	const char *sock = NULL;
	struct kvc *c;
	int opt, err, ret;

	while ((opt = getopt(argc, argv, "+s:h")) != -1) {
		switch (opt) {
		case 's':
			sock = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			return usage(stderr);
		}
	}
	if (optind < argc && !strcmp(argv[optind], "estimate"))
		return cmd_estimate(argc - optind, argv + optind);
	if (optind >= argc || !valid(argc - optind, argv + optind))
		return usage(stderr);
	err = kvc_connect(sock, &c);
	if (err) {
		fprintf(stderr, "kvmemctl: cannot reach kvmemd at %s: %s\n",
			sock ? sock : getenv(KVMEM_SOCKET_ENV) ? getenv(KVMEM_SOCKET_ENV) :
			KVMEM_DEFAULT_SOCKET, strerror(-err));
		return EXIT_CONNECT;
	}
	ret = run(c, argc - optind, argv + optind);
	kvc_close(c);
	return ret;
}
