#include "tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <queue>
#include <string>
#include <vector>

#include "tokenizer/unicode.h"

namespace lmforge::tokenizer {

using nlohmann::json;

void MergeTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  std::vector<Entry> old = std::move(slots_);
  slots_.assign(cap, Entry{});
  mask_ = cap - 1;
  count_ = 0;
  for (const Entry& e : old)
    if (e.key != kEmpty) insert(static_cast<uint32_t>(e.key >> 32), static_cast<uint32_t>(e.key), e.rank, e.id);
}

void MergeTable::insert(uint32_t a, uint32_t b, uint32_t rank, uint32_t id) {
  if ((count_ + 1) * 2 > slots_.size()) reserve(count_ + 1 > 8 ? count_ * 2 : 16);
  uint64_t key = (uint64_t{a} << 32) | b;
  for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
    Entry& e = slots_[i];
    if (e.key == key) {
      e.rank = rank;
      e.id = id;
      return;
    }
    if (e.key == kEmpty) {
      e = {key, rank, id};
      ++count_;
      return;
    }
  }
}

struct BpeModel::CacheShard {
  struct Slot {
    uint64_t hash = 0;  // 0: empty (a piece whose hash is 0 is never cached)
    uint32_t off = 0;   // into arena: the piece's bytes, then its ids (4-byte aligned)
    uint16_t len = 0;   // piece bytes
    uint16_t ids = 0;   // id count
  };
  static_assert((kCacheSlotsPerShard & (kCacheSlotsPerShard - 1)) == 0 &&
                (kCacheSeenPerShard & (kCacheSeenPerShard - 1)) == 0);
  std::mutex mu;
  // Allocated on first use, so a tokenizer that encodes little costs little.
  std::vector<Slot> slots;
  std::vector<uint64_t> seen;
  std::vector<unsigned char> arena;
  size_t used = 0, arena_top = 0;
  bool filled = false;  // the shard has been full (and started over) at least once

  // Appends the cached ids of `piece` to out; false when it is not cached.
  bool get(uint64_t h, std::string_view piece, std::vector<uint32_t>& out) const {
    if (slots.empty()) return false;
    for (size_t i = h & (kCacheSlotsPerShard - 1);; i = (i + 1) & (kCacheSlotsPerShard - 1)) {
      const Slot& s = slots[i];
      if (s.hash == 0) return false;
      if (s.hash != h || s.len != piece.size() || std::memcmp(arena.data() + s.off, piece.data(), s.len) != 0) continue;
      const size_t first = out.size();
      out.resize(first + s.ids);
      std::memcpy(out.data() + first, arena.data() + s.off + ((s.len + 3u) & ~3u), s.ids * sizeof(uint32_t));
      return true;
    }
  }
  // Whether a piece just computed is worth caching: anything until the shard first fills (a small or repetitive
  // input is then served from the cache from its second sighting on), afterwards only a piece met before (within
  // the reach of the direct-mapped table), so a stream of unique pieces cannot keep flushing the recurring ones.
  bool admit(uint64_t h) {
    if (seen.empty()) seen.resize(kCacheSeenPerShard);
    uint64_t& s = seen[(h >> 24) & (kCacheSeenPerShard - 1)];
    const bool again = s == h;
    s = h;
    return again || !filled;
  }
  void put(uint64_t h, std::string_view piece, const uint32_t* ids, size_t n) {
    const size_t key = (piece.size() + 3u) & ~size_t{3};
    const size_t need = key + n * sizeof(uint32_t);
    if (slots.empty()) {
      slots.resize(kCacheSlotsPerShard);
      arena.resize(kCacheArenaBytes);
    }
    if ((used + 1) * 2 > kCacheSlotsPerShard || arena_top + need > arena.size()) {
      std::fill(slots.begin(), slots.end(), Slot{});
      used = 0;
      arena_top = 0;
      filled = true;
    }
    size_t i = h & (kCacheSlotsPerShard - 1);
    while (slots[i].hash != 0) {
      if (slots[i].hash == h && slots[i].len == piece.size() &&
          std::memcmp(arena.data() + slots[i].off, piece.data(), piece.size()) == 0)
        return;  // another thread cached it meanwhile
      i = (i + 1) & (kCacheSlotsPerShard - 1);
    }
    std::memcpy(arena.data() + arena_top, piece.data(), piece.size());
    std::memcpy(arena.data() + arena_top + key, ids, n * sizeof(uint32_t));
    slots[i] = {h, static_cast<uint32_t>(arena_top), static_cast<uint16_t>(piece.size()), static_cast<uint16_t>(n)};
    arena_top += need;
    ++used;
  }
};

BpeModel::~BpeModel() = default;

namespace {

std::atomic<uint64_t> g_next_instance{1};

// Each thread's small direct-mapped front cache of pieces that the shared cache has already served once: a hit here
// takes no lock, so frequent words (most of English text) do not bounce the shared shards' mutexes between cores.
// Entries are tagged with the owning model's instance number; their buffers are reused, so a warm cache allocates
// nothing.
struct FrontEntry {
  uint64_t hash = 0, owner = 0;
  std::string piece;
  std::vector<uint32_t> ids;
};
constexpr size_t kFrontEntries = 2048;

FrontEntry& front_slot(uint64_t h) {
  thread_local std::vector<FrontEntry> front(kFrontEntries);
  return front[(h >> 7) & (kFrontEntries - 1)];
}

}  // namespace

BpeModel::BpeModel(const json& j, const Where& w)
    : cache_(new CacheShard[kCacheShards]), instance_(g_next_instance.fetch_add(1)) {
  if (!j.is_object()) fail(w, "must be an object");
  auto type = j.find("type");
  if (type != j.end() && !(type->is_string() && *type == "BPE")) {
    fail(w.at("type"), "unsupported model " + type->dump() + " (only byte-level \"BPE\" is supported)");
  }
  auto dropout = j.find("dropout");
  if (dropout != j.end() && !dropout->is_null() && !(dropout->is_number() && dropout->get<double>() == 0.0))
    fail(w.at("dropout"), "BPE dropout is not supported (must be null)");
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = j.find(affix);
    if (it != j.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
      fail(w.at(affix), "a non-empty subword affix is not supported (byte-level BPE does not use one)");
  }
  ignore_merges_ = bool_field(j, "ignore_merges", false, w);
  byte_fallback_ = bool_field(j, "byte_fallback", false, w);
  fuse_unk_ = bool_field(j, "fuse_unk", false, w);

  const json& vocab = field(j, "vocab", w);
  if (!vocab.is_object()) fail(w.at("vocab"), "must be an object of token: id");
  vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const json& v = it.value();
    if (!v.is_number_unsigned() || v.get<uint64_t>() >= (uint64_t{1} << 31))
      fail(w.at("vocab").at(it.key()), "id must be an integer in [0, 2^31)");
    auto id = static_cast<uint32_t>(v.get<uint64_t>());
    vocab_[it.key()] = id;
    if (id >= id_to_token_.size()) {
      if (id > vocab.size() * 4 + 1024)
        fail(w.at("vocab").at(it.key()), "id " + std::to_string(id) + " is far beyond the vocabulary size");
      id_to_token_.resize(id + 1);
      has_id_.resize(id + 1, false);
    }
    id_to_token_[id] = it.key();
    has_id_[id] = true;
  }

  auto unk = j.find("unk_token");
  if (unk != j.end() && !unk->is_null()) {
    if (!unk->is_string()) fail(w.at("unk_token"), "must be a string or null");
    auto f = vocab_.find(unk->get<std::string>());
    if (f == vocab_.end()) fail(w.at("unk_token"), "\"" + unk->get<std::string>() + "\" is not in the vocabulary");
    unk_id_ = f->second;
  }

  const auto& b2c = unicode::byte_to_cp();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    unicode::append_utf8(ch, b2c[b]);
    auto f = vocab_.find(ch);
    byte_char_id_[b] = f == vocab_.end() ? -1 : f->second;
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    auto g = vocab_.find(std::string_view(hex));
    byte_fallback_id_[b] = g == vocab_.end() ? -1 : g->second;
  }

  const json& merges = field(j, "merges", w);
  if (!merges.is_array()) fail(w.at("merges"), "must be an array");
  merges_.reserve(merges.size());
  std::string joined;
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    Where mw = w.at("merges").index(i);
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size())
        fail(mw, "must be \"left right\" (two tokens separated by one space)");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      fail(mw, "must be \"left right\" or [\"left\", \"right\"]");
    }
    auto fa = vocab_.find(a), fb = vocab_.find(b);
    if (fa == vocab_.end()) fail(mw, "token \"" + a + "\" is not in the vocabulary");
    if (fb == vocab_.end()) fail(mw, "token \"" + b + "\" is not in the vocabulary");
    joined = a + b;
    auto fj = vocab_.find(joined);
    if (fj == vocab_.end()) fail(mw, "merged token \"" + joined + "\" is not in the vocabulary");
    merges_.insert(fa->second, fb->second, static_cast<uint32_t>(i), fj->second);
  }
}

void BpeModel::initial_symbols(std::string_view piece, bool byte_level, std::vector<Symbol>& syms) const {
  syms.clear();
  auto add = [&](uint32_t id, uint32_t len) {
    int32_t n = static_cast<int32_t>(syms.size());
    syms.push_back({id, n - 1, n + 1, len});
  };
  std::string mapped;
  std::string_view s = piece;
  if (byte_level) {
    bool all = true;
    for (unsigned char c : piece) all &= byte_char_id_[c] >= 0;
    if (all) {
      for (unsigned char c : piece) add(static_cast<uint32_t>(byte_char_id_[c]), 1);
      if (!syms.empty()) syms.back().next = -1;
      return;
    }
    const auto& b2c = unicode::byte_to_cp();
    for (unsigned char c : piece) unicode::append_utf8(mapped, b2c[c]);
    s = mapped;
  }
  // HF's BPE::merge_word: characters missing from the vocabulary go to byte fallback, then to unk (fused when
  // fuse_unk), and are dropped when there is no unk token.
  int64_t pending_unk = -1;
  uint32_t pending_len = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    i += unicode::cp_len(static_cast<unsigned char>(s[i]));
    std::string_view ch = s.substr(start, i - start);
    auto f = vocab_.find(ch);
    if (f != vocab_.end()) {
      if (pending_unk >= 0) add(static_cast<uint32_t>(pending_unk), pending_len);
      pending_unk = -1;
      add(f->second, static_cast<uint32_t>(ch.size()));
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : ch) all &= byte_fallback_id_[c] >= 0;
      if (all) {
        // HF pushes byte-fallback tokens without flushing a pending unk first.
        for (unsigned char c : ch) add(static_cast<uint32_t>(byte_fallback_id_[c]), 1);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk >= 0 && fuse_unk_) {
        pending_len += static_cast<uint32_t>(ch.size());
      } else {
        if (pending_unk >= 0) add(static_cast<uint32_t>(pending_unk), pending_len);
        pending_unk = unk_id_;
        pending_len = static_cast<uint32_t>(ch.size());
      }
    }
  }
  if (pending_unk >= 0) add(static_cast<uint32_t>(pending_unk), pending_len);
  if (!syms.empty()) syms.back().next = -1;
}

void BpeModel::merge(std::vector<Symbol>& syms) const {
  struct Cand {
    uint32_t rank;
    int32_t pos;
    uint32_t id;
  };
  // Lowest rank first; among equal ranks the leftmost (HF's Merge ordering).
  auto later = [](const Cand& x, const Cand& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
  thread_local std::vector<Cand> heap;  // reused: no allocation per piece
  heap.clear();
  for (size_t i = 0; i + 1 < syms.size(); ++i)
    if (const auto* e = merges_.find(syms[i].id, syms[i + 1].id))
      heap.push_back({e->rank, static_cast<int32_t>(i), e->id});
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    Cand top = heap.back();
    heap.pop_back();
    Symbol& left = syms[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    Symbol& right = syms[left.next];
    const auto* e = merges_.find(left.id, right.id);
    if (!e || e->id != top.id) continue;  // stale: a neighbour changed since this pair was queued
    left.id = top.id;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const auto* p = merges_.find(syms[left.prev].id, left.id)) {
        heap.push_back({p->rank, left.prev, p->id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
    if (left.next >= 0) {
      if (const auto* n = merges_.find(left.id, syms[left.next].id)) {
        heap.push_back({n->rank, top.pos, n->id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
  }
}

void BpeModel::encode_piece(std::string_view piece, bool byte_level, std::vector<uint32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    // HF looks the whole piece up first and skips merging when it is a token.
    if (!byte_level) {
      auto f = vocab_.find(piece);
      if (f != vocab_.end()) {
        out.push_back(f->second);
        return;
      }
    } else {
      std::string mapped;
      mapped.reserve(piece.size() * 2);
      const auto& b2c = unicode::byte_to_cp();
      for (unsigned char c : piece) unicode::append_utf8(mapped, b2c[c]);
      auto f = vocab_.find(mapped);
      if (f != vocab_.end()) {
        out.push_back(f->second);
        return;
      }
    }
  }
  CacheShard* shard = nullptr;
  uint64_t h = 0;
  bool admit = false;
  if (piece.size() <= kCacheMaxPiece) {
    h = StringHash{}(piece);
    if (h != 0) {
      FrontEntry& fe = front_slot(h);
      if (fe.hash == h && fe.owner == instance_ && fe.piece == piece) {
        out.insert(out.end(), fe.ids.begin(), fe.ids.end());
        return;
      }
      shard = &cache_[(h >> 58) % kCacheShards];
      const size_t first = out.size();
      bool hit;
      {
        std::lock_guard<std::mutex> lock(shard->mu);
        hit = shard->get(h, piece, out);
        if (!hit) admit = shard->admit(h);
      }
      if (hit) {  // recurring: keep it in this thread's front cache too
        fe.hash = h;
        fe.owner = instance_;
        fe.piece.assign(piece);
        fe.ids.assign(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
        return;
      }
    }
  }
  thread_local std::vector<Symbol> syms;
  initial_symbols(piece, byte_level, syms);
  merge(syms);
  const size_t first = out.size();
  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
  if (admit) {
    std::lock_guard<std::mutex> lock(shard->mu);
    shard->put(h, piece, out.data() + first, out.size() - first);
  }
}

}  // namespace lmforge::tokenizer
