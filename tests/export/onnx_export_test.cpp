// ONNX export: the file passes onnx::checker and ONNX's strict shape/type inference, carries optimum's input and
// output names with their dynamic axes, holds the model's weights byte for byte (inline or external), and bad input
// fails with one line naming the culprit. The numerics are checked in ONNX Runtime by e2e test
// interop.onnx_ort_parity (scripts/onnx_ort_parity.sh).
#include <gtest/gtest.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>
#include <sys/wait.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "cli_run.h"
#include "lmforge/core/error.h"
#include "lmforge/export/onnx.h"
#include "lmforge/model/model.h"
#include "temp_dir_test.h"

namespace {

namespace fs = std::filesystem;
using lmforge::Error;
using lmforge::Tensor;
using lmforge::exporter::check_onnx_file;
using lmforge::exporter::export_onnx;
using lmforge::exporter::OnnxExportOptions;
using lmforge::model::CausalLM;
using lmforge::model::parse_model_config;

const char* kLlama = R"({"model_type":"llama","vocab_size":64,"hidden_size":32,"intermediate_size":48,
  "num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"max_position_embeddings":64,
  "layer_types":["sliding_attention","full_attention","sliding_attention"],"sliding_window":4})";
const char* kDeepseek = R"({"model_type":"deepseek_v3","vocab_size":64,"hidden_size":32,"intermediate_size":48,
  "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,"max_position_embeddings":64,
  "q_lora_rank":16,"kv_lora_rank":16,"qk_nope_head_dim":8,"qk_rope_head_dim":4,"v_head_dim":6,
  "moe_intermediate_size":16,"first_k_dense_replace":1,"n_shared_experts":1,"n_routed_experts":4,
  "num_experts_per_tok":2,"scoring_func":"sigmoid","topk_method":"noaux_tc","n_group":2,"topk_group":1,
  "norm_topk_prob":true,"routed_scaling_factor":2.0,"tie_word_embeddings":true})";

CausalLM make_model(const char* json) {
  CausalLM m(parse_model_config(nlohmann::json::parse(json), "test config"));
  m.init_random(3);
  return m;
}

onnx::ModelProto read_model(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromIstream(&f)) << path;
  return m;
}

std::vector<std::string> dims(const onnx::ValueInfoProto& v) {
  std::vector<std::string> out;
  for (const auto& d : v.type().tensor_type().shape().dim())
    out.push_back(d.has_dim_param() ? d.dim_param() : std::to_string(d.dim_value()));
  return out;
}

std::map<std::string, const onnx::ValueInfoProto*> by_name(
    const google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>& v) {
  std::map<std::string, const onnx::ValueInfoProto*> out;
  for (const auto& x : v) out[x.name()] = &x;
  return out;
}

class OnnxExport : public lmforge::testing::TempDirTest {};

TEST_F(OnnxExport, LlamaHasOptimumNamesAxesAndPassesCheckerAndStrictInference) {
  CausalLM m = make_model(kLlama);
  const auto r = export_onnx(m, path("m.onnx"));
  EXPECT_TRUE(r.external_file.empty());
  EXPECT_EQ(r.opset, 17);
  check_onnx_file(path("m.onnx"));
  onnx::ModelProto p = read_model(path("m.onnx"));
  ASSERT_EQ(p.opset_import_size(), 1);
  EXPECT_EQ(p.opset_import(0).version(), 17);

  const auto in = by_name(p.graph().input()), out = by_name(p.graph().output());
  EXPECT_EQ(in.size(), 3u + 2 * 3);
  EXPECT_EQ(out.size(), 1u + 2 * 3);
  using V = std::vector<std::string>;
  EXPECT_EQ(dims(*in.at("input_ids")), (V{"batch_size", "sequence_length"}));
  EXPECT_EQ(dims(*in.at("attention_mask")), (V{"batch_size", "past_sequence_length + sequence_length"}));
  EXPECT_EQ(dims(*in.at("position_ids")), (V{"batch_size", "sequence_length"}));
  EXPECT_EQ(in.at("input_ids")->type().tensor_type().elem_type(), onnx::TensorProto::INT64);
  EXPECT_EQ(dims(*out.at("logits")), (V{"batch_size", "sequence_length", "64"}));
  for (int l = 0; l < 3; ++l) {
    for (const char* w : {"key", "value"}) {
      const std::string i = std::to_string(l);
      EXPECT_EQ(dims(*in.at("past_key_values." + i + "." + w)), (V{"batch_size", "2", "past_sequence_length", "8"}));
      EXPECT_EQ(dims(*out.at("present." + i + "." + w)),
                (V{"batch_size", "2", "past_sequence_length + sequence_length", "8"}));
      EXPECT_EQ(in.at("past_key_values." + i + "." + w)->type().tensor_type().elem_type(), onnx::TensorProto::FLOAT);
    }
  }

  // Every model tensor is an initializer under its HF name with the same bytes.
  std::map<std::string, const onnx::TensorProto*> inits;
  for (const auto& t : p.graph().initializer()) inits[t.name()] = &t;
  for (const auto& [name, t] : m.state()) {
    ASSERT_TRUE(inits.count(name)) << name;
    const onnx::TensorProto& x = *inits.at(name);
    EXPECT_EQ(x.data_type(), onnx::TensorProto::FLOAT) << name;
    ASSERT_EQ(x.raw_data().size(), t.nbytes()) << name;
    EXPECT_EQ(std::memcmp(x.raw_data().data(), t.contiguous().raw_data(), t.nbytes()), 0) << name;
  }

  // Strict inference: every node's input types and shapes fit its op, and the inferred outputs match the declared.
  onnx::ShapeInferenceOptions opts(/*check_type=*/true, /*strict_mode=*/1, /*data_prop=*/false);
  EXPECT_NO_THROW(onnx::shape_inference::InferShapes(p, onnx::OpSchemaRegistry::Instance(), opts));
}

TEST_F(OnnxExport, DeepseekCachesFullPerHeadKeysAndValues) {
  CausalLM m = make_model(kDeepseek);
  export_onnx(m, path("d.onnx"));
  check_onnx_file(path("d.onnx"));
  onnx::ModelProto p = read_model(path("d.onnx"));
  const auto in = by_name(p.graph().input());
  using V = std::vector<std::string>;
  EXPECT_EQ(dims(*in.at("past_key_values.1.key")), (V{"batch_size", "4", "past_sequence_length", "12"}));
  EXPECT_EQ(dims(*in.at("past_key_values.1.value")), (V{"batch_size", "4", "past_sequence_length", "6"}));
  // Routing is in the graph: TopK over the experts and the group scores, GatherElements for the weights.
  int topk = 0, gather_elements = 0;
  for (const auto& n : p.graph().node()) {
    topk += n.op_type() == "TopK";
    gather_elements += n.op_type() == "GatherElements";
  }
  EXPECT_EQ(topk, 3);  // one MoE layer: two best per group, best groups, best experts
  EXPECT_EQ(gather_elements, 1);
  // Sparse dispatch (the default): per routed expert one NonZero row selection and one ScatterND add.
  auto count = [](const onnx::ModelProto& x, const std::string& op) {
    int k = 0;
    for (const auto& n : x.graph().node()) k += n.op_type() == op;
    return k;
  };
  EXPECT_EQ(count(p, "NonZero"), 4);
  EXPECT_EQ(count(p, "ScatterND"), 4);
  EXPECT_EQ(count(p, "ScatterElements"), 0);
  OnnxExportOptions dense;
  dense.moe_dispatch = OnnxExportOptions::MoeDispatch::Dense;
  export_onnx(m, path("dense.onnx"), dense);
  const onnx::ModelProto pd = read_model(path("dense.onnx"));
  EXPECT_EQ(count(pd, "NonZero"), 0);
  EXPECT_EQ(count(pd, "ScatterElements"), 1);
  // Tied embeddings: one initializer serves the embedding and the head.
  int embed = 0;
  for (const auto& t : p.graph().initializer()) embed += t.name() == "model.embed_tokens.weight";
  EXPECT_EQ(embed, 1);
  onnx::ShapeInferenceOptions opts(true, 1, false);
  EXPECT_NO_THROW(onnx::shape_inference::InferShapes(p, onnx::OpSchemaRegistry::Instance(), opts));
}

TEST_F(OnnxExport, ExternalDataHoldsAlignedWeightsBesideTheGraph) {
  CausalLM m = make_model(kLlama);
  OnnxExportOptions o;
  o.external_data = OnnxExportOptions::ExternalData::Always;
  const auto r = export_onnx(m, path("e.onnx"), o);
  EXPECT_EQ(r.external_file, path("e.onnx.data"));
  check_onnx_file(path("e.onnx"));
  onnx::ModelProto p = read_model(path("e.onnx"));
  std::ifstream f(path("e.onnx.data"), std::ios::binary);
  const std::string data((std::istreambuf_iterator<char>(f)), {});
  std::map<std::string, Tensor> state;
  for (const auto& [name, t] : m.state()) state.emplace(name, t.contiguous());
  int external = 0;
  for (const auto& t : p.graph().initializer()) {
    if (t.data_location() != onnx::TensorProto::EXTERNAL) continue;
    ++external;
    std::map<std::string, std::string> kv;
    for (const auto& e : t.external_data()) kv[e.key()] = e.value();
    EXPECT_EQ(kv["location"], "e.onnx.data");
    const size_t off = std::stoull(kv["offset"]), len = std::stoull(kv["length"]);
    EXPECT_EQ(off % 4096, 0u);
    ASSERT_LE(off + len, data.size());
    const Tensor& w = state.at(t.name());
    ASSERT_EQ(len, w.nbytes());
    EXPECT_EQ(std::memcmp(data.data() + off, w.raw_data(), len), 0) << t.name();
  }
  EXPECT_EQ(external, static_cast<int>(state.size()));
  EXPECT_LT(fs::file_size(path("e.onnx")), 64u * 1024);
  // No probe files left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++files;
  EXPECT_EQ(files, 2);

  // The checker does fail: the same graph without its data file.
  fs::remove(path("e.onnx.data"));
  EXPECT_THROW(check_onnx_file(path("e.onnx")), Error);
}

TEST_F(OnnxExport, CheckerRejectsABrokenGraph) {
  CausalLM m = make_model(kLlama);
  export_onnx(m, path("m.onnx"));
  onnx::ModelProto p = read_model(path("m.onnx"));
  p.mutable_graph()->mutable_node(5)->set_op_type("NoSuchOp");
  std::ofstream(path("bad.onnx"), std::ios::binary) << p.SerializeAsString();
  EXPECT_THROW(check_onnx_file(path("bad.onnx")), Error);
}

TEST_F(OnnxExport, UnexportableConfigNamesTheField) {
  // The config parser already refuses this; a config built in code reaches the exporter's own check.
  lmforge::model::ModelConfig c = parse_model_config(nlohmann::json::parse(kLlama), "test config");
  c.sliding_window = 0;
  CausalLM m(c);
  try {
    export_onnx(m, path("x.onnx"));
    FAIL() << "exported a sliding layer without a window";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sliding_window"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(path("x.onnx")));
}

using lmforge::testing::CliRun;
using lmforge::testing::sh;

const std::string kBin = LMFORGE_BINARY;

TEST_F(OnnxExport, CliExportsAndReportsBadInputInOneLine) {
  std::ofstream(path("c.json")) << kLlama;
  ASSERT_EQ(sh(kBin + " init-model --config " + path("c.json") + " --out " + path("m")).code, 0);
  CliRun r = sh(kBin + " export onnx --model " + path("m") + " --out " + path("m.onnx") + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["opset"], 17);
  EXPECT_GT(j["weight_bytes"].get<int64_t>(), 0);
  check_onnx_file(path("m.onnx"));

  // No model directory.
  r = sh(kBin + " export onnx --model " + path("nope") + " --out " + path("x.onnx"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("nope"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(path("x.onnx")));
  // A tensor of the wrong shape.
  std::ofstream(path("m/config.json")) << R"({"model_type":"llama","vocab_size":64,"hidden_size":32,
    "intermediate_size":40,"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8})";
  r = sh(kBin + " export onnx --model " + path("m") + " --out " + path("x.onnx"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("mlp.gate_proj.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(path("x.onnx")));
  // A bad flag value names the flag.
  r = sh(kBin + " export onnx --model " + path("m") + " --out " + path("x.onnx") + " --external-data sometimes");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--external-data"), std::string::npos) << r.out;
}

}  // namespace
