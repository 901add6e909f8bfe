#!/usr/bin/env python3
"""Regenerates fuzz/seeds/<target>/ from real captures made on this machine:

- RTMP: ffmpeg publishing (and playing) through a TCP proxy that records what the client sends,
  to an ffmpeg `-listen 1` RTMP server.
- SIP: the scenarios of tests/e2e/sip/*.xml run by sipp against a stock sipp peer, messages
  taken from `-trace_msg`; digest answers sipp computed to a challenge; RTP and RFC 4733 DTMF
  packets from the pcaps sipp ships (/usr/share/sip-tester).
- WebRTC: SDP offers of a real Chromium (room, WHIP simulcast, WHEP, data only) through
  playwright-core (tests/browser/node_modules).
- MoQ: CMAF from ffmpeg as the MoQ tests package it for moq-pub (one fragment per frame).
- AAC/H.264: the FLV ffmpeg wrote for the RTMP capture, ADTS and Annex B streams from ffmpeg.
- TURN: the requests a WebRTC client's TURN session is made of (RFC 8656 layouts, built here):
  CreatePermission and ChannelBind for the media plane, a Send indication, ChannelData, a
  Refresh; the target signs them (control bit 2).

Needs ffmpeg, sipp, node and chromium (scripts/test installs them). Seeds stay small: a few
KB each. Run from anywhere: `python3 fuzz/seeds/generate.py`. The record format of multi-message
targets (messages separated by b"\\n#\\n", control bytes first) is described in each target's
module in fuzz/src/.
"""

import json
import os
import pathlib
import re
import socket
import struct
import subprocess
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEEDS = ROOT / "fuzz" / "seeds"
SEP = b"\n#\n"
SIPP_SHARE = pathlib.Path("/usr/share/sip-tester")


def write(target, name, data):
    directory = SEEDS / target
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (directory / name).write_bytes(data)


def join(parts):
    return SEP.join(p.encode() if isinstance(p, str) else p for p in parts)


def run(*args, **kw):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- RTMP


def record_client(listen, upstream, out):
    """A one-connection TCP proxy that keeps what the client sends."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen))
    srv.listen(1)

    def serve():
        client, _ = srv.accept()
        server = socket.create_connection(("127.0.0.1", upstream))

        def pump(a, b, keep):
            try:
                while data := a.recv(65536):
                    if keep:
                        out.extend(data)
                    b.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    b.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        threads = [threading.Thread(target=pump, args=(client, server, True)), threading.Thread(target=pump, args=(server, client, False))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        srv.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


HANDSHAKE = 1 + 1536 + 1536  # C0 C1 C2: the harness sends its own


def rtmp(tmp):
    flv = tmp / "publish.flv"
    server_port, proxy_port = free_port(), free_port()
    server = subprocess.Popen(["ffmpeg", "-v", "error", "-listen", "1", "-i", f"rtmp://127.0.0.1:{server_port}/live/stream",
                               "-c", "copy", "-f", "flv", "-y", str(flv)])
    time.sleep(1)
    published = bytearray()
    proxy = record_client(proxy_port, server_port, published)
    run("ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=10", "-f", "lavfi", "-i",
        "sine=frequency=660:sample_rate=8000", "-t", "0.6", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v",
        "baseline", "-g", "5", "-b:v", "20k", "-c:a", "aac", "-ar", "8000", "-ac", "1", "-b:a", "8k", "-f", "flv",
        f"rtmp://127.0.0.1:{proxy_port}/live/stream")
    proxy.join(10)
    server.wait(10)
    write("rtmp_session", "ffmpeg-publish", bytes(published[HANDSHAKE:]))

    server_port, proxy_port = free_port(), free_port()
    server = subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-i", str(flv), "-c", "copy", "-f", "flv", "-listen", "1",
                               f"rtmp://127.0.0.1:{server_port}/live/standup/alice"])
    time.sleep(1)
    played = bytearray()
    proxy = record_client(proxy_port, server_port, played)
    run("ffmpeg", "-v", "error", "-i", f"rtmp://127.0.0.1:{proxy_port}/live/standup/alice?token=eyJhbGciOiJIUzI1NiJ9.e30.sig",
        "-t", "0.3", "-f", "null", "-")
    proxy.join(10)
    server.wait(10)
    write("rtmp_session", "ffmpeg-play", bytes(played[HANDSHAKE:]))
    return flv


def flv_tags(path):
    """(type, timestamp, body) of each tag of an FLV file."""
    data = path.read_bytes()
    at = struct.unpack(">I", data[5:9])[0] + 4
    while at + 11 <= len(data):
        kind = data[at]
        size = int.from_bytes(data[at + 1:at + 4], "big")
        ts = int.from_bytes(data[at + 4:at + 7], "big") | (data[at + 7] << 24)
        body = data[at + 11:at + 11 + size]
        yield kind, ts, body
        at += 11 + size + 4


def media(flv, tmp):
    tags = list(flv_tags(flv))
    video = [(ts, body) for kind, ts, body in tags if kind == 9]
    audio = [(ts, body) for kind, ts, body in tags if kind == 8]
    records = [struct.pack("<BI", 0xFF, 0) + b"\x01" + struct.pack("<I", 96) + b"\x01" + struct.pack("<I", 64)]
    for kind, ts, body in tags[:24]:
        if kind in (8, 9):
            records.append(struct.pack("<BI", 0 if kind == 9 else 1, ts) + body)
    write("rtmp_ingest", "ffmpeg-h264-aac", join(records))

    # AVC: the sequence header's record, then AVCC access units (FLV video tag bodies minus 5 bytes).
    avcc = video[0][1][5:]
    write("h264", "ffmpeg-avcc", join([avcc] + [body[5:] for _, body in video[1:8]]))
    annexb = tmp / "stream.h264"
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "0.3", "-pix_fmt", "yuv420p",
        "-c:v", "libx264", "-profile:v", "high", "-g", "2", "-b:v", "10k", "-f", "h264", "-y", str(annexb))
    write("h264", "ffmpeg-annexb", join([b"", annexb.read_bytes()[:3000]]))

    # AAC: the AudioSpecificConfig, raw frames; an ADTS stream.
    asc = audio[0][1][2:]
    write("aac", "ffmpeg-raw", join([asc] + [body[2:] for _, body in audio[1:10]]))
    adts = tmp / "tone.aac"
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "0.2", "-c:a", "aac",
        "-ac", "2", "-b:a", "24k", "-f", "adts", "-y", str(adts))
    write("aac", "ffmpeg-adts", join([asc, adts.read_bytes()[:2500]]))
    write("aac", "explicit-rate", join([bytes([0x17, 0x80, 0x00, 0x00, 0x88])]))


# ---------------------------------------------------------------- SIP

SCENARIO_VALUES = {
    "caller": "alice", "rtp_port": "6000", "formats": "0 8 101",
    "rtpmaps": "      a=rtpmap:0 PCMU/8000\n      a=rtpmap:8 PCMA/8000\n      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-16",
    "media": "", "hold_ms": "200", "talk_ms": "300", "ring_ms": "200", "code": "486", "reason": "Busy Here",
    "nonce": "$nonce", "password": "secret",
}


def sipp_messages(log):
    """(direction, message) of a sipp -trace_msg log, with the CRLF line ends of the wire."""
    out = []
    for block in log.read_text(encoding="latin-1").split("----------------------------------------------- ")[1:]:
        _, header, text = block.split("\n", 2)
        head, _, body = text.lstrip("\n").partition("\n\n")
        message = head.replace("\n", "\r\n") + "\r\n\r\n" + body.rstrip("\n").replace("\n", "\r\n")
        if body.strip():
            message += "\r\n"
        out.append(("sent" if " sent " in header else "received", message))
    return out


def sipp_pair(tmp, server_args, client_args, name):
    port = free_port()
    server_log, client_log = tmp / f"{name}-server.log", tmp / f"{name}-client.log"
    server = subprocess.Popen(["sipp", *server_args, "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-trace_msg",
                               "-message_file", str(server_log)], cwd=tmp, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    client = subprocess.Popen(["sipp", f"127.0.0.1:{port}", *client_args, "-i", "127.0.0.1", "-p", str(free_port()),
                               "-m", "1", "-trace_msg", "-message_file", str(client_log), "-timeout", "6",
                               "-timeout_error"], cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    for process in (client, server):
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return sipp_messages(server_log), sipp_messages(client_log)


def control(delay_ms=20, decision=0):
    """The sip_ua control bytes: UDP, first address, delay, decision."""
    return struct.pack("<BBHB", 0, 0, delay_ms, decision)


def in_dialog(message):
    """Our To tag is random: in-dialog requests from a phone name it `$ttag`."""
    return re.sub(r"(?m)^(To:[^\r\n]*;tag=)[^;\r\n]+", r"\1$ttag", message)


def answering_us(message):
    """A phone's reply to our INVITE echoes our branch, Call-ID and From tag."""
    message = re.sub(r"(?m)^(Via:[^\r\n]*;branch=)[^;\r\n]+", r"\1$branch", message, count=1)
    message = re.sub(r"(?m)^(Call-ID:\s*)[^\r\n]+", r"\1$callid", message)
    return re.sub(r"(?m)^(From:[^\r\n]*;tag=)[^;\r\n]+", r"\1$ftag", message)


def sip(tmp):
    scenarios = tmp / "scenarios"
    scenarios.mkdir()
    for xml in sorted((ROOT / "tests" / "e2e" / "sip").glob("*.xml")):
        text = xml.read_text(encoding="latin-1")
        for key, value in SCENARIO_VALUES.items():
            text = text.replace("{" + key + "}", value)
        (scenarios / xml.name).write_text(text, encoding="latin-1")
    sdps = []
    for xml in sorted(scenarios.glob("uac_*.xml")):
        _, phone = sipp_pair(tmp, ["-sn", "uas"], ["-sf", str(xml), "-s", "standup"], xml.stem)
        sent = [m for d, m in phone if d == "sent"]
        records = [control(20 if i == 0 else 200, 0) + (in_dialog(m) if i else m).encode("latin-1") for i, m in enumerate(sent)]
        write("sip_ua", f"phone-{xml.stem}", join(records))
        sdps += [m.split("\r\n\r\n", 1)[1] for m in sent if "\r\n\r\nv=0" in m]
        if xml.stem == "uac_call":
            stream = "".join(sent).encode("latin-1")
            reads = b"".join(struct.pack(">H", 299) + stream[i:i + 300] for i in range(0, len(stream), 300))
            write("sip_tcp_framer", "phone-call-300-byte-reads", reads)
            write("sip_tcp_framer", "phone-call-one-read", struct.pack(">H", 2047) + stream[:2048])
    for xml in sorted(scenarios.glob("uas_*.xml")):
        phone, _ = sipp_pair(tmp, ["-sf", str(xml)], ["-sn", "uac", "-s", "dave"], xml.stem)
        sent = [m for d, m in phone if d == "sent"]
        records = [control(100, 0) + answering_us(m).encode("latin-1") for m in sent]
        write("sip_ua", f"trunk-{xml.stem}", join(records))
        sdps += [m.split("\r\n\r\n", 1)[1] for m in sent if "\r\n\r\nv=0" in m]
    for i, body in enumerate(sdps[:6]):
        write("sip_sdp", f"sipp-{i}", body)

    # Digest: what sipp answers to a challenge (ours say realm "junction", MD5, qop=auth).
    auth = (scenarios / "uas_auth.xml").read_text(encoding="latin-1")
    qop = auth.replace('realm="sipp.test", nonce="$nonce", algorithm=MD5',
                       'realm="junction", nonce="$nonce", algorithm=MD5, qop="auth", opaque="5ccc069c"')
    (scenarios / "uas_auth_qop.xml").write_text(qop, encoding="latin-1")
    for name in ["uas_auth", "uas_auth_qop"]:
        challenger, answerer = sipp_pair(tmp, ["-sf", str(scenarios / f"{name}.xml")],
                                         ["-sf", str(scenarios / "uac_auth.xml"), "-s", "standup", "-au", "alice",
                                          "-ap", "secret"], name + "-digest")
        authorization = next(re.search(r"(?m)^Authorization: (.*)$", m).group(1).strip() for d, m in answerer
                             if d == "sent" and "Authorization:" in m)
        challenge = next(re.search(r"(?m)^WWW-Authenticate: (.*)$", m).group(1).strip() for d, m in challenger
                         if d == "sent" and "WWW-Authenticate:" in m)
        ours = re.sub(r'response="[0-9a-f]+"', 'response="$response"', authorization).replace("sipp.test", "junction")
        write("sip_digest", f"sipp-{name}", join([ours, challenge]))

    # RTP: G.711 A-law from sipp's pcap, DTMF 5 and # from its RFC 2833 pcaps.
    g711 = pcap_payloads(SIPP_SHARE / "g711a.pcap")[:12]
    write("sip_rtp", "sipp-g711a", bytes([1]) + SEP.join(g711))
    for digit in ["5", "pound"]:
        dtmf = pcap_payloads(SIPP_SHARE / f"dtmf_2833_{digit}.pcap")
        write("sip_rtp", f"sipp-dtmf-{digit}", bytes([0]) + SEP.join(g711[:2] + dtmf))


def pcap_payloads(path):
    """UDP payloads of an Ethernet pcap."""
    data = path.read_bytes()
    at, out = 24, []
    while at + 16 <= len(data):
        length = struct.unpack("<I", data[at + 8:at + 12])[0]
        packet = data[at + 16:at + 16 + length]
        at += 16 + length
        ip = packet[14:]
        udp = ip[(ip[0] & 15) * 4:]
        out.append(udp[8:])
    return out


# ---------------------------------------------------------------- WebRTC

OFFERS_PAGE = """<html><body><pre id="out"></pre><script>
async function offer(setup) {
  const pc = new RTCPeerConnection();
  setup(pc);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); setTimeout(r, 1500); });
  const sdp = pc.localDescription.sdp; pc.close(); return sdp;
}
(async () => {
  const out = {};
  out.room = await offer(pc => { pc.addTransceiver('audio'); pc.addTransceiver('video'); pc.createDataChannel('junction-reliable'); });
  out.whip_simulcast = await offer(pc => { pc.addTransceiver('audio', {direction: 'sendonly'}); pc.addTransceiver('video', {direction: 'sendonly', sendEncodings: [{rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000}, {rid: 'h', scaleResolutionDownBy: 2}, {rid: 'f'}]}); });
  out.whep = await offer(pc => { pc.addTransceiver('audio', {direction: 'recvonly'}); pc.addTransceiver('video', {direction: 'recvonly'}); });
  out.data_only = await offer(pc => { pc.createDataChannel('chat'); });
  document.getElementById('out').textContent = JSON.stringify(out);
})();
</script></body></html>"""

OFFERS_SCRIPT = """
import { chromium } from '%s';
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic'] });
const page = await browser.newPage();
await page.goto('file://%s');
await page.waitForFunction(() => document.getElementById('out').textContent.length > 0, null, { timeout: 30000 });
console.log(await page.evaluate(() => document.getElementById('out').textContent));
await browser.close();
"""


def chromium_offers(tmp):
    playwright = ROOT / "tests" / "browser" / "node_modules" / "playwright-core" / "index.mjs"
    if not playwright.exists():
        run("npm", "ci", "--no-audit", "--no-fund", cwd=ROOT / "tests" / "browser")
    page = tmp / "offers.html"
    page.write_text(OFFERS_PAGE)
    script = tmp / "offers.mjs"
    script.write_text(OFFERS_SCRIPT % (playwright, page))
    output = subprocess.run(["node", str(script)], check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(output)


def webrtc(tmp):
    offers = chromium_offers(tmp)
    for name, sdp in offers.items():
        write("webrtc_negotiate", f"chromium-{name}", sdp)
    write("sip_sdp", "chromium-room", offers["room"])
    room = offers["room"]
    ufrag = re.search(r"a=ice-ufrag:(\S+)", room).group(1)
    pwd = re.search(r"a=ice-pwd:(\S+)", room).group(1)
    candidates = re.findall(r"(a=candidate:[^\r\n]+)", room)
    write("whip_sdpfrag", "trickle", "a=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
          + "".join(c + "\r\n" for c in candidates[:2]))
    write("whip_sdpfrag", "restart", f"a=ice-options:trickle ice2\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
          f"a=mid:0\r\na=ice-ufrag:{ufrag}x\r\na=ice-pwd:{pwd}\r\n" + "".join(c + "\r\n" for c in candidates[:2])
          + "a=end-of-candidates\r\n")

    # The browser protocol: sessions 0 (alice, lobby), 1 (bob, admin, lobby), 2 (carol, mesh),
    # 3 (anonymous). Control byte: the browser.
    def frames(*pairs):
        return join(bytes([who]) + json.dumps(message).encode() for who, message in pairs)

    write("browser_session", "sfu-tracks", frames(
        (0, {"type": "join", "id": 1}), (1, {"type": "join", "name": "Bobby", "metadata": {"seat": 3}}),
        (0, {"type": "subscribe", "track": "$track", "layer": "highest", "id": 2}),
        (0, {"type": "set_layer", "track": "$track", "layer": 0, "id": 3}),
        (0, {"type": "unsubscribe", "track": "$track"}), (1, {"type": "mute", "track": "$track", "muted": True}),
        (0, {"type": "data", "payload": "hello", "topic": "chat", "to": ["bob"], "id": 4}),
        (1, {"type": "data", "payload_base64": "AAEC", "reliable": False}),
        (0, {"type": "update", "name": "Al", "metadata": {"hand": True}}), (0, {"type": "ping", "data": [1, "x"]}),
        (0, {"type": "teleport"}), (0, {"type": "leave"})))
    write("browser_session", "mesh-and-calls", frames(
        (2, {"type": "join", "id": 1}), (3, {"type": "join", "room": "mesh"}),
        (2, {"type": "signal", "to": "anon-fuzz", "payload": {"sdp": {"type": "offer", "sdp": "v=0"}}}),
        (3, {"type": "call", "to": "$s0", "payload": {"sdp": "v=0"}, "id": 2}),
        (0, {"type": "call_signal", "call": "$call", "payload": {"candidate": "x"}}),
        (0, {"type": "hangup", "call": "$call"}), (2, {"type": "leave"})))
    write("browser_session", "sfu-offer", frames(
        (0, {"type": "join"}),
        (0, {"type": "offer", "sdp": offers["room"], "tracks": [{"mid": "0", "source": "microphone"}], "id": 5}),
        (0, {"type": "candidate", "candidate": candidates[0][2:], "sdp_mid": "0", "sdp_mline_index": 0}),
        (0, {"type": "answer", "sdp": offers["whep"]})))


# ---------------------------------------------------------------- MoQ


def boxes(data):
    at = 0
    while at + 8 <= len(data):
        size = struct.unpack(">I", data[at:at + 4])[0]
        yield data[at:at + 4 + 4].decode("latin-1")[4:], data[at:at + size]
        at += size


def catalog(tracks):
    return json.dumps({
        "version": 1, "streamingFormat": 1, "streamingFormatVersion": "0.2", "supportsDeltaUpdates": True,
        "commonTrackFields": {"namespace": "studio/cam", "packaging": "cmaf", "renderGroup": 1},
        "tracks": [{"initTrack": "0.mp4", "name": name, "selectionParams": params} for name, params in tracks]})


def moq(tmp):
    flags = "cmaf+separate_moof+delay_moov+skip_trailer+frag_every_frame"
    av = tmp / "av.mp4"
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=10", "-f", "lavfi", "-i",
        "sine=frequency=440:sample_rate=48000", "-t", "0.5", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v",
        "baseline", "-g", "5", "-b:v", "20k", "-c:a", "aac", "-b:a", "16k", "-ac", "1", "-f", "mp4", "-movflags", flags,
        "-y", str(av))
    opus = tmp / "opus.mp4"
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "0.2", "-c:a",
        "libopus", "-b:a", "16k", "-f", "mp4", "-movflags", flags, "-y", str(opus))
    for path, tracks in [(av, [("1.m4s", {"codec": "avc1.42c00a", "width": 96, "height": 64}),
                               ("2.m4s", {"codec": "mp4a.40.2", "samplerate": 48000, "channelConfig": "1"})]),
                         (opus, [("1.m4s", {"codec": "opus", "samplerate": 48000, "channelConfig": "1"})])]:
        parts = list(boxes(path.read_bytes()))
        init = b"".join(b for kind, b in parts if kind in ("ftyp", "moov"))
        media = [b for kind, b in parts if kind in ("moof", "mdat")]
        fragments = [media[i] + media[i + 1] for i in range(0, min(len(media), 12) - 1, 2)]
        write("moq_cmaf", f"ffmpeg-{path.stem}", join([catalog(tracks).encode(), init] + fragments))


# ---------------------------------------------------------------- auth


def auth():
    header = json.dumps({"alg": "HS256", "typ": "JWT"})
    claims = {"iss": "junction", "sub": "alice", "room": "lobby", "name": "Alice", "metadata": {"seat": 4},
              "grants": {"publish": True, "subscribe": True, "admin": False}, "iat": 0, "nbf": 0, "exp": 0}
    text = json.dumps(claims).replace('"iat": 0', '"iat": $now').replace('"nbf": 0', '"nbf": $now').replace('"exp": 0', '"exp": $exp')
    write("auth", "signed-claims", b"\x01" + join([header, text]))
    write("auth", "other-key", b"\x02" + join([header, text]))
    write("auth", "stream-key", b"\x00$key")
    write("auth", "garbage-jwt", b"\x00eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")


def stun(method_class, attributes):
    """A STUN message (magic cookie, random-free transaction id) with `attributes` [(type, value)]."""
    body = b""
    for kind, value in attributes:
        body += struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)
    return struct.pack("!HHI", method_class, len(body), 0x2112A442) + b"\x07" * 12 + body


def xor_address(ip, port):
    packed = socket.inet_aton(ip)
    xored = bytes(a ^ b for a, b in zip(packed, struct.pack("!I", 0x2112A442)))
    return struct.pack("!BBH", 0, 1, port ^ 0x2112) + xored


def turn():
    media = xor_address("10.0.0.1", 7882)
    create_permission = stun(0x0008, [(0x0012, media)])
    channel_bind = stun(0x0009, [(0x000C, struct.pack("!HH", 0x4001, 0)), (0x0012, media)])
    send = stun(0x0016, [(0x0012, media), (0x0013, b"\x00\x01\x00\x00stun-check")])
    channel_data = struct.pack("!HH", 0x4001, 8) + b"rtp-data"
    refresh = stun(0x0004, [(0x000D, struct.pack("!I", 600))])
    signed, udp, peer = b"\x04", b"\x00", b"\x03"
    write("turn_relay", "permission-channel-data", join([
        signed + create_permission, signed + channel_bind, udp + channel_data, peer + b"rtp-answer",
        udp + send, b"\x0c" + refresh]))
    elsewhere = xor_address("203.0.113.9", 22)
    write("turn_relay", "forbidden-peers", join([
        signed + stun(0x0008, [(0x0012, elsewhere)]),
        signed + stun(0x0009, [(0x000C, struct.pack("!HH", 0x4002, 0)), (0x0012, elsewhere)]),
        udp + stun(0x0016, [(0x0012, elsewhere), (0x0013, b"data")])]))
    write("turn_relay", "tcp-allocate", b"\x05" + stun(0x0003, [(0x0019, b"\x11\x00\x00\x00")]))


def main():
    # Regression seeds (inputs that once crashed a target, `regress-*`) are kept.
    for seed in SEEDS.glob("*/*"):
        if not seed.name.startswith("regress-"):
            seed.unlink()
    with tempfile.TemporaryDirectory(prefix="junction-seeds-") as tmp:
        tmp = pathlib.Path(tmp)
        flv = rtmp(tmp)
        media(flv, tmp)
        sip(tmp)
        webrtc(tmp)
        moq(tmp)
        auth()
        turn()
    for target in sorted(SEEDS.iterdir()):
        if target.is_dir():
            sizes = [p.stat().st_size for p in target.iterdir()]
            print(f"{target.name}: {len(sizes)} seeds, {sum(sizes)} bytes")


if __name__ == "__main__":
    main()
