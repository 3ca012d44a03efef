// SPDX-License-Identifier: MIT
/*
 * NUMA placement of a pool's CPU memory, as the kernel's mm/mempolicy.c
 * places a task's: the host tier's arena (and the CPU backend's device
 * arena) gets a memory policy for the pool's node before any of its pages
 * is faulted in, so that mlock() and every later fault allocate there.
 *
 * The policy is MPOL_PREFERRED: pages come from the node while it has free
 * memory and from the others after that, so a full node slows the pool
 * down instead of failing its creation or killing the daemon. On a memfd
 * (shmem) the policy belongs to the file, so the pages that clients fault
 * through their own mappings follow it too.
 *
 * mm/ does not know the machine's topology: the caller (kvmemd, with
 * hwloc) says which node; a bind the kernel refuses leaves the arena
 * unbound and is recorded, never fatal.
 */
#include <sys/syscall.h>
#include <unistd.h>
#include "internal.h"

#ifndef MPOL_PREFERRED
#define MPOL_PREFERRED	1
#endif

#define NODEMASK_LONGS	(KV_NUMA_NODES_MAX / (8 * sizeof(unsigned long)))

/**
 * placement_check() - whether a placement's node number can be one
 * @pl: placement, or NULL
 *
 * Return: 0, or -EINVAL for a node below -1 or from KV_NUMA_NODES_MAX on
 * (a node that is merely absent from this machine is not an error here:
 * the bind fails and is recorded).
 */
int placement_check(const struct kv_placement *pl)
{
	if (!pl)
		return 0;
	return pl->numa_node < -1 || pl->numa_node >= KV_NUMA_NODES_MAX ? -EINVAL : 0;
}

/**
 * arena_bind_node() - bind a freshly mapped arena to the pool's NUMA node
 * @t:     tier whose arena it is; t->numa_node and t->numa_err are set
 * @base:  the mapping, not faulted in yet
 * @bytes: its length
 *
 * Does nothing without a placement (t->numa_node stays -1).
 */
void arena_bind_node(struct kv_tier *t, void *base, u64 bytes)
{
	unsigned long mask[NODEMASK_LONGS] = { 0 };
	int node = t->pool->place.numa_node;
	const unsigned long bits = 8 * sizeof(unsigned long);

	t->numa_node = -1;
	t->numa_err = 0;
	if (node < 0)
		return;
	mask[node / bits] = 1ul << (node % bits);
	/* maxnode counts one past the mask's bits (the kernel drops one). */
	if (syscall(SYS_mbind, base, (unsigned long)bytes, MPOL_PREFERRED, mask,
		    (unsigned long)KV_NUMA_NODES_MAX + 1, 0ul)) {
		t->numa_err = -errno;
		return;
	}
	t->numa_node = node;
}
