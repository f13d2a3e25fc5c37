// DeepSeekMoE in ONNX ops, as lmforge::model::route selects at inference (no noise, no capacity limit):
// softmax or sigmoid scores; greedy top-k, or group-limited selection (group_limited_greedy: groups ranked by their
// best score; noaux_tc: by the sum of their two best biased scores) over scores + e_score_correction_bias for
// noaux_tc; weights are the unbiased scores of the chosen experts, normalised when norm_topk_prob, times
// routed_scaling_factor. TopK breaks ties towards the lower index, as route() does.
//
// Combination, sparse (default): each expert gathers the rows that chose it (NonZero + GatherND, possibly no rows),
// runs on them, and adds its weighted output back (ScatterND, reduction add). Dense (--moe-dispatch dense): every
// routed expert runs on every token, scaled by the token's routing weight, which is exactly 0 for experts it did not
// choose; no data-dependent shapes, but n_routed_experts / num_experts_per_tok times the routed FLOPs. Both equal
// lmforge's sparse mixture up to float summation order; see docs/FORMATS.md.
#include "export/onnx_decoder.h"
#include "lmforge/core/error.h"

namespace lmforge::exporter {

namespace {
using G = OnnxGraphBuilder;

std::vector<std::string> topk(G& b, const std::string& x, int64_t k) {
  return b.node("TopK", {x, b.ints({k})}, 2,
                {G::attr("axis", int64_t{-1}), G::attr("largest", int64_t{1}), G::attr("sorted", int64_t{1})});
}
}  // namespace

std::string moe_ffn(DecoderGraph& d, int64_t layer, const std::string& h) {
  const model::ModelConfig& c = d.c;
  G& b = d.b;
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok, groups = c.n_group;
  LMF_CHECK(K >= 1 && K <= E, "onnx export: num_experts_per_tok ", K, " outside [1, n_routed_experts ", E, "]");
  LMF_CHECK(groups >= 1 && E % groups == 0 && c.topk_group >= 1 && c.topk_group <= groups, "onnx export: n_group ",
            groups, " / topk_group ", c.topk_group, " do not fit n_routed_experts ", E);
  const bool noaux = c.topk_method == "noaux_tc", grouped = c.topk_method != "greedy";
  LMF_CHECK(noaux || grouped || c.topk_method == "greedy", "onnx export: topk_method '", c.topk_method,
            "' is not supported");
  LMF_CHECK(c.scoring_func == "softmax" || c.scoring_func == "sigmoid", "onnx export: scoring_func '", c.scoring_func,
            "' is not supported");
  const std::string p = "model.layers." + std::to_string(layer) + ".mlp.";

  const std::string flat = b.reshape(h, {-1, c.hidden_size});  // [N, D]
  const std::string logits = b.linear(flat, d.w(p + "gate.weight"));
  const std::string scores = c.scoring_func == "sigmoid" ? b.op("Sigmoid", {logits})
                                                         : b.op("Softmax", {logits}, {G::attr("axis", int64_t{-1})});
  std::string choice = noaux ? b.add(scores, d.w(p + "gate.e_score_correction_bias")) : scores;
  if (grouped && c.topk_group < groups) {
    const int64_t per = E / groups;
    const std::string cg = b.reshape(choice, {0, groups, per});  // [N, G, per]
    const std::string gscore =
        noaux && per >= 2
            ? b.op("ReduceSum", {topk(b, cg, 2)[0], b.ints({-1})}, {G::attr("keepdims", int64_t{0})})
            : b.op("ReduceMax", {cg}, {G::attr("axes", std::vector<int64_t>{-1}), G::attr("keepdims", int64_t{0})});
    // Chosen groups as a [N, G, 1] boolean: group g is kept when it appears among the topk_group indices.
    const std::string gidx = b.unsqueeze(topk(b, gscore, c.topk_group)[1], {-1});  // [N, tg, 1]
    const std::string hits =
        b.op("Cast", {b.op("Equal", {gidx, b.op("Range", {b.int_scalar(0), b.int_scalar(groups), b.int_scalar(1)})})},
             {G::attr("to", int64_t{onnx::TensorProto::FLOAT})});  // [N, tg, G]
    const std::string kept =
        b.op("Greater", {b.unsqueeze(b.op("ReduceMax", {hits},
                                          {G::attr("axes", std::vector<int64_t>{1}), G::attr("keepdims", int64_t{0})}),
                                     {-1}),
                         b.float_scalar(0.5f)});  // [N, G, 1]
    choice = b.reshape(b.op("Where", {kept, cg, b.float_scalar(-std::numeric_limits<float>::infinity())}), {0, E});
  }
  const std::string idx = topk(b, choice, K)[1];  // [N, K]
  std::string wts = b.op("GatherElements", {scores, idx}, {G::attr("axis", int64_t{1})});
  if (c.norm_topk_prob && K > 1) {
    const std::string sum = b.op("ReduceSum", {wts, b.ints({-1})}, {G::attr("keepdims", int64_t{1})});
    wts = b.op("Div", {wts, b.add(sum, b.float_scalar(1e-20f))});
  }
  if (c.routed_scaling_factor != 1.0) wts = b.mul(wts, b.float_scalar(static_cast<float>(c.routed_scaling_factor)));
  std::string y;
  if (d.moe_dispatch == OnnxExportOptions::MoeDispatch::Dense) {
    // Routing weights [N, E]: zeros except the chosen experts (scores are finite, so scores * 0 is exactly 0).
    const std::string dense =
        b.op("ScatterElements", {b.mul(scores, b.float_scalar(0.0f)), idx, wts}, {G::attr("axis", int64_t{1})});
    for (int64_t e = 0; e < E; ++e) {
      const std::string ye =
          b.mul(swiglu_mlp(d, p + "experts." + std::to_string(e) + ".", flat), b.slice(dense, 1, e, e + 1));
      y = y.empty() ? ye : b.add(y, ye);
    }
    if (c.n_shared_experts > 0) y = b.add(y, swiglu_mlp(d, p + "shared_experts.", flat));
  } else {
    // Sparse: each expert gathers the rows that chose it (possibly none), and adds its weighted output back.
    y = c.n_shared_experts > 0 ? swiglu_mlp(d, p + "shared_experts.", flat)
                               : b.op("ConstantOfShape", {b.op("Shape", {flat})});
    const std::string zero = b.float_scalar(0.0f);
    for (int64_t e = 0; e < E; ++e) {
      const std::string hit = b.op("Equal", {idx, b.int_scalar(e)});  // [N, K]
      const std::string w_e =
          b.op("ReduceSum", {b.op("Where", {hit, wts, zero}), b.ints({1})}, {G::attr("keepdims", int64_t{0})});  // [N]
      const std::string chosen =
          b.op("Greater", {b.op("ReduceMax", {b.op("Cast", {hit}, {G::attr("to", int64_t{onnx::TensorProto::FLOAT})})},
                                {G::attr("axes", std::vector<int64_t>{1}), G::attr("keepdims", int64_t{0})}),
                           b.float_scalar(0.5f)});                              // [N]
      const std::string rows = b.transpose(b.op("NonZero", {chosen}), {1, 0});  // [M, 1]
      const std::string xs = b.op("GatherND", {flat, rows});                    // [M, D]
      const std::string ye = b.mul(swiglu_mlp(d, p + "experts." + std::to_string(e) + ".", xs),
                                   b.unsqueeze(b.op("GatherND", {w_e, rows}), {1}));
      y = b.op("ScatterND", {y, rows, ye}, {G::attr("reduction", std::string("add"))});
    }
  }
  return b.op("Reshape", {y, b.op("Shape", {h})});
}

}  // namespace lmforge::exporter
