#!/usr/bin/env bash
# The one test command (the README names it; .ci/run calls it):
#   bash tests/run.sh [extra cargo test args]
# Sets up what the tests need on this machine (Incus installed and running,
# storage pool, bridge, the cached test image), removes leftovers of killed
# runs, then runs every test: unit, integration (against the real daemon), doc.
# Integration tests fail, never skip, when the daemon is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "setting up Incus and the test image"
start=$(date +%s)
bash tests/setup-incus.sh
echo "setup took $(($(date +%s) - start)) s" >&2

step "removing leftovers of earlier runs"
incus list --format csv --columns n | { grep '^cci-test-' || true; } | while read -r name; do
    echo "deleting instance $name" >&2
    incus delete --force "$name" || true
done
incus image alias list --format csv | cut -d, -f1 |
    { grep '^cci-test-' || true; } | { grep -vx -e "${CCI_TEST_IMAGE:-cci-test-base}" -e "${CCI_TEST_DOCKER_IMAGE:-cci-test-docker}" || true; } |
    while read -r alias; do
        echo "deleting image $alias" >&2
        incus image delete "$alias" || true
    done

step "cargo test (unit, integration against Incus $(incus version | sed -n 's/^Server version: //p'), doc)"
cargo test --locked --all-targets "$@"
cargo test --locked --doc

step "parallel load, short form (tests/stress/parallel-runs.sh: 16 at once, 3 rounds)"
bash tests/stress/parallel-runs.sh 16 3
