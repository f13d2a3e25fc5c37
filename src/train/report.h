// The run's HTML report (run/report.html): loss, learning rate, throughput and MoE balance curves from log.jsonl.
#pragma once
#include <string>

namespace lmforge::train {

// Reads run_dir/log.jsonl and writes run_dir/report.html atomically.
void write_report(const std::string& run_dir);

}  // namespace lmforge::train
