// BLEU (sacrebleu's defaults) and ROUGE-L (rouge-score's), and the generation benchmark that uses them.
#include <cmath>
#include <fstream>
#include <map>

#include "lmforge/core/error.h"
#include "lmforge/eval/eval.h"
#include "lmforge/tokenizer/chat_template.h"

namespace lmforge::eval {

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
// Python's str.split() separators among the ASCII bytes (it also splits on \x1c-\x1f).
bool ascii_space(char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f');
}

// 13a's symbol class [\{-\~\[-\` -\&\(-\+\:-\@\/].
bool symbol13a(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return (c >= 0x7B && c <= 0x7E) || (c >= 0x5B && c <= 0x60) || (c >= 0x20 && c <= 0x26) || (c >= 0x28 && c <= 0x2B) ||
         (c >= 0x3A && c <= 0x40) || c == 0x2F;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
}

}  // namespace

std::vector<std::string> tokenize_13a(const std::string& line) {
  std::string s = line;
  replace_all(s, "<skipped>", "");
  replace_all(s, "-\n", "");
  replace_all(s, "\n", " ");
  if (s.find('&') != std::string::npos) {
    replace_all(s, "&quot;", "\"");
    replace_all(s, "&amp;", "&");
    replace_all(s, "&lt;", "<");
    replace_all(s, "&gt;", ">");
  }
  s = " " + s + " ";
  // The four regex substitutions of sacrebleu's TokenizerRegexp, each a left-to-right non-overlapping pass.
  std::string a;
  for (char c : s) {
    if (symbol13a(c)) {
      a += ' ';
      a += c;
      a += ' ';
    } else {
      a += c;
    }
  }
  auto pass = [](const std::string& in, auto match, auto emit) {
    std::string out;
    size_t i = 0;
    while (i < in.size()) {
      if (i + 1 < in.size() && match(in[i], in[i + 1])) {
        emit(out, in[i], in[i + 1]);
        i += 2;
      } else {
        out += in[i++];
      }
    }
    return out;
  };
  const auto pc = [](char c) { return c == '.' || c == ','; };
  a = pass(
      a, [&](char x, char y) { return !is_digit(x) && pc(y); },
      [](std::string& o, char x, char y) { o += x, o += ' ', o += y, o += ' '; });
  a = pass(
      a, [&](char x, char y) { return pc(x) && !is_digit(y); },
      [](std::string& o, char x, char y) { o += ' ', o += x, o += ' ', o += y; });
  a = pass(
      a, [](char x, char y) { return is_digit(x) && y == '-'; },
      [](std::string& o, char x, char y) { o += x, o += ' ', o += y, o += ' '; });
  std::vector<std::string> toks;
  std::string cur;
  for (char c : a) {
    if (ascii_space(c)) {
      if (!cur.empty()) toks.push_back(std::move(cur)), cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) toks.push_back(cur);
  return toks;
}

BleuResult corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::string>& refs) {
  std::vector<std::vector<std::string>> many;
  many.reserve(refs.size());
  for (const std::string& r : refs) many.push_back({r});
  return corpus_bleu_multi(hyps, many);
}

BleuResult corpus_bleu_multi(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  LMF_CHECK(hyps.size() == refs.size(), "bleu: ", hyps.size(), " hypotheses for ", refs.size(), " references");
  BleuResult r;
  int64_t correct[4] = {0, 0, 0, 0}, total[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < hyps.size(); ++i) {
    LMF_CHECK(!refs[i].empty(), "bleu: hypothesis ", i, " has no reference");
    const std::vector<std::string> h = tokenize_13a(hyps[i]);
    const auto hyp_len = static_cast<int64_t>(h.size());
    r.sys_len += hyp_len;
    std::vector<std::vector<std::string>> gs;
    int64_t closest = -1;  // sacrebleu's closest reference length: the smallest |hyp - ref|, the shorter on ties
    for (const std::string& ref : refs[i]) {
      gs.push_back(tokenize_13a(ref));
      const auto len = static_cast<int64_t>(gs.back().size());
      if (closest < 0 || std::abs(hyp_len - len) < std::abs(hyp_len - closest) ||
          (std::abs(hyp_len - len) == std::abs(hyp_len - closest) && len < closest))
        closest = len;
    }
    r.ref_len += closest;
    for (size_t n = 1; n <= 4; ++n) {
      std::map<std::vector<std::string>, int64_t> hc, rc;
      for (size_t k = 0; k + n <= h.size(); ++k) ++hc[{h.begin() + k, h.begin() + k + n}];
      for (const std::vector<std::string>& g : gs) {  // each n-gram's count in the reference with most of it
        std::map<std::vector<std::string>, int64_t> one;
        for (size_t k = 0; k + n <= g.size(); ++k) ++one[{g.begin() + k, g.begin() + k + n}];
        for (const auto& [ng, c] : one) rc[ng] = std::max(rc[ng], c);
      }
      for (const auto& [ng, c] : hc) {
        total[n - 1] += c;
        auto it = rc.find(ng);
        if (it != rc.end()) correct[n - 1] += std::min(c, it->second);
      }
    }
  }
  r.bp = r.sys_len < r.ref_len
             ? (r.sys_len > 0 ? std::exp(1.0 - static_cast<double>(r.ref_len) / static_cast<double>(r.sys_len)) : 0.0)
             : 1.0;
  // sacrebleu BLEU.compute_bleu with smooth_method "exp", effective_order off; no match at all stops early at 0
  // with every precision 0 (sacrebleu #141).
  if (correct[0] == 0 && correct[1] == 0 && correct[2] == 0 && correct[3] == 0) return r;
  double smooth = 1.0, logsum = 0;
  for (int n = 0; n < 4; ++n) {
    if (total[n] == 0) break;  // precisions past here stay 0
    if (correct[n] == 0) {
      smooth *= 2;
      r.precisions[n] = 100.0 / (smooth * static_cast<double>(total[n]));
    } else {
      r.precisions[n] = 100.0 * static_cast<double>(correct[n]) / static_cast<double>(total[n]);
    }
  }
  for (double p : r.precisions) logsum += p > 0 ? std::log(p) : -9999999999.0;
  r.score = r.bp * std::exp(logsum / 4.0);
  return r;
}

namespace {

std::vector<std::string> rouge_tokens(const std::string& s) {
  std::vector<std::string> t;
  std::string cur;
  for (char ch : s) {
    const char c = (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch;
    if ((c >= 'a' && c <= 'z') || is_digit(c)) {
      cur += c;
    } else if (!cur.empty()) {
      t.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) t.push_back(cur);
  return t;
}

}  // namespace

double rouge_l(const std::string& hyp, const std::string& ref) {
  const std::vector<std::string> h = rouge_tokens(hyp), g = rouge_tokens(ref);
  if (h.empty() || g.empty()) return 0.0;
  std::vector<int64_t> prev(g.size() + 1, 0), cur(g.size() + 1, 0);
  for (size_t i = 1; i <= h.size(); ++i) {
    for (size_t j = 1; j <= g.size(); ++j)
      cur[j] = h[i - 1] == g[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  const auto lcs = static_cast<double>(prev[g.size()]);
  const double p = lcs / static_cast<double>(h.size()), r = lcs / static_cast<double>(g.size());
  return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
}

double rouge_l_multi(const std::string& hyp, const std::vector<std::string>& refs) {
  LMF_CHECK(!refs.empty(), "rouge-l: no reference");
  double best = 0;
  for (const std::string& r : refs) best = std::max(best, rouge_l(hyp, r));
  return best;
}

std::vector<GenItem> load_gen_tasks(const std::string& path) {
  std::ifstream in(path);
  LMF_CHECK(in.good(), path, ": cannot read");
  std::vector<GenItem> items;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    LMF_CHECK(!j.is_discarded() && j.is_object(), path, ":", n, ": not a JSON object");
    LMF_CHECK(j.contains("prompt") && j["prompt"].is_string(), path, ":", n, ": field 'prompt' must be a string");
    GenItem it{j["prompt"].get<std::string>(), {}};
    if (j.contains("reference") || !j.contains("references")) {
      LMF_CHECK(j.contains("reference") && j["reference"].is_string(), path, ":", n,
                ": field 'reference' must be a string (or 'references' an array of strings)");
      it.references.push_back(j["reference"].get<std::string>());
    } else {
      const nlohmann::json& refs = j["references"];
      LMF_CHECK(refs.is_array() && !refs.empty(), path, ":", n,
                ": field 'references' must be a non-empty array of strings");
      for (const auto& r : refs) {
        LMF_CHECK(r.is_string(), path, ":", n, ": field 'references' must be a non-empty array of strings");
        it.references.push_back(r.get<std::string>());
      }
    }
    items.push_back(std::move(it));
  }
  LMF_CHECK(!items.empty(), path, ": no items");
  return items;
}

GenEvalResult evaluate_generation(ModelDir& m, const std::vector<GenItem>& items, const model::SamplingParams& p,
                                  const std::function<void(int64_t, int64_t)>& progress,
                                  const GenPromptOptions& prompts) {
  LMF_CHECK(prompts.chat || prompts.system.empty(), "eval generate: a system instruction needs the chat template");
  GenEvalResult r;
  std::vector<std::vector<std::string>> refs;
  double rl = 0;
  for (const GenItem& it : items) {
    std::vector<int32_t> ids;
    if (prompts.chat) {
      const tokenizer::ChatPrompt cp = tokenizer::render_chat(tokenizer::user_turn(it.prompt, prompts.system),
                                                              m.chat_template, m.bos_token, m.eos_token);
      r.chat_note = cp.note;
      ids = m.encode(cp.text, false);  // the template carries the special tokens
    } else {
      ids = m.encode(it.prompt, true);
    }
    LMF_CHECK(!ids.empty(), "eval generate: a prompt encodes to no tokens");
    LMF_CHECK(static_cast<int64_t>(ids.size()) < m.engine.config().max_position_embeddings,
              "eval generate: a prompt has ", ids.size(), " tokens; the model's context is ",
              m.engine.config().max_position_embeddings);
    const model::GenerateResult g = model::generate(m.engine, ids, p, [&m](int32_t t) { return m.token_bytes(t); });
    r.outputs.push_back(g.text);
    refs.push_back(it.references);
    rl += rouge_l_multi(g.text, it.references);
    ++r.items;
    if (progress) progress(r.items, static_cast<int64_t>(items.size()));
  }
  r.bleu = corpus_bleu_multi(r.outputs, refs);
  r.rouge_l = rl / static_cast<double>(r.items);
  return r;
}

}  // namespace lmforge::eval
