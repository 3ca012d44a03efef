/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the daemon selftests: start a real kvmemd from the same build
 * on a private socket with a given config, wait for its READY=1 on a
 * NOTIFY_SOCKET of our own, read its stats, and stop it.
 */
#ifndef _SELFTESTS_DAEMON_TEST_H
#define _SELFTESTS_DAEMON_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "lib/kvclient/kvclient.h"

/**
 * struct daemon - a kvmemd under test
 * @pid:    its pid
 * @dir:    private directory: config, socket, log
 * @sock:   socket path
 * @conf:   config path
 * @log:    its stderr
 */
struct daemon {
	pid_t pid;
	char dir[64];
	char sock[128];
	char conf[128];
	char log[128];
};

/* build/.../selftests/daemon/X -> build/.../daemon/NAME */
static inline void build_path(const char *name, char *out, size_t len)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	exe[n > 0 ? n : 0] = '\0';
	snprintf(out, len, "%s/../../daemon/%s", dirname(exe), name);
}

static inline int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) ? -errno : 0;
}

/* Read a file into @buf, NUL-terminated; 0 or -errno. */
static inline int read_file(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");

	if (!f)
		return -errno;
	buf[fread(buf, 1, len - 1, f)] = '\0';
	fclose(f);
	return 0;
}

/*
 * Run @exe with @argv to its end, its standard output and error in @log
 * and then in @out. Returns its exit status (128 + the signal that killed
 * it), or -1.
 */
static inline int run_to_end(const char *exe, char *const argv[], const char *log, char *out,
			     size_t len)
{
	int status, fd;
	pid_t pid;

	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(exe, argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || read_file(log, out, len))
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/*
 * Run `kvmemd -c @conf` to its end (for starts that must fail), its output
 * in @log and then in @out. Returns its exit status, or -1.
 */
static inline int daemon_run_once(const char *conf, const char *log, char *out, size_t len)
{
	char exe[PATH_MAX];
	char *const argv[] = { "kvmemd", "-c", (char *)conf, NULL };

	build_path("kvmemd", exe, sizeof(exe));
	return run_to_end(exe, argv, log, out, len);
}

/* Bind a datagram socket for NOTIFY_SOCKET in @dir. */
static inline int notify_socket(const char *dir, char *path, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	snprintf(path, len, "%s/notify", dir);
	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -1;
	return fd;
}

/* Wait up to @ms for "READY=1"; 0 when it came. */
static inline int wait_ready(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char buf[64];
	ssize_t n;

	while (poll(&p, 1, ms) == 1) {
		n = recv(fd, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			return -1;
		buf[n] = '\0';
		if (strstr(buf, "READY=1"))
			return 0;
	}
	return -1;
}

/**
 * daemon_start_nofile() - run kvmemd with @config (extra keys; socket.path
 * is added) and wait until it is ready
 * @d:      filled in
 * @config: config file text, or NULL for no file (built-in defaults)
 * @nofile: RLIMIT_NOFILE (soft and hard) for the daemon, 0 to inherit
 *
 * Return: 0, or -1 when it did not come up within 10 s.
 */
static inline int daemon_start_nofile(struct daemon *d, const char *config, unsigned int nofile)
{
	struct rlimit rl = { nofile, nofile };
	char exe[PATH_MAX], npath[128], text[4096];
	int nfd, logfd;

	memset(d, 0, sizeof(*d));
	snprintf(d->dir, sizeof(d->dir), "/tmp/kvmemd-test-XXXXXX");
	if (!mkdtemp(d->dir) || chmod(d->dir, 0755))
		return -1;
	snprintf(d->sock, sizeof(d->sock), "%s/kvmemd.sock", d->dir);
	snprintf(d->conf, sizeof(d->conf), "%s/kvmemd.conf", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/log", d->dir);
	/* These tests are of the daemon, not of a backend: the cpu one, unless
	 * the test names one (selftests/cuda runs its tests on both). */
	snprintf(text, sizeof(text), "socket.path = %s\nsocket.mode = 0666\n%s%s", d->sock,
		 config && strstr(config, "device.backend") ? "" : "device.backend = cpu\n",
		 config ? config : "");
	if (write_file(d->conf, text))
		return -1;
	nfd = notify_socket(d->dir, npath, sizeof(npath));
	if (nfd < 0)
		return -1;
	build_path("kvmemd", exe, sizeof(exe));
	d->pid = fork();
	if (d->pid == 0) {
		/* Never outlive the test, nor hold its output open. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (nofile && setrlimit(RLIMIT_NOFILE, &rl))
			_exit(126);
		logfd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(logfd, 1);
		dup2(logfd, 2);
		setenv("NOTIFY_SOCKET", npath, 1);
		execl(exe, "kvmemd", "-c", d->conf, "-v", (char *)NULL);
		_exit(127);
	}
	if (wait_ready(nfd, 10000)) {
		close(nfd);
		return -1;
	}
	close(nfd);
	return 0;
}

/* daemon_start_nofile() with the descriptor limit inherited. */
static inline int daemon_start(struct daemon *d, const char *config)
{
	return daemon_start_nofile(d, config, 0);
}

/* SIGTERM and reap; returns the exit status (or 128 + signal). */
static inline int daemon_stop(struct daemon *d)
{
	int status;

	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGTERM);
	if (waitpid(d->pid, &status, 0) < 0)
		return -1;
	d->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static inline void daemon_cleanup(struct daemon *d)
{
	char cmd[256];

	if (d->pid > 0)
		daemon_stop(d);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", d->dir);
	if (d->dir[0] && system(cmd))
		return;
}

/* Read a `Name: value` number out of meminfo text; -1 when absent. */
static inline long long stat_value(const char *text, const char *name)
{
	const char *p = strstr(text, name);

	return p ? strtoll(p + strlen(name), NULL, 10) : -1;
}

/* meminfo of the first pool into @buf. */
static inline int meminfo(struct kvc *c, char *buf, size_t len)
{
	return kvc_stats(c, KVMEM_STATS_MEMINFO, 1, buf, len);
}

/*
 * A word of token @slot's K/V in the client's mapping: its test marker.
 * Read and written through kvc_frame_read/write, so the tests run on GPU
 * memory (the cuda backend, picked by device.backend = auto where a GPU
 * is) as on the cpu backend.
 */
static inline uint64_t tok_off(const struct kvc_pool *p, uint64_t slot)
{
	return kv_token_offset(&p->geom, slot, p->geom.layers - 1, KV_V, 1) -
	       slot / p->geom.block_tokens * p->frame_bytes;
}

static inline uint32_t tok_get(struct kvc_pool *p, uint64_t slot)
{
	uint32_t v = 0xdeadbeef;

	kvc_frame_read(p, (uint32_t)(slot / p->geom.block_tokens), tok_off(p, slot), &v,
		       sizeof(v));
	return v;
}

static inline void tok_set(struct kvc_pool *p, uint64_t slot, uint32_t v)
{
	kvc_frame_write(p, (uint32_t)(slot / p->geom.block_tokens), tok_off(p, slot), &v,
			sizeof(v));
}

/*
 * Tokens 0..n-1 of an active @seq hold markers @vals (read through the
 * client's table copy): 0, -ERANGE (wrong block count), -EUCLEAN.
 */
static inline int check_vals(struct kvc *c, struct kvc_pool *p, uint64_t seq,
			     const uint32_t *vals, uint32_t n)
{
	uint32_t bt = p->geom.block_tokens, nb, i;
	const uint32_t *frames;
	int err = kvc_block_table(c, seq, &frames, &nb);

	if (err)
		return err;
	if (nb != (n + bt - 1) / bt)
		return -ERANGE;
	for (i = 0; i < n; i++)
		if (tok_get(p, (uint64_t)frames[i / bt] * bt + i % bt) != vals[i])
			return -EUCLEAN;
	return 0;
}

#endif /* _SELFTESTS_DAEMON_TEST_H */
