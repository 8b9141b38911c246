#!/usr/bin/env bash
# Makes a Debian 12 box ready to build and test SdAppliance, installing only what is missing, so it is
# quick to run again: g++ and a libtorch for the libsdtorch shim (Debian's CPU libtorch-dev, unless
# SDAPP_LIBTORCH or the python3 on PATH already provides one, which the shim's build.sh prefers).
# The .NET 10 SDK is expected to be installed; if it is not, this says how and stops.
set -euo pipefail

installed() { [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" == ii* ]]; }

missing=()
installed g++ || missing+=(g++)
# Debian's libtorch multiplies matrices through the system BLAS, which is the slow reference one until
# OpenBLAS is installed (measured by tools/bench-engine: 2048x2048 matmul 6 -> 104 GFLOP/s on one core).
# The OpenMP flavour shares libtorch's libgomp thread pool instead of oversubscribing the cores.
installed libopenblas0-openmp || missing+=(libopenblas0-openmp)
# Image codecs for SdAppliance.Imaging (loaded at run time as libturbojpeg.so.0, libpng16.so.16, libwebp.so.7).
for pkg in libturbojpeg0-dev libpng-dev libwebp-dev; do installed "$pkg" || missing+=("$pkg"); done
# The browser the UI's end-to-end tests drive through Playwright (they never download one).
installed chromium || missing+=(chromium)
# The ONNX checker (full check and shape inference) that the ONNX export tests run on every exported file.
installed python3-onnx || missing+=(python3-onnx)
# gloo's headers, which c10d's Gloo process group (data-parallel training) is compiled against in the shim.
installed libgloo-dev || missing+=(libgloo-dev)
if ! installed libtorch-dev; then
  if [[ -n "${SDAPP_LIBTORCH:-}" ]]; then
    echo "bootstrap: using libtorch from SDAPP_LIBTORCH=$SDAPP_LIBTORCH"
  elif command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null; then
    echo "bootstrap: using the libtorch of python3's torch"
  else
    missing+=(libtorch-dev)
  fi
fi

if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "bootstrap: missing ${missing[*]}; run this as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

sdks="$(command -v dotnet >/dev/null && dotnet --list-sdks 2>/dev/null || true)"
if ! grep -q '^10\.' <<<"$sdks"; then
  cat >&2 <<'MSG'
bootstrap: the .NET 10 SDK is not installed (no 'dotnet' with a 10.x SDK on PATH). Install it, then run again:
  - Microsoft's package repository for Debian 12, then: apt-get install dotnet-sdk-10.0
  - or Microsoft's dotnet-install.sh script with --channel 10.0 (then put ~/.dotnet on PATH)
MSG
  exit 1
fi
