#!/usr/bin/env bash
# Regenerates build/symbol-order.txt: the functions of the release binary that run from
# start to ready, over a few echo turns, a chat.history, a GET /health and a few seconds
# at rest, by their linker (mangled) names. build.rs hands the list to the linker, which
# places them together (see docs/architecture.md, "Why RSS at rest").
#
# Symbol names carry hashes of the crates' build settings, and `cargo bench` builds the
# binary with other dependency features than `cargo build --release` (those of the
# dev-dependencies join in), so the list is made from both builds, merged. Needs valgrind,
# python3 and nm. Run it again when dependencies change: the turn_load bench's "RSS at
# rest" shows when the list no longer matches.
#   cargo build --release && cargo bench --no-run --bench turn_load
#   build/symbol-order.sh target/release/troupe target/release/deps/troupe-<hash of the bench build>
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- target/release/troupe
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
unset TROUPE_GATEWAY_PORT TROUPE_GATEWAY_TOKEN
: > "$WORK/all.txt"
# Each binary runs twice: with the embedded defaults (start-up writes its info lines, as
# it does for users), then with the settings the benches start it with.
BENCH_ENV="TROUPE__DEBUG__FAULT_INJECTION=true TROUPE__SUPERVISOR__AGENTS__MAX_RESTARTS=100000
  TROUPE__LOGGING__LEVEL=warn TROUPE__GATEWAY__MAX_CONNECTIONS=20000
  TROUPE__GATEWAY__MAX_CONNECTIONS_PER_IP=20000 TROUPE__SESSIONS__LANE_CAPACITY=1000
  TROUPE__SESSIONS__MAX_CONCURRENT_RUNS=512"
for BIN in "$@"; do
  for SETTINGS in "" "$BENCH_ENV"; do
    export TROUPE_HOME=$WORK/home
    rm -rf "$TROUPE_HOME" && mkdir -p "$TROUPE_HOME"
    # shellcheck disable=SC2086 # SETTINGS is a list of NAME=value words
    env $SETTINGS valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/cg.out" \
      "$BIN" gateway run --port 0 > "$WORK/gateway.log" 2>&1 &
    GW=$!
    python3 build/drive_turns.py "$TROUPE_HOME" 30
    sleep 3
    kill -TERM $GW
    wait $GW || true
    # Executed functions that are defined in the binary (not in libc), by name.
    grep -oP '^c?fn=\(\d+\) \K.*' "$WORK/cg.out" | sort -u > "$WORK/ran.txt"
    nm --defined-only "$BIN" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u > "$WORK/defined.txt"
    comm -12 "$WORK/ran.txt" "$WORK/defined.txt" > "$WORK/one.txt"
    echo "$BIN${SETTINGS:+ (bench settings)}: $(wc -l < "$WORK/one.txt") functions"
    cat "$WORK/one.txt" >> "$WORK/all.txt"
  done
done
sort -u "$WORK/all.txt" > build/symbol-order.txt
echo "build/symbol-order.txt: $(wc -l < build/symbol-order.txt) functions"
# What the names depend on, checked by build.rs (the same FNV-1a hash of Cargo.lock).
python3 - > build/symbol-order.stamp <<'PY'
h = 0xcbf29ce484222325
for b in open("Cargo.lock", "rb").read():
    h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
print(f"Cargo.lock fnv1a64 {h:016x}")
PY
rustc --version >> build/symbol-order.stamp
