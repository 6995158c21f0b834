#!/usr/bin/env bash
# Builds Puente's pjsua2 wheel (pjproject + its SWIG Python binding) from a verified source tarball,
# with the flags and config_site.h in config.sh, and caches it per machine:
#
#   ${PUENTE_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/puente}/wheels/
#       pjsua2-<version>+puente.<key>-<python tag>.whl   (and its build log, .log)
#
# <key> is a hash of the pjproject version and of the files in this folder (KEY_FILES), so a changed
# flag or config value (or build recipe) builds a new wheel and an unchanged one is reused by every
# later setup and CI run on the machine, from any clone. The build happens in a temporary folder outside
# the repository, and nothing of pjproject's source is copied into it.
#
#   build.sh            print the wheel's path, building it first unless it is cached
#   build.sh --cached   print the cached wheel's path; exit 1 when there is none
#   build.sh --source   print the verified source tarball; exit 3 when there is none
#   build.sh --key      print the cache key
#   build.sh --deps     print the Debian packages a build needs
#   (build.sh --compile SRC WORK is the build itself, run as its own process by the default mode)
#
# Source: $PJPROJECT_SOURCE, else ../shared/vendor/pjproject-<version>.tar.gz (relative to the
# repository root), accepted only if its sha256 is pinned in config.sh or equals $PJPROJECT_SHA256
# (pin a tarball you verified yourself, e.g. the official download). There is no download: its
# sha256 is not pinned (see config.sh). Python: $PYTHON, else .venv/bin/python (it needs setuptools);
# the wheel is for that interpreter's version and platform.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=config.sh
. "$here/config.sh"

KEY_FILES=(config.sh build.sh wheel.py puente.i frame_tap.hpp jitter.hpp)   # everything that decides what the wheel contains
BUILD_DEPS=(build-essential pkg-config swig libopus-dev libssl-dev)

say() { echo "pjsua2: $*" >&2; }
die() { say "$*"; exit 1; }

key() {
  { echo "pjproject $PJPROJECT_VERSION"; for f in "${KEY_FILES[@]}"; do echo "== $f"; cat "$here/$f"; done; } \
    | sha256sum | cut -c1-16
}

python_bin() {  # absolute (the build changes directory), but not resolved: a venv's python is a link
  local py=${PYTHON:-$repo/.venv/bin/python}
  case "$py" in
    */*) [ -x "$py" ] || die "no Python at $py (set PYTHON)"; echo "$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;;
    *) command -v "$py" || die "no $py on PATH (set PYTHON)" ;;
  esac
}

wheel_tag() {  # e.g. cp311-cp311-linux_x86_64, for the interpreter the wheel is for
  "$(python_bin)" -c 'import sys, sysconfig
v = f"cp{sys.version_info[0]}{sys.version_info[1]}"
print(f"{v}-{v}-" + sysconfig.get_platform().replace("-", "_").replace(".", "_"))'
}

cache_dir() { echo "${PUENTE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/puente}/wheels"; }
wheel_version() { echo "$PJPROJECT_VERSION+puente.$(key)"; }
wheel_path() { echo "$(cache_dir)/pjsua2-$(wheel_version)-$(wheel_tag).whl"; }

find_source() {  # prints the tarball; exit 3: none found, 1: found but not acceptable
  local src
  if [ -n "${PJPROJECT_SOURCE:-}" ]; then
    src=$PJPROJECT_SOURCE
    [ -f "$src" ] || die "PJPROJECT_SOURCE=$src: no such file"
  elif [ -f "$repo/$PJPROJECT_VENDORED" ]; then
    src=$repo/$PJPROJECT_VENDORED
  else
    say "no pjproject source: set PJPROJECT_SOURCE to a pjproject-$PJPROJECT_VERSION tarball, or provide $PJPROJECT_VENDORED"
    return 3
  fi
  local sha accepted
  sha=$(sha256sum "$src" | cut -d' ' -f1)
  for accepted in "${PJPROJECT_SHA256S[@]}" ${PJPROJECT_SHA256:-}; do
    if [ "$sha" = "$accepted" ]; then
      echo "$src"
      return 0
    fi
  done
  die "$src has sha256 $sha, which is not pinned (config.sh: ${PJPROJECT_SHA256S[*]}); refusing to build from it"
}

build() {
  local src=$1 out=$2 py work log started
  py=$(python_bin)
  "$py" -c 'import setuptools' 2>/dev/null || die "$py has no setuptools (needed to compile the extension)"
  for tool in gcc g++ make swig pkg-config strip; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian packages: ${BUILD_DEPS[*]})"
  done
  mkdir -p "$(dirname "$out")"
  log="${out%.whl}.log"
  work=$(mktemp -d "${TMPDIR:-/tmp}/puente-pjsua2.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  started=$(date +%s)
  say "building pjproject $PJPROJECT_VERSION + pjsua2 for $(wheel_tag) (once per machine and config: about 2.5 min on 2 cores; log: $log)"
  # A separate process, so that `set -e` stops at the first failing step (it is off inside `if`).
  if ! PYTHON="$py" "$here/build.sh" --compile "$src" "$work" >"$log" 2>&1; then
    tail -40 "$log" >&2
    die "build failed after $(($(date +%s) - started)) s (full log: $log)"
  fi
  "$py" "$here/wheel.py" --stage "$work/stage" --out "$out" --version "$(wheel_version)" \
    --build-info "$(build_info "$src" "$(($(date +%s) - started))")" >>"$log"
  say "built $out ($(du -h "$out" | cut -f1)) in $(($(date +%s) - started)) s"
}

compile() {  # unpack, configure, build and check; the module ends up in $work/stage
  local src=$1 work=$2 py want_calls
  py=$(python_bin)
  tar -xzf "$src" -C "$work"
  cd "$work/$PJPROJECT_TOPDIR"
  printf '%s\n' "$CONFIG_SITE_H" > pjlib/include/pj/config_site.h
  ./configure CFLAGS="$PJ_CFLAGS" CXXFLAGS="$PJ_CFLAGS" "${CONFIGURE_FLAGS[@]}"
  # configure detects opus and OpenSSL itself; a build without them would be a silent downgrade.
  grep -Eq '^#define PJMEDIA_HAS_OPUS_CODEC +1' pjmedia/include/pjmedia-codec/config_auto.h \
    || { echo "configure did not find opus (Debian libopus-dev)"; exit 1; }
  grep -Eq '^#define PJ_HAS_SSL_SOCK +1' pjlib/include/pj/compat/os_auto.h \
    || { echo "configure did not find OpenSSL (Debian libssl-dev)"; exit 1; }
  grep -q ioqueue_epoll pjlib/build/os-auto.mak || { echo "configure did not select the epoll ioqueue"; exit 1; }
  make dep
  make -j"$MAKE_JOBS" lib        # the libraries only: pjproject's sample apps and tests are not needed
  # Puente's additions (puente.i: the FrameTap, the jitter-buffer policy) go into the same module:
  # SWIG finds the files in the folder it runs in, and the wrapper's C++ includes them from there.
  cp "$here/puente.i" "$here/frame_tap.hpp" "$here/jitter.hpp" pjsip-apps/src/swig/python/
  printf '\n%%include "puente.i"\n' >> pjsip-apps/src/swig/pjsua2.i
  make -C pjsip-apps/src/swig/python pjsua2_wrap.cpp
  cd pjsip-apps/src/swig/python
  "$py" setup.py build --build-base "$work/pybuild" --build-lib "$work/stage"
  strip --strip-unneeded "$work"/stage/_pjsua2*.so
  # The wheel must be what config.sh asks for, read back from the compiled module itself.
  want_calls=$(sed -n 's/^#define PJSUA_MAX_CALLS *\([0-9]*\).*/\1/p' <<<"$CONFIG_SITE_H")
  PYTHONPATH="$work/stage" "$py" -P "$repo/sip/capabilities.py" --expect-calls "$want_calls" --expect-full
}

build_info() {  # JSON for the wheel's .dist-info/puente-build.json: what it was built from and how
  "$(python_bin)" -c 'import json, sys; a = sys.argv[1:]; print(json.dumps(dict(zip(a[::2], a[1::2]))))' \
    pjproject "$PJPROJECT_VERSION" key "$(key)" source "$(basename "$1")" \
    source_sha256 "$(sha256sum "$1" | cut -d' ' -f1)" configure "${CONFIGURE_FLAGS[*]}" cflags "$PJ_CFLAGS" \
    config_site_h "$CONFIG_SITE_H" build_seconds "$2" built_on "$(uname -srm)"
}

case "${1:-}" in
  --compile) compile "$2" "$3" ;;
  --key) key ;;
  --deps) echo "${BUILD_DEPS[*]}" ;;
  --source) find_source ;;
  --cached)
    out=$(wheel_path)
    [ -f "$out" ] && echo "$out" || exit 1
    ;;
  "")
    out=$(wheel_path)
    mkdir -p "$(dirname "$out")"
    exec 9>"$(dirname "$out")/.pjsua2-build.lock"
    flock 9   # one build per machine at a time; a second setup waits and then reuses it
    if [ ! -f "$out" ]; then
      status=0
      src=$(find_source) || status=$?
      [ "$status" -eq 0 ] || exit "$status"
      build "$src" "$out"
    fi
    echo "$out"
    ;;
  *) die "unknown option $1 (see the top of $0)" ;;
esac
