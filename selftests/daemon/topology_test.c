// SPDX-License-Identifier: MIT
/*
 * NUMA placement through kvmemd and `kvmemctl topology`: the report names
 * the machine's NUMA nodes, the GPUs (or the CPU backend), and for each
 * pool where its device, host and swap arenas live; the node it gives is
 * one of the machine's, the daemon's host arenas carry that node's policy
 * (numa_maps) and its kvswapd threads run on that node's CPUs. Any client
 * may read it, for one pool or all; kvmemctl prints it.
 */
#include <dirent.h>
#include <pwd.h>
#include "kselftest_harness.h"
#include "daemon_test.h"

#define POOL(n, extra)							\
	"pool." n ".layers = 2\npool." n ".kv_heads = 2\npool." n ".head_dim = 8\n" \
	"pool." n ".block_tokens = 4\npool." n ".dtype = fp16\n"	\
	"pool." n ".device_mem = 64K\npool." n ".host_mem = 256K\n" extra
#define SWAP_FILE "/var/tmp/kvmem-test-topo-%d"

static char text[KVMEM_MSG_MAX];
static char maps[KVMEM_MSG_MAX];

FIXTURE(topo) {
	struct daemon d;
	struct kvc *c;
	char swap[64];
};

FIXTURE_SETUP(topo)
{
	char conf[2048];

	snprintf(self->swap, sizeof(self->swap), SWAP_FILE, (int)getpid());
	snprintf(conf, sizeof(conf), "swap.path = %s\n" POOL("t", "") POOL("w",
		 "pool.w.swap_mem = 1M\n") "vm.min_free_kbytes = 4\n", self->swap);
	ASSERT_EQ(0, daemon_start(&self->d, conf));
	ASSERT_EQ(0, kvc_connect(self->d.sock, &self->c));
}

FIXTURE_TEARDOWN(topo)
{
	kvc_close(self->c);
	EXPECT_EQ(0, daemon_stop(&self->d));
	daemon_cleanup(&self->d);
	unlink(self->swap);
}

/* The text of pool @name's section (up to the next "Pool "), into @out. */
static const char *pool_section(const char *all, const char *name, char *out, size_t len)
{
	char head[64];
	const char *p, *end;

	snprintf(head, sizeof(head), "Pool %s\n", name);
	p = strstr(all, head);
	if (!p)
		return NULL;
	end = strstr(p + 1, "\nPool ");
	end = end ? end + 1 : p + strlen(p);
	snprintf(out, len, "%.*s", (int)(end - p), p);
	return out;
}

/* The number after @key in @s, or -1. */
static int num_after(const char *s, const char *key)
{
	const char *p = s ? strstr(s, key) : NULL;

	return p ? atoi(p + strlen(key)) : -1;
}

/* Node @node's CPU list from the report's "  node N: cpus LIST, " line. */
static int node_cpus(const char *all, int node, char *out, size_t len)
{
	char key[32];
	const char *p, *e;

	snprintf(key, sizeof(key), "\n  node %d: cpus ", node);
	p = strstr(all, key);
	if (!p)
		return -1;
	p += strlen(key);
	e = strchr(p, ',');
	if (!e)
		return -1;
	snprintf(out, len, "%.*s", (int)(e - p), p);
	return 0;
}

/*
 * The daemon's kvswapd threads: how many; how many of them may run on
 * other CPUs than @cpus (a Cpus_allowed_list) in *@others.
 */
static int daemon_kvswapd(pid_t pid, const char *cpus, int *others)
{
	char path[300], line[256];
	struct dirent *e;
	FILE *f;
	DIR *dir;
	int n = 0;

	*others = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	while (dir && (e = readdir(dir))) {
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", (int)pid, e->d_name);
		if (e->d_name[0] == '.' || read_file(path, line, sizeof(line)) ||
		    strncmp(line, "kvswapd/", 8))
			continue;
		n++;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/status", (int)pid, e->d_name);
		f = fopen(path, "r");
		while (f && fgets(line, sizeof(line), f)) {
			if (strncmp(line, "Cpus_allowed_list:", 18))
				continue;
			line[strcspn(line, "\n")] = '\0';
			if (strcmp(line + 18 + strspn(line + 18, " \t"), cpus))
				(*others)++;
		}
		if (f)
			fclose(f);
	}
	if (dir)
		closedir(dir);
	return n;
}

/* Lines of @maps (numa_maps) that map @file with policy @policy. */
static int maps_with(const char *all, const char *policy, const char *file)
{
	char key[128];
	const char *p = all;
	int n = 0;

	snprintf(key, sizeof(key), " %s file=/memfd:%s", policy, file);
	while ((p = strstr(p, key))) {
		n++;
		p++;
	}
	return n;
}

TEST_F(topo, report_names_each_arena_and_its_node)
{
	char sec[4096], cpus[256], key[320], prefer[32];
	int nodes, node, others;
	bool cpu_backend;

	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_TOPOLOGY, 0, text, sizeof(text)));
	nodes = num_after(text, "NUMA nodes: ");
	ASSERT_LE(1, nodes);
	cpu_backend = strstr(text, "GPUs: none in use (cpu backend)\n") != NULL;
	if (!cpu_backend)
		EXPECT_LE(1, num_after(text, "GPUs: "));
	/* Pool t: a host arena on one of the machine's nodes, mlocked or not. */
	ASSERT_NE_NULL(pool_section(text, "t", sec, sizeof(sec)));
	node = num_after(sec, "\n  host     memfd, node ");
	ASSERT_LE(0, node);
	snprintf(key, sizeof(key), "\n  node %d: cpus ", node);
	EXPECT_NE_NULL(strstr(text, key));
	snprintf(key, sizeof(key), "  device   host memfd, node %d (", node);
	if (cpu_backend)
		EXPECT_NE_NULL(strstr(sec, key));
	else
		EXPECT_NE_NULL(strstr(sec, "  device   GPU "));
	EXPECT_NE_NULL(strstr(sec, "  swap     none\n"));
	/* Pool w: the same node (same GPU or same daemon), and its swap file. */
	ASSERT_NE_NULL(pool_section(text, "w", sec, sizeof(sec)));
	EXPECT_EQ(node, num_after(sec, "\n  host     memfd, node "));
	snprintf(key, sizeof(key), "  swap     %s, swap (", self->swap);
	EXPECT_NE_NULL(strstr(sec, key));
	/* kvswapd: on the node's CPUs, in the report and in fact. */
	ASSERT_EQ(0, node_cpus(text, node, cpus, sizeof(cpus)));
	snprintf(key, sizeof(key), "  kvswapd  cpus %s\n", cpus);
	EXPECT_NE_NULL(strstr(sec, key));
	/* t's device tier; w's device and host tiers (w has swap below its host). */
	EXPECT_EQ(3, daemon_kvswapd(self->d.pid, cpus, &others));
	EXPECT_EQ(0, others);
	/* The host arenas carry the node's policy (where the kernel shows it). */
	snprintf(sec, sizeof(sec), "/proc/%d/numa_maps", (int)self->d.pid);
	if (read_file(sec, maps, sizeof(maps)))
		SKIP(return, "no numa_maps (a kernel without CONFIG_NUMA)");
	snprintf(prefer, sizeof(prefer), "prefer:%d", node);
	EXPECT_EQ(2, maps_with(maps, prefer, "kvmem-host"));
	if (cpu_backend)
		EXPECT_EQ(2, maps_with(maps, prefer, "kvmem-device"));
}

TEST_F(topo, one_pool_any_client_and_kvmemctl)
{
	struct passwd *pw = getpwnam("nobody");
	struct kvc_pool *w;
	char cmd[512];
	FILE *f;
	int status;
	pid_t pid;

	ASSERT_EQ(0, kvc_pool_open(self->c, "w", &w));
	ASSERT_LT(0, kvc_stats(self->c, KVMEM_STATS_TOPOLOGY, w->handle, text, sizeof(text)));
	EXPECT_NE_NULL(strstr(text, "NUMA nodes: "));
	EXPECT_NE_NULL(strstr(text, "Pool w\n"));
	EXPECT_NULL(strstr(text, "Pool t\n"));
	EXPECT_EQ(-EINVAL, kvc_stats(self->c, KVMEM_STATS_SEQLEN + 1, 0, text, sizeof(text)));
	/* kvmemctl topology [POOL] */
	build_path("kvmemctl", cmd, sizeof(cmd));
	snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " -s %s topology t 2>&1",
		 self->d.sock);
	f = popen(cmd, "r");
	ASSERT_NE_NULL(f);
	text[fread(text, 1, sizeof(text) - 1, f)] = '\0';
	EXPECT_EQ(0, WEXITSTATUS(pclose(f)));
	EXPECT_NE_NULL(strstr(text, "Pool t\n  device   "));
	EXPECT_NE_NULL(strstr(text, "\n  host     memfd, node "));
	build_path("kvmemctl", cmd, sizeof(cmd));
	snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd),
		 " -s %s topology nosuch >/dev/null 2>&1", self->d.sock);
	status = system(cmd);
	EXPECT_EQ(1, WEXITSTATUS(status));
	/* Not an admin operation. */
	if (getuid() != 0 || !pw)
		SKIP(return, "needs root and a 'nobody' user");
	pid = fork();
	if (pid == 0) {
		struct kvc *c;

		if (setgid(pw->pw_gid) || setuid(pw->pw_uid) || kvc_connect(self->d.sock, &c))
			_exit(10);
		if (kvc_is_admin(c))
			_exit(11);
		if (kvc_stats(c, KVMEM_STATS_TOPOLOGY, 0, text, sizeof(text)) <= 0 ||
		    !strstr(text, "Pool t\n"))
			_exit(12);
		_exit(0);
	}
	ASSERT_LT(0, pid);
	waitpid(pid, &status, 0);
	EXPECT_EQ(0, WEXITSTATUS(status));
}

TEST_HARNESS_MAIN
