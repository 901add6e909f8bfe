//! What the SIP tests need around sipp: running it on a scenario (from `tests/e2e/sip/`, with
//! `{placeholders}` filled in), writing a pcap of G.711 RTP carrying a tone for it to play,
//! recording the RTP Junction sends to a phone, and finding tones in the recording.
//!
//! A "phone" in these tests is sipp (signalling, and RTP played from a pcap) plus a UDP socket
//! of the test that the phone's SDP names as its RTP address: Junction sends the phone's audio
//! there, and the test decodes it (with `support::audio`; G.711 both ways is junction-audio's).

use std::net::UdpSocket as StdUdpSocket;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use std::sync::Mutex;

use tokio::net::UdpSocket;

pub use super::audio::G711;
use super::audio::{G711_RATE, dominant_frequency, g711_to_pcm};
use tokio::process::{Child, Command};

pub const SCENARIO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/e2e/sip");
pub const SIPP_PCAPS: &str = "/usr/share/sip-tester";

/// A free block of four UDP ports on loopback, starting at the returned even port: sipp binds
/// its media port (`-mp`), the next for RTCP, and the two after for video RTP/RTCP. Blocks are
/// handed out from one process-wide cursor, so tests running at once never get the same block
/// (a port that is merely free when checked could otherwise go to two phones).
pub fn free_port_pair() -> u16 {
    static CURSOR: AtomicU16 = AtomicU16::new(0);
    const FIRST: u16 = 42_000;
    const BLOCKS: u16 = 1_500;
    for _ in 0..BLOCKS {
        let block = CURSOR.fetch_add(1, Ordering::Relaxed) % BLOCKS;
        let port = FIRST + 4 * block;
        if (port..port + 4).all(|p| StdUdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return port;
        }
    }
    panic!("no free UDP port block");
}

/// A free UDP (and TCP) port on loopback.
pub fn free_port() -> u16 {
    let socket = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").port()
}

/// Reads a scenario of `tests/e2e/sip/` and fills in its `{name}` placeholders.
pub fn scenario(name: &str, values: &[(&str, String)]) -> String {
    let path = Path::new(SCENARIO_DIR).join(name);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (key, value) in values {
        text = text.replace(&format!("{{{key}}}"), value);
    }
    assert!(!text.contains("{rtp_port}") && !text.contains("{caller}"), "unfilled placeholder in {name}");
    text
}

/// `<exec play_pcap_audio>` actions, one per pcap, with pauses between them (none after the
/// last, so a following `<recv>` is already waiting when the far end reacts).
pub fn play(pcaps: &[PathBuf], gap_ms: u64) -> String {
    let actions: Vec<String> = pcaps
        .iter()
        .map(|p| format!("<nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n", p.display()))
        .collect();
    actions.join(&format!("<pause milliseconds=\"{gap_ms}\"/>\n"))
}

/// One sipp process.
pub struct Sipp {
    child: Child,
    pub name: String,
    dir: PathBuf,
}

impl Sipp {
    /// Starts sipp on `scenario_xml` (written to `dir`); `args` are the rest of its command line.
    pub fn start(dir: &Path, name: &str, scenario_xml: &str, args: &[String]) -> Sipp {
        let file = dir.join(format!("{name}.xml"));
        std::fs::write(&file, scenario_xml).expect("write scenario");
        let mut command = Command::new("sipp");
        command
            .arg("-sf")
            .arg(&file)
            .args(["-m", "1", "-nostdin", "-timeout", "40s", "-timeout_error", "-trace_err", "-trace_msg"])
            .arg("-error_file")
            .arg(dir.join(format!("{name}_errors.log")))
            .arg("-message_file")
            .arg(dir.join(format!("{name}_messages.log")))
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().expect("sipp (apt-get install sip-tester)");
        Sipp { child, name: name.to_owned(), dir: dir.to_path_buf() }
    }

    /// Waits for sipp to finish; returns whether every call of its scenario succeeded.
    pub async fn finish(mut self) -> SippResult {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = err.read_to_string(&mut stderr).await;
        }
        let read = |suffix: &str| {
            std::fs::read_to_string(self.dir.join(format!("{}_{suffix}.log", self.name))).unwrap_or_default()
        };
        let ok = matches!(status, Ok(Ok(s)) if s.success());
        SippResult { ok, errors: format!("{stderr}{}", read("errors")), messages: read("messages") }
    }
}

pub struct SippResult {
    pub ok: bool,
    pub errors: String,
    pub messages: String,
}

impl SippResult {
    /// Panics with sipp's own account of what went wrong unless its calls succeeded.
    pub fn assert_ok(&self, what: &str) {
        assert!(self.ok, "sipp ({what}) failed:\n{}\n--- messages ---\n{}", self.errors, tail(&self.messages, 6000));
    }
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
    &text[start..]
}

/// Writes a pcap of `seconds` of a `freq` Hz tone as PCMU RTP (payload type 0, 20 ms per
/// packet), Ethernet/IPv4/UDP framed the way sipp's `play_pcap_audio` reads them.
pub fn write_tone_pcap(path: &Path, freq: f64, seconds: f64) {
    write_g711_tone_pcap(path, freq, seconds, G711::MuLaw);
}

/// [`write_tone_pcap`] in either law: PCMU on payload type 0, PCMA on 8.
pub fn write_g711_tone_pcap(path: &Path, freq: f64, seconds: f64, law: G711) {
    let payload_type = if law == G711::MuLaw { 0 } else { 8 };
    let payloads = (0..(seconds * 50.0) as usize)
        .map(|n| {
            (0..160)
                .map(|i| {
                    let t = (n * 160 + i) as f64 / 8000.0;
                    law.encode((0.3 * (std::f64::consts::TAU * freq * t).sin() * 32767.0) as i16)
                })
                .collect()
        })
        .collect();
    write_rtp_pcap(path, payload_type, 160, payloads);
}

/// A pcap of `seconds` of a `freq` Hz tone as Opus RTP (libopus, mono, 20 ms packets) on
/// `payload_type`.
pub fn write_opus_tone_pcap(path: &Path, freq: f64, seconds: f64, payload_type: u8) {
    let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("libopus");
    let payloads = (0..(seconds * 50.0) as usize)
        .map(|n| {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    let t = (n * 960 + i) as f64 / 48_000.0;
                    (0.3 * (std::f64::consts::TAU * freq * t).sin() * 32767.0) as i16
                })
                .collect();
            encoder.encode_vec(&pcm, 4_000).expect("opus encode")
        })
        .collect();
    write_rtp_pcap(path, payload_type, 960, payloads);
}

/// Writes one RTP packet per payload, 20 ms apart, `timestamp_step` apart on the RTP clock.
fn write_rtp_pcap(path: &Path, payload_type: u8, timestamp_step: usize, payloads: Vec<Vec<u8>>) {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, zone, sigfigs, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let ssrc = 0x1234_5678u32;
    for (n, payload) in payloads.into_iter().enumerate() {
        // Version 2; the marker on the first packet (start of the talkspurt).
        let mut rtp = vec![0x80, payload_type | if n == 0 { 0x80 } else { 0x00 }];
        rtp.extend_from_slice(&(n as u16).to_be_bytes());
        rtp.extend_from_slice(&((n * timestamp_step) as u32).to_be_bytes());
        rtp.extend_from_slice(&ssrc.to_be_bytes());
        rtp.extend_from_slice(&payload);
        let udp_len = (8 + rtp.len()) as u16;
        let ip_len = 20 + udp_len;
        let mut frame = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00];
        frame.extend_from_slice(&[0x45, 0x00]);
        frame.extend_from_slice(&ip_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0x00, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6002u16.to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let micros = n as u64 * 20_000;
        out.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).expect("write pcap");
}

/// One RTP packet as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload: Vec<u8>,
    pub at: tokio::time::Instant,
}

/// A phone's RTP receiver: records every packet Junction sends to it.
pub struct RtpRecorder {
    pub port: u16,
    packets: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RtpRecorder {
    pub async fn start() -> RtpRecorder {
        let port = free_port_pair();
        let socket = UdpSocket::bind(("127.0.0.1", port)).await.expect("bind recorder");
        let packets: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = packets.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((len, _)) = socket.recv_from(&mut buf).await {
                let data = &buf[..len];
                if len < 12 || data[0] >> 6 != 2 {
                    continue;
                }
                let csrc = usize::from(data[0] & 0x0f) * 4;
                let start = 12 + csrc;
                if start > len {
                    continue;
                }
                sink.lock().unwrap().push(Received {
                    payload_type: data[1] & 0x7f,
                    sequence: u16::from_be_bytes([data[2], data[3]]),
                    timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
                    payload: data[start..].to_vec(),
                    at: tokio::time::Instant::now(),
                });
            }
        });
        RtpRecorder { port, packets, task }
    }

    pub fn packets(&self) -> Vec<Received> {
        self.packets.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.packets.lock().unwrap().len()
    }

    /// Decoded 8 kHz PCM of the PCMU packets received after the first `skip` ones.
    pub fn pcm(&self, skip: usize) -> Vec<i16> {
        self.pcm_of(G711::MuLaw, skip)
    }

    /// The Opus payloads of `payload_type` received after the first `skip` packets of it.
    pub fn opus_payloads(&self, payload_type: u8, skip: usize) -> Vec<Vec<u8>> {
        self.packets().into_iter().filter(|p| p.payload_type == payload_type).skip(skip).map(|p| p.payload).collect()
    }

    /// Decoded 8 kHz PCM of the packets in `law` (PCMU on payload type 0, PCMA on 8) received
    /// after the first `skip` ones.
    pub fn pcm_of(&self, law: G711, skip: usize) -> Vec<i16> {
        let payload_type = if law == G711::MuLaw { 0 } else { 8 };
        self.packets()
            .iter()
            .filter(|p| p.payload_type == payload_type)
            .skip(skip)
            .flat_map(|p| g711_to_pcm(&p.payload, law))
            .collect()
    }
}

impl Drop for RtpRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Power of `freq` in 16-bit `samples` (Goertzel), normalised to full scale and block length:
/// how much of one tone there is, to tell a voice that is present from one that is not.
pub fn tone_power(samples: &[i16], freq: f64, rate: f64) -> f64 {
    let coeff = 2.0 * (std::f64::consts::TAU * freq / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power / (samples.len().max(1) as f64).powi(2)
}

/// The strongest frequency of 8 kHz mono PCM, or 0 for silence.
pub fn dominant_hz(samples: &[i16]) -> f64 {
    dominant_frequency(samples, 1, G711_RATE).unwrap_or(0.0)
}

/// RMS level of a block, full scale = 1.
pub fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|s| (f64::from(*s) / 32768.0).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_tells_a_present_tone_from_an_absent_one() {
        let samples: Vec<i16> =
            (0..8000).map(|n| (10_000.0 * (std::f64::consts::TAU * 440.0 * n as f64 / 8000.0).sin()) as i16).collect();
        assert!(tone_power(&samples, 440.0, 8000.0) > 1000.0 * tone_power(&samples, 1000.0, 8000.0));
        assert!((dominant_hz(&samples) - 440.0).abs() < 1.0);
    }
}
