#!/usr/bin/env bash
# Folders of files: mesh against rsync, side by side, in one run on the same data.
#
#   bash benches/folder_sync.sh            # 10,000 × 4 KiB, 1 × 256 MiB, 1 MiB edited in it
#   bash benches/folder_sync.sh --quick    # 1,000 × 4 KiB, 1 × 32 MiB (smoke run)
#
# Other options go to the driver (benches/folder_sync.rs): --files N, --file-kib K,
# --big-mib M, --change-kib K, --dir DIR (where the run's data, hub and copies live; default
# the system's temporary directory, or $MESH_BENCH_DIR), --keep. The method is described in
# docs/benchmarks.md ("Folders of files").
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v rsync >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "installing rsync (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y rsync || { $sudo apt-get update && $sudo apt-get install -y rsync; }
fi

echo "== machine"
echo "cpus: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
echo "rsync: $(rsync --version | head -1)"
echo "rustc: $(rustc --version)"
echo "load before: $(uptime)"

echo "== build (release)"
cargo bench --bench folder_sync --no-run

echo "== run"
cargo bench --bench folder_sync -- "$@"
echo "load after: $(uptime)"
