"""SIPp (Debian ``sip-tester``) as a load of real SIP callers on loopback, for tests and benchmarks.

Each caller sends RTP from a pcap (``play_pcap_audio``; SIPp 3.6.1's ``rtp_stream`` sends nothing
here): :func:`write_rtp_pcap` builds one of RTP/PCMU packets from µ-law audio, with a small
pure-Python pcap writer. All traffic stays on 127.0.0.1, and every SIPp run has a global timeout.
"""
from __future__ import annotations

import re
import socket
import struct
import subprocess
import time
from pathlib import Path

import numpy as np

from gateway.dev.harness import free_ports

PTIME_S = 0.020


def mulaw(pcm: np.ndarray) -> bytes:
    """G.711 µ-law of 16-bit samples (the ITU-T reference encoder)."""
    x = pcm.astype(np.int32)
    sign = (x < 0).astype(np.int32) << 7
    x = np.minimum(np.where(x < 0, -x - 1, x), 32635) + 0x84
    exponent = np.clip(np.floor(np.log2(x)).astype(np.int32) - 7, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def write_rtp_pcap(path: Path, ulaw: bytes, ssrc: int) -> int:
    """One RTP packet (PT 0, 160 samples) per 20 ms, Ethernet/IPv4/UDP, pcap timestamps 20 ms apart.

    SIPp replaces the addresses and ports with the call's and sends at the pcap's pace. Returns packets.
    """
    step = 160
    ulaw = ulaw + b"\xff" * (-len(ulaw) % step)
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # LINKTYPE_ETHERNET
        count = len(ulaw) // step
        for n in range(count):
            rtp = struct.pack("!BBHII", 0x80, 0x80 if n == 0 else 0, n & 0xFFFF, (n * step) & 0xFFFFFFFF, ssrc)
            udp_payload = rtp + ulaw[n * step:(n + 1) * step]
            udp = struct.pack("!HHHH", 40000, 40000, 8 + len(udp_payload), 0) + udp_payload
            ip_header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                                    socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"))
            checksum = _ip_checksum(ip_header)
            ip_header = ip_header[:10] + struct.pack("!H", checksum) + ip_header[12:]
            frame = b"\x00" * 12 + b"\x08\x00" + ip_header + udp
            micros = round(n * PTIME_S * 1e6)
            out.write(struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)))
            out.write(frame)
    return count


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF



_FROM = "<sip:+52[field0]@[local_ip]:[local_port]>;tag=[pid]T[call_number]"


def scenario(tag: str, pcap: Path, hang_up_after_ms: int, extension: str) -> str:
    """UAC: INVITE ``extension`` (PCMU only), ACK, play the pcap, then either answer the far end's
    BYE or send ours after ``hang_up_after_ms``."""
    _TO = f"<sip:{extension}@[remote_ip]:[remote_port]>"
    headers = (f"From: {_FROM}\n      To: {_TO}[peer_tag_param]\n      Call-ID: [call_id]\n"
               f"      Contact: <sip:+52[field0]@[local_ip]:[local_port]>\n      Max-Forwards: 70")
    via = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"
    ruri = f"sip:{extension}@[remote_ip]:[remote_port]"
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="puente-capacity-{tag}">
  <send retrans="500">
    <![CDATA[

      INVITE {ruri} SIP/2.0
      {via}
      From: {_FROM}
      To: {_TO}
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:+52[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: puente-capacity
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- [pid][call_number] 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[

      ACK {ruri} SIP/2.0
      {via}
      {headers}
      CSeq: 1 ACK
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <recv request="BYE" timeout="{hang_up_after_ms}" ontimeout="1"/>
  <send next="2">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="1"/>
  <send retrans="500">
    <![CDATA[

      BYE {ruri} SIP/2.0
      {via}
      {headers}
      CSeq: 2 BYE
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <label id="2"/>
</scenario>
"""


_next_port = [61000]


def port_block() -> tuple[int, int]:
    """A SIP port and a media port for one SIPp, with the media port's neighbours free too (SIPp binds
    audio RTP/RTCP at ``-mp`` and video at ``-mp``+2): a range above the kernel's ephemeral ports and the
    gateway's RTP ports, handed out once per run."""
    while _next_port[0] < 65000:
        base = _next_port[0]
        _next_port[0] += 6
        if all(_port_free(base + k) for k in range(6)):
            return base + 5, base
    sip, rtp = free_ports(2)
    return sip, rtp // 2 * 2


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class Sipp:
    """One SIPp process placing ``calls`` calls to ``sip:{extension}@127.0.0.1:{port}`` at ``rate``
    per second, each sending ``pcap``'s RTP and up ``hang_up_after_s`` unless the far end hangs up;
    caller numbers are ``+52{number_prefix}00000``, ``…00001``, …"""

    def __init__(self, workdir: Path, port: int, tag: str, pcap: Path, calls: int, rate: float,
                 hang_up_after_s: float, number_prefix: str, extension: str) -> None:
        self.tag, self.calls = tag, calls
        self.expected_speech_end_ms: int | None = None  # speakers: where the clip's speech ends in the stream
        self.dir = workdir / tag
        self.dir.mkdir(parents=True, exist_ok=True)
        xml = self.dir / "scenario.xml"
        xml.write_text(scenario(tag, pcap, round(hang_up_after_s * 1000), extension))
        numbers = self.dir / "numbers.csv"
        numbers.write_text("SEQUENTIAL\n" + "".join(f"{number_prefix}{i:05d};\n" for i in range(calls)))
        self.stat = self.dir / "stat.csv"
        self.errors = self.dir / "errors.log"
        self.budget_s = calls / rate + hang_up_after_s + 30
        sip_port, media_port = port_block()
        cmd = ["sipp", "-sf", str(xml), "-inf", str(numbers), "-i", "127.0.0.1", "-mi", "127.0.0.1",
               "-p", str(sip_port), "-mp", str(media_port), "-m", str(calls), "-l", str(calls),
               "-cid_str", f"{tag}-%u-%p@%s", "-r", f"{rate:.3f}", "-rp", "1000", "-timeout", f"{self.budget_s:.0f}", "-nostdin", "-aa",
               "-trace_stat", "-stf", str(self.stat), "-fd", "1", "-trace_err", "-error_file", str(self.errors),
               f"127.0.0.1:{port}"]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=(self.dir / "screen.txt").open("w"),
                                     stderr=subprocess.STDOUT)

    def wait(self) -> int:
        try:
            return self.proc.wait(max(1.0, self.budget_s + 15 - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def counts(self) -> dict:
        """SIPp's cumulative counters (its last statistics line) and the SIP codes of failed calls."""
        out: dict = {"offered": self.calls, "exit": self.proc.poll()}
        lines = self.stat.read_text(errors="replace").splitlines() if self.stat.exists() else []
        if len(lines) >= 2:
            row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
            for key, name in (("OutgoingCall(C)", "placed"), ("SuccessfulCall(C)", "successful"),
                              ("FailedCall(C)", "failed"), ("FailedMaxUDPRetrans(C)", "udp_retrans"),
                              ("FailedUnexpectedMessage(C)", "unexpected"), ("FailedCallRejected(C)", "rejected"),
                              ("FailedCmdNotSent(C)", "not_sent"), ("FailedRegexpDoesntMatch(C)", "regexp"),
                              ("FailedOutboundCongestion(C)", "congestion"), ("FailedTimeoutOnRecv(C)", "recv_timeout")):
                if key in row and row[key].strip().isdigit():
                    out[name] = int(row[key])
        codes: dict[str, int] = {}
        if self.errors.exists():
            text = self.errors.read_text(errors="replace")
            for match in re.finditer(r"received '?SIP/2\.0 (\d{3})", text):
                codes[match.group(1)] = codes.get(match.group(1), 0) + 1
            retrans = len(re.findall(r"Max UDP retransmission", text, re.IGNORECASE))
            if retrans:
                codes["no answer (UDP retrans)"] = retrans
        if out.get("placed", 0) < self.calls:
            codes["not placed (SIPp error, see its screen)"] = self.calls - out.get("placed", 0)
        out["failure_codes"] = codes
        return out
