/* SPDX-License-Identifier: MIT */
/*
 * The CUDA driver API, loaded at run time: dlopen("libcuda.so.1") and every
 * entry point through cuGetProcAddress, so that kvmem builds without the
 * CUDA toolkit and runs where no GPU is. The types below are the few parts
 * of the driver's ABI that kvmem uses, declared here (same layout and
 * values as cuda.h; selftests/cuda/abi_test checks them against cuda.h
 * where the toolkit is installed).
 */
#ifndef _KV_LIB_CUDRV_H
#define _KV_LIB_CUDRV_H

#include <stddef.h>
#include <stdint.h>

typedef int cu_result;
typedef int cu_device;
typedef unsigned long long cu_devptr;
typedef unsigned long long cu_memhandle;
typedef struct cu_ctx_st *cu_ctx;
typedef struct cu_stream_st *cu_stream;
typedef struct cu_event_st *cu_event;

#define CUDRV_SUCCESS			0
#define CUDRV_ERROR_OUT_OF_MEMORY		2
#define CUDRV_ERROR_NO_DEVICE		100
#define CUDRV_ERROR_HOST_MEMORY_ALREADY_REGISTERED 712
#define CUDRV_ERROR_NOT_SUPPORTED		801

#define CUDRV_ATTR_PCI_BUS_ID		33
#define CUDRV_ATTR_PCI_DEVICE_ID		34
#define CUDRV_ATTR_PCI_DOMAIN_ID		50
#define CUDRV_ATTR_VMM_SUPPORTED		102
#define CUDRV_ATTR_POSIX_FD_SUPPORTED	103

#define CUDRV_MEM_ALLOCATION_TYPE_PINNED	1
#define CUDRV_MEM_HANDLE_TYPE_POSIX_FD	1
#define CUDRV_MEM_LOCATION_TYPE_DEVICE	1
#define CUDRV_MEM_ALLOC_GRANULARITY_MINIMUM	0
#define CUDRV_MEM_ALLOC_GRANULARITY_RECOMMENDED	1
#define CUDRV_MEM_ACCESS_FLAGS_PROT_READWRITE	3
#define CUDRV_STREAM_NON_BLOCKING		1
#define CUDRV_EVENT_DEFAULT		0
#define CUDRV_EVENT_DISABLE_TIMING		2
#define CUDRV_MEMHOSTREGISTER_PORTABLE	1
#define CUDRV_MEMCPY_SRC_ACCESS_ORDER_STREAM	1

/** struct cu_mem_location - CUmemLocation */
struct cu_mem_location {
	int type;
	int id;
};

/** struct cu_mem_alloc_prop - CUmemAllocationProp */
struct cu_mem_alloc_prop {
	int type;
	int requested_handle_types;
	struct cu_mem_location location;
	void *win32_meta;
	struct {
		unsigned char compression_type;
		unsigned char gpu_direct_rdma_capable;
		unsigned short usage;
		unsigned char reserved[4];
	} alloc_flags;
};

/** struct cu_mem_access_desc - CUmemAccessDesc */
struct cu_mem_access_desc {
	struct cu_mem_location location;
	int flags;
};

/** struct cu_memcpy_attrs - CUmemcpyAttributes */
struct cu_memcpy_attrs {
	int src_access_order;
	struct cu_mem_location src_loc_hint;
	struct cu_mem_location dst_loc_hint;
	unsigned int flags;
};

/** struct cu_uuid - CUuuid */
struct cu_uuid {
	unsigned char bytes[16];
};

/**
 * struct cudrv - the loaded driver: one per process user (daemon, client,
 * benchmark), passed to whoever needs it
 * @dl:      dlopen handle
 * @version: cuDriverGetVersion(), e.g. 13000
 * @nr_devices: cuDeviceGetCount()
 * @batch:   cuMemcpyBatchAsync of CUDA 13's signature is available
 *
 * The remaining members are the driver's entry points, named as in cuda.h
 * without the "cu" prefix.
 */
struct cudrv {
	void *dl;
	int version;
	int nr_devices;
	int batch;

	cu_result (*Init)(unsigned int flags);
	cu_result (*DriverGetVersion)(int *v);
	cu_result (*GetErrorString)(cu_result e, const char **s);
	cu_result (*DeviceGetCount)(int *n);
	cu_result (*DeviceGet)(cu_device *d, int ordinal);
	cu_result (*DeviceGetName)(char *name, int len, cu_device d);
	cu_result (*DeviceGetUuid)(struct cu_uuid *u, cu_device d);
	cu_result (*DeviceGetPCIBusId)(char *id, int len, cu_device d);
	cu_result (*DeviceGetAttribute)(int *v, int attr, cu_device d);
	cu_result (*DeviceTotalMem)(size_t *bytes, cu_device d);
	cu_result (*DevicePrimaryCtxRetain)(cu_ctx *ctx, cu_device d);
	cu_result (*DevicePrimaryCtxRelease)(cu_device d);
	cu_result (*CtxSetCurrent)(cu_ctx ctx);
	cu_result (*MemGetInfo)(size_t *free, size_t *total);
	cu_result (*MemGetAllocationGranularity)(size_t *g, const struct cu_mem_alloc_prop *p,
						 int option);
	cu_result (*MemAddressReserve)(cu_devptr *p, size_t size, size_t align, cu_devptr addr,
				       unsigned long long flags);
	cu_result (*MemAddressFree)(cu_devptr p, size_t size);
	cu_result (*MemCreate)(cu_memhandle *h, size_t size, const struct cu_mem_alloc_prop *p,
			       unsigned long long flags);
	cu_result (*MemRelease)(cu_memhandle h);
	cu_result (*MemMap)(cu_devptr p, size_t size, size_t offset, cu_memhandle h,
			    unsigned long long flags);
	cu_result (*MemUnmap)(cu_devptr p, size_t size);
	cu_result (*MemSetAccess)(cu_devptr p, size_t size, const struct cu_mem_access_desc *d,
				  size_t count);
	cu_result (*MemExportToShareableHandle)(void *handle, cu_memhandle h, int type,
						unsigned long long flags);
	cu_result (*MemImportFromShareableHandle)(cu_memhandle *h, void *handle, int type);
	cu_result (*MemHostRegister)(void *p, size_t size, unsigned int flags);
	cu_result (*MemHostUnregister)(void *p);
	cu_result (*MemAllocHost)(void **p, size_t size);
	cu_result (*MemFreeHost)(void *p);
	cu_result (*MemAlloc)(cu_devptr *p, size_t size);
	cu_result (*MemFree)(cu_devptr p);
	cu_result (*StreamCreate)(cu_stream *s, unsigned int flags);
	cu_result (*StreamDestroy)(cu_stream s);
	cu_result (*StreamSynchronize)(cu_stream s);
	cu_result (*EventCreate)(cu_event *e, unsigned int flags);
	cu_result (*EventRecord)(cu_event e, cu_stream s);
	cu_result (*EventSynchronize)(cu_event e);
	cu_result (*EventElapsedTime)(float *ms, cu_event a, cu_event b);
	cu_result (*EventDestroy)(cu_event e);
	cu_result (*MemcpyAsync)(cu_devptr dst, cu_devptr src, size_t n, cu_stream s);
	cu_result (*MemcpyBatchAsync)(cu_devptr *dsts, cu_devptr *srcs, size_t *sizes,
				      size_t count, struct cu_memcpy_attrs *attrs,
				      size_t *attr_idxs, size_t nr_attrs, cu_stream s);
	cu_result (*MemcpyHtoD)(cu_devptr dst, const void *src, size_t n);
	cu_result (*MemcpyDtoH)(void *dst, cu_devptr src, size_t n);
	cu_result (*MemsetD8)(cu_devptr dst, unsigned char v, size_t n);
};

/* Internal to kvmem's binaries: not exported by libkvclient.so. */
#define CUDRV_HIDDEN	__attribute__((visibility("hidden")))

CUDRV_HIDDEN int cudrv_open(struct cudrv *drv, char *why, size_t len);
CUDRV_HIDDEN void cudrv_close(struct cudrv *drv);
CUDRV_HIDDEN const char *cudrv_strerror(const struct cudrv *drv, cu_result e);
CUDRV_HIDDEN int cudrv_errno(cu_result e);
CUDRV_HIDDEN int cudrv_find_uuid(struct cudrv *drv, const struct cu_uuid *u, cu_device *out);
CUDRV_HIDDEN int cudrv_device_ctx(struct cudrv *drv, int ordinal, cu_device *dev, cu_ctx *ctx);

#endif /* _KV_LIB_CUDRV_H */
