# SPDX-License-Identifier: MIT
#
# kvmem top-level Makefile.
#
#   make                 build everything that needs no GPU (CUDA parts too where nvcc exists)
#   make check           build and run all selftests (the README's test command)
#   make check SANITIZE=1       the same under ASan + UBSan (libc malloc), in build/asan
#   make check SANITIZE=thread  the same under TSan, in build/tsan
#   make run             the main job: kvmemd with its default config and a client
#   make bench-mm        mm core benchmark table
#   make bench-prefix    prefix cache hit ratios against LRU and Belady
#   make bench-swap      swap tier throughput beside fio (same file, bs, iodepth)
#   make bench-transfer  GPU demote/promote throughput beside one cuMemcpyAsync (exits 4 without a GPU)
#   make clean
#   V=1                  show full commands

TOP := $(CURDIR)

ifeq ($(SANITIZE),1)
BUILD ?= build/asan
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT ?= -O1
else ifeq ($(SANITIZE),thread)
BUILD ?= build/tsan
SAN_FLAGS := -fsanitize=thread
OPT ?= -O1
else
BUILD ?= build
SAN_FLAGS :=
OPT ?= -O2
endif
B := $(TOP)/$(BUILD)

ifeq ($(V),1)
Q :=
else
Q := @
endif

CC ?= gcc
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wpointer-arith -Wno-unused-parameter
CFLAGS := -std=gnu11 $(OPT) -g $(WARN) -D_GNU_SOURCE -I$(TOP) -pthread $(SAN_FLAGS) $(EXTRA_CFLAGS)
LDFLAGS := -pthread $(SAN_FLAGS) $(EXTRA_LDFLAGS)

# Metadata allocations go through jemalloc, except in sanitizer builds,
# where ASan/TSan must own malloc.
ifeq ($(SAN_FLAGS),)
MALLOC_LIBS := -ljemalloc
CFLAGS += -DKV_HAVE_JEMALLOC
else
MALLOC_LIBS :=
endif
# The swap tier's I/O engine: io_uring through liburing (make deps installs
# it; where the kernel refuses io_uring, the psync engine serves instead).
# hwloc: kvmemd's NUMA placement (daemon/topology.c; mm/ does not use it).
LIBS := -lpthread -lm -luring -lhwloc $(MALLOC_LIBS)

# ---- lib/ and mm/ --------------------------------------------------------
LIB_SRCS := $(wildcard lib/*.c)
MM_SRCS := $(wildcard mm/*.c)
MM_OBJS := $(patsubst %.c,$(B)/%.o,$(LIB_SRCS) $(MM_SRCS))
LIBKVMM := $(B)/libkvmm.a

PROGS := $(B)/mm/kvmm-demo $(B)/mm/bench-mm $(B)/mm/bench-prefix $(B)/mm/bench-swap \
	$(B)/mm/bench-transfer \
	$(B)/daemon/kvmemd $(B)/daemon/kvmemctl \
	$(B)/libkvclient.so $(B)/daemon/bench-ipc $(B)/daemon/kvclient-demo $(B)/daemon/kvdemo

# ---- daemon/ -------------------------------------------------------------
DAEMON_SRCS := $(filter-out daemon/kvmemctl.c,$(wildcard daemon/*.c))
DAEMON_OBJS := $(patsubst %.c,$(B)/%.o,$(DAEMON_SRCS))

.PHONY: all deps check run bench-mm bench-prefix bench-swap bench-transfer bench-ipc clean install \
	selftests FORCE
all: $(LIBKVMM) $(PROGS) selftests

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(LIBKVMM): $(MM_OBJS)
	@$(if $(Q),echo "  AR      $(notdir $@)")
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/mm/kvmm-demo: mm/demo/kvmm_demo.c $(LIBKVMM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(LIBKVMM) $(LDFLAGS) $(LIBS)

$(B)/mm/bench-%: mm/bench/bench_%.c $(LIBKVMM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(LIBKVMM) $(LDFLAGS) $(LIBS)

$(B)/daemon/kvmemd: $(DAEMON_OBJS) $(LIBKVMM)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $(DAEMON_OBJS) $(LIBKVMM) $(LDFLAGS) $(LIBS)

# ---- lib/kvclient: libkvclient.a and .so ---------------------------------
KVC_SRCS := $(wildcard lib/kvclient/*.c)
# kvmemctl's sizing (estimate, advise) lives in lib/ for kvmemd and the
# tests too; libkvclient carries it and the value parsers, hidden (not
# exported by the .so).
KVC_LIB_OBJS := $(B)/pic/lib/cudrv.o $(B)/pic/lib/json.o $(B)/pic/lib/models.o \
	$(B)/pic/lib/kvsize.o $(B)/pic/lib/config.o
KVC_OBJS := $(patsubst %.c,$(B)/%.o,$(KVC_SRCS)) $(KVC_LIB_OBJS)
LIBKVC := $(B)/libkvclient.a

$(KVC_OBJS): CFLAGS += -fPIC
$(KVC_LIB_OBJS): CFLAGS += -fvisibility=hidden

$(B)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $< (PIC)")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(LIBKVC): $(KVC_OBJS)
	@$(if $(Q),echo "  AR      $(notdir $@)")
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/libkvclient.so: $(KVC_OBJS)
	@$(if $(Q),echo "  LD      $(notdir $@)")
	$(Q)$(CC) -shared -Wl,-soname,libkvclient.so.1 -o $@ $^ $(LDFLAGS)

$(B)/daemon/bench-ipc: daemon/bench/bench_ipc.c $(LIBKVC) $(LIBKVMM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(LIBKVC) $(LIBKVMM) $(LDFLAGS) $(LIBS)

$(B)/daemon/kvclient-demo: daemon/demo/kvclient_demo.c $(LIBKVC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(LIBKVC) $(LDFLAGS) $(LIBS)

$(B)/daemon/kvmemctl: $(B)/daemon/kvmemctl.o $(LIBKVC)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $< $(LIBKVC) $(LDFLAGS) $(LIBS)

-include $(MM_OBJS:.o=.d) $(DAEMON_OBJS:.o=.d) $(KVC_OBJS:.o=.d) $(B)/daemon/kvmemctl.d

# ---- kernels/ (owns its own fragment) ------------------------------------
-include kernels/kernels.mk

# ---- kvdemo: the model and engine of `make run' (daemon/demo/kvdemo/) -----
# A client: libkvclient, the CPU kernels, lib/json.c (from libkvmm.a) for
# the safetensors header.
# Where the CUDA kernels are built (nvcc found, not a sanitizer build) it
# links them too, and attends on the GPU when the pool is GPU memory
# (daemon/demo/kvdemo/kvcache_gpu.c); the static CUDA runtime still loads
# on machines without a GPU.
KVDEMO_SRCS := $(wildcard daemon/demo/kvdemo/*.c)
KVDEMO_OBJS := $(patsubst %.c,$(B)/%.o,$(KVDEMO_SRCS))
$(KVDEMO_OBJS): CFLAGS += -fopenmp-simd -Wno-psabi
KVDEMO_KERNELS := $(KERNELS_LIB)
ifeq ($(KERNELS_CUDA),1)
$(B)/daemon/demo/kvdemo/kvcache_gpu.o: CFLAGS += -DKVD_HAVE_CUDA -I$(CUDA_HOME)/include
KVDEMO_KERNELS := $(KERNELS_CUDA_LIBS)
$(B)/daemon/kvdemo: $(KERNELS_CUDA_LIB)
endif

$(B)/daemon/kvdemo: $(KVDEMO_OBJS) $(LIBKVC) $(KERNELS_LIB) $(LIBKVMM)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $(KVDEMO_OBJS) $(LIBKVC) $(KVDEMO_KERNELS) $(LIBKVMM) $(LDFLAGS) $(LIBS)

-include $(KVDEMO_OBJS:.o=.d)

# selftests/e2e runs it
selftests: $(B)/daemon/kvdemo

# ---- selftests -----------------------------------------------------------
COLLECTIONS := $(patsubst selftests/%/Makefile,%,$(wildcard selftests/*/Makefile))
SELFTEST_ENV := TOP=$(TOP) Q=$(Q) KV_CFLAGS="$(CFLAGS) -I$(TOP)/selftests" \
	KV_LDFLAGS="$(LDFLAGS)" KV_LIBS="$(LIBKVC) $(KERNELS_LIB) $(LIBKVMM) $(LIBS)"

selftests: $(LIBKVMM) $(KERNELS_LIB) $(LIBKVC) $(B)/daemon/kvmemd $(B)/daemon/kvmemctl
	$(Q)for c in $(COLLECTIONS); do \
		$(MAKE) --no-print-directory -C selftests/$$c $(SELFTEST_ENV) \
			OUTPUT=$(B)/selftests/$$c all || exit 1; \
	done

deps:
	$(Q)scripts/install-deps.sh

check: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)selftests/run_kselftest.sh -o $(B)/selftests

run: deps
	$(Q)$(MAKE) --no-print-directory $(B)/daemon/kvmemd $(B)/daemon/kvmemctl \
		$(B)/daemon/kvclient-demo $(B)/daemon/kvdemo
	$(Q)scripts/run-demo.sh $(B)

bench-mm: $(B)/mm/bench-mm
	$(Q)$(B)/mm/bench-mm

bench-prefix: $(B)/mm/bench-prefix
	$(Q)$(B)/mm/bench-prefix

bench-swap: $(B)/mm/bench-swap
	$(Q)scripts/bench-swap.sh $(B)

bench-transfer: $(B)/mm/bench-transfer
	$(Q)$(B)/mm/bench-transfer

# The benchmarks by their relative names too (make build/mm/bench-transfer).
$(BUILD)/mm/bench-%: $(B)/mm/bench-% ;

bench-ipc: $(B)/daemon/bench-ipc $(B)/daemon/kvmemd
	$(Q)$(B)/daemon/bench-ipc

# ---- install -------------------------------------------------------------
VERSION := 0.1.0
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
# the Python binding (lib/python/kvmem): Debian's path for PREFIX=/usr;
# elsewhere set PYTHONDIR, or PYTHONPATH at run time
PYTHONDIR ?= $(PREFIX)/lib/python3/dist-packages
KVC_FUNCS := kvc_connect kvc_close kvc_client_id kvc_is_admin kvc_pool_open kvc_pool_map kvc_frame_read kvc_frame_write \
	kvc_seq_create kvc_seq_fork kvc_seq_truncate kvc_seq_free kvc_step kvc_activate \
	kvc_deactivate kvc_block_table kvc_append kvc_reserve kvc_admit kvc_sync kvc_stats \
	kvc_clients kvc_sysctl_get kvc_sysctl_set kvc_drop_caches kvc_request
SUBST := sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g' \
	-e 's|@VERSION@|$(VERSION)|g'
I := $(DESTDIR)

install: $(B)/daemon/kvmemd $(B)/daemon/kvmemctl $(LIBKVC) $(B)/libkvclient.so $(KERNELS_SHLIBS)
	$(Q)install -d $(I)$(BINDIR) $(I)$(LIBDIR)/pkgconfig $(I)$(INCLUDEDIR)/kvmem/uapi/kvmem \
		$(I)$(MANDIR)/man3 $(I)$(MANDIR)/man5 $(I)$(MANDIR)/man8 $(I)$(UNITDIR) \
		$(I)$(SYSCONFDIR)/kvmemd
	$(Q)install -m 755 $(B)/daemon/kvmemd $(B)/daemon/kvmemctl $(I)$(BINDIR)/
	$(Q)install -m 644 $(LIBKVC) $(I)$(LIBDIR)/
	$(Q)install -m 755 $(B)/libkvclient.so $(I)$(LIBDIR)/libkvclient.so.1
	$(Q)ln -sf libkvclient.so.1 $(I)$(LIBDIR)/libkvclient.so
	$(Q)install -m 644 lib/kvclient/kvclient.h $(I)$(INCLUDEDIR)/kvmem/
	$(Q)install -m 644 uapi/kvmem/*.h $(I)$(INCLUDEDIR)/kvmem/uapi/kvmem/
	$(Q)$(SUBST) lib/kvclient/libkvclient.pc.in > $(I)$(LIBDIR)/pkgconfig/libkvclient.pc
	$(Q)$(SUBST) daemon/kvmemd.service > $(I)$(UNITDIR)/kvmemd.service
	$(Q)install -m 644 Documentation/man/*.3 $(I)$(MANDIR)/man3/
	$(Q)install -m 644 Documentation/man/*.5 $(I)$(MANDIR)/man5/
	$(Q)install -m 644 Documentation/man/*.8 $(I)$(MANDIR)/man8/
	$(Q)for f in $(KVC_FUNCS); do echo ".so man3/libkvclient.3" > $(I)$(MANDIR)/man3/$$f.3; done
	$(Q)install -m 644 daemon/kvmemd.conf.example $(I)$(SYSCONFDIR)/kvmemd/
	$(Q)install -d $(I)$(PYTHONDIR)/kvmem
	$(Q)install -m 644 lib/python/kvmem/*.py $(I)$(PYTHONDIR)/kvmem/
	$(Q)install -m 755 $(KERNELS_SHLIBS) $(I)$(PYTHONDIR)/kvmem/
	$(Q)echo "LIBKVCLIENT = '$(LIBDIR)/libkvclient.so.1'" > $(I)$(PYTHONDIR)/kvmem/_installed.py
	$(Q)test -e $(I)$(SYSCONFDIR)/kvmemd/kvmemd.conf || \
		install -m 644 daemon/kvmemd.conf.example $(I)$(SYSCONFDIR)/kvmemd/kvmemd.conf
	@echo "kvmem $(VERSION) installed under $(I)$(PREFIX)"

clean:
	$(Q)rm -rf build
