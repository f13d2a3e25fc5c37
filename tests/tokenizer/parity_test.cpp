// Exact parity with HF tokenizers: every fixture in tests/tokenizer/fixtures/*.expected.json holds the ids and
// decoded text the Rust library gives (tests/reference/tokenizer/gen_tokenizer_refs.js) for one tokenizer.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lmforge/tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using lmforge::tokenizer::EncodeOptions;
using lmforge::tokenizer::Tokenizer;

namespace {

const fs::path kFixtures = fs::path(LMFORGE_SOURCE_DIR) / "tests" / "tokenizer" / "fixtures";
const fs::path kNpm = fs::path(LMFORGE_SOURCE_DIR) / "tests" / "reference" / "tokenizer";

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

std::vector<std::string> expected_files() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(kFixtures)) {
    std::string n = e.path().filename().string();
    if (n.size() > 14 && n.substr(n.size() - 14) == ".expected.json") out.push_back(n.substr(0, n.size() - 14));
  }
  std::sort(out.begin(), out.end());
  return out;
}

class HfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParity, IdsAndDecodeMatchHf) {
  nlohmann::json ref = read_json(kFixtures / (GetParam() + ".expected.json"));
  std::string rel = ref["tokenizer"];
  fs::path tok_path = rel.rfind("node_modules/", 0) == 0 ? kNpm / rel : kFixtures / rel;
  if (!fs::exists(tok_path))
    GTEST_SKIP() << tok_path << " is absent: run `npm ci` in tests/reference/tokenizer (or LMFORGE_WITH_NODE=1 "
                 << "scripts/install-deps.sh) to fetch it";
  Tokenizer tok = Tokenizer::from_file(tok_path.string());
  size_t n = 0;
  for (const auto& c : ref["cases"]) {
    std::string text = c["text"];
    auto ids = tok.encode(text);
    EXPECT_EQ(ids, c["ids"].get<std::vector<uint32_t>>()) << "text: " << text;
    EncodeOptions plain;
    plain.add_special_tokens = false;
    auto ids_plain = tok.encode(text, plain);
    EXPECT_EQ(ids_plain, c["ids_no_special"].get<std::vector<uint32_t>>()) << "text: " << text;
    EXPECT_EQ(tok.decode(ids_plain), c["decoded"].get<std::string>()) << "text: " << text;
    EXPECT_EQ(tok.decode(ids_plain, true), c["decoded_skip_special"].get<std::string>()) << "text: " << text;
    ++n;
  }
  EXPECT_GT(n, 0u);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfParity, ::testing::ValuesIn(expected_files()),
                         [](const auto& info) { return info.param; });

// Byte-level tokenizers without a normalizer give back exactly the text they were given.
TEST(TokenizerRoundTrip, DecodeEncodeIsIdentity) {
  Tokenizer tok = Tokenizer::from_file((kFixtures / "mini_gpt2_template.tokenizer.json").string());
  EncodeOptions plain;
  plain.add_special_tokens = false;
  for (std::string text : {"", "plain ascii", "中文 text 😀 \t\r\n  x", "e\xCC\x81 <sep> <bos>x", "\x7f\x01\x02"}) {
    EXPECT_EQ(tok.decode(tok.encode(text, plain)), text);
  }
}

}  // namespace
