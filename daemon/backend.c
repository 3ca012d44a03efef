// SPDX-License-Identifier: MIT
/*
 * The device tier's backend: CUDA where a GPU is usable (device.backend =
 * auto or cuda), the CPU backend otherwise. The driver is loaded at run
 * time, so one kvmemd serves both; which one it picked, and why, is logged
 * and shown in meminfo.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "kvmemd.h"

static bool gpu_listed(const struct kvmemd *d, u32 gpu)
{
	return d->cfg.gpus == KVMEMD_GPUS_ALL || (d->cfg.gpus & (1ull << gpu));
}

/* Whether GPU @g can hold an arena clients import: VMM and POSIX fds. */
static bool gpu_exports(struct kvmemd *d, u32 g)
{
	int vmm = 0, fd = 0;
	cu_device dev;

	if (d->cuda.DeviceGet(&dev, (int)g))
		return false;
	d->cuda.DeviceGetAttribute(&vmm, CUDRV_ATTR_VMM_SUPPORTED, dev);
	d->cuda.DeviceGetAttribute(&fd, CUDRV_ATTR_POSIX_FD_SUPPORTED, dev);
	return vmm && fd;
}

/* The first pool GPU that cannot export memory, or -1. */
static int gpu_unusable(struct kvmemd *d)
{
	u32 i;

	for (i = 0; i < d->cfg.nr_pools; i++)
		if (!gpu_exports(d, d->cfg.pools[i].gpu))
			return (int)d->cfg.pools[i].gpu;
	return -1;
}

/* Every GPU that device.gpus and the pools name must exist. */
static int gpus_check(struct kvmemd *d)
{
	int n = d->cuda.nr_devices;
	u32 g, i;

	for (g = 0; g < KVMEMD_MAX_GPUS && d->cfg.gpus != KVMEMD_GPUS_ALL; g++) {
		if ((d->cfg.gpus & (1ull << g)) && (int)g >= n) {
			kvlog(d, KVLOG_ERR, "device.gpus: there is no GPU %u (this machine has %d)",
			      g, n);
			return -ENODEV;
		}
	}
	for (i = 0; i < d->cfg.nr_pools; i++) {
		g = d->cfg.pools[i].gpu;
		if (!gpu_listed(d, g) || (int)g >= n) {
			kvlog(d, KVLOG_ERR, "pool.%s.gpu = %u: %s", d->cfg.pools[i].name, g,
			      (int)g >= n ? "no such GPU" : "not in device.gpus");
			return -ENODEV;
		}
	}
	return 0;
}

/* No usable GPU: a startup error with device.backend = cuda, else the cpu backend. */
static int no_gpu(struct kvmemd *d, const char *why)
{
	if (d->cfg.backend == KVMEMD_BACKEND_CUDA) {
		kvlog(d, KVLOG_ERR, "device.backend = cuda: no usable GPU: %s", why);
		d->reported = true;
		return -ENODEV;
	}
	kvlog(d, KVLOG_INFO, "device tier: cpu backend (no usable GPU: %s)", why);
	return 0;
}

/**
 * kvmemd_backend_open() - choose the device tier's backend
 * @d: daemon with its config loaded
 *
 * Return: 0, or -ENODEV when device.backend = cuda and no GPU is usable,
 * or a GPU named in the config does not exist (both logged).
 */
int kvmemd_backend_open(struct kvmemd *d)
{
	char why[160];
	int err, g;

	d->backend = KV_BACKEND_CPU;
	if (d->cfg.backend == KVMEMD_BACKEND_CPU) {
		kvlog(d, KVLOG_INFO, "device tier: cpu backend (device.backend = cpu)");
		return 0;
	}
	err = cudrv_open(&d->cuda, why, sizeof(why));
	if (err)
		return no_gpu(d, why);
	err = gpus_check(d);
	if (err) {
		d->reported = true;
		cudrv_close(&d->cuda);
		return err;
	}
	g = gpu_unusable(d);
	if (g >= 0) {
		snprintf(why, sizeof(why), "GPU %d cannot export memory as file descriptors "
			 "(no VMM or POSIX fd support)", g);
		cudrv_close(&d->cuda);
		return no_gpu(d, why);
	}
	d->backend = KV_BACKEND_CUDA;
	kvlog(d, KVLOG_INFO, "device tier: cuda backend (driver %d.%d, %d GPU%s)",
	      d->cuda.version / 1000, d->cuda.version % 1000 / 10, d->cuda.nr_devices,
	      d->cuda.nr_devices == 1 ? "" : "s");
	return 0;
}

/** kvmemd_backend_close() - unload the driver (after the pools are gone) */
void kvmemd_backend_close(struct kvmemd *d)
{
	cudrv_close(&d->cuda);
	d->backend = 0;
}
