"""Codec selection: the configured priority list, everything else disabled."""
from __future__ import annotations

from dataclasses import dataclass

import pjsua2 as pj


@dataclass(frozen=True)
class CodecSelection:
    enabled: tuple[str, ...]  # pjsua ids, best first
    missing: tuple[str, ...]  # wanted but absent from this build (e.g. opus without libopus)


def _matches(codec_id: str, wanted: str) -> bool:
    # pjsua ids are "name/rate/channels" (e.g. "opus/48000/2"); config ids omit channels.
    return codec_id.lower().startswith(wanted.lower().rstrip("/") + "/")


def available_codecs(ep: pj.Endpoint) -> list[str]:
    """Every codec id this pjsua build knows, enabled or not."""
    return [info.codecId for info in ep.codecEnum2()]


def apply_codec_priorities(ep: pj.Endpoint, wanted: tuple[str, ...]) -> CodecSelection:
    """Enable ``wanted`` in that order and disable every other codec.

    Raises ValueError when none of ``wanted`` exists in this build.
    """
    present = available_codecs(ep)
    enabled: list[str] = []
    missing: list[str] = []
    for rank, name in enumerate(wanted):
        hits = [cid for cid in present if _matches(cid, name)]
        if not hits:
            missing.append(name)
        for cid in hits:
            ep.codecSetPriority(cid, 255 - rank)
            enabled.append(cid)
    for cid in present:
        if cid not in enabled:
            ep.codecSetPriority(cid, 0)  # priority 0 disables the codec
    if not enabled:
        raise ValueError(f"none of the codecs {wanted!r} is available (have: {', '.join(present)})")
    return CodecSelection(tuple(enabled), tuple(missing))
