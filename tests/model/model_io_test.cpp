// Model directories: save / load round trips, and tensors that do not fit the config are named errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "lmforge/core/error.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/model/model.h"
#include "temp_dir_test.h"

namespace lmforge::model {
namespace {

namespace fs = std::filesystem;

const char* kMoe = R"({"model_type":"deepseek_v3","vocab_size":50,"hidden_size":16,"intermediate_size":24,
  "num_hidden_layers":2,"num_attention_heads":2,"q_lora_rank":8,"kv_lora_rank":8,"qk_nope_head_dim":4,
  "qk_rope_head_dim":4,"v_head_dim":4,"moe_intermediate_size":8,"first_k_dense_replace":1,"n_shared_experts":1,
  "n_routed_experts":4,"num_experts_per_tok":2,"scoring_func":"sigmoid","topk_method":"noaux_tc","n_group":2,
  "topk_group":1,"norm_topk_prob":true,"tie_word_embeddings":true,"some_hf_key":"kept"})";

class ModelIo : public lmforge::testing::TempDirTest {};

TEST_F(ModelIo, SaveLoadRoundTripKeepsWeightsBuffersAndConfig) {
  CausalLM m(parse_model_config(nlohmann::json::parse(kMoe), "moe.json"));
  m.init_random(3);
  std::vector<ExpertLoad> load{{1, {9, 0, 3, 4}, 0}};
  m.update_expert_bias(load, 0.5);  // a non-zero e_score_correction_bias must survive the round trip
  m.save(path("m"));
  CausalLM back = CausalLM::load(path("m"));
  auto a = m.state(), b = back.state();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.to_double_vector(), b[i].second.to_double_vector()) << a[i].first;
  }
  std::ifstream f(path("m/config.json"));
  auto j = nlohmann::json::parse(f);
  EXPECT_EQ(j.value("some_hf_key", ""), "kept");
  // Tied embeddings: no lm_head tensor in the file.
  auto t = io::load_safetensors(path("m/model.safetensors"));
  EXPECT_FALSE(t.count("lm_head.weight"));
  EXPECT_TRUE(t.count("model.layers.1.mlp.gate.e_score_correction_bias"));
  EXPECT_TRUE(t.count("model.layers.1.mlp.experts.3.down_proj.weight"));
  EXPECT_TRUE(t.count("model.layers.0.mlp.gate_proj.weight"));  // first_k_dense_replace
  // bf16 storage loads back (as f32) with bf16 rounding only.
  m.save(path("h"), DType::BF16);
  CausalLM h = CausalLM::load(path("h"));
  EXPECT_NEAR(h.state()[0].second.to_double_vector()[0], a[0].second.to_double_vector()[0],
              std::abs(a[0].second.to_double_vector()[0]) * 1e-2);
}

TEST_F(ModelIo, MissingMisshapenAndUnexpectedTensorsAreNamed) {
  CausalLM m(parse_model_config(nlohmann::json::parse(kMoe), "moe.json"));
  std::map<std::string, Tensor> w;
  for (auto& [k, v] : m.state()) w.emplace(k, v);
  auto err = [&](std::map<std::string, Tensor> ws) {
    try {
      m.load_weights(ws, "x.safetensors");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  auto missing = w;
  missing.erase("model.norm.weight");
  EXPECT_NE(err(missing).find("model.norm.weight"), std::string::npos);
  auto shape = w;
  shape["model.layers.0.self_attn.o_proj.weight"] = Tensor::zeros({3, 3});
  std::string e = err(shape);
  EXPECT_NE(e.find("o_proj"), std::string::npos) << e;
  EXPECT_NE(e.find("x.safetensors"), std::string::npos) << e;
  auto extra = w;
  extra["model.layers.0.mlp.experts.0.up_proj.weight"] = Tensor::zeros({8, 16});  // layer 0 is dense
  EXPECT_NE(err(extra).find("experts.0"), std::string::npos);
  EXPECT_EQ(err(w), "");
  // A missing model dir and a missing shard of a sharded checkpoint.
  EXPECT_THROW(CausalLM::load(path("nope")), Error);
  m.save(path("s"));
  std::ofstream(path("s/model.safetensors.index.json"))
      << R"({"weight_map":{"model.norm.weight":"model-00002-of-00002.safetensors"}})";
  fs::remove(path("s/model.safetensors"));
  try {
    CausalLM::load(path("s"));
    ADD_FAILURE() << "no error";
  } catch (const Error& ex) {
    EXPECT_NE(std::string(ex.what()).find("model-00002-of-00002.safetensors"), std::string::npos) << ex.what();
  }
}

}  // namespace
}  // namespace lmforge::model
