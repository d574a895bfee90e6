#!/usr/bin/env bash
# ferry's end-to-end test across a real VM boundary (issue 4).
#
# Installs what it needs (idempotently): QEMU (apt-get), vhost-device-vsock
# (cargo install --locked); the kernel is fetched by `ferry vm` itself with
# apt-get download. Then builds ferry and the static ferry-agent, and runs
#   ferry vm demo     boot, cold sync, >= 20 updates proven inside the guest
#                     (Verify), p50/p99 latency, PowerOff
#   ferry vm faults   a guest that never boots, a bad kernel command line,
#                     a refused handshake, the agent killed in the guest
# Each prints the guest's console log when it fails; this script then also
# dumps every console log it kept. Runs as root (apt-get), from any cwd.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TERM_COLOR=never
log() { printf '\n---- vm e2e: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

log "host tools"
if ! command -v qemu-system-x86_64 >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Replaces the preinstalled qemu-utils 10.x; ferry does not need qemu-img.
    apt-get install -y -q --no-install-recommends qemu-system-x86
fi
qemu-system-x86_64 --version | head -1
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v vhost-device-vsock >/dev/null; then
    cargo install --locked vhost-device-vsock
fi
command -v vhost-device-vsock
if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
    apt-get update -q
fi

log "build"
cargo build --release --locked --bin ferry
RUSTFLAGS='-C target-feature=+crt-static -C strip=debuginfo' \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin ferry-agent
agent=target/x86_64-unknown-linux-gnu/release/ferry-agent

work=$(mktemp -d /tmp/ferry-vm-e2e.XXXXXX)
fail() {
    echo "vm e2e FAILED: $1" >&2
    for c in $(find "$work" -name console.log 2>/dev/null); do
        echo "==== $c (last 80 lines)" >&2
        tail -n 80 "$c" >&2
    done
    exit 1
}

log "ferry vm demo"
./target/release/ferry vm demo --agent "$agent" --dir "$work/demo" | tee "$work/demo.out" ||
    fail "ferry vm demo"
grep -q '^boot-to-ready .* every version verified inside the guest$' "$work/demo.out" ||
    fail "ferry vm demo printed no summary"

log "ferry vm faults"
./target/release/ferry vm faults --agent "$agent" --dir "$work/faults" | tee "$work/faults.out" ||
    fail "ferry vm faults"
grep -q '^all faults handled$' "$work/faults.out" || fail "ferry vm faults did not finish"

log "passed"
grep '^boot-to-ready' "$work/demo.out"
rm -rf "$work"
