// Importance matrices: llama.cpp's two file formats, the HF <-> GGUF name mapping, and their computation from
// calibration data (imatrix.h).
#include "lmforge/quant/imatrix.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "lmforge/core/error.h"
#include "lmforge/io/atomic_file.h"
#include "lmforge/io/gguf.h"
#include "lmforge/quant/quantized_model.h"
#include "quant/calib_runner.h"

namespace lmforge::quant {

namespace {

// Little-endian reads from a legacy file, each naming what it reads in errors.
class Reader {
 public:
  Reader(std::string bytes, std::string path) : b_(std::move(bytes)), path_(std::move(path)) {}
  bool done() const { return at_ == b_.size(); }
  int32_t i32(const std::string& what) {
    need(4, what);
    int32_t v;
    std::memcpy(&v, b_.data() + at_, 4);
    at_ += 4;
    return v;
  }
  std::string str(size_t n, const std::string& what) {
    need(n, what);
    std::string s = b_.substr(at_, n);
    at_ += n;
    return s;
  }
  void floats(float* out, size_t n, const std::string& what) {
    need(n * 4, what);
    std::memcpy(out, b_.data() + at_, n * 4);
    at_ += n * 4;
  }

 private:
  void need(size_t n, const std::string& what) {
    if (b_.size() - at_ < n)
      throw Error(path_ + ": imatrix ends inside " + what + " (offset " + std::to_string(at_) + ")");
  }
  std::string b_;
  std::string path_;
  size_t at_ = 0;
};

constexpr int32_t kMaxName = 4096;

Imatrix read_legacy(std::string bytes, const std::string& path) {
  Reader r(std::move(bytes), path);
  Imatrix m;
  m.legacy = true;
  const int32_t n = r.i32("the entry count");
  LMF_CHECK(n > 0, path, ": imatrix has ", n, " entries (a legacy .dat file starts with a positive entry count)");
  for (int32_t i = 0; i < n; ++i) {
    const std::string at = "entry " + std::to_string(i + 1);
    const int32_t len = r.i32(at + "'s name length");
    LMF_CHECK(len > 0 && len <= kMaxName, path, ": imatrix ", at, " has a name of ", len, " bytes");
    const std::string name = r.str(static_cast<size_t>(len), at + "'s name");
    const int32_t ncall = r.i32(name + "'s call count");
    const int32_t nval = r.i32(name + "'s value count");
    LMF_CHECK(ncall > 0, path, ": imatrix entry ", name, " has call count ", ncall);
    LMF_CHECK(nval > 0 && nval <= (1 << 28), path, ": imatrix entry ", name, " has ", nval, " values");
    ImatrixEntry e;
    e.sums.resize(static_cast<size_t>(nval));
    r.floats(e.sums.data(), e.sums.size(), name + "'s values");
    e.counts = {static_cast<float>(ncall)};
    e.cols = nval;  // the legacy format does not say how many matrices an entry holds
    LMF_CHECK(m.entries.emplace(name, std::move(e)).second, path, ": imatrix entry ", name, " appears twice");
  }
  if (!r.done()) {  // optional: the last chunk count and the dataset's name
    m.chunk_count = r.i32("the chunk count");
    if (!r.done()) {
      const int32_t len = r.i32("the dataset name's length");
      LMF_CHECK(len >= 0 && len <= kMaxName, path, ": imatrix dataset name of ", len, " bytes");
      if (len > 0) m.datasets.push_back(r.str(static_cast<size_t>(len), "the dataset name"));
    }
  }
  return m;
}

Imatrix read_gguf(const io::GgufFile& f) {
  const std::string& path = f.path();
  if (const io::GgufValue* t = f.find("general.type"))
    LMF_CHECK(t->type == io::GgufType::STRING && t->s == "imatrix", path,
              ": general.type is not \"imatrix\" (a model file, not an importance matrix?)");
  LMF_CHECK(f.find("imatrix.chunk_count") && f.find("imatrix.chunk_size") && f.find("imatrix.datasets"), path,
            ": missing imatrix metadata (imatrix.chunk_count, imatrix.chunk_size, imatrix.datasets)");
  Imatrix m;
  m.chunk_count = f.get_int("imatrix.chunk_count");
  m.chunk_size = f.get_int("imatrix.chunk_size");
  const io::GgufValue& ds = f.at("imatrix.datasets");
  LMF_CHECK(ds.type == io::GgufType::ARRAY && ds.elem == io::GgufType::STRING, path,
            ": imatrix.datasets is not an array of strings");
  m.datasets = ds.strings;
  const auto f32 = [&](const io::GgufTensorInfo& t) {
    LMF_CHECK(t.type == 0, path, ": imatrix tensor ", t.name, " is not f32");
    Tensor v = f.get(t.name);
    return std::vector<float>(v.data<float>(), v.data<float>() + v.numel());
  };
  std::map<std::string, const io::GgufTensorInfo*> sums, counts;
  const auto strip = [](const std::string& s, const std::string& suffix, std::string& base) {
    if (s.size() <= suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    base = s.substr(0, s.size() - suffix.size());
    return true;
  };
  for (const io::GgufTensorInfo& t : f.tensors()) {
    std::string base;
    if (strip(t.name, ".in_sum2", base)) sums[base] = &t;
    if (strip(t.name, ".counts", base)) counts[base] = &t;
  }  // other tensors (.in_sum, .stats) are not needed to quantize
  for (const auto& [name, s] : counts)
    LMF_CHECK(sums.count(name), path, ": imatrix has ", name, ".counts but no ", name, ".in_sum2");
  for (const auto& [name, s] : sums) {
    auto c = counts.find(name);
    LMF_CHECK(c != counts.end(), path, ": imatrix has ", name, ".in_sum2 but no ", name, ".counts");
    ImatrixEntry e;
    e.sums = f32(*s);
    e.counts = f32(*c->second);
    LMF_CHECK(!e.counts.empty() && !e.sums.empty() && e.sums.size() % e.counts.size() == 0, path, ": imatrix entry ",
              name, ": ", e.sums.size(), " sums do not split into ", e.counts.size(), " matrices");
    e.cols = static_cast<int64_t>(e.sums.size() / e.counts.size());
    LMF_CHECK(s->shape.back() == e.cols, path, ": imatrix entry ", name, ": in_sum2 ", shape_str(s->shape),
              " does not have one row per count");
    for (float v : e.counts) LMF_CHECK(std::isfinite(v) && v >= 0, path, ": imatrix entry ", name, " has count ", v);
    m.entries.emplace(name, std::move(e));
  }
  LMF_CHECK(!m.entries.empty(), path, ": imatrix has no entries");
  return m;
}

}  // namespace

std::vector<float> Imatrix::values(const std::string& gguf_name) const {
  auto it = entries.find(gguf_name);
  if (it == entries.end()) return {};
  const ImatrixEntry& e = it->second;
  std::vector<float> v(e.sums.size());
  if (legacy) {  // llama-quantize: value / ncall
    for (size_t i = 0; i < v.size(); ++i) v[i] = e.sums[i] / e.counts[0];
    return v;
  }
  const size_t cols = static_cast<size_t>(e.cols);
  for (size_t j = 0; j < e.counts.size(); ++j)
    for (size_t i = 0; i < cols; ++i) v[j * cols + i] = e.counts[j] > 0.0f ? e.sums[j * cols + i] / e.counts[j] : 1.0f;
  return v;
}

Imatrix read_imatrix(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LMF_CHECK(in.good(), path, ": cannot open the imatrix file");
  char magic[4] = {};
  in.read(magic, 4);
  if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) return read_gguf(io::GgufFile::open(path));
  in.clear();
  in.seekg(0);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return read_legacy(std::move(bytes), path);
}

Imatrix parse_imatrix(std::string_view bytes, const std::string& label) {
  if (bytes.size() >= 4 && bytes.substr(0, 4) == "GGUF") return read_gguf(io::GgufFile::from_bytes(bytes, label));
  return read_legacy(std::string(bytes), label);
}

void write_imatrix(const Imatrix& m, const std::string& path, bool legacy) {
  LMF_CHECK(!m.entries.empty(), path, ": no imatrix entries to write");
  if (!legacy) {
    io::GgufWriter w;
    w.set("general.type", io::GgufValue::string("imatrix"));
    w.set("imatrix.datasets", io::GgufValue::string_array(m.datasets));
    w.set("imatrix.chunk_count", io::GgufValue::u32(static_cast<uint32_t>(m.chunk_count)));
    w.set("imatrix.chunk_size", io::GgufValue::u32(static_cast<uint32_t>(m.chunk_size)));
    for (const auto& [name, e] : m.entries) {  // llama-imatrix's order: by name, sums then counts
      const auto n = static_cast<int64_t>(e.counts.size());
      // (A legacy file's entries go as they are: its values over its call count are the same means.)
      w.add_tensor(name + ".in_sum2", Tensor::from_vector(e.sums, {n, e.cols}));
      w.add_tensor(name + ".counts", Tensor::from_vector(e.counts, {n, 1}));
    }
    w.write(path);
    return;
  }
  // llama-imatrix's save_imatrix_legacy: per entry the mean times ncall = ceil(largest count / chunk size).
  std::string out;
  const auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  const auto put32 = [&](int32_t v) { put(&v, 4); };
  put32(static_cast<int32_t>(m.entries.size()));
  const int64_t chunk = std::max<int64_t>(1, m.chunk_size);
  for (const auto& [name, e] : m.entries) {
    put32(static_cast<int32_t>(name.size()));
    put(name.data(), name.size());
    float most = 0;
    for (float c : e.counts) most = std::max(most, c);
    const auto ncall = m.legacy ? static_cast<int32_t>(e.counts[0])
                                : static_cast<int32_t>((static_cast<int64_t>(most) + chunk - 1) / chunk);
    put32(ncall);
    put32(static_cast<int32_t>(e.sums.size()));
    std::vector<float> tmp(e.sums.size());
    for (size_t i = 0; i < tmp.size(); ++i) {
      if (m.legacy) {
        tmp[i] = e.sums[i];
        continue;
      }
      float count = e.counts[i / static_cast<size_t>(e.cols)], value = e.sums[i];
      if (count == 0.0f) value = count = 1.0f;  // partial data stores 1, as llama-imatrix does
      tmp[i] = (value / count) * static_cast<float>(ncall);
    }
    put(tmp.data(), tmp.size() * 4);
  }
  put32(static_cast<int32_t>(m.chunk_count));
  const std::string ds = m.datasets.empty() ? std::string() : m.datasets.back();
  put32(static_cast<int32_t>(ds.size()));
  put(ds.data(), ds.size());
  io::write_file_atomic(path, out);
}

std::string gguf_weight_name(const std::string& hf, const model::ModelConfig& c, int64_t* expert) {
  if (expert) *expert = -1;
  if (hf == "lm_head.weight") return "output.weight";
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  const std::string layers = "model.layers.";
  if (hf.rfind(layers, 0) != 0) return "";
  const size_t dot = hf.find('.', layers.size());
  if (dot == std::string::npos) return "";
  const std::string layer = hf.substr(layers.size(), dot - layers.size());
  if (layer.empty() || layer.find_first_not_of("0123456789") != std::string::npos) return "";
  const std::string rest = hf.substr(dot + 1), b = "blk." + layer + ".";
  static const std::map<std::string, std::string> direct = {
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
      {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
      {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
      {"self_attn.kv_b_proj.weight", "attn_kv_b.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
      {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
      {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
      {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
  };
  if (auto it = direct.find(rest); it != direct.end()) return b + it->second;
  const std::string experts = "mlp.experts.";
  if (rest.rfind(experts, 0) != 0) return "";
  const size_t d2 = rest.find('.', experts.size());
  if (d2 == std::string::npos) return "";
  const std::string e = rest.substr(experts.size(), d2 - experts.size()), proj = rest.substr(d2 + 1);
  if (e.empty() || e.find_first_not_of("0123456789") != std::string::npos) return "";
  for (const char* p : {"gate", "up", "down"})
    if (proj == std::string(p) + "_proj.weight") {
      const int64_t x = std::stoll(e);
      if (x >= c.n_routed_experts) return "";
      if (expert) *expert = x;
      return b + "ffn_" + p + "_exps.weight";
    }
  return "";
}

Importance importance_for(const Imatrix& m, const model::ModelConfig& c, const std::string& source) {
  Importance out;
  for (const auto& [name, shape] : model::CausalLM::tensor_shapes(c)) {
    if (!quantizable_weight(name, c)) continue;
    int64_t expert = -1;
    const std::string g = gguf_weight_name(name, c, &expert);
    if (g.empty()) continue;
    std::vector<float> v = m.values(g);
    if (v.empty()) continue;
    const int64_t cols = shape.back();
    const int64_t mats = expert >= 0 ? c.n_routed_experts : 1;
    LMF_CHECK(static_cast<int64_t>(v.size()) == mats * cols, source, ": imatrix entry ", g, " has ", v.size(),
              " values; ", name, " needs ", mats * cols, " (", mats, " x ", cols, " inputs)");
    const int64_t at = std::max<int64_t>(expert, 0) * cols;
    out[name] = std::vector<float>(v.begin() + at, v.begin() + at + cols);
  }
  return out;
}

namespace {

// Sum of x^2 per input column and the rows summed, per HF linear name.
struct SquareSums {
  struct Sum {
    int64_t cols = 0;
    double n = 0;
    std::vector<double> s;
  };
  std::map<std::string, Sum> sums;
  void add(const std::string& name, const Tensor& input) {
    const Tensor x = input.contiguous();
    const int64_t cols = x.size(x.dim() - 1), rows = x.numel() / cols;
    Sum& s = sums[name];
    if (s.s.empty()) {
      s.cols = cols;
      s.s.assign(static_cast<size_t>(cols), 0.0);
    }
    LMF_CHECK(s.cols == cols, "imatrix: ", name, " saw inputs of ", s.cols, " and ", cols, " columns");
    const float* p = x.data<float>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) s.s[j] += static_cast<double>(p[r * cols + j]) * p[r * cols + j];
    s.n += static_cast<double>(rows);
  }
};

}  // namespace

Imatrix compute_imatrix(const std::string& model_dir, const std::vector<Tensor>& calib, const ImatrixOptions& opt,
                        const std::function<void(const std::string&)>& log) {
  LMF_CHECK(!calib.empty(), "imatrix: no calibration sequences");
  StreamedModel sm(model_dir);
  model::CausalLM& m = sm.model();
  const model::ModelConfig& c = m.config();
  SquareSums sq;
  const Observer observe = [&](const std::string& name, const Tensor& x) {
    if (is_linear_weight(name)) sq.add(name, x);
  };
  bring_in(&sm, "model.embed_tokens.");
  LayerwiseRunner run(m, calib);
  let_go(&sm, "model.embed_tokens.");
  const int64_t L = c.num_hidden_layers;
  for (int64_t l = 0; l < L; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    bring_in(&sm, prefix);
    run.observe(observe);
    if (l + 1 < L || opt.process_output) run.advance();
    let_go(&sm, prefix);
    if (log) log("imatrix: layer " + std::to_string(l + 1) + "/" + std::to_string(L));
  }
  int64_t longest = 0;
  for (const Tensor& t : calib) longest = std::max(longest, t.numel());
  if (opt.process_output) {  // the LM head's input: the final RMSNorm of the last layer's output
    bring_in(&sm, "model.norm.");
    const Tensor w = parameter_tensor(m, "model.norm.weight");
    const std::string head = c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    for (const Tensor& h : run.states()) {
      const Tensor x = h.contiguous();
      const int64_t D = x.size(x.dim() - 1), rows = x.numel() / D;
      Tensor y = Tensor::empty({rows, D}, DType::F32);
      const float* px = x.data<float>();
      float* py = y.data<float>();
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t j = 0; j < D; ++j) ss += static_cast<double>(px[r * D + j]) * px[r * D + j];
        const auto inv = static_cast<float>(1.0 / std::sqrt(ss / D + c.rms_norm_eps));
        for (int64_t j = 0; j < D; ++j) py[r * D + j] = px[r * D + j] * inv * w.data<float>()[j];
      }
      sq.add(head, y);
    }
    let_go(&sm, "model.norm.");
  }
  Imatrix out;
  out.chunk_count = static_cast<int64_t>(calib.size());
  out.chunk_size = longest;
  if (!opt.dataset.empty()) out.datasets.push_back(opt.dataset);
  // HF names -> GGUF entries; routed experts into their stacked entry (counts 0 for experts no token reached).
  for (const auto& [name, s] : sq.sums) {
    int64_t expert = -1;
    const std::string g = gguf_weight_name(name, c, &expert);
    if (g.empty()) continue;
    ImatrixEntry& e = out.entries[g];
    const int64_t mats = expert >= 0 ? c.n_routed_experts : 1;
    if (e.sums.empty()) {
      e.cols = s.cols;
      e.sums.assign(static_cast<size_t>(mats * s.cols), 0.0f);
      e.counts.assign(static_cast<size_t>(mats), 0.0f);
    }
    const int64_t at = std::max<int64_t>(expert, 0);
    for (int64_t j = 0; j < s.cols; ++j) e.sums[at * s.cols + j] = static_cast<float>(s.s[j]);
    e.counts[at] = static_cast<float>(s.n);
  }
  return out;
}

}  // namespace lmforge::quant
