//! baresip, Debian's softphone, driven headless: it calls a SIP URI from an account line,
//! plays a WAV file into the call (its `aufile` source), and its `sndfile` filter writes what it
//! decoded to a WAV file we read back. Speaks SIP over TLS and SDES-SRTP (its `srtp` module),
//! which sipp from Debian cannot.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A self-signed certificate for 127.0.0.1 (the phone trusts exactly it): PEM certificate and
/// key paths in `dir`.
pub fn loopback_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let (cert, key) = (dir.join("sip-cert.pem"), dir.join("sip-key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

/// A 16-bit mono WAV of a sine tone, for the phone to play.
pub fn tone_wav(dir: &Path, freq: f64, rate: u32, seconds: f64) -> PathBuf {
    let path = dir.join(format!("tone_{freq}_{rate}.wav"));
    let samples: Vec<i16> = (0..(f64::from(rate) * seconds) as usize)
        .map(|n| ((n as f64 * freq * std::f64::consts::TAU / f64::from(rate)).sin() * 8000.0) as i16)
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + samples.len() * 2);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for sample in samples {
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    std::fs::write(&path, wav).expect("write wav");
    path
}

/// The samples of a 16-bit PCM WAV file (its `data` chunk).
fn wav_samples(bytes: &[u8]) -> Vec<i16> {
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        if id == b"data" {
            return body.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        }
        at += 8 + len + (len & 1);
    }
    Vec::new()
}

pub struct Baresip {
    child: Child,
    dir: PathBuf,
}

/// How the phone calls.
pub struct Call<'a> {
    /// The account's address of record, e.g. `<sip:alice@127.0.0.1;transport=tls>`, with its
    /// parameters (`;mediaenc=srtp-mand`).
    pub account: &'a str,
    pub dial: &'a str,
    pub ca: &'a Path,
    pub play: &'a Path,
    /// The phone quits (hanging up) after this.
    pub seconds: u32,
}

impl Baresip {
    /// Starts baresip with a configuration of its own in `dir/name`, dialling at once.
    pub fn call(dir: &Path, name: &str, call: Call<'_>) -> Baresip {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).expect("baresip dir");
        let config = format!(
            "module_path /usr/lib/baresip/modules\n\
             poll_method epoll\n\
             sip_listen 127.0.0.1:{port}\n\
             sip_cafile {ca}\n\
             audio_player alsa,null\n\
             audio_alert alsa,null\n\
             audio_source aufile,{play}\n\
             snd_path {home}\n\
             rtcp_mux no\n\
             module g711.so\n\
             module sndfile.so\n\
             module alsa.so\n\
             module aufile.so\n\
             module srtp.so\n\
             module_tmp account.so\n\
             module_app menu.so\n",
            port = super::sip::free_port(),
            ca = call.ca.display(),
            play = call.play.display(),
            home = home.display(),
        );
        std::fs::write(home.join("config"), config).expect("baresip config");
        std::fs::write(home.join("accounts"), format!("{}\n", call.account)).expect("baresip accounts");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&home)
            .args(["-e", &format!("/dial {}", call.dial), "-t", &call.seconds.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(home.join("baresip.log")).expect("log")))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("baresip (apt-get install baresip-core)");
        Baresip { child, dir: home }
    }

    /// Waits for the phone to quit; returns its log.
    pub async fn finish(mut self) -> Finished {
        let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        let log = std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default();
        Finished { log, dir: self.dir }
    }
}

pub struct Finished {
    pub log: String,
    dir: PathBuf,
}

impl Finished {
    /// What the phone decoded from the call (8 kHz for G.711).
    pub fn heard(&self) -> Vec<i16> {
        let dump = std::fs::read_dir(&self.dir)
            .expect("baresip dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("baresip wrote no decoded audio; its log:\n{}", self.log));
        wav_samples(&std::fs::read(dump).expect("read dump"))
    }
}
