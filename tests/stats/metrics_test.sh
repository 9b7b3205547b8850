#!/usr/bin/env bash
# Prometheus metrics as a scraper sees them: `bpftime metrics --listen` answers GET /metrics
# over loopback with text that prometheus_client's parser accepts and whose counters are the
# runs made; `--textfile` writes the same for node_exporter, replaced whole each time.
# Usage: metrics_test.sh BPFTIME TEST_BPF_DIR EXAMPLES_DIR
set -uo pipefail
bpftime=$1 bpf=$2 examples=$3
export BPFTIME_SHM=bpftime-metrics-test-$$
work=$(mktemp -d)
server=
cleanup() {
  [[ -n $server ]] && kill "$server" 2>/dev/null
  "$bpftime" reset >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
# Debian's python3 (where python3-prometheus-client installs), not another one earlier in $PATH.
py=/usr/bin/python3
[[ -x $py ]] || py=python3
if ! "$py" -c 'import prometheus_client' 2>/dev/null; then
  echo "SKIP: python3-prometheus-client is not installed (scripts/install-deps.sh installs it)"
  exit 0
fi

# check_metrics NAME FILE RUNS FAULTS BUDGET: FILE parses as the text exposition and holds
# these counts for the link of program `returns`/`loops_for_ever`, and the map gauges.
check_metrics() {
  "$py" - "$2" "$3" "$4" "$5" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
runs, faults, budget = (int(x) for x in sys.argv[2:5])
fams = {f.name: f for f in text_string_to_metric_families(text)}
def value(fam, **labels):
    hits = [s.value for s in fams[fam].samples
            if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (fam, labels, hits)
    return hits[0]
# prometheus_client names a counter family without its _total suffix.
assert fams["bpftime_link_runs"].type == "counter"
assert value("bpftime_link_runs", prog="returns", type="test", target="hook_ok") == runs, text
assert value("bpftime_link_faults", prog="returns") == 0
assert value("bpftime_link_runs", prog="loops_for_ever") == budget
assert value("bpftime_link_faults", prog="loops_for_ever") == faults
assert value("bpftime_link_budget_stops", prog="loops_for_ever") == budget
assert value("bpftime_link_run_time_ns", prog="returns") == 0
assert value("bpftime_map_max_entries", map="counts", type="hash") == 1024
assert value("bpftime_map_entries", map="counts", type="hash") == 0
assert fams["bpftime_segment_generation"].samples[0].value > 0
for needed in ("# HELP bpftime_link_runs_total ", "# TYPE bpftime_link_runs_total counter"):
    assert needed in text, needed
PY
}

expect load 0 'program' -- "$bpftime" load "$bpf/stats.bpf.o"
expect load-maps 0 'map' -- "$bpftime" load "$examples/counter.bpf.o"
id_of() { "$bpftime" list | awk -v n="$1" '$2 == "program" && $3 == n { print $1; exit }'; }
"$bpftime" attach test "$(id_of returns)" hook_ok >/dev/null
"$bpftime" attach test "$(id_of loops_for_ever)" hook_loop >/dev/null
"$bpftime" trigger hook_ok --repeat 123 >/dev/null
"$bpftime" trigger hook_loop --repeat 2 >/dev/null

# --- the HTTP endpoint ---
"$bpftime" metrics --listen 127.0.0.1:0 2>"$work/server.err" &
server=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$work/server.err")
  [[ -n $port ]] && break
  sleep 0.05
done
check "server says its port ($port)" [ -n "$port" ]
curl -sf "http://127.0.0.1:$port/metrics" -o "$work/scrape1"
check scrape-counts check_metrics scrape "$work/scrape1" 123 2 2
check content-type bash -c "curl -sI http://127.0.0.1:$port/metrics | grep -qi 'content-type: text/plain; version=0.0.4'"
"$bpftime" trigger hook_ok --repeat 77 >/dev/null
curl -sf "http://127.0.0.1:$port/metrics" -o "$work/scrape2"
check scrape-after-more-runs check_metrics scrape2 "$work/scrape2" 200 2 2
check not-found bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/nope)\" = 404 ]"
check post-refused bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:$port/metrics)\" = 405 ]"
kill -TERM "$server"
wait "$server"
status=$?
server=
check "server stops on SIGTERM with status 0 ($status)" [ "$status" -eq 0 ]
expect listen-not-loopback 1 'only loopback addresses' -- "$bpftime" metrics --listen 0.0.0.0:9435
expect listen-bad 1 'expected ADDRESS:PORT' -- "$bpftime" metrics --listen nonsense
expect needs-one 1 'one of --listen' -- "$bpftime" metrics
expect both 1 'one of --listen' -- "$bpftime" metrics --listen 127.0.0.1:0 --textfile "$work/x"

# --- the textfile ---
expect textfile 0 '' -- "$bpftime" metrics --textfile "$work/bpftime.prom"
check textfile-counts check_metrics textfile "$work/bpftime.prom" 200 2 2
check "no temporary file left" bash -c "[ \$(ls '$work' | grep -c tmp) = 0 ]"
expect textfile-bad-dir 1 'cannot write .*/nope/bpftime.prom.tmp' -- \
  "$bpftime" metrics --textfile "$work/nope/bpftime.prom"
expect interval-needs-textfile 1 '--interval SECONDS' -- "$bpftime" metrics --listen 127.0.0.1:0 --interval 1
"$bpftime" metrics --textfile "$work/again.prom" --interval 0.2 &
writer=$!
sleep 0.5
"$bpftime" trigger hook_ok --repeat 50 >/dev/null
sleep 0.6
kill -INT $writer
wait $writer
check "rewriter stops on SIGINT with status 0 ($?)" [ $? -eq 0 ]
check textfile-rewritten check_metrics rewritten "$work/again.prom" 250 2 2

finish
