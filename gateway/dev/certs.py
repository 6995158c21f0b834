"""A throwaway self-signed certificate for SIP over TLS in the demo and tests (not for production).

Made with the ``openssl`` command line (Debian's ``openssl`` package), so nothing is added to
Puente's dependencies: an RSA-2048 key and a certificate for ``CN=<host>`` with subjectAltNames
``IP:127.0.0.1``, ``IP:::1``, ``DNS:localhost`` (and ``host``), valid for ``days``. The
certificate is its own CA, so a client verifies the server with ``ca_file = cert_file``.
"""
from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertPair:
    cert_file: Path  # PEM certificate, also usable as the CA file that verifies it
    key_file: Path  # PEM private key, unencrypted, mode 0600


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def self_signed(directory: Path, host: str = "127.0.0.1", *, name: str = "sip", days: int = 30) -> CertPair:
    """Write ``<name>.crt`` and ``<name>.key`` into ``directory`` (reused when both exist)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    if pair.cert_file.is_file() and pair.key_file.is_file():
        return pair
    if not openssl_available():
        raise RuntimeError("the openssl command is not installed (Debian package openssl)")
    sans = ["IP:127.0.0.1", "IP:::1", "DNS:localhost"]
    try:
        own = f"IP:{ipaddress.ip_address(host)}"
    except ValueError:
        own = f"DNS:{host}"
    if own not in sans:
        sans.append(own)
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", str(days),
               "-subj", f"/CN={host}", "-addext", "subjectAltName=" + ",".join(sans),
               "-addext", "basicConstraints=critical,CA:TRUE",
               "-keyout", str(pair.key_file), "-out", str(pair.cert_file)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl could not make a certificate: {proc.stderr.strip()[-500:]}")
    pair.key_file.chmod(0o600)
    return pair


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write a self-signed SIP TLS certificate and key (demo/tests only).")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    pair = self_signed(args.directory, args.host)
    print(f"sip:\n  transports: [udp, tcp, tls]\n  tls_cert_file: {pair.cert_file.resolve()}\n"
          f"  tls_key_file: {pair.key_file.resolve()}")


if __name__ == "__main__":
    main()
