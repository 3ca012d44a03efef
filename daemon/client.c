// SPDX-License-Identifier: MIT
/*
 * Client connections: accept with the peer's credentials, one request per
 * packet in, one reply per packet out, and teardown that releases every
 * sequence (and so every reference and pin) the client held, whatever the
 * reason the connection ended.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "kvmemd.h"

static bool peer_is_admin(struct kvmemd *d, int fd, const struct ucred *cr)
{
	gid_t groups[256];
	socklen_t len = sizeof(groups);
	unsigned int i;

	if (cr->uid == 0)
		return true;
	if (d->admin_gid == (gid_t)-1)
		return false;
	if (cr->gid == d->admin_gid)
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return false;
	for (i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == d->admin_gid)
			return true;
	return false;
}

static int client_setup(struct kvmemd *d, struct kvmemd_client *c, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int sndbuf = KVMEM_MSG_MAX + 4096;
	struct ucred cr;
	socklen_t len = sizeof(cr);

	/* A reply of KVMEM_MSG_MAX must fit one packet. */
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -errno;
	c->fd = fd;
	c->id = ++d->next_client;
	c->pid = cr.pid;
	c->uid = cr.uid;
	c->gid = cr.gid;
	c->admin = peer_is_admin(d, fd, &cr);
	c->since_ms = kvmemd_now_ms();
	INIT_LIST_HEAD(&c->wait_node);
	idr_init(&c->seqs, KVMEMD_MAX_SEQS);
	ev.data.ptr = c;
	if (epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	return 0;
}

/* One user may hold KVMEMD_MAX_PER_UID connections (root any number). */
static int uid_limit(struct kvmemd *d, int fd)
{
	struct kvmemd_client *c;
	struct ucred cr;
	socklen_t len = sizeof(cr);
	u32 n = 0;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -errno;
	if (cr.uid == 0)
		return 0;
	list_for_each_entry(c, &d->clients, node)
		n += c->uid == cr.uid;
	if (n < KVMEMD_MAX_PER_UID)
		return 0;
	kvlog(d, KVLOG_WARN, "refusing a connection: uid %u holds %u", cr.uid, n);
	return -EUSERS;
}

/** kvmemd_now_ms() - CLOCK_MONOTONIC in milliseconds */
u64 kvmemd_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (u64)ts.tv_sec * 1000 + (u64)ts.tv_nsec / 1000000;
}

/**
 * kvmemd_clients_expire() - close connections that never said HELLO
 * @d: daemon
 */
void kvmemd_clients_expire(struct kvmemd *d)
{
	struct kvmemd_client *c, *tmp;
	u64 now = kvmemd_now_ms();

	list_for_each_entry_safe(c, tmp, &d->clients, node) {
		if (c->hello || now - c->since_ms < KVMEMD_HELLO_TIMEOUT_MS)
			continue;
		kvlog(d, KVLOG_WARN, "client %llu: no HELLO in %u ms; closing it",
		      (unsigned long long)c->id, KVMEMD_HELLO_TIMEOUT_MS);
		kvmemd_client_close(d, c);
	}
}

/*
 * Out of descriptors, the listening socket stays readable: take the
 * pending connection with the spare descriptor and close it at once; with
 * no spare left, stop listening until a client goes (kvmemd_client_close()),
 * rather than spin. Returns 1 when a connection was refused, else 0.
 */
static int refuse_one(struct kvmemd *d)
{
	int fd;

	if (d->spare_fd >= 0) {
		close(d->spare_fd);
		fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			close(fd);
		d->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			kvlog(d, KVLOG_WARN, "connection refused: out of file descriptors");
			return 1;
		}
	}
	kvmemd_listen_pause(d, true);
	return 0;
}

/**
 * kvmemd_client_accept() - accept one connection
 * @d: daemon
 *
 * Return: 1 when a connection was taken (served, or refused and closed),
 * 0 when none is pending, or the negative errno of accept4().
 */
int kvmemd_client_accept(struct kvmemd *d)
{
	struct kvmemd_client *c;
	int fd, err;

	fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0 && (errno == EMFILE || errno == ENFILE))
		return refuse_one(d);
	if (fd < 0)
		return errno == EAGAIN ? 0 : -errno;
	if (d->nr_clients >= KVMEMD_MAX_CLIENTS) {
		kvlog(d, KVLOG_WARN, "refusing a connection: %u clients", d->nr_clients);
		err = -EMFILE;
		goto out_close;
	}
	err = uid_limit(d, fd);
	if (err)
		goto out_close;
	c = calloc(1, sizeof(*c));
	if (!c) {
		err = -ENOMEM;
		goto out_close;
	}
	err = client_setup(d, c, fd);
	if (err) {
		free(c);
		goto out_close;
	}
	list_add_tail(&c->node, &d->clients);
	d->nr_clients++;
	kvlog(d, KVLOG_DEBUG, "client %llu: connected (pid %d uid %u%s)",
	      (unsigned long long)c->id, (int)c->pid, c->uid, c->admin ? ", admin" : "");
	return 1;

out_close:
	kvlog(d, KVLOG_WARN, "connection refused: %s", strerror(-err));
	close(fd);
	return 1;
}

/**
 * kvmemd_client_close() - end a connection and release all it held
 * @d: daemon
 * @c: client; freed
 */
void kvmemd_client_close(struct kvmemd *d, struct kvmemd_client *c)
{
	struct kvmemd_seq *s;
	u64 id = 0, n = 0;

	kvmemd_wait_drop(d, c);
	d->wake = true;		/* what it held may be what a waiting STEP lacks */
	while ((s = idr_next(&c->seqs, &id))) {
		idr_remove(&c->seqs, id);
		kv_seqlen_record(&s->pool->seqlen, kv_seq_tokens(s->seq));
		kv_seq_free(s->seq);
		free(s);
		n++;
		id++;
	}
	idr_destroy(&c->seqs);
	kvmemd_reserve_drop(d, c);
	epoll_ctl(d->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	list_del_init(&c->node);
	d->nr_clients--;
	kvmemd_listen_pause(d, false);
	kvlog(d, KVLOG_DEBUG, "client %llu: gone, %llu sequences released",
	      (unsigned long long)c->id, (unsigned long long)n);
	free(c);
}

/**
 * kvmemd_client_send() - send one reply, with descriptors when @nr_fds > 0
 * @d:      daemon
 * @c:      client
 * @msg:    the reply
 * @len:    its length
 * @fds:    descriptors to pass with SCM_RIGHTS (they stay open here)
 * @nr_fds: their number, at most KVMEM_MAX_FDS
 *
 * Never blocks: a client whose receive queue is full is not reading its
 * replies, and gets -EAGAIN (the caller drops it).
 *
 * Return: 0 or a negative errno.
 */
int kvmemd_client_send(struct kvmemd *d, struct kvmemd_client *c, const void *msg,
		       size_t len, const int *fds, u32 nr_fds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * KVMEM_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;

	if (nr_fds > KVMEM_MAX_FDS)
		return -E2BIG;
	if (nr_fds) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nr_fds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nr_fds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nr_fds);
	}
	if (sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

/* Receive one packet; descriptors a client sends are closed unread. */
static ssize_t client_recv(struct kvmemd *d, struct kvmemd_client *c)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = d->buf, .iov_len = KVMEM_MSG_MAX + 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm;
	ssize_t n;
	int fd;
	size_t i;

	n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (i = 0; (i + 1) * sizeof(int) <= cm->cmsg_len - CMSG_LEN(0); i++) {
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			close(fd);
		}
	}
	/* the buffer holds one byte more than a request may have, to see it */
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || n > KVMEM_MSG_MAX)
		return -EMSGSIZE;
	return n;
}

/*
 * A read of 0 bytes: the client's end (it shut down or closed), or an
 * empty packet, which SOCK_SEQPACKET delivers as 0 bytes too and which is
 * answered as malformed, like any short one.
 */
static bool client_hung_up(const struct kvmemd_client *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLRDHUP };
	int n = poll(&p, 1, 0);

	return n < 0 || (n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)));
}

/**
 * kvmemd_client_input() - serve what a client sent
 * @d: daemon
 * @c: client with input pending; closed on EOF, error or a reply it does
 *     not take
 */
void kvmemd_client_input(struct kvmemd *d, struct kvmemd_client *c)
{
	const int *fds;
	ssize_t n, len;
	u32 nr_fds;
	int err;

	for (;;) {
		n = client_recv(d, c);
		if (n == -EAGAIN)
			return;
		if ((n == 0 && client_hung_up(c)) || (n < 0 && n != -EMSGSIZE))
			goto out_close;
		/* An oversized packet is answered like any malformed one. */
		len = kvmemd_dispatch(d, c, (const struct kvmem_hdr *)d->buf,
				      n < 0 ? 0 : (size_t)n, &fds, &nr_fds);
		/* a STEP that found no room may wait for another client's frames */
		if (n > 0 && kvmemd_wait_step(d, c, (const struct kvmem_hdr *)d->buf, (size_t)n))
			return;
		if (n < 0) {
			/* The head of the packet was read: echo its opcode and tag. */
			const struct kvmem_hdr *h = (const struct kvmem_hdr *)d->buf;
			struct kvmem_hdr *rep = (struct kvmem_hdr *)d->out;

			rep->status = -EMSGSIZE;
			rep->opcode = h->opcode;
			rep->tag = h->tag;
		}
		err = kvmemd_client_send(d, c, d->out, (size_t)len, fds, nr_fds);
		if (err) {
			kvlog(d, KVLOG_WARN, "client %llu: reply not taken (%s); dropping it",
			      (unsigned long long)c->id, strerror(-err));
			goto out_close;
		}
		if (((struct kvmem_hdr *)d->out)->status >= 0)
			kvmemd_wait_release(d, ((struct kvmem_hdr *)d->out)->opcode);
	}
out_close:
	kvmemd_client_close(d, c);
}

/**
 * kvmemd_client_event() - an event of the event loop on @c's connection
 * @d:      daemon
 * @c:      client
 * @events: EPOLL* bits
 *
 * A client whose STEP waits (wait.c) is not read: only its going is
 * noticed, and it is closed.
 */
void kvmemd_client_event(struct kvmemd *d, struct kvmemd_client *c, u32 events)
{
	if (!c->wait_msg)
		kvmemd_client_input(d, c);
	else if (events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP))
		kvmemd_client_close(d, c);
}
