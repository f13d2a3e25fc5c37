// PyTorch parity: our ops and optimizers against reference outputs stored by tests/reference/gen_ops.py
// (tests/reference/fixtures/*.safetensors). DESIGN.md section 6 tolerances: fp32 forward within 1e-4 relative
// (||ours - ref|| / ||ref||), gradients within 1e-3. When Debian's PyTorch is installed, the fixtures are also
// regenerated and compared with the committed ones.
//
// Every op case "<case>" in ops.safetensors holds its inputs "<case>.<input>", a cotangent "<case>.R", the output
// "<case>.out" and the gradients of sum(out * R) as "<case>.grad.<input>". Scalar settings (eps, window, ...)
// appear both here and in the script.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "lmforge/core/ops.h"
#include "lmforge/core/optim.h"
#include "lmforge/io/safetensors.h"

namespace lmforge {
namespace {

namespace fs = std::filesystem;
namespace k = kernels::cpu;

constexpr double kForwardTol = 1e-4;
constexpr double kGradTol = 1e-3;
constexpr double kRegenTol = 1e-6;

const std::string kFixtureDir = LMFORGE_SOURCE_DIR "/tests/reference/fixtures";
const std::string kScript = LMFORGE_SOURCE_DIR "/tests/reference/gen_ops.py";
const char* const kPython = "/usr/bin/python3";

using Tensors = std::map<std::string, Tensor>;

const Tensors& fixture(const std::string& file) {
  static std::map<std::string, Tensors> cache;
  auto it = cache.find(file);
  if (it == cache.end()) it = cache.emplace(file, io::load_safetensors(kFixtureDir + "/" + file)).first;
  return it->second;
}

const Tensor& get(const Tensors& t, const std::string& name) {
  auto it = t.find(name);
  if (it == t.end()) throw Error("reference fixture has no tensor " + name + " (regenerate: see tests/reference)");
  return it->second;
}

// ||a - ref|| / ||ref|| (the plain norm of the difference when ref is zero); shapes must agree.
double rel_err(const Tensor& a, const Tensor& ref) {
  EXPECT_EQ(shape_str(a.shape()), shape_str(ref.shape()));
  if (a.numel() != ref.numel()) return INFINITY;
  auto x = a.to_double_vector(), y = ref.to_double_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Worst errors over all cases, printed at the end of the program for the record.
struct Worst {
  std::map<std::string, double> err;  // "<op> out" / "<op> grad" -> max relative error
  ~Worst() {
    if (err.empty()) return;
    std::printf("[reference] max relative errors vs PyTorch:\n");
    for (const auto& [k, v] : err) std::printf("[reference]   %-28s %.3e\n", k.c_str(), v);
  }
  void add(const std::string& key, double e) {
    double& w = err[key];
    w = std::max(w, e);
  }
};
Worst& worst() {
  static Worst w;
  return w;
}

std::string op_of(const std::string& case_name) {
  return case_name.substr(0, case_name.find('.'));
}

// One op case: inputs from the fixture become Vars (float inputs with gradients), the op's output is compared
// with "<case>.out", then backward is seeded with "<case>.R" and each input's gradient compared with
// "<case>.grad.<input>". Every stored gradient must be checked.
class Case {
 public:
  explicit Case(std::string name) : name_(std::move(name)), scope_(&tape_) {}

  // A float input as a differentiable parameter (a private copy of the fixture tensor).
  Var var(const std::string& input) {
    Var v = parameter(get(ops(), name_ + "." + input).clone(), input);
    vars_.emplace_back(input, v);
    return v;
  }
  // An integer (or non-differentiable) input as stored.
  Tensor raw(const std::string& input) const { return get(ops(), name_ + "." + input); }

  void check(const Var& out) {
    SCOPED_TRACE(name_);
    const double fe = rel_err(out.value(), get(ops(), name_ + ".out"));
    EXPECT_LE(fe, kForwardTol) << name_ << ": forward differs from PyTorch";
    std::string line = "out " + fmt(fe);
    worst().add(op_of(name_) + " out", fe);

    {
      TapeScope none(nullptr);  // backward does not record
      tape_.backward(out, get(ops(), name_ + ".R").clone());
    }
    std::set<std::string> checked;
    for (const auto& [input, v] : vars_) {
      const std::string gname = name_ + ".grad." + input;
      ASSERT_TRUE(ops().count(gname)) << "fixture lacks " << gname;
      ASSERT_TRUE(v.grad().defined()) << name_ << ": input " << input << " received no gradient";
      const double ge = rel_err(v.grad(), get(ops(), gname));
      EXPECT_LE(ge, kGradTol) << name_ << ": gradient of " << input << " differs from PyTorch";
      worst().add(op_of(name_) + " grad", ge);
      line += "  grad." + input + " " + fmt(ge);
      checked.insert(gname);
    }
    const std::string prefix = name_ + ".grad.";
    for (auto it = ops().lower_bound(prefix); it != ops().end() && it->first.rfind(prefix, 0) == 0; ++it)
      EXPECT_TRUE(checked.count(it->first)) << "stored gradient " << it->first << " was not checked";
    std::printf("[reference] %-30s %s\n", name_.c_str(), line.c_str());
  }

 private:
  static const Tensors& ops() { return fixture("ops.safetensors"); }
  static std::string fmt(double e) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2e", e);
    return b;
  }

  std::string name_;
  Tape tape_;
  TapeScope scope_;
  std::vector<std::pair<std::string, Var>> vars_;
};

// ---- linear algebra ----

TEST(ReferenceOps, Matmul) {
  for (int ta : {0, 1}) {
    for (int tb : {0, 1}) {
      Case c("matmul.t" + std::to_string(ta) + std::to_string(tb));
      c.check(ops::matmul(c.var("a"), c.var("b"), ta, tb));
    }
  }
  {
    Case c("matmul.shared");  // a [2, 3, 5, 4] times b [4, 6] shared across leading dims
    c.check(ops::matmul(c.var("a"), c.var("b")));
  }
  for (int ta : {0, 1}) {
    for (int tb : {0, 1}) {
      Case c("matmul.batched_t" + std::to_string(ta) + std::to_string(tb));
      c.check(ops::matmul(c.var("a"), c.var("b"), ta, tb));
    }
  }
  {
    Case c("linear");
    c.check(ops::linear(c.var("x"), c.var("w")));
  }
}

// ops.h documents a [..., K, M] with trans_a against a shared b [K, N]; PyTorch: matmul(a.transpose(-1, -2), b).
TEST(ReferenceOps, MatmulTransposedAWithSharedB) {
  Case c("matmul.shared_ta");  // a [2, 4, 5] transposed in its last two dims, b [4, 6]
  c.check(ops::matmul(c.var("a"), c.var("b"), true, false));
}

// ---- element-wise and reductions ----

TEST(ReferenceOps, ElementwiseBroadcast) {
  const std::vector<std::pair<std::string, Var (*)(const Var&, const Var&)>> fns = {
      {"add", ops::add}, {"sub", ops::sub}, {"mul", ops::mul}};
  for (const auto& [name, fn] : fns) {
    for (const char* shape : {"same", "row", "suffix", "scalar"}) {
      Case c(name + "." + shape);
      c.check(fn(c.var("a"), c.var("b")));
    }
  }
  {
    Case c("scale");
    c.check(ops::scale(c.var("a"), -2.5));
  }
  {
    Case c("sum");
    c.check(ops::sum(c.var("a")));
  }
  {
    Case c("mean");
    c.check(ops::mean(c.var("a")));
  }
}

TEST(ReferenceOps, ShapeOps) {
  {
    Case c("transpose");
    c.check(ops::transpose(c.var("a"), 0, 2));
  }
  {
    Case c("slice");
    c.check(ops::slice(c.var("a"), 2, 1, 3));
  }
  {
    Case c("concat");
    c.check(ops::concat({c.var("a"), c.var("b")}, -1));
  }
  {
    Case c("reshape");
    c.check(ops::reshape(c.var("a"), {6, 4}));
  }
}

// ---- layers ----

TEST(ReferenceOps, RmsNorm) {
  {
    Case c("rmsnorm");
    c.check(ops::rmsnorm(c.var("x"), c.var("w"), 1e-5));
  }
  {
    Case c("rmsnorm_eps");  // rows of magnitude ~1e-3, eps 1e-6
    c.check(ops::rmsnorm(c.var("x"), c.var("w"), 1e-6));
  }
}

TEST(ReferenceOps, Embedding) {
  Case c("embedding");
  c.check(ops::embedding(c.var("w"), c.raw("ids")));
}

TEST(ReferenceOps, Activations) {
  {
    Case c("silu");
    c.check(ops::silu(c.var("x")));
  }
  {
    Case c("swiglu");
    c.check(ops::swiglu(c.var("g"), c.var("u")));
  }
  {
    Case c("softmax");
    c.check(ops::softmax(c.var("x")));
  }
}

TEST(ReferenceOps, CrossEntropy) {
  Case c("cross_entropy");
  c.check(ops::cross_entropy(c.var("logits"), c.raw("targets"), -100));
}

TEST(ReferenceOps, Topk) {
  Case c("topk");
  auto [values, indices] = ops::topk(c.var("x"), 3);
  EXPECT_EQ(indices.to_int_vector(), c.raw("indices").to_int_vector());
  c.check(values);
}

TEST(ReferenceOps, GatherScatterRows) {
  {
    Case c("gather_rows");  // torch.index_select(x, 0, idx)
    c.check(ops::gather_rows(c.var("x"), c.raw("idx")));
  }
  {
    Case c("scatter_add_rows");  // torch.zeros(7, 4).index_add_(0, idx, src)
    c.check(ops::scatter_add_rows(c.var("src"), c.raw("idx"), 7));
  }
}

TEST(ReferenceOps, RopeTables) {
  const Tensors& t = fixture("ops.safetensors");
  auto [cos, sin] = ops::rope_tables(5, 8, 10000.0, 37);
  const double ec = rel_err(cos, get(t, "rope.table.cos")), es = rel_err(sin, get(t, "rope.table.sin"));
  EXPECT_LE(ec, kForwardTol);
  EXPECT_LE(es, kForwardTol);
  worst().add("rope_tables out", std::max(ec, es));
  std::printf("[reference] %-30s cos %.2e  sin %.2e\n", "rope.table", ec, es);
}

TEST(ReferenceOps, Rope) {
  struct RopeCase {
    const char* name;
    k::RopeLayout layout;
    int64_t rot, pos0;
  };
  // Shapes come from the fixture; rot and pos0 as in gen_ops.py gen_rope().
  for (const RopeCase& rc : {RopeCase{"rope.half_full", k::RopeLayout::HalfSplit, 8, 37},
                             RopeCase{"rope.half_partial", k::RopeLayout::HalfSplit, 8, 3},
                             RopeCase{"rope.inter_full", k::RopeLayout::Interleaved, 8, 37},
                             RopeCase{"rope.inter_partial", k::RopeLayout::Interleaved, 8, 3}}) {
    Case c(rc.name);
    Var x = c.var("x");
    auto [cos, sin] = ops::rope_tables(x.size(1), rc.rot, 10000.0, rc.pos0);
    c.check(ops::rope(x, cos, sin, rc.layout));
  }
}

TEST(ReferenceOps, Attention) {
  struct AttnCase {
    const char* name;
    bool causal;
    int64_t window, q_offset;
    double scale;
  };
  // Shapes come from the fixture; the options as in gen_ops.py ATTENTION_CASES.
  for (const AttnCase& ac :
       {AttnCase{"mha", true, 0, 0, 0.0}, AttnCase{"gqa", true, 0, 0, 0.0}, AttnCase{"window", true, 3, 0, 0.0},
        AttnCase{"dkdv_offset", true, 4, 5, 0.3}, AttnCase{"noncausal", false, 0, 0, 0.0},
        AttnCase{"long", true, 0, 0, 0.0}, AttnCase{"long_window", true, 20, 0, 0.0}}) {
    Case c(std::string("attention.") + ac.name);
    ops::AttentionOptions opt;
    opt.causal = ac.causal;
    opt.window = ac.window;
    opt.q_offset = ac.q_offset;
    opt.scale = ac.scale;
    c.check(ops::attention(c.var("q"), c.var("k"), c.var("v"), opt));
  }
}

// ---- optimizers ----

struct OptimSetup {
  std::map<std::string, Var> params;  // "w1", "b", "w2"
  std::vector<Var> all;               // w1, w2, b: the flat order of the groups below
  std::vector<ParamGroup> groups;
};

OptimSetup optim_setup(const std::string& prefix, double decay, double b_lr_scale) {
  const Tensors& t = fixture("optim.safetensors");
  OptimSetup s;
  for (const char* n : {"w1", "w2", "b"}) {
    s.params[n] = parameter(get(t, prefix + ".init." + n).clone(), n);
    s.all.push_back(s.params[n]);
  }
  s.groups.push_back(ParamGroup{{s.params["w1"], s.params["w2"]}, decay, 1.0, "decay"});
  s.groups.push_back(ParamGroup{{s.params["b"]}, 0.0, b_lr_scale, "no_decay"});
  return s;
}

void set_grads(OptimSetup& s, const std::string& prefix, int step) {
  const Tensors& t = fixture("optim.safetensors");
  for (auto& [n, p] : s.params) {
    p.zero_grad();
    p.accumulate_grad(get(t, prefix + ".step" + std::to_string(step) + ".grad." + n).clone());
  }
}

double expect_close(const std::string& what, const Tensor& ours, const Tensor& ref, double tol,
                    const std::string& key) {
  const double e = rel_err(ours, ref);
  EXPECT_LE(e, tol) << what << " differs from PyTorch";
  worst().add(key, e);
  return e;
}

TEST(ReferenceOptim, AdamWWithGroupsAndClipping) {
  // torch.optim.AdamW(lr 3e-3, betas (0.9, 0.95), eps 1e-8); group 0 (w1, w2) weight_decay 0.1, group 1 (b)
  // weight_decay 0 and lr 1.5e-3; clip_grad_norm_(all, 1.0) before each of 5 steps.
  const Tensors& t = fixture("optim.safetensors");
  OptimSetup s = optim_setup("adamw", 0.1, 0.5);
  AdamW opt(s.groups, AdamWOptions{3e-3, 0.9, 0.95, 1e-8});
  const auto ref_norms = get(t, "adamw.norms").to_double_vector();
  ASSERT_EQ(ref_norms.size(), 5u);
  double worst_param = 0, worst_delta = 0;
  for (int i = 0; i < 5; ++i) {
    SCOPED_TRACE("step " + std::to_string(i));
    const std::string st = "adamw.step" + std::to_string(i);
    set_grads(s, "adamw", i);
    const double norm = clip_grad_norm(s.all, 1.0);
    const double ne = std::abs(norm - ref_norms[i]) / ref_norms[i];
    EXPECT_LE(ne, kForwardTol) << "clip_grad_norm total norm " << norm << " vs " << ref_norms[i];
    worst().add("clip_grad_norm norm", ne);
    for (auto& [n, p] : s.params)
      expect_close("clipped gradient of " + n, p.grad(), get(t, st + ".clipped." + n), kForwardTol,
                   "clip_grad_norm grads");
    opt.step();
    for (auto& [n, p] : s.params) {
      const Tensor& ref = get(t, st + ".param." + n);
      worst_param = std::max(worst_param, expect_close("parameter " + n, p.value(), ref, kForwardTol, "adamw param"));
      // The accumulated update alone (p - p0), which the parameter's own magnitude would otherwise hide.
      const Tensor& p0 = get(t, "adamw.init." + n);
      Var d_ours = ops::sub(Var(p.value()), Var(p0)), d_ref = ops::sub(Var(ref), Var(p0));
      worst_delta = std::max(
          worst_delta, expect_close("update of " + n, d_ours.value(), d_ref.value(), kForwardTol, "adamw update"));
    }
  }
  // State after the last step; our state() names "<flat index>.<slot>" in group order w1, w2, b.
  std::map<std::string, Tensor> state;
  for (auto& [name, tensor] : opt.state()) state[name] = tensor;
  const char* order[] = {"w1", "w2", "b"};
  for (int i = 0; i < 3; ++i) {
    for (const char* slot : {"exp_avg", "exp_avg_sq"}) {
      const std::string key = std::to_string(i) + "." + slot;
      ASSERT_TRUE(state.count(key)) << key;
      expect_close(std::string(slot) + " of " + order[i], state[key],
                   get(t, std::string("adamw.") + slot + "." + order[i]), kForwardTol, "adamw state");
    }
  }
  EXPECT_EQ(opt.steps(), 5);
  std::printf("[reference] %-30s param %.2e  update %.2e\n", "adamw", worst_param, worst_delta);
}

TEST(ReferenceOptim, SgdNesterovWithWeightDecay) {
  // torch.optim.SGD(lr 0.05, momentum 0.9, nesterov, dampening 0); group 0 (w1, w2) weight_decay 0.01, group 1 (b)
  // weight_decay 0 and lr 0.1; 5 steps, no clipping.
  const Tensors& t = fixture("optim.safetensors");
  OptimSetup s = optim_setup("sgd", 0.01, 2.0);
  Sgd opt(s.groups, SgdOptions{0.05, 0.9, 0.0, true});
  double worst_param = 0, worst_delta = 0;
  for (int i = 0; i < 5; ++i) {
    SCOPED_TRACE("step " + std::to_string(i));
    set_grads(s, "sgd", i);
    opt.step();
    for (auto& [n, p] : s.params) {
      const Tensor& ref = get(t, "sgd.step" + std::to_string(i) + ".param." + n);
      worst_param = std::max(worst_param, expect_close("parameter " + n, p.value(), ref, kForwardTol, "sgd param"));
      const Tensor& p0 = get(t, "sgd.init." + n);
      Var d_ours = ops::sub(Var(p.value()), Var(p0)), d_ref = ops::sub(Var(ref), Var(p0));
      worst_delta = std::max(worst_delta,
                             expect_close("update of " + n, d_ours.value(), d_ref.value(), kForwardTol, "sgd update"));
    }
  }
  std::map<std::string, Tensor> state;
  for (auto& [name, tensor] : opt.state()) state[name] = tensor;
  const char* order[] = {"w1", "w2", "b"};
  for (int i = 0; i < 3; ++i) {
    const std::string key = std::to_string(i) + ".momentum_buffer";
    ASSERT_TRUE(state.count(key)) << key;
    expect_close(std::string("momentum_buffer of ") + order[i], state[key],
                 get(t, std::string("sgd.momentum_buffer.") + order[i]), kForwardTol, "sgd state");
  }
  std::printf("[reference] %-30s param %.2e  update %.2e\n", "sgd", worst_param, worst_delta);
}

// ---- the fixtures themselves ----

TEST(ReferenceFixtures, RegenerateMatchesCommitted) {
  if (!fs::exists(kPython)) GTEST_SKIP() << kPython << " not found; cannot regenerate the PyTorch fixtures";
  const std::string probe = std::string(kPython) + " -c 'import torch' >/dev/null 2>&1";
  if (std::system(probe.c_str()) != 0)
    GTEST_SKIP() << "PyTorch is not importable by " << kPython << " (install Debian's python3-torch); "
                 << "checking the committed fixtures only";

  std::string tmpl = (fs::temp_directory_path() / "lmforge-ref-XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << "mkdtemp failed";
  const fs::path dir = tmpl;
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{dir};

  const std::string cmd = std::string(kPython) + " '" + kScript + "' --out '" + dir.string() + "' >'" +
                          (dir / "log.txt").string() + "' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "running " << cmd << " failed; see its output in the log";

  for (const char* file : {"ops.safetensors", "optim.safetensors"}) {
    SCOPED_TRACE(file);
    const Tensors fresh = io::load_safetensors((dir / file).string());
    const Tensors& committed = fixture(file);
    std::set<std::string> a, b;
    for (const auto& [n, _] : fresh) a.insert(n);
    for (const auto& [n, _] : committed) b.insert(n);
    EXPECT_EQ(a, b) << "the script now writes a different set of tensors; regenerate the fixtures";
    int bad = 0;
    for (const auto& [n, ref] : committed) {
      auto it = fresh.find(n);
      if (it == fresh.end()) continue;
      const Tensor& x = it->second;
      if (x.dtype() != ref.dtype() || x.shape() != ref.shape()) {
        ADD_FAILURE() << n << ": regenerated " << x.str() << ", committed " << ref.str();
        continue;
      }
      auto xv = x.to_double_vector(), rv = ref.to_double_vector();
      double worst_diff = 0;
      for (size_t i = 0; i < xv.size(); ++i)
        worst_diff = std::max(worst_diff, std::abs(xv[i] - rv[i]) / (1.0 + std::abs(rv[i])));
      if (worst_diff > kRegenTol && bad++ < 20)
        ADD_FAILURE() << n << ": regenerated values differ from the committed fixture by " << worst_diff;
    }
    EXPECT_EQ(bad, 0) << bad << " tensors differ";
  }
}

}  // namespace
}  // namespace lmforge
