// SPDX-License-Identifier: MIT
/*
 * kvmemd against mutated requests. A real libkvclient session (pool open,
 * sequences created, stepped, forked, truncated, activated, local appends
 * from a reserve, ADMIT, stats, sysctl) is recorded through a forwarding
 * thread, every request byte for byte. Then its requests are sent again on
 * the same connection in random order, most of them mutated: bits
 * flipped, words replaced by edge values (0, 1, -1, 2^31, sizes, the
 * session's own handles), bodies cut short or extended, opcodes swapped,
 * bodies taken from other requests.
 *
 * Every request must get one reply with its tag and a status that is a
 * count or an errno; the pool must pass kv_pool_check() throughout; a
 * second client must be served meanwhile; and once the connection closes
 * nothing of it may be left: no sequence, no pinned block, no reserve.
 *
 * FUZZ_SEED and FUZZ_ITERS in the environment replace the seed (logged)
 * and the number of mutated requests (default 20000).
 *
 * Then the run-time tunables, set (as root) to edges of the value grammar,
 * random numbers and garbled bytes.
 */
#include <poll.h>
#include <pthread.h>
#include "kselftest_harness.h"
#include "daemon_test.h"

#define POOL_CONF							\
	"pool.t.layers = 2\npool.t.kv_heads = 2\npool.t.head_dim = 8\n"	\
	"pool.t.block_tokens = 4\npool.t.dtype = fp16\n"		\
	"pool.t.device_mem = 256K\npool.t.host_mem = 512K\n"		\
	"pool.t.swap_mem = 1M\nvm.min_free_kbytes = 4\n"
#define MAX_REC		128	/* requests recorded per session */
#define CHECK_EVERY	1000	/* mutated requests between pool checks */

/**
 * struct session - a recorded libkvclient session
 * @up:   its connection to kvmemd, still open after the client is gone
 * @req:  the requests it sent, in order
 * @len:  their lengths
 * @nr:   requests recorded
 */
struct session {
	int up;
	char *req[MAX_REC];
	size_t len[MAX_REC];
	unsigned int nr;
};

/**
 * struct proxy - the forwarding thread between the client and kvmemd
 * @lfd:  listening socket at @path
 * @path: where the client connects
 * @sock: kvmemd's socket
 * @s:    the session being recorded
 * @err:  0, or what went wrong in the thread
 */
struct proxy {
	int lfd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const char *sock;
	struct session *s;
	int err;
};

static char text[KVMEM_MSG_MAX];

static uint64_t rnd(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int seqpacket(void)
{
	return socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
}

/*
 * Room for a message of KVMEM_MSG_MAX, and (with @timeout) a reply that
 * never comes fails the test instead of hanging it.
 */
static void sock_setup(int fd, bool timeout)
{
	struct timeval tv = { .tv_sec = 20 };
	int sz = 2 * KVMEM_MSG_MAX;

	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	if (timeout)
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int sock_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = seqpacket();

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	sock_setup(fd, true);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

/*
 * Move one message (and any descriptors it carries) from @from to @to;
 * with @rec, record it. Returns its length, 0 at end of file, -1 on error.
 */
static ssize_t forward(int from, int to, struct session *rec)
{
	static char buf[KVMEM_MSG_MAX];
	union {
		char buf[CMSG_SPACE(64 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *cm;
	ssize_t n = recvmsg(from, &m, MSG_CMSG_CLOEXEC);

	if (n <= 0)
		return n;
	if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		n = -1;
	if (n >= (ssize_t)sizeof(struct kvmem_hdr) && rec && rec->nr < MAX_REC) {
		rec->req[rec->nr] = malloc(n);
		if (rec->req[rec->nr]) {
			memcpy(rec->req[rec->nr], buf, n);
			rec->len[rec->nr++] = n;
		}
	}
	iov.iov_len = n > 0 ? n : 0;
	if (!m.msg_controllen)
		m.msg_control = NULL;
	if (n > 0 && sendmsg(to, &m, MSG_NOSIGNAL) != n)
		n = -1;
	/* the receiver has its own copies of the descriptors now */
	for (cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
		int *fds = (int *)CMSG_DATA(cm), i;

		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			for (i = 0; i < (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int)); i++)
				close(fds[i]);
	}
	return n;
}

/*
 * Accept one client (within 20 s), connect it to kvmemd, forward until it
 * leaves.
 */
static void *proxy_run(void *arg)
{
	const short gone = POLLHUP | POLLERR | POLLNVAL;
	struct pollfd pf[2] = { { .fd = ((struct proxy *)arg)->lfd, .events = POLLIN } };
	struct proxy *px = arg;
	int cfd = -1;

	if (poll(pf, 1, 20000) == 1)
		cfd = accept4(px->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (cfd < 0) {
		px->err = -ETIMEDOUT;
		return NULL;
	}
	sock_setup(cfd, false);
	px->s->up = sock_connect(px->sock);
	if (px->s->up < 0) {
		px->err = px->s->up;
		goto out_close;
	}
	pf[0] = (struct pollfd){ .fd = cfd, .events = POLLIN };
	pf[1] = (struct pollfd){ .fd = px->s->up, .events = POLLIN };
	for (;;) {
		if (poll(pf, 2, 20000) <= 0) {
			px->err = -ETIMEDOUT;
			break;
		}
		if ((pf[0].revents & (POLLIN | gone)) && forward(cfd, px->s->up, px->s) <= 0)
			break;		/* the client is gone: the session is recorded */
		if ((pf[1].revents & (POLLIN | gone)) && forward(px->s->up, cfd, NULL) <= 0) {
			px->err = -EPIPE;
			break;
		}
	}
out_close:
	close(cfd);
	return NULL;
}

/*
 * The session the mutations start from: every kind of request a client
 * makes, valid. With @strict (on a fresh daemon) each must succeed; later,
 * mutated requests may have changed what they find (a name pinned, a
 * sequence freed), and only the pool, sequences and first step must.
 */
static int client_session(const char *path, bool strict)
{
	uint32_t ids[24], nb, i, n = 0;
	uint64_t seq[3], child = 0, slots[24];
	struct kvc_step_seq st[2] = {
		{ .nr_tokens = 9, .token_ids = ids, .slots = slots },
		{ .nr_tokens = 5, .token_ids = ids, .slots = slots + 9 },
	};
	struct kvmem_prefix_match_reply hit;
	struct kvmem_admit_reply ar;
	const uint32_t *frames;
	struct kvc_pool *p;
	struct kvc *c;
	int err, r[24];

	for (i = 0; i < 24; i++)
		ids[i] = 100 + i;
	err = kvc_connect(path, &c);
	if (err)
		return err;
	err = kvc_pool_open(c, "t", &p);
	for (i = 0; !err && i < 3; i++)
		err = kvc_seq_create(c, p, &seq[i]);
	if (err)
		goto out;
	st[0].seq = seq[0];
	st[1].seq = seq[1];
	err = kvc_step(c, st, 2, 0, NULL);
	if (err)
		goto out;
	r[n++] = kvc_seq_fork(c, seq[0], &child);
	r[n++] = kvc_seq_truncate(c, seq[1], 4);
	r[n++] = kvc_deactivate(c, seq, 2);
	r[n++] = kvc_activate(c, seq, 2, 0, NULL);
	r[n++] = kvc_block_table(c, seq[1], &frames, &nb);
	r[n++] = kvc_reserve(c, p, 4);
	r[n++] = kvc_append(c, seq[1], 6, slots);
	r[n++] = kvc_sync(c);
	r[n++] = kvc_admit(c, p, 3, &ar);
	r[n++] = kvc_prefix_match(c, seq[2], ids, 12, &hit);
	r[n++] = kvc_stats(c, KVMEM_STATS_MEMINFO, p->handle, text, sizeof(text));
	r[n++] = kvc_stats(c, KVMEM_STATS_PREFIX, 0, text, sizeof(text));
	r[n++] = kvc_sysctl_get(c, "vm.min_free_kbytes", text, sizeof(text));
	r[n++] = kvc_clients(c, text, sizeof(text));
	r[n++] = kvc_reserve_release(c, p);
	r[n++] = kvc_prefix_pin(c, seq[0], "fuzz");
	r[n++] = kvc_prefix_name_op(c, p->handle, "fuzz", KVMEM_PREFIX_FORGET);
	r[n++] = kvc_seq_free(c, child);
	if (!getuid()) {	/* admin requests */
		r[n++] = kvc_drop_caches(c, p->handle, KVMEM_DROP_DEMOTE);
		r[n++] = kvc_checkpoint(c, p->handle);
	}
	for (i = 0; strict && !err && i < n; i++)
		if (r[i] < 0)
			err = r[i] - 1000 * (int)i;	/* which one failed, and how */
out:
	kvc_close(c);
	return err;
}

/* Record a session through a forwarding thread; s->up stays open. */
static int record(const char *sock, const char *dir, struct session *s, bool strict)
{
	struct proxy px = { .sock = sock, .s = s };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	pthread_t th;
	int err;

	memset(s, 0, sizeof(*s));
	s->up = -1;
	if (snprintf(px.path, sizeof(px.path), "%s/proxy.sock", dir) >= (int)sizeof(px.path))
		return -ENAMETOOLONG;
	unlink(px.path);
	memcpy(sa.sun_path, px.path, sizeof(px.path));
	px.lfd = seqpacket();
	if (px.lfd < 0)
		return -errno;
	if (bind(px.lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(px.lfd, 1)) {
		err = -errno;
		goto out_close;
	}
	err = -pthread_create(&th, NULL, proxy_run, &px);
	if (err)
		goto out_close;
	err = client_session(px.path, strict);
	pthread_join(th, NULL);
	err = err ?: px.err ?: s->nr < 10 ? -ENODATA : 0;
out_close:
	close(px.lfd);
	return err;
}

static void session_end(struct session *s)
{
	unsigned int i;

	for (i = 0; i < s->nr; i++)
		free(s->req[i]);
	if (s->up >= 0)
		close(s->up);
	s->nr = 0;
	s->up = -1;
}

/* A u32 worth trying in place of a word of a request. */
static uint32_t edge_value(uint64_t *x, uint32_t len, uint32_t own)
{
	static const uint32_t v[] = { 0, 1, 2, 3, 4, 0xffffffffu, 0x7fffffffu, 0x80000000u,
				      0xffffu, 0x10000u, KVMEM_MSG_MAX, 1u << 20 };
	uint32_t k = (uint32_t)(rnd(x) % (sizeof(v) / sizeof(v[0]) + 4));

	if (k < sizeof(v) / sizeof(v[0]))
		return v[k];
	switch (k - sizeof(v) / sizeof(v[0])) {
	case 0:
		return len;
	case 1:
		return len > 8 ? len - 1 - (uint32_t)(rnd(x) % 8) : (uint32_t)(rnd(x) % (len + 1));
	case 2:
		return own;	/* a handle or sequence id of the session */
	default:
		return (uint32_t)rnd(x) % 64;
	}
}

/*
 * Request @i of @s, mutated up to three times, into @out; returns its
 * length. The header stays well-formed (proto_test covers broken ones)
 * but for the opcode, the tag and the size that follows the body.
 */
static size_t mutate(const struct session *s, unsigned int i, uint64_t *x, char *out,
		     uint32_t tag)
{
	const size_t hs = sizeof(struct kvmem_hdr), most = KVMEM_MSG_MAX;
	struct kvmem_hdr h;
	size_t len = s->len[i], at, j;
	/* one in four goes as recorded: valid requests in another order */
	unsigned int k, n = (unsigned int)(rnd(x) % 4), m;
	uint32_t own, w;

	memcpy(out, s->req[i], len);
	/* a word the session used: the pool handle or a sequence id */
	j = rnd(x) % s->nr;
	own = 1;
	if (s->len[j] >= hs + sizeof(own))
		memcpy(&own, s->req[j] + hs, sizeof(own));
	for (k = 0; k < n; k++) {
		switch (rnd(x) % 7) {
		case 0:		/* flip bits of the body */
			m = 1 + (unsigned int)(rnd(x) % 8);
			for (j = 0; len > hs && j < m; j++) {
				at = hs + rnd(x) % (len - hs);
				out[at] ^= (char)(1u << (rnd(x) % 8));
			}
			break;
		case 1:		/* an edge value in an aligned word */
		case 2:
			if (len < hs + 4)
				break;
			at = hs + (rnd(x) % ((len - hs) / 4)) * 4;
			w = edge_value(x, (uint32_t)(len - hs), own);
			memcpy(out + at, &w, sizeof(w));
			break;
		case 3:		/* cut short */
			len = hs + (len > hs ? rnd(x) % (len - hs) : 0);
			break;
		case 4:		/* extended by random bytes */
			m = 1 + (unsigned int)(rnd(x) % 64);
			for (j = 0; j < m && len < most; j++)
				out[len++] = (char)rnd(x);
			break;
		case 5:		/* another opcode */
			h.opcode = (uint16_t)(rnd(x) % (KVMEM_OP_MAX + 3));
			memcpy(out + offsetof(struct kvmem_hdr, opcode), &h.opcode,
			       sizeof(h.opcode));
			break;
		default:	/* another request's body */
			j = rnd(x) % s->nr;
			len = s->len[j];
			memcpy(out + hs, s->req[j] + hs, len - hs);
			break;
		}
	}
	memcpy(&h, out, hs);
	h.size = (uint32_t)len;
	h.tag = tag;
	memcpy(out, &h, hs);
	return len;
}

/* Pool consistent (kv_pool_check()) and another client served. */
static int daemon_sane(struct kvc *c, const struct kvc_pool *p)
{
	uint64_t seq;
	int err;

	if (kvc_stats(c, KVMEM_STATS_ZONEINFO, 0, text, sizeof(text)) <= 0 ||
	    !strstr(text, "check      ok"))
		return -EUCLEAN;
	err = kvc_seq_create(c, p, &seq);
	return err ?: kvc_seq_free(c, seq);
}

/*
 * Nothing left of gone clients: no sequence, and no device frame taken but
 * by the prefix cache (a reserve's frames are taken without a block).
 */
static int pool_empty(struct kvc *c)
{
	int i;

	for (i = 0; i < 500; i++) {
		if (meminfo(c, text, sizeof(text)) > 0 && !stat_value(text, "Sequences:") &&
		    stat_value(text, "Blocks:") == stat_value(text, "CachedBlocks:") &&
		    stat_value(text, "DeviceTotal:") - stat_value(text, "DeviceFree:") ==
		    stat_value(text, "DeviceCached:"))
			return 0;
		usleep(10000);
	}
	TH_LOG("meminfo:\n%s", text);
	return -1;
}

FIXTURE(fuzz) {
	struct daemon d;
	struct kvc *c;
	struct kvc_pool *pool;
	char swap[64];
};

FIXTURE_SETUP(fuzz)
{
	char conf[512];

	snprintf(self->swap, sizeof(self->swap), "/tmp/kvmem-fuzz-%d.swap", (int)getpid());
	snprintf(conf, sizeof(conf), "%sswap.path = %s\n", POOL_CONF, self->swap);
	ASSERT_EQ(0, daemon_start(&self->d, conf));
	ASSERT_EQ(0, kvc_connect(self->d.sock, &self->c));
	ASSERT_EQ(0, kvc_pool_open(self->c, "t", &self->pool));
}

FIXTURE_TEARDOWN(fuzz)
{
	kvc_close(self->c);
	EXPECT_EQ(0, daemon_stop(&self->d));
	daemon_cleanup(&self->d);
	unlink(self->swap);
}

TEST_F_TIMEOUT(fuzz, mutated_requests_lose_nothing, 280)
{
	static char out[KVMEM_MSG_MAX], in[KVMEM_MSG_MAX];
	const char *e = getenv("FUZZ_SEED");
	uint64_t seed = e ? strtoull(e, NULL, 0) : 0x6b766d656d66757aull, x = seed;
	unsigned long iters = getenv("FUZZ_ITERS") ? strtoul(getenv("FUZZ_ITERS"), NULL, 0) :
			      20000, it, sessions = 0, errors = 0, counts = 0, closed = 0;
	unsigned long ok[KVMEM_OP_MAX + 3] = { 0 }, op;
	struct kvmem_hdr rep;
	struct session s = { .up = -1 };
	char line[512];
	size_t len;
	ssize_t n;

	TH_LOG("FUZZ_SEED=0x%llx FUZZ_ITERS=%lu", (unsigned long long)seed, iters);
	for (it = 0; it < iters; it++) {
		if (s.up < 0) {
			ASSERT_EQ(0, record(self->d.sock, self->d.dir, &s, !sessions));
			sessions++;
		}
		len = mutate(&s, (unsigned int)(rnd(&x) % s.nr), &x, out, (uint32_t)it);
		ASSERT_EQ((ssize_t)len, send(s.up, out, len, MSG_NOSIGNAL));
		n = recv(s.up, in, sizeof(in), 0);
		if (n == 0) {		/* the daemon may close a connection */
			closed++;
			session_end(&s);
			continue;
		}
		if (n < (ssize_t)sizeof(rep))
			TH_LOG("request %lu (%zu bytes, opcode %u): no reply", it, len,
			       ((struct kvmem_hdr *)out)->opcode);
		ASSERT_LE((ssize_t)sizeof(rep), n);
		memcpy(&rep, in, sizeof(rep));
		ASSERT_EQ((uint32_t)it, rep.tag);
		ASSERT_EQ(KVMEM_MAGIC, rep.magic);
		ASSERT_LE(-4095, rep.status);
		errors += rep.status < 0;
		counts += rep.status > 0;
		op = ((struct kvmem_hdr *)out)->opcode;
		ok[op < KVMEM_OP_MAX + 3 ? op : 0] += rep.status >= 0;
		/* now and then: the pool whole, another client served, a new session */
		if (it % CHECK_EVERY == CHECK_EVERY - 1) {
			ASSERT_EQ(0, daemon_sane(self->c, self->pool));
			session_end(&s);
		}
	}
	session_end(&s);
	TH_LOG("%lu requests in %lu sessions (%lu closed by kvmemd): %lu errors, %lu counts",
	       iters, sessions, closed, errors, counts);
	for (op = 1, len = 0; op <= KVMEM_OP_MAX; op++)
		len += snprintf(line + len, sizeof(line) - len, " %lu:%lu", op, ok[op]);
	TH_LOG("accepted per opcode:%s", line);
	if (iters >= 100)
		EXPECT_LT(iters / 2, errors);	/* most requests must be refused */
	EXPECT_EQ(0, pool_empty(self->c));
	EXPECT_EQ(0, daemon_sane(self->c, self->pool));
}

/* A value for a tunable: an edge of the grammar, digits, or noise. */
static void sysctl_value(uint64_t *x, char *v, size_t len)
{
	static const char *const edge[] = {
		"0", "1", "05", "0x10", "0X10", "0x", "-1", "+1", " 1", "1 ", "1e3", "1.5",
		"", "10k", "3000", "3001", "256", "257", "1099511627776", "1099511627777",
		"4294967296", "18446744073709551615", "18446744073709551616",
		"99999999999999999999999",
	};
	size_t i, n;
	uint64_t w;

	switch (rnd(x) % 3) {
	case 0:
		snprintf(v, len, "%s", edge[rnd(x) % (sizeof(edge) / sizeof(edge[0]))]);
		break;
	case 1:
		w = rnd(x);	/* two draws, in this order */
		snprintf(v, len, "%llu", (unsigned long long)(w >> (rnd(x) % 64)));
		break;
	default:
		n = rnd(x) % (len - 1);
		for (i = 0; i < n; i++)
			v[i] = (char)(1 + rnd(x) % 255);
		v[n] = '\0';
	}
}

/* The number @v names under the grammar: decimal, or hexadecimal after 0x. */
static unsigned long long sysctl_number(const char *v)
{
	return v[0] == '0' && (v[1] == 'x' || v[1] == 'X') ? strtoull(v + 2, NULL, 16) :
	       strtoull(v, NULL, 10);
}

/*
 * Tunables set to edges, random numbers and noise (as root): each set
 * gets 0 or the documented error, an accepted value reads back as the
 * number it names, and the pool stays consistent and serves STEPs under
 * whatever watermarks result.
 */
TEST_F(fuzz, sysctl_values_lose_nothing)
{
	static const char *const keys[] = {
		"vm.min_free_kbytes", "vm.watermark_scale_factor", "vm.reclaim_batch",
		"pool.t.device_mem", "socket.path", "vm.no_such_key", "vm.", "",
	};
	uint64_t x = 0x73797363746cull, seq, slots[8];
	uint32_t ids[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	struct kvc_step_seq st = { .nr_tokens = 8, .token_ids = ids, .slots = slots };
	unsigned long i, set = 0;
	char v[48], got[64];
	const char *k;
	int r;

	if (getuid())
		SKIP(return, "sets tunables: needs root");
	for (i = 0; i < 3000; i++) {
		k = keys[rnd(&x) % (sizeof(keys) / sizeof(keys[0]))];
		sysctl_value(&x, v, sizeof(v));
		r = kvc_sysctl_set(self->c, k, v);
		if (r && r != -EINVAL && r != -ERANGE && r != -ENOENT && r != -EROFS)
			TH_LOG("%s = '%s': %d", k, v, r);
		ASSERT_TRUE(!r || r == -EINVAL || r == -ERANGE || r == -ENOENT || r == -EROFS);
		if (!r) {
			set++;
			ASSERT_EQ(0, kvc_sysctl_get(self->c, k, got, sizeof(got)));
			if (sysctl_number(v) != strtoull(got, NULL, 10))
				TH_LOG("%s = '%s' reads back as '%s'", k, v, got);
			EXPECT_EQ(sysctl_number(v), strtoull(got, NULL, 10));
		}
		if (i % 100 == 99) {
			ASSERT_EQ(0, daemon_sane(self->c, self->pool));
			ASSERT_EQ(0, kvc_seq_create(self->c, self->pool, &seq));
			st.seq = seq;
			EXPECT_EQ(0, kvc_step(self->c, &st, 1, 0, NULL));
			ASSERT_EQ(0, kvc_seq_free(self->c, seq));
		}
	}
	TH_LOG("3000 values, %lu accepted", set);
	EXPECT_LT(100, set);
	EXPECT_EQ(0, pool_empty(self->c));
}

TEST_HARNESS_MAIN
