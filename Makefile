# Entry points. `make demo` and `make test` are the two commands in the README: each installs what it needs.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: deps configure build test test-fast test-e2e bench demo format lint check-asan fuzz clean

deps:
	bash scripts/install-deps.sh

configure:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Whole suite: unit tests and the slower end-to-end ones, with the peer tools (HF tokenizers, llama.cpp, ONNX
# Runtime from npm) installed so the parity and interop tests run rather than skip.
test:
	LMFORGE_WITH_NODE=$${LMFORGE_WITH_NODE:-1} bash scripts/install-deps.sh
	$(MAKE) build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

test-e2e: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L e2e

bench: deps build
	$(BUILD)/bin/lmforge bench ops

demo: deps build
	bash scripts/demo.sh $(BUILD)/bin/lmforge

format:
	find include src tools tests bench examples fuzz -name '*.h' -o -name '*.cpp' | xargs clang-format -i

lint: configure build
	find src tools -name '*.cpp' | xargs clang-tidy -p $(BUILD) --quiet

# The unit suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build folder.
check-asan: deps
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLMFORGE_SANITIZE=ON -DLMFORGE_BUILD_BENCH=OFF
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS) -L unit

clean:
	rm -rf $(BUILD) build-asan

# Fuzz the file parsers for FUZZ_SECONDS each (libFuzzer; clang from Debian's clang-14 package).
FUZZ_SECONDS ?= 60
fuzz:
	LMFORGE_EXTRA_PACKAGES="clang-14 libclang-rt-14-dev" bash scripts/install-deps.sh
	cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
	  -DLMFORGE_FUZZ=ON -DLMFORGE_SANITIZE=ON -DLMFORGE_BUILD_TESTS=OFF -DLMFORGE_BUILD_BENCH=OFF
	cmake --build build-fuzz -j $(JOBS) --target fuzz_safetensors fuzz_train_config fuzz_model_config fuzz_token_shard
	mkdir -p build-fuzz/corpus/safetensors && cp tests/reference/fixtures/*.safetensors build-fuzz/corpus/safetensors/
	build-fuzz/bin/fuzz_safetensors -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 build-fuzz/corpus/safetensors
	mkdir -p build-fuzz/corpus/train_config && cp configs/bench/*.toml configs/e2e/*.toml build-fuzz/corpus/train_config/
	build-fuzz/bin/fuzz_train_config -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 build-fuzz/corpus/train_config
	mkdir -p build-fuzz/corpus/model_config && cp configs/bench/*.json configs/e2e/*.json tests/reference/fixtures/*.json build-fuzz/corpus/model_config/
	build-fuzz/bin/fuzz_model_config -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 build-fuzz/corpus/model_config
	mkdir -p build-fuzz/corpus/token_shard
	build-fuzz/bin/fuzz_token_shard -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 build-fuzz/corpus/token_shard
	cmake --build build-fuzz -j $(JOBS) --target fuzz_tokenizer_json
	mkdir -p build-fuzz/corpus/tokenizer_json && cp tests/tokenizer/fixtures/mini_*.tokenizer.json build-fuzz/corpus/tokenizer_json/
	build-fuzz/bin/fuzz_tokenizer_json -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=200000 \
	  build-fuzz/corpus/tokenizer_json
	cmake --build build-fuzz -j $(JOBS) --target fuzz_chat_template
	mkdir -p build-fuzz/corpus/chat_template && cp fuzz/seeds/chat_template/* build-fuzz/corpus/chat_template/
	# -timeout 30: a template that runs into the step or work limit takes ~1-2 s in a release build, ~20x that
	# instrumented; a real hang would still be caught.
	build-fuzz/bin/fuzz_chat_template -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=30 \
	  build-fuzz/corpus/chat_template
	cmake --build build-fuzz -j $(JOBS) --target fuzz_gguf
	mkdir -p build-fuzz/corpus/gguf && cp fuzz/seeds/gguf/*.gguf tests/export/fixtures/llamacpp/*.gguf build-fuzz/corpus/gguf/
	build-fuzz/bin/fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 build-fuzz/corpus/gguf
	cmake --build build-fuzz -j $(JOBS) --target fuzz_imatrix
	mkdir -p build-fuzz/corpus/imatrix && cp fuzz/seeds/imatrix/* build-fuzz/corpus/imatrix/
	build-fuzz/bin/fuzz_imatrix -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 build-fuzz/corpus/imatrix
