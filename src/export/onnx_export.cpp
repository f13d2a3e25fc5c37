// The ONNX file: model metadata, weights inline or in an external data file, the checker, atomic writes.
#include <onnx/checker.h>

#include <filesystem>
#include <string>

#include "export/onnx_decoder.h"
#include "lmforge/core/error.h"
#include "lmforge/export/onnx.h"
#include "lmforge/io/atomic_file.h"
#include "lmforge/version.h"

namespace lmforge::exporter {

namespace {

namespace fs = std::filesystem;

// Opset 17: the newest the ONNX library in Debian 12 (1.12) checks, and run by every ONNX Runtime since 1.12.
constexpr int64_t kOpset = 17;
constexpr int64_t kIrVersion = 8;
// Protobuf refuses messages of 2 GiB or more; weights move out well before the graph gets near that.
constexpr int64_t kInlineLimit = (int64_t{2} << 30) - (int64_t{64} << 20);
// External tensors start on page boundaries, so a runtime can map them.
constexpr int64_t kAlign = 4096;

void set_external(onnx::TensorProto* t, const std::string& location, int64_t offset, int64_t length) {
  t->set_data_location(onnx::TensorProto::EXTERNAL);
  auto add = [t](const char* key, const std::string& value) {
    auto* e = t->add_external_data();
    e->set_key(key);
    e->set_value(value);
  };
  add("location", location);
  add("offset", std::to_string(offset));
  add("length", std::to_string(length));
}

}  // namespace

void check_onnx_file(const std::string& path) {
  try {
    onnx::checker::check_model(path);
  } catch (const std::exception& e) {
    throw Error(path + ": ONNX checker: " + e.what());
  }
}

OnnxExportResult export_onnx(const model::CausalLM& m, const std::string& out, const OnnxExportOptions& opt) {
  onnx::ModelProto model;
  model.set_ir_version(kIrVersion);
  model.set_producer_name("lmforge");
  model.set_producer_version(LMFORGE_VERSION);
  model.set_doc_string(m.config().model_type +
                       " decoder with past-key-values (Hugging Face optimum input/output names), exported by lmforge");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  auto* meta = model.add_metadata_props();
  meta->set_key("model_type");
  meta->set_value(m.config().model_type);

  OnnxGraphBuilder b(model.mutable_graph());
  build_decoder_graph(m, opt, model.mutable_graph(), b);

  OnnxExportResult res;
  res.nodes = model.graph().node_size();
  res.initializers = model.graph().initializer_size();
  res.weight_bytes = b.weight_bytes();
  res.opset = kOpset;
  res.ir_version = kIrVersion;
  const bool external = opt.external_data == OnnxExportOptions::ExternalData::Always ||
                        (opt.external_data == OnnxExportOptions::ExternalData::Auto && b.weight_bytes() > kInlineLimit);
  LMF_CHECK(external || b.weight_bytes() <= kInlineLimit, out, ": ", b.weight_bytes(),
            " bytes of weights do not fit in one protobuf (2 GB); use external data");

  if (!external) {
    for (const auto& pw : b.weights()) pw.proto->set_raw_data(pw.data.raw_data(), pw.data.nbytes());
    try {
      onnx::checker::check_model(model);
    } catch (const std::exception& e) {
      throw Error(out + ": the exported graph fails the ONNX checker: " + e.what());
    }
    std::string bytes;
    LMF_CHECK(model.SerializeToString(&bytes), out, ": protobuf serialization failed");
    io::write_file_atomic(out, bytes);
    res.onnx_bytes = static_cast<int64_t>(bytes.size());
    return res;
  }

  // External data: FILE.onnx.data beside FILE.onnx (location relative to the .onnx, as the ONNX spec requires).
  const std::string data_path = out + ".data";
  const std::string location = fs::path(data_path).filename().string();
  io::AtomicFileWriter data(data_path);
  int64_t offset = 0;
  static const char kZeros[kAlign] = {};
  for (const auto& pw : b.weights()) {
    const int64_t pad = (kAlign - offset % kAlign) % kAlign;
    data.write(kZeros, static_cast<size_t>(pad));
    offset += pad;
    const auto n = static_cast<int64_t>(pw.data.nbytes());
    data.write(pw.data.raw_data(), static_cast<size_t>(n));
    set_external(pw.proto, location, offset, n);
    offset += n;
  }
  // The checker resolves external data against the .onnx's folder: check a copy that points at the data file's
  // temporary name before either file replaces a previous export.
  auto point_at = [&](const std::string& loc) {
    for (const auto& pw : b.weights()) pw.proto->mutable_external_data(0)->set_value(loc);
  };
  point_at(fs::path(data.temp_path()).filename().string());
  const std::string probe = data.temp_path() + ".onnx";
  std::string bytes;
  LMF_CHECK(model.SerializeToString(&bytes), out, ": protobuf serialization failed");
  try {
    io::write_file_atomic(probe, bytes);
    check_onnx_file(probe);
  } catch (const Error& e) {
    std::error_code ec;
    fs::remove(probe, ec);
    throw Error(out + ": the exported graph fails the ONNX checker: " + e.what());
  }
  std::error_code ec;
  fs::remove(probe, ec);
  point_at(location);
  LMF_CHECK(model.SerializeToString(&bytes), out, ": protobuf serialization failed");
  data.commit();
  io::write_file_atomic(out, bytes);
  res.onnx_bytes = static_cast<int64_t>(bytes.size());
  res.external_file = data_path;
  return res;
}

}  // namespace lmforge::exporter
