#!/usr/bin/env bash
# Boots capvisor's default image (images/hello.toml) in QEMU on -cpu max, installing what is
# missing first. Arguments go to `capvisor run` (e.g. ./run.sh --cpu cortex-a57 --smp 2).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec cargo run --quiet --locked -p capvisor -- run "$@"
