#!/usr/bin/env bash
# Renders gateway/call/prompts/<lang>/<name>.wav from gateway/call/prompts/texts.yaml with espeak-ng.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
"$py" - <<'PY'
import subprocess, tempfile, yaml
from pathlib import Path
root = Path("gateway/call/prompts")
voices = {"es": "es-419", "en": "en-us"}
for lang, prompts in yaml.safe_load((root / "texts.yaml").read_text()).items():
    (root / lang).mkdir(exist_ok=True)
    for name, text in prompts.items():
        with tempfile.NamedTemporaryFile(suffix=".wav") as raw:
            subprocess.run(["espeak-ng", "-v", voices[lang], "-s", "165", "-w", raw.name, text], check=True)
            subprocess.run(["sox", raw.name, "-r", "16000", "-c", "1", "-b", "16", str(root / lang / f"{name}.wav")], check=True)
        print(f"{lang}/{name}.wav")
PY
