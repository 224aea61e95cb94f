#!/usr/bin/env bash
# The checks of issue 11 that need a CUDA device, in order, each well under 10 minutes.
# Run from the repository root on a machine with one GPU and the data in ../shared/data:
#
#   bash benchmarks/gpu_checks.sh            # all three steps
#   bash benchmarks/gpu_checks.sh tests      # step 1 only (also: throughput, e2e)
#
# 1. tests: bit-identity across chunking on CUDA and predict == engine, per precision
#    (tests/test_engine.py::test_cuda_*, tests/test_training.py::test_cuda_runs);
# 2. throughput: bench_gpu.py without the end-to-end runs (matmul rate, images/s, fraction);
# 3. e2e: MNIST 1/7 T=1000, MNIST ns=30 T=1000, CIFAR-10 ResNet-18 T=500 (train + certify).
# Figures go to gpu_throughput.json and gpu_e2e.json.
set -euo pipefail
step="${1:-all}"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
if [[ "$step" == all || "$step" == tests ]]; then
  python -m pytest -q tests/test_engine.py tests/test_training.py -k cuda
fi
if [[ "$step" == all || "$step" == throughput ]]; then
  python benchmarks/bench_gpu.py --e2e none --json gpu_throughput.json
fi
if [[ "$step" == all || "$step" == e2e ]]; then
  python benchmarks/bench_gpu.py --no-throughput --e2e mnist17,mnist_ns30,cifar10 --json gpu_e2e.json
fi
