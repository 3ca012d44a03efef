# SPDX-License-Identifier: MIT
#
# kernels/ build fragment, included by the top-level Makefile.
#
#   $(B)/libkvkernels.a       CPU kernels (no CUDA dependency)
#   $(B)/libkvkernels_cuda.a  CUDA kernels, where nvcc is found (not in
#                             sanitizer builds); link with $(KERNELS_CUDA_LIBS)
#   $(B)/kernels/bench-kernels      CPU benchmark (make bench-kernels)
#   $(B)/kernels/bench-kernels-gpu  CUDA benchmark (kernels/bench/run-gpu.sh)
#
# CUDA programs link the CUDA runtime statically: they load on machines
# without a GPU or driver and report that no device was found.

KERNELS_SRCS := $(wildcard kernels/*.c)
KERNELS_OBJS := $(patsubst %.c,$(B)/%.o,$(KERNELS_SRCS))
KERNELS_LIB := $(B)/libkvkernels.a
KERNELS_PROGS := $(B)/kernels/bench-kernels

# -Wno-psabi: kernels/simd.h passes 64-byte vectors between always-inline
# functions only, so the AVX-512 ABI note GCC gives for them does not apply
$(KERNELS_OBJS): CFLAGS += -fopenmp-simd -Wno-psabi

$(KERNELS_LIB): $(KERNELS_OBJS)
	@$(if $(Q),echo "  AR      $(notdir $@)")
	$(Q)rm -f $@ && ar rcs $@ $^

# the benchmarks parse their options with lib/config.c's kv_parse_uint()
$(B)/kernels/bench-kernels: kernels/bench/bench_cpu.c kernels/bench/bench_common.h $(KERNELS_LIB) \
		$(B)/lib/config.o
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(B)/lib/config.o $(KERNELS_LIB) $(LDFLAGS) $(LIBS)

-include $(KERNELS_OBJS:.o=.d)

# Shared builds for the Python binding (lib/python/kvmem/kernels.py loads
# them with ctypes): the same sources compiled -fPIC.
#   $(B)/libkvkernels.so       the CPU kernels
#   $(B)/libkvkernels_cuda.so  the CUDA kernels (with the CPU ones and the
#                              CUDA runtime, static), where nvcc is found
KERNELS_PIC_OBJS := $(patsubst %.c,$(B)/pic/%.o,$(KERNELS_SRCS))
KERNELS_SHLIBS := $(B)/libkvkernels.so

$(KERNELS_PIC_OBJS): CFLAGS += -fopenmp-simd -Wno-psabi -fPIC

$(B)/libkvkernels.so: $(KERNELS_PIC_OBJS)
	@$(if $(Q),echo "  LD      $(notdir $@)")
	$(Q)$(CC) -shared -Wl,-soname,libkvkernels.so -o $@ $^ $(LDFLAGS) -lm

-include $(KERNELS_PIC_OBJS:.o=.d)

# ---- CUDA ------------------------------------------------------------------
NVCC ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
ifneq ($(NVCC),)
ifeq ($(SAN_FLAGS),)
KERNELS_CUDA := 1
endif
endif

ifeq ($(KERNELS_CUDA),1)
CUDA_HOME ?= $(abspath $(dir $(NVCC))..)
CUDA_ARCH ?= -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80
NVCCFLAGS := -std=c++17 -O3 -g -lineinfo $(CUDA_ARCH) -I$(TOP) \
	-Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter,-fPIC \
	-Werror all-warnings
KERNELS_CUDA_SRCS := $(wildcard kernels/cuda/*.cu)
KERNELS_CUDA_OBJS := $(patsubst %.cu,$(B)/%.o,$(KERNELS_CUDA_SRCS))
KERNELS_CUDA_LIB := $(B)/libkvkernels_cuda.a
KERNELS_CUDA_LIBS := $(KERNELS_CUDA_LIB) $(KERNELS_LIB) -L$(CUDA_HOME)/lib64 \
	-lcudart_static -ldl -lrt -lstdc++
KERNELS_PROGS += $(B)/kernels/bench-kernels-gpu

$(B)/kernels/cuda/%.o: kernels/cuda/%.cu kernels/kvkernels.h kernels/internal.h \
		kernels/cuda/cuda_internal.h kernels/cuda/attn.cuh kernels/cuda/prefill.cuh \
		kernels/cuda/widen.cuh \
		uapi/kvmem/layout.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC    $<")
	$(Q)$(NVCC) $(NVCCFLAGS) -c -o $@ $<

$(KERNELS_CUDA_LIB): $(KERNELS_CUDA_OBJS)
	@$(if $(Q),echo "  AR      $(notdir $@)")
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/kernels/bench-kernels-gpu: kernels/bench/bench_gpu.c kernels/bench/bench_common.h \
		$(KERNELS_CUDA_LIB) $(KERNELS_LIB) $(B)/lib/config.o
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -I$(CUDA_HOME)/include -o $@ $< $(B)/lib/config.o \
		$(KERNELS_CUDA_LIBS) $(LDFLAGS) $(LIBS)

# the GPU selftest links against it (selftests/kernels/Makefile)
selftests: $(KERNELS_CUDA_LIB)

$(B)/libkvkernels_cuda.so: $(KERNELS_CUDA_OBJS) $(KERNELS_PIC_OBJS)
	@$(if $(Q),echo "  LD      $(notdir $@)")
	$(Q)$(CC) -shared -Wl,-soname,libkvkernels_cuda.so -Wl,--exclude-libs,ALL -o $@ $^ \
		-L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++ $(LDFLAGS) -lm
KERNELS_SHLIBS += $(B)/libkvkernels_cuda.so
endif

.PHONY: bench-kernels
all: $(KERNELS_PROGS) $(KERNELS_SHLIBS)

bench-kernels: $(B)/kernels/bench-kernels
	$(Q)$(B)/kernels/bench-kernels
