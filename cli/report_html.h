// Static HTML pieces shared by `rhythm train`'s report.html and `rhythm ablate`'s
// ablation.html: SVG line charts (no script) and text escaping. Pure functions of their
// arguments; thread-safe.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace rhythm::cli {

struct Series {
  std::string label, colour;
  std::vector<std::pair<double, double>> points;  // (x, y)
  // Optional shaded band around the line: (x, y_low, y_high) per point; drawn translucent in
  // the series' colour beneath it.
  struct Band {
    double x, lo, hi;
  };
  std::vector<Band> band;
};

// How a chart's y axis is scaled: to the data, from zero, or as a percentage from 0 to the next
// multiple of 10%.
enum class Scale { kData, kFromZero, kPercent };

// An SVG line chart of `series` over x (the policy version, unless `x_label` says otherwise).
// Every line is a <polyline class='series' data-label='...'>, every band a
// <polygon class='band'>, inside <svg class='chart'>. "" if no series has a point.
std::string Chart(const std::string& title, const std::vector<Series>& series,
                  Scale scale = Scale::kData, bool markers = false,
                  const std::string& x_label = "version");

// `s` with < > & ' escaped and '\n' shown as a return arrow.
std::string Escape(const std::string& s);

}  // namespace rhythm::cli
