// SPDX-License-Identifier: MIT
/*
 * Loading the CUDA driver at run time. Only cuGetProcAddress_v2 is looked
 * up with dlsym; every other entry point comes from it, asked for the
 * version of its signature declared in cudrv.h (CUDA 12.0's, and CUDA
 * 13.0's for cuMemcpyBatchAsync, used only on a driver of 13.0 or later).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "cudrv.h"

#define CUDRV_API_VERSION	12000
#define CUDRV_BATCH_VERSION	13000

typedef cu_result (*get_proc_fn)(const char *sym, void **pfn, int version,
				 unsigned long long flags, int *status);

/**
 * struct cudrv_sym - one entry point to resolve
 * @name:   its name in the driver, without a version suffix
 * @offset: where its pointer lives in struct cudrv
 */
struct cudrv_sym {
	const char *name;
	size_t offset;
};

#define SYM(n) { "cu" #n, offsetof(struct cudrv, n) }

static const struct cudrv_sym cudrv_syms[] = {
	SYM(Init), SYM(DriverGetVersion), SYM(GetErrorString), SYM(DeviceGetCount),
	SYM(DeviceGet), SYM(DeviceGetName), SYM(DeviceGetUuid), SYM(DeviceGetPCIBusId),
	SYM(DeviceGetAttribute), SYM(DeviceTotalMem), SYM(DevicePrimaryCtxRetain),
	SYM(DevicePrimaryCtxRelease), SYM(CtxSetCurrent), SYM(MemGetInfo),
	SYM(MemGetAllocationGranularity), SYM(MemAddressReserve), SYM(MemAddressFree),
	SYM(MemCreate), SYM(MemRelease), SYM(MemMap), SYM(MemUnmap), SYM(MemSetAccess),
	SYM(MemExportToShareableHandle), SYM(MemImportFromShareableHandle),
	SYM(MemHostRegister), SYM(MemHostUnregister), SYM(MemAllocHost), SYM(MemFreeHost),
	SYM(MemAlloc), SYM(MemFree), SYM(StreamCreate), SYM(StreamDestroy),
	SYM(StreamSynchronize), SYM(EventCreate), SYM(EventRecord), SYM(EventSynchronize),
	SYM(EventElapsedTime), SYM(EventDestroy), SYM(MemcpyAsync), SYM(MemcpyHtoD),
	SYM(MemcpyDtoH), SYM(MemsetD8),
};

static int resolve(struct cudrv *drv, get_proc_fn get, char *why, size_t len)
{
	void **slot;
	size_t i;
	int status;

	for (i = 0; i < sizeof(cudrv_syms) / sizeof(cudrv_syms[0]); i++) {
		slot = (void **)((char *)drv + cudrv_syms[i].offset);
		if (get(cudrv_syms[i].name, slot, CUDRV_API_VERSION, 0, &status) || !*slot) {
			snprintf(why, len, "libcuda.so.1 has no %s", cudrv_syms[i].name);
			return -ENOSYS;
		}
	}
	return 0;
}

/* cuMemcpyBatchAsync of CUDA 13.0 (no failIdx), where the driver has it. */
static void resolve_batch(struct cudrv *drv, get_proc_fn get)
{
	void *fn = NULL;
	int status;

	if (drv->version < CUDRV_BATCH_VERSION)
		return;
	if (!get("cuMemcpyBatchAsync", &fn, CUDRV_BATCH_VERSION, 0, &status) && fn) {
		drv->MemcpyBatchAsync = fn;
		drv->batch = 1;
	}
}

/**
 * cudrv_open() - load the CUDA driver and initialise it
 * @drv: filled in
 * @why: receives the reason when there is no usable driver or GPU
 * @len: its size
 *
 * Return: 0 with at least one device, -ENOENT (no libcuda.so.1), -ENOSYS
 * (a driver older than CUDA 12.0), -ENODEV (cuInit failed or no device).
 */
int cudrv_open(struct cudrv *drv, char *why, size_t len)
{
	get_proc_fn get;
	cu_result r;
	int err;

	memset(drv, 0, sizeof(*drv));
	drv->dl = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!drv->dl) {
		snprintf(why, len, "libcuda.so.1 not found (no NVIDIA driver)");
		return -ENOENT;
	}
	get = (get_proc_fn)dlsym(drv->dl, "cuGetProcAddress_v2");
	if (!get) {
		snprintf(why, len, "libcuda.so.1 is older than CUDA 12.0");
		err = -ENOSYS;
		goto out_close;
	}
	err = resolve(drv, get, why, len);
	if (err)
		goto out_close;
	r = drv->Init(0);
	if (r) {
		snprintf(why, len, "cuInit: %s", cudrv_strerror(drv, r));
		err = -ENODEV;
		goto out_close;
	}
	drv->DriverGetVersion(&drv->version);
	if (drv->DeviceGetCount(&drv->nr_devices) || !drv->nr_devices) {
		snprintf(why, len, "no CUDA device");
		err = -ENODEV;
		goto out_close;
	}
	resolve_batch(drv, get);
	return 0;

out_close:
	dlclose(drv->dl);
	memset(drv, 0, sizeof(*drv));
	return err;
}

/** cudrv_close() - undo cudrv_open(); a zeroed @drv is fine */
void cudrv_close(struct cudrv *drv)
{
	if (drv->dl)
		dlclose(drv->dl);
	memset(drv, 0, sizeof(*drv));
}

/** cudrv_strerror() - the driver's text for @e */
const char *cudrv_strerror(const struct cudrv *drv, cu_result e)
{
	const char *s = NULL;

	if (drv->GetErrorString && !drv->GetErrorString(e, &s) && s)
		return s;
	return "unknown CUDA error";
}

/** cudrv_errno() - a negative errno for a CUDA result (0 for success) */
int cudrv_errno(cu_result e)
{
	switch (e) {
	case CUDRV_SUCCESS:
		return 0;
	case CUDRV_ERROR_OUT_OF_MEMORY:
		return -ENOMEM;
	case CUDRV_ERROR_NO_DEVICE:
		return -ENODEV;
	case CUDRV_ERROR_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	default:
		return -EIO;
	}
}

/**
 * cudrv_find_uuid() - the ordinal, in this process, of the device @u
 * @drv: driver
 * @u:   the device's UUID (ordinals differ between processes that see
 *       different CUDA_VISIBLE_DEVICES; UUIDs do not)
 * @out: receives the ordinal
 *
 * Return: 0 or -ENODEV when this process cannot see that device.
 */
int cudrv_find_uuid(struct cudrv *drv, const struct cu_uuid *u, cu_device *out)
{
	struct cu_uuid v;
	cu_device d;
	int i;

	for (i = 0; i < drv->nr_devices; i++) {
		if (drv->DeviceGet(&d, i) || drv->DeviceGetUuid(&v, d))
			continue;
		if (!memcmp(&v, u, sizeof(v))) {
			*out = i;
			return 0;
		}
	}
	return -ENODEV;
}

/**
 * cudrv_device_ctx() - a device's primary context, made current
 * @drv:     driver
 * @ordinal: device ordinal
 * @dev:     receives the device
 * @ctx:     receives its retained primary context (release it with
 *           drv->DevicePrimaryCtxRelease(*dev))
 *
 * Return: 0, -ENODEV (no such device) or the driver's error as an errno.
 */
int cudrv_device_ctx(struct cudrv *drv, int ordinal, cu_device *dev, cu_ctx *ctx)
{
	cu_result r;

	if (ordinal < 0 || ordinal >= drv->nr_devices || drv->DeviceGet(dev, ordinal))
		return -ENODEV;
	r = drv->DevicePrimaryCtxRetain(ctx, *dev);
	if (r)
		return cudrv_errno(r);
	r = drv->CtxSetCurrent(*ctx);
	if (r) {
		drv->DevicePrimaryCtxRelease(*dev);
		return cudrv_errno(r);
	}
	return 0;
}
