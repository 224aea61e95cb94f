#!/usr/bin/env bash
# Run the tests with the kernels another x86 processor would get, on this one: a check that the
# suite does not depend on this processor's code paths (CI runs on whatever processor it has).
#
#   bash scripts/test_kernels.sh avx2   [pytest args]   # an AVX2 processor without AVX-512
#   bash scripts/test_kernels.sh scalar [pytest args]   # no vector code in torch and numpy
#
# It sets the switches the libraries read at start-up: torch's vector code
# (ATEN_CPU_CAPABILITY), oneDNN's instruction set (ONEDNN_MAX_CPU_ISA), MKL's code branch
# (MKL_CBWR=COMPATIBLE,STRICT: the branch every x86 processor runs; STRICT as the engine asks,
# threads.reproducible_blas), OpenBLAS's kernels (OPENBLAS_CORETYPE) and numpy's dispatched
# SIMD code (NPY_DISABLE_CPU_FEATURES). It emulates other libraries' code paths, not another
# processor's hardware. It runs the python on the PATH (PYTHON=... names another), so run it
# in the environment scripts/test.sh makes (. .venv/bin/activate); the whole suite takes about
# as long as CI's. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
setting=${1:-}
case "$setting" in
  -h|--help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
  avx2)
    export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell \
      NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" ;;
  scalar)
    export ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 OPENBLAS_CORETYPE=Nehalem \
      NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR" ;;
  *)
    echo "scripts/test_kernels.sh: the first argument (setting) must be avx2 or scalar;" \
         "got '${setting}'" >&2
    exit 2 ;;
esac
shift
export MKL_CBWR=COMPATIBLE,STRICT
py=${PYTHON:-python3}
"$py" - <<'EOF'
import torch
try:
    from numpy._core import _multiarray_umath as m
except ImportError:  # numpy 1.x
    from numpy.core import _multiarray_umath as m
simd = [k for k in m.__cpu_dispatch__ if m.__cpu_features__.get(k)] or ["baseline only"]
print(f"test_kernels: torch {torch.backends.cpu.get_cpu_capability()}, "
      f"numpy SIMD {' '.join(simd)}")
EOF
exec "$py" -m pytest -q -p no:cacheprovider "$@"
