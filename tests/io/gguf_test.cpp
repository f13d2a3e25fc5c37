#include "lmforge/io/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "lmforge/core/error.h"
#include "temp_dir_test.h"

using lmforge::DType;
using lmforge::Error;
using lmforge::Tensor;
using lmforge::io::GgufFile;
using lmforge::io::GgufType;
using lmforge::io::GgufValue;
using lmforge::io::GgufWriter;

namespace {

// Builds GGUF bytes field by field, independently of GgufWriter, following gguf.md.
struct Bytes {
  std::string b;
  template <typename T>
  Bytes& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
    return *this;
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b += "GGUF";
    return put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  }
  Bytes& tensor_info(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).put<uint32_t>(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) put<uint64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  Bytes& pad(size_t align = 32) {
    while (b.size() % align) b.push_back('\0');
    return *this;
  }
};

// One f32 tensor "w" of ne {2, 3} (shape [3, 2]) holding 0..5, with one u32 metadata key.
std::string valid_file() {
  Bytes f;
  f.header(1, 1).str("general.name").put<uint32_t>(8).str("tiny");
  f.tensor_info("w", {2, 3}, 0, 0).pad();
  for (int i = 0; i < 6; ++i) f.put<float>(static_cast<float>(i));
  return f.b;
}

void expect_error(const std::string& bytes, const std::string& needle) {
  try {
    GgufFile::from_bytes(bytes, "bad.gguf");
    FAIL() << "no error; expected one mentioning " << needle;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

class GgufTest : public lmforge::testing::TempDirTest {};

}  // namespace

TEST(Gguf, ReadsHandBuiltFile) {
  GgufFile f = GgufFile::from_bytes(valid_file());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_string("general.name"), "tiny");
  ASSERT_EQ(f.tensors().size(), 1u);
  const auto& ti = f.tensor("w");
  EXPECT_EQ(ti.shape, (lmforge::Shape{3, 2}));  // ne reversed
  EXPECT_EQ(ti.nbytes, 24u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  Tensor t = f.get("w");
  EXPECT_EQ(t.dtype(), DType::F32);
  EXPECT_EQ(t.to_float_vector(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
}

TEST(Gguf, EveryMetadataTypeRoundTrips) {
  GgufWriter w;
  w.set("u8", GgufValue::int_array(GgufType::U8, {}));  // empty array
  const GgufType ints[] = {GgufType::U8,  GgufType::I8,  GgufType::U16, GgufType::I16, GgufType::U32,
                           GgufType::I32, GgufType::U64, GgufType::I64, GgufType::BOOL};
  const int64_t vals[] = {255, -128, 65535, -32768, 4000000000LL, -2000000000, (int64_t{1} << 40), -(int64_t{1} << 50),
                          1};
  for (size_t k = 0; k < std::size(ints); ++k) {
    GgufValue x;
    x.type = ints[k];
    x.i = vals[k];
    w.set("s." + std::string(lmforge::io::gguf_type_name(ints[k])), x);
    w.set("a." + std::string(lmforge::io::gguf_type_name(ints[k])), GgufValue::int_array(ints[k], {vals[k], 0}));
  }
  w.set("f32", GgufValue::f32(0.25f));
  GgufValue f64;
  f64.type = GgufType::F64;
  f64.f = 1e-300;
  w.set("f64", f64);
  w.set("af32", GgufValue::float_array(GgufType::F32, {1.5, -2.0}));
  w.set("af64", GgufValue::float_array(GgufType::F64, {1e300}));
  w.set("str", GgufValue::string("h\xc3\xa9llo"));
  w.set("strs", GgufValue::string_array({"a", "", "\xe4\xb8\xad b"}));
  GgufFile f = GgufFile::from_bytes(w.serialize());
  for (size_t k = 0; k < std::size(ints); ++k) {
    const GgufValue& s = f.at("s." + std::string(lmforge::io::gguf_type_name(ints[k])));
    EXPECT_EQ(s.type, ints[k]);
    EXPECT_EQ(s.i, vals[k]);
    const GgufValue& a = f.at("a." + std::string(lmforge::io::gguf_type_name(ints[k])));
    EXPECT_EQ(a.elem, ints[k]);
    EXPECT_EQ(a.ints, (std::vector<int64_t>{vals[k], 0}));
  }
  EXPECT_EQ(f.at("u8").array_size(), 0u);
  EXPECT_EQ(f.get_float("f32"), 0.25);
  EXPECT_EQ(f.get_float("f64"), 1e-300);
  EXPECT_EQ(f.at("af32").floats, (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(f.at("af64").floats, (std::vector<double>{1e300}));
  EXPECT_EQ(f.get_string("str"), "h\xc3\xa9llo");
  EXPECT_EQ(f.at("strs").strings, (std::vector<std::string>{"a", "", "\xe4\xb8\xad b"}));
  EXPECT_EQ(f.metadata().front().first, "u8");  // file order kept
  EXPECT_TRUE(f.get_bool("s.bool"));
  EXPECT_THROW(f.get_string("f32"), Error);
  EXPECT_THROW(f.get_int("missing"), Error);
}

TEST(Gguf, WriterMatchesSpecLayout) {
  // The writer's bytes equal the hand-built file for the same content.
  GgufWriter w;
  w.set("general.name", GgufValue::string("tiny"));
  w.add_tensor("w", Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {3, 2}));
  std::string ours = w.serialize();
  Bytes expected{valid_file()};
  expected.pad();  // like ggml's writer, the last tensor is padded too
  EXPECT_EQ(ours, expected.b);
}

TEST_F(GgufTest, TensorsOfEveryDtypeRoundTripAligned) {
  std::vector<float> x(64 * 3);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
  GgufWriter w;
  w.set("general.alignment", GgufValue::u32(64));
  const DType dts[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0};
  std::vector<Tensor> ts;
  for (DType dt : dts) {
    ts.push_back(Tensor::from_vector(x, {3, 64}).to(dt));
    w.add_tensor(std::string(lmforge::dtype_name(dt)), ts.back());
  }
  w.add_tensor("odd",
               Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}));  // 12 bytes: the next tensor must be padded
  w.add_tensor("after", Tensor::from_vector(x, {3, 1, 1, 64}));
  w.write(path("m.gguf"));
  GgufFile f = GgufFile::open(path("m.gguf"));
  EXPECT_EQ(f.alignment(), 64u);
  for (size_t k = 0; k < std::size(dts); ++k) {
    const auto& ti = f.tensor(std::string(lmforge::dtype_name(dts[k])));
    EXPECT_EQ(ti.offset % 64, 0u);
    Tensor t = f.get(ti.name);
    EXPECT_EQ(t.dtype(), dts[k]);
    EXPECT_EQ(t.shape(), (lmforge::Shape{3, 64}));
    ASSERT_EQ(t.nbytes(), ts[k].nbytes());
    EXPECT_EQ(std::memcmp(t.raw_data(), ts[k].raw_data(), t.nbytes()), 0) << ti.name;
  }
  EXPECT_EQ(f.get("after").to_float_vector(), x);
  EXPECT_EQ(f.tensor("after").shape, (lmforge::Shape{3, 1, 1, 64}));
}

// get_f32_rows reads a row range of any readable type (one expert of a stack) as get_f32 does; drop_pages lets the
// mapping's pages go and the next read sees the file again; bad ranges are refused.
TEST_F(GgufTest, RowRangesAndDroppedPages) {
  std::vector<float> x(4 * 2048);  // 32 KiB at f32: several pages, so some lie wholly inside a row range
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.11f * static_cast<float>(i));
  GgufWriter w;
  for (DType dt : {DType::F32, DType::Q8_0, DType::Q4_0})
    w.add_tensor(std::string(lmforge::dtype_name(dt)), Tensor::from_vector(x, {4, 1, 2048}).to(dt));
  w.write(path("r.gguf"));
  const GgufFile f = GgufFile::open(path("r.gguf"));
  for (const char* name : {"f32", "q8_0", "q4_0"}) {
    SCOPED_TRACE(name);
    const std::vector<float> all = f.get_f32(name).to_float_vector();
    ASSERT_EQ(all.size(), x.size());
    const Tensor mid = f.get_f32_rows(name, 1, 2);
    EXPECT_EQ(mid.shape(), (lmforge::Shape{2, 2048}));
    EXPECT_EQ(mid.to_float_vector(), std::vector<float>(all.begin() + 2048, all.begin() + 3 * 2048));
    f.drop_pages(name, 1, 2);
    f.drop_pages(name);
    EXPECT_EQ(f.get_f32(name).to_float_vector(), all);
    EXPECT_THROW(f.get_f32_rows(name, 3, 2), Error);
    EXPECT_THROW(f.get_f32_rows(name, -1, 1), Error);
  }
}

// A type the reader lists but cannot dequantize (q8_1): get_f32 and any row range, even an empty one (what the
// importer checks each tensor with before writing anything), are refused naming the tensor and the type.
TEST(GgufBad, TypeThatCannotBeDequantized) {
  Bytes q81;
  q81.header(1, 0).tensor_info("w", {32}, 9, 0).pad();
  q81.b += std::string(64, '\0');
  const GgufFile f = GgufFile::from_bytes(q81.b, "q81.gguf");
  for (const auto& read :
       std::vector<std::function<void()>>{[&] { (void)f.get_f32("w"); }, [&] { (void)f.get_f32_rows("w", 0, 0); }}) {
    try {
      read();
      ADD_FAILURE() << "expected lmforge::Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("q81.gguf: tensor \"w\": type q8_1 is not supported"), std::string::npos)
          << e.what();
    }
  }
}

// Tensors added as producers: the same bytes as the tensors themselves, each produced once, in file order, after the
// previous one's bytes (and its done()) and with progress after each; a result of another dtype or shape than
// announced is refused naming the tensor, and no file is left (the old one stays).
TEST_F(GgufTest, ProducedTensorsAreMadeWhenTheirBytesAreDue) {
  std::vector<float> x(3 * 64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.21f * static_cast<float>(i));
  const std::vector<Tensor> ts = {Tensor::from_vector(x, {3, 64}).to(DType::Q4_0),
                                  Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}),
                                  Tensor::from_vector(x, {2, 3, 32}).to(DType::F16)};
  GgufWriter eager, lazy;
  std::vector<std::string> events;
  for (size_t i = 0; i < ts.size(); ++i) {
    const std::string name = "t" + std::to_string(i);
    eager.add_tensor(name, ts[i]);
    lazy.add_tensor(
        name, ts[i].shape(), ts[i].dtype(),
        [&, i] {
          events.push_back("make " + std::to_string(i));
          return ts[i];
        },
        [&, i] { events.push_back("done " + std::to_string(i)); });
  }
  EXPECT_TRUE(events.empty());  // nothing is made when added
  lazy.write(path("lazy.gguf"), [&](size_t n, size_t total) {
    events.push_back("progress " + std::to_string(n) + "/" + std::to_string(total));
  });
  EXPECT_EQ(events, (std::vector<std::string>{"make 0", "done 0", "progress 1/3", "make 1", "done 1", "progress 2/3",
                                              "make 2", "done 2", "progress 3/3"}));
  std::ifstream in(path("lazy.gguf"), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), eager.serialize());

  for (const Tensor& wrong : {Tensor::from_vector(x, {3, 64}), Tensor::from_vector(x, {64, 3}).to(DType::F16)}) {
    GgufWriter w;
    w.add_tensor("ok", ts[1]);
    w.add_tensor("bad", {3, 64}, DType::F16, [wrong] { return wrong; });
    try {
      w.write(path("lazy.gguf"));
      ADD_FAILURE() << "expected lmforge::Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("GGUF tensor \"bad\": made "), std::string::npos) << e.what();
    }
    std::ifstream again(path("lazy.gguf"), std::ios::binary);
    std::stringstream kept;
    kept << again.rdbuf();
    EXPECT_EQ(kept.str(), ss.str());  // the earlier file, untouched; no temporary left
    for (const auto& e : std::filesystem::directory_iterator(dir_)) EXPECT_EQ(e.path().filename(), "lazy.gguf");
  }
  GgufWriter w;
  EXPECT_THROW(w.add_tensor("q", {3, 48}, DType::Q8_0, [] { return Tensor(); }), Error);  // not whole blocks
  EXPECT_THROW(w.add_tensor("n", {3}, DType::F32, nullptr), Error);
}

TEST(Gguf, WriterRefusesBadInput) {
  GgufWriter w;
  w.set("k", GgufValue::u32(1));
  EXPECT_THROW(w.set("k", GgufValue::u32(2)), Error);
  EXPECT_THROW(w.set("general.alignment", GgufValue::u32(48)), Error);
  w.add_tensor("t", Tensor::zeros({2}));
  EXPECT_THROW(w.add_tensor("t", Tensor::zeros({2})), Error);
  EXPECT_THROW(w.add_tensor(std::string(64, 'x'), Tensor::zeros({2})), Error);
  EXPECT_THROW(w.add_tensor("i", Tensor::from_ints({1}, {1})), Error);
  EXPECT_THROW(w.add_tensor("5d", Tensor::zeros({1, 1, 1, 1, 2})), Error);
}

TEST_F(GgufTest, WriteIsAtomic) {
  GgufWriter w;
  w.add_tensor("t", Tensor::zeros({4}));
  w.write(path("a.gguf"));
  std::ifstream in(path("a.gguf"), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(GgufFile::from_bytes(ss.str()).tensors().size(), 1u);
  for (const auto& e : std::filesystem::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename(), "a.gguf");  // no temporary left behind
  EXPECT_THROW(w.write(path("no/such/dir/a.gguf")), Error);
}

TEST(GgufBad, Truncated) {
  const std::string good = valid_file();
  // Every prefix fails cleanly (header, key, value, tensor info, data).
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_THROW(GgufFile::from_bytes(good.substr(0, n), "bad.gguf"), Error) << "prefix " << n;
  }
  expect_error(good.substr(0, good.size() - 1), "past the end of the data section");
  Bytes kv;
  kv.header(0, 1).str("general.name").put<uint32_t>(8).str("tiny");
  expect_error(kv.b.substr(0, kv.b.size() - 2), "truncated");
}

TEST(GgufBad, MagicAndVersion) {
  std::string f = valid_file();
  f[0] = 'X';
  expect_error(f, "magic");
  Bytes v1;
  v1.header(0, 0, 1);
  expect_error(v1.b, "header.version 1");
  Bytes big;
  big.header(0, 0, 0x03000000);
  expect_error(big.b, "header.version");
}

TEST(GgufBad, HugeCounts) {
  Bytes a;
  a.header(uint64_t{1} << 60, 0);
  expect_error(a.b, "header.tensor_count");
  Bytes b;
  b.header(0, ~uint64_t{0});
  expect_error(b.b, "header.metadata_kv_count");
  Bytes c;  // string length past EOF
  c.header(0, 1).put<uint64_t>(~uint64_t{0} - 3).put<uint64_t>(0).put<uint64_t>(0);
  expect_error(c.b, "metadata[0].key");
  Bytes d;  // array count past EOF
  d.header(0, 1).str("arr").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(uint64_t{1} << 61);
  expect_error(d.b, "does not fit");
  Bytes e;  // string array of many empty strings would need 8 bytes each
  e.header(0, 1).str("arr").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(1000).put<uint64_t>(0);
  expect_error(e.b, "does not fit");
  Bytes g;  // dimensions whose product overflows
  g.header(1, 0).tensor_info("w", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0).pad();
  expect_error(g.b, "overflow");
}

TEST(GgufBad, OffsetsAndAlignment) {
  Bytes past;
  past.header(1, 0).tensor_info("w", {4}, 0, 64).pad();
  past.b += std::string(16, '\0');
  expect_error(past.b, "tensor \"w\": bytes [64, +16) run past the end");
  Bytes mis;
  mis.header(1, 0).tensor_info("w", {4}, 0, 4).pad();
  mis.b += std::string(32, '\0');
  expect_error(mis.b, "not a multiple of the alignment 32");
  Bytes badalign;
  badalign.header(0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(24);
  expect_error(badalign.b, "power of two");
  Bytes alignzero;
  alignzero.header(0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(0);
  expect_error(alignzero.b, "power of two");
  Bytes aligntype;
  aligntype.header(0, 1).str("general.alignment").put<uint32_t>(10).put<uint64_t>(32);
  expect_error(aligntype.b, "not uint32");
  Bytes overlap;
  overlap.header(2, 0).tensor_info("a", {16}, 0, 0).tensor_info("b", {4}, 0, 32).pad();
  overlap.b += std::string(64, '\0');
  expect_error(overlap.b, "overlaps");
}

TEST(GgufBad, UnknownTypes) {
  Bytes kv;
  kv.header(0, 1).str("k").put<uint32_t>(13).put<uint32_t>(0);
  expect_error(kv.b, "metadata \"k\": unknown value type 13");
  Bytes arr;
  arr.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(99).put<uint64_t>(0);
  expect_error(arr.b, "unknown array element type 99");
  Bytes nested;
  nested.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(0);
  expect_error(nested.b, "arrays of arrays");
  Bytes tt;
  tt.header(1, 0).tensor_info("w", {4}, 4, 0).pad();  // id 4 (q4_2) was removed from ggml
  tt.b += std::string(32, '\0');
  expect_error(tt.b, "tensor \"w\": unknown or unsupported ggml type id 4");
  Bytes boolv;
  boolv.header(0, 1).str("k").put<uint32_t>(7).put<uint8_t>(2);
  expect_error(boolv.b, "bool value 2");
  Bytes blocks;  // q8_0 row of 33 values
  blocks.header(1, 0).tensor_info("w", {33}, 8, 0).pad();
  blocks.b += std::string(128, '\0');
  expect_error(blocks.b, "not a multiple of q8_0's block size 32");
  Bytes dims;
  dims.header(1, 0).tensor_info("w", {1, 1, 1, 1, 1}, 0, 0).pad();
  expect_error(dims.b, "n_dims 5");
  // A k-quant that is no lmforge dtype (q3_K) lists but cannot be read as a tensor of its own type; q4_K can.
  Bytes k;
  k.header(2, 0).tensor_info("w", {256}, 11, 0).tensor_info("v", {256}, 12, 128).pad();
  k.b += std::string(128 + 144, '\0');
  GgufFile f = GgufFile::from_bytes(k.b, "k.gguf");
  EXPECT_EQ(f.tensor("w").nbytes, 110u);
  EXPECT_THROW(f.get("w"), Error);
  EXPECT_EQ(f.get("v").dtype(), DType::Q4_K);
  EXPECT_EQ(f.get("v").nbytes(), 144u);
}

TEST(GgufBad, DuplicateNames) {
  Bytes kv;
  kv.header(0, 2).str("k").put<uint32_t>(4).put<uint32_t>(1).str("k").put<uint32_t>(4).put<uint32_t>(2);
  expect_error(kv.b, "metadata \"k\" appears twice");
  Bytes t;
  t.header(2, 0).tensor_info("w", {4}, 0, 0).tensor_info("w", {4}, 0, 32).pad();
  t.b += std::string(64, '\0');
  expect_error(t.b, "tensor \"w\" appears twice");
  Bytes longname;
  longname.header(1, 0).tensor_info(std::string(64, 'n'), {4}, 0, 0).pad();
  expect_error(longname.b, "ggml allows 63");
}

TEST_F(GgufTest, OpenNamesMissingAndEmptyFiles) {
  EXPECT_THROW(GgufFile::open(path("nope.gguf")), Error);
  { std::ofstream(path("empty.gguf")); }
  try {
    GgufFile::open(path("empty.gguf"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("empty.gguf"), std::string::npos);
  }
}
