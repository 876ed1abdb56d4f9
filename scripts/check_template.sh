#!/usr/bin/env bash
# Offline checks of template.yaml: sam validate --lint, cfn-lint, checkov.
#
# Tools are taken from $TOOLS_VENV/bin when that venv exists (default:
# .venv-tools at the repository root), otherwise from PATH. Install them with
#   python3 -m venv .venv-tools && .venv-tools/bin/pip install aws-sam-cli cfn-lint checkov
#
# Prints one result line per tool and exits non-zero when any check fails (or a
# tool is missing). No AWS credentials or network access are needed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TEMPLATE="${TEMPLATE:-template.yaml}"
TOOLS_VENV="${TOOLS_VENV:-.venv-tools}"

export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_REGION="${AWS_REGION:-$AWS_DEFAULT_REGION}"
export SAM_CLI_TELEMETRY=0

find_tool() {
    local name="$1"
    if [[ -x "$TOOLS_VENV/bin/$name" ]]; then
        printf '%s\n' "$TOOLS_VENV/bin/$name"
    elif command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
    else
        return 1
    fi
}

LOG_DIR="$(mktemp -d)"
trap 'rm -rf "$LOG_DIR"' EXIT
failures=0

# run_check LABEL TOOL ARGS...: runs TOOL, prints PASS/FAIL and, on failure, the output.
run_check() {
    local label="$1" tool="$2"
    shift 2
    local exe log="$LOG_DIR/$tool.log"
    if ! exe="$(find_tool "$tool")"; then
        echo "FAIL  $label: '$tool' not found (looked in $TOOLS_VENV/bin and PATH)"
        failures=$((failures + 1))
        return 0
    fi
    if "$exe" "$@" >"$log" 2>&1; then
        echo "PASS  $label"
    else
        echo "FAIL  $label (exit $?):"
        sed 's/^/      /' "$log"
        failures=$((failures + 1))
    fi
}

run_check "sam validate --lint" sam validate --lint --template-file "$TEMPLATE" --region "$AWS_DEFAULT_REGION"
run_check "cfn-lint (errors and warnings)" cfn-lint --non-zero-exit-code warning -- "$TEMPLATE"
# --skip-download keeps checkov offline; suppressions live in the template
# (Metadata: checkov: skip) with their reasons.
run_check "checkov" checkov --file "$TEMPLATE" --framework cloudformation --quiet --compact --skip-download
if [[ -x "$(find_tool checkov 2>/dev/null || true)" ]]; then
    summary="$(grep -Eo 'Passed checks: [0-9]+, Failed checks: [0-9]+, Skipped checks: [0-9]+' "$LOG_DIR/checkov.log" || true)"
    [[ -n "$summary" ]] && echo "      checkov: $summary"
fi

if ((failures > 0)); then
    echo "template checks: $failures failed"
    exit 1
fi
echo "template checks: all passed"
