//! The decrypted side of the slow path, written on the control thread: the
//! NSS key log (both TLS sessions of every decrypted flow; secrets, so the
//! file is made readable by its owner only) and the decrypted-traffic pcap.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

/// Where the slow path's key log lines and decrypted frames go.
#[derive(Default)]
pub struct PlaintextOut {
    keylog: Option<BufWriter<File>>,
    pcap: Option<PcapWriter<BufWriter<File>>>,
}

impl PlaintextOut {
    /// Opens the files asked for: the key log is appended to, the pcap made anew.
    pub fn open(keylog: Option<&Path>, pcap: Option<&Path>) -> Result<PlaintextOut, String> {
        let keylog = match keylog {
            Some(p) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(p)
                    .map_err(|e| format!("cannot open the key log {}: {e}", p.display()))?;
                Some(BufWriter::new(f))
            }
            None => None,
        };
        let pcap = match pcap {
            Some(p) => {
                let f = File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
                let header = PcapHeader {
                    datalink: DataLink::ETHERNET,
                    ts_resolution: TsResolution::NanoSecond,
                    ..Default::default()
                };
                Some(
                    PcapWriter::with_header(BufWriter::new(f), header)
                        .map_err(|e| format!("cannot write {}: {e}", p.display()))?,
                )
            }
            None => None,
        };
        Ok(PlaintextOut { keylog, pcap })
    }

    /// Appends key log lines.
    pub fn keylog(&mut self, lines: &[String]) -> std::io::Result<()> {
        if let Some(f) = &mut self.keylog {
            for l in lines {
                f.write_all(l.as_bytes())?;
                f.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// Appends decrypted frames.
    pub fn frames(&mut self, frames: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
        if let Some(w) = &mut self.pcap {
            for (ns, data) in frames {
                let packet = PcapPacket::new(Duration::from_nanos(*ns), data.len() as u32, data);
                w.write_packet(&packet).map_err(|e| std::io::Error::other(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Flushes the key log (lines are useful to a decoder as soon as they exist).
    pub fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.keylog {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    /// Flushes and closes both files.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.flush()?;
        match self.pcap.take() {
            Some(w) => w.into_writer().flush(),
            None => Ok(()),
        }
    }
}
