# posgrad: `make` builds the libraries and examples, `make test` runs the suites.
CC      ?= cc
PREFIX  ?= /usr/local
OPT     ?= -O3
# Target ISA: the build machine's by default (AVX-512 GEMM kernels where it has
# them); ARCH=x86-64 (or any -march value) for a portable build.
ARCH    ?= native
WERROR  ?=
CFLAGS  ?=
# -fno-math-errno and -fno-trapping-math: posgrad reads neither errno after a libm call
# nor the floating-point exception flags, so GCC may inline sqrt and compute both arms of
# a select (without the latter, a select whose arm multiplies stays a branch on AVX2 and
# the elementwise math loops do not vectorise). Neither changes a result; -ffast-math and
# -Ofast would (finite-math, reassociation), and are never used.
override CFLAGS += -std=c11 $(OPT) -march=$(ARCH) -g -Wall -Wextra -Wpedantic $(WERROR) -fPIC -D_POSIX_C_SOURCE=200809L -fno-math-errno -fno-trapping-math
LDLIBS  = -lm -lpthread

# The library's layers, each using only those before it (README, "Layout").
LAYERS    = tensor formats autograd nn optim
LIB_SRC  ?= $(wildcard $(addsuffix /*.c,$(LAYERS)))
LIB_HDR   = $(wildcard posgrad.h $(addsuffix /*.h,$(LAYERS)))
# Internal headers: shared between a layer's files, never installed.
PRIVATE_HDR = tensor/shape_util.h autograd/op_reduce.h autograd/op_util.h autograd/flash_xpos.h autograd/flash_kernels.h formats/fmt_util.h formats/json.h formats/safetensors_impl.h formats/zlib_impl.h formats/zlib_huff.h formats/plot_impl.h
TEST_SRC ?= $(wildcard tests/test_*.c)
EXAMPLES  = $(patsubst %.c,%,$(wildcard examples/*.c))
BUILD    ?= build
OBJ       = $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
TEST_OBJ  = $(patsubst %.c,$(BUILD)/%.o,$(TEST_SRC))

.PHONY: all test test-avx2 check asan valgrind bench install install-check setup-check clean run gradcheck docs-gradcheck fixtures fuzz fuzz-png need-criterion

all: $(BUILD)/libposgrad.a $(BUILD)/libposgrad.so $(EXAMPLES)

# Header dependencies come from the compiler: -MMD writes each object's .d
# file (the headers it included, and the examples a test file includes), -MP
# adds a rule for each header so a deleted one does not stop the build. An
# object without its .d file (built before, or the .d deleted) depends on the
# missing .d, which the empty rule below "makes": so it is rebuilt, never
# trusted with headers it may not have seen.
DEPFLAGS  = -MMD -MP

$(BUILD)/%.d: ;
.PRECIOUS: $(BUILD)/%.d

# The compiler and flags a build directory was built with: its objects are rebuilt when they
# change (another ARCH, OPT or CFLAGS in the same BUILD, or an edit of the flags above).
FLAGS_STAMP = $(BUILD)/.flags
$(FLAGS_STAMP): FORCE
	@mkdir -p $(dir $@) && printf '%s\n' '$(subst ','\'',$(CC) $(CFLAGS))' >$@.new
	@if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi
.PHONY: FORCE
FORCE:

$(BUILD)/%.o: %.c $(BUILD)/%.d $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

-include $(OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(patsubst %,$(BUILD)/%.d,$(EXAMPLES))

$(BUILD)/libposgrad.a: $(OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libposgrad.so: $(OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS)

# PG_DATA_DIR: where the LM examples look for their corpus last (make install puts it there)
examples/%: examples/%.c $(BUILD)/examples/%.d $(BUILD)/libposgrad.a
	@mkdir -p $(BUILD)/examples
	$(CC) $(CFLAGS) $(DEPFLAGS) -MF $(BUILD)/$@.d -MT $@ -DPG_DATA_DIR='"$(PREFIX)/share/posgrad/data"' -I. $< -o $@ \
	  $(BUILD)/libposgrad.a $(LDLIBS)

# The suites need Criterion: tests/need.sh installs it (root) or names the command.
$(TEST_OBJ): | need-criterion
need-criterion:
	@tests/need.sh criterion

$(BUILD)/tests/run_tests: $(TEST_OBJ) $(BUILD)/libposgrad.a
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libposgrad.a -lcriterion $(LDLIBS) \
	  -Wl,--export-dynamic-symbol=mbedtls_x509_crt_parse_file

# The same test files built against tests/memcheck/criterion/criterion.h, with a runner
# that runs them all in one process (tests/memcheck/runner.c): `make valgrind` starts
# valgrind once per shard instead of once per test.
MEMCHECK_OBJ = $(patsubst %.c,$(BUILD)/memcheck/%.o,$(TEST_SRC) tests/memcheck/runner.c)
-include $(MEMCHECK_OBJ:.o=.d)
$(BUILD)/memcheck/%.o: %.c $(BUILD)/memcheck/%.d $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/memcheck -I. $(DEPFLAGS) -c $< -o $@

$(BUILD)/tests/memcheck_tests: $(MEMCHECK_OBJ) $(BUILD)/libposgrad.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(MEMCHECK_OBJ) $(BUILD)/libposgrad.a $(LDLIBS)

# the runner's own test: what it must report, planted (tests/memcheck/selftest.sh)
MEMCHECK_SELFTEST_OBJ = $(BUILD)/memcheck/tests/memcheck/runner.o $(BUILD)/memcheck/tests/memcheck/selftest.o
-include $(BUILD)/memcheck/tests/memcheck/selftest.d
$(BUILD)/tests/memcheck_selftest: $(MEMCHECK_SELFTEST_OBJ) $(BUILD)/libposgrad.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(MEMCHECK_SELFTEST_OBJ) $(BUILD)/libposgrad.a $(LDLIBS)

# Criterion runs suites in forked workers; -j2 matches this machine.
TEST_ARGS ?= -j2
test: $(BUILD)/tests/run_tests examples/gradcheck_report
	$(BUILD)/tests/run_tests $(TEST_ARGS)
	BUILD=$(BUILD) CC="$(CC)" tests/docs_check.sh   # every C block of README.md and docs/ builds
	tests/gen_docs_gradcheck.sh --check   # the gradcheck blocks of docs/ match make gradcheck

check: test

SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
# The suites on an AVX2 build (x86-64-v3): its GEMM kernels (6 x 16) and its vectorised
# math differ from the native AVX-512 build's. Skipped on a CPU without AVX2, FMA or BMI2.
.PHONY: test-avx2
test-avx2:
	@if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && grep -qw bmi2 /proc/cpuinfo; then \
	  $(MAKE) BUILD=build-avx2 ARCH=x86-64-v3 build-avx2/tests/run_tests && build-avx2/tests/run_tests $(TEST_ARGS); \
	else echo "test-avx2: this CPU lacks AVX2, FMA or BMI2 (x86-64-v3): skipped"; fi

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 CFLAGS="$(SAN)" LDFLAGS="$(SAN)" build-asan/tests/run_tests
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/checked_run.sh build-asan/tests/run_tests -j2

# valgrind does not decode AVX-512: memcheck runs a portable (x86-64) build. `make valgrind`
# runs the suites in one process per shard (tests/memcheck/: Criterion would start each
# test as a program, 1.1 s apiece under valgrind), less tests/valgrind_skip.txt's tests
# (the example suites: the file says why), after the runner's self-test; `make
# valgrind-all` runs every test through Criterion, a process each.
# (leaks shown are those that fail: glibc's thread and environment blocks come out
# "possibly lost" in a leak search while the process runs)
VALGRIND = valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	  --show-leak-kinds=definite,indirect --trace-children=yes -q
MEMCHECK_SHARDS ?= 2
.PHONY: valgrind valgrind-all valgrind-build
valgrind: valgrind-build
	VALGRIND="$(VALGRIND)" tests/memcheck/run.sh build-vg $(MEMCHECK_SHARDS) --skip tests/valgrind_skip.txt
valgrind-all: valgrind-build
	$(MAKE) BUILD=build-vg ARCH=x86-64 build-vg/tests/run_tests
	tests/checked_run.sh $(VALGRIND) build-vg/tests/run_tests -j2
valgrind-build:
	@tests/need.sh valgrind
	$(MAKE) BUILD=build-vg ARCH=x86-64 build-vg/tests/memcheck_tests build-vg/tests/memcheck_selftest

$(BUILD)/tests/bench: $(wildcard tests/bench/*.c tests/bench/*.h) $(BUILD)/libposgrad.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I. $(filter %.c,$^) -o $@ $(BUILD)/libposgrad.a $(LDLIBS)

bench: $(BUILD)/tests/bench
	$(BUILD)/tests/bench

# posgrad beside PyTorch (tests/bench/torch_train.py, when python3-torch is installed)
# and OpenBLAS (when libopenblas0 is): COMPARE_THREADS, COMPARE_ROUNDS, COMPARE_SCHEMES
.PHONY: bench-compare
bench-compare: $(BUILD)/tests/bench examples/train_lm
	BENCH=$(BUILD)/tests/bench tests/bench/compare.sh

# where a steady-state training step goes, by perf (tests/bench/profile.sh):
# PROFILE_SCHEME, PROFILE_STEPS, PROFILE_THREADS, PROFILE_DTYPE, PROFILE_TOP
.PHONY: profile
profile: $(BUILD)/tests/bench
	BENCH=$(BUILD)/tests/bench PROFILE_DATA=$(BUILD)/profile.data tests/bench/profile.sh

# bias_lab's report.html in headless Chromium (tests/need.sh installs it): the
# page's own self-test, then a screenshot decoded by tests/browser/shot_check.
# Its own target, not in make test (about half a minute).
$(BUILD)/tests/browser/shot_check: tests/browser/shot_check.c $(BUILD)/libposgrad.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I. $< -o $@ $(BUILD)/libposgrad.a $(LDLIBS)

.PHONY: browser-check
browser-check: examples/bias_lab $(BUILD)/tests/browser/shot_check
	BUILD=$(BUILD) tests/browser_check.sh

# Regenerates the committed parity fixtures (needs Debian's python3-torch); tests never need it.
fixtures:
	@tests/need.sh torch
	/usr/bin/python3 tests/fixtures/gen_fixtures.py

# libFuzzer target for the safetensors loader (clang from Debian's packages):
# built from the format files and the tensor layer alone.
FUZZ_TIME ?= 60
fuzz:
	@tests/need.sh clang
	@mkdir -p build-fuzz/corpus
	clang -std=c11 -g -O1 -D_POSIX_C_SOURCE=200809L -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=all -I. tests/fuzz/fuzz_safetensors.c formats/*.c tensor/*.c \
	  -o build-fuzz/fuzz_safetensors -lm -lpthread
	cp tests/fixtures/st_*.safetensors build-fuzz/corpus/
	./build-fuzz/fuzz_safetensors -dict=tests/fuzz/safetensors.dict -max_len=4096 \
	  -max_total_time=$(FUZZ_TIME) build-fuzz/corpus

# libFuzzer target for the PNG reader and the inflater (seeds: the PNG fixtures).
fuzz-png:
	@tests/need.sh clang
	@mkdir -p build-fuzz/corpus_png
	clang -std=c11 -g -O1 -D_POSIX_C_SOURCE=200809L -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=all -I. tests/fuzz/fuzz_png.c formats/*.c tensor/*.c \
	  -o build-fuzz/fuzz_png -lm -lpthread
	cp tests/fixtures/png_*.png build-fuzz/corpus_png/
	./build-fuzz/fuzz_png -dict=tests/fuzz/png.dict -max_len=4096 \
	  -max_total_time=$(FUZZ_TIME) build-fuzz/corpus_png

# The README's main command: a character-level LM on tinyshakespeare (about 70 s
# on 2 idle cores of an AVX-512 machine; docs/examples.md). RUN_ARGS passes flags, e.g. RUN_ARGS="--pos alibi".
run: all
	./examples/train_lm $(RUN_ARGS)

# Float64 gradchecks of every op, positional scheme and attention module as one
# table (docs/autograd.md "The report: make gradcheck"). GRADCHECK_ARGS passes
# flags, e.g. GRADCHECK_ARGS="--fast" or GRADCHECK_ARGS="--filter pos/".
gradcheck: examples/gradcheck_report
	./examples/gradcheck_report $(GRADCHECK_ARGS)

# Rewrites the gradcheck blocks of docs/ops.md, docs/pos/*.md, docs/autograd.md
# from the report (tests/gen_docs_gradcheck.sh; checked by make test).
docs-gradcheck: examples/gradcheck_report
	tests/gen_docs_gradcheck.sh

install: $(BUILD)/libposgrad.a $(BUILD)/libposgrad.so
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/posgrad
	install -m 644 $(BUILD)/libposgrad.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libposgrad.so $(DESTDIR)$(PREFIX)/lib/
	install -D -m 644 examples/data/tinyshakespeare.txt $(DESTDIR)$(PREFIX)/share/posgrad/data/tinyshakespeare.txt
	for h in $(filter-out $(PRIVATE_HDR),$(LIB_HDR)); do install -D -m 644 $$h $(DESTDIR)$(PREFIX)/include/posgrad/$$h; done
	sed -e 's|@PREFIX@|$(PREFIX)|' posgrad.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/posgrad.pc
	@# a system-wide install (root, no staging) refreshes the loader's cache
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

# tests/need.sh (each target's tool check) on present and missing tools.
setup-check:
	tests/need_check.sh

# Runs the README's "Using the installed library" section against a temporary prefix.
install-check: $(BUILD)/libposgrad.a $(BUILD)/libposgrad.so
	tests/install_check.sh

clean:
	rm -rf build build-asan build-vg build-fuzz build-avx2 $(EXAMPLES) train_lm_out bias_lab_out extrapolate_out
