// Engine construction from named weights, sequences, and the decoder loop over a batch of rows.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "lmforge/core/error.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/model/rope.h"
#include "model/engine_impl.h"

namespace lmforge::model {

namespace fs = std::filesystem;

namespace {

void check_kv_dtype(DType kv) {
  LMF_CHECK(kv == DType::F32 || kv == DType::F16, "engine: KV cache type must be f32 or f16 (got ", dtype_name(kv),
            ")");
}

struct Loader {
  EngineWeights& w;  // entries are erased as they are taken, so a fused copy can replace them without a second model
  const std::string& source;
  mutable std::set<std::string> used;

  // Every tensor must be one the config asks for, as CausalLM::load_weights requires, except rotary inv_freq
  // buffers and layers past num_hidden_layers (DeepSeek-V3's multi-token-prediction layer).
  void check_all_used(const ModelConfig& c) const {
    auto check = [&](const std::string& name) {
      if (used.count(name) || CausalLM::skippable_extra_tensor(name, c)) return;
      LMF_CHECK(false, source, ": unexpected tensor '", name, "' (not part of a ", c.model_type,
                " model with this config)");
    };
    for (const auto& [name, m] : w.matrices) check(name);
    for (const auto& [name, t] : w.tensors) check(name);
  }

  WeightMatrix mat(const std::string& name, int64_t rows, int64_t cols) const {
    WeightMatrix m;
    used.insert(name);
    if (auto it = w.matrices.find(name); it != w.matrices.end()) {
      m = it->second;
      w.matrices.erase(it);
    } else if (auto jt = w.tensors.find(name); jt != w.tensors.end()) {
      LMF_CHECK(jt->second.dim() == 2, source, ": tensor '", name, "' must be 2-D, got ", jt->second.str());
      m = WeightMatrix::quantize(jt->second.to(DType::F32).contiguous(), WeightFormat::F32);
      w.tensors.erase(jt);
    } else {
      LMF_CHECK(false, source, ": tensor '", name, "' is missing (the config expects it)");
    }
    LMF_CHECK(m.rows() == rows && m.cols() == cols, source, ": tensor '", name, "' is [", m.rows(), ", ", m.cols(),
              "], the config expects [", rows, ", ", cols, "]");
    return m;
  }
  std::vector<float> vec(const std::string& name, int64_t n) const {
    used.insert(name);
    auto it = w.tensors.find(name);
    LMF_CHECK(it != w.tensors.end(), source, ": tensor '", name, "' is missing (the config expects it)");
    LMF_CHECK(it->second.numel() == n && it->second.dim() == 1, source, ": tensor '", name, "' has shape ",
              shape_str(it->second.shape()), ", the config expects [", n, "]");
    const Tensor t = it->second.to(DType::F32).contiguous();
    std::vector<float> out(t.data<float>(), t.data<float>() + n);
    w.tensors.erase(it);
    return out;
  }
  EngineMlp mlp(const std::string& p, int64_t D, int64_t F) const {
    return {mat(p + "gate_proj.weight", F, D), mat(p + "up_proj.weight", F, D), mat(p + "down_proj.weight", D, F), {}};
  }
};

}  // namespace

Engine::Engine(ModelConfig config, EngineWeights weights, EngineOptions opt, const std::string& source)
    : impl_(std::make_unique<Impl>()) {
  const HugePageScope huge;  // fused and interleaved weights: streamed every token
  Impl& m = *impl_;
  m.c = std::move(config);
  m.opt = opt;
  check_kv_dtype(opt.kv_dtype);
  const ModelConfig& c = m.c;
  const Loader ld{weights, source.empty() ? std::string("engine weights") : source, {}};
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  m.embed = ld.mat("model.embed_tokens.weight", c.vocab_size, D);
  m.lm_head = c.tie_word_embeddings ? m.embed : ld.mat("lm_head.weight", c.vocab_size, D);
  if (c.tie_word_embeddings) ld.used.insert("lm_head.weight");  // some tied checkpoints still carry a copy
  m.final_norm = ld.vec("model.norm.weight", D);
  m.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    EngineLayer& L = m.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".", a = p + "self_attn.";
    L.input_norm = ld.vec(p + "input_layernorm.weight", D);
    L.post_norm = ld.vec(p + "post_attention_layernorm.weight", D);
    L.window = c.is_sliding_layer(l) ? c.sliding_window : 0;
    if (c.is_deepseek()) {
      const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim, r = c.kv_lora_rank;
      if (c.q_lora_rank > 0) {
        L.q_a = ld.mat(a + "q_a_proj.weight", c.q_lora_rank, D);
        L.q_a_norm = ld.vec(a + "q_a_layernorm.weight", c.q_lora_rank);
        L.q_b = ld.mat(a + "q_b_proj.weight", H * (nope + rope), c.q_lora_rank);
      } else {
        L.q = ld.mat(a + "q_proj.weight", H * (nope + rope), D);
      }
      L.kv_a = ld.mat(a + "kv_a_proj_with_mqa.weight", r + rope, D);
      L.kv_a_norm = ld.vec(a + "kv_a_layernorm.weight", r);
      L.kv_b = ld.mat(a + "kv_b_proj.weight", H * (nope + vd), r);
      L.o = ld.mat(a + "o_proj.weight", D, H * vd);
      // The absorbed matrices are f32 whatever kv_b's format: they are small (2 x heads x rank x head dims).
      const Tensor kvb = L.kv_b.dequantize();
      const float* w = kvb.data<float>();
      for (int64_t h = 0; h < H; ++h) {
        Tensor ukt = Tensor::empty({r, nope}), uv = Tensor::empty({vd, r});
        const float* rows = w + h * (nope + vd) * r;
        for (int64_t i = 0; i < nope; ++i)
          for (int64_t j = 0; j < r; ++j) ukt.data<float>()[j * nope + i] = rows[i * r + j];
        std::memcpy(uv.data<float>(), rows + nope * r, sizeof(float) * static_cast<size_t>(vd * r));
        if (nope > 0) L.uk_t.push_back(WeightMatrix::quantize(ukt, WeightFormat::F32));
        L.uv.push_back(WeightMatrix::quantize(uv, WeightFormat::F32));
      }
    } else {
      const int64_t hd = c.head_dim, Hkv = c.num_key_value_heads;
      L.q = ld.mat(a + "q_proj.weight", H * hd, D);
      L.k = ld.mat(a + "k_proj.weight", Hkv * hd, D);
      L.v = ld.mat(a + "v_proj.weight", Hkv * hd, D);
      L.o = ld.mat(a + "o_proj.weight", D, H * hd);
      if (c.attention_bias) {
        L.q_bias = ld.vec(a + "q_proj.bias", H * hd);
        L.k_bias = ld.vec(a + "k_proj.bias", Hkv * hd);
        L.v_bias = ld.vec(a + "v_proj.bias", Hkv * hd);
      }
      if (c.o_proj_bias) L.o_bias = ld.vec(a + "o_proj.bias", D);
    }
    if (c.is_moe_layer(l)) {
      L.moe = true;
      L.router = ld.mat(p + "mlp.gate.weight", c.n_routed_experts, D);
      if (c.topk_method == "noaux_tc") {
        const std::vector<float> b = ld.vec(p + "mlp.gate.e_score_correction_bias", c.n_routed_experts);
        L.expert_bias = Tensor::from_vector(b, {c.n_routed_experts});
      }
      for (int64_t e = 0; e < c.n_routed_experts; ++e)
        L.experts.push_back(ld.mlp(p + "mlp.experts." + std::to_string(e) + ".", D, c.moe_intermediate_size));
      if (c.n_shared_experts > 0)
        L.shared = ld.mlp(p + "mlp.shared_experts.", D, c.moe_intermediate_size * c.n_shared_experts);
    } else {
      L.mlp = ld.mlp(p + "mlp.", D, c.intermediate_size);
    }
  }
  ld.check_all_used(c);
  if (opt.fuse) {
    auto fuse_mlp = [](EngineMlp& e) {
      if (!e.gate.defined() || e.gate.format() != e.up.format()) return;
      e.gate_up = WeightMatrix::concat_rows({e.gate, e.up});
      e.gate = e.up = WeightMatrix();
    };
    for (EngineLayer& L : m.layers) {
      if (L.q.defined() && L.k.defined() && L.q.format() == L.k.format() && L.k.format() == L.v.format()) {
        L.qkv = WeightMatrix::concat_rows({L.q, L.k, L.v});
        L.q = L.k = L.v = WeightMatrix();
      }
      if (L.mlp.defined()) fuse_mlp(L.mlp);
      for (EngineMlp& e : L.experts) fuse_mlp(e);
      if (L.shared.defined()) fuse_mlp(L.shared);
      // The parts just replaced went to the allocator's block cache, sized for them and not for the next layer's
      // stacked matrices: hand them back so fusing costs one layer's worth of memory, not the model's.
      Storage::release_cached_blocks();
    }
  }
  if (opt.interleave) {  // after fusing: concat_rows stacks the GGUF layout
    const auto repack = [](WeightMatrix& w) {
      if (w.defined()) w = w.interleave_rows4();
    };
    const auto repack_mlp = [&](EngineMlp& e) {
      for (WeightMatrix* w : {&e.gate, &e.up, &e.down, &e.gate_up}) repack(*w);
    };
    for (EngineLayer& L : m.layers) {
      for (WeightMatrix* w : {&L.q, &L.k, &L.v, &L.o, &L.qkv, &L.q_a, &L.q_b, &L.kv_a, &L.kv_b, &L.router}) repack(*w);
      repack_mlp(L.mlp);
      for (EngineMlp& e : L.experts) repack_mlp(e);
      repack_mlp(L.shared);
      Storage::release_cached_blocks();  // as above: one matrix's worth of memory at a time
    }
    repack(m.lm_head);
    if (c.tie_word_embeddings) m.embed = m.lm_head;  // lookups read either layout
    Storage::release_cached_blocks();
  }
  m.rot = c.is_deepseek() ? c.qk_rope_head_dim : c.head_dim;
  std::tie(m.rope_cos, m.rope_sin) = rope_tables(c, m.rot, c.max_position_embeddings, 0);
}

Engine Engine::from_model(const CausalLM& m, EngineOptions opt) {
  EngineWeights w;
  for (auto& [name, t] : m.state()) w.tensors.emplace(name, t);
  return Engine(m.config(), w, opt, "model");
}

// Reads the safetensors directly (not through CausalLM). f32 weights are copied out of the file mapping into
// anonymous memory: decode read them 1.3-1.6x faster there than through the private file mapping (infer-250m,
// 1 thread, 4 alternating runs: 8.5-8.9 vs 5.3-6.6 tok/s). Each tensor's file pages are dropped once it is copied, so
// the peak is the copy plus one tensor, not the copy plus the file. LMFORGE_ENGINE_MMAP=1 keeps views of the mapping
// instead.
Engine Engine::load(const std::string& dir, EngineOptions opt) {
  LMF_CHECK(fs::is_directory(dir), dir, ": not a model directory");
  const fs::path cfg_path = fs::path(dir) / "config.json";
  LMF_CHECK(fs::exists(cfg_path), dir, ": no config.json in the model directory");
  ModelConfig cfg = load_model_config(cfg_path.string());
  std::string source;
  const std::vector<std::string> files = io::model_weight_files(dir, source);
  EngineWeights w;
  const HugePageScope huge;  // the copies below are the weights decode streams
  const char* env = std::getenv("LMFORGE_ENGINE_MMAP");
  const bool copy = !(env && std::string(env) == "1");
  for (const std::string& f : files) {
    const io::SafetensorsFile st = io::SafetensorsFile::open(f);
    for (const std::string& name : st.names()) {
      const Tensor t = st.get(name);
      LMF_CHECK(is_floating(t.dtype()), f, ": tensor '", name, "' has dtype ", dtype_name(t.dtype()),
                ", expected a floating-point type");
      if ((t.dtype() == DType::BF16 || t.dtype() == DType::F16) && t.dim() == 2 && t.numel() > 0) {
        // A bf16 / f16 checkpoint's matrices stay in their format: half the memory of an f32 copy and half the
        // bytes each decode step streams; the products widen every weight to f32 exactly, so the values multiplied
        // are those of the f32 copy.
        const WeightFormat wf = t.dtype() == DType::BF16 ? WeightFormat::BF16 : WeightFormat::F16;
        w.matrices.emplace(name, WeightMatrix::from_parts(wf, t.size(0), t.size(1), t.contiguous().clone(), {}, {},
                                                          f + ": tensor '" + name + "'"));
        st.drop_pages(name);
        continue;
      }
      const bool view = t.dtype() == DType::F32 && t.is_contiguous() && !copy;
      w.tensors.emplace(name, view ? t : t.dtype() == DType::F32 ? t.clone() : t.to(DType::F32).contiguous());
      if (!view) st.drop_pages(name);  // copied: do not hold the file's pages and the copy at once
    }
  }
  return Engine(std::move(cfg), std::move(w), opt, source);
}

Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

const ModelConfig& Engine::config() const {
  return impl_->c;
}
EngineOptions& Engine::options() {
  return impl_->opt;
}

Sequence& Engine::Impl::seq(SeqId id) {
  auto it = seqs.find(id);
  LMF_CHECK(it != seqs.end(), "engine: no sequence ", id);
  return it->second;
}

SeqId Engine::add_sequence() {
  const DType kv = impl_->opt.kv_dtype;  // options() may have changed since construction
  check_kv_dtype(kv);
  const SeqId id = impl_->next_id++;
  Sequence& s = impl_->seqs[id];
  s.half = kv == DType::F16;
  s.layers.resize(impl_->layers.size());
  return id;
}
void Engine::free_sequence(SeqId id) {
  impl_->seq(id);
  impl_->seqs.erase(id);
}
SeqId Engine::fork_sequence(SeqId id) {
  Sequence copy = impl_->seq(id);  // before the insertion below, which may rehash
  const SeqId fresh = impl_->next_id++;
  impl_->seqs.emplace(fresh, std::move(copy));
  return fresh;
}
void Engine::reset_sequence(SeqId id) {
  impl_->seq(id).len = 0;
}
int64_t Engine::length(SeqId id) const {
  return impl_->seq(id).len;
}
size_t Engine::num_sequences() const {
  return impl_->seqs.size();
}

size_t Engine::cache_bytes(SeqId id) const {
  const Sequence& s = impl_->seq(id);
  const ModelConfig& c = impl_->c;
  size_t n = 0;
  for (size_t l = 0; l < s.layers.size(); ++l) {
    const int64_t w = impl_->layers[l].window;
    const int64_t rows = w > 0 ? std::min(w, s.len) : s.len;
    const int64_t row = c.is_deepseek() ? c.kv_lora_rank + c.qk_rope_head_dim : 2 * c.num_key_value_heads * c.head_dim;
    n += static_cast<size_t>(rows * row) * (s.half ? 2 : sizeof(float));
  }
  return n;
}

namespace {

// Every weight matrix one token passes through, with the share of tokens that use it (a routed expert: k / E).
// absorbed: MLA layers as decode reads them, the per-head absorbed matrices instead of kv_b.
template <typename F>
void for_each_product(const Engine::Impl& m, bool absorbed, F&& f) {
  const ModelConfig& c = m.c;
  auto visit = [&f](const WeightMatrix& w, double share) {
    if (w.defined()) f(w, share);
  };
  auto mlp = [&visit](const EngineMlp& e, double share) {
    for (const WeightMatrix* w : {&e.gate, &e.up, &e.gate_up, &e.down}) visit(*w, share);
  };
  const double expert_share = c.n_routed_experts > 0
                                  ? static_cast<double>(c.num_experts_per_tok) / static_cast<double>(c.n_routed_experts)
                                  : 0.0;
  for (const EngineLayer& L : m.layers) {
    for (const WeightMatrix* w : {&L.q, &L.k, &L.v, &L.qkv, &L.o, &L.q_a, &L.q_b, &L.kv_a}) visit(*w, 1.0);
    if (c.is_deepseek() && absorbed) {
      for (const WeightMatrix& w : L.uk_t) visit(w, 1.0);
      for (const WeightMatrix& w : L.uv) visit(w, 1.0);
    } else {
      visit(L.kv_b, 1.0);
    }
    if (L.moe) {
      visit(L.router, 1.0);
      for (const EngineMlp& e : L.experts) mlp(e, expert_share);
      if (L.shared.defined()) mlp(L.shared, 1.0);
    } else {
      mlp(L.mlp, 1.0);
    }
  }
}

}  // namespace

std::map<WeightFormat, double> Engine::weight_bytes_by_format() const {
  const Impl& m = *impl_;
  // The products' weights plus one embedding row and the LM head.
  std::map<WeightFormat, double> b;
  b[m.embed.format()] += static_cast<double>(m.embed.nbytes()) / static_cast<double>(m.c.vocab_size);
  b[m.lm_head.format()] += static_cast<double>(m.lm_head.nbytes());
  for_each_product(m, m.opt.mla_absorb, [&b](const WeightMatrix& w, double share) {
    b[w.format()] += share * static_cast<double>(w.nbytes());
  });
  return b;
}

double Engine::weight_bytes_per_token() const {
  double total = 0;
  for (const auto& [f, bytes] : weight_bytes_by_format()) total += bytes;
  return total;
}

double Engine::matmul_flops_per_token() const {
  double f = 0;
  for_each_product(*impl_, false, [&f](const WeightMatrix& w, double share) {
    f += 2.0 * share * static_cast<double>(w.rows()) * static_cast<double>(w.cols());
  });
  return f;
}

double Engine::lm_head_flops() const {
  return 2.0 * static_cast<double>(impl_->lm_head.rows()) * static_cast<double>(impl_->lm_head.cols());
}

Tensor Engine::Impl::run(const std::vector<int32_t>& ids, std::vector<Segment>& segs,
                         const std::vector<int64_t>& out_rows) {
  const int64_t N = static_cast<int64_t>(ids.size()), D = c.hidden_size;
  std::vector<float> x(static_cast<size_t>(N * D)), h(x.size()), y(x.size()), rstd(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) embed.dequantize_rows(ids[i], ids[i] + 1, x.data() + i * D);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const EngineLayer& L = layers[l];
    kernels::cpu::rmsnorm(x.data(), L.input_norm.data(), h.data(), rstd.data(), N, D, c.rms_norm_eps);
    attention(l, h.data(), N, segs, y.data());
    kernels::cpu::add(x.data(), y.data(), x.data(), N * D);
    kernels::cpu::rmsnorm(x.data(), L.post_norm.data(), h.data(), rstd.data(), N, D, c.rms_norm_eps);
    ffn(l, h.data(), N, y.data());
    kernels::cpu::add(x.data(), y.data(), x.data(), N * D);
  }
  for (Segment& s : segs) s.seq->len = std::max(s.seq->len, s.pos0 + s.n);
  const auto M = static_cast<int64_t>(out_rows.size());
  std::vector<float> sel(static_cast<size_t>(M * D));
  for (int64_t i = 0; i < M; ++i)
    std::memcpy(sel.data() + i * D, x.data() + out_rows[i] * D, sizeof(float) * static_cast<size_t>(D));
  kernels::cpu::rmsnorm(sel.data(), final_norm.data(), sel.data(), rstd.data(), M, D, c.rms_norm_eps);
  Tensor logits = Tensor::empty({M, c.vocab_size});
  weight_matmul(lm_head, sel.data(), M, logits.data<float>());
  return logits;
}

namespace {

void check_ids(const ModelConfig& c, std::span<const int32_t> ids) {
  for (int32_t id : ids)
    LMF_CHECK(id >= 0 && id < c.vocab_size, "engine: token id ", id, " is outside the vocabulary (", c.vocab_size, ")");
}

}  // namespace

Tensor Engine::prefill(SeqId id, std::span<const int32_t> tokens, bool all_logits) {
  Impl& m = *impl_;
  Sequence& s = m.seq(id);
  const auto T = static_cast<int64_t>(tokens.size());
  LMF_CHECK(T > 0, "engine: prefill with no tokens");
  LMF_CHECK(s.len + T <= m.c.max_position_embeddings, "engine: sequence of ", s.len + T,
            " tokens exceeds the context (max_position_embeddings ", m.c.max_position_embeddings, ")");
  check_ids(m.c, tokens);
  std::vector<Segment> segs{{&s, 0, T, s.len}};
  std::vector<int64_t> out;
  if (all_logits) {
    for (int64_t i = 0; i < T; ++i) out.push_back(i);
  } else {
    out.push_back(T - 1);
  }
  return m.run(std::vector<int32_t>(tokens.begin(), tokens.end()), segs, out);
}

Tensor Engine::decode(const std::vector<SeqId>& ids, const std::vector<int32_t>& tokens) {
  Impl& m = *impl_;
  LMF_CHECK(ids.size() == tokens.size() && !ids.empty(), "engine: decode takes one token per sequence (", ids.size(),
            " sequences, ", tokens.size(), " tokens)");
  check_ids(m.c, tokens);
  std::vector<Segment> segs;
  std::vector<int64_t> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    Sequence& s = m.seq(ids[i]);
    for (const Segment& g : segs) LMF_CHECK(g.seq != &s, "engine: sequence ", ids[i], " appears twice in a decode");
    LMF_CHECK(s.len + 1 <= m.c.max_position_embeddings, "engine: sequence ", ids[i],
              " is at the context limit (max_position_embeddings ", m.c.max_position_embeddings, ")");
    segs.push_back({&s, static_cast<int64_t>(i), 1, s.len});
    out.push_back(static_cast<int64_t>(i));
  }
  return m.run(tokens, segs, out);
}

void rope_rows(const Engine::Impl& m, const std::vector<int64_t>& pos, std::vector<float>& cos,
               std::vector<float>& sin) {
  const int64_t half = m.rot / 2;
  cos.resize(pos.size() * static_cast<size_t>(half));
  sin.resize(cos.size());
  for (size_t i = 0; i < pos.size(); ++i) {
    std::memcpy(cos.data() + i * half, m.rope_cos.data<float>() + pos[i] * half, sizeof(float) * half);
    std::memcpy(sin.data() + i * half, m.rope_sin.data<float>() + pos[i] * half, sizeof(float) * half);
  }
}

}  // namespace lmforge::model
