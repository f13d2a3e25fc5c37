// A Jinja interpreter for chat templates (tokenizer_config.json's `chat_template`), rendering as transformers'
// apply_chat_template does: trim_blocks and lstrip_blocks on, loop controls (break / continue), `raise_exception`,
// `strftime_now`, `namespace`, and a `tojson` with Python's json.dumps spacing.
//
// The subset real templates use: {{ }}, {% if / elif / else %}, {% for x in xs if c %} with `loop` (loop.cycle too)
// and {% else %}, {% set name = ... %} / {% set ns.attr = ... %} / {% set name %}...{% endset %}, {% macro %} (called
// with positional and keyword arguments, defaults), {% generation %}, comments, whitespace control (-);
// literals, lists, tuples, dicts, attribute and subscript access, slices, Python's operators (and, or, not, in, is,
// comparisons, + - * / // % ~, x if c else y; `str % args` is Python's printf-style formatting), filters (trim, length,
// count, tojson (ensure_ascii, indent, separators, sort_keys), string, upper, lower, capitalize, title, join, first,
// last, default, items, list, reverse, replace, int, float, abs, round, safe, unique, map(attribute=), select /
// reject, selectattr / rejectattr, format, indent, sort, dictsort, min, max, sum, wordcount, attr), tests (defined,
// undefined, none, string, number, integer, float, boolean, true, false, mapping, iterable, sequence, even, odd,
// divisibleby, equalto / eq / ==, ne, lt, le, gt, ge, in, lower, upper), string methods (strip, lstrip, rstrip, split,
// startswith, endswith, upper, lower, replace, title, capitalize, join) and dict methods (items, keys, values, get).
// Floats print as Python's repr. Anything else (call blocks, includes, recursive loops, ...) is an error naming it,
// so a caller can fall back.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace lmforge::tokenizer::jinja {

// Renders `source` with the variables of `context` (a JSON object; key order is kept for tojson and items()).
// Errors (lmforge::Error) for syntax errors, unsupported constructs and raise_exception(...).
std::string render(const std::string& source, const nlohmann::ordered_json& context);

}  // namespace lmforge::tokenizer::jinja
