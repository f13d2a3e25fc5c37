// AWQ (Lin et al. 2023, "Activation-aware Weight Quantization"): before round-to-nearest, scale each input channel
// of a linear by s = mean|x|^alpha (so channels that carry large activations get finer steps) and fold 1/s into the
// op that produces the input, which leaves the f32 function unchanged. alpha is searched per group of linears that
// share an input, minimising the group's output error on calibration inputs; an optional per-group clipping search
// then shrinks each row's range where that lowers the output error.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "lmforge/core/error.h"
#include "lmforge/quant/methods.h"
#include "quant/calib_runner.h"

namespace lmforge::quant {

namespace {

constexpr int64_t kGroup = 128;

// Rows of X evenly subsampled to at most `max_rows`.
std::vector<float> subsample(const Captured& c, int64_t max_rows) {
  const int64_t n = c.n();
  if (n <= max_rows) return c.x;
  std::vector<float> out(static_cast<size_t>(max_rows * c.cols));
  for (int64_t i = 0; i < max_rows; ++i) {
    const int64_t r = i * n / max_rows;
    std::copy(c.x.begin() + r * c.cols, c.x.begin() + (r + 1) * c.cols, out.begin() + i * c.cols);
  }
  return out;
}

// XᵀX [cols, cols] (f32, full) of X [n, cols]: the search's error ||X Dᵀ||² is the sum over D's rows d of d XᵀX dᵀ,
// which costs rows x cols² per candidate instead of n x rows x cols (n is up to 4096 rows; q/k/v, gate/up see 1024-
// to 4096-wide inputs: 1-4x fewer operations per candidate, and the Gram matrix is made once per group).
std::vector<float> gram(const std::vector<float>& X, int64_t n, int64_t cols) {
  std::vector<float> G(static_cast<size_t>(cols * cols));
  const int c = static_cast<int>(cols);
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, c, static_cast<int>(n), 1.0f, X.data(), c, 0.0f, G.data(), c);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < i; ++j) G[i * cols + j] = G[j * cols + i];
  return G;
}

// ||X (A - B)ᵀ||² for A and B [rows, cols], from G = XᵀX.
double output_error(const std::vector<float>& G, const Tensor& A, const Tensor& B) {
  const int64_t rows = A.size(0), cols = A.size(1);
  std::vector<float> D(static_cast<size_t>(rows * cols)), E(D.size());
  const float* a = A.data<float>();
  const float* b = B.data<float>();
  for (size_t i = 0; i < D.size(); ++i) D[i] = a[i] - b[i];
  const int c = static_cast<int>(cols);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), c, c, 1.0f, D.data(), c, G.data(), c,
              0.0f, E.data(), c);
  double e = 0;
  for (size_t i = 0; i < D.size(); ++i) e += static_cast<double>(D[i]) * E[i];
  return e;
}

Tensor scale_columns(const Tensor& w, const std::vector<double>& s, bool inverse) {
  Tensor out = w.clone();
  float* p = out.data<float>();
  const int64_t rows = w.size(0), cols = w.size(1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      p[r * cols + c] = static_cast<float>(inverse ? p[r * cols + c] / s[c] : p[r * cols + c] * s[c]);
  return out;
}

Tensor fake_quant(const Tensor& w, WeightFormat f) {
  return WeightMatrix::quantize(w, f).dequantize();
}

struct ScaleGroup {
  std::string prev;  // norm weight [cols] or previous linear [cols, *] (rows scaled)
  bool prev_is_norm = true;
  std::vector<std::string> linears;  // share the input
};

// Per row and group of 128, the clipping ratio in {1, 0.95, ..., 0.5} of the row-group's max |w| that minimises
// that group's output error on the calibration inputs, d G_g dᵀ with d the row-group's rounding error and G_g the
// group's 128 x 128 block of the inputs' Gram matrix G [cols, cols]; applied by clamping w in place. Each ratio is
// tried on a whole column group at once: one quantization and one product for every row.
void clip_search(Tensor& w, const std::vector<float>& G, WeightFormat f) {
  const int64_t rows = w.size(0), cols = w.size(1);
  float* p = w.data<float>();
  std::vector<float> Gg(static_cast<size_t>(kGroup * kGroup)), amax(static_cast<size_t>(rows));
  std::vector<float> best_ratio(static_cast<size_t>(rows)), D(static_cast<size_t>(rows * kGroup)), E(D.size());
  std::vector<double> best(static_cast<size_t>(rows));
  Tensor cand = Tensor::empty({rows, kGroup});
  for (int64_t g = 0; g < cols / kGroup; ++g) {
    for (int64_t i = 0; i < kGroup; ++i)
      std::copy_n(G.data() + (g * kGroup + i) * cols + g * kGroup, kGroup, Gg.data() + i * kGroup);
    for (int64_t r = 0; r < rows; ++r) {
      const float* wg = p + r * cols + g * kGroup;
      amax[r] = 0;
      for (int64_t j = 0; j < kGroup; ++j) amax[r] = std::max(amax[r], std::fabs(wg[j]));
      best[r] = -1;
      best_ratio[r] = 1.0f;
    }
    for (int step = 0; step <= 10; ++step) {
      const float ratio = 1.0f - 0.05f * static_cast<float>(step);
      float* c = cand.data<float>();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < kGroup; ++j)
          c[r * kGroup + j] = std::clamp(p[r * cols + g * kGroup + j], -ratio * amax[r], ratio * amax[r]);
      const Tensor q = fake_quant(cand, f);
      const float* qp = q.data<float>();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < kGroup; ++j) D[r * kGroup + j] = p[r * cols + g * kGroup + j] - qp[r * kGroup + j];
      const int k = static_cast<int>(kGroup);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), k, k, 1.0f, D.data(), k, Gg.data(),
                  k, 0.0f, E.data(), k);
      for (int64_t r = 0; r < rows; ++r) {
        double err = 0;
        for (int64_t j = 0; j < kGroup; ++j) err += static_cast<double>(D[r * kGroup + j]) * E[r * kGroup + j];
        if (amax[r] > 0 && (best[r] < 0 || err < best[r])) {
          best[r] = err;
          best_ratio[r] = ratio;
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      float* wg = p + r * cols + g * kGroup;
      const float lim = best_ratio[r] * amax[r];
      for (int64_t j = 0; j < kGroup; ++j) wg[j] = std::clamp(wg[j], -lim, lim);
    }
  }
}

// AWQ over m's layers; `stream`: where m's weights come from a part at a time (null: all in memory).
QuantizedWeights awq_model(model::CausalLM& m, StreamedModel* stream, QuantConfig q, const std::vector<Tensor>& calib,
                           const AwqOptions& opt, const Log& log) {
  LMF_CHECK(q.format == WeightFormat::Q4_G128 || q.format == WeightFormat::Q4_G128_ASYM,
            "awq: format must be q4_g128 or q4_g128_asym");
  const model::ModelConfig& c = m.config();
  std::vector<std::vector<ScaleGroup>> layer_groups(static_cast<size_t>(c.num_hidden_layers));
  int64_t last = -1;  // the last layer with a group: the calibration runs no further
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<ScaleGroup>& groups = layer_groups[l];
    if (!c.is_deepseek() && !c.is_moe_layer(l)) {
      const std::string a = p + "self_attn.", f = p + "mlp.";
      groups.push_back(
          {p + "input_layernorm.weight", true, {a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"}});
      // o's input channels are v's output rows only without grouped-query sharing (AutoAWQ's condition too).
      if (c.num_key_value_heads == c.num_attention_heads && !c.attention_bias)
        groups.push_back({a + "v_proj.weight", false, {a + "o_proj.weight"}});
      groups.push_back({p + "post_attention_layernorm.weight", true, {f + "gate_proj.weight", f + "up_proj.weight"}});
      groups.push_back({f + "up_proj.weight", false, {f + "down_proj.weight"}});
    }
    if (!groups.empty()) last = l;
  }
  QuantizedWeights out;
  out.config = c;
  out.quantized = true;
  out.quant = q;
  nlohmann::json alphas = nlohmann::json::array();
  std::optional<LayerwiseRunner> run;
  bring_in(stream, "model.embed_tokens.");
  rtn_part(out, m, "model.embed_tokens.");
  if (last >= 0) run.emplace(m, calib);
  let_go(stream, "model.embed_tokens.");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::vector<ScaleGroup>& groups = layer_groups[l];
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    bring_in(stream, prefix);
    // One capture per group: its input changes once the previous group's scales are folded in.
    nlohmann::json layer_alpha = nlohmann::json::object();
    for (const ScaleGroup& g : groups) {
      InputCollector col(g.linears[0]);
      run->observe(col.observer());
      std::map<std::string, Captured> cap = col.take();
      auto it = cap.find(g.linears[0]);
      if (it == cap.end() || it->second.n() == 0) continue;
      const Captured& X = it->second;
      const std::vector<float> Xs = subsample(X, opt.max_rows);
      const int64_t n = static_cast<int64_t>(Xs.size()) / X.cols;
      const std::vector<double> mean = X.mean_abs();
      std::vector<Tensor> W;
      for (const std::string& name : g.linears) W.push_back(parameter_tensor(m, name).clone());
      bool ok = true;
      for (const Tensor& w : W) ok = ok && w.size(1) % kGroup == 0;
      if (!ok) continue;
      const std::vector<float> G = gram(Xs, n, X.cols);
      double best = -1, best_alpha = 0;
      std::vector<double> best_s(mean.size(), 1.0);
      for (int k = 0; k <= opt.grid; ++k) {
        const double alpha = static_cast<double>(k) / opt.grid;
        std::vector<double> s(mean.size());
        double mx = 0, mn = 1e300;
        for (size_t i = 0; i < s.size(); ++i) {
          s[i] = std::pow(std::max(mean[i], 1e-4), alpha);
          mx = std::max(mx, s[i]);
          mn = std::min(mn, s[i]);
        }
        const double norm = std::sqrt(mx * mn);  // AWQ normalises s around 1
        for (double& v : s) v /= norm;
        double err = 0;
        for (const Tensor& w : W)
          err += output_error(G, w, scale_columns(fake_quant(scale_columns(w, s, false), q.format), s, true));
        if (best < 0 || err < best) {
          best = err;
          best_alpha = alpha;
          best_s = s;
        }
      }
      layer_alpha[g.linears[0]] = best_alpha;
      // Fold: linears' columns times s, the producer divided by s (norm weights, or the previous linear's rows).
      for (size_t i = 0; i < W.size(); ++i) set_parameter(m, g.linears[i], scale_columns(W[i], best_s, false));
      Tensor prev = parameter_tensor(m, g.prev).clone();
      float* pp = prev.data<float>();
      const int64_t inner = g.prev_is_norm ? 1 : prev.size(1);
      for (size_t ch = 0; ch < best_s.size(); ++ch)
        for (int64_t j = 0; j < inner; ++j) pp[ch * inner + j] = static_cast<float>(pp[ch * inner + j] / best_s[ch]);
      set_parameter(m, g.prev, prev);
      if (opt.clip_search) {
        // The Gram matrix of the inputs as the scaled linears now see them, x / s: G_ij / (s_i s_j).
        std::vector<float> Gs(G.size());
        for (int64_t i = 0; i < X.cols; ++i)
          for (int64_t j = 0; j < X.cols; ++j)
            Gs[i * X.cols + j] = static_cast<float>(G[i * X.cols + j] / (best_s[i] * best_s[j]));
        for (const std::string& name : g.linears) {
          Tensor w = parameter_tensor(m, name).clone();
          clip_search(w, Gs, q.format);
          set_parameter(m, name, w);
        }
      }
    }
    alphas.push_back(layer_alpha);
    rtn_part(out, m, prefix);  // the layer's weights as scaled and clipped
    if (l < last) run->advance();
    let_go(stream, prefix);
    if (log) log("awq: layer " + std::to_string(l + 1) + "/" + std::to_string(c.num_hidden_layers) + " done");
  }
  rtn_head(out, m, stream);
  out.quant.method = "awq";
  out.quant.extra = {{"grid", opt.grid}, {"clip_search", opt.clip_search}, {"alpha", alphas}};
  if (c.is_deepseek()) out.quant.extra["note"] = "deepseek_v3 layers: no AWQ scaling implemented (round-to-nearest)";
  return out;
}

}  // namespace

QuantizedWeights quantize_awq(model::CausalLM& m, QuantConfig q, const std::vector<Tensor>& calib,
                              const AwqOptions& opt, const Log& log) {
  return awq_model(m, nullptr, std::move(q), calib, opt, log);
}

QuantizedWeights quantize_awq_dir(const std::string& dir, QuantConfig q, const std::vector<Tensor>& calib,
                                  const AwqOptions& opt, const Log& log, size_t* bytes_in) {
  StreamedModel sm(dir);
  if (bytes_in) *bytes_in = sm.bytes();
  return awq_model(sm.model(), &sm, std::move(q), calib, opt, log);
}

}  // namespace lmforge::quant
