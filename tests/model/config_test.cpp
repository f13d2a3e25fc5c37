#include "lmforge/model/config.h"

#include <gtest/gtest.h>

#include "lmforge/core/error.h"

namespace lmforge::model {
namespace {

std::string shared(const char* name) {
  return std::string(LMFORGE_SOURCE_DIR) + "/../shared/bench/" + name;
}

// The parameter counts BENCHMARKS.md states for its reference configs pin down how every field is read.
TEST(ModelConfig, BenchmarkConfigsHaveTheirStatedParameterCounts) {
  struct Case {
    const char* file;
    int64_t params;
  };
  for (Case c :
       {Case{"train-dense.json", 27662848}, Case{"train-moe.json", 40119552}, Case{"infer-250m.json", 245924864}}) {
    ModelConfig cfg;
    try {
      cfg = load_model_config(shared(c.file));
    } catch (const Error& e) {
      GTEST_SKIP() << "shared bench configs not available: " << e.what();
    }
    EXPECT_EQ(cfg.num_parameters(), c.params) << c.file;
  }
}

TEST(ModelConfig, MoeAndSlidingLayerPatterns) {
  auto j = nlohmann::json::parse(R"({"model_type":"deepseek_v3","vocab_size":64,"hidden_size":32,
    "intermediate_size":48,"num_hidden_layers":4,"num_attention_heads":4,"kv_lora_rank":16,"qk_nope_head_dim":8,
    "qk_rope_head_dim":4,"v_head_dim":8,"moe_intermediate_size":16,"n_routed_experts":4,"num_experts_per_tok":2,
    "first_k_dense_replace":1,"moe_layer_freq":2,"sliding_window":8,
    "layer_types":["sliding_attention","sliding_attention","sliding_attention","full_attention"],
    "eos_token_id":[1,2],"some_unknown_hf_key":{"x":1}})");
  ModelConfig c = parse_model_config(j, "cfg.json");
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_FALSE(c.is_moe_layer(1));  // 1 % moe_layer_freq != 0
  EXPECT_TRUE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_sliding_layer(0));
  EXPECT_FALSE(c.is_sliding_layer(3));
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(c.num_key_value_heads, 4);
}

TEST(ModelConfig, Qwen2HasQkvBiasesOnly) {
  // transformers' Qwen2: q/k/v projections with biases, o_proj without, whatever attention_bias says (it has none).
  const auto j = nlohmann::json::parse(R"({"model_type":"qwen2","vocab_size":64,"hidden_size":32,
    "intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
    "use_sliding_window":false,"sliding_window":32768,"max_window_layers":21,"tie_word_embeddings":true})");
  const ModelConfig c = parse_model_config(j, "cfg.json");
  EXPECT_TRUE(c.is_qwen2());
  EXPECT_TRUE(c.attention_bias);
  EXPECT_FALSE(c.o_proj_bias);
  EXPECT_FALSE(c.is_sliding_layer(0));
  auto llama = j;
  llama["model_type"] = "llama";
  llama["attention_bias"] = true;
  const ModelConfig l = parse_model_config(llama, "cfg.json");
  EXPECT_TRUE(l.o_proj_bias);
  EXPECT_EQ(l.num_parameters() - c.num_parameters(), 2 * 32);  // one o_proj bias of 32 per layer
}

TEST(ModelConfig, RopeScalingTypes) {
  const std::string base = R"("model_type":"llama","vocab_size":64,"hidden_size":32,"intermediate_size":48,
    "num_hidden_layers":2,"num_attention_heads":4)";
  // linear needs only its factor (DeepSeek-Coder's config); "default" is plain RoPE.
  ModelConfig c = parse_model_config(
      nlohmann::json::parse("{" + base + R"(,"rope_scaling":{"type":"linear","factor":4.0}})"), "cfg.json");
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->type, "linear");
  EXPECT_EQ(c.rope_scaling->factor, 4.0);
  c = parse_model_config(nlohmann::json::parse("{" + base + R"(,"rope_scaling":{"rope_type":"default"}})"), "cfg.json");
  EXPECT_FALSE(c.rope_scaling.has_value());
}

TEST(ModelConfig, BadConfigsNameFileAndField) {
  const std::string base = R"("model_type":"llama","vocab_size":64,"hidden_size":32,"intermediate_size":48,
    "num_hidden_layers":2)";
  struct Case {
    std::string extra;
    std::string field;
  };
  std::vector<Case> cases = {
      {R"("num_attention_heads":5)", "num_attention_heads"},  // 5 does not divide 32
      {R"("num_attention_heads":4,"num_key_value_heads":3)", "num_key_value_heads"},
      {R"("num_attention_heads":"4")", "num_attention_heads"},  // wrong type
      {R"("num_attention_heads":4,"layer_types":["full_attention"])", "layer_types"},
      {R"("num_attention_heads":4,"layer_types":["sliding_attention","full_attention"])", "sliding_window"},
      {R"("num_attention_heads":4,"rope_scaling":{"type":"dynamic","factor":2})", "rope_scaling.type"},
      {R"("num_attention_heads":4,"rope_scaling":{"type":"linear","factor":0.5})", "rope_scaling.factor"},
      {R"("num_attention_heads":4,"vocab_size":0)", "vocab_size"},
  };
  for (const Case& c : cases) {
    auto j = nlohmann::json::parse("{" + base + "," + c.extra + "}");
    try {
      parse_model_config(j, "bad.json");
      ADD_FAILURE() << "accepted: " << c.extra;
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("bad.json"), std::string::npos) << m;
      EXPECT_NE(m.find("'" + c.field + "'"), std::string::npos) << m;
    }
  }
  auto moe = nlohmann::json::parse(R"({"model_type":"deepseek_v3","vocab_size":64,"hidden_size":32,
    "num_hidden_layers":2,"num_attention_heads":4,"kv_lora_rank":16,"qk_nope_head_dim":8,"qk_rope_head_dim":4,
    "v_head_dim":8,"moe_intermediate_size":16,"n_routed_experts":4,"num_experts_per_tok":5})");
  EXPECT_THROW(parse_model_config(moe, "moe.json"), Error);  // top-k > experts
  EXPECT_THROW(parse_model_config(nlohmann::json::parse(R"({"model_type":"gpt2"})"), "x.json"), Error);
  EXPECT_THROW(load_model_config("/nonexistent/config.json"), Error);
}

}  // namespace
}  // namespace lmforge::model

namespace lmforge::model {
namespace {

TEST(ModelConfig, AbsurdSizesAreRefusedBeforeAnyArithmetic) {
  auto err = [](const char* text) {
    try {
      parse_model_config(nlohmann::json::parse(text), "big.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err(R"({"model_type":"llama","vocab_size":20000000000,"hidden_size":8,"intermediate_size":8,
    "num_hidden_layers":1,"num_attention_heads":1})")
                .find("'vocab_size' is out of range"),
            std::string::npos);
  EXPECT_NE(err(R"({"model_type":"llama","vocab_size":2000000000,"hidden_size":2000000000,"intermediate_size":8,
    "num_hidden_layers":1,"num_attention_heads":1})")
                .find("2^50 parameters"),
            std::string::npos);
  EXPECT_NE(err(R"({"model_type":"llama","vocab_size":8,"hidden_size":8,"intermediate_size":8,
    "num_hidden_layers":100000000,"num_attention_heads":1})")
                .find("num_hidden_layers"),
            std::string::npos);
}

}  // namespace
}  // namespace lmforge::model
