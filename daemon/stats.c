// SPDX-License-Identifier: MIT
/*
 * Text statistics for STATS and CLIENTS: meminfo (per pool, plus the
 * daemon's metadata allocator), vmstat (per pool) and zoneinfo (per pool:
 * geometry, the result of kv_pool_check(), and per tier frames, lists and
 * watermarks), the prefix cache, the topology (topology.c), the lengths
 * of the sequences each pool saw end (for `kvmemctl advise'), clients.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#ifdef KV_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif
#include "kvmemd.h"

static void meta_meminfo(FILE *f)
{
#ifdef KV_HAVE_JEMALLOC
	size_t allocated = 0, resident = 0, metadata = 0, len = sizeof(size_t);
	uint64_t epoch = 1;
	size_t elen = sizeof(epoch);

	mallctl("epoch", &epoch, &elen, &epoch, elen);
	mallctl("stats.allocated", &allocated, &len, NULL, 0);
	mallctl("stats.resident", &resident, &len, NULL, 0);
	mallctl("stats.metadata", &metadata, &len, NULL, 0);
	fprintf(f, "%-18s %12zu kB\n", "MetaAllocated:", allocated >> 10);
	fprintf(f, "%-18s %12zu kB\n", "MetaResident:", resident >> 10);
	fprintf(f, "%-18s %12zu kB\n", "MetaMetadata:", metadata >> 10);
#else
	fprintf(f, "%-18s %12s\n", "MetaAllocator:", "libc");
#endif
}

static void zoneinfo(struct kvmemd_pool *p, FILE *f)
{
	const struct kv_geometry *g = kv_pool_geometry(p->pool);
	static const char *const tiers[] = { "device", "host", "swap" };
	struct kv_meminfo mi;
	int t;

	kv_pool_meminfo(p->pool, &mi);
	fprintf(f, "Pool %s\n  geometry   layers %u kv_heads %u head_dim %u block_tokens %u %s\n",
		p->name, g->layers, g->kv_heads, g->head_dim, g->block_tokens,
		kv_dtype_name(g->dtype));
	fprintf(f, "  block      %llu bytes, frame %llu bytes\n",
		(unsigned long long)mi.block_bytes, (unsigned long long)mi.frame_bytes);
	fprintf(f, "  sequences  %u\n  blocks     %u\n", mi.sequences, mi.blocks);
	t = kv_pool_check(p->pool);
	fprintf(f, "  check      %s\n", t ? "BROKEN (see the daemon's log)" : "ok");
	for (t = 0; t < KV_NR_TIERS; t++) {
		const struct kv_tier_info *ti = &mi.tier[t];

		if (t == KV_TIER_SWAP && !ti->total)
			continue;	/* no swap area */
		fprintf(f, "  tier %s (%s)\n", tiers[t], ti->backend);
		fprintf(f, "    total    %u\n    free     %u\n    min      %u\n    low      %u\n"
			"    high     %u\n    active   %u\n    inactive %u\n    pinned   %u\n"
			"    locked   %u\n", ti->total, ti->free, ti->wmark[KV_WMARK_MIN],
			ti->wmark[KV_WMARK_LOW], ti->wmark[KV_WMARK_HIGH], ti->active,
			ti->inactive, ti->pinned, ti->locked);
	}
}

/*
 * KVMEM_STATS_SEQLEN: the pool's block size and KV bytes per token, then
 * its histogram of sequence lengths (kv_seqlen_print()).
 */
static void seqlen(struct kvmemd_pool *p, FILE *f)
{
	const struct kv_geometry *g = kv_pool_geometry(p->pool);

	fprintf(f, "%-18s %12u\n", "BlockTokens:", g->block_tokens);
	fprintf(f, "%-18s %12llu\n", "TokenBytes:",
		(unsigned long long)(kv_block_bytes(g) / g->block_tokens));
	kv_seqlen_print(&p->seqlen, f);
}

static int finish(FILE *f, size_t len)
{
	long n;

	fflush(f);
	n = ftell(f);
	fclose(f);
	if (n < 0 || (size_t)n >= len - 1)
		return -ENOBUFS;
	return (int)n;
}

/**
 * kvmemd_stats_text() - format statistics into @buf, NUL-terminated
 * @d:    daemon
 * @what: KVMEM_STATS_*
 * @pool: pool handle, 0 for all
 * @tenant: KVMEM_STATS_PREFIX: only this tenant's rows (KV_TENANT_ANY: all)
 * @buf:  output
 * @len:  its size
 *
 * Return: the text's length, -EINVAL for an unknown @what, -ENOBUFS.
 */
int kvmemd_stats_text(struct kvmemd *d, u32 what, u32 pool, u32 tenant, char *buf,
		      size_t len)
{
	FILE *f;
	u32 i;

	if (what < KVMEM_STATS_MEMINFO || what > KVMEM_STATS_SEQLEN)
		return -EINVAL;
	f = fmemopen(buf, len, "w");
	if (!f)
		return -ENOMEM;
	if (what == KVMEM_STATS_TOPOLOGY) {
		kvmemd_topology_text(d, pool, f);
		return finish(f, len);
	}
	if (what == KVMEM_STATS_MEMINFO && !pool)
		meta_meminfo(f);
	for (i = 0; i < d->nr_pools; i++) {
		struct kvmemd_pool *p = &d->pools[i];

		if (pool && pool != p->handle)
			continue;
		if (what == KVMEM_STATS_ZONEINFO) {
			zoneinfo(p, f);
			continue;
		}
		fprintf(f, "Pool: %s\n", p->name);
		if (what == KVMEM_STATS_MEMINFO)
			kv_pool_print_meminfo(p->pool, f);
		else if (what == KVMEM_STATS_PREFIX)
			kv_prefix_print(p->pool, f, tenant, kvmemd_tenant_name, d);
		else if (what == KVMEM_STATS_SEQLEN)
			seqlen(p, f);
		else
			kv_pool_print_vmstat(p->pool, f);
	}
	return finish(f, len);
}

/**
 * kvmemd_clients_text() - one line per client, with a header
 * @d:   daemon
 * @buf: output
 * @len: its size
 *
 * Return: the text's length or -ENOBUFS.
 */
int kvmemd_clients_text(struct kvmemd *d, char *buf, size_t len)
{
	struct kvmemd_client *c;
	FILE *f = fmemopen(buf, len, "w");

	if (!f)
		return -ENOMEM;
	fprintf(f, "%8s %8s %8s %6s %10s %12s\n", "id", "pid", "uid", "admin", "sequences",
		"requests");
	list_for_each_entry(c, &d->clients, node)
		fprintf(f, "%8llu %8d %8u %6s %10u %12llu\n", (unsigned long long)c->id,
			(int)c->pid, c->uid, c->admin ? "yes" : "no", c->seqs.count,
			(unsigned long long)c->nr_reqs);
	return finish(f, len);
}
