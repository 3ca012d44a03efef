// SPDX-License-Identifier: MIT
/*
 * lib/cudrv.h declares the parts of the CUDA driver's ABI that kvmem uses,
 * so that nothing in the build needs the toolkit. Where the toolkit is
 * installed (/usr/local/cuda), check every one of them against cuda.h:
 * struct sizes and member offsets, and the values of the constants.
 * Skipped (exit 4) where cuda.h is not found.
 */
#if __has_include("/usr/local/cuda/include/cuda.h")
#include "/usr/local/cuda/include/cuda.h"
#define HAVE_CUDA_H 1

/* The toolkit's values, taken before cudrv.h's names are defined. */
static const long long cuda_values[] = {
	CUDA_SUCCESS, CUDA_ERROR_OUT_OF_MEMORY, CUDA_ERROR_NO_DEVICE,
	CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, CUDA_ERROR_NOT_SUPPORTED,
	CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID,
	CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
	CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
	CU_MEM_ALLOCATION_TYPE_PINNED, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
	CU_MEM_LOCATION_TYPE_DEVICE, CU_MEM_ALLOC_GRANULARITY_MINIMUM,
	CU_MEM_ALLOC_GRANULARITY_RECOMMENDED, CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
	CU_STREAM_NON_BLOCKING, CU_EVENT_DEFAULT, CU_EVENT_DISABLE_TIMING,
	CU_MEMHOSTREGISTER_PORTABLE, CU_MEMCPY_SRC_ACCESS_ORDER_STREAM,
};
#endif

#include <stddef.h>
#include "kselftest_harness.h"
#include "lib/cudrv.h"

#ifdef HAVE_CUDA_H
static const long long cudrv_values[] = {
	CUDRV_SUCCESS, CUDRV_ERROR_OUT_OF_MEMORY, CUDRV_ERROR_NO_DEVICE,
	CUDRV_ERROR_HOST_MEMORY_ALREADY_REGISTERED, CUDRV_ERROR_NOT_SUPPORTED,
	CUDRV_ATTR_PCI_BUS_ID, CUDRV_ATTR_PCI_DEVICE_ID,
	CUDRV_ATTR_PCI_DOMAIN_ID, CUDRV_ATTR_VMM_SUPPORTED,
	CUDRV_ATTR_POSIX_FD_SUPPORTED,
	CUDRV_MEM_ALLOCATION_TYPE_PINNED, CUDRV_MEM_HANDLE_TYPE_POSIX_FD,
	CUDRV_MEM_LOCATION_TYPE_DEVICE, CUDRV_MEM_ALLOC_GRANULARITY_MINIMUM,
	CUDRV_MEM_ALLOC_GRANULARITY_RECOMMENDED, CUDRV_MEM_ACCESS_FLAGS_PROT_READWRITE,
	CUDRV_STREAM_NON_BLOCKING, CUDRV_EVENT_DEFAULT, CUDRV_EVENT_DISABLE_TIMING,
	CUDRV_MEMHOSTREGISTER_PORTABLE, CUDRV_MEMCPY_SRC_ACCESS_ORDER_STREAM,
};

#define SAME_LAYOUT(ours, theirs)						\
	EXPECT_EQ(sizeof(theirs), sizeof(ours))
#define SAME_MEMBER(ours, a, theirs, b)						\
	do {									\
		EXPECT_EQ(offsetof(theirs, b), offsetof(ours, a));		\
		EXPECT_EQ(sizeof(((theirs *)0)->b), sizeof(((ours *)0)->a));	\
	} while (0)

TEST(constants_match_cuda_h)
{
	size_t i;

	ASSERT_EQ(sizeof(cuda_values), sizeof(cudrv_values));
	for (i = 0; i < sizeof(cuda_values) / sizeof(cuda_values[0]); i++) {
		if (cuda_values[i] != cudrv_values[i])
			TH_LOG("constant %zu: cuda.h %lld, cudrv.h %lld", i, cuda_values[i],
			       cudrv_values[i]);
		EXPECT_EQ(cuda_values[i], cudrv_values[i]);
	}
}

TEST(types_match_cuda_h)
{
	EXPECT_EQ(sizeof(CUresult), sizeof(cu_result));
	EXPECT_EQ(sizeof(CUdevice), sizeof(cu_device));
	EXPECT_EQ(sizeof(CUdeviceptr), sizeof(cu_devptr));
	EXPECT_EQ(sizeof(CUmemGenericAllocationHandle), sizeof(cu_memhandle));
	EXPECT_EQ(sizeof(CUuuid), sizeof(struct cu_uuid));

	SAME_LAYOUT(struct cu_mem_location, CUmemLocation);
	SAME_MEMBER(struct cu_mem_location, type, CUmemLocation, type);
	SAME_MEMBER(struct cu_mem_location, id, CUmemLocation, id);

	SAME_LAYOUT(struct cu_mem_alloc_prop, CUmemAllocationProp);
	SAME_MEMBER(struct cu_mem_alloc_prop, type, CUmemAllocationProp, type);
	SAME_MEMBER(struct cu_mem_alloc_prop, requested_handle_types, CUmemAllocationProp,
		    requestedHandleTypes);
	SAME_MEMBER(struct cu_mem_alloc_prop, location, CUmemAllocationProp, location);
	SAME_MEMBER(struct cu_mem_alloc_prop, win32_meta, CUmemAllocationProp,
		    win32HandleMetaData);
	SAME_MEMBER(struct cu_mem_alloc_prop, alloc_flags, CUmemAllocationProp, allocFlags);

	SAME_LAYOUT(struct cu_mem_access_desc, CUmemAccessDesc);
	SAME_MEMBER(struct cu_mem_access_desc, location, CUmemAccessDesc, location);
	SAME_MEMBER(struct cu_mem_access_desc, flags, CUmemAccessDesc, flags);

	SAME_LAYOUT(struct cu_memcpy_attrs, CUmemcpyAttributes);
	SAME_MEMBER(struct cu_memcpy_attrs, src_access_order, CUmemcpyAttributes,
		    srcAccessOrder);
	SAME_MEMBER(struct cu_memcpy_attrs, src_loc_hint, CUmemcpyAttributes, srcLocHint);
	SAME_MEMBER(struct cu_memcpy_attrs, dst_loc_hint, CUmemcpyAttributes, dstLocHint);
	SAME_MEMBER(struct cu_memcpy_attrs, flags, CUmemcpyAttributes, flags);
}

/* The batch copy's signature is CUDA 13's: no failIdx before the stream. */
TEST(batch_copy_signature_is_cuda_13)
{
	typedef CUresult (*v13_t)(CUdeviceptr *, CUdeviceptr *, size_t *, size_t,
				  CUmemcpyAttributes *, size_t *, size_t, CUstream);

	/* Types only: nothing here links against libcuda. */
	EXPECT_TRUE(__builtin_types_compatible_p(__typeof__(&cuMemcpyBatchAsync), v13_t));
	EXPECT_GE(CUDA_VERSION, 13000);
}
#else
TEST(cuda_h)
{
	SKIP(return, "no /usr/local/cuda/include/cuda.h: nothing to compare lib/cudrv.h with");
}
#endif

TEST_HARNESS_MAIN
