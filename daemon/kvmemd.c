// SPDX-License-Identifier: MIT
/*
 * kvmemd: the kvmem daemon. Owns the KV-cache memory of its pools and
 * serves clients over a unix socket; see kvmemd(8) and
 * Documentation/admin-guide/kvmemd.conf.md.
 *
 *   kvmemd [-c CONFIG] [-s SOCKET] [-v]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "kvmemd.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: kvmemd [-c CONFIG] [-s SOCKET] [-v]\n"
		"  -c CONFIG  configuration file (default %s; built-in defaults if absent)\n"
		"  -s SOCKET  socket path, overriding socket.path\n"
		"  -v         log.level = debug\n", KVMEMD_CONFIG_PATH);
}

/**
 * kvmemd_config_overrides() - apply the command line's -s and -v to a
 * config (at start and on every reload)
 * @d:   daemon
 * @cfg: config just loaded
 */
void kvmemd_config_overrides(struct kvmemd *d, struct kvmemd_config *cfg)
{
	if (d->sock_override)
		snprintf(cfg->socket_path, sizeof(cfg->socket_path), "%s", d->sock_override);
	if (d->verbose)
		cfg->log_level = KVLOG_DEBUG;
}

/* One descriptor per client: lift the soft limit to the hard one. */
static void raise_nofile(struct kvmemd *d)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		kvlog(d, KVLOG_WARN, "cannot raise RLIMIT_NOFILE: %s", strerror(errno));
}

static int kvmemd_setup(struct kvmemd *d)
{
	char err[256];
	struct group *gr;
	u32 i;
	int ret;

	ret = kvmemd_config_load(&d->cfg, d->cfg_path,
				 d->cfg_explicit ? 0 : KVMEMD_CONFIG_MISSING_OK, err, sizeof(err));
	if (ret) {
		/* One line, FILE:LINE: message, as compilers print them. */
		fprintf(stderr, "%s\n", err);
		d->reported = true;
		return ret;
	}
	kvmemd_config_overrides(d, &d->cfg);
	if (err[0])
		kvlog(d, KVLOG_INFO, "%s", err);
	d->admin_gid = (gid_t)-1;
	if (d->cfg.admin_group[0]) {
		gr = getgrnam(d->cfg.admin_group);
		if (!gr) {
			kvlog(d, KVLOG_ERR, "admin.group: no group '%s'", d->cfg.admin_group);
			return -ENOENT;
		}
		d->admin_gid = gr->gr_gid;
	}
	raise_nofile(d);
	d->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	/* Tenant names numbered in config order first: a restore maps to them. */
	for (i = 0; i < d->cfg.nr_tenants; i++)
		kvmemd_tenant_by_name(d, d->cfg.tenants[i].name);
	d->buf = malloc(KVMEM_MSG_MAX + 1);
	d->out = malloc(KVMEM_MSG_MAX);
	if (!d->buf || !d->out)
		return -ENOMEM;
	/* Before any thread (kvswapd) exists, so that all inherit the mask. */
	return kvmemd_signals_block(d);
}

static void kvmemd_teardown(struct kvmemd *d)
{
	struct kvmemd_client *c, *tmp;

	list_for_each_entry_safe(c, tmp, &d->clients, node)
		kvmemd_client_close(d, c);
	if (d->cfg.swap_persist && d->clean_stop)
		kvmemd_checkpoint(d, 0);
	kvmemd_pools_destroy(d);
	if (d->listen_fd >= 0) {
		close(d->listen_fd);
		unlink(d->cfg.socket_path);
	}
	if (d->epoll_fd >= 0)
		close(d->epoll_fd);
	if (d->signal_fd >= 0)
		close(d->signal_fd);
	if (d->spare_fd >= 0)
		close(d->spare_fd);
	if (d->timer_fd >= 0)
		close(d->timer_fd);
	if (d->lock_fd >= 0)
		close(d->lock_fd);
	free(d->buf);
	free(d->out);
}

int main(int argc, char **argv)
{
	struct kvmemd d = { .listen_fd = -1, .epoll_fd = -1, .signal_fd = -1, .spare_fd = -1,
			    .timer_fd = -1, .lock_fd = -1, .swap_fd = -1,
			    .cfg_path = KVMEMD_CONFIG_PATH };
	char msg[256];
	int opt, err;

	INIT_LIST_HEAD(&d.clients);
	INIT_LIST_HEAD(&d.waiters);
	kvmemd_config_defaults(&d.cfg);
	while ((opt = getopt(argc, argv, "c:s:vh")) != -1) {
		switch (opt) {
		case 'c':
			d.cfg_path = optarg;
			d.cfg_explicit = true;
			break;
		case 's':
			/* what socket.path takes: absolute, and it fits a socket address */
			if (kvmemd_config_check("socket.path", optarg, msg, sizeof(msg))) {
				fprintf(stderr, "kvmemd: -s: %s\n", msg);
				return 2;
			}
			d.sock_override = optarg;
			break;
		case 'v':
			d.verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	err = kvmemd_setup(&d);
	err = err ?: kvmemd_pools_create(&d);
	if (!err)
		kvmemd_restore(&d);
	if (!err)
		err = kvmemd_listen(&d);
	err = err ?: kvmemd_run(&d);
	d.clean_stop = !err;
	kvmemd_teardown(&d);
	if (err && !d.reported)
		fprintf(stderr, "kvmemd: exiting: %s\n", strerror(-err));
	return err ? 1 : 0;
}
