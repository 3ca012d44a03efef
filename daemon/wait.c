// SPDX-License-Identifier: MIT
/*
 * STEPs that wait for frames. A STEP that found no room (-ENOMEM) before
 * it changed anything, when other clients are connected, need not fail at
 * once: the frames it lacks may be pinned by another client's active
 * sequences, which reclaim cannot take, and that client may be about to
 * release them. Such a STEP waits, as a task in the kernel's direct
 * reclaim waits for writeback: the daemon keeps the request, stops
 * reading from its client, and tries it again, oldest waiter first, after
 * each request of another client that can release frames and when a
 * client goes. It answers on the first try that succeeds or fails
 * otherwise, or, after step.wait_ms, with the last try's -ENOMEM. A
 * STEP that did part of its batch replies at once (the client resends the
 * rest, which then waits), so a try never repeats work. When every client
 * waits, none will release anything: the oldest waiter is answered at
 * once (-ENOMEM), so that its client can give way (preempt), as the
 * kernel's OOM killer ends a reclaim that cannot progress.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include "kvmemd.h"

/* Whether the reply in d->out to the STEP @req is a no-room failure that did nothing. */
static bool step_may_wait(struct kvmemd *d, const struct kvmem_hdr *req, size_t len)
{
	const struct kvmem_hdr *rep = (const struct kvmem_hdr *)d->out;
	struct kvmem_step_reply head;
	struct kvmem_step st;

	if (!d->cfg.step_wait_ms || d->nr_clients < 2 || len < sizeof(*req) + sizeof(st) ||
	    req->opcode != KVMEM_OP_STEP || rep->status != -ENOMEM ||
	    rep->size < sizeof(*rep) + sizeof(head))
		return false;
	memcpy(&st, req + 1, sizeof(st));
	memcpy(&head, rep + 1, sizeof(head));
	return !(st.flags & KVMEM_NOWAIT) && !head.batch.done;
}

/*
 * Read from @c again (@events EPOLLIN), or only notice it going (0).
 * Returns 0 or a negative errno (ENOMEM: the kernel's; the descriptor is
 * registered as long as @c exists).
 */
static int client_watch(struct kvmemd *d, struct kvmemd_client *c, u32 events)
{
	struct epoll_event ev = { .events = events | EPOLLRDHUP, .data.ptr = c };

	return epoll_ctl(d->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) ? -errno : 0;
}

/**
 * kvmemd_wait_step() - keep a STEP that found no room, to try it again
 * @d:   daemon; d->out holds the reply of its first try
 * @c:   its client
 * @req: the request, as received
 * @len: its length
 *
 * Return: true when the STEP waits (no reply now; nothing more is read
 * from @c until it is answered), false when its reply is to go now.
 */
bool kvmemd_wait_step(struct kvmemd *d, struct kvmemd_client *c, const struct kvmem_hdr *req,
		      size_t len)
{
	if (!step_may_wait(d, req, len))
		return false;
	c->wait_msg = malloc(len);
	if (!c->wait_msg)
		return false;
	if (client_watch(d, c, 0)) {
		/* it could not stop being read: it is answered now */
		free(c->wait_msg);
		c->wait_msg = NULL;
		return false;
	}
	memcpy(c->wait_msg, req, len);
	c->wait_len = len;
	c->wait_until = kvmemd_now_ms() + d->cfg.step_wait_ms;
	list_add_tail(&c->wait_node, &d->waiters);
	d->nr_waiters++;
	return true;
}

/* @c stops waiting: the STEP is forgotten, its client read again. */
static void wait_end(struct kvmemd *d, struct kvmemd_client *c)
{
	list_del_init(&c->wait_node);
	d->nr_waiters--;
	free(c->wait_msg);
	c->wait_msg = NULL;
	c->wait_len = 0;
}

/**
 * kvmemd_wait_drop() - forget @c's waiting STEP, if any (it is going)
 * @d: daemon
 * @c: client
 */
void kvmemd_wait_drop(struct kvmemd *d, struct kvmemd_client *c)
{
	if (c->wait_msg)
		wait_end(d, c);
}

/*
 * Try @c's STEP again; answer it unless it found no room again before its
 * time is up (or, with @last, in any case). A client that does not take
 * the answer is closed, as kvmemd_client_input() closes one.
 */
static void wait_try(struct kvmemd *d, struct kvmemd_client *c, u64 now, bool last)
{
	const int *fds;
	ssize_t len;
	u32 nr_fds;
	int err;

	len = kvmemd_dispatch(d, c, c->wait_msg, c->wait_len, &fds, &nr_fds);
	c->nr_reqs--;	/* one request, however many tries */
	if (!last && now < c->wait_until && step_may_wait(d, c->wait_msg, c->wait_len))
		return;
	wait_end(d, c);
	err = kvmemd_client_send(d, c, d->out, (size_t)len, fds, nr_fds);
	if (err) {
		kvlog(d, KVLOG_WARN, "client %llu: reply not taken (%s); dropping it",
		      (unsigned long long)c->id, strerror(-err));
		kvmemd_client_close(d, c);
		return;
	}
	err = client_watch(d, c, EPOLLIN);
	if (err) {
		/* never read again, it would hang: better it sees the close */
		kvlog(d, KVLOG_WARN, "client %llu: cannot watch it again (%s); dropping it",
		      (unsigned long long)c->id, strerror(-err));
		kvmemd_client_close(d, c);
	}
}

/**
 * kvmemd_wait_run() - try the waiting STEPs whose time is up, and all of
 * them after d->wake was set; oldest first
 * @d: daemon
 */
void kvmemd_wait_run(struct kvmemd *d)
{
	struct kvmemd_client *c, *next;
	const bool wake = d->wake;
	u64 now;

	d->wake = false;
	if (list_empty(&d->waiters))
		return;
	now = kvmemd_now_ms();
	list_for_each_entry_safe(c, next, &d->waiters, wait_node)
		if (wake || now >= c->wait_until)
			wait_try(d, c, now, false);
	/* every client waits: the oldest gives way */
	if (d->nr_waiters && d->nr_waiters == d->nr_clients)
		wait_try(d, list_first_entry(&d->waiters, struct kvmemd_client, wait_node),
			 now, true);
}

/**
 * kvmemd_wait_timeout() - milliseconds until the first waiting STEP's
 * time is up, for epoll_wait(); -1 when none waits
 * @d: daemon
 */
int kvmemd_wait_timeout(struct kvmemd *d)
{
	struct kvmemd_client *c;
	u64 now, first = UINT64_MAX;

	if (!d->nr_waiters)
		return -1;
	if (d->wake || d->nr_waiters == d->nr_clients)
		return 0;
	list_for_each_entry(c, &d->waiters, wait_node)
		if (c->wait_until < first)
			first = c->wait_until;
	now = kvmemd_now_ms();
	return first <= now ? 0 : (int)(first - now);
}

/**
 * kvmemd_wait_release() - after a request of @op that succeeded: it may
 * have released frames (freed, truncated or deactivated sequences, a
 * reserve given back, caches dropped, watermarks lowered), so the waiting
 * STEPs are to be tried again
 * @d:  daemon
 * @op: KVMEM_OP_*
 */
void kvmemd_wait_release(struct kvmemd *d, u16 op)
{
	switch (op) {
	case KVMEM_OP_SEQ_FREE:
	case KVMEM_OP_SEQ_TRUNCATE:
	case KVMEM_OP_DEACTIVATE:
	case KVMEM_OP_RESERVE:
	case KVMEM_OP_DROP_CACHES:
	case KVMEM_OP_SYSCTL_SET:
		d->wake = true;
	}
}
