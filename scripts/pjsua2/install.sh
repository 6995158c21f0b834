#!/usr/bin/env bash
# Installs pjsua2 into .venv; run by scripts/setup.sh after the Python packages.
#
# Puente's own build (scripts/pjsua2: 512 calls per process, epoll, opus, TLS, SRTP) in
# place of the PyPI wheel `pjsua2-python`, which caps a process at 4 calls. Built once per machine
# (about 2.5 minutes on 2 cores) from the pjproject tarball in $PJPROJECT_SOURCE or
# ../shared/vendor, then reused from ~/.cache/puente/wheels. PUENTE_PJSUA2=auto (default: build
# when the source is there, else keep the PyPI wheel with a warning), build (no fallback) or pypi.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../apt_install.sh
. scripts/apt_install.sh

pjsua2_mode=${PUENTE_PJSUA2:-auto}
case "$pjsua2_mode" in
  auto|build|pypi) ;;
  *) echo "setup: PUENTE_PJSUA2 must be auto, build or pypi (got $pjsua2_mode)" >&2; exit 1 ;;
esac
pjsua2_wheel=""
if [ "$pjsua2_mode" != pypi ] && ! pjsua2_wheel=$(PYTHON=.venv/bin/python scripts/pjsua2/build.sh --cached); then
  pjsua2_wheel=""
  source_status=0
  source_error=$(PYTHON=.venv/bin/python scripts/pjsua2/build.sh --source 2>&1 >/dev/null) || source_status=$?
  if [ "$source_status" -eq 0 ]; then
    read -ra build_deps <<<"$(scripts/pjsua2/build.sh --deps)"
    py_include=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    [ -f "$py_include/Python.h" ] || build_deps+=("python$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')-dev")
    apt_install "${build_deps[@]}"
    pjsua2_wheel=$(PYTHON=.venv/bin/python scripts/pjsua2/build.sh) \
      || { echo "setup: the pjsua2 build failed; PUENTE_PJSUA2=pypi keeps the capped PyPI wheel" >&2; exit 1; }
  elif [ "$source_status" -ne 3 ] || [ "$pjsua2_mode" = build ]; then
    echo "$source_error" >&2
    exit 1
  fi
fi
pjsua2_installed=$(.venv/bin/python - <<'PY'
import importlib.metadata as m
for name in ("pjsua2", "pjsua2-python"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        pass
PY
)
if [ -n "$pjsua2_wheel" ]; then
  pjsua2_want="pjsua2 $(basename "$pjsua2_wheel" | cut -d- -f2)"
  if [ "$pjsua2_installed" != "$pjsua2_want" ]; then
    echo "setup: installing $(basename "$pjsua2_wheel") in place of the PyPI pjsua2-python"
    .venv/bin/python -m pip uninstall -y pjsua2-python pjsua2 >>.venv/pip-install.log 2>&1 || true
    .venv/bin/python -m pip install --no-deps --no-index "$pjsua2_wheel" >>.venv/pip-install.log 2>&1 \
      || { tail -20 .venv/pip-install.log >&2; echo "setup: installing $pjsua2_wheel failed" >&2; exit 1; }
    .venv/bin/python -m sip --expect-full | sed 's/^/setup: /'
  fi
else
  if ! grep -q '^pjsua2-python ' <<<"$pjsua2_installed" || grep -q '^pjsua2 ' <<<"$pjsua2_installed"; then
    # The capped wheel's requirement, wherever pyproject.toml lists it (dependencies or an extra).
    pjsua2_pypi=$(.venv/bin/python -c 'import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = p.get("dependencies", []) + [r for extra in p.get("optional-dependencies", {}).values() for r in extra]
print(next(r for r in reqs if r.lower().replace("_", "-").startswith("pjsua2-python")))')
    .venv/bin/python -m pip uninstall -y pjsua2 >>.venv/pip-install.log 2>&1 || true
    .venv/bin/python -m pip install "$pjsua2_pypi" >>.venv/pip-install.log 2>&1 \
      || { tail -20 .venv/pip-install.log >&2; echo "setup: installing $pjsua2_pypi failed" >&2; exit 1; }
  fi
  echo "setup: WARNING: $(.venv/bin/python -c 'from sip.capabilities import pjsua2_build as b; print(b().warning() or b().summary())')" >&2
fi
