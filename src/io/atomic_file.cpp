#include "lmforge/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <system_error>
#include <utility>

#include "lmforge/core/error.h"

namespace lmforge::io {

namespace {

constexpr size_t kBufferBytes = size_t{1} << 20;

// std::strerror is not thread-safe; the error_code message is.
std::string errno_text(int err) {
  return std::error_code(err, std::generic_category()).message();
}

std::string parent_dir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? std::string(".") : dir;
}

// A hidden name next to the target, so globs over the folder ("*.safetensors") do not pick up a half-written
// file.
std::string temp_name_for(const std::string& path, uint64_t salt) {
  std::filesystem::path p(path);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(salt));
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on the equivalent operator+ chain.
  std::string name = ".";
  name += p.filename().string();
  name += ".tmp.";
  name += hex;
  return (p.parent_path() / name).string();
}

void fsync_dir(const std::string& dir, const std::string& path) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    throw Error("cannot open folder '" + dir + "' to sync the rename of '" + path + "': " + errno_text(errno));
  }
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  // Some file systems cannot fsync a directory; the rename is still atomic there, only not yet durable.
  if (rc != 0 && err != EINVAL && err != ENOTSUP) {
    throw Error("cannot sync folder '" + dir + "' after writing '" + path + "': " + errno_text(err));
  }
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  LMF_CHECK(!path_.empty(), "cannot write a file with an empty path");
  LMF_CHECK(!std::filesystem::path(path_).filename().empty(), "cannot write '", path_,
            "': the path names a folder, not a file");
  // O_EXCL with a random name instead of mkstemp: mkstemp creates mode 0600, while 0666 here lets the umask
  // decide, so the committed file gets the permissions any ordinary new file would.
  std::random_device rd;
  for (int attempt = 0; attempt < 64; ++attempt) {
    const uint64_t salt = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    tmp_path_ = temp_name_for(path_, salt);
    fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) {
      break;
    }
    if (errno != EEXIST) {
      throw Error("cannot create temporary file '" + tmp_path_ + "' to write '" + path_ + "': " + errno_text(errno));
    }
  }
  if (fd_ < 0) {
    throw Error("cannot create a temporary file next to '" + path_ + "': every name tried exists");
  }
  buffer_.reserve(kBufferBytes);
}

AtomicFileWriter::~AtomicFileWriter() {
  abort();
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      tmp_path_(std::move(other.tmp_path_)),
      fd_(std::exchange(other.fd_, -1)),
      committed_(other.committed_),
      written_(other.written_),
      buffer_(std::move(other.buffer_)) {}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  if (this != &other) {
    abort();
    path_ = std::move(other.path_);
    tmp_path_ = std::move(other.tmp_path_);
    fd_ = std::exchange(other.fd_, -1);
    committed_ = other.committed_;
    written_ = other.written_;
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

void AtomicFileWriter::write_fd(const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd_, data, size);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw Error("cannot write '" + tmp_path_ + "' (temporary file for '" + path_ + "'): " + errno_text(errno));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::flush_buffer() {
  if (buffer_.empty()) {
    return;
  }
  write_fd(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void AtomicFileWriter::write(const void* data, size_t size) {
  LMF_CHECK(fd_ >= 0 && !committed_, "write to '", path_, "' after commit() or abort()");
  const char* p = static_cast<const char*>(data);
  if (buffer_.size() + size <= kBufferBytes) {
    buffer_.insert(buffer_.end(), p, p + size);
  } else {
    flush_buffer();
    // Large blocks (tensor data) go straight to the file rather than through the buffer.
    if (size >= kBufferBytes) {
      write_fd(p, size);
    } else {
      buffer_.insert(buffer_.end(), p, p + size);
    }
  }
  written_ += size;
}

void AtomicFileWriter::commit() {
  LMF_CHECK(fd_ >= 0 && !committed_, "commit of '", path_, "' after commit() or abort()");
  flush_buffer();
  if (::fsync(fd_) != 0) {
    throw Error("cannot sync '" + tmp_path_ + "' (temporary file for '" + path_ + "'): " + errno_text(errno));
  }
  // close() can report a write error that the file system deferred (NFS); the file is not trustworthy then.
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0 && errno != EINTR) {
    int err = errno;
    ::unlink(tmp_path_.c_str());
    throw Error("cannot close '" + tmp_path_ + "' (temporary file for '" + path_ + "'): " + errno_text(err));
  }
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp_path_.c_str());
    throw Error("cannot rename '" + tmp_path_ + "' to '" + path_ + "': " + errno_text(err));
  }
  committed_ = true;
  fsync_dir(parent_dir(path_), path_);
}

void AtomicFileWriter::abort() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    if (!committed_) {
      ::unlink(tmp_path_.c_str());
    }
  }
  buffer_.clear();
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFileWriter w(path);
  w.write(bytes);
  w.commit();
}

}  // namespace lmforge::io
