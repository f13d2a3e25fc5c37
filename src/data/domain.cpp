#include "lmforge/data/domain.h"

#include <cmath>
#include <unordered_set>

#include "lmforge/core/error.h"
#include "lmforge/data/dedup.h"

namespace lmforge::data {

namespace {
std::unordered_map<std::string, double> term_counts(std::string_view text) {
  std::unordered_map<std::string, double> tf;
  for (std::string& w : dedup_words(text)) tf[std::move(w)] += 1;
  return tf;
}
}  // namespace

DomainScorer::DomainScorer(const std::vector<std::string>& reference_docs) {
  std::vector<std::unordered_map<std::string, double>> tfs;
  std::unordered_map<std::string, double> df;
  for (const std::string& d : reference_docs) {
    auto tf = term_counts(d);
    if (tf.empty()) continue;
    for (const auto& [w, c] : tf) df[w] += 1;
    tfs.push_back(std::move(tf));
  }
  LMF_CHECK(!tfs.empty(), "domain filter: the reference corpus has no words");
  docs_ = tfs.size();
  const double n = static_cast<double>(docs_);
  for (const auto& [w, f] : df) idf_[w] = std::log((1 + n) / (1 + f)) + 1;
  unseen_idf_ = std::log(1 + n) + 1;
  for (const auto& tf : tfs) {
    double norm = 0;
    for (const auto& [w, c] : tf) norm += (c * idf_[w]) * (c * idf_[w]);
    norm = std::sqrt(norm);
    for (const auto& [w, c] : tf) centroid_[w] += c * idf_[w] / norm;
  }
  double norm = 0;
  for (const auto& [w, v] : centroid_) norm += v * v;
  norm = std::sqrt(norm);
  for (auto& [w, v] : centroid_) v /= norm;
}

double DomainScorer::idf(const std::string& w) const {
  auto it = idf_.find(w);
  return it == idf_.end() ? unseen_idf_ : it->second;
}

double DomainScorer::score(std::string_view text) const {
  const auto tf = term_counts(text);
  double dot = 0, norm = 0;
  for (const auto& [w, c] : tf) {
    const double v = c * idf(w);
    norm += v * v;
    auto it = centroid_.find(w);
    if (it != centroid_.end()) dot += v * it->second;
  }
  return norm > 0 ? dot / std::sqrt(norm) : 0.0;
}

}  // namespace lmforge::data
