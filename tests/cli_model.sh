#!/usr/bin/env bash
# milscreen model: the paper's figures, and a bad config is an error naming file, line and
# key with exit code 2; a bad number on the commands' options is an error naming it.
set -euo pipefail
ms=$1
src=$2
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
out=$("$ms" model --config "$src/configs/paper.ini" --input 900x900x3)
check "parameters" '[[ "$out" == *"parameters: 484,476"* ]]'
check "output map" '[[ "$out" == *"output map: 53x53"* ]]'
check "forward cost" '[[ "$out" == *"forward cost: 82.3 GFLOP"* ]]'
check "smallest input" '[[ "$out" == *"smallest input 54x54"* ]]'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '[net]\nclasses = 3\n\n[conv1]\ntype = conv\nfilter = 3\n' > "$tmp/bad.ini"
set +e
err=$("$ms" model --config "$tmp/bad.ini" 2>&1); rc=$?
set -e
check "bad config exits 2" '[[ $rc -eq 2 ]]'
check "names the missing key" '[[ "$err" == *"bad.ini:4: [conv1] conv needs '"'"'filters'"'"'"* ]]'
printf '[net]\nclasses = 3\n[c]\ntype = conv\nfilters = classes\nactivation = linear\nsize = 1\nstrid = 2\n[m]\ntype = mil\n' > "$tmp/typo.ini"
set +e
err=$("$ms" model --config "$tmp/typo.ini" 2>&1); rc=$?
set -e
check "unknown key exits 2" '[[ $rc -eq 2 ]]'
check "names file, line and key" '[[ "$err" == *"typo.ini:8: unknown key '"'"'strid'"'"' in section [c]"* ]]'
set +e
"$ms" model --config "$tmp/missing.ini" >/dev/null 2>&1; rc=$?
set -e
check "missing config fails" '[[ $rc -ne 0 ]]'
check "--help exits 0" '"$ms" model --help >/dev/null'
# a bad number on any command's options: exit 2, naming the option, the value and the range
for args in "synth --preset tiny --out $tmp/s --seed -3|--seed '-3'|0 to 2147483647" \
            "synth --preset tiny --out $tmp/s --sites 1x|--sites '1x'|1 to 1000" \
            "eval --otsu-channel x a.h5|--otsu-channel 'x'|-1 to 1024" \
            "render --index -1 --input a.h5 --out b.png|--index '-1'|0 to" \
            "ingest --level 12 --out x|--level '12'|1 to 9" \
            "train --config $src/configs/demo-mnist.ini --threads many|--threads 'many'|0 to 4096"; do
  IFS='|' read -r cmdline opt range <<<"$args"
  set +e
  # shellcheck disable=SC2086
  err=$("$ms" $cmdline 2>&1); rc=$?
  set -e
  check "${cmdline%% *}: $opt is refused" '[[ $rc -eq 2 && "$err" == *"$opt"* && "$err" == *"$range"* ]]'
done
check "milscreen --help lists model" '"$ms" --help | grep -q "model"'
[[ $fail -eq 0 ]] && echo "all passed" || { echo "FAILED"; exit 1; }
