#!/usr/bin/env bash
# Runs `sam build` and checks the built ViralityLayer:
#   * it contains the virality package (with its baseline/*.json package data,
#     ml-weights.json at least), no boto3/botocore (the runtime's), and a .pyc
#     next to every .py (precompiled for CPython 3.12);
#   * `import virality, numpy, pydantic, aws_lambda_powertools` works from it
#     with python3.12 (boto3 installed beside it to stand in for the runtime's),
#     Powertools' Tracer can be built, and every imported module is loaded from
#     the layer's own bytecode.
#
# The layer is built for the functions' architecture (arm64). When this host
# has another architecture, the arm64 wheels cannot be imported here, so the
# import check runs on a second build of the same Makefile for the host's
# architecture (LAYER_ARCH), in a temporary directory.
#
# python3.12 is looked up as `python3.12` on PATH, then as the newest 3.12.x
# installed with pyenv (selected through PYENV_VERSION). Without one, the
# check is skipped (exit 0) with a message. `sam` comes from $TOOLS_VENV/bin
# (default .venv-tools) or PATH. Extra arguments are passed to `sam build`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS_VENV="${TOOLS_VENV:-.venv-tools}"
BUILD_DIR="${BUILD_DIR:-.aws-sam/build}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export SAM_CLI_TELEMETRY=0

is_py312() { "$@" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' >/dev/null 2>&1; }

# --- find python3.12 -------------------------------------------------------
PY=""
if command -v python3.12 >/dev/null 2>&1 && is_py312 python3.12; then
    PY=python3.12
elif command -v pyenv >/dev/null 2>&1; then
    newest="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$' | sort -t. -k3,3n | tail -n 1 || true)"
    if [[ -n "$newest" ]]; then
        export PYENV_VERSION="$newest"
        if is_py312 python3.12; then
            PY=python3.12
            echo "using python3.12 from pyenv (PYENV_VERSION=$PYENV_VERSION)"
        fi
    fi
fi
if [[ -z "$PY" ]]; then
    echo "SKIP  layer build check: no python3.12 (not on PATH, no pyenv 3.12.x); install one, e.g. 'pyenv install 3.12'"
    exit 0
fi

if [[ -x "$TOOLS_VENV/bin/sam" ]]; then
    SAM="$TOOLS_VENV/bin/sam"
elif command -v sam >/dev/null 2>&1; then
    SAM="$(command -v sam)"
else
    echo "FAIL  layer build check: 'sam' not found (looked in $TOOLS_VENV/bin and PATH)"
    exit 1
fi

# --- sam build ---------------------------------------------------------------
# The Makefile exports PYTHONPATH=layers/virality for the tests; sam's pip would then see the
# editable install's metadata and report its (unrelated) dependencies as missing. The build needs none of it.
unset PYTHONPATH
if ! "$SAM" build --build-dir "$BUILD_DIR" "$@"; then
    echo "FAIL  sam build"
    exit 1
fi
echo "PASS  sam build"

LAYER="$BUILD_DIR/ViralityLayer/python"
fail() { echo "FAIL  $*"; exit 1; }

[[ -f "$LAYER/virality/__init__.py" ]] || fail "built layer has no $LAYER/virality/__init__.py"
[[ -f "$LAYER/virality/baseline/ml-weights.json" ]] || fail "built layer lacks the baseline weights virality/baseline/ml-weights.json"
for pkg in boto3 botocore; do
    [[ ! -e "$LAYER/$pkg" ]] || fail "built layer contains $pkg (the runtime provides it)"
done
for src in layers/virality/virality/baseline/*.json; do
    [[ -e "$src" ]] || continue
    [[ -f "$LAYER/virality/baseline/$(basename "$src")" ]] || fail "built layer lacks package data virality/baseline/$(basename "$src")"
done

# The layer's own code is exactly the runtime library: every module of layers/virality/virality (each one
# reachable from a handler, tests/unit/test_architecture.py) and nothing else - no dev or Spark package.
"$PY" - "$LAYER" layers/virality/virality <<'EOF' || fail "file list of the built layer"
import pathlib, sys
layer, source = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
built = {p.relative_to(layer / "virality").as_posix() for p in (layer / "virality").rglob("*")
         if p.is_file() and "__pycache__" not in p.parts}
wanted = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
strays = sorted(n for n in ("virality_dev", "virality_spark", "functions", "tests") if (layer / n).exists())
extra, missing = sorted(built - wanted), sorted(wanted - built)
print(f"      virality in the layer: {len(built)} files ({sum(n.endswith('.py') for n in built)} modules)")
if extra or missing or strays:
    sys.exit(f"extra {extra[:10]}, missing {missing[:10]}, dev packages {strays}")
EOF
echo "PASS  built layer holds the runtime library only (no dev, Spark or test code)"

# Every .py must have its cpython-312 .pyc; nothing may be left uncompiled.
"$PY" - "$LAYER" <<'EOF' || fail "bytecode check of $LAYER"
import importlib.util, pathlib, sys
root = pathlib.Path(sys.argv[1])
sources = [p for p in root.rglob("*.py")]
missing = [p for p in sources if not pathlib.Path(importlib.util.cache_from_source(str(p))).is_file()]
pycs = list(root.rglob("__pycache__/*.cpython-312.pyc"))
size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
print(f"      layer: {size / 2**20:.1f} MiB, {len(sources)} .py, {len(pycs)} .pyc (cpython-312), {len(missing)} without .pyc")
for p in missing[:10]:
    print(f"      no .pyc: {p}")
sys.exit(1 if missing or not pycs else 0)
EOF
echo "PASS  built layer has .pyc for every module"

# --- import check --------------------------------------------------------------
host_arch="$(uname -m)"
[[ "$host_arch" == arm64 ]] && host_arch=aarch64
layer_arch="$(sed -n 's/^LAYER_ARCH ?= *//p' layers/virality/Makefile)"
IMPORT_DIR="$LAYER"
TMP_BUILD="$(mktemp -d)"
trap 'rm -rf "$TMP_BUILD"' EXIT
if [[ "$host_arch" != "$layer_arch" ]]; then
    echo "      host is $host_arch, layer is $layer_arch: building a $host_arch copy for the import check"
    make --no-print-directory -s -f layers/virality/Makefile build-ViralityLayer \
        ARTIFACTS_DIR="$TMP_BUILD/layer" LAYER_ARCH="$host_arch" PYTHON="$PY" >/dev/null \
        || fail "make build-ViralityLayer LAYER_ARCH=$host_arch"
    IMPORT_DIR="$TMP_BUILD/layer/python"
fi
# The Lambda runtime provides boto3/botocore (the layer deliberately does not,
# and the X-Ray SDK needs botocore): emulate it behind the layer on sys.path.
"$PY" -m pip install --disable-pip-version-check --root-user-action=ignore --quiet \
    --target "$TMP_BUILD/runtime" boto3 >/dev/null || fail "pip install boto3 (runtime emulation)"

PYTHONPATH="$IMPORT_DIR:$TMP_BUILD/runtime" PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1 \
    AWS_LAMBDA_FUNCTION_NAME=layer-check "$PY" -s - "$IMPORT_DIR" <<'EOF' || fail "import from the built layer"
import os, sys
layer = os.path.realpath(sys.argv[1])
import virality, numpy, pydantic, aws_lambda_powertools  # noqa: F401,E401
from aws_lambda_powertools import Tracer
Tracer()  # what virality.observability does in Lambda with active tracing: needs aws_xray_sdk
for name in ("virality", "numpy", "pydantic", "aws_lambda_powertools", "aws_xray_sdk"):
    where = os.path.realpath(sys.modules[name].__file__)
    if not where.startswith(layer + os.sep):
        sys.exit(f"{name} was imported from {where}, not from the layer")
no_pyc = [
    m.__name__ for m in list(sys.modules.values())
    if getattr(m, "__file__", None) and m.__file__.endswith(".py")
    and os.path.realpath(m.__file__).startswith(layer + os.sep)
    and not (m.__cached__ and os.path.isfile(m.__cached__))
]
if no_pyc:
    sys.exit(f"modules loaded without bytecode: {no_pyc[:10]}")
print(f"      numpy {numpy.__version__}, pydantic {pydantic.VERSION}, powertools {aws_lambda_powertools.__version__ if hasattr(aws_lambda_powertools, '__version__') else '?'}")
EOF
echo "PASS  python3.12 imports virality, numpy, pydantic, aws_lambda_powertools (+ Tracer/aws_xray_sdk) from the layer"
