"""``puente``: run the gateway, place test calls, run the demo.

    puente serve [--config FILE] [--sip-host H] [--sip-port P] [--http-port P] [--db URL]
    puente call SIP_URI (--wav FILE | --say TEXT --lang es|en) [--api URL] [--from NUMBER] [--answer TEXT | --dtmf D]
    puente demo [--config FILE] [...serve flags]
    puente nlu train|eval|parse|lint|augment|deploy …   (puente nlu --help)
"""
from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import sys
from pathlib import Path
from typing import Any

from gateway.call.prompts import PromptError
from gateway.cli.nlu import add_nlu_commands
from gateway.config import ConfigError, Settings, load_settings
from gateway.flows import FlowError
from gateway.store import StoreError
from models import ModelError
from nlu import DatasetError, ModelLoadError
from sip import SipError

#: What stops the gateway from starting, each with a message an operator can act on.
STARTUP_ERRORS = (StoreError, PromptError, ModelError, ModelLoadError, DatasetError, SipError, FlowError)
# `puente call --codec`: the one codec the test caller offers.
CALL_CODECS = {"pcmu": "PCMU/8000", "pcma": "PCMA/8000", "g722": "G722/16000", "opus": "opus/48000"}

log = logging.getLogger("puente")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # A crash inside pjsua2's C code (a media or SIP thread) would otherwise end the process
    # without a word: this prints every thread's Python stack to stderr first.
    faulthandler.enable()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"puente: {exc}", file=sys.stderr)
        return 2
    except STARTUP_ERRORS as exc:
        print(f"puente: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="puente", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway: SIP + HTTP API")
    _add_serve_flags(serve)
    serve.set_defaults(run=_cmd_serve)

    demo = commands.add_parser("demo", help="run the gateway, place sample calls, print what was decided, stay up")
    _add_serve_flags(demo)
    demo.add_argument("--scenario", choices=["calls", "queue"], default="calls",
                      help="calls: six sample calls; queue: twenty callers and two agents in a voice queue")
    demo.add_argument("--exit", action="store_true", help="stop once the scenario is done instead of staying up")
    demo.set_defaults(run=_cmd_demo)

    call = commands.add_parser("call", help="place a real SIP call and print the gateway's record of it")
    call.add_argument("uri", metavar="SIP_URI", help="e.g. sip:es@127.0.0.1:5060")
    source = call.add_mutually_exclusive_group(required=True)
    source.add_argument("--wav", type=Path, help="audio the caller says (any PCM WAV)")
    source.add_argument("--say", metavar="TEXT", help="text the caller says (espeak-ng in --lang, or --voice)")
    call.add_argument("--lang", choices=["es", "en"], help="language of --say (default: the --voice's)")
    call.add_argument("--voice", metavar="SPEC",
                      help="who says --say and --answer: kokoro:ef_dora, kokoro:em_santa@1.1, espeak:es-419 … (default: espeak-ng in --lang)")
    call.add_argument("--api", default="http://127.0.0.1:8080", help="the gateway's HTTP address (default %(default)s)")
    call.add_argument("--from", dest="from_number", default="+525555550123", help="caller id presented (default %(default)s)")
    call.add_argument("--answer", metavar="TEXT", help="say TEXT (as --say) to the gateway's question after the first utterance, e.g. 'sí'")
    call.add_argument("--dtmf", metavar="DIGITS", help="key DIGITS (RFC 4733) in reply to the gateway's question, e.g. 1")
    call.add_argument("--hangup-after", type=float, metavar="S", help="hang up S seconds after connecting")
    call.add_argument("--follow-transfer", action="store_true", help="accept the gateway's REFER and call the agent (default: decline it)")
    call.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds (default %(default)s)")
    call.add_argument("--srtp", choices=["off", "optional", "mandatory"], default="off",
                      help="media encryption offered (SDES; default %(default)s); SIP over TLS: a ;transport=tls URI")
    call.add_argument("--tls-ca", type=Path, help="verify the gateway's TLS certificate against this PEM CA file")
    call.add_argument("--codec", choices=sorted(CALL_CODECS), help="offer only this codec (default: G.722, opus, PCMU, PCMA)")
    call.set_defaults(run=_cmd_call)

    add_nlu_commands(commands)
    return parser


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config file (see README: Configuration)")
    p.add_argument("--sip-host", help="SIP/RTP bind address (default 127.0.0.1)")
    p.add_argument("--sip-port", type=int, help="SIP port (default 5060)")
    p.add_argument("--http-port", type=int, help="HTTP API port (default 8080)")
    p.add_argument("--db", help="SQLAlchemy database URL (default sqlite:///var/puente.db)")


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(
        args.config,
        overrides={
            "sip.host": args.sip_host, "sip.port": args.sip_port, "http.port": args.http_port,
            "database.url": args.db, **extra,
        },
    )


# --- serve -----------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from gateway.http.server import serve

    asyncio.run(serve(settings))
    return 0


# --- call ------------------------------------------------------------------------------


def _cmd_call(args: argparse.Namespace) -> int:
    from gateway.dev.caller import CallFailed, place_call

    if (args.say or args.answer) and not (args.lang or args.voice):
        print("puente call: --say and --answer need --lang es|en or --voice SPEC", file=sys.stderr)
        return 2
    voice = None
    if args.voice:
        from models.voices import VoiceLibrary

        try:
            voice = VoiceLibrary().voice(args.voice)
        except ModelError as exc:  # a bad spec, an unknown voice, Kokoro not installed
            print(f"puente call: {exc}", file=sys.stderr)
            return 2
    try:
        record = place_call(
            args.uri, wav=args.wav, say=args.say, lang=args.lang, api=args.api, from_number=args.from_number,
            answer=args.answer, dtmf=args.dtmf, hangup_after_s=args.hangup_after, timeout_s=args.timeout,
            srtp=args.srtp, tls_ca_file=args.tls_ca, follow_transfer=args.follow_transfer, voice=voice,
            codecs=(CALL_CODECS[args.codec],) if args.codec else None,
        )
    except CallFailed as exc:
        print(json.dumps({"error": str(exc), **exc.details}, ensure_ascii=False))
        return 1
    print(json.dumps(record, ensure_ascii=False))
    return 0


# --- demo ------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.http.server import serve

    if args.scenario == "queue":
        return _queue_demo(args)
    from gateway.dev.demo import run_demo

    # A short hold keeps the demo's voice calls from waiting for an agent that does not exist.
    settings = _settings(args, **({"routing.hold_timeout_s": 3.0} if args.config is None else {}))
    asyncio.run(serve(settings, on_ready=run_demo, stop_when_ready=args.exit))
    return 0


def _queue_demo(args: argparse.Namespace) -> int:
    from gateway.dev.harness import free_port
    from gateway.dev.queue_demo import queue_overrides, run_queue_demo
    from gateway.http.server import serve

    agents_port = free_port()
    settings = _settings(args, **queue_overrides(agents_port))

    async def with_agents(settings: Settings) -> None:
        # The agents' phones need their own pjsua2 endpoint, hence their own process.
        agents = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.dev.agents", "--port", str(agents_port), "--talk-s", "20",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert agents.stdout is not None
            started = json.loads(await asyncio.wait_for(agents.stdout.readline(), 30) or b"{}")
            if started.get("event") != "started":
                raise RuntimeError(f"the simulated agents did not start: {started}")
            await run_queue_demo(settings, agents)
        finally:
            agents.terminate()
            await agents.wait()

    asyncio.run(serve(settings, on_ready=with_agents, stop_when_ready=args.exit))
    return 0

