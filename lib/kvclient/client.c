// SPDX-License-Identifier: MIT
/*
 * libkvclient: connection, requests, pools and sequences. One request is
 * one packet out and one reply packet in, matched by tag.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "kvclient.h"
#include "internal.h"

static int kvc_send(struct kvc *c, uint16_t opcode, const void *body, size_t len)
{
	struct kvmem_hdr *h = (struct kvmem_hdr *)c->buf;

	if (len > KVMEM_MSG_MAX - sizeof(*h))
		return -E2BIG;
	memset(h, 0, sizeof(*h));
	h->magic = KVMEM_MAGIC;
	h->version = KVMEM_VERSION;
	h->opcode = opcode;
	h->size = (uint32_t)(sizeof(*h) + len);
	h->tag = ++c->tag;
	if (len && body != h + 1)
		memmove(h + 1, body, len);
	if (send(c->fd, c->buf, h->size, MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

/*
 * Receive the reply into c->buf; a passed descriptor lands in *fd. Sets
 * *got when a well-formed reply arrived (its status is then returned).
 */
static int kvc_recv(struct kvc *c, uint16_t opcode, struct kvc_fds *fds, bool *got)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * KVMEM_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = c->buf, .iov_len = KVMEM_MSG_MAX };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct kvmem_hdr *h = (struct kvmem_hdr *)c->buf;
	struct cmsghdr *cm;
	uint32_t i, k;
	ssize_t n;
	int fd;

	do {
		n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (uint32_t)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (i = 0; i < k; i++) {
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (fds && fds->nr < KVMEM_MAX_FDS)
				fds->fd[fds->nr++] = fd;
			else
				close(fd);
		}
	}
	if ((size_t)n < sizeof(*h) || h->magic != KVMEM_MAGIC || h->size != (size_t)n ||
	    h->tag != c->tag || h->opcode != opcode)
		return -EBADMSG;
	*got = true;
	return h->status;
}

/**
 * kvc_request() - send one request and wait for its reply
 * @c:         connection
 * @opcode:    KVMEM_OP_*
 * @body:      request body
 * @len:       its length
 * @reply:     receives the reply body (inside the connection's buffer,
 *             valid until the next request), may be NULL
 * @reply_len: receives its length (0 when no reply came), may be NULL
 *
 * Return: the reply's status: >= 0, or a negative errno (from the daemon,
 * or of the transport).
 */
int kvc_request(struct kvc *c, uint16_t opcode, const void *body, size_t len,
		void **reply, size_t *reply_len)
{
	return kvc_request_fd(c, opcode, body, len, reply, reply_len, NULL);
}

int kvc_request_fd(struct kvc *c, uint16_t opcode, const void *body, size_t len,
		   void **reply, size_t *reply_len, struct kvc_fds *fds)
{
	struct kvmem_hdr *h = (struct kvmem_hdr *)c->buf;
	bool got = false;
	int err;

	if (reply)
		*reply = h + 1;
	if (reply_len)
		*reply_len = 0;
	err = kvc_send(c, opcode, body, len);
	if (err)
		return err;
	err = kvc_recv(c, opcode, fds, &got);
	if (got && reply_len)
		*reply_len = h->size - sizeof(*h);
	return err;
}

/**
 * kvc_call() - a request whose reply is one fixed struct
 * @c:       connection
 * @opcode:  KVMEM_OP_*
 * @body:    request body
 * @len:     its length
 * @rep:     receives the reply struct, or NULL when none is wanted
 * @rep_len: its size
 *
 * Return: the reply's status (>= 0), a negative errno, or -EBADMSG when a
 * successful reply is shorter than @rep_len.
 */
int kvc_call(struct kvc *c, uint16_t opcode, const void *body, size_t len, void *rep,
	     size_t rep_len)
{
	size_t rlen;
	void *r;
	int err;

	err = kvc_request(c, opcode, body, len, &r, &rlen);
	if (err < 0 || !rep)
		return err;
	if (rlen < rep_len)
		return -EBADMSG;
	memcpy(rep, r, rep_len);
	return err;
}

static int kvc_hello(struct kvc *c)
{
	struct kvmem_hello req = { .version_min = KVMEM_VERSION,
				   .version_max = KVMEM_VERSION,
				   .features = KVMEM_FEAT_TOKEN_IDS };
	struct kvmem_hello_reply rep;
	int err;

	err = kvc_call(c, KVMEM_OP_HELLO, &req, sizeof(req), &rep, sizeof(rep));
	if (err < 0)
		return err;
	c->client_id = rep.client_id;
	c->admin = rep.admin;
	return 0;
}

/**
 * kvc_connect() - connect to kvmemd and say HELLO
 * @path: socket path; NULL: $KVMEM_SOCKET, else KVMEM_DEFAULT_SOCKET
 * @out:  receives the connection
 *
 * Return: 0, -ENAMETOOLONG, -ENOMEM, or the errno of the connection (e.g.
 * -ENOENT, -ECONNREFUSED, -EACCES) or of HELLO (-EPROTONOSUPPORT).
 */
int kvc_connect(const char *path, struct kvc **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int sndbuf = KVMEM_MSG_MAX + 4096, err;
	struct kvc *c;

	if (!path)
		path = getenv(KVMEM_SOCKET_ENV);
	if (!path || !*path)
		path = KVMEM_DEFAULT_SOCKET;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->buf = malloc(KVMEM_MSG_MAX);
	if (!c->buf) {
		err = -ENOMEM;
		goto out_free;
	}
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		err = -errno;
		goto out_free;
	}
	/* A request of KVMEM_MSG_MAX must fit one packet. */
	setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = -errno;
		goto out_close;
	}
	err = kvc_hello(c);
	if (err)
		goto out_close;
	*out = c;
	return 0;

out_close:
	close(c->fd);
out_free:
	free(c->buf);
	free(c);
	return err;
}

/**
 * kvc_close() - close a connection; the daemon releases every sequence,
 * reference and pin it held, and its pools are unmapped
 * @c: connection, or NULL
 */
void kvc_close(struct kvc *c)
{
	uint32_t i;

	if (!c)
		return;
	close(c->fd);
	for (i = 0; i < c->nr_pools; i++) {
		kvc_device_unmap(c->pools[i]);
		free(c->pools[i]);
		free(c->stock[i]);
	}
	kvc_seqs_destroy(c);
	free(c->buf);
	free(c);
}

/* Index of @pool in c->pools, or -1. */
int kvc_pool_index(const struct kvc *c, const struct kvc_pool *pool)
{
	uint32_t i;

	for (i = 0; i < c->nr_pools; i++)
		if (c->pools[i] == pool)
			return (int)i;
	return -1;
}

/** kvc_client_id() - the daemon's number for this connection */
uint64_t kvc_client_id(const struct kvc *c)
{
	return c->client_id;
}

/**
 * kvc_fd() - the connection's socket, for poll(2) (readable: the daemon
 * closed it) or shutdown(2); the library owns it: reading from it or
 * closing it breaks the connection
 */
int kvc_fd(const struct kvc *c)
{
	return c->fd;
}

/** kvc_is_admin() - whether the daemon grants this peer admin operations */
int kvc_is_admin(const struct kvc *c)
{
	return c->admin;
}

/**
 * kvc_pool_open() - open a pool by name and map its device arena
 * @c:    connection
 * @name: pool name from the daemon's config
 * @out:  receives the pool, owned by the connection (freed by kvc_close)
 *
 * Return: 0, -ENOENT (no such pool), -EINVAL, -EMFILE (too many pools),
 * -EBADMSG, or the errno of mmap.
 */
int kvc_pool_open(struct kvc *c, const char *name, struct kvc_pool **out)
{
	struct kvmem_pool_open req = { 0 };
	struct kvc_fds fds = { .nr = 0 };
	struct kvmem_pool_info info;
	struct kvc_pool *p = NULL;
	size_t len;
	uint32_t i;
	void *r;
	int err;

	if (strlen(name) >= sizeof(req.name))
		return -EINVAL;
	if (c->nr_pools == KVC_MAX_POOLS)
		return -EMFILE;
	strcpy(req.name, name);
	err = kvc_request_fd(c, KVMEM_OP_POOL_OPEN, &req, sizeof(req), &r, &len, &fds);
	if (err < 0)
		goto out_close;
	err = -EBADMSG;
	if (len < sizeof(info) || !fds.nr)
		goto out_close;
	memcpy(&info, r, sizeof(info));
	if (info.nr_chunks != fds.nr)
		goto out_close;
	p = calloc(1, sizeof(*p));
	c->stock[c->nr_pools] = calloc(1, sizeof(struct kvc_stock));
	err = -ENOMEM;
	if (!p || !c->stock[c->nr_pools])
		goto out_free;
	p->handle = info.pool;
	p->geom = info.geom;
	p->frame_bytes = info.frame_bytes;
	p->arena_bytes = info.arena_bytes;
	memcpy(p->nr_frames, info.nr_frames, sizeof(p->nr_frames));
	err = kvc_device_map(p, &info, fds.fd, fds.nr);
	if (err)
		goto out_free;
	c->pools[c->nr_pools++] = p;
	*out = p;
	err = 0;
	goto out_close;

out_free:
	free(p);
	free(c->stock[c->nr_pools]);
	c->stock[c->nr_pools] = NULL;
out_close:
	for (i = 0; i < fds.nr; i++)
		close(fds.fd[i]);
	return err;
}
