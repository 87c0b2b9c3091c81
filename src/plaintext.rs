//! The decrypted side of the slow path, written on the control thread: the
//! NSS key log (both TLS sessions of every decrypted flow; secrets, so the
//! file is made readable by its owner only) and the decrypted-traffic pcap.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

/// A buffered file the pcap writer writes into and the control thread can
/// still flush (the writer owns what it writes to, and has no flush of its own).
#[derive(Clone)]
struct SharedFile(Arc<Mutex<BufWriter<File>>>);

impl Write for SharedFile {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.flush()
    }
}

/// Where the slow path's key log lines and decrypted frames go.
#[derive(Default)]
pub struct PlaintextOut {
    keylog: Option<BufWriter<File>>,
    pcap: Option<(PcapWriter<SharedFile>, SharedFile)>,
    paths: (Option<PathBuf>, Option<PathBuf>),
}

impl PlaintextOut {
    /// Opens the files asked for: the key log is appended to, the pcap made anew.
    pub fn open(keylog_path: Option<&Path>, pcap_path: Option<&Path>) -> Result<PlaintextOut, String> {
        let (keylog, pcap) = (keylog_path, pcap_path);
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
                let file = SharedFile(Arc::new(Mutex::new(BufWriter::new(f))));
                let w = PcapWriter::with_header(file.clone(), header)
                    .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
                Some((w, file))
            }
            None => None,
        };
        let paths = (keylog_path.map(Path::to_path_buf), pcap_path.map(Path::to_path_buf));
        Ok(PlaintextOut { keylog, pcap, paths })
    }

    /// Closes both files and opens their paths again (after logrotate moved
    /// them): the key log is appended to, the pcap begins anew with its own header.
    pub fn reopen(&mut self) -> Result<(), String> {
        self.flush().map_err(|e| e.to_string())?;
        let (k, p) = self.paths.clone();
        *self = PlaintextOut::open(k.as_deref(), p.as_deref())?;
        Ok(())
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
        if let Some((w, _)) = &mut self.pcap {
            for (ns, data) in frames {
                let packet = PcapPacket::new(Duration::from_nanos(*ns), data.len() as u32, data);
                w.write_packet(&packet).map_err(|e| std::io::Error::other(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Flushes both files (key log lines are useful to a decoder as soon as
    /// they exist; a log rotation finds whole files).
    pub fn flush(&mut self) -> std::io::Result<()> {
        if let Some(f) = &mut self.keylog {
            f.flush()?;
        }
        match &mut self.pcap {
            Some((_, file)) => file.flush(),
            None => Ok(()),
        }
    }

    /// Flushes and closes both files.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.flush()
    }
}
