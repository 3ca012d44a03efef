// SPDX-License-Identifier: MIT
/*
 * The protocol against malformed input, on a raw SEQPACKET socket: short,
 * oversized and mis-sized messages, bad magic, version and flags, unknown
 * opcodes, requests before HELLO, non-zero reserved fields, bodies longer
 * and shorter than the daemon's structs, absurd counts and offsets. Each
 * gets its error, and the daemon keeps serving this client and others.
 */
#include "kselftest_harness.h"
#include <poll.h>
#include <pwd.h>
#include <sys/resource.h>
#include "daemon_test.h"

static char msg[KVMEM_MSG_MAX + 4096];

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), sz = 4 << 20;
	struct timeval tv = { .tv_sec = 10 };

	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	/* A reply that never comes fails the test instead of hanging it. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send @len raw bytes; return the reply's status, or 1000 + errno. */
static int raw_send(int fd, const void *buf, size_t len, struct kvmem_hdr *rep)
{
	static char in[KVMEM_MSG_MAX];
	ssize_t n;

	if (send(fd, buf, len, MSG_NOSIGNAL) < 0)
		return 1000 + errno;
	n = recv(fd, in, sizeof(in), 0);
	if (n < (ssize_t)sizeof(*rep))
		return 2000;
	memcpy(rep, in, sizeof(*rep));
	return rep->status;
}

/* A well-formed header for @op with a @len-byte body from @body. */
static size_t build(uint16_t op, const void *body, size_t len)
{
	struct kvmem_hdr h = { .magic = KVMEM_MAGIC, .version = KVMEM_VERSION, .opcode = op,
			       .size = (uint32_t)(sizeof(h) + len), .tag = 7 };

	memcpy(msg, &h, sizeof(h));
	if (len)
		memcpy(msg + sizeof(h), body, len);
	return sizeof(h) + len;
}

static int req(int fd, uint16_t op, const void *body, size_t len)
{
	struct kvmem_hdr rep;

	return raw_send(fd, msg, build(op, body, len), &rep);
}

static int hello(int fd)
{
	struct kvmem_hello h = { .version_min = KVMEM_VERSION, .version_max = KVMEM_VERSION };

	return req(fd, KVMEM_OP_HELLO, &h, sizeof(h));
}

FIXTURE(proto) {
	struct daemon d;
	int fd;
};

FIXTURE_SETUP(proto)
{
	ASSERT_EQ(0, daemon_start(&self->d, NULL));
	self->fd = raw_connect(self->d.sock);
	ASSERT_LE(0, self->fd);
}

FIXTURE_TEARDOWN(proto)
{
	struct kvc *c;
	char buf[4096];

	/* Whatever came before, a fresh client is served. */
	EXPECT_EQ(0, kvc_connect(self->d.sock, &c));
	EXPECT_LT(0, kvc_stats(c, KVMEM_STATS_MEMINFO, 0, buf, sizeof(buf)));
	kvc_close(c);
	close(self->fd);
	EXPECT_EQ(0, daemon_stop(&self->d));
	daemon_cleanup(&self->d);
}

TEST_F(proto, header_errors)
{
	struct kvmem_hdr rep, *h = (struct kvmem_hdr *)msg;
	size_t len;

	EXPECT_EQ(-EBADMSG, raw_send(self->fd, "short", 5, &rep));
	len = build(KVMEM_OP_HELLO, NULL, 0);
	h->magic = 0x12345678;
	EXPECT_EQ(-EBADMSG, raw_send(self->fd, msg, len, &rep));
	len = build(KVMEM_OP_HELLO, NULL, 0);
	h->size += 8;
	EXPECT_EQ(-EBADMSG, raw_send(self->fd, msg, len, &rep));
	len = build(KVMEM_OP_HELLO, NULL, 0);
	h->flags = 1;
	EXPECT_EQ(-EBADMSG, raw_send(self->fd, msg, len, &rep));
	len = build(KVMEM_OP_HELLO, NULL, 0);
	h->status = -1;
	EXPECT_EQ(-EBADMSG, raw_send(self->fd, msg, len, &rep));
	len = build(KVMEM_OP_HELLO, NULL, 0);
	h->version = 9;
	EXPECT_EQ(-EPROTONOSUPPORT, raw_send(self->fd, msg, len, &rep));
	/* The tag comes back with the error. */
	EXPECT_EQ(7, rep.tag);
	len = build(KVMEM_OP_HELLO, NULL, 0);
	EXPECT_EQ(-EMSGSIZE, raw_send(self->fd, msg, KVMEM_MSG_MAX + 100, &rep));
	EXPECT_EQ(7, rep.tag);
	EXPECT_EQ(KVMEM_OP_HELLO, rep.opcode);
	/* one byte past the largest request: too large as well */
	EXPECT_EQ(-EMSGSIZE, raw_send(self->fd, msg, KVMEM_MSG_MAX + 1, &rep));
	EXPECT_EQ(KVMEM_OP_HELLO, rep.opcode);
	EXPECT_EQ(0, hello(self->fd));
}

TEST_F(proto, hello_first_and_unknown_opcodes)
{
	struct kvmem_seq_req s = { .pool = 1 };
	struct kvmem_hello h = { .version_min = KVMEM_VERSION + 1,
				 .version_max = KVMEM_VERSION + 2 };

	EXPECT_EQ(-EPROTO, req(self->fd, KVMEM_OP_SEQ_CREATE, &s, sizeof(s)));
	EXPECT_EQ(-EPROTONOSUPPORT, req(self->fd, KVMEM_OP_HELLO, &h, sizeof(h)));
	ASSERT_EQ(0, hello(self->fd));
	EXPECT_EQ(-EOPNOTSUPP, req(self->fd, 99, NULL, 0));
	EXPECT_EQ(-EOPNOTSUPP, req(self->fd, 0, NULL, 0));
	EXPECT_EQ(0, req(self->fd, KVMEM_OP_SEQ_CREATE, &s, sizeof(s)));
}

TEST_F(proto, struct_size_rules)
{
	struct kvmem_hello h = { .version_min = KVMEM_VERSION, .version_max = KVMEM_VERSION };
	char longer[sizeof(h) + 16] = { 0 };

	h.reserved[2] = 5;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_HELLO, &h, sizeof(h)));
	h.reserved[2] = 0;
	/* Shorter (an older peer): zero-extended. */
	EXPECT_EQ(0, req(self->fd, KVMEM_OP_HELLO, &h, 8));
	/* Longer (a newer peer): only a zero tail is accepted. */
	memcpy(longer, &h, sizeof(h));
	EXPECT_EQ(0, req(self->fd, KVMEM_OP_HELLO, longer, sizeof(longer)));
	longer[sizeof(h) + 3] = 1;
	EXPECT_EQ(-E2BIG, req(self->fd, KVMEM_OP_HELLO, longer, sizeof(longer)));
}

TEST_F(proto, absurd_counts_and_offsets)
{
	struct {
		struct kvmem_step st;
		struct kvmem_step_seq seq[2];
	} s;
	struct {
		struct kvmem_seq_batch b;
		uint64_t ids[2];
	} a;
	struct kvmem_seq_req cr = { .pool = 1 };
	struct kvmem_hdr rep;
	uint64_t id;

	ASSERT_EQ(0, hello(self->fd));
	ASSERT_EQ(0, raw_send(self->fd, msg, build(KVMEM_OP_SEQ_CREATE, &cr, sizeof(cr)), &rep));
	memcpy(&id, (char *)&rep, 0);
	{
		static char in[256];
		ssize_t n;

		build(KVMEM_OP_SEQ_CREATE, &cr, sizeof(cr));
		send(self->fd, msg, sizeof(struct kvmem_hdr) + sizeof(cr), 0);
		n = recv(self->fd, in, sizeof(in), 0);
		ASSERT_GE(n, (ssize_t)(sizeof(rep) + sizeof(struct kvmem_seq_reply)));
		memcpy(&id, in + sizeof(rep), sizeof(id));
	}
	memset(&s, 0, sizeof(s));
	s.st.nr_seqs = 1000000;
	s.st.seqs_off = sizeof(s.st);
	s.seq[0] = (struct kvmem_step_seq){ .seq = id, .nr_tokens = 1 };
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s)));
	s.st.nr_seqs = 2;		/* more than the message holds */
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s) - 8));
	s.st.nr_seqs = 1;
	s.st.seqs_off = 4096;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s)));
	s.st.seqs_off = 0xfffffff8;	/* far past the end, with an early token array */
	s.st.tokens_off = sizeof(s.st);
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s)));
	s.st.tokens_off = 0;
	s.st.seqs_off = sizeof(s.st) + 4;	/* misaligned */
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s)));
	s.st.seqs_off = sizeof(s.st);
	s.seq[0].nr_tokens = 1u << 30;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s)));
	s.seq[0].nr_tokens = 1;
	s.seq[0].nr_frames = 1;		/* reserve frames, but none sent */
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s)));
	s.st.frames_off = sizeof(s.st) + sizeof(s.seq[0]);	/* seq[1]: not reserved */
	s.seq[1] = (struct kvmem_step_seq){ .seq = 3, .nr_tokens = 7 };
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s)));
	s.seq[0].nr_frames = 0;
	s.st.frames_off = 0;
	s.st.tokens_off = sizeof(s) + 64;	/* token ids past the end */
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s)));
	s.st.tokens_off = 0;
	s.st.flags = 0x80;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s)));
	s.st.flags = 0;
	s.seq[0].seq = id + (1ull << 32);	/* stale generation: not ours */
	EXPECT_EQ(-ENOENT, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s)));
	s.seq[0].seq = id;
	EXPECT_EQ(0, req(self->fd, KVMEM_OP_STEP, &s, sizeof(s.st) + sizeof(s.seq[0])));

	memset(&a, 0, sizeof(a));
	a.b.ids_off = sizeof(a.b);
	a.ids[0] = id;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_ACTIVATE, &a, sizeof(a)));	/* nr 0 */
	a.b.nr = 5000;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_ACTIVATE, &a, sizeof(a)));
	a.b.nr = 1;
	a.b.ids_off = 3;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_DEACTIVATE, &a, sizeof(a)));
	a.b.ids_off = sizeof(a.b);
	a.b.pad = 1;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_DEACTIVATE, &a, sizeof(a)));
	a.b.pad = 0;
	EXPECT_EQ(0, req(self->fd, KVMEM_OP_DEACTIVATE, &a, sizeof(a.b) + 8));
	cr.pool = 77;
	EXPECT_EQ(-ENOENT, req(self->fd, KVMEM_OP_SEQ_CREATE, &cr, sizeof(cr)));
}

/* A new sequence of pool 1 on @fd; its id, or 0. */
static uint64_t new_seq(int fd)
{
	struct kvmem_seq_req sr = { .pool = 1 };
	struct kvmem_seq_reply rep;
	static char in[4096];

	send(fd, msg, build(KVMEM_OP_SEQ_CREATE, &sr, sizeof(sr)), 0);
	if (recv(fd, in, sizeof(in), 0) < (ssize_t)(sizeof(struct kvmem_hdr) + sizeof(rep)) ||
	    ((struct kvmem_hdr *)in)->status)
		return 0;
	memcpy(&rep, in + sizeof(struct kvmem_hdr), sizeof(rep));
	return rep.seq;
}

/*
 * Free sequence @seq: 0 when it held no token (truncating it to 1 was
 * refused), else -1
 */
static int free_empty(int fd, uint64_t seq)
{
	struct kvmem_seq_req sr = { .seq = seq, .nr_tokens = 1 };
	int held = req(fd, KVMEM_OP_SEQ_TRUNCATE, &sr, sizeof(sr)) != -EINVAL;

	sr.nr_tokens = 0;
	req(fd, KVMEM_OP_SEQ_FREE, &sr, sizeof(sr));
	return held ? -1 : 0;
}

/*
 * A STEP of two new sequences, of @n0 and @n1 tokens, taking @nf0 and
 * @nf1 of the reserve frames @f0, @f1 (two in all). Returns its status,
 * or 1 when a sequence holds a token afterwards (both are freed).
 */
static int step_two_new(int fd, uint32_t n0, uint32_t nf0, uint32_t n1, uint32_t nf1,
			uint32_t f0, uint32_t f1)
{
	struct {
		struct kvmem_step st;
		struct kvmem_step_seq s[2];
		uint32_t frames[2];
	} m;
	int status;

	memset(&m, 0, sizeof(m));
	m.st.nr_seqs = 2;
	m.st.flags = KVMEM_STEP_NOSLOTS;
	m.st.seqs_off = sizeof(m.st);
	m.st.frames_off = (uint32_t)((char *)m.frames - (char *)&m);
	m.s[0] = (struct kvmem_step_seq){ .seq = new_seq(fd), .nr_tokens = n0, .nr_frames = nf0 };
	m.s[1] = (struct kvmem_step_seq){ .seq = new_seq(fd), .nr_tokens = n1, .nr_frames = nf1 };
	m.frames[0] = f0;
	m.frames[1] = f1;
	status = req(fd, KVMEM_OP_STEP, &m, sizeof(m));
	if (free_empty(fd, m.s[0].seq) | free_empty(fd, m.s[1].seq))
		return 1;
	return status;
}

TEST_F(proto, reserve_frames_are_checked)
{
	struct {
		struct kvmem_reserve r;
		uint32_t frames[4];
	} m;
	static char in[4096];
	struct kvmem_reserve_reply rep;
	uint32_t got[2];
	ssize_t n;

	ASSERT_EQ(0, hello(self->fd));
	memset(&m, 0, sizeof(m));
	m.r.pool = 1;
	m.r.target = 2;
	send(self->fd, msg, build(KVMEM_OP_RESERVE, &m.r, sizeof(m.r)), 0);
	n = recv(self->fd, in, sizeof(in), 0);
	ASSERT_EQ((ssize_t)(sizeof(struct kvmem_hdr) + sizeof(rep) + 8), n);
	EXPECT_EQ(2, ((struct kvmem_hdr *)in)->status);
	memcpy(got, in + sizeof(struct kvmem_hdr) + sizeof(rep), sizeof(got));
	/* The same frame twice, a frame not ours, a target too large. */
	m.r.target = 0;
	m.r.nr_release = 2;
	m.r.release_off = sizeof(m.r);
	m.frames[0] = got[0];
	m.frames[1] = got[0];
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_RESERVE, &m, sizeof(m.r) + 8));
	m.frames[1] = 100000;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_RESERVE, &m, sizeof(m.r) + 8));
	m.r.nr_release = 0;
	m.r.target = KVMEM_RESERVE_MAX + 1;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_RESERVE, &m, sizeof(m.r)));
	/* Releases with no array. */
	m.r.target = 0;
	m.r.nr_release = 1;
	m.r.release_off = 0;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_RESERVE, &m, sizeof(m.r)));
	m.r.release_off = sizeof(m.r);
	/* One frame named by two sequences of a STEP: refused, nothing done. */
	EXPECT_EQ(-EINVAL, step_two_new(self->fd, 1, 1, 1, 1, got[0], got[0]));
	/*
	 * More frames than a sequence's new tokens need (one token: one
	 * block; none: none), after a good entry: refused, nothing done.
	 */
	EXPECT_EQ(-EINVAL, step_two_new(self->fd, 3, 0, 1, 2, got[0], got[1]));
	EXPECT_EQ(-EINVAL, step_two_new(self->fd, 3, 0, 0, 2, got[0], got[1]));
	/* tokens past a sequence's limit (KV_SEQ_MAX_TOKENS, 2^30) after a good entry */
	EXPECT_EQ(-E2BIG, step_two_new(self->fd, 3, 0, (1u << 30) + 1, 0, 0, 0));
	/* Both are still ours: releasing them works, once. */
	m.r.target = 0;
	m.r.nr_release = 2;
	m.frames[1] = got[1];
	EXPECT_EQ(0, req(self->fd, KVMEM_OP_RESERVE, &m, sizeof(m.r) + 8));
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_RESERVE, &m, sizeof(m.r) + 8));
}

/*
 * An empty packet (a read of 0 bytes, as the end of a connection reads)
 * is malformed, not the end: the client and its sequence stay.
 */
TEST_F(proto, empty_packet_keeps_the_connection)
{
	struct kvmem_seq_req sr = { 0 };
	struct kvmem_hdr rep;

	ASSERT_EQ(0, hello(self->fd));
	sr.seq = new_seq(self->fd);
	ASSERT_NE(0, sr.seq);
	EXPECT_EQ(-EBADMSG, raw_send(self->fd, "", 0, &rep));
	EXPECT_EQ(-EBADMSG, raw_send(self->fd, "", 0, &rep));
	EXPECT_EQ(0, req(self->fd, KVMEM_OP_SEQ_FREE, &sr, sizeof(sr)));
}

TEST_F(proto, silent_connections_are_closed)
{
	struct pollfd p = { .fd = self->fd, .events = POLLIN };
	char c;

	/* No HELLO: the daemon closes the connection after 5 s. */
	ASSERT_EQ(1, poll(&p, 1, 10000));
	EXPECT_EQ(0, recv(self->fd, &c, 1, 0));
}

/* One user holds at most 1024 connections; others are still served. */
TEST_F(proto, connections_per_user_are_limited)
{
	struct passwd *pw = getpwnam("nobody");
	struct rlimit rl;
	pid_t pid;
	int status;

	if (getuid() != 0 || !pw || getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_max < 2048)
		SKIP(return, "needs root, a 'nobody' user and 2048 descriptors");
	pid = fork();
	if (pid == 0) {
		int fds[1025], i;
		char c;

		rl.rlim_cur = 2048;
		if (setrlimit(RLIMIT_NOFILE, &rl) || setgid(pw->pw_gid) || setuid(pw->pw_uid))
			_exit(10);
		for (i = 0; i < 1025; i++) {
			fds[i] = raw_connect(self->d.sock);
			if (fds[i] < 0)
				_exit(11);
		}
		if (recv(fds[1024], &c, 1, 0) != 0)	/* refused: closed at once */
			_exit(12);
		if (hello(fds[0]))			/* the others are served */
			_exit(13);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	EXPECT_EQ(0, WEXITSTATUS(status));
	EXPECT_EQ(0, hello(self->fd));		/* root is not limited */
}

/* Out of descriptors: connections are refused, not spun on, others served. */
/*
 * Send HELLO on every connection in @fds, then collect replies for up to
 * @ms milliseconds: connections the daemon refused read end-of-file, ones
 * left in the backlog while it stopped listening read nothing. Returns how
 * many were answered with status 0.
 */
static int hello_all(int *fds, int n, int ms)
{
	struct kvmem_hello h = { .version_min = KVMEM_VERSION, .version_max = KVMEM_VERSION };
	struct pollfd pfd[64];
	struct kvmem_hdr rep;
	int i, ok = 0, left = 0;
	size_t len = build(KVMEM_OP_HELLO, &h, sizeof(h));

	for (i = 0; i < n; i++) {
		pfd[i].fd = fds[i] >= 0 && send(fds[i], msg, len, MSG_NOSIGNAL) >= 0 ? fds[i] : -1;
		pfd[i].events = POLLIN;
		left += pfd[i].fd >= 0;
	}
	while (left && poll(pfd, n, ms) > 0) {
		for (i = 0; i < n; i++) {
			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			if (recv(pfd[i].fd, &rep, sizeof(rep), MSG_DONTWAIT) == sizeof(rep) &&
			    rep.status == 0)
				ok++;
			pfd[i].fd = -1;
			left--;
		}
	}
	return ok;
}

TEST(out_of_descriptors)
{
	struct daemon d;
	int fds[64], i, ok;

	ASSERT_EQ(0, daemon_start_nofile(&d, NULL, 32));
	for (i = 0; i < 64; i++)
		fds[i] = raw_connect(d.sock);
	ok = hello_all(fds, 64, 2000);
	EXPECT_GT(ok, 5);
	EXPECT_LT(ok, 32);
	for (i = 0; i < 64; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	/* Descriptors came back: a new client is served. */
	usleep(100000);
	i = raw_connect(d.sock);
	ASSERT_LE(0, i);
	EXPECT_EQ(0, hello(i));
	close(i);
	EXPECT_EQ(0, daemon_stop(&d));
	daemon_cleanup(&d);
}

TEST_F(proto, bad_strings)
{
	struct kvmem_pool_open po;
	struct kvmem_sysctl sc;

	ASSERT_EQ(0, hello(self->fd));
	memset(&po, 'x', sizeof(po.name));
	memset(po.reserved, 0, sizeof(po.reserved));
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_POOL_OPEN, &po, sizeof(po)));	/* no NUL */
	memset(&po, 0, sizeof(po));
	strcpy(po.name, "nope");
	EXPECT_EQ(-ENOENT, req(self->fd, KVMEM_OP_POOL_OPEN, &po, sizeof(po)));
	memset(&sc, 'k', sizeof(sc));
	memset(sc.reserved, 0, sizeof(sc.reserved));
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_SYSCTL_GET, &sc, sizeof(sc)));
}

/*
 * ADMIT: unknown pools, no blocks, non-zero reserved fields and tails are
 * refused; a short body is zero-extended; the verdict is also the status.
 * The built-in pool has 1024 device frames, all free.
 */
TEST_F(proto, admit_requests_are_checked)
{
	struct {
		struct kvmem_admit a;
		uint64_t tail;
	} m;
	struct kvmem_admit_reply rep;
	static char in[4096];
	ssize_t n;

	ASSERT_EQ(0, hello(self->fd));
	memset(&m, 0, sizeof(m));
	m.a.nr_blocks = 1;
	EXPECT_EQ(-ENOENT, req(self->fd, KVMEM_OP_ADMIT, &m.a, sizeof(m.a)));	/* pool 0 */
	m.a.pool = 99;
	EXPECT_EQ(-ENOENT, req(self->fd, KVMEM_OP_ADMIT, &m.a, sizeof(m.a)));
	m.a.pool = 1;
	m.a.nr_blocks = 0;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_ADMIT, &m.a, sizeof(m.a)));
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_ADMIT, &m.a, 4));	/* no nr_blocks */
	m.a.nr_blocks = 1;
	m.a.reserved[1] = 1;
	EXPECT_EQ(-EINVAL, req(self->fd, KVMEM_OP_ADMIT, &m.a, sizeof(m.a)));
	m.a.reserved[1] = 0;
	m.tail = 1;
	EXPECT_EQ(-E2BIG, req(self->fd, KVMEM_OP_ADMIT, &m, sizeof(m)));
	m.tail = 0;
	EXPECT_EQ(KVMEM_ADMIT_NOW, req(self->fd, KVMEM_OP_ADMIT, &m, sizeof(m)));
	EXPECT_EQ(KVMEM_ADMIT_NOW, req(self->fd, KVMEM_OP_ADMIT, &m.a, 8));
	m.a.nr_blocks = 1025;
	EXPECT_EQ(KVMEM_ADMIT_NEVER, req(self->fd, KVMEM_OP_ADMIT, &m.a, sizeof(m.a)));
	/* 1024 frames, of which a STEP may take all but the min watermark's 8 */
	m.a.nr_blocks = 1017;
	EXPECT_EQ(KVMEM_ADMIT_NEVER, req(self->fd, KVMEM_OP_ADMIT, &m.a, sizeof(m.a)));
	m.a.nr_blocks = 1016;
	send(self->fd, msg, build(KVMEM_OP_ADMIT, &m.a, sizeof(m.a)), 0);
	n = recv(self->fd, in, sizeof(in), 0);
	ASSERT_EQ((ssize_t)(sizeof(struct kvmem_hdr) + sizeof(rep)), n);
	EXPECT_EQ(KVMEM_ADMIT_NOW, ((struct kvmem_hdr *)in)->status);
	memcpy(&rep, in + sizeof(struct kvmem_hdr), sizeof(rep));
	EXPECT_EQ(KVMEM_ADMIT_NOW, rep.verdict);
	EXPECT_EQ(1024, rep.total);
	EXPECT_EQ(1024, rep.free);
	EXPECT_EQ(0, rep.reclaimable);
	EXPECT_EQ(0, rep.reserve);
	EXPECT_EQ(0, rep.pinned);
}

TEST_HARNESS_MAIN
