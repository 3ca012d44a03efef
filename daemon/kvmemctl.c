// SPDX-License-Identifier: MIT
/*
 * kvmemctl: watch and tune kvmemd. See kvmemctl(8).
 *
 *   kvmemctl [-s SOCKET] meminfo|vmstat [POOL]
 *   kvmemctl [-s SOCKET] pools | clients
 *   kvmemctl [-s SOCKET] topology [POOL]
 *   kvmemctl [-s SOCKET] sysctl KEY[=VALUE]
 *   kvmemctl [-s SOCKET] drop-caches [POOL]
 *   kvmemctl [-s SOCKET] prefix [show] [POOL]
 *   kvmemctl [-s SOCKET] prefix pin|unpin|forget NAME [POOL]
 *   kvmemctl [-s SOCKET] prefix drop [POOL]
 *   kvmemctl [-s SOCKET] checkpoint [POOL]
 *
 * Exit status: 0 done; 1 the daemon refused (the reason is printed);
 * 2 usage; 3 the daemon cannot be reached.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/kvclient/kvclient.h"

#define EXIT_REFUSED	1
#define EXIT_USAGE	2
#define EXIT_CONNECT	3

static int usage(FILE *f)
{
	fprintf(f, "usage: kvmemctl [-s SOCKET] COMMAND\n"
		"  meminfo [POOL]      memory per tier (meminfo)\n"
		"  vmstat [POOL]       event counters\n"
		"  pools               pools: geometry, frames, watermarks (zoneinfo)\n"
		"  clients             connected clients\n"
		"  topology [POOL]     NUMA nodes, GPUs, where each pool's arenas live\n"
		"  sysctl KEY[=VALUE]  read or (admin) set a tunable\n"
		"  drop-caches [POOL]  (admin) demote every unpinned device block\n"
		"  prefix [show] [POOL] prefix cache: hits per tenant and tier, names, largest\n"
		"  prefix unpin|pin|forget NAME [POOL]\n"
		"                      unpin a named prefix, pin it again, or drop its name\n"
		"  prefix drop [POOL]  (admin) evict every evictable cached block\n"
		"  checkpoint [POOL]   (admin) write the prefix cache to the swap area\n"
		"The socket is -s, else $%s, else %s.\n", KVMEM_SOCKET_ENV,
		KVMEM_DEFAULT_SOCKET);
	return EXIT_USAGE;
}

static int refused(const char *what, int err)
{
	fprintf(stderr, "kvmemctl: %s: %s\n", what, strerror(-err));
	if (err == -EPERM)
		fprintf(stderr, "kvmemctl: admin operations need root or the daemon's admin.group "
			"(a named prefix: also the tenant that named it)\n");
	if (err == -EROFS)
		fprintf(stderr, "kvmemctl: this key is read at start only: edit the config "
			"file and restart kvmemd\n");
	if (err == -ENOENT)
		fprintf(stderr, "kvmemctl: no such key or pool\n");
	return EXIT_REFUSED;
}

static int pool_handle(struct kvc *c, const char *name, uint32_t *handle)
{
	struct kvc_pool *p;
	int err;

	*handle = 0;
	if (!name)
		return 0;
	err = kvc_pool_open(c, name, &p);
	if (err)
		return err;
	*handle = p->handle;
	return 0;
}

static int cmd_text(struct kvc *c, const char *cmd, uint32_t what, const char *pool)
{
	static char buf[KVMEM_MSG_MAX];
	uint32_t handle;
	int n;

	n = pool_handle(c, pool, &handle);
	if (n)
		return refused(pool, n);
	if (what)
		n = kvc_stats(c, what, handle, buf, sizeof(buf));
	else
		n = kvc_clients(c, buf, sizeof(buf));
	if (n < 0)
		return refused(cmd, n);
	fputs(buf, stdout);
	return 0;
}

static int cmd_sysctl(struct kvc *c, char *arg)
{
	char *eq = strchr(arg, '='), value[KVMEM_VALUE_MAX];
	int err;

	if (eq) {
		*eq = '\0';
		err = kvc_sysctl_set(c, arg, eq + 1);
		if (err)
			return refused(arg, err);
	}
	err = kvc_sysctl_get(c, arg, value, sizeof(value));
	if (err)
		return refused(arg, err);
	printf("%s = %s\n", arg, value);
	return 0;
}

static int cmd_drop(struct kvc *c, const char *pool)
{
	uint32_t handle;
	int n;

	n = pool_handle(c, pool, &handle);
	if (n)
		return refused(pool, n);
	n = kvc_drop_caches(c, handle, KVMEM_DROP_DEMOTE);
	if (n < 0)
		return refused("drop-caches", n);
	printf("%d blocks demoted\n", n);
	return 0;
}

static int cmd_checkpoint(struct kvc *c, const char *pool)
{
	uint32_t handle;
	int n;

	n = pool_handle(c, pool, &handle);
	n = n ?: kvc_checkpoint(c, handle);
	if (n < 0)
		return refused("checkpoint", n);
	printf("checkpoint of %d cached blocks\n", n);
	return 0;
}

static const char *const prefix_ops[] = {
	[KVMEM_PREFIX_UNPIN] = "unpin",
	[KVMEM_PREFIX_REPIN] = "pin",
	[KVMEM_PREFIX_FORGET] = "forget",
};

static int prefix_op(const char *word)
{
	int i;

	for (i = KVMEM_PREFIX_UNPIN; i <= KVMEM_PREFIX_FORGET; i++)
		if (!strcmp(word, prefix_ops[i]))
			return i;
	return 0;
}

/* prefix [POOL] | prefix drop [POOL] | prefix pin|unpin|forget NAME [POOL] */
static int cmd_prefix(struct kvc *c, int argc, char **argv)
{
	const char *pool = argc > 2 ? argv[2] : NULL;
	uint32_t handle;
	int n, op;

	if (argc == 1 || (argc == 2 && strcmp(argv[1], "drop")))
		return cmd_text(c, "prefix", KVMEM_STATS_PREFIX, argc > 1 ? argv[1] : NULL);
	if (!strcmp(argv[1], "show"))
		return cmd_text(c, "prefix", KVMEM_STATS_PREFIX, pool);
	if (!strcmp(argv[1], "drop")) {
		n = pool_handle(c, pool, &handle);
		n = n ?: kvc_drop_caches(c, handle, KVMEM_DROP_PREFIX);
		if (n < 0)
			return refused("prefix drop", n);
		printf("%d cached blocks dropped\n", n);
		return 0;
	}
	op = prefix_op(argv[1]);
	pool = argc > 3 ? argv[3] : NULL;
	n = pool_handle(c, pool, &handle);
	n = n ?: kvc_prefix_name_op(c, handle, argv[2], (uint32_t)op);
	if (n < 0)
		return refused(argv[2], n);
	printf("prefix %s: %s\n", argv[2], op == KVMEM_PREFIX_UNPIN ? "unpinned" :
	       op == KVMEM_PREFIX_REPIN ? "pinned" : "forgotten");
	return 0;
}

/* prefix's arguments: none, [show] POOL, drop [POOL], or OP NAME [POOL]. */
static int prefix_valid(int argc, char **argv)
{
	if (argc == 1)
		return 1;
	if (!strcmp(argv[1], "drop") || !strcmp(argv[1], "show"))
		return argc <= 3;
	if (prefix_op(argv[1]))
		return argc == 3 || argc == 4;
	return argc == 2;
}

/* Whether argv names a command kvmemctl knows, with the right arguments. */
static int valid(int argc, char **argv)
{
	const char *cmd = argv[0];

	if (!strcmp(cmd, "prefix"))
		return prefix_valid(argc, argv);
	if (argc > 2)
		return 0;
	if (!strcmp(cmd, "meminfo") || !strcmp(cmd, "vmstat") || !strcmp(cmd, "drop-caches") ||
	    !strcmp(cmd, "checkpoint") || !strcmp(cmd, "topology"))
		return 1;
	if (!strcmp(cmd, "pools") || !strcmp(cmd, "clients"))
		return argc == 1;
	return !strcmp(cmd, "sysctl") && argc == 2;
}

static int run(struct kvc *c, int argc, char **argv)
{
	const char *cmd = argv[0], *arg = argc > 1 ? argv[1] : NULL;

	if (!strcmp(cmd, "meminfo"))
		return cmd_text(c, cmd, KVMEM_STATS_MEMINFO, arg);
	if (!strcmp(cmd, "vmstat"))
		return cmd_text(c, cmd, KVMEM_STATS_VMSTAT, arg);
	if (!strcmp(cmd, "pools"))
		return cmd_text(c, cmd, KVMEM_STATS_ZONEINFO, NULL);
	if (!strcmp(cmd, "topology"))
		return cmd_text(c, cmd, KVMEM_STATS_TOPOLOGY, arg);
	if (!strcmp(cmd, "clients"))
		return cmd_text(c, cmd, 0, NULL);
	if (!strcmp(cmd, "sysctl"))
		return cmd_sysctl(c, argv[1]);
	if (!strcmp(cmd, "prefix"))
		return cmd_prefix(c, argc, argv);
	if (!strcmp(cmd, "checkpoint"))
		return cmd_checkpoint(c, arg);
	return cmd_drop(c, arg);
}

int main(int argc, char **argv)
{
	const char *sock = NULL;
	struct kvc *c;
	int opt, err, ret;

	while ((opt = getopt(argc, argv, "+s:h")) != -1) {
		switch (opt) {
		case 's':
			sock = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			return usage(stderr);
		}
	}
	if (optind >= argc || !valid(argc - optind, argv + optind))
		return usage(stderr);
	err = kvc_connect(sock, &c);
	if (err) {
		fprintf(stderr, "kvmemctl: cannot reach kvmemd at %s: %s\n",
			sock ? sock : getenv(KVMEM_SOCKET_ENV) ? getenv(KVMEM_SOCKET_ENV) :
			KVMEM_DEFAULT_SOCKET, strerror(-err));
		return EXIT_CONNECT;
	}
	ret = run(c, argc - optind, argv + optind);
	kvc_close(c);
	return ret;
}
