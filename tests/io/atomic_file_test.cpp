#include "lmforge/io/atomic_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lmforge/core/error.h"
#include "temp_dir_test.h"

namespace fs = std::filesystem;
using lmforge::Error;
using lmforge::io::AtomicFileWriter;
using lmforge::io::write_file_atomic;

namespace {

class AtomicFileTest : public lmforge::testing::TempDirTest {
 protected:
  static std::string read(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
  }

  // Everything in the folder, so tests can check no temporary file is left behind.
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

TEST_F(AtomicFileTest, WriteFileAtomicCreatesThenReplaces) {
  const std::string p = path("a.txt");
  write_file_atomic(p, "first");
  EXPECT_EQ(read(p), "first");
  write_file_atomic(p, "second, longer");
  EXPECT_EQ(read(p), "second, longer");
  write_file_atomic(p, "");
  EXPECT_EQ(read(p), "");
  EXPECT_EQ(listing(), std::vector<std::string>{"a.txt"});
}

TEST_F(AtomicFileTest, UncommittedWriterLeavesOldFileIntact) {
  const std::string p = path("model.bin");
  write_file_atomic(p, "old contents");
  {
    AtomicFileWriter w(p);
    w.write("new contents that must never appear");
    EXPECT_TRUE(fs::exists(w.temp_path()));
    EXPECT_EQ(fs::path(w.temp_path()).parent_path(), fs::path(p).parent_path());
  }
  EXPECT_EQ(read(p), "old contents");
  EXPECT_EQ(listing(), std::vector<std::string>{"model.bin"});
}

TEST_F(AtomicFileTest, UncommittedWriterCreatesNothing) {
  const std::string p = path("never.bin");
  {
    AtomicFileWriter w(p);
    w.write("x");
  }
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(listing().empty());
}

TEST_F(AtomicFileTest, AbortThenDestroyIsHarmless) {
  const std::string p = path("x.bin");
  AtomicFileWriter w(p);
  w.write("abc");
  w.abort();
  w.abort();
  EXPECT_THROW(w.write("more"), Error);
  EXPECT_THROW(w.commit(), Error);
  EXPECT_TRUE(listing().empty());
}

TEST_F(AtomicFileTest, CommitMixesSmallAndLargeWritesInOrder) {
  const std::string p = path("big.bin");
  std::string expect;
  AtomicFileWriter w(p);
  // Sizes around the 1 MiB internal buffer exercise the buffered path, the flush and the direct path.
  for (size_t size : {size_t{3}, size_t{1} << 20, size_t{17}, (size_t{1} << 20) - 5, size_t{2} << 20, size_t{1}}) {
    std::string chunk(size, static_cast<char>('a' + expect.size() % 26));
    w.write(chunk);
    expect += chunk;
  }
  EXPECT_EQ(w.bytes_written(), expect.size());
  w.commit();
  EXPECT_EQ(read(p), expect);
  EXPECT_EQ(listing(), std::vector<std::string>{"big.bin"});
  EXPECT_THROW(w.write("after"), Error);
  EXPECT_THROW(w.commit(), Error);
}

TEST_F(AtomicFileTest, MovedWriterCommitsOnce) {
  const std::string p = path("moved.bin");
  AtomicFileWriter a(p);
  a.write("hello ");
  AtomicFileWriter b(std::move(a));
  b.write("world");
  AtomicFileWriter c(path("other.bin"));
  c = std::move(b);  // drops other.bin's temporary file
  c.commit();
  EXPECT_EQ(read(p), "hello world");
  EXPECT_EQ(listing(), std::vector<std::string>{"moved.bin"});
}

TEST_F(AtomicFileTest, PermissionsFollowTheUmask) {
  const mode_t old = ::umask(022);
  ::umask(old);
  const std::string p = path("perm.bin");
  write_file_atomic(p, "x");
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666 & ~old);
}

TEST_F(AtomicFileTest, MissingFolderErrorNamesPathAndReason) {
  const std::string p = path("no/such/folder/f.bin");
  try {
    write_file_atomic(p, "x");
    FAIL() << "expected lmforge::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
    EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
  }
}

TEST_F(AtomicFileTest, RenameOntoFolderFailsAndCleansUp) {
  const std::string p = path("taken");
  fs::create_directories(dir_ / "taken" / "child");
  AtomicFileWriter w(p);
  w.write("data");
  try {
    w.commit();
    FAIL() << "expected lmforge::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_directory(p));
  EXPECT_EQ(listing(), std::vector<std::string>{"taken"});
}

TEST_F(AtomicFileTest, EmptyOrFolderPathIsRejected) {
  EXPECT_THROW(AtomicFileWriter(""), Error);
  EXPECT_THROW(AtomicFileWriter(dir_.string() + "/"), Error);
}

}  // namespace
