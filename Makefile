# dmp - one Makefile for the library, the agent, the CLI, tests and bench.
#
#   make            build/bin/{dmpd,dmp}, build/lib/libdmp.{a,so}, examples
#   make test       install missing Debian packages, build, run every test
#   make demo       install missing packages, build, run the main job
#   make bench      benchmarks against Python multiprocessing and raw ZeroMQ
#   make install    PREFIX=/usr/local DESTDIR=
#
# Dependencies come from pkg-config; deploy/install-deps.sh names (and on
# Debian/Ubuntu installs) what is missing.

PREFIX  ?= /usr/local
DESTDIR ?=
B       := build
CC      ?= cc
DEPS    := libzmq libsodium libprotobuf-c

# Recursive (=) on purpose: evaluated after `make deps` has installed them.
PKG_CFLAGS = $(shell pkg-config --cflags $(DEPS))
PKG_LIBS   = $(shell pkg-config --libs $(DEPS)) -lpthread -lm
CMOCKA     = $(shell pkg-config --cflags --libs cmocka)

CFLAGS  ?= -O2 -g
WARN    := -std=c11 -Wall -Wextra -Wshadow -Wno-missing-field-initializers -Wno-format-truncation
ifeq ($(CI),true)
WARN    += -Werror
endif
CPPFLAGS := -DDMP_DEFAULT_DMPD='"$(PREFIX)/bin/dmpd"' \
            -Ilibdmp/include -Ilibdmp/src -I$(B)/gen
ALL_CFLAGS = $(WARN) $(CFLAGS) $(CPPFLAGS) $(PKG_CFLAGS) -fPIC -fvisibility=hidden

LIB_SRC  := $(wildcard libdmp/src/*.c)
LIB_OBJ  := $(LIB_SRC:libdmp/src/%.c=$(B)/obj/lib/%.o) $(B)/obj/lib/dmp.pb-c.o
DMPD_SRC := $(wildcard node/dmpd/*.c)
DMPD_OBJ := $(DMPD_SRC:node/dmpd/%.c=$(B)/obj/dmpd/%.o)
# The agent's modules without main(), so unit tests can link them.
NODE_LIB := $(B)/lib/libdmpd.a
CLI_SRC  := $(wildcard node/cli/*.c)
CLI_OBJ  := $(CLI_SRC:node/cli/%.c=$(B)/obj/cli/%.o)
SUP_SRC  := $(wildcard tests/support/*.c)
SUP_OBJ  := $(SUP_SRC:tests/support/%.c=$(B)/obj/support/%.o)
UNIT     := $(patsubst tests/unit/%.c,$(B)/tests/unit/%,$(wildcard tests/unit/test_*.c))
INTEG    := $(patsubst tests/integration/%.c,$(B)/tests/integration/%,$(wildcard tests/integration/test_*.c))
BENCH    := $(patsubst tests/bench/%.c,$(B)/tests/bench/%,$(wildcard tests/bench/bench_*.c))
EXAMPLES := $(patsubst libdmp/examples/%.c,$(B)/examples/%,$(wildcard libdmp/examples/*.c))
# Shared objects for `dmp map MODULE.so:FUNC` (built without -ldmp).
MODULES  := $(patsubst libdmp/examples/modules/%.c,$(B)/examples/%.so,$(wildcard libdmp/examples/modules/*.c))
# test_clock's LD_PRELOAD library: built without sanitizers (a shared
# object cannot carry their static runtimes), whatever CC says.
SHIMS    := $(B)/tests/integration/clock_shift.so
LIBA     := $(B)/lib/libdmp.a
LIBSO    := $(B)/lib/libdmp.so

# Test support objects are shared by every test binary: keep them.
.SECONDARY: $(SUP_OBJ)

.PHONY: all deps check-deps test test-unit test-integration test-deploy demo bench install clean
all: check-deps $(B)/bin/dmpd $(B)/bin/dmp $(LIBA) $(LIBSO) $(B)/lib/libdmp.pc $(EXAMPLES) $(MODULES)

check-deps:
	@deploy/install-deps.sh --check
deps:
	@deploy/install-deps.sh --install

$(B)/gen/dmp.pb-c.c $(B)/gen/dmp.pb-c.h: proto/dmp.proto
	@mkdir -p $(B)/gen
	protoc-c --proto_path=proto --c_out=$(B)/gen proto/dmp.proto

$(B)/obj/lib/dmp.pb-c.o: $(B)/gen/dmp.pb-c.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Wno-shadow -c $< -o $@
$(B)/obj/lib/%.o: libdmp/src/%.c libdmp/src/dmp_impl.h libdmp/include/dmp.h $(B)/gen/dmp.pb-c.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@
$(B)/obj/dmpd/%.o: node/dmpd/%.c $(wildcard node/dmpd/*.h) libdmp/src/dmp_impl.h libdmp/include/dmp.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Inode/dmpd -c $< -o $@
$(B)/obj/cli/%.o: node/cli/%.c $(wildcard node/cli/*.h) libdmp/src/dmp_impl.h libdmp/include/dmp.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Inode/cli -c $< -o $@
$(B)/obj/support/%.o: tests/support/%.c $(wildcard tests/support/*.h) libdmp/include/dmp.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/support -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^
$(LIBSO): $(LIB_OBJ)
	@mkdir -p $(@D)
	$(CC) -shared -Wl,-soname,libdmp.so.0 -o $@ $^ $(PKG_LIBS)
$(B)/lib/libdmp.pc: Makefile
	@mkdir -p $(@D)
	printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: libdmp\nDescription: Python multiprocessing in C, across machines\nVersion: 0.1.0\nRequires.private: libzmq libsodium libprotobuf-c\nLibs: -L$${libdir} -ldmp\nLibs.private: -lpthread\nCflags: -I$${includedir}\n' '$(PREFIX)' > $@

$(NODE_LIB): $(filter-out $(B)/obj/dmpd/main.o,$(DMPD_OBJ))
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^
$(B)/bin/dmpd: $(B)/obj/dmpd/main.o $(NODE_LIB) $(LIBA)
	@mkdir -p $(@D)
	$(CC) -o $@ $^ $(PKG_LIBS)
# -rdynamic: modules `dmp map` loads call dmp's API from this executable.
$(B)/bin/dmp: $(CLI_OBJ) $(LIBA)
	@mkdir -p $(@D)
	$(CC) -rdynamic -o $@ $(CLI_OBJ) $(LIBA) $(PKG_LIBS) -ldl
$(B)/examples/%.so: libdmp/examples/modules/%.c libdmp/include/dmp.h
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) -Ilibdmp/include -shared -fPIC -o $@ $<
$(B)/examples/%: libdmp/examples/%.c $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBA) $(PKG_LIBS)

$(SHIMS): tests/integration/clock_shift.c
	@mkdir -p $(@D)
	$(firstword $(CC)) $(WARN) -O2 -shared -fPIC -o $@ $< -ldl

$(B)/tests/%: tests/%.c $(SUP_OBJ) $(NODE_LIB) $(LIBA) $(wildcard tests/support/*.h)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/support -Inode/dmpd -o $@ $< $(SUP_OBJ) $(NODE_LIB) $(LIBA) $(PKG_LIBS) $(CMOCKA) -lm

# The Docker test builds images (and, without a registry, a debootstrap
# base image the first time): its own target with a longer timeout.
SHTESTS := $(filter-out %/compose_test.sh,$(wildcard tests/integration/*.sh))

test: deps
	$(MAKE) all $(UNIT) $(INTEG) $(SHIMS)
	DMP_BUILD=$(B) tests/run.sh $(UNIT) $(INTEG) $(SHTESTS)

test-deploy: all
	DMP_BUILD=$(B) DMP_TEST_TIMEOUT=1200 tests/run.sh tests/integration/compose_test.sh

test-unit: all $(UNIT)
	DMP_BUILD=$(B) tests/run.sh $(UNIT)

test-integration: all $(INTEG) $(SHIMS)
	DMP_BUILD=$(B) tests/run.sh $(INTEG) $(SHTESTS)

demo: deps
	$(MAKE) all
	DMP_BUILD=$(B) deploy/demo.sh

bench: deps
	$(MAKE) all $(BENCH)
	DMP_BUILD=$(B) tests/bench/run.sh $(BENCH)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(B)/bin/dmpd $(B)/bin/dmp $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIBSO) $(DESTDIR)$(PREFIX)/lib/libdmp.so.0
	ln -sf libdmp.so.0 $(DESTDIR)$(PREFIX)/lib/libdmp.so
	install -m 644 libdmp/include/dmp.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(B)/lib/libdmp.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/

clean:
	rm -rf $(B)

# ---- Fuzzing and sanitizers (tests/fuzz/README.md) -------------------
# The corpus replay is a unit test like the others: tests/fuzz/replay.c
# #includes every harness, and the tests/% rule above builds it.
UNIT += $(B)/tests/fuzz/replay
test-unit: $(B)/tests/fuzz/replay
$(B)/tests/fuzz/replay: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)

# make fuzz: each tests/fuzz/fuzz_NAME.c built with clang, libFuzzer, ASan
# and UBSan into $(B)/fuzz/, run FUZZ_SECONDS on its corpus, new finds
# merged into tests/fuzz/corpus/NAME/. The library is built a second time,
# instrumented, by a recursive make into $(B)/fuzz/build.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer -Wno-unknown-warning-option
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_LIBS    := $(B)/fuzz/build/lib/libdmpd.a $(B)/fuzz/build/lib/libdmp.a

.PHONY: fuzz fuzz-build fuzz-libs test-asan
fuzz: fuzz-build
	tests/fuzz/run.sh $(B)/fuzz $(FUZZ_SECONDS) $(FUZZ_NAMES)
fuzz-build: $(FUZZ_NAMES:%=$(B)/fuzz/fuzz_%)
fuzz-libs: deps
	$(MAKE) B=$(B)/fuzz/build CFLAGS='-O1 -g' \
	    CC='$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer-no-link' $(FUZZ_LIBS)
$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h fuzz-libs
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer $(WARN) -O1 -g \
	    -I$(B)/fuzz/build/gen $(CPPFLAGS) $(PKG_CFLAGS) -Inode/dmpd \
	    -o $@ $< $(FUZZ_LIBS) $(PKG_LIBS)

# make test-asan: everything built with ASan and UBSan into build-asan/
# (through CC, which every compile and link line uses: the link rules take
# no LDFLAGS), then make test there. Any sanitizer report fails the run:
# reports go to files in build-asan/sanitizer/, and those of processes an
# agent starts (their environment is an allow-list, so ASAN_OPTIONS does
# not reach them: they report on stderr, which the tests relay) are found
# in the output, build-asan/test-asan.log. The runtimes are linked
# statically, so that binaries shipped elsewhere (containers) run there too.
ASAN_CC  = $(CC) -fsanitize=address,undefined -fno-omit-frame-pointer \
           $(if $(findstring clang,$(CC)),,-static-libasan -static-libubsan)
ASAN_LOG = $(CURDIR)/build-asan/sanitizer
ASAN_RE  = ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:
test-asan:
	rm -rf $(ASAN_LOG) && mkdir -p $(ASAN_LOG)
	{ DMP_TEST_SANITIZED=1 \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$(ASAN_LOG)/asan \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(ASAN_LOG)/ubsan \
	  $(MAKE) B=build-asan CFLAGS='-O1 -g' CC='$(ASAN_CC)' test; \
	  echo $$? >build-asan/test-asan.rc; } 2>&1 | tee build-asan/test-asan.log
	@if [ -n "$$(ls -A $(ASAN_LOG))" ] || \
	    grep -qE '$(ASAN_RE)' build-asan/test-asan.log; then \
	    cat $(ASAN_LOG)/* 2>/dev/null; grep -nE '$(ASAN_RE)' build-asan/test-asan.log; \
	    echo "test-asan: sanitizer reports (above; build-asan/sanitizer/, build-asan/test-asan.log)"; \
	    exit 1; \
	fi; exit $$(cat build-asan/test-asan.rc)
