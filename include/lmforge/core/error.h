// lmforge::Error: the one exception type for user-facing failures (bad shapes, bad files, bad flags).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace lmforge {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace lmforge

// Throws lmforge::Error with the streamed message when cond is false.
#define LMF_CHECK(cond, ...)                                                     \
  do {                                                                           \
    if (!(cond)) throw ::lmforge::Error(::lmforge::detail::concat(__VA_ARGS__)); \
  } while (0)
