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

# One retry per step, loudly: vhost-device-vsock has been seen (once in
# several runs here) to stop answering hybrid-vsock CONNECTs for a whole boot
# while the guest's agent was listening. A second failure fails CI, with
# every console log printed.
run_step() {  # NAME CHECK-REGEX -- ferry vm ARGS...
    local name=$1 check=$2
    shift 3
    for try in 1 2; do
        local dir="$work/$name-$try"
        if ./target/release/ferry vm "$@" --agent "$agent" --dir "$dir" | tee "$work/$name.out" &&
            grep -q "$check" "$work/$name.out"; then
            return 0
        fi
        if [ "$try" = 1 ]; then
            echo "vm e2e: ferry vm $1 failed on the first try; its console logs, then one retry:" >&2
            for c in $(find "$dir" -name console.log 2>/dev/null); do
                echo "==== $c (last 40 lines)" >&2
                tail -n 40 "$c" >&2
            done
        fi
    done
    fail "ferry vm $1 (failed twice)"
}

log "ferry vm demo"
run_step demo '^boot-to-ready .* every version verified inside the guest$' -- demo

log "ferry vm faults"
run_step faults '^all faults handled$' -- faults

log "passed"
grep '^boot-to-ready' "$work/demo.out"
rm -rf "$work"
