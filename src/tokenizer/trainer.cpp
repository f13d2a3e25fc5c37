#include "lmforge/tokenizer/trainer.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <mutex>
#include <optional>
#include <queue>
#include <unordered_map>

#include "lmforge/core/error.h"
#include "lmforge/kernels/thread_pool.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

namespace lmforge::tokenizer {

using nlohmann::json;

namespace {

const char* const kDeepSeekDigits = R"(\p{N}{1,3})";
const char* const kDeepSeekCjk = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+";
const char* const kDeepSeekMain = R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^)"
                                  "\r\n"
                                  R"(\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[)"
                                  "\r\n"
                                  R"(]*|\s*[)"
                                  "\r\n"
                                  R"(]+|\s+(?!\S)|\s+)";
const char* const kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

json split_json(const std::string& regex) {
  return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
}
json byte_level_json(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", use_regex}};
}

json pre_tokenizer_for(const std::string& pattern) {
  if (pattern == "gpt2") return byte_level_json(true);
  json steps = json::array();
  if (pattern == "deepseek-v3") {
    steps = {split_json(kDeepSeekDigits), split_json(kDeepSeekCjk), split_json(kDeepSeekMain)};
  } else if (pattern == "llama3") {
    steps = {split_json(kLlama3)};
  } else if (pattern == "qwen2") {
    steps = {split_json(kQwen2)};
  } else {
    steps = {split_json(pattern)};
  }
  steps.push_back(byte_level_json(false));
  return {{"type", "Sequence"}, {"pretokenizers", steps}};
}

using WordCounts = std::unordered_map<std::string, uint64_t, StringHash, std::equal_to<>>;

// Open-addressing map from a pair key (never ~0) to V: the merge loop's counts and index are looked up a few times
// per merged occurrence, where std::unordered_map's node chasing dominated.
template <typename V>
class PairMap {
 public:
  V& operator[](uint64_t key) {
    if ((size_ + 1) * 4 > keys_.size() * 3) grow();  // load <= 3/4: linear probing stays short
    size_t i = slot(key);
    if (keys_[i] == kEmpty) {
      keys_[i] = key;
      ++size_;
    }
    return vals_[i];
  }
  template <typename F>
  void for_each(F&& f) {
    for (size_t i = 0; i < keys_.size(); ++i)
      if (keys_[i] != kEmpty) f(keys_[i], vals_[i]);
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  size_t slot(uint64_t key) const {
    uint64_t h = key * 0x9E3779B97F4A7C15ULL;
    size_t mask = keys_.size() - 1;
    for (size_t i = (h >> 20) & mask;; i = (i + 1) & mask)
      if (keys_[i] == key || keys_[i] == kEmpty) return i;
  }
  void grow() {
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<V> old_vals = std::move(vals_);
    size_t cap = old_keys.empty() ? 1024 : old_keys.size() * 2;
    keys_.assign(cap, kEmpty);
    vals_.clear();
    vals_.resize(cap);
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] == kEmpty) continue;
      size_t j = slot(old_keys[i]);
      keys_[j] = old_keys[i];
      vals_[j] = std::move(old_vals[i]);
    }
  }
  std::vector<uint64_t> keys_;
  std::vector<V> vals_;
  size_t size_ = 0;
};

uint64_t pair_key(uint32_t a, uint32_t b) {
  return (uint64_t{a} << 32) | b;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

bool ends_with(const std::string& s, const char* suffix) {
  size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

}  // namespace

struct BpeTrainer::Impl {
  TrainerOptions opt;
  PreTokenizerChain pre;
  std::vector<AddedToken> specials;
  AddedTokenMatcher special_matcher;
  WordCounts words;
  std::mutex words_mu;

  void count_documents(const std::vector<std::string>& docs, TrainStats& stats);
  void count_one(std::string_view doc, WordCounts& local) const;
  void prune(TrainStats& stats);
  void log(const std::string& s) const {
    if (opt.log) opt.log(s);
  }
};

BpeTrainer::BpeTrainer(TrainerOptions opt) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opt = std::move(opt);
  LMF_CHECK(m.opt.vocab_size >= 256 + m.opt.special_tokens.size(), "--vocab-size ", m.opt.vocab_size,
            " is too small: it must hold the 256 byte tokens and ", m.opt.special_tokens.size(), " special token(s)");
  m.pre = make_pre_tokenizer(pre_tokenizer_for(m.opt.pattern), Where{"--pattern", ""});
  std::vector<std::string> patterns;
  for (size_t i = 0; i < m.opt.special_tokens.size(); ++i) {
    const std::string& s = m.opt.special_tokens[i];
    LMF_CHECK(!s.empty() && unicode::valid_utf8_prefix(s) == s.size(), "--special-tokens: token ", i,
              " is empty or not valid UTF-8");
    AddedToken t;
    t.id = static_cast<uint32_t>(i);
    t.content = s;
    t.special = true;
    m.specials.push_back(t);
    patterns.push_back(s);
  }
  std::vector<const AddedToken*> ptrs;
  for (const AddedToken& t : m.specials) ptrs.push_back(&t);
  m.special_matcher.build(patterns, ptrs);
}

BpeTrainer::~BpeTrainer() = default;

std::string BpeTrainer::pre_tokenizer_json(const std::string& pattern) {
  json j = pre_tokenizer_for(pattern);
  make_pre_tokenizer(j, Where{"--pattern", ""});  // validates the regex
  return j.dump();
}

void BpeTrainer::Impl::count_one(std::string_view doc, WordCounts& local) const {
  std::string repaired;
  if (unicode::valid_utf8_prefix(doc) != doc.size()) {
    repaired = unicode::repair_utf8(doc);
    doc = repaired;
  }
  auto count_segment = [&](std::string_view seg) {
    if (seg.empty()) return;
    std::string buf(seg);
    std::vector<Piece> pieces{{0, static_cast<uint32_t>(seg.size())}}, next;
    for (const auto& step : pre.steps) {
      next.clear();
      step->split(buf, pieces, next, true);
      pieces.swap(next);
    }
    std::string_view all = buf;
    for (const Piece& p : pieces) {
      std::string_view w = all.substr(p.off, p.len);
      auto it = local.find(w);
      if (it != local.end()) {
        ++it->second;
      } else {
        local.emplace(std::string(w), 1);
      }
    }
  };
  if (special_matcher.empty()) {
    count_segment(doc);
    return;
  }
  std::vector<AddedTokenMatcher::Split> splits;
  special_matcher.split(doc, splits);
  for (const auto& s : splits)
    if (s.id < 0) count_segment(doc.substr(s.start, s.end - s.start));
}

void BpeTrainer::Impl::count_documents(const std::vector<std::string>& docs, TrainStats& stats) {
  parallel_for(static_cast<int64_t>(docs.size()), 64, [&](int64_t b, int64_t e) {
    WordCounts local;
    for (int64_t i = b; i < e; ++i) count_one(docs[i], local);
    std::lock_guard<std::mutex> lock(words_mu);
    for (auto& [w, c] : local) words[w] += c;
  });
  for (const auto& d : docs) stats.bytes += d.size();
  stats.documents += docs.size();
  prune(stats);
}

void BpeTrainer::Impl::prune(TrainStats& stats) {
  if (opt.max_words == 0 || words.size() <= opt.max_words) return;
  // Drop the rarest words until a quarter of the room is free again; their pairs would rarely be merged anyway.
  for (uint64_t limit = 1; words.size() > opt.max_words * 3 / 4; limit *= 2) {
    for (auto it = words.begin(); it != words.end();) {
      if (it->second <= limit) {
        it = words.erase(it);
        ++stats.pruned_words;
      } else {
        ++it;
      }
    }
  }
}

void BpeTrainer::add_documents(const std::vector<std::string>& docs) {
  auto t0 = std::chrono::steady_clock::now();
  std::optional<ThreadCountScope> scope;
  if (impl_->opt.threads > 0) scope.emplace(impl_->opt.threads);
  impl_->count_documents(docs, stats_);
  stats_.count_seconds += seconds_since(t0);
}

void BpeTrainer::add_file(const std::string& path) {
  auto t0 = std::chrono::steady_clock::now();
  std::optional<ThreadCountScope> scope;
  if (impl_->opt.threads > 0) scope.emplace(impl_->opt.threads);
  std::ifstream in(path, std::ios::binary);
  LMF_CHECK(in, path, ": cannot open input file");
  const bool jsonl = ends_with(path, ".jsonl") || ends_with(path, ".json");
  constexpr size_t kBatchBytes = 8u << 20;
  std::vector<std::string> batch;
  size_t batch_bytes = 0;
  auto flush = [&] {
    if (batch.empty()) return;
    impl_->count_documents(batch, stats_);
    batch.clear();
    batch_bytes = 0;
    impl_->log(detail::concat(path, ": ", stats_.documents, " documents, ", stats_.bytes / 1000000, " MB, ",
                              impl_->words.size(), " distinct words"));
  };
  if (jsonl) {
    std::string line;
    size_t line_no = 0;
    const std::string& field = impl_->opt.jsonl_field;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.empty()) continue;
      json j = json::parse(unicode::repair_utf8(line), nullptr, false);
      const char* problem = nullptr;
      if (j.is_discarded()) {
        problem = "not valid JSON";
      } else if (!j.is_object() || !j.contains(field)) {
        problem = "missing field";
      } else if (!j[field].is_string()) {
        problem = "field is not a string";
      }
      if (problem) {
        if (impl_->opt.skip_bad) {
          ++stats_.bad_lines;
          continue;
        }
        throw Error(
            detail::concat(path, ":", line_no, ": ", problem, " \"", field, "\" (--skip-bad skips such lines)"));
      }
      batch.push_back(j[field].get<std::string>());
      batch_bytes += batch.back().size();
      if (batch_bytes >= kBatchBytes) flush();
    }
  } else {
    // Plain text in blocks cut after a newline, so a long file never sits in memory whole.
    constexpr size_t kBlock = 1u << 20;
    std::string carry;
    std::vector<char> buf(kBlock);
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      size_t got = static_cast<size_t>(in.gcount());
      if (got == 0) break;
      carry.append(buf.data(), got);
      size_t cut = carry.rfind('\n');
      if (cut == std::string::npos && carry.size() < 64 * kBlock) continue;  // a very long line: cut anyway
      cut = cut == std::string::npos ? carry.size() : cut + 1;
      batch.push_back(carry.substr(0, cut));
      carry.erase(0, cut);
      batch_bytes += batch.back().size();
      if (batch_bytes >= kBatchBytes) flush();
    }
    if (!carry.empty()) batch.push_back(std::move(carry));
  }
  LMF_CHECK(!in.bad(), path, ": read error");
  flush();
  stats_.count_seconds += seconds_since(t0);
}

std::string BpeTrainer::train() {
  auto t0 = std::chrono::steady_clock::now();
  Impl& m = *impl_;
  std::optional<ThreadCountScope> scope;
  if (m.opt.threads > 0) scope.emplace(m.opt.threads);
  stats_.distinct_words = m.words.size();

  // Vocabulary: special tokens, then the 256 byte characters in code point order (as HF's trainer sorts them).
  std::vector<std::string> id_to_token;
  std::unordered_map<std::string, uint32_t> token_to_id;
  for (const AddedToken& t : m.specials) {
    if (token_to_id.emplace(t.content, id_to_token.size()).second) id_to_token.push_back(t.content);
  }
  const auto& b2c = unicode::byte_to_cp();
  std::vector<std::pair<char32_t, int>> alphabet;
  alphabet.reserve(256);
  for (int b = 0; b < 256; ++b) alphabet.emplace_back(b2c[b], b);
  std::sort(alphabet.begin(), alphabet.end());
  std::array<uint32_t, 256> byte_id{};
  for (auto [cp, b] : alphabet) {
    std::string ch;
    unicode::append_utf8(ch, cp);
    auto [it, fresh] = token_to_id.emplace(ch, id_to_token.size());
    if (fresh) id_to_token.push_back(ch);
    byte_id[b] = it->second;
  }

  // Words as symbol sequences; the word strings are no longer needed.
  std::vector<std::vector<uint32_t>> words;
  std::vector<int64_t> counts;
  words.reserve(m.words.size());
  counts.reserve(m.words.size());
  for (auto& [w, c] : m.words) {
    std::vector<uint32_t> syms(w.size());
    for (size_t i = 0; i < w.size(); ++i) syms[i] = byte_id[static_cast<unsigned char>(w[i])];
    words.push_back(std::move(syms));
    counts.push_back(static_cast<int64_t>(c));
  }
  WordCounts().swap(m.words);

  // Initial pair counts and the pair -> words index, counted per block in parallel and merged.
  PairMap<int64_t> pair_counts;
  PairMap<std::vector<uint32_t>> where;
  std::mutex mu;
  parallel_for(static_cast<int64_t>(words.size()), 4096, [&](int64_t b, int64_t e) {
    PairMap<int64_t> lc;
    PairMap<std::vector<uint32_t>> lw;
    for (int64_t i = b; i < e; ++i) {
      const auto& w = words[i];
      for (size_t k = 0; k + 1 < w.size(); ++k) {
        uint64_t p = pair_key(w[k], w[k + 1]);
        lc[p] += counts[i];
        auto& v = lw[p];
        if (v.empty() || v.back() != static_cast<uint32_t>(i)) v.push_back(static_cast<uint32_t>(i));
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    lc.for_each([&](uint64_t p, int64_t c) { pair_counts[p] += c; });
    lw.for_each([&](uint64_t p, std::vector<uint32_t>& v) {
      auto& dst = where[p];
      dst.insert(dst.end(), v.begin(), v.end());
    });
  });

  struct Cand {
    int64_t count;
    uint64_t pair;
  };
  // Highest count first; ties go to the smaller pair of ids (HF's Merge ordering), so training is deterministic.
  auto lower = [](const Cand& x, const Cand& y) { return x.count != y.count ? x.count < y.count : x.pair > y.pair; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(lower)> queue(lower);
  pair_counts.for_each([&](uint64_t p, int64_t c) {
    if (c > 0) queue.push({c, p});
  });

  std::vector<std::pair<uint32_t, uint32_t>> merges;
  const uint64_t min_freq = std::max<uint64_t>(m.opt.min_frequency, 1);
  std::vector<std::pair<uint64_t, int64_t>> changes;
  std::vector<uint64_t> touched;
  std::vector<uint32_t> rebuilt;
  while (id_to_token.size() < m.opt.vocab_size && !queue.empty()) {
    Cand top = queue.top();
    queue.pop();
    int64_t current = pair_counts[top.pair];
    if (top.count != current) {
      if (current > 0) queue.push({current, top.pair});
      continue;
    }
    if (current < static_cast<int64_t>(min_freq)) break;
    auto a = static_cast<uint32_t>(top.pair >> 32), b = static_cast<uint32_t>(top.pair);
    std::string joined = id_to_token[a] + id_to_token[b];
    auto [it, fresh] = token_to_id.emplace(joined, id_to_token.size());
    if (fresh) id_to_token.push_back(joined);
    const uint32_t nid = it->second;
    merges.emplace_back(a, b);
    pair_counts[top.pair] = 0;

    std::vector<uint32_t> targets = std::move(where[top.pair]);
    where[top.pair] = {};
    std::sort(targets.begin(), targets.end());
    targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
    touched.clear();
    for (uint32_t wi : targets) {
      auto& w = words[wi];
      changes.clear();
      rebuilt.clear();
      for (size_t i = 0; i < w.size();) {
        if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) {
          if (!rebuilt.empty()) {
            changes.emplace_back(pair_key(rebuilt.back(), a), -1);
            changes.emplace_back(pair_key(rebuilt.back(), nid), 1);
          }
          if (i + 2 < w.size()) {
            changes.emplace_back(pair_key(b, w[i + 2]), -1);
            changes.emplace_back(pair_key(nid, w[i + 2]), 1);
          }
          rebuilt.push_back(nid);
          i += 2;
        } else {
          rebuilt.push_back(w[i]);
          ++i;
        }
      }
      if (changes.empty() && rebuilt.size() == w.size()) continue;
      w.assign(rebuilt.begin(), rebuilt.end());
      for (auto [p, d] : changes) {
        pair_counts[p] += d * counts[wi];
        if (d > 0) {
          auto& v = where[p];
          if (v.empty() || v.back() != wi) v.push_back(wi);
          touched.push_back(p);
        }
      }
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t p : touched) {
      int64_t c = pair_counts[p];
      if (c > 0) queue.push({c, p});
    }
    if (merges.size() % 2000 == 0)
      m.log(detail::concat("merges: ", merges.size(), ", vocabulary ", id_to_token.size(), "/", m.opt.vocab_size));
  }
  stats_.merges = merges.size();
  stats_.merge_seconds = seconds_since(t0);

  // tokenizer.json, written by hand: nlohmann's ordered objects are quadratic for a large vocabulary.
  std::string out;
  out.reserve(id_to_token.size() * 24 + merges.size() * 24 + 4096);
  out += "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[";
  for (size_t i = 0; i < m.specials.size(); ++i) {
    if (i) out += ',';
    out += json{
        {"id", token_to_id[m.specials[i].content]},
        {"content", m.specials[i].content},
        {"single_word", false},
        {"lstrip", false},
        {"rstrip", false},
        {"normalized", false},
        {"special",
         true}}.dump();
  }
  out += "],\"normalizer\":null,\"pre_tokenizer\":";
  out += pre_tokenizer_for(m.opt.pattern).dump();
  out += ",\"post_processor\":" + byte_level_json(false).dump() + ",\"decoder\":" + byte_level_json(false).dump();
  out +=
      ",\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,"
      "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":{";
  for (size_t i = 0; i < id_to_token.size(); ++i) {
    if (i) out += ',';
    out += json(id_to_token[i]).dump();
    out += ':';
    out += std::to_string(i);
  }
  out += "},\"merges\":[";
  for (size_t i = 0; i < merges.size(); ++i) {
    if (i) out += ',';
    out += '[';
    out += json(id_to_token[merges[i].first]).dump();
    out += ',';
    out += json(id_to_token[merges[i].second]).dump();
    out += ']';
  }
  out += "]}}\n";
  return out;
}

}  // namespace lmforge::tokenizer
