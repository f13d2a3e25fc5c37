#include "lmforge/data/balance.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "lmforge/core/error.h"

namespace lmforge::data {

std::vector<std::pair<std::string, double>> parse_class_ratio(const std::string& s) {
  std::vector<std::pair<std::string, double>> out;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find(',', b);
    if (e == std::string::npos) e = s.size();
    const std::string item = s.substr(b, e - b);
    const size_t colon = item.rfind(':');
    double w = 0;
    size_t used = 0;
    if (colon != std::string::npos && colon > 0) {
      try {
        w = std::stod(item.substr(colon + 1), &used);
      } catch (const std::exception&) {
        used = 0;
      }
    }
    if (colon == std::string::npos || colon == 0 || used == 0 || used != item.size() - colon - 1 || !(w > 0) ||
        !std::isfinite(w))
      throw Error("--ratio: '" + item + "' is not CLASS:WEIGHT with a positive weight (e.g. spam:1,ham:3)");
    const std::string label = item.substr(0, colon);
    for (const auto& [l, _] : out)
      if (l == label) throw Error("--ratio: class '" + label + "' given twice");
    out.emplace_back(label, w);
    b = e + 1;
  }
  if (out.size() < 2) throw Error("--ratio: give at least two classes (e.g. spam:1,ham:3)");
  return out;
}

namespace {

std::string label_of(const Document& d, const std::string& field) {
  if (!d.meta.is_object()) return {};
  auto it = d.meta.find(field);
  if (it == d.meta.end() || it->is_null()) return {};
  return it->is_string() ? it->get<std::string>() : it->dump();
}

}  // namespace

StageReport balance_classes(const std::vector<std::string>& inputs, const std::string& output, const ReadOptions& read,
                            const BalanceOptions& opt) {
  LMF_CHECK(opt.ratio.size() >= 2, "balance: --ratio needs at least two classes");
  std::map<std::string, size_t> cls;
  for (size_t i = 0; i < opt.ratio.size(); ++i) cls[opt.ratio[i].first] = i;
  // Pass 1: the class and hash of every document, in input order.
  std::vector<int> doc_class;  // -1: unlisted
  std::vector<std::vector<std::pair<uint64_t, int64_t>>> members(opt.ratio.size());
  {
    StageReport scratch;
    CorpusReader reader(inputs, read, scratch);
    std::vector<Document> batch;
    while (reader.next_batch(batch)) {
      for (const Document& d : batch) {
        auto it = cls.find(label_of(d, opt.label_field));
        const auto idx = static_cast<int64_t>(doc_class.size());
        doc_class.push_back(it == cls.end() ? -1 : static_cast<int>(it->second));
        if (it != cls.end())
          members[it->second].emplace_back(hash64(d.text, opt.seed ^ static_cast<uint64_t>(idx)), idx);
      }
      batch.clear();
    }
  }
  for (size_t c = 0; c < members.size(); ++c)
    if (members[c].empty())
      throw Error("balance: class '" + opt.ratio[c].first + "' of --ratio has no documents (label field '" +
                  opt.label_field + "')");
  // Targets: the largest multiple k of the weights that needs no copies (under) or no drops (over).
  double k = opt.oversample ? 0.0 : std::numeric_limits<double>::infinity();
  for (size_t c = 0; c < members.size(); ++c) {
    const double per = static_cast<double>(members[c].size()) / opt.ratio[c].second;
    k = opt.oversample ? std::max(k, per) : std::min(k, per);
  }
  std::vector<int64_t> copies(doc_class.size(), 0);
  StageReport rep;
  for (size_t c = 0; c < members.size(); ++c) {
    auto& m = members[c];
    const auto n = static_cast<int64_t>(m.size());
    const auto target = static_cast<int64_t>(std::floor(k * opt.ratio[c].second + 1e-9));
    std::sort(m.begin(), m.end());
    // Every member gets target / n copies; the first target % n by hash one more.
    for (int64_t i = 0; i < n; ++i)
      copies[static_cast<size_t>(m[static_cast<size_t>(i)].second)] = target / n + (i < target % n ? 1 : 0);
    rep.counters["class_in." + opt.ratio[c].first] = n;
    rep.counters["class_out." + opt.ratio[c].first] = n ? target : 0;
  }
  // Pass 2: write.
  int64_t index = 0;
  StageFns fns;
  fns.ordered = [&](Document& d) {
    const auto i = static_cast<size_t>(index++);
    if (i >= copies.size()) throw Error("balance: the inputs changed between the two passes");
    if (doc_class[i] < 0)
      d.drop = "unlisted_class";
    else if (copies[i] == 0)
      d.drop = "undersampled";
    else
      d.copies = copies[i];
  };
  StageReport out = run_stage("balance", inputs, output, read, fns);
  for (const auto& [name, v] : rep.counters) out.counters[name] = v;
  return out;
}

}  // namespace lmforge::data
