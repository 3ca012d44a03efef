# SPDX-License-Identifier: MIT
#
# selftests/lib.mk - rules shared by every selftest collection.
#
# A collection's Makefile lists its tests and includes this file last:
#
#	TEST_GEN_PROGS := test_block test_seq	# C tests: NAME.c -> $(OUTPUT)/NAME
#	TEST_GEN_PROGS_EXTENDED := helper	# built, but not run by the runner
#	TEST_PROGS := stress.sh			# scripts, run with bash
#	include ../lib.mk
#
# Set by the top-level Makefile (all optional when building by hand):
#	OUTPUT      absolute directory for the binaries (default: ./build)
#	TOP         absolute path of the repository
#	KV_CFLAGS   compiler flags: warnings, sanitizers, -I
#	KV_LDFLAGS  linker flags
#	KV_LIBS     libraries to link: archive paths and -l flags; the archives
#	            that exist are prerequisites, so tests relink when they change
#	Q           @ to hide commands (the default unless V=1)
#
# Targets: all (the default), list (gen:NAME and prog:NAME, one a line),
# clean.

KSFT_DIR := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))

OUTPUT ?= $(CURDIR)/build
TOP ?= $(abspath $(KSFT_DIR)/..)
CC ?= cc

ifeq ($(origin Q),undefined)
ifeq ($(V),1)
Q :=
else
Q := @
endif
endif

KSFT_BINS := $(addprefix $(OUTPUT)/,$(TEST_GEN_PROGS) $(TEST_GEN_PROGS_EXTENDED))
KSFT_HDRS := $(wildcard $(KSFT_DIR)/*.h)
KSFT_LIB_FILES := $(wildcard $(filter-out -%,$(KV_LIBS)))

# Remember the flags the binaries were built with, so that a change of
# compiler, sanitizer or library rebuilds them.
KSFT_FLAGS_FILE := $(OUTPUT)/.build-flags
KSFT_FLAGS := $(strip $(CC) $(KV_CFLAGS) $(KV_LDFLAGS) $(KV_LIBS))
ifneq ($(filter-out list clean,$(or $(MAKECMDGOALS),all)),)
ifneq ($(KSFT_FLAGS),$(strip $(file < $(KSFT_FLAGS_FILE))))
$(shell mkdir -p '$(OUTPUT)')
$(file > $(KSFT_FLAGS_FILE),$(KSFT_FLAGS))
endif
endif

.DEFAULT_GOAL := all
.PHONY: all list clean

all: $(KSFT_BINS)

$(OUTPUT):
	$(Q)mkdir -p $@

$(KSFT_BINS): $(OUTPUT)/%: %.c $(KSFT_HDRS) $(KSFT_LIB_FILES) $(KSFT_FLAGS_FILE) | $(OUTPUT)
	@$(if $(Q),printf '  CC      %s\n' '$@')
	$(Q)$(CC) $(KV_CFLAGS) -I$(KSFT_DIR) -MMD -MP -MT $@ -MF $@.d $(KV_LDFLAGS) \
		-o $@ $< $(KV_LIBS)

$(KSFT_FLAGS_FILE): | $(OUTPUT)
	$(Q)touch $@

list:
	@printf '%s\n' $(addprefix gen:,$(TEST_GEN_PROGS)) $(addprefix prog:,$(TEST_PROGS)) \
		| grep -v '^$$' || true

clean:
	$(Q)rm -f $(KSFT_BINS) $(addsuffix .d,$(KSFT_BINS)) $(KSFT_FLAGS_FILE)

-include $(addsuffix .d,$(KSFT_BINS))
