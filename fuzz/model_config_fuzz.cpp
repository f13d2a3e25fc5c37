// libFuzzer target: any JSON text either becomes a validated model config (whose parameter count can be taken)
// or throws lmforge::Error. Models are not allocated: a valid config may describe a huge model.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "lmforge/core/error.h"
#include "lmforge/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    lmforge::model::ModelConfig c = lmforge::model::parse_model_config(j, "fuzz.json");
    (void)c.num_parameters();
  } catch (const lmforge::Error&) {
  }
  return 0;
}
