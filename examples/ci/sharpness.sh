#!/usr/bin/env bash
# Sharpness regression gates for CI, in plain shell. Exit 0: all gates pass; 1: the candidate is
# too sharp (or sharper than the baseline by more than allowed); 2: bad input.
#
#   examples/ci/sharpness.sh CANDIDATE.pt BASELINE.pt
#
# Defaults: the SSAM sample checked, against the SGD sample as the baseline.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
samples="$here/../../sample_checkpoints"
candidate=${1:-$samples/mlp_digits_ssam.pt}
baseline=${2:-$samples/mlp_digits.pt}
reports=${REPORTS:-.}
mkdir -p "$reports"

# Absolute limits from the config file; JUnit XML for the CI system's test view (replaced on each run).
landscape check "$candidate" --config "$here/landscape.toml" --junit "$reports/sharpness-junit.xml" --overwrite

# Relative to the baseline: same data, seed and directions; fail when 10% sharper on either measure.
landscape compare "$baseline" "$candidate" --what top,surface --max-increase 10% --junit "$reports/compare-junit.xml" --overwrite
