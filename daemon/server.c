// SPDX-License-Identifier: MIT
/*
 * The listening socket, the event loop and signals. The socket is an
 * AF_UNIX SOCK_SEQPACKET socket at socket.path with socket.mode and
 * socket.group; signals arrive through a signalfd (SIGHUP re-reads the
 * run-time tunables, SIGTERM and SIGINT stop the loop); readiness is
 * announced to systemd with one datagram to $NOTIFY_SOCKET.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "kvmemd.h"

#define LISTEN_TAG	((void *)1)
#define SIGNAL_TAG	((void *)2)
#define TIMER_TAG	((void *)3)

/* A socket file left by a daemon that is gone is removed; a live one is not. */
static int socket_clear_stale(struct kvmemd *d, const struct sockaddr_un *sa)
{
	struct stat st;
	int fd, err;

	if (lstat(sa->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	err = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) ? -errno : 0;
	close(fd);
	if (!err)
		return -EADDRINUSE;
	kvlog(d, KVLOG_INFO, "removing stale socket %s", sa->sun_path);
	return unlink(sa->sun_path) ? -errno : 0;
}

/* socket.mode and socket.group on @path; *@logged when it said why it failed */
static int socket_set_owner(struct kvmemd *d, const char *path, bool *logged)
{
	struct group *gr;

	if (chmod(path, d->cfg.socket_mode) < 0)
		return -errno;
	if (!d->cfg.socket_group[0])
		return 0;
	gr = getgrnam(d->cfg.socket_group);
	if (!gr) {
		kvlog(d, KVLOG_ERR, "socket.group: no group '%s'", d->cfg.socket_group);
		*logged = true;
		return -ENOENT;
	}
	return chown(path, (uid_t)-1, gr->gr_gid) ? -errno : 0;
}

/* Create the socket's directory (one level) if it is missing. */
static void socket_mkdir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return;
	*slash = '\0';
	mkdir(dir, 0755);
}

/*
 * Hold "<socket.path>.lock" for the daemon's life, so that two daemons
 * started at once cannot both decide the socket is stale.
 */
static int socket_lock(struct kvmemd *d, const char *path)
{
	char lock[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
	int fd;

	snprintf(lock, sizeof(lock), "%s.lock", path);
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		return errno == EWOULDBLOCK ? -EADDRINUSE : -errno;
	}
	d->lock_fd = fd;
	return 0;
}

/* kvmemd_listen() but for the message of an error in the path's terms */
static int listen_path(struct kvmemd *d, bool *logged)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, err;

	if (strlen(d->cfg.socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, d->cfg.socket_path);
	socket_mkdir(sa.sun_path);
	err = socket_lock(d, sa.sun_path);
	err = err ?: socket_clear_stale(d, &sa);
	if (err)
		return err;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = -errno;
		goto out_close;
	}
	err = socket_set_owner(d, sa.sun_path, logged);
	if (err)
		goto out_unlink;
	if (listen(fd, 512) < 0) {
		err = -errno;
		goto out_unlink;
	}
	d->listen_fd = fd;
	return 0;

out_unlink:
	unlink(sa.sun_path);
out_close:
	close(fd);
	return err;
}

/**
 * kvmemd_listen() - bind and listen on socket.path
 * @d: daemon
 *
 * Logs what failed: socket.group naming no group, or the path's error.
 *
 * Return: 0, -EADDRINUSE when another daemon serves the path, or -errno.
 */
int kvmemd_listen(struct kvmemd *d)
{
	bool logged = false;
	int err = listen_path(d, &logged);

	if (err && !logged)
		kvlog(d, KVLOG_ERR, "%s: %s", d->cfg.socket_path, strerror(-err));
	return err;
}

/**
 * kvmemd_notify() - send a state line to systemd, if it is listening
 * @d:     daemon
 * @state: e.g. "READY=1"
 */
void kvmemd_notify(struct kvmemd *d, const char *state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *path = getenv("NOTIFY_SOCKET");
	socklen_t len;
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
		return;
	strcpy(sa.sun_path, path);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, len) < 0)
		kvlog(d, KVLOG_WARN, "NOTIFY_SOCKET %s: %s", path, strerror(errno));
	close(fd);
}

/* SIGHUP: parse, validate, apply the run-time keys; keep the old on error. */
static void kvmemd_reload(struct kvmemd *d)
{
	struct kvmemd_config nc;
	char err[256];
	u32 changed = 0;
	int ret;

	if (!d->cfg_path) {
		kvlog(d, KVLOG_INFO, "SIGHUP: no config file; nothing to re-read");
		return;
	}
	ret = kvmemd_config_load(&nc, d->cfg_path, d->cfg_explicit ? 0 : KVMEMD_CONFIG_MISSING_OK,
				 err, sizeof(err));
	if (!ret) {
		kvmemd_config_overrides(d, &nc);
		ret = kvmemd_config_reload_diff(&d->cfg, &nc, &changed, err, sizeof(err));
	}
	if (ret) {
		kvlog(d, KVLOG_ERR, "SIGHUP: %s; keeping the running configuration", err);
		return;
	}
	d->cfg.log_level = nc.log_level;
	d->cfg.vm = nc.vm;
	d->cfg.step_wait_ms = nc.step_wait_ms;
	/* New sequences get the new tenants; existing ones keep theirs. */
	d->cfg.nr_tenants = nc.nr_tenants;
	memcpy(d->cfg.tenants, nc.tenants, sizeof(nc.tenants));
	if (kvmemd_apply_tunables(d))
		kvlog(d, KVLOG_ERR, "SIGHUP: tunables refused by a pool");
	kvlog(d, KVLOG_INFO, "SIGHUP: %s re-read (%s)", d->cfg_path,
	      changed ? "run-time keys changed" : "no change");
}

static void kvmemd_signal(struct kvmemd *d)
{
	struct signalfd_siginfo si;

	while (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP) {
			kvmemd_reload(d);
		} else {
			kvlog(d, KVLOG_INFO, "signal %u: shutting down", si.ssi_signo);
			d->stop = true;
		}
	}
}

/* Once a second: drop connections that never said HELLO. */
static void kvmemd_tick(struct kvmemd *d)
{
	u64 expirations;

	if (read(d->timer_fd, &expirations, sizeof(expirations)) == sizeof(expirations))
		kvmemd_clients_expire(d);
}

static int loop_add(struct kvmemd *d, int fd, void *tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };

	return epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

/**
 * kvmemd_listen_pause() - stop or resume taking connections
 * @d:     daemon
 * @pause: true to stop (out of descriptors), false to resume
 *
 * Resuming also takes back the spare descriptor when it was lost.
 */
void kvmemd_listen_pause(struct kvmemd *d, bool pause)
{
	struct epoll_event ev = { .events = pause ? 0 : EPOLLIN, .data.ptr = LISTEN_TAG };

	if (pause == d->listen_paused || d->epoll_fd < 0)
		return;
	if (!pause && d->spare_fd < 0)
		d->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (epoll_ctl(d->epoll_fd, EPOLL_CTL_MOD, d->listen_fd, &ev))
		return;
	d->listen_paused = pause;
	kvlog(d, KVLOG_WARN, "%s taking connections", pause ? "out of descriptors: stopped" :
	      "resumed");
}

/**
 * kvmemd_signals_block() - block the signals the loop reads, before any
 * thread exists, and open the signalfd
 * @d: daemon
 */
int kvmemd_signals_block(struct kvmemd *d)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL))
		return -EINVAL;
	signal(SIGPIPE, SIG_IGN);
	d->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	return d->signal_fd < 0 ? -errno : 0;
}

/**
 * kvmemd_run() - the event loop, until SIGTERM or SIGINT
 * @d: daemon, listening
 *
 * Return: 0, or a negative errno when the loop itself failed.
 */
int kvmemd_run(struct kvmemd *d)
{
	struct itimerspec every = { .it_interval = { 1, 0 }, .it_value = { 1, 0 } };
	struct epoll_event ev[64];
	bool tick;
	int i, n, err;

	d->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (d->epoll_fd < 0)
		return -errno;
	d->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (d->timer_fd < 0 || timerfd_settime(d->timer_fd, 0, &every, NULL) < 0)
		return -errno;
	err = loop_add(d, d->listen_fd, LISTEN_TAG);
	err = err ?: loop_add(d, d->signal_fd, SIGNAL_TAG);
	err = err ?: loop_add(d, d->timer_fd, TIMER_TAG);
	if (err)
		return err;
	kvmemd_notify(d, "READY=1");
	kvlog(d, KVLOG_INFO, "ready on %s", d->cfg.socket_path);
	while (!d->stop) {
		n = epoll_wait(d->epoll_fd, ev, 64, kvmemd_wait_timeout(d));
		if (n < 0 && errno != EINTR)
			return -errno;
		tick = false;
		for (i = 0; i < n; i++) {
			if (ev[i].data.ptr == LISTEN_TAG)
				while (kvmemd_client_accept(d) > 0)
					;
			else if (ev[i].data.ptr == SIGNAL_TAG)
				kvmemd_signal(d);
			else if (ev[i].data.ptr == TIMER_TAG)
				tick = true;
			else
				kvmemd_client_event(d, ev[i].data.ptr, ev[i].events);
		}
		/* After the batch: expiry may close clients it still names. */
		if (tick)
			kvmemd_tick(d);
		kvmemd_wait_run(d);
	}
	kvmemd_notify(d, "STOPPING=1");
	return 0;
}
