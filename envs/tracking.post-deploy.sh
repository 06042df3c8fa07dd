#!/usr/bin/env bash
# Snakemake runs this once after creating the env: install the clipmerge package (its CLI) into it.
set -euo pipefail
pip install --no-deps -e "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
