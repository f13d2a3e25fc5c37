// libFuzzer target: any byte string, as a chat template, either renders (a fixed conversation) or throws
// lmforge::Error, within bounded time and memory. Build: make fuzz (clang); seeds: fuzz/seeds/chat_template (the
// real templates of tests/tokenizer/fixtures/chat_templates.json).
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "lmforge/core/error.h"
#include "lmforge/tokenizer/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json ctx = {{"messages",
                                              {{{"role", "system"}, {"content", "Be brief."}},
                                               {{"role", "user"}, {"content", "Hi <think>x</think>"}},
                                               {{"role", "assistant"}, {"content", "Hello."}},
                                               {{"role", "user"}, {"content", "Again"}}}},
                                             {"add_generation_prompt", true},
                                             {"bos_token", "<s>"},
                                             {"eos_token", "</s>"}};
  try {
    (void)lmforge::tokenizer::jinja::render(std::string(reinterpret_cast<const char*>(data), size), ctx);
  } catch (const lmforge::Error&) {
  }
  return 0;
}
