#!/usr/bin/env bash
# Captures the recording `skymap demo` replays (tests/fixtures/demo.jsonl)
# from the lab: lab/scenarios/demo.yaml for 60 s with the frontend's DNS
# dropped, then allow-dns.yaml, then 90 s more. Needs root; takes ~3 min.
#
#   sudo lab/capture-demo.sh            (from the repository's root)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
before=60 after=90 name=demo
cargo build --release --bins
skymap=target/release/skymap
raw=$(mktemp /tmp/skymap-demo.XXXXXX.jsonl)
record=
cleanup() {
    [ -n "$record" ] && kill "$record" 2>/dev/null || true
    "$skymap" lab down "$name" >/dev/null 2>&1 || true
    rm -f "$raw"
}
trap cleanup EXIT
"$skymap" lab up lab/scenarios/demo.yaml --name "$name"
url=$("$skymap" lab status "$name" --url)
# Everything the relay has had since the lab came up, then what follows.
"$skymap" record --relay "$url" --since 1h --follow "$raw" &
record=$!
echo "recording for ${before}s with the DNS drops..."
sleep "$before"
"$skymap" lab apply lab/scenarios/allow-dns.yaml --name "$name"
echo "recording for ${after}s after the fix..."
sleep "$after"
kill -INT "$record"
wait "$record" || true
record=
# Time order (the relay has named the policy behind each policy drop).
cargo run --release -q -p skymap-tests --bin tidy-recording \
    < "$raw" > tests/fixtures/demo.jsonl
echo "wrote tests/fixtures/demo.jsonl ($(wc -l < tests/fixtures/demo.jsonl) flows)"
