#!/usr/bin/env bash
# Helper sets per attach type and `bpftime link update`, as a user runs them.
# Usage: cli_host_test.sh BPFTIME TEST_BPF_DIR STORE_WRITER
set -uo pipefail
bpftime=$1 test_bpf=$2 writer=$3
export BPFTIME_SHM=bpftime-cli-host-test-$$
trap '"$bpftime" reset >/dev/null 2>&1' EXIT
. "$(dirname "$0")/../lib.sh"
if [[ ! -f $test_bpf/containment.bpf.o ]]; then
  echo "SKIP: $test_bpf/containment.bpf.o is missing (built with the nginx tests)"
  exit 0
fi
# A request whose path_len (at byte 40) is 1.
request=$(printf '00 %.0s' {1..40})"01 "$(printf '00 %.0s' {1..23})
id_of() { "$bpftime" list | awk -v k="$1" -v n="$2" '$2 == k && $3 == n { print $1; exit }'; }

expect load 0 'program [0-9]+ read_user' -- "$bpftime" load "$test_bpf/containment.bpf.o"
reader=$(id_of program read_user)
p418=$(id_of program answer_418)
p429=$(id_of program answer_429)

# A request filter may not read the worker's memory; nothing is left behind.
expect attach-read-user 1 "^bpftime: program $reader calls probe_read_user \(112\), which nginx-url programs may not use$" -- \
  "$bpftime" attach nginx-url "$reader"
check "the refused attach left no target or link" \
  test -z "$("$bpftime" list | awk '$2 == "target" || $2 == "link"')"
# Tracing programs keep it: the same program at a test hook runs.
expect attach-test 0 '^link [0-9]+' -- "$bpftime" attach test "$reader" hook
expect trigger 0 '^r0 = 0x0$' -- "$bpftime" trigger hook --mem "$(printf '00 %.0s' {1..64})"

# link update: the link keeps its id; the new program answers.
expect attach-418 0 '^link [0-9]+' -- "$bpftime" attach test "$p418" answer
link=$("$bpftime" list | awk -v p="$p418" '$2 == "link" && $5 == p { print $1; exit }')
expect trigger-418 0 '^r0 = 0x1a2$' -- "$bpftime" trigger answer --mem "$request"
expect update 0 '' -- "$bpftime" link update "$link" "$p429"
expect list-updated 0 "^$link +link +link +program $p429 -> target" -- "$bpftime" list
expect trigger-429 0 '^r0 = 0x1ad$' -- "$bpftime" trigger answer --mem "$request"
expect update-missing 1 'no object with id 999' -- "$bpftime" link update "$link" 999
expect update-not-link 1 "object $p429 is a program, not a link" -- "$bpftime" link update "$p429" "$p429"
expect destroy-old 0 '' -- "$bpftime" destroy "$p418"

# A link to the URL filter joined with a program calling probe_read_user, by update.
expect attach-url 0 '^link [0-9]+' -- "$bpftime" attach nginx-url "$p429"
url_link=$("$bpftime" list | awk -v p="$p429" '$2 == "link" && $5 == p { l = $1 } END { print l }')
expect update-read-user 1 "calls probe_read_user \(112\), which nginx-url programs may not use" -- \
  "$bpftime" link update "$url_link" "$reader"

# What a controller skipping the checks wrote: a host reports it.
expect writer 0 '^link [0-9]+ program [0-9]+$' -- "$writer" "$BPFTIME_SHM" uncompilable-link
finish
