# The code of a Rust source line, without its comments: `code(line)` strips `/* */` blocks
# (tracking one that spans lines in the global `in_block`; not nested, enough for this
# codebase) and a `//` comment outside a string literal (a quote count before it tells).
# Returns "" for a line that is all comment. Used by scripts/kernel-lines.sh and
# scripts/check-arch-boundary.sh, which prepend this file to their awk program.
function code(line,    rest, pos, before, quotes, nxt) {
  if (in_block) {
    if (index(line, "*/")) { sub(/^.*\*\//, "", line); in_block = 0 } else return ""
  }
  while (match(line, /\/\*/)) {
    rest = substr(line, RSTART + 2)
    if (index(rest, "*/")) { sub(/\/\*[^*]*\*+([^\/*][^*]*\*+)*\//, "", line) }
    else { line = substr(line, 1, RSTART - 1); in_block = 1 }
  }
  pos = index(line, "//")
  while (pos) {
    before = substr(line, 1, pos - 1)
    quotes = gsub(/"/, "\"", before)
    if (quotes % 2 == 0) { return before }
    nxt = index(substr(line, pos + 2), "//")
    pos = nxt ? pos + 1 + nxt : 0
  }
  return line
}
