// BpeTrainer: the tokenizer.json it writes loads in lmforge and in HF tokenizers and encodes identically in both.
#include "lmforge/tokenizer/trainer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lmforge/core/error.h"
#include "lmforge/tokenizer/tokenizer.h"
#include "temp_dir_test.h"

namespace fs = std::filesystem;
using lmforge::tokenizer::BpeTrainer;
using lmforge::tokenizer::Tokenizer;
using lmforge::tokenizer::TrainerOptions;

namespace {

class BpeTrainerFiles : public lmforge::testing::TempDirTest {};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Real text: the GPL-3 every Debian system ships, plus Chinese and digits.
std::vector<std::string> corpus() {
  std::vector<std::string> docs;
  std::string gpl = read_file("/usr/share/common-licenses/GPL-3");
  for (size_t i = 0; i < gpl.size(); i += 4000) docs.push_back(gpl.substr(i, 4000));
  for (int i = 0; i < 40; ++i) {
    docs.push_back("深度学习模型的训练需要大量的数据和计算资源。今天天气很好，我们去公园散步吧。第" +
                   std::to_string(i) + "段：数字12345和67890。<|eos|>日本語のテキスト、カタカナとひらがな。");
  }
  return docs;
}

const std::vector<std::string> kProbe = {
    "This License applies to any program or other work.",
    "深度学习模型需要数据。今天天气很好！",
    "mixed 中文 and English 123456789 <|eos|> tail",
    "  whitespace\truns\n\n\nand punctuation!!! (yes) [no] {maybe}",
    "Emoji 😀 and accents café",
    "",
};

TEST(BpeTrainer, LearnsMergesAndRoundTrips) {
  TrainerOptions opt;
  opt.vocab_size = 1200;
  opt.special_tokens = {"<|bos|>", "<|eos|>"};
  BpeTrainer trainer(opt);
  trainer.add_documents(corpus());
  std::string json = trainer.train();
  EXPECT_GT(trainer.stats().merges, 500u);
  Tokenizer tok = Tokenizer::from_json(json, "trained");
  EXPECT_EQ(tok.vocab_size(), 256 + 2 + trainer.stats().merges);
  EXPECT_EQ(tok.token_to_id("<|eos|>"), 1u);
  EXPECT_TRUE(tok.is_special(0));
  for (const std::string& t : kProbe) EXPECT_EQ(tok.decode(tok.encode(t)), t);
  // Merges make common words short: the GPL's "License" is one token.
  EXPECT_LE(tok.encode(" License").size(), 2u);
  // The special token is never split, and never learned from inside the text.
  auto ids = tok.encode("a<|eos|>b");
  EXPECT_NE(std::find(ids.begin(), ids.end(), 1u), ids.end());
}

TEST(BpeTrainer, DeterministicAndThreadIndependent) {
  std::string first;
  for (int threads : {1, 2}) {
    TrainerOptions opt;
    opt.vocab_size = 800;
    opt.threads = threads;
    BpeTrainer trainer(opt);
    trainer.add_documents(corpus());
    std::string json = trainer.train();
    if (first.empty()) {
      first = json;
    } else {
      EXPECT_EQ(json, first);
    }
  }
}

TEST(BpeTrainer, PatternChoicesAndErrors) {
  for (const char* p : {"deepseek-v3", "llama3", "qwen2", "gpt2", R"(\p{L}+|\p{N}|\s+|.)"})
    EXPECT_NO_THROW(BpeTrainer::pre_tokenizer_json(p)) << p;
  EXPECT_THROW(BpeTrainer::pre_tokenizer_json("(unclosed"), lmforge::Error);
  TrainerOptions small;
  small.vocab_size = 100;
  EXPECT_THROW(BpeTrainer{small}, lmforge::Error);
}

TEST_F(BpeTrainerFiles, TrainerReadsJsonlAndTextAndNamesBadLines) {
  fs::path jsonl = dir_ / "c.jsonl", txt = dir_ / "c.txt", bad = dir_ / "bad.jsonl";
  {
    std::ofstream(jsonl) << "{\"text\": \"hello hello world\"}\n\n{\"text\": \"你好 你好\"}\n";
    std::ofstream(txt) << "plain text line one\nplain text line two\n";
    std::ofstream(bad) << "{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n";
  }
  TrainerOptions opt;
  opt.vocab_size = 300;
  opt.min_frequency = 1;
  BpeTrainer trainer(opt);
  trainer.add_file(jsonl.string());
  trainer.add_file(txt.string());
  EXPECT_EQ(trainer.stats().documents, 3u);
  Tokenizer tok = Tokenizer::from_json(trainer.train(), "t");
  EXPECT_EQ(tok.decode(tok.encode("hello 你好")), "hello 你好");
  try {
    BpeTrainer b(opt);
    b.add_file(bad.string());
    FAIL() << "expected an error";
  } catch (const lmforge::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("bad.jsonl:2"), std::string::npos) << m;
    EXPECT_NE(m.find("\"text\""), std::string::npos) << m;
  }
  opt.skip_bad = true;
  BpeTrainer skip(opt);
  skip.add_file(bad.string());
  EXPECT_EQ(skip.stats().bad_lines, 1u);
}

// HF tokenizers loads what we wrote and encodes every probe exactly as we do (needs node and `npm ci`).
TEST_F(BpeTrainerFiles, HfLoadsTrainedTokenizerAndAgrees) {
  fs::path ref = fs::path(LMFORGE_SOURCE_DIR) / "tests" / "reference" / "tokenizer";
  if (!fs::exists(ref / "node_modules" / "@anush008" / "tokenizers") || std::system("node --version >/dev/null 2>&1"))
    GTEST_SKIP() << "node or tests/reference/tokenizer/node_modules absent (npm ci there)";
  for (const char* pattern : {"deepseek-v3", "gpt2"}) {
    TrainerOptions opt;
    opt.vocab_size = 1500;
    opt.pattern = pattern;
    opt.special_tokens = {"<|eos|>"};
    BpeTrainer trainer(opt);
    trainer.add_documents(corpus());
    std::string json = trainer.train();
    fs::path tj = dir_ / "tokenizer.json", texts = dir_ / "texts.json", out = dir_ / "ids.json";
    std::ofstream(tj) << json;
    std::ofstream(texts) << nlohmann::json(kProbe).dump();
    std::string cmd =
        "node " + (ref / "encode.js").string() + " " + tj.string() + " " + texts.string() + " > " + out.string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    auto hf = nlohmann::json::parse(read_file(out));
    Tokenizer tok = Tokenizer::from_json(json, "trained");
    for (size_t i = 0; i < kProbe.size(); ++i)
      EXPECT_EQ(tok.encode(kProbe[i]), hf[i].get<std::vector<uint32_t>>()) << pattern << ": " << kProbe[i];
  }
}

}  // namespace
