// libFuzzer target: any text either parses into a training config or throws lmforge::Error (never crashes).
#include <cstddef>
#include <cstdint>
#include <string>

#include "lmforge/core/error.h"
#include "lmforge/train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lmforge::train::TrainConfig c =
        lmforge::train::parse_train_config(std::string(reinterpret_cast<const char*>(data), size), "fuzz.toml", "/");
    (void)c.lr_at(c.max_steps / 2);
  } catch (const lmforge::Error&) {
  }
  return 0;
}
