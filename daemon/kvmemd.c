// SPDX-License-Identifier: MIT
/*
 * kvmemd: the kvmem daemon. Owns the KV-cache memory of its pools and
 * serves clients over a unix socket; see kvmemd(8) and
 * Documentation/admin-guide/kvmemd.conf.md.
 *
 *   kvmemd [-c CONFIG] [-s SOCKET] [-v]
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kvmemd.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: kvmemd [-c CONFIG] [-s SOCKET] [-v]\n"
		"  -c CONFIG  configuration file (default %s; built-in defaults if absent)\n"
		"  -s SOCKET  socket path, overriding socket.path\n"
		"  -v         log.level = debug\n", KVMEMD_CONFIG_PATH);
}

static int kvmemd_setup(struct kvmemd *d, const char *sock, bool verbose)
{
	char err[256];
	struct group *gr;
	int ret;

	ret = kvmemd_config_load(&d->cfg, d->cfg_path,
				 d->cfg_explicit ? 0 : KVMEMD_CONFIG_MISSING_OK, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "kvmemd: %s\n", err);
		return ret;
	}
	if (sock)
		snprintf(d->cfg.socket_path, sizeof(d->cfg.socket_path), "%s", sock);
	if (verbose)
		d->cfg.log_level = KVLOG_DEBUG;
	d->admin_gid = (gid_t)-1;
	if (d->cfg.admin_group[0]) {
		gr = getgrnam(d->cfg.admin_group);
		if (!gr) {
			kvlog(d, KVLOG_ERR, "admin.group: no group '%s'", d->cfg.admin_group);
			return -ENOENT;
		}
		d->admin_gid = gr->gr_gid;
	}
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
	kvmemd_pools_destroy(d);
	if (d->listen_fd >= 0) {
		close(d->listen_fd);
		unlink(d->cfg.socket_path);
	}
	if (d->epoll_fd >= 0)
		close(d->epoll_fd);
	if (d->signal_fd >= 0)
		close(d->signal_fd);
	free(d->buf);
	free(d->out);
}

int main(int argc, char **argv)
{
	struct kvmemd d = { .listen_fd = -1, .epoll_fd = -1, .signal_fd = -1,
			    .cfg_path = KVMEMD_CONFIG_PATH };
	const char *sock = NULL;
	bool verbose = false;
	int opt, err;

	INIT_LIST_HEAD(&d.clients);
	kvmemd_config_defaults(&d.cfg);
	while ((opt = getopt(argc, argv, "c:s:vh")) != -1) {
		switch (opt) {
		case 'c':
			d.cfg_path = optarg;
			d.cfg_explicit = true;
			break;
		case 's':
			sock = optarg;
			break;
		case 'v':
			verbose = true;
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
	err = kvmemd_setup(&d, sock, verbose);
	err = err ?: kvmemd_pools_create(&d);
	if (!err) {
		err = kvmemd_listen(&d);
		if (err)
			kvlog(&d, KVLOG_ERR, "%s: %s", d.cfg.socket_path, strerror(-err));
	}
	err = err ?: kvmemd_run(&d);
	kvmemd_teardown(&d);
	if (err && err != -EINVAL)
		fprintf(stderr, "kvmemd: exiting: %s\n", strerror(-err));
	return err ? 1 : 0;
}
