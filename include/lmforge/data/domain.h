// TF-IDF domain filter: how close a document is to a reference corpus of the wanted domain. IDF comes from the
// reference documents (smoothed as scikit-learn does: ln((1 + N) / (1 + df)) + 1); the domain is the normalised
// sum of the references' L2-normalised TF-IDF vectors; a document's score is the cosine between its TF-IDF vector
// and that centroid, in [0, 1]. Words are dedup_words (lower-cased, CJK characters one word each).
#pragma once
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lmforge::data {

class DomainScorer {
 public:
  explicit DomainScorer(const std::vector<std::string>& reference_docs);
  // Thread-safe.
  double score(std::string_view text) const;
  size_t vocabulary() const { return idf_.size(); }
  size_t documents() const { return docs_; }

 private:
  double idf(const std::string& w) const;
  std::unordered_map<std::string, double> idf_, centroid_;
  double unseen_idf_ = 1;
  size_t docs_ = 0;
};

}  // namespace lmforge::data
