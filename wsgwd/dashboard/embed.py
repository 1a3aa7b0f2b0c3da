#!/usr/bin/env python3
"""Turns the dashboard page into C++: dashboardPage() (control_dashboard.h) over a byte array.

A byte array rather than a string literal: no delimiter the page could contain, and no
compiler's limit on a literal's length. Usage: embed.py index.html out.cpp
"""
import sys

data = open(sys.argv[1], "rb").read()
lines = []
for i in range(0, len(data), 24):
    lines.append("    " + ",".join(str(b) for b in data[i:i + 24]) + ",")
with open(sys.argv[2], "w") as out:
    out.write('// Generated from ' + sys.argv[1].rsplit('/', 1)[-1] + ' by embed.py: do not edit.\n')
    out.write('#include "control_dashboard.h"\n\nnamespace wsgw::daemon {\n\nnamespace {\n')
    out.write('const unsigned char kPage[] = {\n' + "\n".join(lines) + '\n    0};\n} // namespace\n\n')
    out.write('std::string_view dashboardPage() noexcept { return std::string_view(reinterpret_cast<const char *>(kPage), sizeof kPage - 1); }\n\n')
    out.write('} // namespace wsgw::daemon\n')
