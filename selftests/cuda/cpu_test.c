// SPDX-License-Identifier: MIT
/*
 * The backend tests of backend_tests.h with device.backend = cpu: the
 * device tier is a memfd that every client maps. Runs everywhere.
 */
#define KVT_BACKEND	"cpu"
#define KVT_BACKEND_ID	KVMEM_BACKEND_CPU
#include "backend_tests.h"

KVT_HARNESS_MAIN
