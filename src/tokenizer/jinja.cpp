// A Jinja interpreter for chat templates (see jinja.h for the subset): lexer, recursive-descent parser to a small
// AST, tree-walking evaluator over JSON values.
#include "lmforge/tokenizer/jinja.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <sstream>
#include <vector>

#include "lmforge/core/error.h"
#include "tokenizer/unicode.h"

namespace lmforge::tokenizer::jinja {
namespace {

using Json = nlohmann::ordered_json;

[[noreturn]] void fail(const std::string& what) {
  throw Error("chat_template: " + what);
}

// Counts one level of nesting for as long as it lives; past `max`, an error naming `what` (a template is untrusted
// input: recursion stays bounded).
class DepthGuard {
 public:
  DepthGuard(int& depth, int max, const char* what) : d_(depth) {
    if (++d_ > max) {
      --d_;
      fail(std::string(what) + " nested more than " + std::to_string(max) + " deep");
    }
  }
  ~DepthGuard() { --d_; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;

 private:
  int& d_;
};

// s without the characters of `chars` at its start (left) and / or end (right), as Python's str.strip(chars).
std::string strip(const std::string& s, const std::string& chars, bool left, bool right) {
  size_t a = 0, b = s.size();
  if (left)
    while (a < b && chars.find(s[a]) != std::string::npos) ++a;
  if (right)
    while (b > a && chars.find(s[b - 1]) != std::string::npos) --b;
  return s.substr(a, b - a);
}

// ---------------------------------------------------------------- values

// Work done making values, charged as they are made: a template is untrusted input, and within the step limit a
// loop that builds or copies a large value each time could otherwise run for hours. render() points this at its
// counter; a value costs 1 plus its top-level size (items, or bytes / 16 of a string).
thread_local int64_t* g_work = nullptr;
constexpr int64_t kMaxWork = 20'000'000;

void charge(int64_t units) {
  if (g_work && (*g_work += units) > kMaxWork) fail("more than " + std::to_string(kMaxWork) + " units of work");
}

int64_t cost(const Json& x) {
  if (x.is_string()) return 1 + static_cast<int64_t>(x.get_ref<const std::string&>().size() / 16);
  if (x.is_array() || x.is_object()) return 1 + static_cast<int64_t>(x.size());
  return 1;
}

// A value: JSON, Jinja's undefined, or a namespace() (an object shared by reference). The JSON is shared and
// immutable, so reading a variable (`messages` in a loop over a long conversation) copies a pointer, not the text,
// and a member of it points into it (child) instead of copying.
struct Node;
struct Val {
  bool undef = false;
  std::shared_ptr<const Json> p;
  std::shared_ptr<Json> ns;
  const Node* macro = nullptr;  // a {% macro %}, callable
  bool function = false;        // a built-in function (strftime_now, raise_exception, range, ...)
  // `loop`: the loop's items and this iteration's index, for loop.previtem / loop.nextitem
  std::shared_ptr<const std::vector<Val>> loop_items;
  int64_t loop_at = -1;
  static Val undefined() {
    Val v;
    v.undef = true;
    return v;
  }
  static Val of(Json x) {
    charge(cost(x));
    Val v;
    v.p = std::make_shared<const Json>(std::move(x));
    return v;
  }
  // `c`, a value inside this one's JSON: shared with it (immutable JSON), else copied (a namespace's).
  Val child(const Json& c) const {
    if (ns || !p) return of(c);
    charge(1);
    Val v;
    v.p = std::shared_ptr<const Json>(p, &c);
    return v;
  }
  // null for undefined values and macros
  const Json& json() const {
    static const Json null;
    return ns ? *ns : p ? *p : null;
  }
};

bool truthy(const Val& v) {
  if (v.undef) return false;
  if (v.ns || v.macro || v.function) return true;
  const Json& j = v.json();
  switch (j.type()) {
    case Json::value_t::null:
      return false;
    case Json::value_t::boolean:
      return j.get<bool>();
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return j.get<int64_t>() != 0;
    case Json::value_t::number_float:
      return j.get<double>() != 0.0;
    case Json::value_t::string:
      return !j.get_ref<const std::string&>().empty();
    case Json::value_t::array:
    case Json::value_t::object:
      return !j.empty();
    default:
      return false;
  }
}

// Python's repr() of a float: the shortest digits that read back, positional for exponents -4 ... 15 (with ".0"
// when integral), else d.ddde+XX.
std::string float_text(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  for (int prec = 0; prec <= 16; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*e", prec, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  const std::string e = buf;  // [-]d[.ddd]e(+|-)XX
  const size_t at = e.find('e');
  const bool neg = e[0] == '-';
  std::string digits;
  for (size_t i = neg ? 1 : 0; i < at; ++i)
    if (e[i] != '.') digits += e[i];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int exp = std::atoi(e.c_str() + at + 1);
  std::string s = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return s + "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    const auto whole = static_cast<size_t>(exp) + 1;
    if (digits.size() <= whole) return s + digits + std::string(whole - digits.size(), '0') + ".0";
    return s + digits.substr(0, whole) + "." + digits.substr(whole);
  }
  s += digits.substr(0, 1);
  if (digits.size() > 1) s += "." + digits.substr(1);
  char ex[16];
  std::snprintf(ex, sizeof ex, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return s + ex;
}

std::string py_repr(const Json& j);

// str(x) as Python prints it (None, True, ['a', 1], {'k': 'v'}).
std::string py_str(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null:
      return "None";
    case Json::value_t::boolean:
      return j.get<bool>() ? "True" : "False";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return std::to_string(j.get<int64_t>());
    case Json::value_t::number_float:
      return float_text(j.get<double>());
    case Json::value_t::string:
      return j.get<std::string>();
    default:
      return py_repr(j);
  }
}

std::string py_repr(const Json& j) {
  if (j.is_string()) {
    std::string s = "'";
    for (char c : j.get_ref<const std::string&>()) {
      if (c == '\'' || c == '\\') s += '\\';
      if (c == '\n') {
        s += "\\n";
        continue;
      }
      s += c;
    }
    return s + "'";
  }
  if (j.is_array()) {
    std::string s = "[";
    for (size_t i = 0; i < j.size(); ++i) s += (i ? ", " : "") + py_repr(j[i]);
    return s + "]";
  }
  if (j.is_object()) {
    std::string s = "{";
    bool first = true;
    for (const auto& [k, v] : j.items()) {
      s += (first ? "" : ", ") + py_repr(Json(k)) + ": " + py_repr(v);
      first = false;
    }
    return s + "}";
  }
  return py_str(j);
}

std::string to_str(const Val& v) {
  if (v.undef) return "";
  if (v.ns) return "<Namespace>";
  return py_str(v.json());
}

// json.dumps's options: transformers' tojson passes ensure_ascii (False), indent, separators and sort_keys.
struct JsonStyle {
  bool pretty = false;  // indent given: newlines, `indent` per level
  std::string indent;
  std::string item_sep = ", ", key_sep = ": ";  // json.dumps's defaults (item "," when indenting)
  bool sort_keys = false, ensure_ascii = false;
};

void dump_json(const Json& j, const JsonStyle& st, int depth, std::string& out) {
  const auto newline = [&](int d) {
    out += '\n';
    for (int k = 0; k < d; ++k) out += st.indent;
  };
  const auto text = [&](const Json& x) { out += x.dump(-1, ' ', st.ensure_ascii, Json::error_handler_t::replace); };
  if (j.is_array() || j.is_object()) {
    const bool arr = j.is_array();
    if (j.empty()) {
      out += arr ? "[]" : "{}";
      return;
    }
    std::vector<std::pair<std::string, const Json*>> members;
    for (const auto& [k, v] : j.items()) members.emplace_back(arr ? std::string() : k, &v);
    if (!arr && st.sort_keys)
      std::stable_sort(members.begin(), members.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    out += arr ? '[' : '{';
    bool first = true;
    for (const auto& [k, v] : members) {
      if (!first) out += st.item_sep;
      first = false;
      if (st.pretty) newline(depth + 1);
      if (!arr) {
        text(Json(k));
        out += st.key_sep;
      }
      dump_json(*v, st, depth + 1, out);
    }
    if (st.pretty) newline(depth);
    out += arr ? ']' : '}';
    return;
  }
  if (j.is_number_float()) {
    const double d = j.get<double>();
    out += std::isfinite(d) ? float_text(d) : (std::isnan(d) ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"));
    return;
  }
  text(j);
}

// The number of code points of UTF-8 text, and its first n code points.
size_t code_points(const std::string& s) {
  size_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}
std::string first_code_points(const std::string& s, size_t n) {
  size_t i = 0;
  for (size_t seen = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && seen++ == n) break;
  return s.substr(0, i);
}

// Python's printf-style `fmt % args` (and the `format` filter): %s %r %a %d %i %u %o %x %X %e %E %f %F %g %G %c %%
// with the flags "-+ 0#", a width and a precision, and %(key)s from `mapping` (a dict on the right: then `args` is
// that dict alone, and unused arguments are no error). `args`: the tuple's items, or the one value.
std::string py_format(const std::string& fmt, const std::vector<Json>& args, const Json* mapping) {
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    if (++i >= fmt.size()) fail("format: incomplete format");
    const Json* value = nullptr;
    if (fmt[i] == '(') {
      const size_t close = fmt.find(')', i);
      if (close == std::string::npos) fail("format: incomplete format key");
      if (!mapping || !mapping->is_object()) fail("format requires a mapping");
      const std::string key = fmt.substr(i + 1, close - i - 1);
      auto it = mapping->find(key);
      if (it == mapping->end()) fail("format: key '" + key + "' is missing");
      value = &*it;
      i = close + 1;
    }
    std::string flags;
    while (i < fmt.size() && std::strchr("-+ 0#", fmt[i])) flags += fmt[i++];
    size_t width = 0, precision = 0;
    bool has_precision = false;
    while (i < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[i])))
      width = std::min<size_t>(width * 10 + static_cast<size_t>(fmt[i++] - '0'), 4096);
    if (i < fmt.size() && fmt[i] == '.') {
      has_precision = true;
      for (++i; i < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[i]));)
        precision = std::min<size_t>(precision * 10 + static_cast<size_t>(fmt[i++] - '0'), 4096);
    }
    while (i < fmt.size() && std::strchr("hlL", fmt[i])) ++i;
    if (i >= fmt.size()) fail("format: incomplete format");
    const char conv = fmt[i];
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (!value) {
      if (next >= args.size()) fail("format: not enough arguments for the format string");
      value = &args[next++];
    }
    const auto has = [&](char f) { return flags.find(f) != std::string::npos; };
    std::string sign, prefix, body;
    bool numeric = true;
    switch (conv) {
      case 's':
      case 'r':
      case 'a':
      case 'c': {
        numeric = false;
        if (conv == 'c') {
          if (value->is_string() && code_points(value->get<std::string>()) == 1)
            body = value->get<std::string>();
          else if (value->is_number_integer() && value->get<int64_t>() >= 0 && value->get<int64_t>() < 0x110000)
            unicode::append_utf8(body, static_cast<char32_t>(value->get<int64_t>()));  // chr(n)
          else
            fail("format: %c requires an int or a character");
        } else {
          body = conv == 's' ? py_str(*value) : py_repr(*value);
        }
        if (has_precision) body = first_code_points(body, precision);
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'o':
      case 'x':
      case 'X': {
        if (!value->is_number() && !value->is_boolean())
          fail(std::string("format: %") + conv + " requires a number, not " + py_repr(*value));
        int64_t v = 0;
        if (value->is_boolean())
          v = value->get<bool>() ? 1 : 0;
        else if (value->is_number_float()) {
          const double d = value->get<double>();
          if (!(std::fabs(d) < 9.2e18))
            fail("format: %" + std::string(1, conv) + " of " + py_repr(*value) + " is out of range");
          v = static_cast<int64_t>(d);  // Python truncates toward zero
        } else
          v = value->get<int64_t>();
        const uint64_t mag = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
        char buf[80];
        const char* spec = conv == 'o' ? "%llo" : conv == 'x' ? "%llx" : conv == 'X' ? "%llX" : "%llu";
        std::snprintf(buf, sizeof buf, spec, static_cast<unsigned long long>(mag));
        body = buf;
        if (has_precision && body.size() < precision) body.insert(0, precision - body.size(), '0');
        if (has('#') && (conv == 'o' || conv == 'x' || conv == 'X'))
          prefix = conv == 'o' ? "0o" : conv == 'x' ? "0x" : "0X";
        sign = v < 0 ? "-" : has('+') ? "+" : has(' ') ? " " : "";
        break;
      }
      case 'e':
      case 'E':
      case 'f':
      case 'F':
      case 'g':
      case 'G': {
        if (!value->is_number() && !value->is_boolean())
          fail(std::string("format: %") + conv + " requires a number, not " + py_repr(*value));
        const double v = value->is_boolean() ? (value->get<bool>() ? 1.0 : 0.0) : value->get<double>();
        char spec[16], buf[4200];
        std::snprintf(spec, sizeof spec, "%%%s.*%c", has('#') ? "#" : "", conv);
        std::snprintf(buf, sizeof buf, spec, static_cast<int>(has_precision ? precision : 6), std::fabs(v));
        body = buf;
        sign = std::signbit(v) && !std::isnan(v) ? "-" : has('+') ? "+" : has(' ') ? " " : "";
        if (!std::isfinite(v)) numeric = false, body = sign + body, sign.clear();  // no zero padding for inf / nan
        break;
      }
      default:
        fail(std::string("format: unsupported format character '") + conv + "'");
    }
    const size_t len = code_points(sign) + prefix.size() + code_points(body);
    const size_t pad = width > len ? width - len : 0;
    if (has('-'))
      out += sign + prefix + body + std::string(pad, ' ');
    else if (numeric && has('0'))
      out += sign + prefix + std::string(pad, '0') + body;
    else
      out += std::string(pad, ' ') + sign + prefix + body;
    if (out.size() > (64u << 20)) fail("format: output too large");
  }
  if (!mapping && next < args.size()) fail("format: not all arguments converted during string formatting");
  return out;
}

// Python's ordering of two values (numbers and booleans together, strings by code point, lists item by item);
// anything else cannot be ordered.
int py_compare(const Json& a, const Json& b) {
  const auto num = [](const Json& x) { return x.is_number() || x.is_boolean(); };
  if (num(a) && num(b)) {
    const auto d = [](const Json& x) { return x.is_boolean() ? (x.get<bool>() ? 1.0 : 0.0) : x.get<double>(); };
    return d(a) < d(b) ? -1 : d(a) > d(b) ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.get_ref<const std::string&>().compare(b.get_ref<const std::string&>());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_array() && b.is_array()) {
    for (size_t i = 0; i < a.size() && i < b.size(); ++i)
      if (const int c = py_compare(a[i], b[i])) return c;
    return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
  }
  fail("cannot order " + py_repr(a) + " and " + py_repr(b));
}

// s in ASCII upper or lower case (str.upper / str.lower on the ASCII letters).
std::string ascii_case(std::string s, bool upper) {
  for (char& c : s)
    c = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(c))
                                : std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The key jinja2's sort / min / max / dictsort compare: strings lower-cased unless case_sensitive.
Json sort_key(const Json& x, bool case_sensitive) {
  if (case_sensitive || !x.is_string()) return x;
  return ascii_case(x.get<std::string>(), false);
}

// jinja2's attribute="a.b" (dotted path; integer parts index lists); missing: null.
Json attribute_of(const Json& x, const std::string& path) {
  const Json* cur = &x;
  for (size_t i = 0; i <= path.size();) {
    size_t dot = path.find('.', i);
    if (dot == std::string::npos) dot = path.size();
    const std::string part = path.substr(i, dot - i);
    i = dot + 1;
    if (cur->is_object() && cur->contains(part)) {
      cur = &(*cur)[part];
    } else if (cur->is_array() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit) &&
               part.size() < 10 && std::stoul(part) < cur->size()) {
      cur = &(*cur)[std::stoul(part)];
    } else {
      static const Json null;
      return null;
    }
  }
  return *cur;
}

// jinja2's indent(s, width=4, first=False, blank=False): every line after the first (and the first with `first`)
// gets `width` spaces (or the string `width`); empty lines stay empty unless `blank`.
std::string indent_text(const std::string& s, const std::string& pad, bool first, bool blank) {
  std::vector<std::string> lines;  // str.splitlines() of s + "\n" (its \n, \r\n and \r)
  const std::string t = s + "\n";
  for (size_t i = 0; i < t.size();) {
    size_t k = t.find_first_of("\r\n", i);
    lines.push_back(t.substr(i, k - i));
    i = k + (t[k] == '\r' && k + 1 < t.size() && t[k + 1] == '\n' ? 2 : 1);
  }
  std::string r;
  for (size_t k = 0; k < lines.size(); ++k) {
    if (k) r += '\n';
    if ((k > 0 || first) && (blank || !lines[k].empty() || (k == 0 && first))) r += pad;
    r += lines[k];
  }
  return r;
}

int64_t as_int(const Val& v, const char* what) {
  const Json& j = v.json();
  if (j.is_number_integer() || j.is_number_unsigned()) return j.get<int64_t>();
  if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
  fail(std::string(what) + " needs an integer, got " + py_repr(j));
}

bool is_number(const Json& j) {
  return j.is_number();
}

// ---------------------------------------------------------------- expression tokens

enum class Tk { Name, Str, Int, Float, Op, End };
struct Token {
  Tk kind;
  std::string text;  // name, string value, number text or operator
};

std::vector<Token> tokenize(const std::string& s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Tk::Name, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool flt = false;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        flt = true;
        ++j;
        while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {  // an exponent: 1e20, 2.5E-3
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          flt = true;
          j = k;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string num = s.substr(i, j - i);
      num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
      out.push_back({flt ? Tk::Float : Tk::Int, num});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char e = s[++j];
          v += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
        } else {
          v += s[j];
        }
      }
      if (j >= s.size()) fail("unterminated string in `" + s + "`");
      out.push_back({Tk::Str, v});
      i = j + 1;
    } else {
      static const char* const kOps[] = {"**", "//", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ",",
                                         ".",  ":",  "|",  "~",  "+",  "-",  "*", "/", "%", "<", ">", "="};
      bool found = false;
      for (const char* op : kOps) {
        const size_t n = std::strlen(op);
        if (s.compare(i, n, op) == 0) {
          out.push_back({Tk::Op, op});
          i += n;
          found = true;
          break;
        }
      }
      if (!found) fail(std::string("unexpected character '") + c + "' in `" + s + "`");
    }
  }
  out.push_back({Tk::End, ""});
  return out;
}

// ---------------------------------------------------------------- expressions

struct Expr;
using ExprP = std::shared_ptr<Expr>;
enum class Ek { Lit, Name, Attr, Index, Slice, Call, Filter, Test, Unary, Binary, Ternary, List, Dict };
struct Expr {
  Ek kind;
  Json lit;
  std::string name;  // Name, Attr, Filter, Test, Unary / Binary operator
  std::vector<ExprP> args;
  std::vector<std::pair<std::string, ExprP>> kwargs;
  bool negate = false;  // Test: `is not`
};

ExprP make(Ek k) {
  auto e = std::make_shared<Expr>();
  e->kind = k;
  return e;
}

class Parser {
 public:
  Parser(std::vector<Token> t, std::string src) : t_(std::move(t)), src_(std::move(src)) {}

  ExprP expression() { return ternary(); }
  bool at_end() const { return t_[p_].kind == Tk::End; }
  const Token& peek() const { return t_[p_]; }
  bool name_is(const char* n) const { return t_[p_].kind == Tk::Name && t_[p_].text == n; }
  bool op_is(const char* o) const { return t_[p_].kind == Tk::Op && t_[p_].text == o; }
  std::string take_name() {
    if (t_[p_].kind != Tk::Name) error("a name");
    return t_[p_++].text;
  }
  void expect_op(const char* o) {
    if (!op_is(o)) error(std::string("'") + o + "'");
    ++p_;
  }
  void expect_name(const char* n) {
    if (!name_is(n)) error(std::string("'") + n + "'");
    ++p_;
  }
  void expect_end() {
    if (!at_end()) error("the end of the tag");
  }
  [[noreturn]] void error(const std::string& wanted) const {
    fail("expected " + wanted + " at '" + t_[p_].text + "' in `" + src_ + "`");
  }

 private:
  ExprP ternary() {
    ExprP e = or_();
    if (name_is("if")) {
      ++p_;
      ExprP c = or_();
      ExprP f;
      if (name_is("else")) {
        ++p_;
        f = ternary();
      } else {
        f = make(Ek::Lit);  // no else: undefined in Jinja; none renders the same ("")
        f->name = "undefined";
      }
      ExprP t = make(Ek::Ternary);
      t->args = {c, e, f};
      return t;
    }
    return e;
  }
  ExprP binary(std::string op, ExprP a, ExprP b) {
    ExprP e = make(Ek::Binary);
    e->name = std::move(op);
    e->args = {std::move(a), std::move(b)};
    return e;
  }
  // One left-associative level: operands from `next`, joined by any of `ops` (operator tokens, or keywords).
  ExprP left_assoc(std::initializer_list<const char*> ops, ExprP (Parser::*next)(), bool keywords = false) {
    ExprP e = (this->*next)();
    for (;;) {
      const char* hit = nullptr;
      for (const char* op : ops)
        if (keywords ? name_is(op) : op_is(op)) hit = op;
      if (!hit) return e;
      ++p_;
      e = binary(hit, e, (this->*next)());
    }
  }
  ExprP or_() { return left_assoc({"or"}, &Parser::and_, true); }
  ExprP and_() { return left_assoc({"and"}, &Parser::not_, true); }
  ExprP not_() {
    if (name_is("not")) {
      ++p_;
      ExprP e = make(Ek::Unary);
      e->name = "not";
      e->args = {not_()};
      return e;
    }
    return compare();
  }
  ExprP compare() {
    ExprP e = math1();
    for (;;) {
      if (t_[p_].kind == Tk::Op &&
          (op_is("==") || op_is("!=") || op_is("<") || op_is(">") || op_is("<=") || op_is(">="))) {
        const std::string op = t_[p_++].text;
        e = binary(op, e, math1());
      } else if (name_is("in")) {
        ++p_;
        e = binary("in", e, math1());
      } else if (name_is("not") && t_[p_ + 1].kind == Tk::Name && t_[p_ + 1].text == "in") {
        p_ += 2;
        e = binary("not in", e, math1());
      } else {
        return e;
      }
    }
  }
  ExprP math1() { return left_assoc({"+", "-"}, &Parser::concat); }
  ExprP concat() { return left_assoc({"~"}, &Parser::math2); }
  ExprP math2() { return left_assoc({"*", "/", "//", "%"}, &Parser::pow_); }
  ExprP pow_() { return left_assoc({"**"}, &Parser::unary); }
  ExprP unary() {
    const DepthGuard depth(depth_, kMaxDepth, "expressions");  // parentheses, brackets, unary signs
    if (op_is("-") || op_is("+")) {
      const std::string op = t_[p_++].text;
      ExprP e = make(Ek::Unary);
      e->name = op;
      e->args = {unary()};
      return e;
    }
    return filters(postfix(primary()));
  }
  void call_args(ExprP& e) {  // after '('
    while (!op_is(")")) {
      if (t_[p_].kind == Tk::Name && t_[p_ + 1].kind == Tk::Op && t_[p_ + 1].text == "=") {
        const std::string k = t_[p_].text;
        p_ += 2;
        e->kwargs.emplace_back(k, expression());
      } else {
        e->args.push_back(expression());
      }
      if (!op_is(")")) expect_op(",");
    }
    ++p_;
  }
  ExprP postfix(ExprP e) {
    for (;;) {
      if (op_is(".")) {
        ++p_;
        ExprP a = make(Ek::Attr);
        a->name = take_name();
        a->args = {e};
        e = a;
      } else if (op_is("[")) {
        ++p_;
        ExprP parts[3];
        int colons = 0;
        while (!op_is("]")) {
          if (op_is(":")) {
            ++p_;
            if (++colons > 2) error("']'");
          } else {
            parts[colons] = expression();
          }
        }
        ++p_;
        if (colons == 0) {
          if (!parts[0]) error("an index");
          ExprP x = make(Ek::Index);
          x->args = {e, parts[0]};
          e = x;
        } else {
          ExprP x = make(Ek::Slice);
          x->args = {e, parts[0], parts[1], parts[2]};
          e = x;
        }
      } else if (op_is("(")) {
        ++p_;
        ExprP c = make(Ek::Call);
        c->args = {e};
        call_args(c);
        e = c;
      } else {
        return e;
      }
    }
  }
  ExprP filters(ExprP e) {
    for (;;) {
      if (op_is("|")) {
        ++p_;
        ExprP f = make(Ek::Filter);
        f->name = take_name();
        f->args = {e};
        if (op_is("(")) {
          ++p_;
          call_args(f);
        }
        e = f;
      } else if (name_is("is")) {
        ++p_;
        ExprP t = make(Ek::Test);
        if (name_is("not")) ++p_, t->negate = true;
        if (name_is("none") || name_is("true") || name_is("false") || t_[p_].kind == Tk::Name) {
          t->name = t_[p_++].text;
        } else if (op_is("==")) {
          ++p_, t->name = "eq";
        } else {
          error("a test name");
        }
        t->args = {e};
        if (op_is("(")) {
          ++p_;
          call_args(t);
        } else if (t_[p_].kind == Tk::Str || t_[p_].kind == Tk::Int || t_[p_].kind == Tk::Float || op_is("[") ||
                   op_is("{") || (t_[p_].kind == Tk::Name && !name_is("else") && !name_is("or") && !name_is("and"))) {
          if (name_is("is")) error("one test (tests cannot be chained with is)");
          t->args.push_back(postfix(primary()));  // `is divisibleby 3`, `is equalto 'x'`, `is in xs`
        }
        e = t;
      } else {
        return e;
      }
    }
  }
  ExprP primary() {
    const Token& k = t_[p_];
    if (k.kind == Tk::Str) {
      ++p_;
      ExprP e = make(Ek::Lit);
      e->lit = k.text;
      while (t_[p_].kind == Tk::Str) e->lit = e->lit.get<std::string>() + t_[p_++].text;  // 'a' 'b'
      return e;
    }
    if (k.kind == Tk::Int || k.kind == Tk::Float) {
      ++p_;
      ExprP e = make(Ek::Lit);
      if (k.kind == Tk::Int) {
        int64_t v = 0;
        const auto [end, ec] = std::from_chars(k.text.data(), k.text.data() + k.text.size(), v);
        if (ec != std::errc() || end != k.text.data() + k.text.size()) fail("integer " + k.text + " out of range");
        e->lit = v;
      } else {
        e->lit = std::strtod(k.text.c_str(), nullptr);
      }
      return e;
    }
    if (k.kind == Tk::Name) {
      ++p_;
      ExprP e = make(Ek::Lit);
      if (k.text == "true" || k.text == "True") return e->lit = true, e;
      if (k.text == "false" || k.text == "False") return e->lit = false, e;
      if (k.text == "none" || k.text == "None") return e->lit = nullptr, e;
      e->kind = Ek::Name;
      e->name = k.text;
      return e;
    }
    if (op_is("(")) {
      ++p_;
      if (op_is(")")) {  // ()
        ++p_;
        ExprP l = make(Ek::List);
        l->name = "tuple";
        return l;
      }
      ExprP e = expression();
      if (op_is(",")) {  // a tuple: a list here (named, so `fmt % (a, b)` can tell it from a list)
        ExprP l = make(Ek::List);
        l->name = "tuple";
        l->args.push_back(e);
        while (op_is(",")) {
          ++p_;
          if (op_is(")")) break;
          l->args.push_back(expression());
        }
        e = l;
      }
      expect_op(")");
      return e;
    }
    if (op_is("[")) {
      ++p_;
      ExprP l = make(Ek::List);
      while (!op_is("]")) {
        l->args.push_back(expression());
        if (!op_is("]")) expect_op(",");
      }
      ++p_;
      return l;
    }
    if (op_is("{")) {
      ++p_;
      ExprP d = make(Ek::Dict);
      while (!op_is("}")) {
        ExprP key = expression();
        expect_op(":");
        d->args.push_back(key);
        d->args.push_back(expression());
        if (!op_is("}")) expect_op(",");
      }
      ++p_;
      return d;
    }
    error("an expression");
  }

  static constexpr int kMaxDepth = 200;
  std::vector<Token> t_;
  std::string src_;
  size_t p_ = 0;
  int depth_ = 0;
};

// ---------------------------------------------------------------- template structure

enum class Nk { Text, Out, If, For, Set, Break, Continue, Macro };
struct Node;
using Body = std::vector<Node>;
struct Node {
  Nk kind;
  std::string text;  // Text
  ExprP expr;        // Out, Set value, For iterable
  // If: (condition, body) ...; For: the loop body; Macro: (default or null, {}) per parameter.
  std::vector<std::pair<ExprP, Body>> branches;
  Body else_body;                    // If / For: else; Set without a value: its block; Macro: its body
  std::vector<std::string> targets;  // For: loop variables; Set: name, or namespace and attribute; Macro: parameters
  ExprP filter;                      // For: `if` condition
};

// A lexed piece of the template: text, or the inside of {{ }} / {% %}.
struct Piece {
  enum Kind { Text, Expr, Stmt } kind;
  std::string body;
};

std::vector<Piece> lex(const std::string& s) {
  std::vector<Piece> out;
  size_t i = 0;
  bool strip_next = false, trim_newline = false;
  const auto add_text = [&](std::string t) {
    if (trim_newline && !t.empty() && t[0] == '\n') t.erase(0, 1);  // trim_blocks
    if (strip_next) t = strip(t, " \t\r\n", true, false);
    strip_next = trim_newline = false;
    out.push_back({Piece::Text, std::move(t)});
  };
  for (;;) {
    size_t open = s.find('{', i);
    while (open != std::string::npos && open + 1 < s.size() && s[open + 1] != '{' && s[open + 1] != '%' &&
           s[open + 1] != '#')
      open = s.find('{', open + 1);
    if (open == std::string::npos || open + 1 >= s.size()) {
      add_text(s.substr(i));
      break;
    }
    std::string text = s.substr(i, open - i);
    const char type = s[open + 1];
    const bool minus = open + 2 < s.size() && s[open + 2] == '-';
    const bool plus = open + 2 < s.size() && s[open + 2] == '+';
    if (minus) {
      text = strip(text, " \t\r\n", false, true);
    } else if (type != '{' && !plus) {
      // lstrip_blocks: the spaces and tabs between the start of a line (in the source) and a block tag or comment.
      const size_t nl = open == 0 ? std::string::npos : s.rfind('\n', open - 1);
      const size_t line_start = nl == std::string::npos ? 0 : nl + 1;
      if (line_start >= i && s.find_first_not_of(" \t", line_start) >= open)
        text.erase(text.size() - (open - line_start));
    }
    add_text(text);
    const size_t body = open + 2 + (minus || plus ? 1 : 0);
    size_t close;
    if (type == '#') {
      close = s.find("#}", body);
      if (close == std::string::npos) fail("unterminated comment");
    } else {
      const std::string end = type == '{' ? "}}" : "%}";
      close = body;
      char quote = 0;
      for (; close < s.size(); ++close) {
        const char c = s[close];
        if (quote) {
          if (c == '\\')
            ++close;
          else if (c == quote)
            quote = 0;
        } else if (c == '\'' || c == '"') {
          quote = c;
        } else if (s.compare(close, 2, end) == 0) {
          break;
        }
      }
      if (close >= s.size()) fail("unterminated " + std::string(type == '{' ? "{{" : "{%") + " tag");
    }
    std::string inner = s.substr(body, close - body);
    const bool rminus = !inner.empty() && inner.back() == '-';
    const bool rplus = !inner.empty() && inner.back() == '+';
    if (rminus || rplus) inner.pop_back();
    if (type == '{') out.push_back({Piece::Expr, inner});
    if (type == '%') out.push_back({Piece::Stmt, inner});
    i = close + 2;
    strip_next = rminus;
    trim_newline = type != '{' && !rplus;
  }
  return out;
}

class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Piece> p) : p_(std::move(p)) {}

  // Nodes up to one of `ends` (a statement keyword), which is left in `ended` (empty at the template's end).
  Body body(const std::vector<std::string>& ends, std::string& ended, Parser** stmt_out) {
    Body b;
    while (i_ < p_.size()) {
      const Piece& pc = p_[i_++];
      if (pc.kind == Piece::Text) {
        if (!pc.body.empty()) b.push_back(Node{Nk::Text, pc.body, nullptr, {}, {}, {}, nullptr});
        continue;
      }
      auto parser = std::make_unique<Parser>(tokenize(pc.body), pc.body);
      if (pc.kind == Piece::Expr) {
        Node n{Nk::Out, "", parser->expression(), {}, {}, {}, nullptr};
        parser->expect_end();
        b.push_back(std::move(n));
        continue;
      }
      const std::string kw = parser->take_name();
      for (const std::string& e : ends)
        if (kw == e) {
          ended = kw;
          held_ = std::move(parser);
          *stmt_out = held_.get();
          return b;
        }
      b.push_back(statement(kw, *parser));
    }
    if (!ends.empty()) fail("missing {% " + ends.back() + " %}");
    ended.clear();
    return b;
  }

 private:
  // The body of a block up to its `end` tag (which must be bare).
  Body block(const std::string& end) {
    std::string ended;
    Parser* tail = nullptr;
    Body b = body({end}, ended, &tail);
    tail->expect_end();
    return b;
  }
  // After a body that stopped at `ended` (else, or the block's `end`): the else branch up to `end`, if there is one.
  void else_branch(const std::string& ended, Parser* tail, const std::string& end, Body& else_body) {
    tail->expect_end();
    if (ended == "else") else_body = block(end);
  }

  Node statement(const std::string& kw, Parser& ps) {
    const DepthGuard depth(depth_, 200, "blocks");
    Parser* tail = nullptr;
    std::string ended;
    if (kw == "if") {
      Node n{Nk::If, "", nullptr, {}, {}, {}, nullptr};
      ExprP cond = ps.expression();
      ps.expect_end();
      for (;;) {
        Body b = body({"elif", "else", "endif"}, ended, &tail);
        n.branches.emplace_back(cond, std::move(b));
        if (ended == "elif") {
          cond = tail->expression();
          tail->expect_end();
          continue;
        }
        else_branch(ended, tail, "endif", n.else_body);
        return n;
      }
    }
    if (kw == "for") {
      Node n{Nk::For, "", nullptr, {}, {}, {}, nullptr};
      n.targets.push_back(ps.take_name());
      while (ps.op_is(",")) {
        ps.expect_op(",");
        n.targets.push_back(ps.take_name());
      }
      ps.expect_name("in");
      // A trailing `if` is the loop filter: the expression parser reads `xs if c` as a ternary without else.
      n.expr = ps.expression();
      if (n.expr->kind == Ek::Ternary && n.expr->args[2]->kind == Ek::Lit && n.expr->args[2]->name == "undefined") {
        n.filter = n.expr->args[0];
        n.expr = n.expr->args[1];
      }
      if (ps.name_is("recursive")) fail("recursive for loops are not supported");
      ps.expect_end();
      Body b = body({"else", "endfor"}, ended, &tail);
      n.branches.emplace_back(nullptr, std::move(b));
      else_branch(ended, tail, "endfor", n.else_body);
      return n;
    }
    if (kw == "set") {
      Node n{Nk::Set, "", nullptr, {}, {}, {}, nullptr};
      n.targets.push_back(ps.take_name());
      if (ps.op_is(".")) {
        ps.expect_op(".");
        n.targets.push_back(ps.take_name());
      }
      if (ps.at_end() && n.targets.size() == 1) {  // {% set name %}...{% endset %}: the block's text
        n.else_body = block("endset");
        return n;
      }
      if (!ps.op_is("=")) fail("{% set %} with several targets is not supported");
      ps.expect_op("=");
      n.expr = ps.expression();
      ps.expect_end();
      return n;
    }
    if (kw == "break" || kw == "continue") {
      ps.expect_end();
      return Node{kw == "break" ? Nk::Break : Nk::Continue, "", nullptr, {}, {}, {}, nullptr};
    }
    if (kw == "generation") {  // transformers' AssistantTracker: renders its body as is
      ps.expect_end();
      Node n{Nk::If, "", nullptr, {}, {}, {}, nullptr};
      ExprP yes = make(Ek::Lit);
      yes->lit = true;
      n.branches.emplace_back(yes, block("endgeneration"));
      return n;
    }
    if (kw == "macro") {
      Node n{Nk::Macro, ps.take_name(), nullptr, {}, {}, {}, nullptr};
      ps.expect_op("(");
      while (!ps.op_is(")")) {
        n.targets.push_back(ps.take_name());
        ExprP dflt;
        if (ps.op_is("=")) {
          ps.expect_op("=");
          dflt = ps.expression();
        }
        n.branches.emplace_back(dflt, Body{});
        if (!ps.op_is(")")) ps.expect_op(",");
      }
      ps.expect_op(")");
      ps.expect_end();
      n.else_body = block("endmacro");
      return n;
    }
    fail("{% " + kw + " %} is not supported");
  }

  std::vector<Piece> p_;
  size_t i_ = 0;
  int depth_ = 0;
  std::unique_ptr<Parser> held_;
};

// ---------------------------------------------------------------- evaluation

struct BreakSignal {};
struct ContinueSignal {};

class Renderer {
 public:
  explicit Renderer(const Json& ctx) {
    scopes_.emplace_back();
    for (const auto& [k, v] : ctx.items()) scopes_.back()[k] = Val::of(v);
  }

  void run(const Body& b, std::string& out) {
    for (const Node& n : b) {
      // Bounded work and output: a template is untrusted input (nested loops over range(), say).
      if (++steps_ > kMaxSteps) fail("more than " + std::to_string(kMaxSteps) + " steps");
      if (out.size() > kMaxOutput) fail("output larger than " + std::to_string(kMaxOutput >> 20) + " MiB");
      switch (n.kind) {
        case Nk::Text:
          out += n.text;
          break;
        case Nk::Out:
          out += to_str(eval(*n.expr));
          break;
        case Nk::If: {
          bool done = false;
          for (const auto& [cond, body] : n.branches)
            if (truthy(eval(*cond))) {
              run(body, out);
              done = true;
              break;
            }
          if (!done) run(n.else_body, out);
          break;
        }
        case Nk::For:
          run_for(n, out);
          break;
        case Nk::Macro: {
          Val m;
          m.macro = &n;
          scopes_.back()[n.text] = m;
          break;
        }
        case Nk::Set: {
          Val v;
          if (n.expr) {
            v = eval(*n.expr);
          } else {
            std::string block;
            run(n.else_body, block);
            v = Val::of(block);
          }
          if (n.targets.size() == 1) {
            scopes_.back()[n.targets[0]] = std::move(v);
          } else {
            const Val ns = lookup(n.targets[0]);
            if (!ns.ns) fail("{% set " + n.targets[0] + "." + n.targets[1] + " %}: not a namespace");
            (*ns.ns)[n.targets[1]] = v.undef ? Json() : v.json();
          }
          break;
        }
        case Nk::Break:
          throw BreakSignal{};
        case Nk::Continue:
          throw ContinueSignal{};
      }
    }
  }

 private:
  Val lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    // The functions a template may call are defined too: Llama-3.2's asks `strftime_now is defined`.
    for (const char* builtin : {"raise_exception", "strftime_now", "namespace", "range", "dict"})
      if (name == builtin) {
        Val v;
        v.function = true;
        return v;
      }
    return Val::undefined();
  }

  std::vector<Json> items_of(const Val& v, const std::string& what) {
    if (v.undef) return {};
    const Json& j = v.json();
    std::vector<Json> out;
    if (j.is_array()) {
      for (const auto& x : j) out.push_back(x);
    } else if (j.is_object()) {
      for (const auto& [k, x] : j.items()) out.push_back(k);
    } else if (j.is_string()) {
      for (const std::string& c : utf8_chars(j.get<std::string>())) out.push_back(c);
    } else {
      fail(what + ": " + py_repr(j) + " is not iterable");
    }
    charge(static_cast<int64_t>(out.size()));
    return out;
  }

  static std::vector<std::string> utf8_chars(const std::string& s) {
    charge(1 + static_cast<int64_t>(s.size()));
    std::vector<std::string> out;
    for (size_t i = 0; i < s.size();) {
      size_t n = 1;
      const auto c = static_cast<unsigned char>(s[i]);
      if (c >= 0xF0)
        n = 4;
      else if (c >= 0xE0)
        n = 3;
      else if (c >= 0xC0)
        n = 2;
      out.push_back(s.substr(i, n));
      i += n;
    }
    return out;
  }

  void run_for(const Node& n, std::string& out) {
    const Val src = eval(*n.expr);
    std::vector<Val> all;  // an array's items point into it; a dict's keys and a string's characters are new
    if (!src.undef && src.json().is_array()) {
      for (const Json& x : src.json()) all.push_back(src.child(x));
    } else {
      for (Json& x : items_of(src, "for")) all.push_back(Val::of(std::move(x)));
    }
    scopes_.emplace_back();
    auto items = std::make_shared<std::vector<Val>>();
    for (Val& x : all) {
      if (n.filter) {
        bind(n.targets, x);
        if (!truthy(eval(*n.filter))) continue;
      }
      items->push_back(std::move(x));
    }
    const auto len = static_cast<int64_t>(items->size());
    try {
      for (int64_t i = 0; i < len; ++i) {
        if (++steps_ > kMaxSteps) fail("more than " + std::to_string(kMaxSteps) + " steps");
        bind(n.targets, (*items)[static_cast<size_t>(i)]);
        Val loop = Val::of({{"index", i + 1},
                            {"index0", i},
                            {"revindex", len - i},
                            {"revindex0", len - i - 1},
                            {"first", i == 0},
                            {"last", i == len - 1},
                            {"length", len}});
        loop.loop_items = items;
        loop.loop_at = i;
        scopes_.back()["loop"] = std::move(loop);
        try {
          run(n.branches[0].second, out);
        } catch (const ContinueSignal&) {
        }
      }
    } catch (const BreakSignal&) {
    }
    scopes_.pop_back();
    if (len == 0) run(n.else_body, out);
  }

  void bind(const std::vector<std::string>& targets, const Val& x) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = x;
      return;
    }
    const Json& j = x.json();
    if (!j.is_array() || j.size() != targets.size())
      fail("for: cannot unpack " + py_repr(j) + " into " + std::to_string(targets.size()) + " names");
    for (size_t k = 0; k < targets.size(); ++k) scopes_.back()[targets[k]] = x.child(j[k]);
  }

  Val eval(const Expr& e) {
    switch (e.kind) {
      case Ek::Lit:
        return e.name == "undefined" ? Val::undefined() : Val::of(e.lit);
      case Ek::Name:
        return lookup(e.name);
      case Ek::List: {
        Json a = Json::array();
        for (const ExprP& x : e.args) a.push_back(plain(eval(*x)));
        return Val::of(std::move(a));
      }
      case Ek::Dict: {
        Json d = Json::object();
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) d[to_str(eval(*e.args[k]))] = plain(eval(*e.args[k + 1]));
        return Val::of(std::move(d));
      }
      case Ek::Attr:
        return member(eval(*e.args[0]), Json(e.name));
      case Ek::Index:
        return member(eval(*e.args[0]), plain(eval(*e.args[1])));
      case Ek::Slice:
        return slice(e);
      case Ek::Call:
        return call(e);
      case Ek::Filter:
        return filter(e);
      case Ek::Test: {
        const bool r = test(e.name, eval(*e.args[0]), e, 1);
        return Val::of(e.negate ? !r : r);
      }
      case Ek::Unary: {
        const Val a = eval(*e.args[0]);
        if (e.name == "not") return Val::of(!truthy(a));
        const Json& j = a.json();
        if (!is_number(j)) fail("unary " + e.name + " of " + py_repr(j));
        if (e.name == "+") return a;
        if (j.is_number_float()) return Val::of(-j.get<double>());
        if (j.get<int64_t>() == INT64_MIN) fail("integer overflow in -");
        return Val::of(-j.get<int64_t>());
      }
      case Ek::Binary:
        return binary(e);
      case Ek::Ternary:
        return truthy(eval(*e.args[0])) ? eval(*e.args[1]) : eval(*e.args[2]);
    }
    fail("bad expression");
  }

  static Json plain(const Val& v) { return v.undef ? Json() : v.json(); }

  Val member(const Val& obj, const Json& key) {
    if (obj.undef) return Val::undefined();
    if (obj.loop_items && key.is_string() && (key == "previtem" || key == "nextitem")) {
      const int64_t at = obj.loop_at + (key == "previtem" ? -1 : 1);  // absent at the ends: undefined, as in Jinja
      const auto n = static_cast<int64_t>(obj.loop_items->size());
      return at >= 0 && at < n ? (*obj.loop_items)[static_cast<size_t>(at)] : Val::undefined();
    }
    const Json& j = obj.json();
    if (j.is_object() && key.is_string()) {
      auto it = j.find(key.get<std::string>());
      return it == j.end() ? Val::undefined() : obj.child(*it);
    }
    if ((j.is_array() || j.is_string()) && (key.is_number_integer() || key.is_number_unsigned())) {
      const std::vector<std::string> chars =
          j.is_string() ? utf8_chars(j.get<std::string>()) : std::vector<std::string>{};
      const auto n = static_cast<int64_t>(j.is_array() ? j.size() : chars.size());
      int64_t i = key.get<int64_t>();
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Val::undefined();
      return j.is_array() ? obj.child(j[static_cast<size_t>(i)]) : Val::of(Json(chars[static_cast<size_t>(i)]));
    }
    return Val::undefined();
  }

  Val slice(const Expr& e) {
    const Val obj = eval(*e.args[0]);
    const Json& j = obj.json();
    std::vector<Json> items;
    if (j.is_array()) {
      for (const auto& x : j) items.push_back(x);
    } else if (j.is_string()) {
      for (const std::string& c : utf8_chars(j.get<std::string>())) items.push_back(c);
    } else {
      fail("slice of " + py_repr(j));
    }
    const auto n = static_cast<int64_t>(items.size());
    const int64_t step = e.args[3] ? as_int(eval(*e.args[3]), "slice step") : 1;
    if (step == 0) fail("slice step 0");
    const auto bound = [&](const ExprP& x, int64_t dflt) {
      if (!x) return dflt;
      const Val v = eval(*x);
      if (v.undef || v.json().is_null()) return dflt;
      int64_t i = as_int(v, "slice");
      if (i < 0) i += n;
      return step > 0 ? std::clamp<int64_t>(i, 0, n) : std::clamp<int64_t>(i, -1, n - 1);
    };
    const int64_t a = bound(e.args[1], step > 0 ? 0 : n - 1), b = bound(e.args[2], step > 0 ? n : -1);
    Json out = Json::array();
    std::string str;
    for (int64_t i = a; step > 0 ? i < b : i > b; i += step) {
      if (j.is_string())
        str += items[static_cast<size_t>(i)].get<std::string>();
      else
        out.push_back(items[static_cast<size_t>(i)]);
    }
    return j.is_string() ? Val::of(str) : Val::of(out);
  }

  Val binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Val a = eval(*e.args[0]);
      return truthy(a) ? eval(*e.args[1]) : a;
    }
    if (op == "or") {
      Val a = eval(*e.args[0]);
      return truthy(a) ? a : eval(*e.args[1]);
    }
    const Val av = eval(*e.args[0]), bv = eval(*e.args[1]);
    if (op == "~") return Val::of(to_str(av) + to_str(bv));
    const Json &a = av.json(), &b = bv.json();
    if (op == "%" && a.is_string()) {
      const std::string& f = a.get_ref<const std::string&>();
      if (e.args[1]->kind == Ek::List && e.args[1]->name == "tuple")
        return Val::of(py_format(f, std::vector<Json>(b.begin(), b.end()), nullptr));
      return Val::of(py_format(f, {b}, b.is_object() ? &b : nullptr));
    }
    if (op == "==") return Val::of(equal(av, bv));
    if (op == "!=") return Val::of(!equal(av, bv));
    if (op == "in" || op == "not in") {
      bool r = false;
      if (b.is_string() && a.is_string()) {
        r = b.get<std::string>().find(a.get<std::string>()) != std::string::npos;
      } else if (b.is_array()) {
        for (const auto& x : b) r = r || x == a;
      } else if (b.is_object() && a.is_string()) {
        r = b.contains(a.get<std::string>());
      } else if (!bv.undef) {
        fail("'in' " + py_repr(b));
      }
      return Val::of(op == "in" ? r : !r);
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int c;
      if (is_number(a) && is_number(b)) {
        const double x = a.get<double>(), y = b.get<double>();
        c = x < y ? -1 : x > y ? 1 : 0;
      } else if (a.is_string() && b.is_string()) {
        c = a.get<std::string>().compare(b.get<std::string>());
        c = c < 0 ? -1 : c > 0 ? 1 : 0;
      } else {
        fail("cannot compare " + py_repr(a) + " " + op + " " + py_repr(b));
      }
      return Val::of(op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0);
    }
    if (op == "+" && a.is_string() && b.is_string()) return Val::of(a.get<std::string>() + b.get<std::string>());
    if (op == "+" && a.is_array() && b.is_array()) {
      Json r = a;
      for (const auto& x : b) r.push_back(x);
      return Val::of(r);
    }
    if (op == "*" && a.is_string() && (b.is_number_integer() || b.is_number_unsigned())) {
      int64_t total = 0;
      if (__builtin_mul_overflow(b.get<int64_t>(), static_cast<int64_t>(a.get_ref<const std::string&>().size()),
                                 &total) ||
          total > kMaxItems * 64)
        fail("string repetition too large");
      std::string r;
      for (int64_t k = 0; k < b.get<int64_t>(); ++k) r += a.get<std::string>();
      return Val::of(r);
    }
    if (!is_number(a) || !is_number(b)) fail("unsupported operands for " + op + ": " + py_repr(a) + ", " + py_repr(b));
    const bool ints = !a.is_number_float() && !b.is_number_float();
    if (ints && op != "/" && op != "**") {
      const int64_t x = a.get<int64_t>(), y = b.get<int64_t>();
      if ((op == "//" || op == "%") && y == 0) fail("division by zero");
      int64_t r = 0;  // Python's integers do not overflow; 64-bit ones here: an error where they would
      if ((op == "+" && __builtin_add_overflow(x, y, &r)) || (op == "-" && __builtin_sub_overflow(x, y, &r)) ||
          (op == "*" && __builtin_mul_overflow(x, y, &r)) || (y == -1 && x == INT64_MIN))
        fail("integer overflow in " + op);
      if (op == "+" || op == "-" || op == "*") return Val::of(r);
      const int64_t q = x / y - ((x % y != 0) && ((x < 0) != (y < 0)));  // Python's floor division
      if (op == "//") return Val::of(q);
      if (op == "%") return Val::of(x - q * y);
    }
    const double x = a.get<double>(), y = b.get<double>();
    if (op == "+") return Val::of(x + y);
    if (op == "-") return Val::of(x - y);
    if (op == "*") return Val::of(x * y);
    if (op == "**") {
      if (!ints || y < 0) return Val::of(std::pow(x, y));
      const double p = std::pow(x, y);
      if (!(std::fabs(p) < 9.2e18)) fail("integer overflow in **");
      return Val::of(static_cast<int64_t>(std::llround(p)));
    }
    if (y == 0) fail("division by zero");
    if (op == "/") return Val::of(x / y);
    if (op == "//") return Val::of(std::floor(x / y));
    if (op == "%") return Val::of(x - std::floor(x / y) * y);
    fail("unknown operator " + op);
  }

  static bool equal(const Val& a, const Val& b) {
    if (a.undef || b.undef) return a.undef && b.undef;
    const Json &x = a.json(), &y = b.json();
    if (is_number(x) && is_number(y)) return x.get<double>() == y.get<double>();
    return x == y;
  }

  // Positional argument k of a call / filter / test (after the receiver), else keyword `name`, else undefined.
  Val arg(const Expr& e, size_t k, const char* name, size_t first = 1) {
    if (first + k < e.args.size()) return eval(*e.args[first + k]);
    for (const auto& [n, x] : e.kwargs)
      if (n == name) return eval(*x);
    return Val::undefined();
  }

  Val call(const Expr& e) {
    const Expr& callee = *e.args[0];
    if (callee.kind == Ek::Name) {
      const std::string& f = callee.name;
      if (const Val m = lookup(f); m.macro) return call_macro(*m.macro, e);
      if (f == "raise_exception") fail("raise_exception: " + to_str(arg(e, 0, "message")));
      if (f == "namespace") {
        Val v;
        v.ns = std::make_shared<Json>(Json::object());
        for (const auto& [k, x] : e.kwargs) (*v.ns)[k] = plain(eval(*x));
        return v;
      }
      if (f == "range") {
        int64_t a = 0, b = 0, step = 1;
        const size_t n = e.args.size() - 1;
        if (n == 1) b = as_int(eval(*e.args[1]), "range");
        if (n >= 2) a = as_int(eval(*e.args[1]), "range"), b = as_int(eval(*e.args[2]), "range");
        if (n == 3) step = as_int(eval(*e.args[3]), "range");
        if (step == 0 || n == 0 || n > 3) fail("range: bad arguments");
        int64_t span = 0;
        if (__builtin_sub_overflow(b, a, &span) || span / step > kMaxItems)
          fail("range of more than " + std::to_string(kMaxItems) + " items");
        Json r = Json::array();
        for (int64_t i = a; step > 0 ? i < b : i > b; i += step) r.push_back(i);
        return Val::of(r);
      }
      if (f == "strftime_now") {
        const std::time_t t = std::time(nullptr);
        std::tm tm{};
        localtime_r(&t, &tm);
        char buf[256];
        const size_t n = std::strftime(buf, sizeof buf, to_str(arg(e, 0, "format")).c_str(), &tm);
        return Val::of(std::string(buf, n));
      }
      if (f == "dict") {
        Json d = Json::object();
        for (const auto& [k, x] : e.kwargs) d[k] = plain(eval(*x));
        return Val::of(d);
      }
      fail("function " + f + "() is not supported");
    }
    if (callee.kind != Ek::Attr) fail("only functions and methods can be called");
    const Val self = eval(*callee.args[0]);
    const std::string& m = callee.name;
    const Json& j = self.json();
    if (j.is_string()) {
      const std::string& s = j.get_ref<const std::string&>();
      const std::string ws = " \t\n\r\f\v";
      if (m == "strip" || m == "lstrip" || m == "rstrip") {
        const Val c = arg(e, 0, "chars");
        const std::string chars = c.undef || c.json().is_null() ? ws : to_str(c);
        return Val::of(strip(s, chars, m != "rstrip", m != "lstrip"));
      }
      if (m == "upper" || m == "lower") return Val::of(ascii_case(s, m == "upper"));
      if (m == "title" || m == "capitalize") return Val::of(case_words(s, m == "title"));
      if (m == "startswith" || m == "endswith") {
        const Json p = plain(arg(e, 0, "prefix"));
        std::vector<std::string> opts;
        if (p.is_array())
          for (const auto& x : p) opts.push_back(x.get<std::string>());
        else
          opts.push_back(p.get<std::string>());
        for (const std::string& o : opts)
          if (o.size() <= s.size() &&
              (m == "startswith" ? s.compare(0, o.size(), o) == 0 : s.compare(s.size() - o.size(), o.size(), o) == 0))
            return Val::of(true);
        return Val::of(false);
      }
      if (m == "split") {
        const Val sep = arg(e, 0, "sep");
        const Val maxv = arg(e, 1, "maxsplit");
        const int64_t maxsplit = maxv.undef ? -1 : as_int(maxv, "split");
        Json r = Json::array();
        if (sep.undef || sep.json().is_null()) {  // runs of whitespace, ends ignored
          size_t i = 0;
          int64_t splits = 0;
          while (true) {
            while (i < s.size() && ws.find(s[i]) != std::string::npos) ++i;
            if (i >= s.size()) break;
            if (maxsplit >= 0 && splits == maxsplit) {
              r.push_back(strip(s.substr(i), ws, false, true));
              break;
            }
            size_t k = i;
            while (k < s.size() && ws.find(s[k]) == std::string::npos) ++k;
            r.push_back(s.substr(i, k - i));
            ++splits;
            i = k;
          }
        } else {
          const std::string d = to_str(sep);
          if (d.empty()) fail("split: empty separator");
          size_t i = 0;
          int64_t splits = 0;
          for (;;) {
            const size_t k = s.find(d, i);
            if (k == std::string::npos || (maxsplit >= 0 && splits == maxsplit)) {
              r.push_back(s.substr(i));
              break;
            }
            r.push_back(s.substr(i, k - i));
            ++splits;
            i = k + d.size();
          }
        }
        return Val::of(r);
      }
      if (m == "replace") return Val::of(replace_all(s, to_str(arg(e, 0, "old")), to_str(arg(e, 1, "new"))));
      if (m == "join") {
        std::string r;
        const std::vector<Json> xs = items_of(arg(e, 0, "iterable"), "join");
        for (size_t k = 0; k < xs.size(); ++k) r += (k ? s : "") + py_str(xs[k]);
        return Val::of(r);
      }
      fail("string method " + m + "() is not supported");
    }
    if (j.is_object()) {
      if (m == "cycle" && j.contains("index0") && j.contains("revindex0")) {  // loop.cycle(a, b, ...)
        const size_t n = e.args.size() - 1;
        if (n == 0) fail("loop.cycle needs at least one value");
        return eval(*e.args[1 + static_cast<size_t>(j["index0"].get<int64_t>()) % n]);
      }
      if (m == "items") {
        Json r = Json::array();
        for (const auto& [k, v] : j.items()) r.push_back(Json::array({k, v}));
        return Val::of(r);
      }
      if (m == "keys" || m == "values") {
        Json r = Json::array();
        for (const auto& [k, v] : j.items()) r.push_back(m == "keys" ? Json(k) : v);
        return Val::of(r);
      }
      if (m == "get") {
        const Val v = member(self, plain(arg(e, 0, "key")));
        if (!v.undef) return v;
        const Val d = arg(e, 1, "default");
        return d.undef ? Val::of(nullptr) : d;
      }
    }
    fail("method " + m + "() of " + py_repr(j) + " is not supported");
  }

  // A macro's text: its parameters bound (positional, then keywords, then defaults; missing ones undefined) in a
  // scope of their own.
  Val call_macro(const Node& m, const Expr& e) {
    const DepthGuard depth(depth_, 64, "macro calls");
    std::map<std::string, Val> scope;
    const size_t given = e.args.size() - 1;
    if (given > m.targets.size()) fail("macro " + m.text + " takes " + std::to_string(m.targets.size()) + " arguments");
    for (size_t k = 0; k < m.targets.size(); ++k) {
      if (k < given) {
        scope[m.targets[k]] = eval(*e.args[k + 1]);
        continue;
      }
      Val v = Val::undefined();
      bool found = false;
      for (const auto& [name, x] : e.kwargs)
        if (name == m.targets[k]) v = eval(*x), found = true;
      if (!found && m.branches[k].first) v = eval(*m.branches[k].first);
      scope[m.targets[k]] = v;
    }
    scopes_.push_back(std::move(scope));
    std::string out;
    try {
      run(m.else_body, out);
    } catch (...) {  // a {% break %} in the body ends a loop around the call
      scopes_.pop_back();
      throw;
    }
    scopes_.pop_back();
    return Val::of(out);
  }

  static std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    if (from.empty()) return s;
    for (size_t i = 0; (i = s.find(from, i)) != std::string::npos; i += to.size()) s.replace(i, from.size(), to);
    return s;
  }

  static std::string case_words(const std::string& s, bool every_word) {
    std::string r = s;
    bool start = true;
    for (char& c : r) {
      const auto u = static_cast<unsigned char>(c);
      if (std::isalpha(u)) {
        c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
        start = false;
      } else if (every_word) {
        start = true;
      }
    }
    return r;
  }

  Val filter(const Expr& e) {
    const std::string& f = e.name;
    const Val v = eval(*e.args[0]);
    const Json& j = v.json();
    if (f == "safe" || f == "e" || f == "escape" || f == "string") {
      return f == "string" ? Val::of(to_str(v)) : v;
    }
    if (f == "trim") return Val::of(strip(to_str(v), " \t\n\r\f\v", true, true));
    if (f == "upper" || f == "lower") return Val::of(ascii_case(to_str(v), f == "upper"));
    if (f == "capitalize" || f == "title") return Val::of(case_words(to_str(v), f == "title"));
    if (f == "length" || f == "count") {
      if (j.is_string()) {
        int64_t n = 0;  // code points
        for (const char c : j.get_ref<const std::string&>()) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
        return Val::of(n);
      }
      if (v.undef) return Val::of(0);
      if (!j.is_array() && !j.is_object()) fail("length of " + py_repr(j));
      return Val::of(static_cast<int64_t>(j.size()));
    }
    if (f == "tojson") {  // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
      const Val ind = arg(e, 1, "indent"), sep = arg(e, 2, "separators");
      JsonStyle st;
      st.ensure_ascii = truthy(arg(e, 0, "ensure_ascii"));
      if (!ind.undef && !ind.json().is_null()) {
        if (ind.json().is_string())
          st.indent = ind.json().get<std::string>();
        else
          st.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(as_int(ind, "tojson indent"), 0, 64)), ' ');
        st.pretty = true;
        st.item_sep = ",";
      }
      if (!sep.undef && !sep.json().is_null()) {
        const Json& sj = sep.json();
        if (!sj.is_array() || sj.size() != 2 || !sj[0].is_string() || !sj[1].is_string())
          fail("tojson separators must be (item_separator, key_separator)");
        st.item_sep = sj[0].get<std::string>(), st.key_sep = sj[1].get<std::string>();
      }
      st.sort_keys = truthy(arg(e, 3, "sort_keys"));
      std::string out;
      dump_json(j, st, 0, out);
      return Val::of(out);
    }
    if (f == "format") {  // jinja2: value % (kwargs or args)
      if (!e.kwargs.empty() && e.args.size() > 1) fail("format: positional and keyword arguments together");
      if (!e.kwargs.empty()) {
        Json d = Json::object();
        for (const auto& [k, x] : e.kwargs) d[k] = plain(eval(*x));
        return Val::of(py_format(to_str(v), {d}, &d));
      }
      std::vector<Json> xs;
      for (size_t k = 1; k < e.args.size(); ++k) xs.push_back(plain(eval(*e.args[k])));
      return Val::of(py_format(to_str(v), xs, nullptr));
    }
    if (f == "indent") {
      const Val w = arg(e, 0, "width");
      const std::string pad =
          w.undef ? "    "
          : w.json().is_string()
              ? w.json().get<std::string>()
              : std::string(static_cast<size_t>(std::clamp<int64_t>(as_int(w, "indent"), 0, 256)), ' ');
      return Val::of(indent_text(to_str(v), pad, truthy(arg(e, 1, "first")), truthy(arg(e, 2, "blank"))));
    }
    if (f == "attr") return Val::undefined();       // jinja2's attr() is getattr only: JSON values have no attributes
    if (f == "sort" || f == "min" || f == "max") {  // sort(reverse, case_sensitive, attribute); min / max(cs, attr)
      const bool sort = f == "sort";
      const bool reverse = sort && truthy(arg(e, 0, "reverse"));
      const bool cs = truthy(arg(e, sort ? 1 : 0, "case_sensitive"));
      const Val attr = arg(e, sort ? 2 : 1, "attribute");
      std::vector<Json> xs = items_of(v, f);
      std::vector<std::pair<Json, size_t>> keys;
      for (size_t k = 0; k < xs.size(); ++k)
        keys.emplace_back(sort_key(attr.undef ? xs[k] : attribute_of(xs[k], to_str(attr)), cs), k);
      const auto less = [](const auto& x, const auto& y) { return py_compare(x.first, y.first) < 0; };
      if (!sort) {
        if (keys.empty()) return Val::undefined();
        const auto it = f == "min" ? std::min_element(keys.begin(), keys.end(), less)
                                   : std::max_element(keys.begin(), keys.end(), less);
        return Val::of(xs[it->second]);
      }
      std::stable_sort(keys.begin(), keys.end(),
                       [&](const auto& x, const auto& y) { return reverse ? less(y, x) : less(x, y); });
      Json r = Json::array();
      for (const auto& [key, k] : keys) r.push_back(xs[k]);
      return Val::of(r);
    }
    if (f == "dictsort") {  // dictsort(case_sensitive=False, by='key', reverse=False): (key, value) pairs
      if (!j.is_object()) fail("dictsort of " + py_repr(j));
      const bool cs = truthy(arg(e, 0, "case_sensitive"));
      const Val by = arg(e, 1, "by");
      const std::string by_s = by.undef ? "key" : to_str(by);
      if (by_s != "key" && by_s != "value") fail("dictsort: by must be 'key' or 'value'");
      const bool reverse = truthy(arg(e, 2, "reverse"));
      std::vector<Json> pairs;
      for (const auto& [k, x] : j.items()) pairs.push_back(Json::array({k, x}));
      std::stable_sort(pairs.begin(), pairs.end(), [&](const Json& x, const Json& y) {
        const size_t at = by_s == "key" ? 0 : 1;
        const int c = py_compare(sort_key(x[at], cs), sort_key(y[at], cs));
        return reverse ? c > 0 : c < 0;
      });
      return Val::of(Json(pairs));
    }
    if (f == "sum") {  // sum(attribute=None, start=0)
      const Val attr = arg(e, 0, "attribute"), start = arg(e, 1, "start");
      Json total = start.undef ? Json(0) : start.json();
      for (const Json& x : items_of(v, "sum")) {
        const Json t = attr.undef ? x : attribute_of(x, to_str(attr));
        if (!is_number(t) || !is_number(total)) fail("sum of " + py_repr(t));
        if (t.is_number_float() || total.is_number_float())
          total = total.get<double>() + t.get<double>();
        else if (int64_t r = 0; __builtin_add_overflow(total.get<int64_t>(), t.get<int64_t>(), &r))
          fail("integer overflow in sum");
        else
          total = r;
      }
      return Val::of(total);
    }
    if (f == "round") {  // round(precision=0, method='common'|'ceil'|'floor')
      if (!is_number(j)) fail("round of " + py_repr(j));
      const Val pv = arg(e, 0, "precision"), mv = arg(e, 1, "method");
      const int64_t prec = pv.undef ? 0 : std::clamp<int64_t>(as_int(pv, "round precision"), -300, 300);
      const std::string method = mv.undef ? "common" : to_str(mv);
      if (method == "common") {
        if (!j.is_number_float()) return v;  // round(int, n) is the int
        if (prec >= 0) {                     // Python rounds the exact binary value, ties to even: as printf does
          char buf[400];
          std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(prec), j.get<double>());
          return Val::of(std::strtod(buf, nullptr));
        }
        const double scale = std::pow(10.0, static_cast<double>(-prec));
        return Val::of(std::nearbyint(j.get<double>() / scale) * scale);
      }
      if (method != "ceil" && method != "floor") fail("round: method must be common, ceil or floor");
      const double scale = std::pow(10.0, static_cast<double>(prec)), x = j.get<double>() * scale;
      return Val::of((method == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
    }
    if (f == "wordcount") {  // len(re.findall(r"\w+", s)): runs of letters, digits and '_'
      const std::string text = unicode::repair_utf8(to_str(v));
      int64_t n = 0;
      bool in_word = false;
      for (size_t i = 0; i < text.size();) {
        const char32_t c = unicode::next_cp(text, i);
        const bool w = c == U'_' || unicode::is_alphanumeric(c);
        n += w && !in_word;
        in_word = w;
      }
      return Val::of(n);
    }
    if (f == "default" || f == "d") {
      const bool boolean = truthy(arg(e, 1, "boolean"));
      if (v.undef || (boolean && !truthy(v))) {
        const Val d = arg(e, 0, "default_value");
        return d.undef ? Val::of("") : d;
      }
      return v;
    }
    if (f == "join") {
      const std::string sep = to_str(arg(e, 0, "d"));
      const Val attr = arg(e, 1, "attribute");
      std::string r;
      const std::vector<Json> xs = items_of(v, "join");
      for (size_t k = 0; k < xs.size(); ++k)
        r += (k ? sep : "") + (attr.undef ? py_str(xs[k]) : to_str(member(Val::of(xs[k]), plain(attr))));
      return Val::of(r);
    }
    if (f == "first" || f == "last") {
      const std::vector<Json> xs = items_of(v, f);
      if (xs.empty()) return Val::undefined();
      return Val::of(f == "first" ? xs.front() : xs.back());
    }
    if (f == "list" || f == "reverse" || f == "unique") {
      std::vector<Json> xs = items_of(v, f);
      if (f == "reverse" && j.is_string()) {
        std::string r;
        for (auto it = xs.rbegin(); it != xs.rend(); ++it) r += it->get<std::string>();
        return Val::of(r);
      }
      if (f == "reverse") std::reverse(xs.begin(), xs.end());
      Json r = Json::array();
      for (Json& x : xs) {
        if (f == "unique" && std::find(r.begin(), r.end(), x) != r.end()) continue;
        r.push_back(std::move(x));
      }
      return Val::of(r);
    }
    if (f == "items") {
      if (v.undef) return Val::of(Json::array());
      if (!j.is_object()) fail("items of " + py_repr(j));
      Json r = Json::array();
      for (const auto& [k, x] : j.items()) r.push_back(Json::array({k, x}));
      return Val::of(r);
    }
    if (f == "replace") return Val::of(replace_all(to_str(v), to_str(arg(e, 0, "old")), to_str(arg(e, 1, "new"))));
    if (f == "int") {
      if (j.is_number_float() && !(std::fabs(j.get<double>()) < 9.2e18))
        fail("int of " + py_repr(j) + " is out of range");
      if (j.is_number()) return Val::of(j.is_number_float() ? static_cast<int64_t>(j.get<double>()) : j.get<int64_t>());
      try {
        return Val::of(static_cast<int64_t>(std::stoll(to_str(v))));
      } catch (...) {
        return Val::of(0);
      }
    }
    if (f == "float") {
      if (j.is_number()) return Val::of(j.get<double>());
      try {
        return Val::of(std::stod(to_str(v)));
      } catch (...) {
        return Val::of(0.0);
      }
    }
    if (f == "abs") {
      if (j.is_number_float()) return Val::of(std::fabs(j.get<double>()));
      if (j.is_number() && j.get<int64_t>() != INT64_MIN) return Val::of(std::llabs(j.get<int64_t>()));
      fail("abs of " + py_repr(j));
    }
    if (f == "map") {
      const Val attr = arg(e, 99, "attribute");
      if (attr.undef) fail("map() is supported with attribute= only");
      Json r = Json::array();
      for (const Json& x : items_of(v, "map")) r.push_back(plain(member(Val::of(x), plain(attr))));
      return Val::of(r);
    }
    if (f == "select" || f == "reject") {  // items passing a test (or truthy), or failing it
      Json r = Json::array();
      for (const Json& x : items_of(v, f)) {
        const Val a = Val::of(x);
        const bool ok = e.args.size() > 1 ? test(to_str(eval(*e.args[1])), a, e, 2) : truthy(a);
        if (ok == (f == "select")) r.push_back(x);
      }
      return Val::of(r);
    }
    if (f == "selectattr" || f == "rejectattr") {
      const std::string attr = to_str(arg(e, 0, "attr"));
      Json r = Json::array();
      for (const Json& x : items_of(v, f)) {
        const Val a = member(Val::of(x), Json(attr));
        const bool ok = e.args.size() > 2 ? test(to_str(eval(*e.args[2])), a, e, 3) : truthy(a);
        if (ok == (f == "selectattr")) r.push_back(x);
      }
      return Val::of(r);
    }
    fail("filter " + f + " is not supported");
  }

  // Test `name` on v; its arguments are e.args[first...].
  bool test(const std::string& name, const Val& v, const Expr& e, size_t first) {
    const Json& j = v.json();
    if (name == "defined") return !v.undef;
    if (name == "undefined") return v.undef;
    if (v.undef && name != "none") return false;
    if (name == "none") return !v.undef && j.is_null();
    if (name == "string") return j.is_string();
    if (name == "number") return j.is_number();
    if (name == "integer") return j.is_number_integer() || j.is_number_unsigned();
    if (name == "float") return j.is_number_float();
    if (name == "boolean") return j.is_boolean();
    if (name == "true") return j.is_boolean() && j.get<bool>();
    if (name == "false") return j.is_boolean() && !j.get<bool>();
    if (name == "mapping") return j.is_object() || static_cast<bool>(v.ns);
    if (name == "iterable") return j.is_array() || j.is_object() || j.is_string();
    if (name == "sequence") return j.is_array() || j.is_string() || j.is_object();
    if (name == "even" || name == "odd") return (as_int(v, "even") % 2 == 0) == (name == "even");
    if (name == "divisibleby") return as_int(v, "divisibleby") % as_int(arg(e, 0, "num", first), "divisibleby") == 0;
    if (name == "equalto" || name == "eq" || name == "sameas") return equal(v, arg(e, 0, "other", first));
    if (name == "ne") return !equal(v, arg(e, 0, "other", first));
    if (name == "lt" || name == "lessthan" || name == "le" || name == "gt" || name == "greaterthan" || name == "ge") {
      const int c = py_compare(j, plain(arg(e, 0, "other", first)));
      return name == "lt" || name == "lessthan" ? c < 0 : name == "le" ? c <= 0 : name == "ge" ? c >= 0 : c > 0;
    }
    if (name == "in") {
      const Json& in = plain(arg(e, 0, "seq", first));
      if (in.is_string() && j.is_string()) return in.get<std::string>().find(j.get<std::string>()) != std::string::npos;
      if (in.is_object() && j.is_string()) return in.contains(j.get<std::string>());
      if (in.is_array()) return std::find(in.begin(), in.end(), j) != in.end();
      fail("'in' test on " + py_repr(in));
    }
    if (name == "lower" || name == "upper") {  // str.islower() / isupper(): some cased letter, none of the other case
      if (!j.is_string()) return false;
      bool cased = false;
      for (const char c : j.get<std::string>()) {
        const auto u = static_cast<unsigned char>(c);
        if (name == "lower" ? std::isupper(u) : std::islower(u)) return false;
        cased = cased || std::isalpha(u);
      }
      return cased;
    }
    fail("test " + name + " is not supported");
  }

  static constexpr int64_t kMaxSteps = 1'000'000;
  static constexpr size_t kMaxOutput = size_t{64} << 20;
  static constexpr int64_t kMaxItems = 1'000'000;  // range() and string repetition
  int64_t steps_ = 0;
  int depth_ = 0;
  std::vector<std::map<std::string, Val>> scopes_;
};

std::string render_checked(const std::string& source, const nlohmann::ordered_json& context);

}  // namespace

std::string render(const std::string& source, const nlohmann::ordered_json& context) {
  LMF_CHECK(context.is_object(), "chat_template: the context must be an object");
  try {
    return render_checked(source, context);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // a JSON type mismatch inside a method or filter, say
    fail(std::string("cannot evaluate: ") + e.what());
  }
}

namespace {

std::string render_checked(const std::string& source, const nlohmann::ordered_json& context) {
  // Jinja's lexer makes every line end "\n" (\r\n and \r too) and drops one at the end of the source
  // (keep_trailing_newline off, as transformers leaves it).
  std::string src;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      src += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      src += source[i];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  TemplateParser tp(lex(src));
  std::string ended;
  Parser* none = nullptr;
  const Body body = tp.body({}, ended, &none);
  int64_t work = 0;
  struct WorkScope {  // charge() counts into `work` for this render only
    explicit WorkScope(int64_t* w) { g_work = w; }
    ~WorkScope() { g_work = nullptr; }
    WorkScope(const WorkScope&) = delete;
    WorkScope& operator=(const WorkScope&) = delete;
  } scope(&work);
  Renderer r(context);
  std::string out;
  try {
    r.run(body, out);
  } catch (const BreakSignal&) {
    fail("{% break %} outside a loop");
  } catch (const ContinueSignal&) {
    fail("{% continue %} outside a loop");
  }
  return out;
}

}  // namespace

}  // namespace lmforge::tokenizer::jinja
