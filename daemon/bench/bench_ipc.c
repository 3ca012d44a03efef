// SPDX-License-Identifier: MIT
/*
 * bench-ipc: what the per-step path costs through kvmemd, beside the floor
 * measured in the same run. Prints a table; asserts nothing about time.
 *
 *   ping-pong   a bare SOCK_SEQPACKET round trip between two processes
 *   no-op       a request through kvmemd that does no work (HELLO)
 *   step N      one STEP of N sequences that all need a new block
 *   in-process  the same work on mm directly (activate + append)
 *   decode      the manager's cost per decode step of 256 sequences over
 *               4096 steps with 16-token blocks: local appends, new blocks
 *               from the client's reserve, a RESERVE + sync when it runs
 *               dry; beside it the same loop with one STEP per step
 *
 * It starts its own kvmemd (the one built beside it) on a private socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "lib/kvclient/kvclient.h"
#include "mm/mm.h"

#define BT		16
#define DEC_SEQS	256
#define DEC_STEPS	4096

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(int)(p * (n - 1))];
}

static void row(const char *name, double *v, int n, double ref)
{
	double p50 = pct(v, n, 0.5), p99 = pct(v, n, 0.99);

	printf("%-40s %10.1f %10.1f", name, p50, p99);
	if (ref > 0)
		printf(" %9.2fx", p50 / ref);
	printf("\n");
}

static double bench_pingpong(double *v, int n)
{
	char buf[64] = { 0 };
	int sv[2], i;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
		exit(1);
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		while (recv(sv[1], buf, sizeof(buf), 0) > 0)
			send(sv[1], buf, 24, 0);
		_exit(0);
	}
	close(sv[1]);
	for (i = 0; i < n; i++) {
		double t = now_us();

		send(sv[0], buf, 24, 0);
		recv(sv[0], buf, sizeof(buf), 0);
		v[i] = now_us() - t;
	}
	close(sv[0]);
	waitpid(pid, NULL, 0);
	return pct(v, n, 0.5);
}

static pid_t daemon_start(const char *dir, char *sock, size_t len)
{
	char exe[PATH_MAX], conf[PATH_MAX], text[PATH_MAX + 1024];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	pid_t pid;
	FILE *f;
	int i;

	exe[n > 0 ? n : 0] = '\0';
	snprintf(sock, len, "%s/sock", dir);
	snprintf(conf, sizeof(conf), "%s/kvmemd.conf", dir);
	snprintf(text, sizeof(text),
		 "socket.path = %s\nlog.level = warn\n"
		 "pool.b.layers = 1\npool.b.kv_heads = 1\npool.b.head_dim = 128\n"
		 "pool.b.block_tokens = %d\npool.b.dtype = bf16\n"
		 "pool.b.device_mem = 640M\npool.b.host_mem = 16M\n"
		 "vm.min_free_kbytes = 64\n", sock, BT);
	f = fopen(conf, "w");
	if (!f)
		exit(1);
	fputs(text, f);
	fclose(f);
	strcat(dirname(exe), "/kvmemd");
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl(exe, "kvmemd", "-c", conf, (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 500 && access(sock, F_OK); i++)
		usleep(10000);
	usleep(50000);
	return pid;
}

static void bench_noop(struct kvc *c, double *v, int n)
{
	struct kvmem_hello h = { .version_min = 1, .version_max = 1 };
	int i;

	for (i = 0; i < n; i++) {
		double t = now_us();

		if (kvc_request(c, KVMEM_OP_HELLO, &h, sizeof(h), NULL, NULL))
			exit(1);
		v[i] = now_us() - t;
	}
}

/* STEP of @n sequences, BT tokens each: every one needs a new block. */
static void bench_step(struct kvc *c, struct kvc_pool *p, uint32_t n, double *v, int reps)
{
	static struct kvc_step_seq ss[DEC_SEQS];
	static uint64_t slots[DEC_SEQS][BT];
	uint64_t seq[DEC_SEQS];
	uint32_t i;
	int r;

	for (i = 0; i < n; i++) {
		if (kvc_seq_create(c, p, &seq[i]))
			exit(1);
		ss[i] = (struct kvc_step_seq){ .seq = seq[i], .nr_tokens = BT, .slots = slots[i] };
	}
	for (r = 0; r < reps; r++) {
		double t = now_us();

		if (kvc_step(c, ss, n, 0, NULL))
			exit(1);
		v[r] = now_us() - t;
	}
	for (i = 0; i < n; i++)
		kvc_seq_free(c, seq[i]);
}

static void bench_inproc(uint32_t n, double *v, int reps)
{
	struct kv_geometry g = { 1, 1, 128, BT, KV_DTYPE_BF16, 0 };
	struct kv_pool_params pp = { .name = "b", .geom = g, .nr_frames = { 16384, 16 },
				     .flags = KV_POOL_NO_KVSWAPD, .vm = { .min_free_kbytes = 64 } };
	static uint64_t slots[BT];
	struct kv_seq *seq[DEC_SEQS];
	struct kv_pool *pool;
	uint32_t i;
	int r;

	if (kv_pool_create(&pp, &pool))
		exit(1);
	for (i = 0; i < n; i++)
		if (kv_seq_create(pool, &seq[i]))
			exit(1);
	for (r = 0; r < reps; r++) {
		double t = now_us();

		for (i = 0; i < n; i++)
			if (kv_seq_activate(seq[i], 0) || kv_seq_append(seq[i], BT, slots, 0))
				exit(1);
		v[r] = now_us() - t;
	}
	kv_pool_destroy(pool);
}

/* 256 sequences x 4096 decode steps; returns microseconds per step. */
static double bench_decode(struct kvc *c, struct kvc_pool *p, bool fast, int *msgs)
{
	static struct kvc_step_seq ss[DEC_SEQS];
	static uint64_t slots[DEC_SEQS];
	uint64_t seq[DEC_SEQS];
	double t;
	int s, i, err;

	*msgs = 0;
	for (i = 0; i < DEC_SEQS; i++) {
		if (kvc_seq_create(c, p, &seq[i]))
			exit(1);
		ss[i] = (struct kvc_step_seq){ .seq = seq[i], .nr_tokens = 1, .slots = &slots[i] };
	}
	i = kvc_step(c, ss, DEC_SEQS, 0, NULL);	/* prefill: active, one token */
	if (i) {
		fprintf(stderr, "bench-ipc: prefill: %s\n", strerror(-i));
		exit(1);
	}
	t = now_us();
	for (s = 1; s < DEC_STEPS; s++) {
		if (!fast) {
			if (kvc_step(c, ss, DEC_SEQS, 0, NULL))
				exit(1);
			(*msgs)++;
			continue;
		}
		for (i = 0; i < DEC_SEQS; i++) {
			if (!kvc_append(c, seq[i], 1, &slots[i]))
				continue;
			/* The reserve ran dry: tell the daemon, then top it up. */
			err = kvc_sync(c);
			err = err ?: kvc_reserve(c, p, KVMEM_RESERVE_MAX);
			err = err < 0 ? err : kvc_append(c, seq[i], 1, &slots[i]);
			if (err) {
				fprintf(stderr, "bench-ipc: decode step %d: %s\n", s, strerror(-err));
				exit(1);
			}
			*msgs += 2;
		}
	}
	if (fast && kvc_sync(c))
		exit(1);
	t = (now_us() - t) / (DEC_STEPS - 1);
	for (i = 0; i < DEC_SEQS; i++)
		kvc_seq_free(c, seq[i]);
	kvc_reserve(c, p, 0);
	return t;
}

int main(void)
{
	static double v[20000], w[200];
	char dir[] = "/tmp/bench-ipc-XXXXXX", sock[PATH_MAX], cmd[PATH_MAX + 16];
	static const uint32_t sizes[] = { 1, 64, 256 };
	struct kvc_pool *p;
	struct kvc *c;
	double floor, us;
	unsigned int k;
	int msgs;
	pid_t pid;

	if (!mkdtemp(dir))
		return 1;
	pid = daemon_start(dir, sock, sizeof(sock));
	if (kvc_connect(sock, &c) || kvc_pool_open(c, "b", &p)) {
		fprintf(stderr, "bench-ipc: cannot reach the kvmemd it started\n");
		return 1;
	}
	printf("kvmem bench-ipc (microseconds; ratios are p50 against the line named)\n");
	printf("%-40s %10s %10s %10s\n", "operation", "p50", "p99", "ratio");
	floor = bench_pingpong(v, 20000);
	row("ping-pong (bare SEQPACKET round trip)", v, 20000, 0);
	bench_noop(c, v, 20000);
	row("no-op request through kvmemd", v, 20000, floor);
	for (k = 0; k < 3; k++) {
		char name[64], name2[64];
		double d;

		bench_step(c, p, sizes[k], w, 50);
		snprintf(name, sizeof(name), "STEP, %u seqs, each a new block", sizes[k]);
		d = pct(w, 50, 0.5);
		row(name, w, 50, floor);
		bench_inproc(sizes[k], w, 50);
		snprintf(name2, sizeof(name2), "  same in-process on mm (vs STEP)");
		row(name2, w, 50, d);
	}
	us = bench_decode(c, p, true, &msgs);
	printf("%-40s %10.2f %10s %9s   (%d messages in %d steps)\n",
	       "decode 256x4096, reserve: per step", us, "", "", msgs, DEC_STEPS - 1);
	us = bench_decode(c, p, false, &msgs);
	printf("%-40s %10.2f %10s %9s   (%d messages in %d steps)\n",
	       "decode 256x4096, STEP each step", us, "", "", msgs, DEC_STEPS - 1);
	kvc_close(c);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) ? 1 : 0;
}
