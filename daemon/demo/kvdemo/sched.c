// SPDX-License-Identifier: MIT
/*
 * kvdemo's scheduler: a stream of requests served with continuous batching
 * through libkvclient, as an inference server's engine loop does.
 *
 * Requests arrive two per step. Each prompt starts with one of a few
 * system prompts, so most find their first blocks in the prefix cache
 * (kvc_prefix_match()) and compute only the rest. Some ask for two
 * samples: after the prompt the sequence is forked and both decode on
 * their own (copy-on-write of the shared tail block). Some decode with a
 * draft: each step feeds the pending token and a few guessed ones, keeps
 * the guesses the model agrees with and truncates the rest away
 * (kvc_seq_truncate()).
 *
 * A few go on with an earlier request's conversation a while after it
 * ended: their prompt is its prompt and answer, found in the prefix cache
 * on whichever tier its blocks went to meanwhile.
 *
 * Admission asks the daemon (kvc_admit()) about a request's whole life: a
 * request that would need more blocks than the device tier holds is
 * refused at once (never); the others start in arrival order as soon as
 * their prompt fits now. Running sequences stay active (pinned) between
 * steps. Before a step that needs new blocks, the daemon is asked whether
 * they fit now; if not, the newest running request is deactivated
 * (preempted: its blocks may then be demoted to host and swap) until they
 * do, and a STEP that fails for memory all the same does the same. A
 * preempted request resumes, before any new one is admitted, once it fits
 * again; its next STEP makes its blocks resident again. On a pool with no
 * host tier nothing can take a preempted request's blocks, so preemption
 * frees its sequences instead; on resume they start again from the prefix
 * cache and compute the rest of their known tokens (without sampling)
 * before they decode on.
 *
 * Tokens are appended without a round trip where libkvclient can
 * (kvc_append_ids() into the sequence's own tail block or the client's
 * reserve), the others in one STEP for the whole batch.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kvdemo.h"

#define NR_SYS		4	/* system prompts */
#define SYS_MAX		(40 + 28 * NR_SYS + 8)	/* tokens of the longest */
#define RESERVE		8	/* frames kept in the client's reserve */
#define RESERVE_EVERY	8	/* steps between top-ups of the reserve */
#define FOLLOWUP_DELAY	150	/* steps between a conversation's turns */
#define ENOMEM_WAITS	10	/* 2 ms waits for other clients' blocks */
#define YIELDS_MAX	2000	/* preemptions of the last request in a row for them */
#define YIELDS_ALONE	3	/* of those, with no other client's blocks pinned */

enum req_state { REQ_FUTURE, REQ_WAITING, REQ_RUNNING, REQ_PREEMPTED, REQ_DONE, REQ_REJECTED };

/**
 * struct sample - one sequence of a request
 * @seq:       the daemon's sequence, 0 before it exists
 * @len:       tokens in the cache
 * @nr_tokens: tokens known: those in the cache, then those to feed
 * @tokens:    model token ids, room for @cap (draft guesses go past
 *             @nr_tokens)
 * @ids:       the same, tagged for the daemon
 * @cap:       entries of @tokens, @ids and @slots
 * @generated: tokens sampled
 * @rng:       its sampling stream
 * @ref:       --check's dense K/V
 * @active:    pinned by the last step (not deactivated since)
 * @lost:      its sequence was freed by a preemption (no host tier, or
 *             no room below the device): to create again on resume, its
 *             known tokens to compute again
 * @done:      finished and freed
 * @nr_rows:   this step: tokens fed
 * @nr_draft:  this step: of them, draft guesses
 * @catchup:   this step: its rows are known tokens computed again after a
 *             freeing preemption (no logits, nothing sampled)
 * @slots:     this step: their slots
 * @logit0:    this step: its first row in the batch's logits
 * @frames:    this step: copy of its block table
 * @nr_blocks: entries of @frames
 * @frames_cap: entries allocated
 */
struct sample {
	uint64_t seq;
	uint32_t len;
	uint32_t nr_tokens;
	uint32_t *tokens;
	uint32_t *ids;
	uint32_t cap;
	uint32_t generated;
	uint64_t rng;
	struct kvd_ref *ref;
	bool active;
	bool lost;
	bool done;
	uint32_t nr_rows;
	uint32_t nr_draft;
	bool catchup;
	uint64_t *slots;
	int32_t logit0;
	uint32_t *frames;
	uint32_t nr_blocks;
	uint32_t frames_cap;
};

/**
 * struct request - one request of the stream
 * @id:         its number
 * @prompt_len: prompt tokens (system prompt, then its own)
 * @max_new:    tokens to generate per sample
 * @nr_samples: 1, or 2 (forked after the prompt)
 * @draft:      draft guesses per step, 0 for plain decoding
 * @greedy:     pick the most likely token (drafting requests) instead of
 *              sampling
 * @asked:      the daemon's verdict on it is counted
 * @waited:     it waited for room at the head of the queue
 * @state:      REQ_*
 * @arrive:     step at which it arrives
 * @parent:     a second turn: the request whose conversation it goes on
 *              with (its prompt is that one's prompt and answer, then
 *              its own text); -1 for a first turn
 * @user:       tokens of its own text
 * @user_rng:   their stream
 * @done_step:  the step it finished in
 * @s:          its samples
 */
struct request {
	uint32_t id;
	uint32_t prompt_len;
	uint32_t max_new;
	uint32_t nr_samples;
	uint32_t draft;
	bool greedy;
	bool asked;
	bool waited;
	enum req_state state;
	uint64_t arrive;
	int32_t parent;
	uint32_t user;
	uint64_t user_rng;
	uint64_t done_step;
	struct sample s[2];
};

/**
 * struct kvd_sched - the engine
 * @o:       options
 * @c:       connection
 * @pool:    pool
 * @m:       model
 * @bt:      tokens per block
 * @kc:      the cached attention
 * @w:       forward scratch
 * @ck:      --check state
 * @req:     the stream
 * @nr_req:  requests in it
 * @step:    steps run
 * @fault_pending: --inject-fault is due
 * @bigram:  the draft model: per token, the token the model last chose
 *           after it (greedy), or UINT32_MAX
 * @batch:   this step's batch
 * @rows_cap, @seqs_cap, @logits_cap: room in @batch
 * @sam:     per batch sequence, its sample
 * @sam_cap: room in @sam
 * @ss:      this step's STEP entries (room for @o.batch + 1)
 * @ss_sam:  their samples
 * @yields:  preemptions of the last request running, in a row, to let other
 *           clients of the pool free their blocks (step_no_room())
 * @alone:   of those, the last ones in a row after which the request would
 *           not fit now, no block of the pool was pinned and its free and
 *           reclaimable frames had not moved since the one before
 * @last_free, @last_reclaimable: the pool's, after the last yield
 * @st:      counters
 */
struct kvd_sched {
	struct kvd_opts o;
	struct kvc *c;
	struct kvc_pool *pool;
	const struct kvd_model *m;
	uint32_t bt;
	struct kvd_cache kc;
	struct kvd_work w;
	struct kvd_check ck;
	struct request *req;
	uint32_t nr_req;
	uint64_t step;
	bool fault_pending;
	uint32_t *bigram;
	struct kvd_batch batch;
	uint32_t rows_cap, seqs_cap, logits_cap;
	struct sample **sam;
	uint32_t sam_cap;
	struct kvc_step_seq *ss;
	struct sample **ss_sam;
	uint32_t yields, alone, last_free, last_reclaimable;
	struct kvd_stats st;
};

static uint32_t blocks(const struct kvd_sched *s, uint64_t tokens)
{
	return (uint32_t)((tokens + s->bt - 1) / s->bt);
}

static void set_token(struct kvd_sched *s, struct sample *x, uint32_t pos, uint32_t tok)
{
	x->tokens[pos] = tok;
	x->ids[pos] = s->m->tag << KVD_TOKEN_BITS | tok;
}

static int sample_alloc(struct sample *x, uint32_t cap)
{
	x->cap = cap;
	x->tokens = calloc(cap, sizeof(*x->tokens));
	x->ids = calloc(cap, sizeof(*x->ids));
	x->slots = calloc(cap, sizeof(*x->slots));
	return x->tokens && x->ids && x->slots ? 0 : -ENOMEM;
}

static void sample_release(struct sample *x)
{
	free(x->tokens);
	free(x->ids);
	free(x->slots);
	free(x->frames);
	kvd_ref_free(x->ref);
	memset(x, 0, sizeof(*x));
}

/* Its own text: the tokens after @start of sample 0, from its stream. */
static void user_text(struct kvd_sched *s, struct request *r, uint32_t start)
{
	uint64_t rng = r->user_rng;
	uint32_t p;

	for (p = start; p < start + r->user; p++)
		set_token(s, &r->s[0], p, (uint32_t)(kvd_rand(&rng) % s->m->cfg.vocab));
	r->prompt_len = start + r->user;
	r->s[0].nr_tokens = r->prompt_len;
}

/*
 * Request @r of the stream. Every fourth has two samples, every fourth
 * drafts; one in eight goes on with the conversation of the request four
 * before it; one in 25 asks for more than the device tier could ever hold.
 */
static int request_init(struct kvd_sched *s, struct request *r, uint32_t i, const uint32_t *sys,
			uint32_t sys_len, uint64_t *rng)
{
	uint32_t k, cap, p;
	int err;

	r->id = i;
	r->user = 8 + (uint32_t)(kvd_rand(rng) % 32);
	r->user_rng = kvd_rand(rng);
	r->max_new = 16 + (uint32_t)(kvd_rand(rng) % 48);
	r->nr_samples = i % 4 == 1 ? 2 : 1;
	r->draft = i % 4 == 3 ? s->o.draft : 0;
	r->greedy = r->draft > 0;
	r->arrive = i / 2;
	r->parent = i % 8 == 6 && (i - 4) % 25 != 24 ? (int32_t)(i - 4) : -1;
	if (i % 25 == 24)
		r->max_new = s->pool->nr_frames[KVMEM_TIER_DEVICE] * s->bt + 1;
	cap = r->parent >= 0 ? s->req[r->parent].prompt_len + s->req[r->parent].max_new : sys_len;
	cap += r->user + r->max_new + r->draft + 2;
	for (k = 0; k < r->nr_samples; k++) {
		err = sample_alloc(&r->s[k], cap);
		if (err)
			return err;
		r->s[k].rng = (s->o.seed * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)i << 8 | k);
	}
	if (r->parent >= 0)
		return 0;	/* its prompt is known when the first turn is done */
	for (p = 0; p < sys_len; p++)
		set_token(s, &r->s[0], p, sys[p]);
	user_text(s, r, sys_len);
	return 0;
}

/* The stream: system prompts, then the requests, all from the seed. */
static int stream_create(struct kvd_sched *s)
{
	uint32_t sys[NR_SYS][SYS_MAX], sys_len[NR_SYS], i, k;
	uint64_t rng = s->o.seed ^ 0x5eed5eed5eedull;
	int err;

	for (k = 0; k < NR_SYS; k++) {
		sys_len[k] = 40 + 28 * k + (uint32_t)(kvd_rand(&rng) % 8);
		for (i = 0; i < sys_len[k]; i++)
			sys[k][i] = (uint32_t)(kvd_rand(&rng) % s->m->cfg.vocab);
	}
	s->req = calloc(s->o.requests, sizeof(*s->req));
	if (!s->req)
		return -ENOMEM;
	s->nr_req = s->o.requests;
	for (i = 0; i < s->nr_req; i++) {
		k = (uint32_t)(kvd_rand(&rng) % NR_SYS);
		err = request_init(s, &s->req[i], i, sys[k], sys_len[k], &rng);
		if (err)
			return err;
	}
	return 0;
}

/* Samples of running requests that are not done. */
static uint32_t running_samples(const struct kvd_sched *s)
{
	uint32_t i, k, n = 0;

	for (i = 0; i < s->nr_req; i++)
		if (s->req[i].state == REQ_RUNNING)
			for (k = 0; k < s->req[i].nr_samples; k++)
				n += !s->req[i].s[k].done;
	return n;
}

static uint32_t live_samples(const struct request *r)
{
	uint32_t k, n = 0;

	for (k = 0; k < r->nr_samples; k++)
		n += !r->s[k].done;
	return n;
}

/*
 * Free the sequences of request @r (running or preempted) that are not
 * done; resume() creates them again and computes their known tokens anew.
 */
static int free_samples(struct kvd_sched *s, struct request *r)
{
	struct sample *x;
	uint32_t k;
	int err;

	for (k = 0; k < r->nr_samples; k++) {
		x = &r->s[k];
		x->nr_rows = 0;
		x->active = false;
		if (x->done || !x->seq)
			continue;
		err = kvc_seq_free(s->c, x->seq);
		if (err) {
			fprintf(stderr, "kvdemo: free request %u: %s\n", r->id, strerror(-err));
			return err;
		}
		x->seq = 0;
		x->len = 0;
		x->lost = true;
	}
	s->st.recomputes++;
	return 0;
}

/*
 * Preempt @r on a pool without a host tier: free its sequences (their
 * blocks are the room it makes).
 */
static int preempt_free(struct kvd_sched *s, struct request *r)
{
	int err = free_samples(s, r);

	if (err)
		return err;
	r->state = REQ_PREEMPTED;
	s->st.preemptions++;
	return 0;
}

/*
 * The tiers below the device are full, so the blocks of deactivated
 * requests stay on it: free the sequences of the newest preempted request
 * that still has some (recompute, as preempt_free()). Returns 1 when one
 * was freed, 0 when none holds any, or a negative errno.
 */
static int free_preempted(struct kvd_sched *s)
{
	struct request *r;
	uint32_t i, k;
	int err;

	for (i = s->nr_req; i-- > 0;) {
		r = &s->req[i];
		if (r->state != REQ_PREEMPTED)
			continue;
		for (k = 0; k < r->nr_samples; k++)
			if (!r->s[k].done && r->s[k].seq)
				break;
		if (k == r->nr_samples)
			continue;
		err = free_samples(s, r);
		return err ? err : 1;
	}
	return 0;
}

/*
 * Deactivate request @r: its blocks may be reclaimed (demoted, swapped)
 * while it waits; its next STEP makes them resident again. Without a host
 * tier nothing could take them: preempt_free().
 */
static int preempt(struct kvd_sched *s, struct request *r)
{
	uint64_t seqs[2];
	uint32_t k, n = 0;
	int err;

	if (!s->pool->nr_frames[KVMEM_TIER_HOST])
		return preempt_free(s, r);
	for (k = 0; k < r->nr_samples; k++) {
		if (!r->s[k].done && r->s[k].active)
			seqs[n++] = r->s[k].seq;
		r->s[k].active = false;
		r->s[k].nr_rows = 0;
	}
	err = n ? kvc_deactivate(s->c, seqs, n) : 0;
	if (err) {
		fprintf(stderr, "kvdemo: deactivate request %u: %s\n", r->id, strerror(-err));
		return err;
	}
	r->state = REQ_PREEMPTED;
	s->st.preemptions++;
	return 0;
}

/* The newest running request, or NULL. */
static struct request *newest_running(struct kvd_sched *s)
{
	uint32_t i;

	for (i = s->nr_req; i-- > 0;)
		if (s->req[i].state == REQ_RUNNING)
			return &s->req[i];
	return NULL;
}

static uint32_t nr_running(const struct kvd_sched *s)
{
	uint32_t i, n = 0;

	for (i = 0; i < s->nr_req; i++)
		n += s->req[i].state == REQ_RUNNING;
	return n;
}

/*
 * for_each_step_sample() - @x over the samples of running requests (@r)
 * that have rows in this step, in request order; @k counts samples
 */
#define for_each_step_sample(sch, r, x, k)					\
	for ((r) = (sch)->req; (r) < (sch)->req + (sch)->nr_req; (r)++)	\
		if ((r)->state != REQ_RUNNING) {} else				\
			for ((k) = 0; (k) < (r)->nr_samples; (k)++)		\
				if (!((x) = &(r)->s[(k)])->nr_rows) {} else

/*
 * Whether @need blocks, some of them those of deactivated sequences that
 * go back on the device, fit now: the daemon's verdict, and no more
 * pinned blocks than the device tier holds afterwards (the daemon counts
 * the unpinned blocks of those sequences as reclaimable, so its verdict
 * alone would let a request come back only to be preempted again).
 */
static int fits_now(struct kvd_sched *s, uint32_t need, bool *ok)
{
	struct kvmem_admit_reply rep;
	int v = kvc_admit(s->c, s->pool, need, &rep);

	if (v < 0) {
		fprintf(stderr, "kvdemo: ADMIT of %u blocks: %s\n", need, strerror(-v));
		return v;
	}
	*ok = v == KVMEM_ADMIT_NOW && (uint64_t)rep.pinned + need + RESERVE <= rep.total;
	return 0;
}

/*
 * Create @x's sequence with the longest cached prefix of its first @n
 * tokens: the tokens matched, or a negative errno (no sequence then).
 */
static int seq_start(struct kvd_sched *s, struct sample *x, uint32_t n)
{
	int m, err;

	err = kvc_seq_create(s->c, s->pool, &x->seq);
	if (err)
		return err;
	m = kvc_prefix_match(s->c, x->seq, x->ids, n, NULL);
	if (m < 0) {
		kvc_seq_free(s->c, x->seq);
		x->seq = 0;
	}
	return m;
}

/* Create @r's sequence with the longest cached prefix of its prompt. */
static int request_start(struct kvd_sched *s, struct request *r)
{
	struct sample *x = &r->s[0];
	int m, err;

	/* Keep the last prompt token to compute: its logits give the first token. */
	m = seq_start(s, x, r->prompt_len - 1);
	if (m < 0) {
		err = m;
		goto out_err;
	}
	if (s->o.check) {
		x->ref = kvd_ref_new(&s->m->cfg);
		if (!x->ref) {
			err = -ENOMEM;
			goto out_free_seq;
		}
	}
	x->len = (uint32_t)m;
	s->st.prompt_tokens += r->prompt_len;
	s->st.prompt_hit += (uint32_t)m;
	s->st.forked += r->nr_samples > 1;
	s->st.drafting += r->draft > 0;
	r->state = REQ_RUNNING;
	return 0;

out_free_seq:
	kvc_seq_free(s->c, x->seq);
	x->seq = 0;
out_err:
	fprintf(stderr, "kvdemo: start request %u: %s\n", r->id, strerror(-err));
	return err;
}

/*
 * Blocks @r needs to go on (all samples resident, the next token each;
 * a freed one's known tokens)
 */
static uint32_t resume_need(const struct kvd_sched *s, const struct request *r)
{
	const struct sample *x;
	uint32_t k, n = 0;

	for (k = 0; k < r->nr_samples; k++) {
		x = &r->s[k];
		if (!x->done)
			n += blocks(s, (x->lost ? x->nr_tokens - 1 : x->len) + 1 + r->draft);
	}
	return n ? n : 1;
}

/*
 * Create again the sequences free_samples() freed, each with the longest
 * cached prefix of its known tokens (the last stays to compute: decoding
 * goes on from it).
 */
static int recreate(struct kvd_sched *s, struct request *r)
{
	struct sample *x;
	uint32_t k;
	int m;

	for (k = 0; k < r->nr_samples; k++) {
		x = &r->s[k];
		if (!x->lost)
			continue;
		m = seq_start(s, x, x->nr_tokens - 1);
		if (m < 0) {
			fprintf(stderr, "kvdemo: resume request %u: %s\n", r->id, strerror(-m));
			return m;
		}
		x->len = (uint32_t)m;
		x->lost = false;
	}
	return 0;
}

/*
 * Requests whose step has come arrive; a second turn once its first turn
 * is done and FOLLOWUP_DELAY steps have passed (its blocks have moved
 * down the tiers meanwhile), with the first turn's tokens as its prompt's
 * start.
 */
static void arrivals(struct kvd_sched *s)
{
	struct request *r, *p;
	uint32_t i;

	for (i = 0; i < s->nr_req; i++) {
		r = &s->req[i];
		if (r->state != REQ_FUTURE || r->arrive >= s->step)
			continue;
		if (r->parent >= 0) {
			p = &s->req[r->parent];
			if (p->state == REQ_REJECTED) {
				r->state = REQ_REJECTED;	/* no first turn, no second */
				s->st.rejected++;
				continue;
			}
			if (p->state != REQ_DONE || s->step < p->done_step + FOLLOWUP_DELAY)
				continue;
			s->st.followups++;
			memcpy(r->s[0].tokens, p->s[0].tokens, p->s[0].nr_tokens * sizeof(uint32_t));
			memcpy(r->s[0].ids, p->s[0].ids, p->s[0].nr_tokens * sizeof(uint32_t));
			user_text(s, r, p->s[0].nr_tokens);
		}
		r->state = REQ_WAITING;
	}
}

/*
 * Preempted requests come back first, oldest first, each once its blocks
 * and a new block for every running sample fit; *@room is what is left
 * of the batch. Returns 1 when one still waits (no new request may pass
 * it), 0, or a negative errno.
 */
static int resume(struct kvd_sched *s, uint32_t *room)
{
	struct request *r;
	uint32_t i;
	bool ok;
	int err;

	for (i = 0; i < s->nr_req; i++) {
		r = &s->req[i];
		if (r->state != REQ_PREEMPTED)
			continue;
		if (live_samples(r) > *room && nr_running(s))
			return 1;
		err = fits_now(s, resume_need(s, r) + s->o.batch - *room, &ok);
		if (err)
			return err;
		/* With nothing running, waiting for room would wait forever. */
		if (!ok && nr_running(s))
			return 1;
		err = recreate(s, r);
		if (err)
			return err;
		r->state = REQ_RUNNING;
		*room -= live_samples(r) < *room ? live_samples(r) : *room;
		s->st.resumes++;
	}
	return 0;
}

/*
 * The daemon's verdict on request @r's whole life (prompt, every token it
 * may generate, every sample): never is refused; otherwise it starts as
 * soon as its prompt fits now (preemption makes room for what follows),
 * in arrival order. Returns 1 when @r must wait, 0, or a negative errno.
 */
static int admit_one(struct kvd_sched *s, struct request *r)
{
	uint32_t life = r->nr_samples * blocks(s, (uint64_t)r->prompt_len + r->max_new +
					       r->draft + 1);
	bool ok;
	int v;

	v = kvc_admit(s->c, s->pool, life, NULL);
	if (v < 0) {
		fprintf(stderr, "kvdemo: ADMIT of %u blocks: %s\n", life, strerror(-v));
		return v;
	}
	if (!r->asked) {
		r->asked = true;
		s->st.admit_now += v == KVMEM_ADMIT_NOW;
		s->st.admit_later += v == KVMEM_ADMIT_LATER;
		s->st.admit_never += v == KVMEM_ADMIT_NEVER;
	}
	if (v == KVMEM_ADMIT_NEVER) {
		printf("kvdemo: request %u needs %u blocks, more than the device tier's %u "
		       "hold above its min watermark: refused\n", r->id, life,
		       s->pool->nr_frames[KVMEM_TIER_DEVICE]);
		r->state = REQ_REJECTED;
		s->st.rejected++;
		return 0;
	}
	v = fits_now(s, blocks(s, r->prompt_len) + r->nr_samples, &ok);
	if (v)
		return v;
	if (!ok && nr_running(s)) {
		s->st.admit_waited += !r->waited;
		r->waited = true;
		return 1;
	}
	return request_start(s, r);
}

/*
 * Resume preempted requests, then admit new ones while the batch has room
 * (with nothing running, one request may exceed a batch smaller than its
 * samples).
 */
static int admit(struct kvd_sched *s)
{
	uint32_t run = running_samples(s), i;
	uint32_t room = run < s->o.batch ? s->o.batch - run : 0;
	struct request *r;
	int err;

	err = resume(s, &room);
	for (i = 0; !err && i < s->nr_req; i++) {
		r = &s->req[i];
		if (r->state != REQ_WAITING)
			continue;
		if (r->nr_samples > room && nr_running(s))
			return 0;
		err = admit_one(s, r);
		if (!err && r->state == REQ_RUNNING)
			room -= r->nr_samples < room ? r->nr_samples : room;
	}
	return err < 0 ? err : 0;
}

/*
 * Draft guesses for a greedy sample, from the draft model: a table of the
 * token the model last chose after each token (learned from its own
 * greedy choices, so it guesses where the model repeats itself), or a
 * token from a hash where it knows none. The guesses change the work
 * done, never the tokens generated: verification keeps only the model's
 * own choices.
 */
static void draft_propose(struct kvd_sched *s, struct request *r, struct sample *x, uint32_t k)
{
	uint64_t h = s->o.seed ^ ((uint64_t)r->id << 32 | x->len);
	uint32_t i, t = x->tokens[x->len];

	for (i = 1; i <= k; i++) {
		t = s->bigram[t] < s->m->cfg.vocab ? s->bigram[t] :
		    (uint32_t)(kvd_rand(&h) % s->m->cfg.vocab);
		set_token(s, x, x->len + i, t);
	}
}

/* This step's rows of every running sample: a prompt chunk, or decoding. */
static void plan(struct kvd_sched *s)
{
	uint32_t budget = s->o.prefill, i, k, n;
	struct request *r;
	struct sample *x;

	for (i = 0; i < s->nr_req; i++) {
		r = &s->req[i];
		for (k = 0; k < r->nr_samples; k++) {
			x = &r->s[k];
			x->nr_rows = x->nr_draft = 0;
			x->catchup = false;
			/* A second sample exists from the fork after the prompt on. */
			if (r->state != REQ_RUNNING || x->done || !x->seq)
				continue;
			/* Known tokens past the prompt, computed again after preempt_free(). */
			if (x->nr_tokens > r->prompt_len && x->len + 1 < x->nr_tokens) {
				n = x->nr_tokens - 1 - x->len;
				n = n < budget ? n : budget;
				budget -= n;
				x->nr_rows = n;
				x->catchup = n > 0;
				continue;
			}
			if (x->len < r->prompt_len) {
				n = r->prompt_len - x->len < budget ? r->prompt_len - x->len : budget;
				budget -= n;
				x->nr_rows = n;
				continue;
			}
			n = r->draft;
			if (n > r->max_new - x->generated - 1)
				n = r->max_new - x->generated - 1;
			if (n)
				draft_propose(s, r, x, n);
			x->nr_draft = n;
			x->nr_rows = 1 + n;
		}
	}
}

/* New blocks this step's rows need, counting inactive samples' tables whole. */
static uint32_t step_need(const struct kvd_sched *s)
{
	const struct request *r;
	const struct sample *x;
	uint32_t k, n = 0;

	for_each_step_sample(s, r, x, k) {
		n += blocks(s, x->len + x->nr_rows) - blocks(s, x->len);
		if (!x->active)
			n += blocks(s, x->len);
	}
	return n;
}

/* Preempt the newest requests until the daemon says the step fits now. */
static int relieve_pressure(struct kvd_sched *s)
{
	uint32_t need;
	bool ok;
	int v;

	while ((need = step_need(s)) && nr_running(s) > 1) {
		v = fits_now(s, need, &ok);
		if (v || ok)
			return v;
		v = preempt(s, newest_running(s));
		if (v)
			return v;
	}
	return 0;
}

/* Drop the first @done of the STEP's *@n entries (the STEP did them). */
static void step_drop(struct kvd_sched *s, uint32_t *n, uint32_t done)
{
	memmove(s->ss, s->ss + done, (*n - done) * sizeof(*s->ss));
	memmove(s->ss_sam, s->ss_sam + done, (*n - done) * sizeof(*s->ss_sam));
	*n -= done;
}

/*
 * A STEP failed for memory at entry @done: the entries before it are
 * done. Preempt the newest running request, taking back the tokens it
 * got in this step, and drop its entries from the STEP.
 */
static int step_shed(struct kvd_sched *s, uint32_t *n, uint32_t done)
{
	struct request *v = newest_running(s);
	uint32_t i, k, kept = done;
	struct sample *x;
	int err;

	for (k = 0; k < v->nr_samples; k++) {
		x = &v->s[k];
		if (!x->nr_rows || !x->active)
			continue;
		/* Appended locally or by this STEP: give the tokens back. */
		for (i = done; i < *n && s->ss_sam[i] != x; i++)
			;
		if (i < *n)
			continue;
		err = kvc_seq_truncate(s->c, x->seq, x->len);
		if (err)
			return err;
	}
	err = preempt(s, v);
	if (err)
		return err;
	for (i = done; i < *n; i++) {
		if (!s->ss_sam[i]->nr_rows)
			continue;
		s->ss[kept] = s->ss[i];
		s->ss_sam[kept++] = s->ss_sam[i];
	}
	*n = kept;
	step_drop(s, n, done);
	return 0;
}

/*
 * Extra 2 ms waits before a request that yielded comes back
 * (step_no_room()): they differ from client to client (the seed) and from
 * one yield to the next, so that two clients waiting for each other's
 * blocks do not yield and come back in step.
 */
static uint32_t enomem_jitter(const struct kvd_sched *s)
{
	uint64_t x = (s->o.seed + 1) * 0x9e3779b97f4a7c15ull;

	x ^= (uint64_t)s->yields * 0xbf58476d1ce4e5b9ull;
	x ^= x >> 31;
	return (uint32_t)(x % (2 * ENOMEM_WAITS));
}

/*
 * Whether kvmemd holds a STEP that finds no room while other clients are
 * connected, for them to release frames (step.wait_ms): then the STEP
 * that failed has waited already, and polling here again would only wait
 * longer.
 */
static bool daemon_waits(struct kvd_sched *s)
{
	char v[32];

	return !kvc_sysctl_get(s->c, "step.wait_ms", v, sizeof(v)) &&
	       strtoul(v, NULL, 10) > 0;
}

/*
 * A STEP of the last request running found no room (its *@n entries left
 * to do). Free the sequences of a preempted request, if one holds some.
 * Else give the reserve's frames back, once (*@drained; the kernel drains
 * its per-CPU lists before it calls memory exhausted); then wait a little
 * for other clients of the pool to free theirs (*@waits; not where kvmemd
 * waited for them, daemon_waits()); then preempt
 * this request too, so that a client waiting for ours gets them (two
 * clients each waiting for the other's blocks would wait for ever), and
 * let it come back after a pause. Returns 1 to go on (the STEP again, or
 * none left: *@n 0), 0 to give up (YIELDS_ALONE of those in a row after
 * which the request would not fit now, no block of the pool was pinned,
 * none of ours, and the pool had not moved: no other client to wait for;
 * or YIELDS_MAX in all), or a negative errno. Clients that yield together
 * each find nothing pinned; the room they gave back, and the pool moving
 * as they come and go, tell them they are not alone.
 */
static int step_no_room(struct kvd_sched *s, uint32_t *n, bool *drained, uint32_t *waits)
{
	struct kvmem_admit_reply rep;
	int err = free_preempted(s);
	struct request *r;

	if (!err && !*drained) {
		err = kvc_reserve_release(s->c, s->pool);
		*drained = true;
	}
	if (err)
		return err < 0 ? err : 1;
	if (!*waits && daemon_waits(s))
		*waits = ENOMEM_WAITS;
	if (++*waits <= ENOMEM_WAITS) {
		s->st.enomem_waits++;
		usleep(2000);
		return 1;
	}
	if (s->yields >= YIELDS_MAX || s->alone >= YIELDS_ALONE)
		return 0;
	r = newest_running(s);
	err = step_shed(s, n, 0);
	if (err)
		return err;
	err = kvc_admit(s->c, s->pool, resume_need(s, r), &rep);
	if (err < 0)
		return err;
	/*
	 * Alone: it would not fit, nothing is pinned, and the pool has not
	 * moved since the last yield. Clients that yield together also find
	 * nothing pinned, but each one's resuming and yielding moves the pool.
	 */
	if (err == KVMEM_ADMIT_NOW || rep.pinned)
		s->alone = 0;
	else if (rep.free != s->last_free || rep.reclaimable != s->last_reclaimable)
		s->alone = 1;
	else
		s->alone++;
	s->last_free = rep.free;
	s->last_reclaimable = rep.reclaimable;
	s->yields++;
	s->st.yields++;
	usleep(2000 * (ENOMEM_WAITS + enomem_jitter(s)));
	return 1;
}

/* One STEP for the samples that could not append locally. */
static int step_send(struct kvd_sched *s, uint32_t n)
{
	uint32_t i, done, tries = 0, waits = 0;
	bool drained = false;
	int32_t failed;
	int err;

	while (n) {
		err = kvc_step(s->c, s->ss, n, 0, &failed);
		s->st.step_msgs++;
		if (!err) {
			for (i = 0; i < n; i++)
				s->ss_sam[i]->active = true;
			s->yields = s->alone = 0;
			return 0;
		}
		if (err == -EAGAIN && ++tries < 1000) {
			usleep(1000);
			continue;
		}
		if (err != -ENOMEM)
			goto out_err;
		done = failed > 0 ? (uint32_t)failed : 0;
		for (i = 0; i < done; i++)
			s->ss_sam[i]->active = true;
		if (nr_running(s) > 1) {
			err = step_shed(s, &n, done);
			if (err)
				return err;
			continue;
		}
		/*
		 * One request left and no room for it: the preempted ones'
		 * blocks had nowhere to go, or other clients hold the room.
		 * Try again with the entries the STEP did not do.
		 */
		step_drop(s, &n, done);
		err = step_no_room(s, &n, &drained, &waits);
		if (err < 0)
			return err;
		if (!err)
			goto out_err_nomem;
	}
	return 0;

out_err_nomem:
	err = -ENOMEM;
out_err:
	fprintf(stderr, "kvdemo: STEP of %u sequences: %s\n", n, strerror(-err));
	return err;
}

/* Append every sample's rows: locally where possible, the rest in a STEP. */
static int append(struct kvd_sched *s)
{
	uint32_t k, n = 0, rows = 0;
	struct request *r;
	struct sample *x;
	int err;

	for_each_step_sample(s, r, x, k) {
		rows += x->nr_rows;
		err = kvc_append_ids(s->c, x->seq, x->nr_rows, x->ids + x->len, x->slots);
		if (!err) {
			x->active = true;
			continue;
		}
		if (err != -EAGAIN)
			return err;
		s->ss[n] = (struct kvc_step_seq){ .seq = x->seq, .nr_tokens = x->nr_rows,
						  .token_ids = x->ids + x->len, .slots = x->slots };
		s->ss_sam[n++] = x;
	}
	if (!n) {
		s->st.local_steps += rows > 0;
		return 0;
	}
	err = step_send(s, n);
	/*
	 * Now and then, top the reserve up for the next steps' new blocks;
	 * under pressure the daemon adds none.
	 */
	if (!err && s->step % RESERVE_EVERY == 0)
		err = kvc_reserve(s->c, s->pool, RESERVE);
	return err < 0 ? err : 0;
}

/* Copy @x's block table (valid after its append) for the pass. */
static int sample_table(struct kvd_sched *s, struct sample *x)
{
	const uint32_t *frames;
	uint32_t nb;
	int err;

	err = kvc_block_table(s->c, x->seq, &frames, &nb);
	if (!err)
		err = kvd_grow(&x->frames, &x->frames_cap, nb, sizeof(*x->frames));
	if (err)
		return err;
	memcpy(x->frames, frames, nb * sizeof(*frames));
	x->nr_blocks = nb;
	return 0;
}

/* Add @x's rows to the batch; prompt rows want logits only at the end. */
static int batch_add(struct kvd_sched *s, struct request *r, struct sample *x)
{
	struct kvd_batch *b = &s->batch;
	uint32_t j, q = b->nr_seqs;
	struct kvd_row *row;
	int err;

	err = kvd_grow(&b->rows, &s->rows_cap, (uint64_t)b->nr_rows + x->nr_rows, sizeof(*b->rows));
	err = err ?: kvd_grow(&b->seqs, &s->seqs_cap, q + 1, sizeof(*b->seqs));
	err = err ?: kvd_grow(&s->sam, &s->sam_cap, q + 1, sizeof(*s->sam));
	err = err ?: sample_table(s, x);
	if (err)
		return err;
	b->seqs[q] = (struct kvd_batch_seq){ .frames = x->frames, .nr_blocks = x->nr_blocks,
					     .tokens = x->tokens, .ref = x->ref, .who = r->id };
	s->sam[q] = x;
	b->nr_seqs++;
	x->logit0 = (int32_t)b->nr_logits;
	for (j = 0; j < x->nr_rows; j++) {
		row = &b->rows[b->nr_rows++];
		*row = (struct kvd_row){ .token = x->tokens[x->len + j], .pos = x->len + j,
					 .seq = q, .slot = (int64_t)x->slots[j], .logits = -1 };
		/* the prompt's last, or decoding; none for tokens computed again */
		if (!x->catchup && x->len + j + 1 >= r->prompt_len)
			row->logits = (int32_t)b->nr_logits++;
	}
	return 0;
}

/* The step's batch, and room for its logits. */
static int batch_build(struct kvd_sched *s)
{
	struct kvd_batch *b = &s->batch;
	struct request *r;
	struct sample *x;
	uint32_t k;
	int err;

	b->nr_rows = b->nr_seqs = b->nr_logits = 0;
	for_each_step_sample(s, r, x, k) {
		err = batch_add(s, r, x);
		if (err)
			return err;
	}
	return kvd_grow(&b->logits, &s->logits_cap, b->nr_logits,
			(size_t)s->m->cfg.vocab * sizeof(float));
}

/* The next token from a row of logits: the likeliest, or a sample. */
static uint32_t pick(const struct kvd_sched *s, const float *l, struct sample *x, bool greedy)
{
	uint32_t vocab = s->m->cfg.vocab, i, best = 0;
	double sum = 0, u;

	for (i = 1; i < vocab; i++)
		if (l[i] > l[best])
			best = i;
	if (greedy)
		return best;
	for (i = 0; i < vocab; i++)
		sum += exp((double)l[i] - l[best]);
	u = kvd_rand_unit(&x->rng) * sum;
	for (i = 0; i < vocab - 1; i++) {
		u -= exp((double)l[i] - l[best]);
		if (u < 0)
			break;
	}
	return i;
}

static void push(struct kvd_sched *s, struct sample *x, uint32_t tok)
{
	set_token(s, x, x->nr_tokens++, tok);
	x->generated++;
	s->st.generated++;
}

/* A sample generated all its tokens: free its sequence. */
static int sample_finish(struct kvd_sched *s, struct request *r, uint32_t k)
{
	struct sample *x = &r->s[k];
	uint64_t h = 0xcbf29ce484222325ull ^ ((uint64_t)r->id << 8 | k);
	uint32_t i;
	int err;

	err = kvc_seq_free(s->c, x->seq);
	if (err) {
		fprintf(stderr, "kvdemo: free request %u: %s\n", r->id, strerror(-err));
		return err;
	}
	for (i = r->prompt_len; i < x->nr_tokens; i++)
		h = (h ^ x->tokens[i]) * 0x100000001b3ull;
	s->st.checksum ^= h;
	kvd_ref_free(x->ref);
	x->ref = NULL;
	x->seq = 0;
	x->done = true;
	x->active = false;
	if (!live_samples(r)) {
		r->state = REQ_DONE;
		r->done_step = s->step;
		s->st.served++;
	}
	return 0;
}

/* The prompt is in: fork the second sample off the first, if asked. */
static int fork_sample(struct kvd_sched *s, struct request *r)
{
	struct sample *a = &r->s[0], *b = &r->s[1];
	int err;

	err = kvc_seq_fork(s->c, a->seq, &b->seq);
	if (err) {
		fprintf(stderr, "kvdemo: fork request %u: %s\n", r->id, strerror(-err));
		return err;
	}
	memcpy(b->tokens, a->tokens, a->nr_tokens * sizeof(*a->tokens));
	memcpy(b->ids, a->ids, a->nr_tokens * sizeof(*a->ids));
	b->len = a->len;
	b->nr_tokens = a->nr_tokens;
	if (a->ref) {
		b->ref = kvd_ref_clone(a->ref);
		if (!b->ref)
			return -ENOMEM;
	}
	return 0;
}

/*
 * A drafting sample's verdict: keep the guesses the model agrees with
 * (greedy), truncate the rest away, and take the model's own token after
 * the last one kept.
 */
static int draft_verify(struct kvd_sched *s, struct sample *x, const float *l, uint32_t p)
{
	uint32_t vocab = s->m->cfg.vocab, k = x->nr_draft, a = 0, t;
	int err;

	for (;;) {
		t = pick(s, l + (size_t)a * vocab, x, true);
		s->bigram[x->tokens[p + a]] = t;
		if (a == k || t != x->tokens[p + 1 + a])
			break;
		a++;
	}
	x->len = p + 1 + a;
	if (a < k) {
		err = kvc_seq_truncate(s->c, x->seq, x->len);
		if (err) {
			fprintf(stderr, "kvdemo: truncate: %s\n", strerror(-err));
			return err;
		}
		if (x->ref)
			kvd_ref_truncate(x->ref, x->len);
		s->st.truncations++;
	}
	x->nr_tokens = x->len;
	x->generated += a;
	s->st.generated += a;
	s->st.draft_proposed += k;
	s->st.draft_accepted += a;
	push(s, x, t);
	return 0;
}

/* Take one sample's logits of this step. */
static int sample_done_step(struct kvd_sched *s, struct request *r, struct sample *x)
{
	const float *l = s->batch.logits + (size_t)x->logit0 * s->m->cfg.vocab;
	uint32_t p = x->len, k;
	int err;

	x->len += x->nr_rows;
	if (x->catchup) {
		s->st.recomputed += x->nr_rows;
		return 0;
	}
	if (p < r->prompt_len) {
		s->st.prompt_computed += x->nr_rows;
		if (x->len < r->prompt_len)
			return 0;
		if (r->nr_samples > 1) {
			err = fork_sample(s, r);
			if (err)
				return err;
		}
		for (k = 0; k < r->nr_samples; k++)
			push(s, &r->s[k], pick(s, l, &r->s[k], r->greedy));
		return 0;
	}
	if (x->nr_draft)
		return draft_verify(s, x, l, p);
	k = pick(s, l, x, r->greedy);
	if (r->greedy)
		s->bigram[x->tokens[p]] = k;
	push(s, x, k);
	return 0;
}

/* After the pass: new tokens, verdicts on drafts, finished samples. */
static int finish(struct kvd_sched *s)
{
	uint32_t i, k;
	struct request *r;
	int err;

	for (i = 0; i < s->nr_req; i++) {
		r = &s->req[i];
		if (r->state != REQ_RUNNING)
			continue;
		for (k = 0; k < r->nr_samples; k++) {
			if (!r->s[k].nr_rows)
				continue;
			err = sample_done_step(s, r, &r->s[k]);
			if (err)
				return err;
		}
		for (k = 0; k < r->nr_samples; k++) {
			if (r->s[k].done || r->s[k].generated < r->max_new)
				continue;
			err = sample_finish(s, r, k);
			if (err)
				return err;
		}
	}
	return 0;
}

/*
 * --inject-fault: overwrite a cached V vector of the sample of this pass
 * with the most tokens still to come, so that its next steps read it.
 */
static int inject_fault(struct kvd_sched *s)
{
	uint32_t q, best = UINT32_MAX, left, most = 0;
	struct sample *x;
	int err;

	for (q = 0; q < s->batch.nr_seqs; q++) {
		x = s->sam[q];
		left = x->cap - x->nr_tokens;
		if (x->len >= 2 && left > most) {
			most = left;
			best = q;
		}
	}
	if (best == UINT32_MAX || most < 8)
		return 0;	/* try again next step */
	x = s->sam[best];
	err = kvd_cache_corrupt(&s->kc, x->frames, x->len / 2);
	if (err)
		return err;
	printf("kvdemo: fault injected at step %llu: request %u, token %u: its V of layer 0, "
	       "kv head 0 overwritten in the pool\n", (unsigned long long)s->step,
	       s->batch.seqs[best].who, x->len / 2);
	s->fault_pending = false;
	return 0;
}

/* The cached forward pass, and --check's recomputation of it. */
static int forward(struct kvd_sched *s)
{
	int err;

	err = kvd_cache_begin(&s->kc, &s->batch);
	err = err ?: kvd_forward(s->m, &s->w, s->kc.io, &s->batch, &kvd_cache_ops, &s->kc);
	err = err ?: kvd_cache_end(&s->kc, &s->batch);
	if (!err && s->o.check)
		err = kvd_check_batch(&s->ck, &s->batch);
	if (!err && s->fault_pending && s->step >= s->o.fault_step)
		err = inject_fault(s);
	return err;
}

/**
 * kvd_sched_step() - one engine step: arrivals, admission, preemption,
 * appends, the forward pass (and its check), new tokens
 * @s: scheduler
 *
 * Return: 0, or a negative errno (printed where it came from): the
 * daemon's, -EUCLEAN for a --check mismatch, -ENOMEM.
 */
int kvd_sched_step(struct kvd_sched *s)
{
	int err;

	s->step++;
	arrivals(s);
	err = admit(s);
	if (err)
		return err;
	plan(s);
	err = relieve_pressure(s);
	err = err ?: append(s);
	err = err ?: batch_build(s);
	if (err || !s->batch.nr_rows)
		return err;
	s->st.steps++;
	s->st.rows += s->batch.nr_rows;
	err = forward(s);
	return err ?: finish(s);
}

/** kvd_sched_done() - whether every request is served or refused */
bool kvd_sched_done(const struct kvd_sched *s)
{
	uint32_t i;

	for (i = 0; i < s->nr_req; i++)
		if (s->req[i].state != REQ_DONE && s->req[i].state != REQ_REJECTED)
			return false;
	return true;
}

/** kvd_sched_stats() - the counters so far */
const struct kvd_stats *kvd_sched_stats(const struct kvd_sched *s)
{
	return &s->st;
}

/** kvd_sched_check() - --check's state (rows compared, largest error) */
const struct kvd_check *kvd_sched_check(const struct kvd_sched *s)
{
	return &s->ck;
}

/** kvd_sched_kv_mode() - where the engine's attention reads and writes K/V */
const char *kvd_sched_kv_mode(const struct kvd_sched *s)
{
	return kvd_cache_mode(&s->kc);
}

/**
 * kvd_sched_counts() - requests running, waiting (arrived, not admitted)
 * and preempted
 * @s:         scheduler
 * @running:   receives the running ones
 * @waiting:   receives the waiting ones
 * @preempted: receives the preempted ones
 */
void kvd_sched_counts(const struct kvd_sched *s, uint32_t *running, uint32_t *waiting,
		      uint32_t *preempted)
{
	uint32_t i;

	*running = *waiting = *preempted = 0;
	for (i = 0; i < s->nr_req; i++) {
		*running += s->req[i].state == REQ_RUNNING;
		*waiting += s->req[i].state == REQ_WAITING;
		*preempted += s->req[i].state == REQ_PREEMPTED;
	}
}

/**
 * kvd_sched_create() - the engine for a stream of @o->requests requests
 * @out:  receives it
 * @o:    options (copied)
 * @c:    connection to kvmemd
 * @pool: the pool the model's K/V live in
 * @m:    the model (its geometry must match the pool's)
 *
 * Return: 0, -EINVAL (a geometry the kernels refuse), -ENOMEM.
 */
int kvd_sched_create(struct kvd_sched **out, const struct kvd_opts *o, struct kvc *c,
		     struct kvc_pool *pool, const struct kvd_model *m)
{
	struct kvd_sched *s = calloc(1, sizeof(*s));
	int err = -ENOMEM;

	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->c = c;
	s->pool = pool;
	s->m = m;
	s->bt = pool->geom.block_tokens;
	s->fault_pending = o->fault_step > 0;
	/* A batch of 1 still runs a request of 2 samples. */
	s->ss = calloc(o->batch + 1, sizeof(*s->ss));
	s->ss_sam = calloc(o->batch + 1, sizeof(*s->ss_sam));
	s->bigram = malloc(m->cfg.vocab * sizeof(*s->bigram));
	if (!s->ss || !s->ss_sam || !s->bigram)
		goto out_destroy;
	memset(s->bigram, 0xff, m->cfg.vocab * sizeof(*s->bigram));
	err = kvd_cache_init(&s->kc, pool, m->cfg.q_heads, o->staged, o->threads);
	err = err ?: kvd_check_init(&s->ck, m, pool->geom.dtype);
	err = err ?: stream_create(s);
	if (err)
		goto out_destroy;
	*out = s;
	return 0;

out_destroy:
	kvd_sched_destroy(s);
	return err;
}

/**
 * kvd_sched_destroy() - free the engine; sequences still held are freed
 * in the daemon when the connection closes
 * @s: scheduler, or NULL
 */
void kvd_sched_destroy(struct kvd_sched *s)
{
	uint32_t i, k;

	if (!s)
		return;
	for (i = 0; i < s->nr_req; i++)
		for (k = 0; k < 2; k++)
			sample_release(&s->req[i].s[k]);
	free(s->req);
	kvd_cache_free(&s->kc);
	kvd_check_free(&s->ck);
	kvd_work_free(&s->w);
	free(s->batch.rows);
	free(s->batch.seqs);
	free(s->batch.logits);
	free(s->sam);
	free(s->ss);
	free(s->ss_sam);
	free(s->bigram);
	free(s);
}
