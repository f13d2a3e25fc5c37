#include "lmforge/io/safetensors.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lmforge/core/error.h"
#include "temp_dir_test.h"

namespace fs = std::filesystem;
using lmforge::DType;
using lmforge::Error;
using lmforge::Shape;
using lmforge::Tensor;
using lmforge::io::load_safetensors;
using lmforge::io::NamedTensors;
using lmforge::io::SafetensorsFile;
using lmforge::io::save_safetensors;
using lmforge::io::serialize_safetensors;

namespace {

std::string u64le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) {
    s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  }
  return s;
}

// A file from a header text and a data buffer, the length field computed.
std::string st_file(const std::string& header, const std::string& data = "") {
  return u64le(header.size()) + header + data;
}

// A single-tensor header around `entry`, the JSON value of tensor "w".
std::string one_entry(const std::string& entry, size_t data_bytes) {
  return st_file("{\"w\":" + entry + "}", std::string(data_bytes, '\0'));
}

template <typename T>
std::string le_bytes(std::initializer_list<T> values) {
  std::string s;
  for (T v : values) {
    s.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  return s;
}

// Float values into a tensor of `dtype`; spares the float/double overload ambiguity of integer literals.
Tensor tf(const std::vector<float>& v, const Shape& shape, DType dtype = DType::F32) {
  return Tensor::from_vector(v, shape, dtype);
}

std::string raw_bytes(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.raw_data()), c.nbytes());
}

class SafetensorsTest : public lmforge::testing::TempDirTest {
 protected:
  std::string write_raw(const std::string& name, const std::string& bytes) const {
    std::string p = path(name);
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  static std::string read_raw(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
  }

  // Opening `bytes` must fail with one line that names the file and every needle.
  void expect_bad(const std::string& bytes, std::initializer_list<std::string> needles) const {
    const std::string p = write_raw("bad.safetensors", bytes);
    try {
      SafetensorsFile::open(p);
      ADD_FAILURE() << "expected lmforge::Error";
      return;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      for (const std::string& n : needles) {
        EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' in: " << msg;
      }
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
};

// ---- round trips ----

TEST_F(SafetensorsTest, RoundTripEveryDtypeAndShape) {
  NamedTensors in = {
      {"f32", tf({1.5f, -2.f, 3.25f, 0.f, 1e-8f, -7.f}, {2, 3})},
      {"f64", Tensor::from_vector(std::vector<double>{1.0 / 3, -1e300, 0.0, 42.0}, {4})},
      {"f16", tf({0.5f, -1.f, 65504.f, 6e-5f, 2.f, 3.f}, {3, 2}, DType::F16)},
      {"bf16", tf({1.f, 2.f, 3.f, 4.f, -5.f, 6.f, 7.f, 1e30f}, {2, 2, 2}, DType::BF16)},
      {"i32", Tensor::from_ints({0, -1, 2147483647, -2147483647 - 1, 5}, {5})},
      {"scalar", tf({3.5f}, {})},
      {"empty", Tensor::zeros({0, 3})},
      {"empty_bf16", Tensor::zeros({4, 0}, DType::BF16)},
  };
  const std::string p = path("all.safetensors");
  save_safetensors(p, in);
  SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.size(), in.size());
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(f.contains(name)) << name;
    Tensor got = f.get(name);
    EXPECT_EQ(got.dtype(), t.dtype()) << name;
    EXPECT_EQ(got.shape(), t.shape()) << name;
    EXPECT_EQ(raw_bytes(got), raw_bytes(t)) << name;
  }
  EXPECT_EQ(f.get("scalar").dim(), 0);
  EXPECT_EQ(f.get("scalar").item(), 3.5);

  auto all = load_safetensors(p);
  EXPECT_EQ(all.size(), in.size());
  EXPECT_EQ(all.at("i32").to_int_vector(), (std::vector<int32_t>{0, -1, 2147483647, -2147483647 - 1, 5}));
}

TEST_F(SafetensorsTest, NonContiguousTensorIsWrittenContiguous) {
  Tensor t = tf({1, 2, 3, 4, 5, 6}, {2, 3}).transpose(0, 1);
  ASSERT_FALSE(t.is_contiguous());
  const std::string p = path("t.safetensors");
  save_safetensors(p, {{"t", t}});
  Tensor got = SafetensorsFile::open(p).get("t");
  EXPECT_EQ(got.shape(), (Shape{3, 2}));
  EXPECT_EQ(got.to_float_vector(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST_F(SafetensorsTest, MetadataRoundTrip) {
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"unicode", "h\xc3\xa9llo \xe2\x9c\x93"}, {"quote\"key", "line\nbreak\\ and \ttab"}, {"", ""}};
  const std::string p = path("m.safetensors");
  save_safetensors(p, {{"x", Tensor::zeros({2})}}, meta);
  EXPECT_EQ(SafetensorsFile::open(p).metadata(), meta);

  save_safetensors(p, {{"x", Tensor::zeros({2})}});
  EXPECT_TRUE(SafetensorsFile::open(p).metadata().empty());
}

TEST_F(SafetensorsTest, NoTensorsAtAll) {
  const std::string p = path("none.safetensors");
  save_safetensors(p, {}, {{"k", "v"}});
  SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.size(), 0u);
  EXPECT_EQ(f.metadata().at("k"), "v");
}

TEST_F(SafetensorsTest, NamesEntryAndMissingTensor) {
  const std::string p = path("n.safetensors");
  save_safetensors(p, {{"b", Tensor::zeros({1})}, {"a", Tensor::zeros({2}, DType::F64)}});
  SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b"}));  // data order: f64 first
  EXPECT_EQ(f.entry("a").dtype, "F64");
  EXPECT_EQ(f.entry("a").begin, 0u);
  EXPECT_EQ(f.entry("a").end, 16u);
  EXPECT_FALSE(f.contains("c"));
  try {
    f.get("c");
    FAIL() << "expected lmforge::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'c'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// ---- zero copy ----

TEST_F(SafetensorsTest, GetIsZeroCopyAndOutlivesTheFile) {
  const std::string p = path("z.safetensors");
  save_safetensors(p, {{"w", tf({1, 2, 3, 4}, {2, 2})}, {"h", Tensor::zeros({3}, DType::F16)}});
  Tensor a, b;
  {
    SafetensorsFile f = SafetensorsFile::open(p);
    a = f.get("w");
    b = f.get("w");
    // Both views point into the one mapping, at the tensor's bytes, with no storage of their own.
    EXPECT_EQ(a.raw_data(), b.raw_data());
    EXPECT_EQ(a.storage()->bytes(), 16u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.raw_data()) % 4, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.get("h").raw_data()) % 2, 0u);
  }
  EXPECT_EQ(a.to_float_vector(), (std::vector<float>{1, 2, 3, 4}));
  // The mapping is copy-on-write: in-place updates work and never reach the file.
  a.data<float>()[0] = 100.f;
  EXPECT_EQ(b.data<float>()[0], 100.f);
  EXPECT_EQ(SafetensorsFile::open(p).get("w").to_float_vector(), (std::vector<float>{1, 2, 3, 4}));
}

// drop_pages gives a tensor's whole pages back; reading it again re-reads the file, and its neighbours' bytes
// (sharing the first and last page) are untouched.
TEST_F(SafetensorsTest, DropPagesThenReadAgain) {
  const std::string p = path("d.safetensors");
  std::vector<float> big(5000), small{1, 2, 3};
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i) * 0.5f;
  save_safetensors(p, {{"a", tf(small, {3})}, {"big", Tensor::from_vector(big, {5000})}, {"z", tf(small, {3})}});
  SafetensorsFile f = SafetensorsFile::open(p);
  const std::vector<float> before = f.get("big").to_float_vector();
  f.drop_pages("big");
  EXPECT_EQ(f.get("big").to_float_vector(), before);
  EXPECT_EQ(f.get("a").to_float_vector(), small);
  EXPECT_EQ(f.get("z").to_float_vector(), small);
  EXPECT_THROW(f.drop_pages("missing"), Error);
  const SafetensorsFile m = SafetensorsFile::from_bytes(serialize_safetensors({{"w", tf(small, {3})}}));
  m.drop_pages("w");  // not a mapping: nothing to drop
  EXPECT_EQ(m.get("w").to_float_vector(), small);
}

TEST_F(SafetensorsTest, ReplacingTheFileLeavesOpenViewsIntact) {
  const std::string p = path("r.safetensors");
  save_safetensors(p, {{"w", tf({1, 2}, {2})}});
  Tensor old = SafetensorsFile::open(p).get("w");
  save_safetensors(p, {{"w", tf({7, 8, 9}, {3})}});
  EXPECT_EQ(old.to_float_vector(), (std::vector<float>{1, 2}));
  EXPECT_EQ(SafetensorsFile::open(p).get("w").to_float_vector(), (std::vector<float>{7, 8, 9}));
}

TEST_F(SafetensorsTest, MisalignedTensorIsCopied) {
  // Header padded to 8 bytes so the data buffer is 8-aligned; "w" then starts 2 bytes in.
  std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string p =
      write_raw("mis.safetensors", st_file(header, std::string(2, '\0') + le_bytes<float>({1.25f, -3.f})));
  SafetensorsFile f = SafetensorsFile::open(p);
  Tensor a = f.get("w"), b = f.get("w");
  EXPECT_NE(a.raw_data(), b.raw_data());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.raw_data()) % 4, 0u);
  EXPECT_EQ(a.to_float_vector(), (std::vector<float>{1.25f, -3.f}));
}

TEST_F(SafetensorsTest, FromBytesParsesInMemory) {
  const std::string bytes = serialize_safetensors({{"x", Tensor::from_ints({4, 5}, {2})}}, {{"a", "b"}});
  SafetensorsFile f = SafetensorsFile::from_bytes(bytes, "mem");
  EXPECT_EQ(f.path(), "mem");
  EXPECT_EQ(f.get("x").to_int_vector(), (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(f.metadata().at("a"), "b");
}

// ---- the writer's exact bytes, computed by hand from the format and the reference writer's rules ----

TEST_F(SafetensorsTest, WriterBytesSingleTensor) {
  // 64 header bytes: already a multiple of 8, so no padding.
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header.size(), 64u);
  const std::string expect = std::string("\x40\0\0\0\0\0\0\0", 8) + header + le_bytes<float>({0, 1, 2, 3, 4, 5});
  Tensor t = tf({0, 1, 2, 3, 4, 5}, {1, 2, 3});
  EXPECT_EQ(serialize_safetensors({{"attn.0", t}}), expect);
  const std::string p = path("one.safetensors");
  save_safetensors(p, {{"attn.0", t}});
  EXPECT_EQ(read_raw(p), expect);
}

TEST_F(SafetensorsTest, WriterBytesEmptyAndMetadataOnly) {
  EXPECT_EQ(serialize_safetensors({}), std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  // {"__metadata__":{"framework":"pt"}} is 35 bytes, padded to 40.
  EXPECT_EQ(serialize_safetensors({}, {{"framework", "pt"}}),
            std::string("\x28\0\0\0\0\0\0\0", 8) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
}

TEST_F(SafetensorsTest, WriterBytesSortByAlignmentThenName) {
  NamedTensors in = {
      {"e", tf({1.f, 2.f}, {1, 2}, DType::BF16)},
      {"a", tf({1.5f, -2.f, 0.5f}, {3}, DType::F16)},
      {"z", tf({3.f}, {})},
      {"d", Tensor::from_ints({7}, {1})},
      {"c", Tensor::from_vector(std::vector<double>{0.25}, {1})},
      {"b", tf({1.f, -2.f}, {2})},
  };
  // Order: F64 c, F32 b then z, I32 d, BF16 e, F16 a. 361 header bytes, padded with 7 spaces to 368.
  std::string header = R"({"__metadata__":{"format":"pt"},)"
                       R"("c":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
                       R"("z":{"dtype":"F32","shape":[],"data_offsets":[16,20]},)"
                       R"("d":{"dtype":"I32","shape":[1],"data_offsets":[20,24]},)"
                       R"("e":{"dtype":"BF16","shape":[1,2],"data_offsets":[24,28]},)"
                       R"("a":{"dtype":"F16","shape":[3],"data_offsets":[28,34]}})";
  ASSERT_EQ(header.size(), 361u);
  header += "       ";
  const std::string data = std::string("\0\0\0\0\0\0\xd0\x3f", 8)         // c: 0.25
                           + std::string("\0\0\x80\x3f\0\0\0\xc0", 8)     // b: 1, -2
                           + std::string("\0\0\x40\x40", 4)               // z: 3
                           + std::string("\x07\0\0\0", 4)                 // d: 7
                           + std::string("\x80\x3f\x00\x40", 4)           // e: bf16 1, 2
                           + std::string("\x00\x3e\x00\xc0\x00\x38", 6);  // a: f16 1.5, -2, 0.5
  const std::string expect = u64le(368) + header + data;
  EXPECT_EQ(serialize_safetensors(in, {{"format", "pt"}}), expect);
}

// When Python's reference implementation is installed, compare with its bytes directly.
TEST_F(SafetensorsTest, WriterBytesMatchPythonReference) {
  // find_spec first: importing torch just to learn safetensors is missing would cost seconds.
  if (std::system(
          "/usr/bin/python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec(\"safetensors\") is None)'"
          " >/dev/null 2>&1") != 0 ||
      std::system("/usr/bin/python3 -c 'import torch, safetensors.torch' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 with torch and safetensors not available; the hand-computed byte tests cover this";
  }
  const std::string script = path("ref.py"), out = path("ref.safetensors");
  write_raw("ref.py",
            "import sys, torch\n"
            "from safetensors.torch import save_file\n"
            "save_file({'b': torch.arange(6, dtype=torch.float32).reshape(2, 3),\n"
            "           'a': torch.tensor([1.5, -2.0], dtype=torch.float16),\n"
            "           'c': torch.tensor([7, -8, 9], dtype=torch.int32),\n"
            "           'd': torch.tensor(0.25, dtype=torch.float64),\n"
            "           'e': torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16)},\n"
            "          sys.argv[1], metadata={'format': 'pt'})\n");
  ASSERT_EQ(std::system(("/usr/bin/python3 '" + script + "' '" + out + "'").c_str()), 0);
  NamedTensors in = {
      {"b", tf({0, 1, 2, 3, 4, 5}, {2, 3})},      {"a", tf({1.5f, -2.f}, {2}, DType::F16)},
      {"c", Tensor::from_ints({7, -8, 9}, {3})},  {"d", Tensor::from_vector(std::vector<double>{0.25}, {})},
      {"e", tf({1.f, 2.f}, {1, 2}, DType::BF16)},
  };
  EXPECT_EQ(serialize_safetensors(in, {{"format", "pt"}}), read_raw(out));
}

// ---- writer refusals ----

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  const std::string p = path("w.safetensors");
  auto expect_msg = [&](const NamedTensors& in, const std::string& needle) {
    try {
      save_safetensors(p, in);
      ADD_FAILURE() << "expected lmforge::Error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_msg({{"q", Tensor::zeros({2, 32}, DType::Q8_0)}}, "'q' has dtype q8_0");
  expect_msg({{"q", Tensor::zeros({32}, DType::Q4_0)}}, "'q' has dtype q4_0");
  expect_msg({{"x", Tensor::zeros({1})}, {"x", Tensor::zeros({2})}}, "'x' appears twice");
  expect_msg({{"__metadata__", Tensor::zeros({1})}}, "__metadata__");
  expect_msg({{"u", Tensor()}}, "'u' is undefined");
  expect_msg({{"bad\xff", Tensor::zeros({1})}}, "UTF-8");
  EXPECT_FALSE(fs::exists(p));
}

// The streamed writer: the same bytes as save_safetensors, each tensor asked for once, in data order, only when due;
// a tensor that is not what was announced aborts the write and leaves the old file.
TEST_F(SafetensorsTest, StreamedWriterMatchesAndAsksInDataOrder) {
  using lmforge::io::SafetensorsSpec;
  NamedTensors in = {{"e", tf({1.f, 2.f}, {1, 2}, DType::BF16)},
                     {"a", tf({1.5f, -2.f, 0.5f}, {3}, DType::F16)},
                     {"z", tf({3.f}, {})},
                     {"d", Tensor::from_ints({7}, {1})},
                     {"c", Tensor::from_vector(std::vector<double>{0.25}, {1})},
                     {"b", tf({1.f, -2.f}, {2})},
                     {"m", tf({1, 2, 3, 4, 5, 6}, {3, 2}).transpose(0, 1)}};
  std::vector<SafetensorsSpec> specs;
  for (const auto& [name, t] : in) specs.push_back({name, t.dtype(), t.shape()});
  const std::string p = path("s.safetensors");
  std::vector<std::string> asked;
  size_t ready = 0;  // tensors made so far: the writer must not need one before the previous is written
  lmforge::io::save_safetensors_streamed(p, specs, {{"format", "pt"}}, [&](size_t i, const SafetensorsSpec& s) {
    EXPECT_EQ(s.name, in[i].first);
    asked.push_back(s.name);
    ++ready;
    return in[i].second;
  });
  EXPECT_EQ(read_raw(p), serialize_safetensors(in, {{"format", "pt"}}));
  EXPECT_EQ(asked, (std::vector<std::string>{"c", "b", "m", "z", "d", "e", "a"}));
  EXPECT_EQ(ready, in.size());

  const std::string before = read_raw(p);
  for (const auto& bad : {tf({1.f, 2.f, 3.f}, {3}), tf({1.f, 2.f}, {2}, DType::F16), Tensor()}) {
    try {
      lmforge::io::save_safetensors_streamed(
          p, specs, {}, [&](size_t i, const SafetensorsSpec& s) { return s.name == "z" ? bad : in[i].second; });
      ADD_FAILURE() << "expected lmforge::Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'z' was announced as f32 []"), std::string::npos) << e.what();
    }
    EXPECT_EQ(read_raw(p), before);
  }
}

// ---- hostile and broken files: each must fail with one line naming the file and the field ----

TEST_F(SafetensorsTest, BadEmptyFile) {
  expect_bad("", {"0 bytes", "header length"});
}
TEST_F(SafetensorsTest, BadShorterThanLengthField) {
  expect_bad("abc", {"3 bytes", "header length"});
}
TEST_F(SafetensorsTest, BadHeaderLengthPastEnd) {
  expect_bad(u64le(1000) + "{}", {"header length 1000", "past the end"});
}
TEST_F(SafetensorsTest, BadHeaderLengthOverLimit) {
  expect_bad(u64le(200'000'000) + "{}", {"header length 200000000", "limit"});
}
TEST_F(SafetensorsTest, BadHeaderLengthMaxU64) {
  expect_bad(u64le(std::numeric_limits<uint64_t>::max()) + "{}", {"header length", "limit"});
}
TEST_F(SafetensorsTest, BadHeaderNotJson) {
  expect_bad(st_file("{not json"), {"header", "not valid JSON"});
}
TEST_F(SafetensorsTest, BadHeaderEmpty) {
  expect_bad(st_file(""), {"header", "not valid JSON"});
}
TEST_F(SafetensorsTest, BadHeaderInvalidUtf8) {
  expect_bad(st_file("{\"\xff\":1}"), {"header", "not valid JSON"});
}
TEST_F(SafetensorsTest, BadHeaderNotAnObject) {
  expect_bad(st_file("[1,2]"), {"header is an array"});
}
TEST_F(SafetensorsTest, BadHeaderNestedTooDeep) {
  expect_bad(st_file("{\"w\":" + std::string(100000, '[') + std::string(100000, ']') + "}"), {"header", "deeper"});
}
TEST_F(SafetensorsTest, BadHeaderHugeNumber) {
  expect_bad(st_file("{\"w\":1e400}"), {"header", "not valid JSON"});
}
TEST_F(SafetensorsTest, BadDuplicateTensorName) {
  const std::string e = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  expect_bad(st_file("{\"w\":" + e + ",\"w\":" + e + "}", std::string(4, '\0')), {"'w'", "more than once"});
}
TEST_F(SafetensorsTest, BadEntryNotObject) {
  expect_bad(one_entry("5", 0), {"tensor 'w'", "entry", "an integer"});
}
TEST_F(SafetensorsTest, BadMissingDtype) {
  expect_bad(one_entry(R"({"shape":[1],"data_offsets":[0,4]})", 4), {"tensor 'w'", "missing field 'dtype'"});
}
TEST_F(SafetensorsTest, BadMissingShape) {
  expect_bad(one_entry(R"({"dtype":"F32","data_offsets":[0,4]})", 4), {"tensor 'w'", "missing field 'shape'"});
}
TEST_F(SafetensorsTest, BadMissingDataOffsets) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[1]})", 4), {"tensor 'w'", "missing field 'data_offsets'"});
}
TEST_F(SafetensorsTest, BadDtypeNotString) {
  expect_bad(one_entry(R"({"dtype":32,"shape":[1],"data_offsets":[0,4]})", 4), {"tensor 'w'", "'dtype'", "string"});
}
TEST_F(SafetensorsTest, BadUnknownDtype) {
  expect_bad(one_entry(R"({"dtype":"F33","shape":[1],"data_offsets":[0,4]})", 4),
             {"tensor 'w'", "'dtype'", "unknown dtype 'F33'"});
}
TEST_F(SafetensorsTest, BadShapeNotArray) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":"1","data_offsets":[0,4]})", 4), {"tensor 'w'", "'shape'"});
}
TEST_F(SafetensorsTest, BadShapeFloatDim) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", 4),
             {"tensor 'w'", "'shape'", "dimension 0", "float"});
}
TEST_F(SafetensorsTest, BadShapeStringDim) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[1,"2"],"data_offsets":[0,8]})", 8),
             {"tensor 'w'", "'shape'", "dimension 1", "string"});
}
TEST_F(SafetensorsTest, BadShapeNestedDim) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[[2]],"data_offsets":[0,8]})", 8),
             {"tensor 'w'", "'shape'", "dimension 0", "array"});
}
TEST_F(SafetensorsTest, BadShapeNegativeDim) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[2,-3],"data_offsets":[0,4]})", 4),
             {"tensor 'w'", "'shape'", "dimension 1", "negative"});
}
TEST_F(SafetensorsTest, BadShapeHugeDim) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]})", 4),
             {"tensor 'w'", "'shape'", "dimension 0", "too large"});
}
TEST_F(SafetensorsTest, BadShapeDimBeyondU64) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]})", 4),
             {"tensor 'w'", "'shape'", "dimension 0"});
}
TEST_F(SafetensorsTest, BadShapeProductOverflow) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]})", 4),
             {"tensor 'w'", "'shape'", "overflows"});
}
TEST_F(SafetensorsTest, BadShapeOverflowHiddenByZero) {
  // No elements, but strides over this shape would overflow.
  expect_bad(one_entry(R"({"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]})", 0),
             {"tensor 'w'", "'shape'", "overflows"});
}
TEST_F(SafetensorsTest, BadShapeByteSizeOverflow) {
  expect_bad(one_entry(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]})", 8),
             {"tensor 'w'", "'shape'", "overflows"});
}
TEST_F(SafetensorsTest, BadDataOffsetsNotArray) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[1],"data_offsets":"0-4"})", 4),
             {"tensor 'w'", "'data_offsets'", "[begin, end]"});
}
TEST_F(SafetensorsTest, BadDataOffsetsWrongLength) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})", 8),
             {"tensor 'w'", "'data_offsets'", "[begin, end]"});
}
TEST_F(SafetensorsTest, BadDataOffsetsNegative) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})", 4), {"tensor 'w'", "'data_offsets'"});
}
TEST_F(SafetensorsTest, BadDataOffsetsFloat) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4.0]})", 4),
             {"tensor 'w'", "'data_offsets'", "float"});
}
TEST_F(SafetensorsTest, BadDataOffsetsBeginAfterEnd) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[0],"data_offsets":[8,4]})", 8),
             {"tensor 'w'", "'data_offsets'", "begin after end"});
}
TEST_F(SafetensorsTest, BadDataOffsetsBeyondBuffer) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 4),
             {"tensor 'w'", "'data_offsets'", "beyond the data buffer"});
}
TEST_F(SafetensorsTest, BadDataOffsetsHugeEnd) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]})", 4),
             {"tensor 'w'", "'data_offsets'", "beyond the data buffer"});
}
TEST_F(SafetensorsTest, BadByteLengthMismatch) {
  expect_bad(one_entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})", 8),
             {"tensor 'w'", "'data_offsets'", "needs 8"});
}
TEST_F(SafetensorsTest, BadOverlappingTensors) {
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                     std::string(12, '\0')),
             {"'a'", "'b'", "overlap", "'data_offsets'"});
}
TEST_F(SafetensorsTest, BadIdenticalRanges) {
  expect_bad(st_file(R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
                     std::string(4, '\0')),
             {"'a'", "'b'", "overlap"});
}
TEST_F(SafetensorsTest, BadMetadataNotObject) {
  expect_bad(st_file(R"({"__metadata__":["a"]})"), {"'__metadata__'", "an array"});
}
TEST_F(SafetensorsTest, BadMetadataValueNotString) {
  expect_bad(st_file(R"({"__metadata__":{"k":1}})"), {"'__metadata__'", "'k'", "string"});
}
TEST_F(SafetensorsTest, BadNameWithControlCharsStaysOneLine) {
  expect_bad(st_file("{\"a\\nb\":{\"dtype\":\"XX\",\"shape\":[],\"data_offsets\":[0,0]}}"), {"'a\\x0ab'", "dtype"});
}
TEST_F(SafetensorsTest, BadNotARegularFile) {
  try {
    SafetensorsFile::open(dir_.string());
    FAIL() << "expected lmforge::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
}
TEST_F(SafetensorsTest, BadMissingFile) {
  const std::string p = path("absent.safetensors");
  try {
    SafetensorsFile::open(p);
    FAIL() << "expected lmforge::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
}

// ---- valid files this reader accepts ----

TEST_F(SafetensorsTest, UnsupportedDtypeListsButGetFails) {
  for (const char* dt : {"I64", "I16", "BOOL", "F8_E4M3", "F8_E5M2"}) {
    const std::string elem = std::string(dt) == "I64" ? "8" : std::string(dt) == "I16" ? "2" : "1";
    const std::string p = write_raw(
        "u.safetensors", st_file(std::string(R"({"ids":{"dtype":")") + dt + R"(","shape":[2],"data_offsets":[0,)" +
                                     std::to_string(2 * std::stoi(elem)) + "]}}",
                                 std::string(16, '\0')));
    SafetensorsFile f = SafetensorsFile::open(p);
    EXPECT_EQ(f.names(), std::vector<std::string>{"ids"});
    EXPECT_EQ(f.entry("ids").dtype, dt);
    try {
      f.get("ids");
      ADD_FAILURE() << "expected lmforge::Error for " << dt;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      EXPECT_NE(msg.find("'ids'"), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::string("dtype ") + dt), std::string::npos) << msg;
      EXPECT_NE(msg.find("does not support"), std::string::npos) << msg;
    }
    EXPECT_THROW(load_safetensors(p), Error);
  }
}

// U8 / I8 carry the raw codes of quantized weights; they round-trip byte for byte.
TEST_F(SafetensorsTest, U8AndI8RoundTrip) {
  Tensor u = Tensor::empty({3}, DType::U8);
  Tensor i = Tensor::empty({2, 2}, DType::I8);
  const uint8_t uv[3] = {0, 7, 255};
  const int8_t iv[4] = {-128, -1, 0, 127};
  std::memcpy(u.raw_data(), uv, 3);
  std::memcpy(i.raw_data(), iv, 4);
  const std::string p = path("q.safetensors");
  save_safetensors(p, {{"codes", u}, {"signed", i}});
  auto back = load_safetensors(p);
  ASSERT_EQ(back.at("codes").dtype(), DType::U8);
  ASSERT_EQ(back.at("signed").dtype(), DType::I8);
  EXPECT_EQ(std::memcmp(back.at("codes").raw_data(), uv, 3), 0);
  EXPECT_EQ(std::memcmp(back.at("signed").raw_data(), iv, 4), 0);
  EXPECT_EQ(back.at("signed").shape(), (Shape{2, 2}));
}

TEST_F(SafetensorsTest, GapsTrailingBytesAndSharedEmptyOffsetsAreAccepted) {
  const std::string p = write_raw(
      "gap.safetensors",
      st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
              R"("e1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
              R"("e2":{"dtype":"BF16","shape":[0,5],"data_offsets":[4,4]},"extra":{"dtype":"I32","shape":[1],)"
              R"("data_offsets":[8,12],"note":"unknown fields are ignored"}})",
              std::string(4, '\0') + le_bytes<float>({2.5f}) + le_bytes<int32_t>({-9}) + "trailing"));
  SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.get("a").item(), 2.5);
  EXPECT_EQ(f.get("extra").item(), -9);
  EXPECT_EQ(f.get("e2").shape(), (Shape{0, 5}));
}

// Every prefix of a valid file either loads or throws lmforge::Error; never anything else.
TEST_F(SafetensorsTest, EveryTruncationLoadsOrThrows) {
  const std::string full = serialize_safetensors(
      {{"w", tf({1, 2, 3, 4, 5, 6}, {2, 3})}, {"h", tf({1, 2}, {2}, DType::F16)}, {"i", Tensor::from_ints({3}, {})}},
      {{"format", "pt"}});
  size_t loaded = 0;
  for (size_t len = 0; len <= full.size(); ++len) {
    const std::string p = write_raw("trunc.safetensors", full.substr(0, len));
    try {
      for (const auto& [name, t] : load_safetensors(p)) {
        (void)t.to_double_vector();
      }
      ++loaded;
    } catch (const Error&) {
    }
  }
  EXPECT_EQ(loaded, 1u);  // only the full file: each tensor ends the buffer or is followed by another
}

// A cheap in-process fuzz: every single-byte corruption of a small valid file loads or throws lmforge::Error.
TEST_F(SafetensorsTest, EveryByteCorruptionLoadsOrThrows) {
  const std::string full =
      serialize_safetensors({{"w", tf({1, 2, 3, 4}, {2, 2})}, {"b", tf({1, 2}, {2}, DType::BF16)}}, {{"k", "v"}});
  for (size_t i = 0; i < full.size(); ++i) {
    for (unsigned char c : {0x00, 0x01, 0x20, 0x22, 0x2c, 0x2d, 0x30, 0x39, 0x5b, 0x7b, 0x7d, 0x80, 0xff}) {
      std::string bad = full;
      bad[i] = static_cast<char>(c);
      try {
        SafetensorsFile f = SafetensorsFile::from_bytes(bad);
        for (const std::string& name : f.names()) {
          (void)f.get(name).to_double_vector();
        }
      } catch (const Error&) {
      }
    }
  }
}

}  // namespace
