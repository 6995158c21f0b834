"""What the installed pjsua2 build can do: calls per process, opus, TLS, SRTP, ioqueue.

``pjsua2_build()`` reports it (for ``/healthz`` and start-up logs). The values are read back from
the compiled module, not from any metadata: pjsua's own ``UaConfig`` default *is* the compiled
``PJSUA_MAX_CALLS`` (pjsua silently lowers a larger ``maxCalls`` to it), the codec list, the SSL
cipher list and a TLS listener show opus and TLS, ``srtpCryptoEnum`` shows SRTP, and pjlib's log
names the ioqueue. Building that list needs a libInit'ed Endpoint, and a process may only ever hold
one, so it runs once in a short-lived subprocess (about half a second) and is then cached: safe
and cheap to call from any thread, also while the gateway's Endpoint is up.

Stdlib only, so ``scripts/pjsua2/build.sh`` can run this file by path against a freshly built
module (``python -P sip/capabilities.py --expect-full``) before it caches the wheel.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The PyPI wheel `pjsua2-python` 2.15.x is compiled with PJSUA_MAX_CALLS=4.
CAPPED_CALLS = 4
OWN_DISTRIBUTION = "pjsua2"  # scripts/pjsua2/build.sh
PYPI_DISTRIBUTION = "pjsua2-python"

# Runs in a fresh interpreter (python -P -c): creates the one Endpoint of that process, writes one
# JSON line to stdout and exits without libDestroy (which waits ~1 s for the TLS listener).
_PROBE = r"""
import ctypes, json, os, re, tempfile
out, log = os.dup(1), tempfile.TemporaryFile()
os.dup2(log.fileno(), 1)  # pjlib logs with C stdio on stdout: keep it to read the ioqueue's name
found = {}
try:
    import pjsua2 as pj
    found["module"] = pj.__file__
    found["max_calls"] = pj.UaConfig().maxCalls
    found["max_conf_ports"] = pj.MediaConfig().maxMediaPorts
    found["frame_tap"] = hasattr(pj, "FrameTap")
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = False
    cfg.logConfig.level = cfg.logConfig.consoleLevel = 4
    ep.libInit(cfg)
    found["pjsip_version"] = ep.libVersion().full
    found["codecs"] = [c.codecId for c in ep.codecEnum2()]
    found["srtp_cryptos"] = list(ep.srtpCryptoEnum())
    found["tls"] = False
    if len(ep.utilSslGetAvailableCiphers()) > 0:
        tcfg = pj.TransportConfig()
        tcfg.port = 0
        tcfg.boundAddress = "127.0.0.1"
        try:
            ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
            found["tls"] = True
        except pj.Error as exc:
            found["tls_error"] = exc.reason
    else:
        found["tls_error"] = "no SSL ciphers (built without PJ_HAS_SSL_SOCK)"
except BaseException as exc:
    found["error"] = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
finally:
    ctypes.CDLL(None).fflush(None)
    log.seek(0)
    text = log.read().decode("utf-8", "replace")
    queue = re.search(r"(\w+)(?:\(\))? I/O Queue created", text)
    found["ioqueue"] = queue.group(1) if queue else None
    ssl = re.search(r"OpenSSL version : (\d+)", text)
    found["openssl_number"] = int(ssl.group(1)) if ssl else None
    os.write(out, (json.dumps(found) + "\n").encode())
    os._exit(0)
"""


@dataclass(frozen=True)
class PjsuaBuild:
    """The loaded pjsua2 build. ``distribution`` is ``pjsua2`` for Puente's own build
    (scripts/pjsua2), ``pjsua2-python`` for the capped PyPI wheel."""

    max_calls: int  # calls per process (PJSUA_MAX_CALLS)
    max_conf_ports: int | None  # conference bridge slots (PJSUA_MAX_CONF_PORTS)
    ioqueue: str | None  # "epoll" or "select"
    opus: bool
    tls: bool  # SSL sockets compiled in and a SIP TLS listener could be created
    srtp: bool
    # Puente's FrameTap (scripts/pjsua2/frame_tap.hpp) is compiled in: call audio is collected in
    # batches; without it every frame is a Python callback on the media clock thread.
    frame_tap: bool = False
    codecs: tuple[str, ...] = ()
    openssl: str | None = None  # the OpenSSL version pjlib was compiled against
    pjsip_version: str | None = None
    distribution: str | None = None
    version: str | None = None
    build_key: str | None = None  # scripts/pjsua2 cache key the wheel was built with
    module: str | None = None
    open_files_limit: int | None = None  # this process's soft RLIMIT_NOFILE: ~2 sockets per call
    error: str | None = None  # the probe failed; only max_calls (read in this process) is known

    @property
    def own_build(self) -> bool:
        return self.distribution == OWN_DISTRIBUTION

    @property
    def capped(self) -> bool:
        """At most the PyPI wheel's 4 calls per process."""
        return self.max_calls <= CAPPED_CALLS

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``/healthz``."""
        return {**dataclasses.asdict(self), "codecs": list(self.codecs), "own_build": self.own_build,
                "capped": self.capped}

    def summary(self) -> str:
        who = f"{self.distribution} {self.version}" if self.distribution else (self.module or "pjsua2")
        if self.error:
            return f"{who}: {self.max_calls} calls per process; probe failed: {self.error}"
        flags = ", ".join(f"{name} {'yes' if on else 'no'}"
                          for name, on in (("opus", self.opus), ("TLS", self.tls), ("SRTP", self.srtp),
                                           ("frame tap", self.frame_tap)))
        return (f"{who}: {self.max_calls} calls per process, {self.max_conf_ports} bridge slots, "
                f"{self.ioqueue} ioqueue, {flags}" + (f" (OpenSSL {self.openssl})" if self.openssl else ""))

    def warning(self) -> str | None:
        """One line for logs and setup when this build caps the node; None otherwise."""
        if not self.capped:
            return None
        missing = [name for name, on in (("opus", self.opus), ("TLS", self.tls), ("SRTP", self.srtp)) if not on]
        notes = [f"{self.ioqueue}() ioqueue" if self.ioqueue else "unknown ioqueue"]
        if self.tls and self.openssl and self.openssl.startswith("1."):
            notes.append(f"TLS only through its bundled OpenSSL {self.openssl}, end of life")
        which = " ".join(p for p in (self.distribution, self.version) if p) or str(self.module)
        return (f"this node is capped at {self.max_calls} calls per process"
                + (f" and has no {'/'.join(missing)}" if missing else "")
                + f": pjsua2 is {which} ({'; '.join(notes)}). Give ./scripts/setup.sh the pjproject source "
                "(PJPROJECT_SOURCE or ../shared/vendor) to build Puente's own, see scripts/pjsua2/")


_lock = threading.Lock()
_cached: PjsuaBuild | None = None


def pjsua2_build(refresh: bool = False, timeout: float = 30.0) -> PjsuaBuild:
    """The installed pjsua2 build's limits and features; probed once per process, then cached."""
    global _cached
    with _lock:
        if _cached is None or refresh:
            _cached = _probe(timeout)
        return _cached


def _module_path() -> Path:
    """The pjsua2 this process imports (or would import): its file, without importing it."""
    module = sys.modules.get("pjsua2")
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        spec = importlib.util.find_spec("pjsua2")
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError("pjsua2 is not installed")
        origin = spec.origin
    return Path(origin).resolve()


def _import_root(module: Path) -> Path:
    # pjsua2.py (upstream layout, our wheel) or pjsua2/__init__.py (the PyPI wheel)
    return module.parent.parent if module.name == "__init__.py" else module.parent


def _distribution(module: Path) -> importlib.metadata.Distribution | None:
    """The installed distribution whose files hold ``module`` (not just any that claims the name)."""
    for name in (OWN_DISTRIBUTION, PYPI_DISTRIBUTION):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in dist.files or ():
            if file.name == module.name and Path(dist.locate_file(file)).resolve() == module:
                return dist
    return None


def _openssl_version(number: int | None) -> str | None:
    if not number:
        return None
    major, minor, fix = number >> 28 & 0xF, number >> 20 & 0xFF, number >> 12 & 0xFF
    patch = number >> 4 & 0xFF
    if major >= 3:  # 0xMNN00PP0
        return f"{major}.{minor}.{patch}"
    return f"{major}.{minor}.{fix}" + (chr(ord("a") + patch - 1) if patch else "")  # 0xMNNFFPPS


def _open_files_limit() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _probe(timeout: float) -> PjsuaBuild:
    module = _module_path()
    dist = _distribution(module)
    build_info: dict[str, Any] = {}
    if dist is not None:
        try:
            build_info = json.loads(dist.read_text("puente-build.json") or "{}")
        except ValueError:
            pass
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_import_root(module)), env.get("PYTHONPATH")) if p)
    found: dict[str, Any]
    try:
        proc = subprocess.run([sys.executable, "-P", "-c", _PROBE], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)
        lines = proc.stdout.strip().splitlines()
        found = json.loads(lines[-1]) if lines else {
            "error": f"probe exited {proc.returncode} without a result: {proc.stderr.strip()[-300:]}"}
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        found = {"error": f"probe did not run: {exc}"}
    if found.get("module") and Path(found["module"]).resolve() != module:
        found["error"] = f"the probe loaded {found['module']}, not {module}"
    if "max_calls" not in found:
        found["max_calls"] = _max_calls_here()
    codecs = tuple(found.get("codecs") or ())
    return PjsuaBuild(
        max_calls=int(found["max_calls"]),
        max_conf_ports=found.get("max_conf_ports"),
        ioqueue=found.get("ioqueue"),
        opus=any(c.lower().startswith("opus/") for c in codecs),
        tls=bool(found.get("tls")),
        srtp=bool(found.get("srtp_cryptos")),
        frame_tap=bool(found.get("frame_tap")),
        codecs=codecs,
        openssl=_openssl_version(found.get("openssl_number")),
        pjsip_version=found.get("pjsip_version"),
        distribution=dist.metadata["Name"] if dist is not None else None,
        version=dist.version if dist is not None else None,
        build_key=build_info.get("key"),
        module=str(module),
        open_files_limit=_open_files_limit(),
        error=found.get("error"),
    )


def _max_calls_here() -> int:
    """PJSUA_MAX_CALLS from this process's pjsua2: UaConfig's default is a plain struct default
    (pjsua_config_default), safe next to a running Endpoint."""
    import pjsua2 as pj

    return int(pj.UaConfig().maxCalls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Report the installed pjsua2 build's limits and features.")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--expect-calls", type=int, help="fail unless the build allows exactly this many calls")
    parser.add_argument("--expect-full", action="store_true", help="fail unless it has epoll, opus, TLS, SRTP and the frame tap")
    args = parser.parse_args(argv)
    build = pjsua2_build()
    print(json.dumps(build.as_dict(), indent=1) if args.json else build.summary())
    problems = []
    if build.error:
        problems.append(build.error)
    if args.expect_calls is not None and build.max_calls != args.expect_calls:
        problems.append(f"{build.max_calls} calls per process, expected {args.expect_calls}")
    if args.expect_full:
        problems += [f"no {name}" for name, on in (("opus", build.opus), ("TLS", build.tls), ("SRTP", build.srtp),
                                                   ("frame tap", build.frame_tap),
                                                   ("epoll ioqueue", build.ioqueue == "epoll")) if not on]
    for problem in problems:
        print(f"pjsua2 build: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
