// A byte-level transformer language model trained with the engine alone: embedding, RMSNorm, RoPE, causal
// attention, SwiGLU, cross-entropy, AdamW with decay groups, warmup + cosine schedule, gradient clipping and
// (optionally) activation checkpointing. It is the engine demo behind `make demo` until the model and
// training modules (issue #3) replace it with `lmforge train`.
//
//   tiny_lm --text FILE [--steps N] [--layers L] [--dim D] [--seq T] [--batch B] [--checkpoint] [--max-val-loss X]
//
// Prints one line per 25 steps and the final validation loss; exits 1 when --max-val-loss is given and not met.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lmforge/core/ops.h"
#include "lmforge/core/optim.h"

using namespace lmforge;

namespace {

struct Options {
  std::string text;
  int steps = 200, layers = 2, dim = 128, heads = 4, seq = 128, batch = 8;
  bool checkpoint = false;
  double lr = 1e-3, max_val_loss = 0;
};

struct Block {
  Var norm1, wq, wk, wv, wo, norm2, w_gate, w_up, w_down;
};

Tensor normal(const Shape& s, double std, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, static_cast<float>(std));
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& x : v) x = d(rng);
  return Tensor::from_vector(v, s);
}

struct Model {
  Options o;
  Var embed, final_norm, head;
  std::vector<Block> blocks;
  Tensor cos, sin;

  explicit Model(const Options& opt) : o(opt) {
    std::mt19937_64 rng(1);
    const int64_t D = o.dim, F = o.dim * 8 / 3 / 8 * 8;
    embed = parameter(normal({256, D}, 0.02, rng), "embed");
    final_norm = parameter(Tensor::full({D}, 1.0), "final_norm");
    head = parameter(normal({256, D}, 0.02, rng), "lm_head");
    const double out_std = 0.02 / std::sqrt(2.0 * o.layers);
    for (int l = 0; l < o.layers; ++l) {
      std::string p = "layers." + std::to_string(l) + ".";
      blocks.push_back(
          {parameter(Tensor::full({D}, 1.0), p + "norm1"), parameter(normal({D, D}, 0.02, rng), p + "wq"),
           parameter(normal({D, D}, 0.02, rng), p + "wk"), parameter(normal({D, D}, 0.02, rng), p + "wv"),
           parameter(normal({D, D}, out_std, rng), p + "wo"), parameter(Tensor::full({D}, 1.0), p + "norm2"),
           parameter(normal({F, D}, 0.02, rng), p + "w_gate"), parameter(normal({F, D}, 0.02, rng), p + "w_up"),
           parameter(normal({D, F}, out_std, rng), p + "w_down")});
    }
    std::tie(cos, sin) = ops::rope_tables(o.seq, o.dim / o.heads, 10000.0);
  }

  std::vector<Var> params() const {
    std::vector<Var> ps = {embed, final_norm, head};
    for (const Block& b : blocks)
      for (const Var& v : {b.norm1, b.wq, b.wk, b.wv, b.wo, b.norm2, b.w_gate, b.w_up, b.w_down}) ps.push_back(v);
    return ps;
  }

  Var block(const Block& b, const Var& x, int64_t B, int64_t T) const {
    const int64_t H = o.heads, hd = o.dim / o.heads;
    Var h = ops::rmsnorm(x, b.norm1, 1e-5);
    auto heads = [&](const Var& w) { return ops::reshape(ops::linear(h, w), {B, T, H, hd}); };
    Var q = ops::rope(heads(b.wq), cos, sin, kernels::cpu::RopeLayout::HalfSplit);
    Var k = ops::rope(heads(b.wk), cos, sin, kernels::cpu::RopeLayout::HalfSplit);
    Var a = ops::attention(q, k, heads(b.wv));
    Var x1 = ops::add(x, ops::linear(ops::reshape(a, {B, T, o.dim}), b.wo));
    Var h2 = ops::rmsnorm(x1, b.norm2, 1e-5);
    return ops::add(x1, ops::linear(ops::swiglu(ops::linear(h2, b.w_gate), ops::linear(h2, b.w_up)), b.w_down));
  }

  Var loss(const Tensor& inputs, const Tensor& targets) const {
    const int64_t B = inputs.size(0), T = inputs.size(1);
    Var x = ops::embedding(embed, inputs);
    for (const Block& b : blocks) {
      if (o.checkpoint) {
        // fn runs again during backward, after this frame is gone: capture by value.
        x = checkpoint([this, &b, B, T](const std::vector<Var>& in) { return std::vector<Var>{block(b, in[0], B, T)}; },
                       {x})[0];
      } else {
        x = block(b, x, B, T);
      }
    }
    Var logits = ops::linear(ops::rmsnorm(x, final_norm, 1e-5), head);
    return ops::cross_entropy(ops::reshape(logits, {B * T, 256}), targets.view({B * T}));
  }
};

void sample_batch(const std::string& data, size_t lo, size_t hi, int B, int T, std::mt19937_64& rng, Tensor& in,
                  Tensor& tgt) {
  std::vector<int32_t> x(static_cast<size_t>(B * T)), y(x.size());
  std::uniform_int_distribution<size_t> pick(lo, hi - static_cast<size_t>(T) - 2);
  for (int b = 0; b < B; ++b) {
    const size_t s = pick(rng);
    for (int t = 0; t < T; ++t) {
      x[b * T + t] = static_cast<unsigned char>(data[s + t]);
      y[b * T + t] = static_cast<unsigned char>(data[s + t + 1]);
    }
  }
  in = Tensor::from_ints(x, {B, T});
  tgt = Tensor::from_ints(y, {B, T});
}

int usage(const char* msg) {
  std::fprintf(stderr,
               "tiny_lm: %s\nusage: tiny_lm --text FILE [--steps N] [--layers L] [--dim D] [--seq T] "
               "[--batch B] [--lr X] [--checkpoint] [--max-val-loss X]\n",
               msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](const char* name) -> const char* {
      if (i + 1 >= argc) throw Error(std::string("missing value for ") + name);
      return argv[++i];
    };
    try {
      if (a == "--text")
        o.text = next("--text");
      else if (a == "--steps")
        o.steps = std::stoi(next("--steps"));
      else if (a == "--layers")
        o.layers = std::stoi(next("--layers"));
      else if (a == "--dim")
        o.dim = std::stoi(next("--dim"));
      else if (a == "--seq")
        o.seq = std::stoi(next("--seq"));
      else if (a == "--batch")
        o.batch = std::stoi(next("--batch"));
      else if (a == "--lr")
        o.lr = std::stod(next("--lr"));
      else if (a == "--max-val-loss")
        o.max_val_loss = std::stod(next("--max-val-loss"));
      else if (a == "--checkpoint")
        o.checkpoint = true;
      else
        return usage(("unknown flag " + a).c_str());
    } catch (const std::exception& e) {
      return usage((std::string("bad value for ") + a + ": " + e.what()).c_str());
    }
  }
  if (o.text.empty()) return usage("--text is required");
  if (o.steps < 1 || o.layers < 1 || o.dim % o.heads != 0 || (o.dim / o.heads) % 2 != 0 || o.seq < 2 || o.batch < 1)
    return usage("bad sizes: need steps, layers, batch >= 1, seq >= 2, dim a multiple of 4 heads of even size");
  std::ifstream f(o.text, std::ios::binary);
  if (!f) return usage(("cannot read --text " + o.text).c_str());
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string data = ss.str();
  const size_t split = data.size() * 9 / 10;
  if (split < static_cast<size_t>(o.seq) * 4 || data.size() - split < static_cast<size_t>(o.seq) * 2)
    return usage(("--text " + o.text + " is too short for --seq " + std::to_string(o.seq)).c_str());

  Model model(o);
  int64_t n_params = 0;
  for (const Var& p : model.params()) n_params += p.value().numel();
  std::printf("tiny_lm: %zu bytes of %s, %d layers x %d dim, %lld parameters, batch %d x %d, %d steps%s\n", data.size(),
              o.text.c_str(), o.layers, o.dim, static_cast<long long>(n_params), o.batch, o.seq, o.steps,
              o.checkpoint ? ", activation checkpointing" : "");
  AdamW opt(decay_groups(model.params(), 0.1), {o.lr, 0.9, 0.95, 1e-8});
  std::mt19937_64 rng(42);
  const int warmup = std::max(1, o.steps / 10);
  const auto t0 = std::chrono::steady_clock::now();
  Tensor in, tgt;
  for (int step = 1; step <= o.steps; ++step) {
    const double lr = step <= warmup
                          ? o.lr * step / warmup
                          : o.lr * (0.1 + 0.45 * (1 + std::cos(M_PI * (step - warmup) / (o.steps - warmup + 1e-9))));
    opt.set_lr(lr);
    sample_batch(data, 0, split, o.batch, o.seq, rng, in, tgt);
    Tape tape;
    Var loss;
    {
      TapeScope scope(&tape);
      loss = model.loss(in, tgt);
    }
    tape.backward(loss);
    const double norm = clip_grad_norm(model.params(), 1.0);
    opt.step();
    opt.zero_grad();
    if (step % 25 == 0 || step == 1 || step == o.steps) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("step %4d  loss %.4f  grad-norm %.3f  lr %.2e  %.0f tok/s\n", step, loss.value().item(), norm, lr,
                  step * o.batch * o.seq / secs);
      std::fflush(stdout);
    }
  }
  // Validation: mean loss over fixed held-out windows, no tape.
  std::mt19937_64 vrng(7);
  double val = 0;
  const int val_batches = 8;
  for (int i = 0; i < val_batches; ++i) {
    sample_batch(data, split, data.size(), o.batch, o.seq, vrng, in, tgt);
    val += model.loss(in, tgt).value().item() / val_batches;
  }
  std::printf("validation loss %.4f nats/byte (uniform: %.4f)\n", val, std::log(256.0));
  if (o.max_val_loss > 0 && !(val < o.max_val_loss)) {
    std::fprintf(stderr, "tiny_lm: validation loss %.4f is not below --max-val-loss %.4f\n", val, o.max_val_loss);
    return 1;
  }
  return 0;
}
