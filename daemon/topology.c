// SPDX-License-Identifier: MIT
/*
 * NUMA placement with hwloc: where each pool's host memory and reclaim
 * threads go, and `kvmemctl topology`.
 *
 * A pool of the CUDA backend is placed on the NUMA node nearest its GPU,
 * found from the GPU's PCI bus id; a pool of the CPU backend on the node
 * the daemon runs on. Its host arena (and the CPU backend's device arena)
 * is bound to that node and its kvswapd threads run on the node's CPUs;
 * mm/ applies the placement (struct kv_placement) and says what took.
 * Where hwloc cannot load the topology, or cannot tell a GPU's node on a
 * machine of several nodes, the pool is left unplaced (logged): placement
 * is never a reason not to start.
 */
#include <errno.h>
#include <string.h>
#include <hwloc.h>
#include <hwloc/glibc-sched.h>
#include "kvmemd.h"

/**
 * kvmemd_topology_open() - load the machine's topology into d->topo
 * @d: daemon, backend chosen (the CUDA backend needs the PCI devices)
 *
 * A failure is logged and leaves d->topo NULL: pools are then unplaced.
 */
void kvmemd_topology_open(struct kvmemd *d)
{
	hwloc_topology_t topo;

	if (hwloc_topology_init(&topo)) {
		kvlog(d, KVLOG_WARN, "topology: hwloc: %s; no NUMA placement", strerror(errno));
		return;
	}
	if (d->backend == KV_BACKEND_CUDA)
		hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
	if (hwloc_topology_load(topo)) {
		kvlog(d, KVLOG_WARN, "topology: hwloc: %s; no NUMA placement", strerror(errno));
		hwloc_topology_destroy(topo);
		return;
	}
	d->topo = topo;
	kvlog(d, KVLOG_DEBUG, "topology: %d NUMA node(s), %d CPUs",
	      hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE),
	      hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU));
}

/** kvmemd_topology_close() - free the topology (after the pools are gone) */
void kvmemd_topology_close(struct kvmemd *d)
{
	if (d->topo)
		hwloc_topology_destroy(d->topo);
	d->topo = NULL;
}

/* The first NUMA node whose CPUs meet @set, or NULL. */
static hwloc_obj_t node_of_cpus(hwloc_topology_t topo, hwloc_const_cpuset_t set)
{
	hwloc_obj_t node = NULL;

	while ((node = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_NUMANODE, node)))
		if (node->cpuset && hwloc_bitmap_intersects(node->cpuset, set))
			return node;
	return NULL;
}

/* The NUMA node of the CPU this thread last ran on (the first node if unknown). */
static hwloc_obj_t node_of_daemon(hwloc_topology_t topo)
{
	hwloc_bitmap_t set = hwloc_bitmap_alloc();
	hwloc_obj_t node = NULL;

	if (set && !hwloc_get_last_cpu_location(topo, set, HWLOC_CPUBIND_THREAD))
		node = node_of_cpus(topo, set);
	hwloc_bitmap_free(set);
	return node ? node : hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, 0);
}

/*
 * The NUMA node nearest GPU @ordinal, from its PCI bus id (into @busid);
 * NULL when hwloc does not know the device and the machine has several
 * nodes (with one, that one is nearest).
 */
static hwloc_obj_t node_of_gpu(struct kvmemd *d, int ordinal, char *busid, int len)
{
	hwloc_topology_t topo = d->topo;
	hwloc_obj_t pci = NULL, anc;
	cu_device dev;
	int os;

	busid[0] = '\0';
	if (!d->cuda.DeviceGet(&dev, ordinal) && !d->cuda.DeviceGetPCIBusId(busid, len, dev))
		pci = hwloc_get_pcidev_by_busidstring(topo, busid);
	anc = pci ? hwloc_get_non_io_ancestor_obj(topo, pci) : NULL;
	if (anc && anc->nodeset && (os = hwloc_bitmap_first(anc->nodeset)) >= 0)
		return hwloc_get_numanode_obj_by_os_index(topo, (unsigned int)os);
	if (hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE) == 1)
		return hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, 0);
	return NULL;
}

/**
 * kvmemd_topology_place() - find where pool @i of the config goes
 * @d:  daemon, backend chosen, topology loaded (kvmemd_topology_open())
 * @i:  index of the pool in d->cfg.pools
 * @pl: filled in: the node (its OS number) and its CPUs
 *
 * CUDA backend: the node nearest the pool's GPU; CPU backend: the node the
 * daemon runs on. A node without CPUs of its own leaves kvswapd's CPUs
 * empty (unbound).
 *
 * Return: 0, or -ENODEV when there is no topology or the GPU's node is
 * unknown (logged): create the pool without a placement.
 */
int kvmemd_topology_place(struct kvmemd *d, u32 i, struct kv_placement *pl)
{
	const struct kvmemd_pool_config *pc = &d->cfg.pools[i];
	char busid[32] = "", cpus[256] = "";
	hwloc_obj_t node;

	memset(pl, 0, sizeof(*pl));
	pl->numa_node = -1;
	if (!d->topo)
		return -ENODEV;
	if (d->backend == KV_BACKEND_CUDA)
		node = node_of_gpu(d, (int)pc->gpu, busid, sizeof(busid));
	else
		node = node_of_daemon(d->topo);
	if (!node || node->os_index >= KV_NUMA_NODES_MAX) {
		if (d->backend == KV_BACKEND_CUDA)
			kvlog(d, KVLOG_WARN, "pool %s: NUMA node of GPU %u (%s) unknown; "
			      "not placed", pc->name, pc->gpu, busid[0] ? busid : "no PCI bus id");
		else
			kvlog(d, KVLOG_WARN, "pool %s: no NUMA node; not placed", pc->name);
		return -ENODEV;
	}
	pl->numa_node = (int)node->os_index;
	if (node->cpuset && !hwloc_bitmap_iszero(node->cpuset)) {
		hwloc_cpuset_to_glibc_sched_affinity(d->topo, node->cpuset, &pl->cpus,
						     sizeof(pl->cpus));
		hwloc_bitmap_list_snprintf(cpus, sizeof(cpus), node->cpuset);
	}
	if (d->backend == KV_BACKEND_CUDA)
		kvlog(d, KVLOG_INFO, "pool %s: NUMA node %d (nearest GPU %u at %s), kvswapd on "
		      "CPUs %s", pc->name, pl->numa_node, pc->gpu, busid, cpus[0] ? cpus : "any");
	else
		kvlog(d, KVLOG_INFO, "pool %s: NUMA node %d (where kvmemd runs), kvswapd on CPUs %s",
		      pc->name, pl->numa_node, cpus[0] ? cpus : "any");
	return 0;
}

static void nodes_text(struct kvmemd *d, FILE *f)
{
	hwloc_obj_t node = NULL;
	char cpus[256];

	if (!d->topo) {
		fprintf(f, "NUMA nodes: unknown (hwloc could not load the topology)\n");
		return;
	}
	fprintf(f, "NUMA nodes: %d\n", hwloc_get_nbobjs_by_type(d->topo, HWLOC_OBJ_NUMANODE));
	while ((node = hwloc_get_next_obj_by_type(d->topo, HWLOC_OBJ_NUMANODE, node))) {
		cpus[0] = '\0';
		if (node->cpuset && !hwloc_bitmap_iszero(node->cpuset))
			hwloc_bitmap_list_snprintf(cpus, sizeof(cpus), node->cpuset);
		fprintf(f, "  node %u: cpus %s, memory %llu MiB\n", node->os_index,
			cpus[0] ? cpus : "none",
			(unsigned long long)(node->attr->numanode.local_memory >> 20));
	}
}

static void gpus_text(struct kvmemd *d, FILE *f)
{
	char name[96], busid[32];
	hwloc_obj_t node;
	size_t total;
	cu_device dev;
	int g;

	if (d->backend != KV_BACKEND_CUDA) {
		fprintf(f, "GPUs: none in use (cpu backend)\n");
		return;
	}
	fprintf(f, "GPUs: %d\n", d->cuda.nr_devices);
	for (g = 0; g < d->cuda.nr_devices; g++) {
		strcpy(name, "?");
		total = 0;
		if (!d->cuda.DeviceGet(&dev, g)) {
			d->cuda.DeviceGetName(name, sizeof(name), dev);
			d->cuda.DeviceTotalMem(&total, dev);
		}
		node = d->topo ? node_of_gpu(d, g, busid, sizeof(busid)) : NULL;
		if (!d->topo)
			strcpy(busid, "?");
		fprintf(f, "  gpu %d: %s, pci %s, ", g, name, busid[0] ? busid : "?");
		if (node)
			fprintf(f, "node %u", node->os_index);
		else
			fprintf(f, "node unknown");
		fprintf(f, ", memory %llu MiB\n", (unsigned long long)(total >> 20));
	}
}

/* "node N", or why the arena is not bound. */
static void node_text(FILE *f, const struct kv_tier_info *ti)
{
	if (ti->numa_node >= 0)
		fprintf(f, "node %d", ti->numa_node);
	else if (ti->numa_err)
		fprintf(f, "not bound (mbind: %s)", strerror(-ti->numa_err));
	else
		fprintf(f, "not bound");
}

static void pool_text(struct kvmemd *d, struct kvmemd_pool *p, FILE *f)
{
	const struct kv_tier_info *dev, *host, *swap;
	const char *ddesc = kv_pool_device_desc(p->pool);
	hwloc_bitmap_t set;
	struct kv_meminfo mi;
	char cpus[256] = "";

	kv_pool_meminfo(p->pool, &mi);
	dev = &mi.tier[KV_TIER_DEVICE];
	host = &mi.tier[KV_TIER_HOST];
	swap = &mi.tier[KV_TIER_SWAP];
	fprintf(f, "Pool %s\n", p->name);
	if (d->backend == KV_BACKEND_CUDA) {
		fprintf(f, "  device   GPU %d (%s)\n", p->cuda.device, ddesc);
	} else {
		fprintf(f, "  device   host memfd, ");
		node_text(f, dev);
		fprintf(f, " (%s backend)\n", ddesc);
	}
	if (host->total) {
		fprintf(f, "  host     %s, ", host->backend);
		node_text(f, host);
		fprintf(f, ", %s", host->mlocked ? "mlocked" : "not mlocked");
		if (d->backend == KV_BACKEND_CUDA)
			fprintf(f, ", %s", host->dma ? "registered for DMA" : "not registered for DMA");
		fprintf(f, "\n");
	} else {
		fprintf(f, "  host     none\n");
	}
	if (swap->total)
		fprintf(f, "  swap     %s, %s\n", d->cfg.swap_path, swap->backend);
	else
		fprintf(f, "  swap     none\n");
	set = p->placed && d->topo ? hwloc_bitmap_alloc() : NULL;
	if (set && CPU_COUNT(&p->place.cpus)) {
		hwloc_cpuset_from_glibc_sched_affinity(d->topo, set, &p->place.cpus,
						       sizeof(p->place.cpus));
		hwloc_bitmap_list_snprintf(cpus, sizeof(cpus), set);
	}
	hwloc_bitmap_free(set);
	if (!cpus[0])
		fprintf(f, "  kvswapd  any cpu\n");
	else
		fprintf(f, "  kvswapd  cpus %s%s\n", cpus,
			dev->kvswapd_bound ? "" : " (NOT bound: the kernel refused)");
}

/**
 * kvmemd_topology_text() - the text of `kvmemctl topology`
 * @d:    daemon
 * @pool: pool handle, 0 for every pool
 * @f:    stream
 *
 * NUMA nodes (CPUs, memory), GPUs (ordinal, name, PCI bus id, node, memory)
 * when the CUDA backend serves, then per pool where each tier's arena
 * lives and where its kvswapd threads run.
 */
void kvmemd_topology_text(struct kvmemd *d, u32 pool, FILE *f)
{
	u32 i;

	nodes_text(d, f);
	gpus_text(d, f);
	for (i = 0; i < d->nr_pools; i++)
		if (!pool || pool == d->pools[i].handle)
			pool_text(d, &d->pools[i], f);
}
