// SPDX-License-Identifier: MIT
/*
 * Counters and snapshots, as the kernel's mm/vmstat.c: monotonic event
 * counters (vmstat) read without the pool lock, and a meminfo snapshot of
 * every tier taken under it; the prefix cache's report.
 */
#include "internal.h"

static const char *const vmstat_names[KV_NR_VM_EVENTS] = {
	[KV_PGALLOC_DEVICE] = "pgalloc_device",
	[KV_PGALLOC_HOST] = "pgalloc_host",
	[KV_PGFREE_DEVICE] = "pgfree_device",
	[KV_PGFREE_HOST] = "pgfree_host",
	[KV_PGDEMOTE] = "pgdemote",
	[KV_PGPROMOTE] = "pgpromote",
	[KV_PGACTIVATE] = "pgactivate",
	[KV_PGDEACTIVATE] = "pgdeactivate",
	[KV_PGROTATED] = "pgrotated",
	[KV_PGSCAN_KSWAPD] = "pgscan_kswapd",
	[KV_PGSCAN_DIRECT] = "pgscan_direct",
	[KV_PGSTEAL_KSWAPD] = "pgsteal_kswapd",
	[KV_PGSTEAL_DIRECT] = "pgsteal_direct",
	[KV_KSWAPD_WAKE] = "kswapd_wake",
	[KV_ALLOCSTALL] = "allocstall",
	[KV_ALLOC_FAIL] = "alloc_fail",
	[KV_COW_COPY] = "cow_copy",
	[KV_SEQ_CREATE] = "seq_create",
	[KV_SEQ_FORK] = "seq_fork",
	[KV_SEQ_FREE] = "seq_free",
	[KV_SEQ_ACTIVATE] = "seq_activate",
	[KV_SEQ_DEACTIVATE] = "seq_deactivate",
	[KV_COPY_FAIL] = "copy_fail",
	[KV_LOCKED_WAIT] = "locked_wait",
	[KV_PREFIX_QUERY_TOKENS] = "prefix_query_tokens",
	[KV_PREFIX_HIT_TOKENS_DEVICE] = "prefix_hit_tokens_device",
	[KV_PREFIX_HIT_TOKENS_HOST] = "prefix_hit_tokens_host",
	[KV_PREFIX_INSERT] = "prefix_insert",
	[KV_PREFIX_EVICT] = "prefix_evict",
	[KV_PGALLOC_SWAP] = "pgalloc_swap",
	[KV_PGFREE_SWAP] = "pgfree_swap",
	[KV_PSWPIN] = "pswpin",
	[KV_PSWPOUT] = "pswpout",
	[KV_SWAP_FAIL] = "swap_fail",
	[KV_PREFIX_HIT_TOKENS_SWAP] = "prefix_hit_tokens_swap",
	[KV_SWAPCACHE_HIT] = "swapcache_hit",
	[KV_SWAPCACHE_DROP] = "swapcache_drop",
	[KV_PREFIX_LOST] = "prefix_lost",
};

static const char *const tier_names[KV_NR_TIERS] = {
	[KV_TIER_DEVICE] = "Device",
	[KV_TIER_HOST] = "Host",
	[KV_TIER_SWAP] = "Swap",
};

/** kv_vmstat_name() - the vmstat name of an event, NULL if out of range */
const char *kv_vmstat_name(enum kv_vm_event ev)
{
	return (unsigned int)ev < KV_NR_VM_EVENTS ? vmstat_names[ev] : NULL;
}

/** kv_vmstat_read() - read one event counter without taking the lock */
u64 kv_vmstat_read(struct kv_pool *pool, enum kv_vm_event ev)
{
	if ((unsigned int)ev >= KV_NR_VM_EVENTS)
		return 0;
	return __atomic_load_n(&pool->events[ev], __ATOMIC_RELAXED);
}

/**
 * kv_pool_meminfo() - snapshot of a pool's memory
 * @pool: pool
 * @mi:   filled in
 */
void kv_pool_meminfo(struct kv_pool *pool, struct kv_meminfo *mi)
{
	struct kv_tier_info *ti;
	struct kv_tier *t;
	int i, w;

	kv_pool_lock(pool);
	mi->frame_bytes = pool->frame_bytes;
	mi->block_bytes = kv_block_bytes(&pool->geom);
	mi->blocks = pool->nr_blocks - pool->nr_free_blocks;
	mi->sequences = pool->nr_seqs;
	mi->swapcache = pool->nr_swapcache;
	mi->bounce = pool->bounce.nr;
	for (i = 0; i < KV_NR_TIERS; i++) {
		t = &pool->tier[i];
		ti = &mi->tier[i];
		ti->backend = t->desc ? t->desc : t->ops->name;
		ti->total = t->fa.nr_total;
		ti->free = t->fa.nr_free;
		for (w = 0; w < KV_NR_WMARKS; w++)
			ti->wmark[w] = t->wmark[w];
		ti->active = t->nr_lru[KV_LRU_ACTIVE];
		ti->inactive = t->nr_lru[KV_LRU_INACTIVE];
		ti->pinned = t->nr_pinned;
		ti->locked = t->nr_locked;
		ti->mlocked = t->mlocked;
		ti->dma = t->dma;
		ti->cached = pool->prefix.nr_cached[i];
		ti->evictable = pool->prefix.heap_n[i];
		ti->numa_node = t->numa_node;
		ti->numa_err = t->numa_err;
		ti->kvswapd_bound = t->kvswapd.running && t->kvswapd.bound;
	}
	kv_pool_unlock(pool);
}

static void print_kb(FILE *f, const char *tier, const char *what, u64 frames, u64 fb)
{
	char name[32];

	snprintf(name, sizeof(name), "%s%s:", tier, what);
	fprintf(f, "%-18s %12llu kB\n", name, (unsigned long long)(frames * fb / 1024));
}

/**
 * kv_pool_print_meminfo() - print a meminfo snapshot, /proc/meminfo style
 * @pool: pool
 * @f:    stream
 *
 * Lines are `Name: value kB` (sizes) or `Name: value` (counts).
 */
void kv_pool_print_meminfo(struct kv_pool *pool, FILE *f)
{
	struct kv_meminfo mi;
	const struct kv_tier_info *ti;
	char name[32];
	u64 fb;
	int i;

	kv_pool_meminfo(pool, &mi);
	fb = mi.frame_bytes;
	fprintf(f, "%-18s %12llu\n", "FrameBytes:", (unsigned long long)fb);
	fprintf(f, "%-18s %12u\n", "Blocks:", mi.blocks);
	fprintf(f, "%-18s %12u\n", "CachedBlocks:", mi.tier[KV_TIER_DEVICE].cached +
		mi.tier[KV_TIER_HOST].cached + mi.tier[KV_TIER_SWAP].cached);
	fprintf(f, "%-18s %12u\n", "Sequences:", mi.sequences);
	if (mi.tier[KV_TIER_SWAP].total)
		fprintf(f, "%-18s %12u\n", "SwapCacheBlocks:", mi.swapcache);
	if (mi.bounce)
		print_kb(f, "Host", "Bounce", mi.bounce, fb);
	for (i = 0; i < KV_NR_TIERS; i++) {
		ti = &mi.tier[i];
		if (i == KV_TIER_SWAP && !ti->total)
			continue;	/* no swap area */
		snprintf(name, sizeof(name), "%sBackend:", tier_names[i]);
		fprintf(f, "%-18s %12s\n", name, ti->backend);
		print_kb(f, tier_names[i], "Total", ti->total, fb);
		print_kb(f, tier_names[i], "Free", ti->free, fb);
		print_kb(f, tier_names[i], "Active", ti->active, fb);
		print_kb(f, tier_names[i], "Inactive", ti->inactive, fb);
		print_kb(f, tier_names[i], "Pinned", ti->pinned, fb);
		print_kb(f, tier_names[i], "Locked", ti->locked, fb);
		print_kb(f, tier_names[i], "Cached", ti->cached, fb);
		print_kb(f, tier_names[i], "Evictable", ti->evictable, fb);
		print_kb(f, tier_names[i], "Min", ti->wmark[KV_WMARK_MIN], fb);
		print_kb(f, tier_names[i], "Low", ti->wmark[KV_WMARK_LOW], fb);
		print_kb(f, tier_names[i], "High", ti->wmark[KV_WMARK_HIGH], fb);
	}
}

/**
 * kv_pool_print_vmstat() - print every event counter, `name value` a line
 * @pool: pool
 * @f:    stream
 */
void kv_pool_print_vmstat(struct kv_pool *pool, FILE *f)
{
	int i;

	for (i = 0; i < KV_NR_VM_EVENTS; i++)
		fprintf(f, "%s %llu\n", vmstat_names[i],
			(unsigned long long)kv_vmstat_read(pool, i));
}

static void print_prefix_stats(FILE *f, const char *who, const struct kv_prefix_stats *st)
{
	u64 hit = st->hit_tokens[KV_TIER_DEVICE] + st->hit_tokens[KV_TIER_HOST] +
		  st->hit_tokens[KV_TIER_SWAP];

	fprintf(f, "%-14s %12llu %12llu %12llu %12llu %8.4f %10llu %10llu %8u\n", who,
		(unsigned long long)st->query_tokens,
		(unsigned long long)st->hit_tokens[KV_TIER_DEVICE],
		(unsigned long long)st->hit_tokens[KV_TIER_HOST],
		(unsigned long long)st->hit_tokens[KV_TIER_SWAP],
		st->query_tokens ? (double)hit / (double)st->query_tokens : 0.0,
		(unsigned long long)st->inserted, (unsigned long long)st->evicted, st->cached);
}

/* Up to @max cached leaves of @tenant (or any), deepest first; pool locked. */
static u32 deepest_prefixes(struct kv_pool *pool, u32 *top, u32 max, u32 tenant)
{
	struct kv_prefix_node *nodes = pool->prefix.nodes;
	u32 i, n = 0, j, d;

	for (i = 0; nodes && i < pool->nr_blocks; i++) {
		if (!(pool->blocks[i].flags & KV_BLOCK_CACHED) || nodes[i].nr_children ||
		    (tenant != KV_TENANT_ANY && nodes[i].tenant != tenant))
			continue;
		d = nodes[i].depth;
		if (n == max && nodes[top[n - 1]].depth >= d)
			continue;
		j = n < max ? n++ : max - 1;
		for (; j > 0 && nodes[top[j - 1]].depth < d; j--)
			top[j] = top[j - 1];
		top[j] = i;
	}
	return n;
}

static const char *prefix_name_of(struct kv_pool *pool, u32 idx)
{
	u32 i;

	for (i = 0; i < pool->prefix.nr_names; i++)
		if (pool->prefix.names[i].node == idx)
			return pool->prefix.names[i].name;
	return "-";
}

static void tenant_label(u32 tenant, char *buf, size_t len,
			 void (*name)(u32, char *, size_t, void *), void *arg)
{
	if (name)
		name(tenant, buf, len, arg);
	else
		snprintf(buf, len, "%u", tenant);
}

/**
 * kv_prefix_print() - the prefix cache's report: pool and per-tenant
 * counters, named prefixes, the largest cached prefixes
 * @pool:        pool
 * @f:           stream
 * @tenant:      show only this tenant's rows, names and prefixes (the
 *               pool's totals stay), or KV_TENANT_ANY for all
 * @tenant_name: writes a tenant's label into a buffer; NULL for numbers
 * @arg:         passed to @tenant_name
 */
void kv_prefix_print(struct kv_pool *pool, FILE *f, u32 tenant,
		     void (*tenant_name)(u32 tenant, char *buf, size_t len, void *arg), void *arg)
{
	struct kv_prefix *pc = &pool->prefix;
	struct kv_prefix_stats st;
	u32 top[8], n, i, bt = pool->geom.block_tokens;
	struct kv_block *b;
	char who[48];

	kv_prefix_stats(pool, UINT32_MAX, &st);
	kv_pool_lock(pool);
	fprintf(f, "Prefix cache: %s, %u blocks of %u tokens cached (%u device, %u host, "
		"%u swap)\n",
		pool->flags & KV_POOL_NO_PREFIX ? "off" :
		pool->flags & KV_POOL_PREFIX_GLOBAL ? "shared by all tenants" : "per tenant",
		st.cached, bt, pc->nr_cached[KV_TIER_DEVICE], pc->nr_cached[KV_TIER_HOST],
		pc->nr_cached[KV_TIER_SWAP]);
	fprintf(f, "%-14s %12s %12s %12s %12s %8s %10s %10s %8s\n", "tenant", "query_tokens",
		"hit_device", "hit_host", "hit_swap", "hit", "inserted", "evicted", "cached");
	print_prefix_stats(f, "all", &st);
	for (i = 0; i < pc->nr_tenants; i++) {
		if (tenant != KV_TENANT_ANY && pc->tenants[i].tenant != tenant)
			continue;
		tenant_label(pc->tenants[i].tenant, who, sizeof(who), tenant_name, arg);
		print_prefix_stats(f, who, &pc->tenants[i]);
	}
	for (i = 0; i < pc->nr_names; i++) {
		if (tenant != KV_TENANT_ANY && pc->names[i].tenant != tenant)
			continue;
		tenant_label(pc->names[i].tenant, who, sizeof(who), tenant_name, arg);
		fprintf(f, "named %s: %u tokens, tenant %s, %s\n", pc->names[i].name,
			pc->nodes[pc->names[i].node].depth * bt, who,
			pc->names[i].pinned ? "pinned" : "unpinned");
	}
	n = deepest_prefixes(pool, top, 8, tenant);
	if (n)
		fprintf(f, "largest cached prefixes:\n%8s %8s %8s %6s %6s %s\n", "tokens",
			"blocks", "tenant", "tier", "refs", "name");
	for (i = 0; i < n; i++) {
		b = kv_block(pool, top[i]);
		tenant_label(pc->nodes[top[i]].tenant, who, sizeof(who), tenant_name, arg);
		fprintf(f, "%8u %8u %8s %6s %6u %s\n", pc->nodes[top[i]].depth * bt,
			pc->nodes[top[i]].depth, who,
			b->tier == KV_TIER_DEVICE ? "device" : b->tier == KV_TIER_HOST ? "host" : "swap",
			b->refcount - 1,
			prefix_name_of(pool, top[i]));
	}
	kv_pool_unlock(pool);
}
