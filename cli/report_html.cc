#include "cli/report_html.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace rhythm::cli {

// An SVG line chart of `series` over the policy version. No script: the report is static HTML.
std::string Chart(const std::string& title, const std::vector<Series>& series, Scale scale,
                  bool markers, const std::string& x_label) {
  double xlo = 1e300, xhi = -1e300, lo = 1e300, hi = -1e300;
  for (const Series& s : series) {
    for (const auto& [x, y] : s.points) {
      xlo = std::min(xlo, x);
      xhi = std::max(xhi, x);
      lo = std::min(lo, y);
      hi = std::max(hi, y);
    }
    for (const Series::Band& b : s.band) {
      lo = std::min(lo, b.lo);
      hi = std::max(hi, b.hi);
    }
  }
  if (xlo > xhi) return "";
  if (scale != Scale::kData) lo = std::min(lo, 0.0);
  if (scale == Scale::kPercent) hi = std::min(1.0, std::ceil(hi * 10 + 1e-9) / 10);
  if (hi - lo < 1e-12) hi = lo + (scale == Scale::kData ? 1e-3 : 1);
  auto label = [&](double v) {
    return scale == Scale::kPercent ? absl::StrFormat("%.0f%%", 100 * v)
                                    : absl::StrFormat("%.3g", v);
  };
  if (xhi - xlo < 1e-12) xhi = xlo + 1;
  const double w = 420, h = 160, left = 48, top = 10;
  std::string body;
  for (const Series& s : series) {
    if (s.band.empty()) continue;
    std::string polygon;
    for (const Series::Band& b : s.band) {
      absl::StrAppend(&polygon, absl::StrFormat("%.1f,%.1f ", left + w * (b.x - xlo) / (xhi - xlo),
                                                top + h - h * (b.hi - lo) / (hi - lo)));
    }
    for (auto it = s.band.rbegin(); it != s.band.rend(); ++it) {
      absl::StrAppend(&polygon,
                      absl::StrFormat("%.1f,%.1f ", left + w * (it->x - xlo) / (xhi - xlo),
                                      top + h - h * (it->lo - lo) / (hi - lo)));
    }
    absl::StrAppend(&body, absl::StrFormat("<polygon class='band' fill='%s' fill-opacity='0.18' "
                                           "stroke='none' points='%s'/>",
                                           s.colour, polygon));
  }
  for (const Series& s : series) {
    std::string points, dots;
    for (const auto& [x, y] : s.points) {
      const double px = left + w * (x - xlo) / (xhi - xlo);
      const double py = top + h - h * (y - lo) / (hi - lo);
      absl::StrAppend(&points, absl::StrFormat("%.1f,%.1f ", px, py));
      if (markers) {
        absl::StrAppend(&dots, absl::StrFormat("<circle cx='%.1f' cy='%.1f' r='3' fill='%s'/>", px,
                                               py, s.colour));
      }
    }
    for (const auto& [x, y] : s.marks) {
      absl::StrAppend(&dots, absl::StrFormat("<circle class='mark' cx='%.1f' cy='%.1f' r='3.5' "
                                             "fill='%s' stroke='#000' stroke-width='0.8'/>",
                                             left + w * (x - xlo) / (xhi - xlo),
                                             top + h - h * (y - lo) / (hi - lo), s.colour));
    }
    absl::StrAppend(&body, absl::StrFormat("<polyline class='series' data-label='%s' fill='none' "
                                           "stroke='%s' stroke-width='2.5' points='%s'/>%s",
                                           s.label, s.colour, points, dots));
  }
  std::string legend;
  if (series.size() > 1) {
    for (const Series& s : series) {
      absl::StrAppend(
          &legend, absl::StrFormat(" <span style='color:%s'>&#9632; %s</span>", s.colour, s.label));
    }
  }
  return absl::StrFormat(
      "<figure><figcaption>%s<small>%s</small></figcaption>"
      "<svg class='chart' width='480' height='200' xmlns='http://www.w3.org/2000/svg'>"
      "<rect x='%g' y='%g' width='%g' height='%g' fill='#fafafa' stroke='#ccc'/>"
      "<text x='2' y='%g' font-size='10'>%s</text><text x='2' y='%g' font-size='10'>%s</text>"
      "%s<text x='%g' y='192' font-size='10'>%s %.0f</text>"
      "<text x='%g' y='192' font-size='10' text-anchor='end'>%s %.0f</text></svg></figure>",
      title, legend, left, top, w, h, top + 8, label(hi), top + h, label(lo), body, left, x_label,
      xlo, left + w, x_label, xhi);
}

std::string PageHead(const std::string& title, const std::string& extra_css) {
  return absl::StrCat(
      "<!doctype html><html><head><meta charset='utf-8'><title>", Escape(title),
      "</title><style>body{font-family:sans-serif;margin:2em;max-width:1100px}figure{display:"
      "inline-block;margin:.5em}figcaption{font-weight:bold}figcaption small{font-weight:normal;"
      "margin-left:.5em}table{border-collapse:collapse;margin:1em 0}td,th{padding:3px 10px;"
      "text-align:right;border-bottom:1px solid #ddd}th:first-child,td:first-child{text-align:"
      "left}small{color:#666}",
      extra_css, "</style></head><body>");
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '\'':
        out += "&#39;";
        break;
      case '\n':
        out += "&#8629;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace rhythm::cli
