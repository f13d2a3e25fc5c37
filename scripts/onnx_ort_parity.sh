#!/usr/bin/env bash
# ONNX export parity in ONNX Runtime: for each model, `lmforge export onnx`, then tests/reference/onnx/run_onnx.js
# runs the file in onnxruntime-node (whole sequence, token by token through present -> past, two chunks, a
# left-padded batch of two) and compares the logits with `lmforge forward`'s, and for the PyTorch parity fixtures
# also with PyTorch's, within 1e-4 relative (f32).
#
# usage: scripts/onnx_ort_parity.sh LMFORGE_BINARY WORKDIR
# Exit 77 (ctest: skipped) when node or the onnxruntime-node package is absent; install them with
# LMFORGE_WITH_NODE=1 scripts/install-deps.sh.
set -euo pipefail
bin="$1"
work="$2"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ref="$root/tests/reference/onnx"
fixtures="$root/tests/reference/fixtures"
tol="${LMFORGE_ONNX_TOL:-1e-4}"

if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is not installed (LMFORGE_WITH_NODE=1 scripts/install-deps.sh)"
  exit 77
fi
if [[ ! -d "$ref/node_modules/onnxruntime-node" ]]; then
  echo "SKIP: onnxruntime-node is not installed in $ref (LMFORGE_WITH_NODE=1 scripts/install-deps.sh runs npm ci)"
  exit 77
fi

rm -rf "$work"
mkdir -p "$work"

ids_file() {  # ids_file OUT COUNT VOCAB MULT OFFSET: a deterministic spread of ids
  local out="$1" n="$2" v="$3" m="$4" o="$5" i
  : > "$out"
  for ((i = 0; i < n; ++i)); do printf '%d ' $(((i * m + o) % v)) >> "$out"; done
  echo >> "$out"
}

# check NAME MODEL_DIR IDS1 IDS2 [TORCH1 TORCH2]: export, forward twice, compare in ORT.
check() {
  local name="$1" dir="$2" ids1="$3" ids2="$4" torch1="${5:-}" torch2="${6:-}"
  local w="$work/$name"
  mkdir -p "$w"
  "$bin" export onnx --model "$dir" --out "$w/model.onnx" --quiet
  "$bin" forward --model "$dir" --ids-file "$ids1" --out "$w/ref1.safetensors"
  "$bin" forward --model "$dir" --ids-file "$ids2" --out "$w/ref2.safetensors"
  local res
  res=$(node "$ref/run_onnx.js" --onnx "$w/model.onnx" --config "$dir/config.json" --ids "$ids1" \
    --ref "$w/ref1.safetensors" --ids2 "$ids2" --ref2 "$w/ref2.safetensors" --tol "$tol") ||
    { echo "FAIL $name vs lmforge forward: $res"; exit 1; }
  echo "$name vs lmforge forward: $res"
  if [[ -n "$torch1" ]]; then
    res=$(node "$ref/run_onnx.js" --onnx "$w/model.onnx" --config "$dir/config.json" --ids "$ids1" \
      --ref "$torch1" --ids2 "$ids2" --ref2 "$torch2" --tol "$tol") ||
      { echo "FAIL $name vs PyTorch: $res"; exit 1; }
    echo "$name vs PyTorch: $res"
  fi
}

# Models from init-model: llama with GQA and sliding layers; llama with biases, tied embeddings and YaRN; qwen2 (q/k/v
# biases without o_proj's, tied); DeepSeek-V3
# with MLA (q_lora_rank), a first dense layer, sigmoid noaux_tc group-limited routing, a shared expert and YaRN.
cat > "$work/llama_gqa_sliding.json" <<'JSON'
{"model_type":"llama","vocab_size":128,"hidden_size":64,"intermediate_size":96,"num_hidden_layers":4,
 "num_attention_heads":8,"num_key_value_heads":2,"head_dim":8,"max_position_embeddings":64,"rms_norm_eps":1e-5,
 "rope_theta":10000.0,"layer_types":["sliding_attention","sliding_attention","sliding_attention","full_attention"],
 "sliding_window":5,"initializer_range":0.1}
JSON
cat > "$work/llama_bias_tied_yarn.json" <<'JSON'
{"model_type":"llama","vocab_size":100,"hidden_size":48,"intermediate_size":80,"num_hidden_layers":2,
 "num_attention_heads":6,"num_key_value_heads":3,"max_position_embeddings":64,"rms_norm_eps":1e-6,
 "rope_theta":500.0,"attention_bias":true,"tie_word_embeddings":true,"initializer_range":0.1,
 "rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":16,"beta_fast":32.0,"beta_slow":1.0}}
JSON
cat > "$work/qwen2_tied.json" <<'JSON'
{"model_type":"qwen2","vocab_size":100,"hidden_size":48,"intermediate_size":80,"num_hidden_layers":2,
 "num_attention_heads":6,"num_key_value_heads":2,"max_position_embeddings":64,"rms_norm_eps":1e-6,
 "rope_theta":1000000.0,"tie_word_embeddings":true,"use_sliding_window":false,"sliding_window":4096,
 "initializer_range":0.1}
JSON
cat > "$work/dsv3_mla_moe.json" <<'JSON'
{"model_type":"deepseek_v3","vocab_size":120,"hidden_size":48,"intermediate_size":96,"num_hidden_layers":3,
 "num_attention_heads":4,"num_key_value_heads":4,"max_position_embeddings":64,"rms_norm_eps":1e-6,
 "rope_theta":10000.0,"q_lora_rank":32,"kv_lora_rank":24,"qk_nope_head_dim":8,"qk_rope_head_dim":8,"v_head_dim":12,
 "moe_intermediate_size":24,"first_k_dense_replace":1,"n_shared_experts":1,"n_routed_experts":8,
 "num_experts_per_tok":3,"scoring_func":"sigmoid","topk_method":"noaux_tc","n_group":4,"topk_group":2,
 "norm_topk_prob":true,"routed_scaling_factor":2.5,"initializer_range":0.1,"tie_word_embeddings":false,
 "rope_scaling":{"type":"yarn","factor":2.0,"original_max_position_embeddings":16,"beta_fast":32.0,"beta_slow":1.0,
                 "mscale":1.0,"mscale_all_dim":1.0}}
JSON
for name in llama_gqa_sliding llama_bias_tied_yarn qwen2_tied dsv3_mla_moe; do
  "$bin" init-model --config "$work/$name.json" --seed 11 --out "$work/$name.model" >/dev/null 2>&1
  vocab=$(sed -n 's/.*"vocab_size":\([0-9]*\).*/\1/p' "$work/$name.json")
  ids_file "$work/$name.ids1" 24 "$vocab" 37 5
  ids_file "$work/$name.ids2" 15 "$vocab" 53 2
  check "$name" "$work/$name.model" "$work/$name.ids1" "$work/$name.ids2"
done

# Weights in an external data file (as models over 2 GB are written) load and run the same.
w="$work/llama_gqa_sliding"
"$bin" export onnx --model "$work/llama_gqa_sliding.model" --out "$w/external.onnx" --external-data always --quiet
res=$(node "$ref/run_onnx.js" --onnx "$w/external.onnx" --config "$work/llama_gqa_sliding.model/config.json" \
  --ids "$work/llama_gqa_sliding.ids1" --ref "$w/ref1.safetensors" --tol "$tol") ||
  { echo "FAIL llama_gqa_sliding with external data: $res"; exit 1; }
echo "llama_gqa_sliding, external data: $res"

# The dense MoE form (--moe-dispatch dense) computes the same logits.
w="$work/dsv3_mla_moe"
"$bin" export onnx --model "$work/dsv3_mla_moe.model" --out "$w/dense.onnx" --moe-dispatch dense --quiet
res=$(node "$ref/run_onnx.js" --onnx "$w/dense.onnx" --config "$work/dsv3_mla_moe.model/config.json" \
  --ids "$work/dsv3_mla_moe.ids1" --ref "$w/ref1.safetensors" --ids2 "$work/dsv3_mla_moe.ids2" \
  --ref2 "$w/ref2.safetensors" --tol "$tol") || { echo "FAIL dsv3_mla_moe with dense MoE: $res"; exit 1; }
echo "dsv3_mla_moe, dense MoE: $res"

# The PyTorch parity fixtures: their weights, ids and PyTorch logits.
for name in llama_gqa_sliding dsv3_mla_moe_sigmoid dsv3_moe_softmax_greedy; do
  d="$work/fixture_$name"
  node "$ref/fixture_model.js" "$fixtures/model_$name.safetensors" "$fixtures/model_$name.json" "$d" >/dev/null
  check "fixture_$name" "$d" "$d/ids0.txt" "$d/ids1.txt" "$d/torch0.safetensors" "$d/torch1.safetensors"
done
echo "onnx_ort_parity: all models within $tol"
