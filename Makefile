# hca — one non-recursive GNU Makefile.
#   make [all]        build hcad, hcactl and the test binaries into build/
#   make check        install what is missing, build, run every test
#   make demo         install what is missing, run the end-to-end demo
#   make bench        benchmarks (tests/bench), printed as tables
#   make fuzz         longer fuzzing runs (FUZZ_SECONDS per target)
#   make guest        build the test guest (kernel, initramfs, verifier)
#   make install      hcad, hcactl and the systemd unit (PREFIX, DESTDIR)
#   V=1 loud build; SANITIZE=1 ASan+UBSan build in build/asan
.DEFAULT_GOAL := all
.SUFFIXES:
.DELETE_ON_ERROR:
.SECONDARY:

V ?= 0
SANITIZE ?= 0
ROOT_BUILD := build
ifeq ($(SANITIZE),1)
BUILD := $(ROOT_BUILD)/asan
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
else
BUILD := $(ROOT_BUILD)
SAN_FLAGS :=
endif
Q := $(if $(filter 1,$(V)),,@)
say = $(if $(filter 1,$(V)),,@printf '  %-7s %s\n' $(1) $(2);)

CC ?= cc
FUZZ_CC ?= clang
PROTOC_C ?= protoc-c
PKGS := libqb jansson libprotobuf-c libcpg libvotequorum libcmap libcorosync_common openssl libzstd libnbd
# Evaluated once, and only when a compile needs it, so `make check` can
# install pkg-config's packages before anything asks for their flags.
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(shell pkg-config --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS = $(eval PKG_LIBS := $$(shell pkg-config --libs $(PKGS)))$(PKG_LIBS)

WARN := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wmissing-prototypes \
	-Wstrict-prototypes -Wpointer-arith -Wvla -Wundef -Wno-unused-parameter
CFLAGS ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SAN_FLAGS) \
	-I. -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(SAN_FLAGS)
LIBS = $(PKG_LIBS) -lrados -lrbd -lpthread

GEN := $(BUILD)/gen/proto
GEN_C := $(GEN)/hca.pb-c.c
GEN_H := $(GEN)/hca.pb-c.h

BASE_SRCS := $(wildcard base/*.c)
PROTO_SRCS := $(wildcard proto/*.c)
HV_SRCS := $(wildcard hypervisor/*.c)
STO_SRCS := $(wildcard storage/*.c)
MIG_SRCS := $(wildcard migration/*.c)
REP_SRCS := $(wildcard replica/*.c)
AGENT_MAINS := agent/hcad.c agent/hcactl.c
AGENT_SRCS := $(filter-out $(AGENT_MAINS),$(wildcard agent/*.c))
TEST_UTIL_SRCS := $(wildcard tests/unit/util_*.c)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
BASE_OBJS := $(call obj,$(BASE_SRCS))
PROTO_OBJS := $(call obj,$(PROTO_SRCS)) $(BUILD)/obj/gen/hca.pb-c.o
HV_OBJS := $(call obj,$(HV_SRCS))
STO_OBJS := $(call obj,$(STO_SRCS))
MIG_OBJS := $(call obj,$(MIG_SRCS))
REP_OBJS := $(call obj,$(REP_SRCS))
AGENT_OBJS := $(call obj,$(AGENT_SRCS))
TEST_UTIL_OBJS := $(call obj,$(TEST_UTIL_SRCS))

# Lowest layer last so static libraries resolve in one pass; base/ is below
# every module, so any of them may use it.
LIBHCA := $(BUILD)/libhca_agent.a $(BUILD)/libhca_mig.a $(BUILD)/libhca_rep.a \
	$(BUILD)/libhca_hv.a $(BUILD)/libhca_sto.a $(BUILD)/libhca_proto.a $(BUILD)/libhca_base.a
BINS := $(BUILD)/hcad $(BUILD)/hcactl
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
TOOL_BINS := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(wildcard tests/tools/*.c))

all: $(BINS) $(UNIT_BINS) $(TOOL_BINS)

$(GEN_C) $(GEN_H) &: proto/hca.proto
	@mkdir -p $(GEN)
	$(call say,PROTOC,$<)$(PROTOC_C) --c_out=$(BUILD)/gen $<

$(BUILD)/obj/gen/hca.pb-c.o: $(GEN_C)
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) -Wno-missing-prototypes -c -o $@ $<

$(BUILD)/obj/%.o: %.c | $(GEN_H)
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/libhca_base.a: $(BASE_OBJS)
$(BUILD)/libhca_proto.a: $(PROTO_OBJS)
$(BUILD)/libhca_hv.a: $(HV_OBJS)
$(BUILD)/libhca_sto.a: $(STO_OBJS)
$(BUILD)/libhca_mig.a: $(MIG_OBJS)
$(BUILD)/libhca_rep.a: $(REP_OBJS)
$(BUILD)/libhca_agent.a: $(AGENT_OBJS)
$(BUILD)/%.a:
	$(call say,AR,$@)rm -f $@ && ar crs $@ $^

$(BUILD)/hcad $(BUILD)/hcactl: $(BUILD)/%: $(BUILD)/obj/agent/%.o $(LIBHCA)
	$(call say,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $< $(LIBHCA) $(LIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(TEST_UTIL_OBJS) $(LIBHCA)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $< $(TEST_UTIL_OBJS) \
		$(LIBHCA) $(LIBS) -lcmocka

# Helpers of the integration tests and benchmarks (not installed).
$(BUILD)/tools/%: $(BUILD)/obj/tests/tools/%.o $(LIBHCA)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $< $(LIBHCA) $(LIBS)

# ---- fuzzing: libFuzzer via clang, built apart from the main objects ----
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(ROOT_BUILD)/fuzz/%,$(FUZZ_SRCS))
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	-I. -I$(ROOT_BUILD)/gen $(PKG_CFLAGS)
FUZZ_SECONDS ?= 300
FUZZ_LIB_SRCS := $(PROTO_SRCS) $(ROOT_BUILD)/gen/proto/hca.pb-c.c

# Decoders outside proto/ a target runs, besides FUZZ_LIB_SRCS.
FUZZ_EXTRA_fuzz_records := storage/sto_vm.c hypervisor/hv_spec.c hypervisor/hv_state.c
FUZZ_EXTRA_fuzz_rep_wire := replica/rep_wire.c

.SECONDEXPANSION:
$(ROOT_BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_SRCS) $$(FUZZ_EXTRA_%) $(wildcard proto/*.h replica/*.h)
	@mkdir -p $(dir $@)
	$(call say,FUZZCC,$@)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_LIB_SRCS) \
		$(FUZZ_EXTRA_$*) $(PKG_LIBS)

fuzz-build: $(FUZZ_BINS)
fuzz: deps
	$(MAKE) fuzz-build
	tests/fuzz/run.sh $(ROOT_BUILD)/fuzz $(FUZZ_SECONDS)

# ---- the two commands of the README, and friends ----
deps:
	$(Q)deploy/install-deps.sh

guest: deps
	$(Q)tests/guest/build.sh $(abspath $(ROOT_BUILD))

JOBS ?= $(shell nproc 2>/dev/null || echo 2)

check: deps
	$(MAKE) -j$(JOBS) all fuzz-build
	$(MAKE) -j$(JOBS) SANITIZE=1 all
	$(Q)tests/guest/build.sh $(abspath $(ROOT_BUILD)) >/dev/null
	$(Q)tests/run.sh $(abspath $(ROOT_BUILD))

demo: deps
	$(MAKE) all
	$(Q)tests/guest/build.sh $(abspath $(ROOT_BUILD)) >/dev/null
	$(Q)deploy/demo.sh $(abspath $(ROOT_BUILD))

bench: deps
	$(MAKE) all
	$(Q)tests/guest/build.sh $(abspath $(ROOT_BUILD)) >/dev/null
	$(Q)tests/bench/run.sh $(abspath $(ROOT_BUILD))

# A node of a real cluster (deploy/README.md): the binaries, the unit, the
# documents; /etc/hca/hcad.conf is the operator's, never overwritten.
PREFIX ?= /usr/local
DESTDIR ?=
install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
		$(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/hca $(DESTDIR)$(PREFIX)/share/doc/hca
	install -m 0755 $(BUILD)/hcad $(DESTDIR)$(PREFIX)/sbin/hcad
	install -m 0755 $(BUILD)/hcactl $(DESTDIR)$(PREFIX)/bin/hcactl
	sed 's|/usr/local/|$(PREFIX)/|g' deploy/hcad.service >$(DESTDIR)/etc/systemd/system/hcad.service
	install -m 0644 README.md ARCHITECTURE.md $(DESTDIR)$(PREFIX)/share/doc/hca/
	install -m 0644 deploy/README.md $(DESTDIR)$(PREFIX)/share/doc/hca/DEPLOY.md

clean:
	rm -rf $(ROOT_BUILD)

.PHONY: all check demo bench fuzz fuzz-build guest deps install clean

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
