"""Packs the built pjsua2 binding (``pjsua2.py`` + ``_pjsua2*.so``) into a wheel, with only the stdlib.

Called by build.sh; no ``wheel`` package (or network) is needed. The layout is upstream's
(``pjsua2-python``'s import name ``pjsua2``, as a top-level module), the distribution is ``pjsua2``
with a ``+puente.<key>`` local version, and ``.dist-info/puente-build.json`` records what the wheel
was built from (``sip.capabilities`` reports it).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import sysconfig
import zipfile
from pathlib import Path

NAME = "pjsua2"


def _tag() -> str:
    version = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    return f"{version}-{version}-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(stage: Path, out: Path, version: str, build_info: dict[str, str]) -> Path:
    modules = sorted(stage.glob("_pjsua2*.so")) + [stage / "pjsua2.py"]
    missing = [m.name for m in modules if not m.is_file()]
    if missing or len(modules) != 2:
        raise SystemExit(f"wheel.py: {stage} lacks the built module ({missing or 'no _pjsua2*.so'})")
    dist_info = f"{NAME}-{version}.dist-info"
    metadata = "\n".join([
        "Metadata-Version: 2.1",
        f"Name: {NAME}",
        f"Version: {version}",
        "Summary: pjsua2 (pjproject SIP/media stack) Python binding, built by Puente's scripts/pjsua2",
        "Home-page: https://www.pjsip.org",
        "License: GPL-2.0-or-later",
        f"Requires-Python: =={sys.version_info[0]}.{sys.version_info[1]}.*",
        "",
    ])
    wheel_meta = "\n".join([
        "Wheel-Version: 1.0",
        "Generator: puente scripts/pjsua2/wheel.py",
        "Root-Is-Purelib: false",
        f"Tag: {_tag()}",
        "",
    ])
    files: list[tuple[str, bytes]] = [(m.name, m.read_bytes()) for m in modules]
    files += [
        (f"{dist_info}/METADATA", metadata.encode()),
        (f"{dist_info}/WHEEL", wheel_meta.encode()),
        (f"{dist_info}/top_level.txt", b"_pjsua2\npjsua2\n"),
        (f"{dist_info}/puente-build.json", (json.dumps(build_info, indent=1) + "\n").encode()),
    ]
    record = [_record_line(name, data) for name, data in files] + [f"{dist_info}/RECORD,,"]
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))

    expected = f"{NAME}-{version}-{_tag()}.whl"
    if out.name != expected:
        raise SystemExit(f"wheel.py: output must be named {expected}, not {out.name}")
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as whl:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(info, data)
    tmp.replace(out)  # atomic: a concurrent reader sees no wheel or the whole wheel
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", type=Path, required=True, help="folder with pjsua2.py and _pjsua2*.so")
    parser.add_argument("--out", type=Path, required=True, help="the .whl to write")
    parser.add_argument("--version", required=True)
    parser.add_argument("--build-info", default="{}", help="JSON object for puente-build.json")
    args = parser.parse_args()
    print(build_wheel(args.stage, args.out, args.version, json.loads(args.build_info)))


if __name__ == "__main__":
    main()
