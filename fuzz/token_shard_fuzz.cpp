// libFuzzer target: any file either opens as a token shard whose every id can be read, or throws lmforge::Error.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/lmforge_fuzz_shard_" + std::to_string(::getpid()) + ".bin";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    lmforge::data::ShardReader r(path);
    std::vector<int32_t> ids(static_cast<size_t>(r.size()));
    r.read(0, r.size(), ids.data());
  } catch (const lmforge::Error&) {
  }
  return 0;
}
