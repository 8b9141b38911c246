#!/usr/bin/env bash
# Builds libsdtorch.so against the first libtorch found, in this order:
#   1. SDAPP_LIBTORCH: a libtorch root (include/ and lib/), e.g. an unpacked libtorch archive
#   2. the PyTorch of the python3 on PATH
#   3. the system's libtorch-dev (Debian: apt-get install libtorch-dev)
# Usage: build.sh OUTPUT_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUTPUT_DIR}"
mkdir -p "$out"

includes=() libdir="" abi="" origin=""
use_root() { # a libtorch root laid out like the archives and the pip wheel
  includes=("$1/include" "$1/include/torch/csrc/api/include")
  libdir="$1/lib"
}
if [[ -n "${SDAPP_LIBTORCH:-}" ]]; then
  [[ -f "$SDAPP_LIBTORCH/include/torch/csrc/api/include/torch/version.h" ]] || {
    echo "error: SDAPP_LIBTORCH=$SDAPP_LIBTORCH is not a libtorch root (no include/torch/csrc/api/include/torch/version.h)" >&2; exit 1; }
  use_root "$SDAPP_LIBTORCH"; origin="SDAPP_LIBTORCH"
elif command -v python3 >/dev/null && torch_root="$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)"; then
  use_root "$torch_root"; origin="python3 torch"
  abi="$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
elif [[ -f /usr/include/torch/csrc/api/include/torch/version.h ]]; then
  includes=(/usr/include /usr/include/torch/csrc/api/include)
  libdir="$(dirname "$(ls /usr/lib/*/libtorch.so /usr/lib/libtorch.so 2>/dev/null | head -n 1)")"
  origin="system libtorch-dev"
else
  cat >&2 <<'MSG'
error: libtorch was not found. Install it in one of these ways, then build again:
  - Debian/Ubuntu (CPU):  apt-get install libtorch-dev
  - PyTorch (CPU or CUDA): pip install torch   (the python3 on PATH must import it)
  - a libtorch archive:    export SDAPP_LIBTORCH=/path/to/libtorch
MSG
  exit 1
fi

flags=(-std=c++17 -O2 -fPIC -shared -fvisibility=hidden -Wall -Werror -Wno-unused-parameter -Wno-deprecated-declarations)
[[ -n "$abi" ]] && flags+=("-D_GLIBCXX_USE_CXX11_ABI=$abi")
libs=(-ltorch -ltorch_cpu -lc10)
if [[ -f "$libdir/libtorch_cuda.so" ]]; then
  # CUDA memory statistics and device names need the CUDA runtime headers; without them the
  # shim still drives CUDA tensors, it only reports less.
  cuda_inc=""
  for d in "${CUDA_HOME:-/usr/local/cuda}/include" \
           "$(python3 -c 'import nvidia.cuda_runtime, os; print(os.path.join(nvidia.cuda_runtime.__path__[0], "include"))' 2>/dev/null || true)"; do
    [[ -n "$d" && -f "$d/cuda_runtime_api.h" ]] && { cuda_inc="$d"; break; }
  done
  libs+=(-Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed)
  if [[ -n "$cuda_inc" ]]; then
    includes+=("$cuda_inc"); flags+=(-DSDT_WITH_CUDA)
    cudart="$(ls "$libdir"/libcudart*.so* "${CUDA_HOME:-/usr/local/cuda}"/lib64/libcudart.so 2>/dev/null | head -n 1 || true)"
    [[ -n "$cudart" ]] && libs+=("$cudart")
  fi
fi

# Data-parallel training uses c10d's Gloo process group, whose header needs gloo's own headers (Debian: libgloo-dev;
# the PyTorch wheels ship them), and on CUDA builds its NCCL one, which needs nccl.h.
gloo_dir=""
for d in "${includes[@]}" /usr/include; do [[ -f "$d/gloo/algorithm.h" ]] && { gloo_dir="$d"; break; }; done
if [[ -n "$gloo_dir" ]]; then
  flags+=(-DUSE_C10D_GLOO)
  [[ " ${includes[*]} " == *" $gloo_dir "* ]] || flags+=(-idirafter "$gloo_dir")
else
  echo "libsdtorch: gloo headers not found (Debian: apt-get install libgloo-dev); building without data-parallel training" >&2
  flags+=(-DSDT_WITHOUT_GLOO)
fi
if [[ -f "$libdir/libtorch_cuda.so" ]]; then
  for d in "${includes[@]}" /usr/include "${CUDA_HOME:-/usr/local/cuda}/include" \
           "$(python3 -c 'import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], "include"))' 2>/dev/null || true)"; do
    [[ -n "$d" && -f "$d/nccl.h" ]] && { flags+=(-DUSE_C10D_NCCL -DSDT_WITH_NCCL -idirafter "$d"); break; }
  done
fi

# Up to date when the library is newer than every source and was built against this same libtorch,
# so switching libtorch (SDAPP_LIBTORCH, a new python torch) rebuilds without any cleaning.
stamp="$origin|$libdir|$(stat -c %Y "$libdir/libtorch_cpu.so" 2>/dev/null || echo 0)"
if [[ -f "$out/libsdtorch.so" && -f "$out/libsdtorch.origin" && "$(cat "$out/libsdtorch.origin")" == "$stamp" \
      && -z "$(find "$here" -newer "$out/libsdtorch.so" -print -quit)" ]]; then
  exit 0
fi
echo "libsdtorch: building against $origin ($libdir)"
tmp="$out/libsdtorch.so.tmp.$$"
g++ "${flags[@]}" "${includes[@]/#/-I}" "$here/sdtorch.cpp" "$here/bench.cpp" "$here/optim8bit.cpp" "$here/optim_adam.cpp" "$here/distributed.cpp" -o "$tmp" \
  -L"$libdir" -Wl,-rpath,"$libdir" "${libs[@]}"
mv -f "$tmp" "$out/libsdtorch.so"
echo "$stamp" > "$out/libsdtorch.origin"
