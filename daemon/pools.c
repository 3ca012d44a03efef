// SPDX-License-Identifier: MIT
/*
 * The pools the daemon serves, created from the config's pool.NAME.*
 * sections, and the run-time tunables applied to all of them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kvmemd.h"

/* Open swap.path when a pool has a swap tier: a file is created 0600. */
static int swap_open(struct kvmemd *d)
{
	if (!d->cfg.swap_path[0] || !kvmemd_config_swap_size(&d->cfg))
		return 0;
	d->swap_fd = open(d->cfg.swap_path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
	if (d->swap_fd < 0) {
		kvlog(d, KVLOG_ERR, "swap.path %s: %s", d->cfg.swap_path, strerror(errno));
		return -errno;
	}
	kvlog(d, KVLOG_INFO, "swap area %s: %llu MiB", d->cfg.swap_path,
	      (unsigned long long)(kvmemd_config_swap_size(&d->cfg) >> 20));
	return 0;
}

static void swap_close(struct kvmemd *d)
{
	if (d->swap_fd >= 0)
		close(d->swap_fd);
	d->swap_fd = -1;
}

/**
 * kvmemd_pools_create() - create every configured pool (kvswapd started)
 * @d: daemon with its config loaded
 *
 * Return: 0 or the first error (pools already made are destroyed).
 */
int kvmemd_pools_create(struct kvmemd *d)
{
	const struct kvmemd_pool_config *pc;
	struct kv_pool_params p;
	u32 i;
	int err;

	err = kvmemd_backend_open(d);
	if (err)
		return err;
	kvmemd_topology_open(d);
	err = swap_open(d);
	if (err)
		goto out_backend;
	d->pools = calloc(d->cfg.nr_pools, sizeof(*d->pools));
	if (!d->pools) {
		swap_close(d);
		err = -ENOMEM;
		goto out_backend;
	}
	for (i = 0; i < d->cfg.nr_pools; i++) {
		pc = &d->cfg.pools[i];
		memset(&p, 0, sizeof(p));
		p.name = pc->name;
		p.geom = pc->geom;
		p.nr_frames[KV_TIER_DEVICE] = pc->nr_frames[KV_TIER_DEVICE];
		p.nr_frames[KV_TIER_HOST] = pc->nr_frames[KV_TIER_HOST];
		p.nr_frames[KV_TIER_SWAP] = pc->nr_frames[KVMEMD_TIER_SWAP];
		p.swap = (struct kv_swap_params){ .fd = d->swap_fd, .engine = d->cfg.swap_engine,
						  .offset = kvmemd_config_swap_offset(&d->cfg, i) };
		kvmemd_config_vm(&d->cfg, &p.vm);
		if (pc->prefix == KVMEMD_PREFIX_OFF)
			p.flags |= KV_POOL_NO_PREFIX;
		else if (pc->prefix == KVMEMD_PREFIX_GLOBAL)
			p.flags |= KV_POOL_PREFIX_GLOBAL;
		if (d->backend == KV_BACKEND_CUDA) {
			d->pools[i].cuda = (struct kv_cuda_params){ .drv = &d->cuda,
								    .device = (int)pc->gpu };
			p.cuda = &d->pools[i].cuda;
			if (p.nr_frames[KV_TIER_SWAP] && !p.nr_frames[KV_TIER_HOST]) {
				kvlog(d, KVLOG_ERR, "pool.%s: with the cuda backend, swap_mem "
				      "needs host_mem (swap I/O goes through host memory)", pc->name);
				err = -EINVAL;
			}
		}
		if (err) {
			d->nr_pools = i;
			kvmemd_pools_destroy(d);
			return err;
		}
		d->pools[i].placed = !kvmemd_topology_place(d, i, &d->pools[i].place);
		p.place = d->pools[i].placed ? &d->pools[i].place : NULL;
		err = kv_pool_create(&p, &d->pools[i].pool);
		if (!err) {
			err = kvmemd_reserve_init(&d->pools[i], p.nr_frames[KV_TIER_DEVICE]);
			if (err)
				kv_pool_destroy(d->pools[i].pool);
		}
		if (err) {
			kvlog(d, KVLOG_ERR, "pool %s: %s%s", pc->name, strerror(-err),
			      p.cuda && err == -ENOMEM ? " (more than the GPU has free)" :
			      p.cuda && err == -EOPNOTSUPP ?
			      " (the GPU cannot export memory as file descriptors)" :
			      err == -E2BIG ? " (a tier of more than 1P, or swap_mem with frames "
			      "of 4G or more: smaller memory sizes or blocks)" :
			      err == -ENOSPC ? " (no room for swap_mem in swap.path)" : "");
			d->nr_pools = i;
			kvmemd_pools_destroy(d);
			return err;
		}
		snprintf(d->pools[i].name, sizeof(d->pools[i].name), "%s", pc->name);
		d->pools[i].handle = i + 1;
		kvlog(d, KVLOG_INFO, "pool %s: %u device + %u host + %u swap blocks of %llu KiB (%s)",
		      pc->name, p.nr_frames[0], p.nr_frames[1], p.nr_frames[2],
		      (unsigned long long)(kv_frame_bytes(&pc->geom) >> 10),
		      kv_pool_device_desc(d->pools[i].pool));
	}
	d->nr_pools = d->cfg.nr_pools;
	return 0;

out_backend:
	kvmemd_topology_close(d);
	kvmemd_backend_close(d);
	return err;
}

/** kvmemd_pools_destroy() - destroy every pool */
void kvmemd_pools_destroy(struct kvmemd *d)
{
	u32 i;

	for (i = 0; i < d->nr_pools; i++) {
		kv_pool_destroy(d->pools[i].pool);
		free(d->pools[i].owner);
	}
	free(d->pools);
	d->pools = NULL;
	d->nr_pools = 0;
	swap_close(d);
	kvmemd_topology_close(d);
	kvmemd_backend_close(d);
}

/** kvmemd_pool_get() - a pool by protocol handle (1-based), or NULL */
struct kvmemd_pool *kvmemd_pool_get(struct kvmemd *d, u32 handle)
{
	return handle && handle <= d->nr_pools ? &d->pools[handle - 1] : NULL;
}

/**
 * kvmemd_apply_tunables() - push the config's vm.* values into every pool
 * @d: daemon
 *
 * Return: 0 or the first pool's error (the config was validated, so only a
 * bug gets one).
 */
int kvmemd_apply_tunables(struct kvmemd *d)
{
	struct kv_vm_tunables vm;
	u32 i;
	int err;

	kvmemd_config_vm(&d->cfg, &vm);
	for (i = 0; i < d->nr_pools; i++) {
		err = kv_pool_set_tunables(d->pools[i].pool, &vm);
		if (err)
			return err;
	}
	return 0;
}
