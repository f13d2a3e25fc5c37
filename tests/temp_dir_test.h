// A test fixture with a fresh temporary folder per test, removed afterwards.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>

namespace lmforge::testing {

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = std::filesystem::temp_directory_path() / ("lmforge_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

}  // namespace lmforge::testing
