// Atomic file replacement: write to a temporary file in the target's folder, fsync it, rename it over the
// target, fsync the folder. A crash at any point leaves either the old file or the complete new one.
//
// Readers that memory-mapped the old file keep seeing it: rename swaps the directory entry, not the inode.
// A symlink at `path` is replaced by a regular file, not followed.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lmforge::io {

class AtomicFileWriter {
 public:
  // Creates the temporary file next to `path` (same folder, so rename cannot cross file systems).
  explicit AtomicFileWriter(std::string path);
  // Without commit(), the temporary file is removed and `path` is left as it was.
  ~AtomicFileWriter();
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }

  // Makes the new contents durable and visible under `path`. Throws lmforge::Error on any failure, in which
  // case `path` is untouched (unless only the final folder fsync failed: then the rename has happened).
  void commit();
  // Drops the temporary file now; `path` is untouched. Safe to call twice.
  void abort() noexcept;

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_path_; }
  size_t bytes_written() const { return written_; }

 private:
  void flush_buffer();
  void write_fd(const char* data, size_t size);

  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
  size_t written_ = 0;
  // Small writes are gathered so a header written field by field does not cost a syscall per field.
  std::vector<char> buffer_;
};

// Replaces `path` with `bytes` atomically.
void write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace lmforge::io
