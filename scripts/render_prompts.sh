#!/usr/bin/env bash
# Renders gateway/call/prompts/<lang>/<name>.wav from gateway/call/prompts/texts.yaml with espeak-ng,
# and the queue's hold music (a soft arpeggio, looped by the gateway) with sox.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
"$py" - <<'PY'
import subprocess, yaml
from pathlib import Path
from gateway.call.announcements import PROMPT_WORDS_PER_MINUTE, speak
root = Path("gateway/call/prompts")
for lang, prompts in yaml.safe_load((root / "texts.yaml").read_text()).items():
    (root / lang).mkdir(exist_ok=True)
    for name, text in prompts.items():
        speak(text, lang, root / lang / f"{name}.wav", words_per_minute=PROMPT_WORDS_PER_MINUTE)
        print(f"{lang}/{name}.wav")
    notes = [f"pluck {n}" for n in ("C4", "E4", "G4", "C5", "A3", "C4", "E4", "A4", "F3", "A3", "C4", "F4", "G3", "B3", "D4", "G4")]
    parts = []
    for note in notes:
        parts += ["synth", "0.75", *note.split(), ":"]
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(root / lang / "hold_music.wav"),
                    *parts[:-1], "vol", "0.25", "fade", "0.05", "0", "0.3"], check=True)
    print(f"{lang}/hold_music.wav")
PY
