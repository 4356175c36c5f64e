# One env file's lines from `aws ssm get-parameters-by-path --output json`:
# the parameters directly under $p (the group's path), sorted by variable,
# quoted the way the agent quotes them (docs/env-file-format.md): single
# quotes unless the value holds ' \ or CR, else double quotes with the five
# escapes \\ \" \$ \n \r. Deeper paths are skipped.
def envq:
  if test("['\\\\\r]") then
    "\"" + (gsub("\\\\"; "\\\\") | gsub("\""; "\\\"") | gsub("\\$"; "\\$")
            | gsub("\n"; "\\n") | gsub("\r"; "\\r")) + "\""
  else "'" + . + "'" end;
[.Parameters[]
 | select(.Name | startswith($p))
 | {k: (.Name | ltrimstr($p)), v: .Value}
 | select(.k | contains("/") | not)]
| sort_by(.k)
| .[]
| "\(.k)=\(.v | envq)"
