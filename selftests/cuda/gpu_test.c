// SPDX-License-Identifier: MIT
/*
 * The backend tests of backend_tests.h with device.backend = cuda: the
 * device tier is GPU memory (CUDA VMM API) whose chunks every client
 * imports and maps. Skips (exit 4) where no usable GPU is found.
 */
#define KVT_BACKEND	"cuda"
#define KVT_BACKEND_ID	KVMEM_BACKEND_CUDA
#include "backend_tests.h"

KVT_HARNESS_MAIN
