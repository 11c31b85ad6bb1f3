// Static HTML pieces shared by `rhythm train`'s report.html, `rhythm ablate`'s ablation.html
// and `rhythm analyze`'s analysis.html: SVG line charts (no script) and text escaping. Pure functions of their
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
  std::vector<Band> band = {};
  // Points marked with a dot on the line (peaks), whatever Chart's `markers` says.
  std::vector<std::pair<double, double>> marks = {};
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

// "<!doctype html>...<body>": the head every report page shares (UTF-8, title, the charts' and
// tables' style), followed by `extra_css` inside its <style>.
std::string PageHead(const std::string& title, const std::string& extra_css = "");

// `s` with < > & ' escaped and '\n' shown as a return arrow.
std::string Escape(const std::string& s);

}  // namespace rhythm::cli
