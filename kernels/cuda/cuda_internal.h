/* SPDX-License-Identifier: MIT */
/* Internal interfaces of the CUDA kernels. */
#ifndef _KVMEM_KERNELS_CUDA_INTERNAL_H
#define _KVMEM_KERNELS_CUDA_INTERNAL_H

#include <stdint.h>

struct kv_append_args;

#define KV_CUDA_MAX_DEVICES	64

/**
 * struct kv_cuda_dev - what the launches ask of a device (device.cu)
 * @id: its runtime index
 * @sms: its multiprocessors
 * @major: @minor: its compute capability
 * @code_arch: the virtual architecture (80, 90, ...) of the library's
 *	device code as loaded for it: below 90, the sm_90 instructions (bulk
 *	copies, mbarriers, wgmma) are compiled out
 */
struct kv_cuda_dev {
	int id;
	int sms;
	int major, minor;
	int code_arch;
};

#ifdef __cplusplus
extern "C" {
#endif

int kv_cuda_device(struct kv_cuda_dev *d);
extern int kv_cuda_decode_variant;
extern int kv_cuda_prefill_variant;
extern int kv_cuda_prefill_ipc;
uint32_t kv_cuda_pick_splits(uint32_t base, uint32_t slots, uint32_t cap);
uint32_t kv_cuda_pick_splits_waves(uint32_t base, uint32_t slots, uint32_t cap);
int kv_cuda_fill_uniform(void *p, uint64_t n, uint32_t dtype, uint64_t seed,
			 float amp, void *stream);
int kv_append_quant_cuda(const struct kv_append_args *a);
int kv_cuda_read_all(const void *p, uint64_t bytes, void *sink, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* _KVMEM_KERNELS_CUDA_INTERNAL_H */
