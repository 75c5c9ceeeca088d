#!/usr/bin/env bash
# The test command (README, .ci/run): `cargo test --locked` with a real one-node Slurm cluster
# for the cluster tests. Installs the Debian packages when they are missing and this is root
# with apt-get; brings the cluster up (scripts/slurm-up.sh), exports SLURM_CONF, and tears it
# down on exit. Without Slurm the cluster tests skip and say why (with CI=true they fail).
set -euo pipefail
cd "$(dirname "$0")/.."

have_slurm() {
  local b
  for b in munged slurmctld slurmd sbatch squeue scancel; do
    command -v "$b" >/dev/null || return 1
  done
}

if ! have_slurm && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "installing slurmctld slurmd slurm-client munge (for the cluster tests)"
  made_policy=0
  # Keep the packages' init scripts from starting system daemons: ours run from a temp dir.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
fi

# The CUDA kernels are tested on the host through the C++ compiler (C++20, GCC 11 or later).
if ! command -v "${CXX:-c++}" >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "installing g++ (the host-emulated CUDA kernel tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi

# The results page is checked in a real browser (tests/cli/report_page.rs): a headless Chromium.
if ! command -v chromium-headless-shell >/dev/null && ! command -v chromium >/dev/null \
  && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "installing chromium-headless-shell (the browser test of report.html)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium-headless-shell >/dev/null || echo "no chromium-headless-shell: the browser test will skip"
fi

# The remote-store tests (tests/cli/remote.rs) start moto's S3 server on 127.0.0.1: a pinned
# moto[server] from PyPI. Without it those tests fail (SEQPIPE_TEST_NO_S3=1 skips them).
MOTO_VERSION=5.2.5
if ! python3 -c "import moto, boto3, flask; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null; then
  echo "installing moto[server]==$MOTO_VERSION (the S3 server of the remote-store tests)"
  python3 -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
    || echo "moto could not be installed: the S3 remote tests will fail"
fi

if have_slurm && [[ $(id -u) == 0 ]]; then
  # 8 CPUs advertised on a small machine, so that a sweep's jobs run side by side.
  export SLURM_CI_CPUS=${SLURM_CI_CPUS:-8}
  env_line=$(scripts/slurm-up.sh)
  eval "$env_line"
  trap 'scripts/slurm-down.sh' EXIT
  echo "Slurm cluster up: SLURM_CONF=$SLURM_CONF"
else
  echo "no Slurm here: the cluster tests will skip (CI=true makes them fail)"
fi

cargo test --locked
# Lints, as errors (the [lints] table in Cargo.toml says which are allowed and why).
cargo clippy --locked --all-targets -- -D warnings
