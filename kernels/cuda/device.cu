// SPDX-License-Identifier: MIT
/*
 * What the launches ask of the current device, read from the runtime once
 * per device and kept: its SM count, its compute capability, and the
 * architecture of the device code the runtime loaded for it.
 *
 * The last tells whether the bulk copies and mbarriers of sm_90 are in the
 * code that runs: a library built without sm_90 code (CUDA_ARCH in
 * kernels.mk) runs on an H100 from compute_80 PTX, where those
 * instructions are compiled out. Kernels that need them must then not be
 * chosen, or they would run with their copies missing.
 */
#include <errno.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_internal.h"

namespace {

/* built like every kernel of the library; only its attributes are read */
__global__ void kv_cuda_probe(void)
{
}

/*
 * struct dev_cache - one device's kv_cuda_dev, published once read:
 * @state 0 unknown, 1 being written by one caller, 2 known (@d may be
 * read). A caller that finds another writing reads the device itself.
 */
struct dev_cache {
	struct kv_cuda_dev d;
	int state;
};

int read_device(int id, struct kv_cuda_dev *d)
{
	cudaFuncAttributes fa;

	d->id = id;
	if (cudaDeviceGetAttribute(&d->sms, cudaDevAttrMultiProcessorCount, id) != cudaSuccess ||
	    cudaDeviceGetAttribute(&d->major, cudaDevAttrComputeCapabilityMajor, id) !=
	    cudaSuccess ||
	    cudaDeviceGetAttribute(&d->minor, cudaDevAttrComputeCapabilityMinor, id) !=
	    cudaSuccess || cudaFuncGetAttributes(&fa, kv_cuda_probe) != cudaSuccess)
		return -ENODEV;
	d->code_arch = fa.ptxVersion;
	return 0;
}

} /* namespace */

/**
 * kv_cuda_device() - the current device's properties, read once per device
 * @d: filled in
 *
 * Safe to call from several threads at once: the first to read a device
 * publishes it; until then callers read it themselves.
 *
 * Return: 0, or -ENODEV without a usable current device (none, an error of
 * the runtime, or an index of KV_CUDA_MAX_DEVICES or more).
 */
extern "C" int kv_cuda_device(struct kv_cuda_dev *d)
{
	static dev_cache cache[KV_CUDA_MAX_DEVICES];
	int id = 0, unknown = 0, err;
	dev_cache *c;

	if (cudaGetDevice(&id) != cudaSuccess || id < 0 || id >= KV_CUDA_MAX_DEVICES)
		return -ENODEV;
	c = &cache[id];
	if (__atomic_load_n(&c->state, __ATOMIC_ACQUIRE) == 2) {
		*d = c->d;
		return 0;
	}
	err = read_device(id, d);
	if (err)
		return err;
	if (__atomic_compare_exchange_n(&c->state, &unknown, 1, false, __ATOMIC_ACQUIRE,
					__ATOMIC_RELAXED)) {
		c->d = *d;
		__atomic_store_n(&c->state, 2, __ATOMIC_RELEASE);
	}
	return 0;
}
