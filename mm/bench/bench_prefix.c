// SPDX-License-Identifier: MIT
/*
 * bench-prefix: the prefix cache's hit ratio on a synthetic multi-tenant
 * chat trace, beside plain LRU and Belady's MIN simulated on the same
 * trace, and its lookup cost. Prints a table; asserts nothing about time
 * or ratios. Exits 1 only when something is broken (a pool that cannot be
 * made, a request that does not fit, kv_pool_check() failing).
 *
 *   bench-prefix [-s SEED] [-r REQUESTS] [-q] [-b BATCH] [-c PCT]...
 *
 * The trace (fixed default seed; -s changes it, -r the number of
 * requests, -q runs QUICK_REQUESTS of them):
 *
 *   NR_TENANTS tenants, each with PROMPTS_PER_TENANT system prompts of
 *   SYS_MIN_TOKENS..SYS_MAX_TOKENS tokens (2..8 blocks, not aligned to
 *   blocks). NR_CONVS conversations, each of a random tenant, starting
 *   with one of its tenant's system prompts. Each request picks a
 *   conversation by Zipf(ZIPF_S) popularity (ranks shuffled over the
 *   conversations) and sends a new turn: the prompt is the conversation's
 *   whole history (system prompt, earlier user turns and outputs) followed
 *   by a new user message of USER_MIN..USER_MAX tokens; then it "generates"
 *   OUT_MIN..OUT_MAX output tokens, which join the history that the
 *   conversation's next turn extends. A turn that would take the
 *   conversation past CONV_MAX_TOKENS restarts it from its system prompt,
 *   so one request never needs more than CONV_MAX_TOKENS / BT blocks.
 *   Token ids are random u32 from a seeded splitmix64: two blocks hold the
 *   same tokens only when they are the same prefix.
 *
 * The policies, each given the same capacity in blocks: 10%, 25% and 50%
 * of the trace's distinct blocks (default_pcts; -c replaces them). Hits
 * count whole blocks: a request's query is its prompt's whole blocks, and
 * its hit is the longest run of them from the first that is cached (a
 * prefix match stops at the first miss). Afterwards every whole block of
 * the request's final sequence (prompt + output) is cached; while the
 * request runs, all its blocks are resident at once (kvmem pins them), so
 * only blocks of other requests may be evicted for it.
 *
 *   kvmem   the real prefix cache (the mm library, no daemon): per request
 *           kv_seq_create(), kv_seq_set_tenant(), kv_prefix_match()
 *           (timed), kv_seq_activate(), kv_seq_append_ids() of the rest
 *           of the prompt and of the output, kv_seq_deactivate(),
 *           kv_seq_free(). The pool has no host tier (0 frames: eviction
 *           from the device tier is all there is) and no kvswapd, so the
 *           replay is synchronous and deterministic. Its device tier gets
 *           capacity + min watermark + 1 frames: an allocation never takes
 *           the min watermark's frames, and the running request's partly
 *           filled last block (which no policy counts) needs one more.
 *           Reclaim evicts in batches of vm.reclaim_batch (its default,
 *           or -b): up to that many blocks fewer than the capacity may be
 *           cached just after an eviction.
 *   LRU     plain LRU over blocks, no tree constraint (a parent may go
 *           before its children). A request's blocks are touched last
 *           block first, so its first block is its most recently used
 *           (vLLM frees a request's blocks tail first for that reason);
 *           on this trace the order changes LRU's hit ratio by < 0.001.
 *   Belady  MIN: evict the resident block (not the running request's)
 *           whose next use is farthest in the future; a block is used by
 *           every request whose final sequence holds it. This is the
 *           standard reference, not the true optimum here: under prefix
 *           matching a block is worth nothing once its parent is gone, and
 *           the running request pins its blocks; MIN knows neither.
 *
 * LRU and MIN name a block by a 64-bit chained hash of (tenant, every
 * token up to the block's end), which is what kvmem's names identify
 * (its namespace is the tenant). The trace is generated and indexed once
 * (an open-addressing table gives each distinct block a dense id; a
 * backward pass gives each access its next use), so the simulations run
 * on arrays: O(1) per block for LRU, O(log n) for MIN's heap. kvmem
 * replays the same stream, regenerated from the seed.
 *
 * Columns: capacity (blocks), hit ratios, kvmem against LRU and Belady,
 * kv_prefix_match() time per matched block (ns/block: all calls' time over
 * all matched blocks; the whole call, hashing every whole block of the
 * prompt and walking the matched ones), the median over calls of each
 * call's ns per matched block (p50: less sensitive to a noisy machine),
 * and kvmem's prefix inserts and evictions (vmstat) beside the evictions
 * of LRU and MIN.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "mm/mm.h"

#define BT			16	/* tokens per block */
#define NR_TENANTS		4
#define PROMPTS_PER_TENANT	3
#define NR_SYS			(NR_TENANTS * PROMPTS_PER_TENANT)
#define SYS_MIN_TOKENS		(2 * BT)
#define SYS_MAX_TOKENS		(8 * BT)
#define NR_CONVS		2000
#define ZIPF_S			1.1
#define USER_MIN		10
#define USER_MAX		200
#define OUT_MIN			20
#define OUT_MAX			200
#define CONV_MAX_TOKENS		4096
#define DEFAULT_REQUESTS	20000
#define QUICK_REQUESTS		2000
#define DEFAULT_SEED		0x6b766d656dull	/* "kvmem" */
#define MAX_CAPS		8
#define NEVER			UINT32_MAX	/* no next use */
#define NONE			UINT32_MAX

static const u32 default_pcts[] = { 10, 25, 50 };

/* Small in bytes: the bench is about policy and lookup cost, not copies. */
static const struct kv_geometry geom = { 1, 1, 8, BT, KV_DTYPE_FP16, 0 };

static u64 now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (u64)ts.tv_sec * 1000000000ull + (u64)ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p) {
		fprintf(stderr, "bench-prefix: out of memory\n");
		exit(1);
	}
	return p;
}

static void *xrealloc(void *p, size_t size)
{
	p = realloc(p, size ? size : 1);
	if (!p) {
		fprintf(stderr, "bench-prefix: out of memory\n");
		exit(1);
	}
	return p;
}

/* ---- PRNG: splitmix64 ------------------------------------------------- */

struct rng {
	u64 s;
};

static u64 mix64(u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static u64 rng_next(struct rng *r)
{
	r->s += 0x9e3779b97f4a7c15ull;
	return mix64(r->s);
}

/* Uniform in [lo, hi]; the modulo bias is far below what matters here. */
static u32 rng_range(struct rng *r, u32 lo, u32 hi)
{
	return lo + (u32)(rng_next(r) % ((u64)hi - lo + 1));
}

/* Uniform in [0, 1). */
static double rng_unit(struct rng *r)
{
	return (rng_next(r) >> 11) * (1.0 / (1ull << 53));
}

/* ---- the trace generator ---------------------------------------------- */

/**
 * struct conv - one conversation
 * @tenant: its tenant
 * @sys:    its system prompt (index into tracegen's)
 * @len:    tokens of history
 * @ids:    the history's token ids (CONV_MAX_TOKENS of room), NULL until
 *          first used
 */
struct conv {
	u32 tenant;
	u32 sys;
	u32 len;
	u32 *ids;
};

/**
 * struct tracegen - the state that produces the request stream
 * @rng:     seeded PRNG; every draw comes from it, in a fixed order
 * @sys_len: system prompts' lengths, tenant t's are t * PROMPTS_PER_TENANT..
 * @sys_ids: their token ids
 * @conv:    conversations
 * @cdf:     Zipf cumulative distribution over popularity ranks
 * @by_rank: conversation at each rank
 */
struct tracegen {
	struct rng rng;
	u32 sys_len[NR_SYS];
	u32 sys_ids[NR_SYS][SYS_MAX_TOKENS];
	struct conv conv[NR_CONVS];
	double cdf[NR_CONVS];
	u32 by_rank[NR_CONVS];
};

/**
 * struct request - one turn
 * @tenant:     its tenant
 * @prompt_len: tokens of prompt (history + new user message)
 * @total_len:  tokens after the output
 * @ids:        token ids of all @total_len tokens; valid until the next
 *              gen_next()
 */
struct request {
	u32 tenant;
	u32 prompt_len;
	u32 total_len;
	const u32 *ids;
};

static void gen_fill(struct rng *r, u32 *ids, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		ids[i] = (u32)rng_next(r);
}

static void gen_zipf(struct tracegen *g)
{
	double sum = 0;
	u32 i, j, t;

	for (i = 0; i < NR_CONVS; i++) {
		sum += 1.0 / pow(i + 1, ZIPF_S);
		g->cdf[i] = sum;
	}
	for (i = 0; i < NR_CONVS; i++) {
		g->cdf[i] /= sum;
		g->by_rank[i] = i;
	}
	for (i = NR_CONVS - 1; i > 0; i--) {
		j = rng_range(&g->rng, 0, i);
		t = g->by_rank[i];
		g->by_rank[i] = g->by_rank[j];
		g->by_rank[j] = t;
	}
}

/**
 * gen_init() - a fresh generator; equal seeds give equal streams
 * @seed: the trace's seed
 *
 * Return: the generator (free with gen_free()).
 */
static struct tracegen *gen_init(u64 seed)
{
	struct tracegen *g = xcalloc(1, sizeof(*g));
	u32 i;

	g->rng.s = seed;
	for (i = 0; i < NR_SYS; i++) {
		g->sys_len[i] = rng_range(&g->rng, SYS_MIN_TOKENS, SYS_MAX_TOKENS);
		gen_fill(&g->rng, g->sys_ids[i], g->sys_len[i]);
	}
	for (i = 0; i < NR_CONVS; i++) {
		g->conv[i].tenant = rng_range(&g->rng, 0, NR_TENANTS - 1);
		g->conv[i].sys = g->conv[i].tenant * PROMPTS_PER_TENANT +
				 rng_range(&g->rng, 0, PROMPTS_PER_TENANT - 1);
	}
	gen_zipf(g);
	return g;
}

static void gen_free(struct tracegen *g)
{
	u32 i;

	for (i = 0; i < NR_CONVS; i++)
		free(g->conv[i].ids);
	free(g);
}

static struct conv *gen_pick(struct tracegen *g)
{
	double u = rng_unit(&g->rng);
	u32 lo = 0, hi = NR_CONVS - 1, mid;

	while (lo < hi) {
		mid = (lo + hi) / 2;
		if (g->cdf[mid] <= u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return &g->conv[g->by_rank[lo]];
}

/* Start a conversation over from its system prompt. */
static void conv_restart(struct tracegen *g, struct conv *c)
{
	if (!c->ids)
		c->ids = xcalloc(CONV_MAX_TOKENS, sizeof(u32));
	c->len = g->sys_len[c->sys];
	memcpy(c->ids, g->sys_ids[c->sys], c->len * sizeof(u32));
}

/**
 * gen_next() - the next request of the stream
 * @g:  generator
 * @rq: receives the request
 */
static void gen_next(struct tracegen *g, struct request *rq)
{
	struct conv *c = gen_pick(g);
	u32 user = rng_range(&g->rng, USER_MIN, USER_MAX);
	u32 out = rng_range(&g->rng, OUT_MIN, OUT_MAX);

	if (!c->ids || c->len + user + out > CONV_MAX_TOKENS)
		conv_restart(g, c);
	gen_fill(&g->rng, c->ids + c->len, user + out);
	rq->tenant = c->tenant;
	rq->prompt_len = c->len + user;
	rq->total_len = c->len + user + out;
	rq->ids = c->ids;
	c->len = rq->total_len;
}

/* ---- the trace's index: a dense id per distinct block ------------------- */

/**
 * struct keytab - open addressing (linear probing) from block key to id
 * @keys: keys, 0 for an empty slot (a key of 0 is stored as 1)
 * @ids:  dense ids
 * @mask: slots - 1
 * @nr:   keys stored
 */
struct keytab {
	u64 *keys;
	u32 *ids;
	u32 mask;
	u32 nr;
};

static void keytab_init(struct keytab *kt, u32 slots)
{
	kt->keys = xcalloc(slots, sizeof(*kt->keys));
	kt->ids = xcalloc(slots, sizeof(*kt->ids));
	kt->mask = slots - 1;
	kt->nr = 0;
}

static void keytab_free(struct keytab *kt)
{
	free(kt->keys);
	free(kt->ids);
}

static u32 keytab_slot(const struct keytab *kt, u64 key)
{
	u32 i = (u32)mix64(key) & kt->mask;

	while (kt->keys[i] && kt->keys[i] != key)
		i = (i + 1) & kt->mask;
	return i;
}

static void keytab_grow(struct keytab *kt)
{
	struct keytab old = *kt;
	u32 i, s;

	keytab_init(kt, (old.mask + 1) * 2);
	kt->nr = old.nr;
	for (i = 0; i <= old.mask; i++) {
		if (!old.keys[i])
			continue;
		s = keytab_slot(kt, old.keys[i]);
		kt->keys[s] = old.keys[i];
		kt->ids[s] = old.ids[i];
	}
	keytab_free(&old);
}

/* The dense id of @key; a new key gets the next id. */
static u32 keytab_id(struct keytab *kt, u64 key)
{
	u32 s;

	key = key ? key : 1;
	if (2 * (kt->nr + 1) > kt->mask + 1)
		keytab_grow(kt);
	s = keytab_slot(kt, key);
	if (!kt->keys[s]) {
		kt->keys[s] = key;
		kt->ids[s] = kt->nr++;
	}
	return kt->ids[s];
}

_Static_assert(BT % 2 == 0, "block_key() takes tokens in pairs");

/* The chained key of a block: its parent's key and its tokens. */
static u64 block_key(u64 parent, const u32 *ids)
{
	u64 h = parent;
	u32 i;

	for (i = 0; i < BT; i += 2)
		h = mix64(h ^ ((u64)ids[i] << 32 | ids[i + 1]));
	return h;
}

/**
 * struct trace - the request stream, as the simulations see it
 * @nr_req:        requests
 * @qb:            per request: whole blocks of its prompt (the query)
 * @nb:            per request: whole blocks of its final sequence
 * @off:           per request: index of its first access in @bid
 * @bid:           per access (a request's block): the block's dense id
 * @next:          per access: the next request that uses the block, or NEVER
 * @nr_acc:        accesses
 * @distinct:      distinct blocks
 * @prompt_blocks: sum of @qb
 * @max_nb:        largest @nb
 */
struct trace {
	u32 nr_req;
	u32 *qb;
	u32 *nb;
	u64 *off;
	u32 *bid;
	u32 *next;
	u64 nr_acc;
	u32 distinct;
	u64 prompt_blocks;
	u32 max_nb;
};

/* Append request @r's block ids (chained from its tenant) to @tr. */
static void trace_add(struct trace *tr, struct keytab *kt, u64 *cap, u32 r,
		      const struct request *rq)
{
	u32 nb = rq->total_len / BT, i;
	u64 key = mix64(0x74656e616e74ull ^ rq->tenant);

	if (tr->nr_acc + nb > *cap) {
		*cap = (*cap + nb) * 2;
		tr->bid = xrealloc(tr->bid, *cap * sizeof(*tr->bid));
	}
	tr->qb[r] = rq->prompt_len / BT;
	tr->nb[r] = nb;
	tr->off[r] = tr->nr_acc;
	for (i = 0; i < nb; i++) {
		key = block_key(key, rq->ids + (size_t)i * BT);
		tr->bid[tr->nr_acc++] = keytab_id(kt, key);
	}
	tr->prompt_blocks += tr->qb[r];
	if (nb > tr->max_nb)
		tr->max_nb = nb;
}

/* Next uses, by a backward pass with the last request seen per block. */
static void trace_next_uses(struct trace *tr)
{
	u32 *last = xcalloc(tr->distinct, sizeof(*last));
	u32 r, i;
	u64 p;

	memset(last, 0xff, (size_t)tr->distinct * sizeof(*last));
	tr->next = xcalloc(tr->nr_acc, sizeof(*tr->next));
	for (r = tr->nr_req; r-- > 0;) {
		for (i = 0; i < tr->nb[r]; i++) {
			p = tr->off[r] + i;
			tr->next[p] = last[tr->bid[p]];
			last[tr->bid[p]] = r;
		}
	}
	free(last);
}

/**
 * trace_build() - generate the stream once and index it
 * @tr:     receives the index
 * @seed:   the trace's seed
 * @nr_req: requests
 */
static void trace_build(struct trace *tr, u64 seed, u32 nr_req)
{
	struct tracegen *g = gen_init(seed);
	struct keytab kt;
	struct request rq;
	u64 cap = 0;
	u32 r;

	memset(tr, 0, sizeof(*tr));
	tr->nr_req = nr_req;
	tr->qb = xcalloc(nr_req, sizeof(*tr->qb));
	tr->nb = xcalloc(nr_req, sizeof(*tr->nb));
	tr->off = xcalloc(nr_req, sizeof(*tr->off));
	keytab_init(&kt, 1u << 16);
	for (r = 0; r < nr_req; r++) {
		gen_next(g, &rq);
		trace_add(tr, &kt, &cap, r, &rq);
	}
	tr->distinct = kt.nr;
	keytab_free(&kt);
	gen_free(g);
	trace_next_uses(tr);
}

static void trace_free(struct trace *tr)
{
	free(tr->qb);
	free(tr->nb);
	free(tr->off);
	free(tr->bid);
	free(tr->next);
}

/**
 * struct sim_result - what one policy did on the trace
 * @hits:    query blocks found
 * @queries: query blocks
 * @evicts:  blocks evicted
 */
struct sim_result {
	u64 hits;
	u64 queries;
	u64 evicts;
};

/* The longest run of @bid's first @qb blocks that is resident. */
static u32 prefix_hits(const u8 *resident, const u32 *bid, u32 qb)
{
	u32 i;

	for (i = 0; i < qb && resident[bid[i]]; i++)
		;
	return i;
}

/* ---- plain LRU over blocks ------------------------------------------------ */

/**
 * struct lru_sim - resident blocks on a doubly linked list, most recent
 * at the head
 * @prev:     per block id
 * @next:     per block id
 * @resident: per block id
 * @head:     most recently used, or NONE
 * @tail:     least recently used, or NONE
 * @nr:       resident blocks
 * @cap:      capacity in blocks
 */
struct lru_sim {
	u32 *prev;
	u32 *next;
	u8 *resident;
	u32 head;
	u32 tail;
	u32 nr;
	u32 cap;
};

static void lru_unlink(struct lru_sim *s, u32 id)
{
	if (s->prev[id] != NONE)
		s->next[s->prev[id]] = s->next[id];
	else
		s->head = s->next[id];
	if (s->next[id] != NONE)
		s->prev[s->next[id]] = s->prev[id];
	else
		s->tail = s->prev[id];
}

static void lru_push_head(struct lru_sim *s, u32 id)
{
	s->prev[id] = NONE;
	s->next[id] = s->head;
	if (s->head != NONE)
		s->prev[s->head] = id;
	else
		s->tail = id;
	s->head = id;
}

static void lru_touch(struct lru_sim *s, u32 id)
{
	lru_unlink(s, id);
	lru_push_head(s, id);
}

/*
 * Make every block of a request resident. Its resident blocks go to the
 * head first, so the tail is another request's block whenever the cache
 * is full (the capacity holds any one request).
 */
static void lru_request(struct lru_sim *s, const u32 *bid, u32 nb, struct sim_result *res)
{
	u32 i, victim;

	for (i = nb; i-- > 0;)
		if (s->resident[bid[i]])
			lru_touch(s, bid[i]);
	for (i = nb; i-- > 0;) {
		if (s->resident[bid[i]])
			continue;
		if (s->nr == s->cap) {
			victim = s->tail;
			lru_unlink(s, victim);
			s->resident[victim] = 0;
			s->nr--;
			res->evicts++;
		}
		lru_push_head(s, bid[i]);
		s->resident[bid[i]] = 1;
		s->nr++;
	}
	for (i = nb; i-- > 0;)
		lru_touch(s, bid[i]);
}

static void run_lru(const struct trace *tr, u32 cap, struct sim_result *res)
{
	struct lru_sim s = { .head = NONE, .tail = NONE, .cap = cap };
	const u32 *bid;
	u32 r;

	s.prev = xcalloc(tr->distinct, sizeof(*s.prev));
	s.next = xcalloc(tr->distinct, sizeof(*s.next));
	s.resident = xcalloc(tr->distinct, sizeof(*s.resident));
	memset(res, 0, sizeof(*res));
	for (r = 0; r < tr->nr_req; r++) {
		bid = tr->bid + tr->off[r];
		res->hits += prefix_hits(s.resident, bid, tr->qb[r]);
		res->queries += tr->qb[r];
		lru_request(&s, bid, tr->nb[r], res);
	}
	free(s.prev);
	free(s.next);
	free(s.resident);
}

/* ---- Belady's MIN ------------------------------------------------------------ */

/**
 * struct min_sim - resident blocks not in the running request, in a
 * max-heap by next use
 * @heap:     block ids
 * @pos:      per block id: index in @heap, or NONE (absent or pinned)
 * @key:      per block id: its next use
 * @resident: per block id
 * @heap_n:   entries in @heap
 * @nr:       resident blocks
 * @cap:      capacity in blocks
 */
struct min_sim {
	u32 *heap;
	u32 *pos;
	u32 *key;
	u8 *resident;
	u32 heap_n;
	u32 nr;
	u32 cap;
};

static void min_set(struct min_sim *s, u32 pos, u32 id)
{
	s->heap[pos] = id;
	s->pos[id] = pos;
}

static void min_up(struct min_sim *s, u32 pos)
{
	u32 id = s->heap[pos], up;

	while (pos) {
		up = (pos - 1) / 2;
		if (s->key[s->heap[up]] >= s->key[id])
			break;
		min_set(s, pos, s->heap[up]);
		pos = up;
	}
	min_set(s, pos, id);
}

static void min_down(struct min_sim *s, u32 pos)
{
	u32 id = s->heap[pos], c;

	while ((c = 2 * pos + 1) < s->heap_n) {
		if (c + 1 < s->heap_n && s->key[s->heap[c + 1]] > s->key[s->heap[c]])
			c++;
		if (s->key[s->heap[c]] <= s->key[id])
			break;
		min_set(s, pos, s->heap[c]);
		pos = c;
	}
	min_set(s, pos, id);
}

static void min_add(struct min_sim *s, u32 id)
{
	s->heap[s->heap_n] = id;
	min_up(s, s->heap_n++);
}

static void min_del(struct min_sim *s, u32 id)
{
	u32 pos = s->pos[id], last = s->heap[--s->heap_n];

	s->pos[id] = NONE;
	if (pos == s->heap_n)
		return;
	min_set(s, pos, last);
	min_up(s, pos);
	min_down(s, s->pos[last]);
}

/*
 * Make every block of request @r resident: its resident blocks leave the
 * heap (pinned), missing ones evict the heap's top, then all go back in
 * keyed by their next use.
 */
static void min_request(struct min_sim *s, const struct trace *tr, u32 r,
			struct sim_result *res)
{
	const u32 *bid = tr->bid + tr->off[r], *next = tr->next + tr->off[r];
	u32 nb = tr->nb[r], i, victim;

	for (i = 0; i < nb; i++)
		if (s->resident[bid[i]])
			min_del(s, bid[i]);
	for (i = 0; i < nb; i++) {
		if (s->resident[bid[i]])
			continue;
		if (s->nr == s->cap) {
			victim = s->heap[0];
			min_del(s, victim);
			s->resident[victim] = 0;
			s->nr--;
			res->evicts++;
		}
		s->resident[bid[i]] = 1;
		s->nr++;
	}
	for (i = 0; i < nb; i++) {
		s->key[bid[i]] = next[i];
		min_add(s, bid[i]);
	}
}

static void run_min(const struct trace *tr, u32 cap, struct sim_result *res)
{
	struct min_sim s = { .cap = cap };
	const u32 *bid;
	u32 r;

	s.heap = xcalloc(tr->distinct, sizeof(*s.heap));
	s.pos = xcalloc(tr->distinct, sizeof(*s.pos));
	s.key = xcalloc(tr->distinct, sizeof(*s.key));
	s.resident = xcalloc(tr->distinct, sizeof(*s.resident));
	memset(s.pos, 0xff, (size_t)tr->distinct * sizeof(*s.pos));
	memset(res, 0, sizeof(*res));
	for (r = 0; r < tr->nr_req; r++) {
		bid = tr->bid + tr->off[r];
		res->hits += prefix_hits(s.resident, bid, tr->qb[r]);
		res->queries += tr->qb[r];
		min_request(&s, tr, r, res);
	}
	free(s.heap);
	free(s.pos);
	free(s.key);
	free(s.resident);
}

/* ---- kvmem ------------------------------------------------------------------- */

/**
 * struct kvmem_result - what the prefix cache did on the trace
 * @sim:      hits, queries and evictions, as the simulations count them
 * @match_ns: time spent in kv_prefix_match()
 * @call_ns:  per call that matched a block: its ns per matched block
 * @nr_calls: entries of @call_ns
 * @p50_ns:   their median
 * @inserts:  KV_PREFIX_INSERT
 * @frames:   device frames of the pool
 * @min:      of those, frames the min watermark keeps free
 * @batch:    the pool's vm.reclaim_batch
 */
struct kvmem_result {
	struct sim_result sim;
	u64 match_ns;
	double *call_ns;
	u32 nr_calls;
	double p50_ns;
	u64 inserts;
	u32 frames;
	u32 min;
	u32 batch;
};

/* ---- the bench: options, the trace and each row's results ----------------------- */

/**
 * struct bench - options, the trace's index and each row's results
 * @seed:     the trace's seed
 * @requests: requests
 * @batch:    kvmem's vm.reclaim_batch, 0 for its default
 * @nr_caps:  rows
 * @pct:      capacity of each row, percent of the distinct blocks
 * @cap:      capacity of each row, blocks
 * @kv:       kvmem per row
 * @lru:      LRU per row
 * @min:      Belady per row
 * @tr:       the trace's index
 */
struct bench {
	u64 seed;
	u32 requests;
	u32 batch;
	u32 nr_caps;
	u32 pct[MAX_CAPS];
	u32 cap[MAX_CAPS];
	struct kvmem_result kv[MAX_CAPS];
	struct sim_result lru[MAX_CAPS];
	struct sim_result min[MAX_CAPS];
	struct trace tr;
};

static int pool_make(u32 frames, u32 batch, struct kv_pool **pool)
{
	struct kv_pool_params p = { .name = "bench-prefix", .geom = geom,
				    .nr_frames = { frames, 0 },
				    .vm = { .min_free_kbytes = 4, .reclaim_batch = batch },
				    .flags = KV_POOL_NO_KVSWAPD };

	return kv_pool_create(&p, pool);
}

static u32 pool_wmark_min(struct kv_pool *pool)
{
	struct kv_meminfo mi;

	kv_pool_meminfo(pool, &mi);
	return mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_MIN];
}

/*
 * A pool whose cache can use @cap blocks: frames for them, for the min
 * watermark and for the running request's partial last block.
 */
static int pool_for_capacity(u32 cap, u32 batch, struct kv_pool **pool,
			     struct kvmem_result *res)
{
	struct kv_vm_tunables vm;
	u32 min;
	int err;

	err = pool_make(cap + 1, batch, pool);
	if (err)
		return err;
	min = pool_wmark_min(*pool);
	kv_pool_destroy(*pool);
	err = pool_make(cap + 1 + min, batch, pool);
	if (err)
		return err;
	res->frames = cap + 1 + min;
	res->min = pool_wmark_min(*pool);
	kv_pool_get_tunables(*pool, &vm);
	res->batch = vm.reclaim_batch;
	if (res->min != min) {
		kv_pool_destroy(*pool);
		return -ERANGE;
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The median of @n values (sorts them); 0 when there are none. */
static double median(double *v, u32 n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One request through the pool; returns 0 or the failing call's error. */
static int kvmem_request(struct kv_pool *pool, const struct request *rq, struct kvmem_result *res)
{
	struct kv_prefix_hit hit;
	struct kv_seq *seq;
	u64 t0;
	int ret;

	ret = kv_seq_create(pool, &seq);
	if (ret)
		return ret;
	ret = kv_seq_set_tenant(seq, rq->tenant);
	if (ret)
		goto out;
	t0 = now_ns();
	ret = kv_prefix_match(seq, rq->ids, rq->prompt_len, &hit);
	t0 = now_ns() - t0;
	res->match_ns += t0;
	if (ret < 0)
		goto out;
	if (hit.blocks)
		res->call_ns[res->nr_calls++] = (double)t0 / hit.blocks;
	res->sim.hits += hit.blocks;
	res->sim.queries += rq->prompt_len / BT;
	ret = kv_seq_activate(seq, 0);
	ret = ret ?: kv_seq_append_ids(seq, rq->prompt_len - hit.tokens, rq->ids + hit.tokens,
				       NULL, 0);
	ret = ret ?: kv_seq_append_ids(seq, rq->total_len - rq->prompt_len,
				       rq->ids + rq->prompt_len, NULL, 0);
	kv_seq_deactivate(seq);
out:
	kv_seq_free(seq);
	return ret;
}

/**
 * run_kvmem() - replay the trace through a fresh pool of capacity @cap
 * @b:   the bench: seed, requests, reclaim batch
 * @cap: blocks the cache may use
 * @res: receives the counts
 *
 * Return: 0, or 1 after reporting what broke.
 */
static int run_kvmem(const struct bench *b, u32 cap, struct kvmem_result *res)
{
	struct tracegen *g;
	struct kv_pool *pool;
	struct request rq;
	u32 r;
	int err;

	memset(res, 0, sizeof(*res));
	err = pool_for_capacity(cap, b->batch, &pool, res);
	if (err) {
		fprintf(stderr, "bench-prefix: cannot create a pool of %u blocks: %s\n",
			cap, strerror(-err));
		return 1;
	}
	res->call_ns = xcalloc(b->requests, sizeof(*res->call_ns));
	g = gen_init(b->seed);
	for (r = 0; r < b->requests && !err; r++) {
		gen_next(g, &rq);
		err = kvmem_request(pool, &rq, res);
		if (err)
			fprintf(stderr, "bench-prefix: request %u (%u tokens) at capacity %u "
				"blocks: %s%s\n", r, rq.total_len, cap, strerror(-err),
				err == -ENOMEM ? " (the capacity cannot hold one request)" : "");
	}
	gen_free(g);
	res->p50_ns = median(res->call_ns, res->nr_calls);
	free(res->call_ns);
	res->call_ns = NULL;
	res->inserts = kv_vmstat_read(pool, KV_PREFIX_INSERT);
	res->sim.evicts = kv_vmstat_read(pool, KV_PREFIX_EVICT);
	if (!err && kv_pool_check(pool)) {
		fprintf(stderr, "bench-prefix: kv_pool_check() failed at capacity %u blocks\n",
			cap);
		err = -EIO;
	}
	kv_pool_destroy(pool);
	return err ? 1 : 0;
}

/* ---- the table ------------------------------------------------------------------ */

static double ratio(u64 a, u64 b)
{
	return b ? (double)a / b : 0;
}

static double rel(double a, double b)
{
	return b > 0 ? a / b : 0;
}

static double ns_per_block(const struct kvmem_result *kv)
{
	return kv->sim.hits ? (double)kv->match_ns / kv->sim.hits : 0;
}

static void print_header(const struct bench *b)
{
	printf("kvmem bench-prefix: %u requests, %u tenants x %u system prompts, "
	       "%u conversations (zipf %.1f), %u distinct blocks, %llu prompt blocks, seed %#llx\n",
	       b->requests, NR_TENANTS, PROMPTS_PER_TENANT, NR_CONVS, ZIPF_S, b->tr.distinct,
	       (unsigned long long)b->tr.prompt_blocks, (unsigned long long)b->seed);
	printf("%u tokens per block; hit ratio = whole prompt blocks matched / whole prompt "
	       "blocks; capacity in blocks, the same for all three\n", BT);
	printf("%-8s %8s %7s %7s %7s %9s %9s %8s %7s %9s %9s %9s %9s\n", "capacity", "blocks",
	       "kvmem", "LRU", "Belady", "kvmem/LRU", "kvmem/Bel", "ns/block", "p50",
	       "kv-insert", "kv-evict", "LRU-evict", "MIN-evict");
}

static void print_row(const struct bench *b, u32 i)
{
	const struct kvmem_result *kv = &b->kv[i];
	double h_kv = ratio(kv->sim.hits, kv->sim.queries);
	double h_lru = ratio(b->lru[i].hits, b->lru[i].queries);
	double h_min = ratio(b->min[i].hits, b->min[i].queries);

	printf("%7u%% %8u %7.4f %7.4f %7.4f %9.3f %9.3f %8.1f %7.1f %9llu %9llu %9llu %9llu\n",
	       b->pct[i], b->cap[i], h_kv, h_lru, h_min, rel(h_kv, h_lru), rel(h_kv, h_min),
	       ns_per_block(kv), kv->p50_ns, (unsigned long long)kv->inserts,
	       (unsigned long long)kv->sim.evicts, (unsigned long long)b->lru[i].evicts,
	       (unsigned long long)b->min[i].evicts);
	fflush(stdout);
}

static void print_footer(const struct bench *b)
{
	double h_kv, h_lru, h_min;
	u32 i;

	printf("kvmem pool: device frames = capacity + %u (min watermark) + 1 (the running "
	       "request's partial block), no host tier, no kvswapd; vm.reclaim_batch %u "
	       "(evictions come in batches of it)\n", b->kv[0].min, b->kv[0].batch);
	printf("targets: kvmem >= LRU; kvmem >= 0.9 x Belady at 25%% and 50%%; "
	       "lookup < 100 ns/block\n");
	printf("measured:");
	for (i = 0; i < b->nr_caps; i++) {
		h_kv = ratio(b->kv[i].sim.hits, b->kv[i].sim.queries);
		h_lru = ratio(b->lru[i].hits, b->lru[i].queries);
		h_min = ratio(b->min[i].hits, b->min[i].queries);
		printf("%s %u%%: kvmem %s LRU, %.3f x Belady, %.1f ns/block", i ? ";" : "",
		       b->pct[i], h_kv >= h_lru ? ">=" : "<", rel(h_kv, h_min),
		       ns_per_block(&b->kv[i]));
	}
	printf("\n");
}

/* One row: check that a request fits, then run the three policies. */
static int run_row(struct bench *b, u32 i)
{
	b->cap[i] = (u32)((u64)b->tr.distinct * b->pct[i] / 100);
	if (b->cap[i] < b->tr.max_nb) {
		fprintf(stderr, "bench-prefix: %u%% of the distinct blocks is %u blocks, fewer "
			"than the largest request's %u: use more requests\n", b->pct[i], b->cap[i],
			b->tr.max_nb);
		return 1;
	}
	run_lru(&b->tr, b->cap[i], &b->lru[i]);
	run_min(&b->tr, b->cap[i], &b->min[i]);
	if (run_kvmem(b, b->cap[i], &b->kv[i]))
		return 1;
	if (b->kv[i].sim.queries != b->lru[i].queries) {
		fprintf(stderr, "bench-prefix: kvmem saw %llu query blocks, the simulations %llu\n",
			(unsigned long long)b->kv[i].sim.queries,
			(unsigned long long)b->lru[i].queries);
		return 1;
	}
	print_row(b, i);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench-prefix [-s SEED] [-r REQUESTS] [-q] [-b BATCH] [-c PCT]...\n"
		"  -s SEED      trace seed (default %#llx)\n"
		"  -r REQUESTS  requests in the trace (default %u)\n"
		"  -q           quick: %u requests\n"
		"  -b BATCH     kvmem's vm.reclaim_batch, 1..256 (default: the pool's)\n"
		"  -c PCT       a capacity in percent of the distinct blocks, 1..1000;\n"
		"               repeatable, up to %u (default 10, 25, 50)\n",
		DEFAULT_SEED, DEFAULT_REQUESTS, QUICK_REQUESTS, MAX_CAPS);
	exit(2);
}

static unsigned long long parse_num(const char *s, unsigned long long max)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || *s == '-' || v > max)
		usage();
	return v;
}

static void parse_args(struct bench *b, int argc, char **argv)
{
	int c;

	b->seed = DEFAULT_SEED;
	b->requests = DEFAULT_REQUESTS;
	while ((c = getopt(argc, argv, "s:r:qb:c:h")) != -1) {
		switch (c) {
		case 's':
			b->seed = parse_num(optarg, UINT64_MAX);
			break;
		case 'r':
			b->requests = (u32)parse_num(optarg, 10000000);
			break;
		case 'q':
			b->requests = QUICK_REQUESTS;
			break;
		case 'b':
			b->batch = (u32)parse_num(optarg, 256);
			if (!b->batch)
				usage();
			break;
		case 'c':
			if (b->nr_caps == MAX_CAPS)
				usage();
			b->pct[b->nr_caps] = (u32)parse_num(optarg, 1000);
			if (!b->pct[b->nr_caps++])
				usage();
			break;
		default:
			usage();
		}
	}
	if (optind != argc || !b->requests)
		usage();
	if (!b->nr_caps) {
		memcpy(b->pct, default_pcts, sizeof(default_pcts));
		b->nr_caps = sizeof(default_pcts) / sizeof(default_pcts[0]);
	}
}

int main(int argc, char **argv)
{
	struct bench *b = xcalloc(1, sizeof(*b));
	int ret = 0;
	u32 i;

	parse_args(b, argc, argv);
	trace_build(&b->tr, b->seed, b->requests);
	print_header(b);
	for (i = 0; i < b->nr_caps && !ret; i++)
		ret = run_row(b, i);
	if (!ret)
		print_footer(b);
	trace_free(&b->tr);
	free(b);
	return ret;
}
