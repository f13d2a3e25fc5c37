// run/report.html: the run's curves (training and validation loss, learning rate, throughput, MoE expert load)
// drawn as inline SVG from log.jsonl, so a browser shows them with nothing else installed.
#include "train/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "lmforge/io/atomic_file.h"

namespace lmforge::train {

namespace {

struct Series {
  std::string name, color;
  std::vector<std::pair<double, double>> points;
};

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else
      o += c;
  }
  return o;
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.4g", v);
  return b;
}

// One line chart: x = step, y auto-scaled over every series.
std::string chart(const std::string& title, const std::vector<Series>& series) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series& s : series)
    for (auto [x, y] : s.points) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  std::ostringstream o;
  o << "<h2>" << esc(title) << "</h2>\n";
  if (!(x1 >= x0) || !(y1 >= y0)) return o.str() + "<p>no data</p>\n";
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  const double W = 720, H = 260, L = 60, B = 30, T = 10, R = 10;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return T + (y1 - y) / (y1 - y0) * (H - T - B); };
  o << "<svg width='" << W << "' height='" << H << "' xmlns='http://www.w3.org/2000/svg' font-size='11'>\n";
  o << "<rect x='" << L << "' y='" << T << "' width='" << W - L - R << "' height='" << H - T - B
    << "' fill='none' stroke='#999'/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double y = y0 + (y1 - y0) * i / 4, x = x0 + (x1 - x0) * i / 4;
    o << "<text x='" << L - 4 << "' y='" << py(y) + 4 << "' text-anchor='end'>" << fmt(y) << "</text>\n";
    o << "<text x='" << px(x) << "' y='" << H - B + 16 << "' text-anchor='middle'>" << fmt(x) << "</text>\n";
  }
  double ly = T + 14;
  for (const Series& s : series) {
    if (s.points.empty()) continue;
    o << "<polyline fill='none' stroke='" << s.color << "' stroke-width='1.5' points='";
    for (auto [x, y] : s.points)
      if (std::isfinite(y)) o << px(x) << "," << py(y) << " ";
    o << "'/>\n";
    if (s.points.size() < 40)
      for (auto [x, y] : s.points)
        if (std::isfinite(y))
          o << "<circle cx='" << px(x) << "' cy='" << py(y) << "' r='2.5' fill='" << s.color << "'/>\n";
    o << "<text x='" << W - R - 6 << "' y='" << ly << "' text-anchor='end' fill='" << s.color << "'>" << esc(s.name)
      << "</text>\n";
    ly += 14;
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace

void write_report(const std::string& run_dir) {
  std::ifstream f(run_dir + "/log.jsonl");
  Series loss{"train loss", "#1f77b4", {}}, val{"validation loss", "#d62728", {}}, lr{"learning rate", "#2ca02c", {}},
      tps{"tokens/s", "#9467bd", {}}, aux{"MoE aux loss", "#ff7f0e", {}};
  std::map<int64_t, std::vector<std::pair<double, double>>> expert_cv;  // layer -> (step, max/mean load)
  nlohmann::json start;
  std::vector<std::string> events;
  std::string line;
  while (std::getline(f, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    if (j.contains("event")) {
      if (j["event"] == "start") start = j;
      if (j["event"] != "checkpoint") events.push_back(j.dump());
      continue;
    }
    if (!j.contains("step") || !j["step"].is_number()) continue;
    const double s = j["step"].get<double>();
    auto num = [&](const char* k, Series& out) {
      if (j.contains(k) && j[k].is_number()) out.points.emplace_back(s, j[k].get<double>());
    };
    num("loss", loss);
    num("val_loss", val);
    num("lr", lr);
    num("tokens_per_s", tps);
    num("aux_loss", aux);
    if (j.contains("expert_load") && j["expert_load"].is_array())
      for (const auto& l : j["expert_load"]) {
        std::vector<double> t = l.value("tokens", std::vector<double>{});
        if (t.empty()) continue;
        double mean = 0, mx = 0;
        for (double v : t) mean += v, mx = std::max(mx, v);
        mean /= static_cast<double>(t.size());
        if (mean > 0) expert_cv[l.value("layer", int64_t{0})].emplace_back(s, mx / mean);
      }
  }
  std::ostringstream o;
  o << "<!doctype html>\n<html><head><meta charset='utf-8'><title>lmforge run</title>"
    << "<style>body{font-family:sans-serif;margin:2em;max-width:780px}pre{font-size:11px;white-space:pre-wrap}"
    << "</style></head><body>\n<h1>lmforge training run</h1>\n";
  if (!start.is_null()) o << "<pre>" << esc(start.dump(1)) << "</pre>\n";
  o << chart("Loss (nats per token)", {loss, val});
  o << chart("Learning rate", {lr});
  o << chart("Throughput (tokens/s)", {tps});
  if (!aux.points.empty()) o << chart("MoE auxiliary loss", {aux});
  if (!expert_cv.empty()) {
    static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"};
    std::vector<Series> ss;
    size_t i = 0;
    for (auto& [layer, pts] : expert_cv) ss.push_back({"layer " + std::to_string(layer), colors[i++ % 7], pts});
    o << chart("MoE load balance: busiest expert / mean (1 = perfectly balanced)", ss);
  }
  o << "<h2>Events</h2>\n<pre>";
  for (const std::string& e : events) o << esc(e) << "\n";
  o << "</pre>\n</body></html>\n";
  io::write_file_atomic(run_dir + "/report.html", o.str());
}

}  // namespace lmforge::train
