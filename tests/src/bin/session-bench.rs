//! New TLS sessions per second through the decrypting path, beside the same
//! load through tlsgate with do-not-decrypt, through a plain Linux bridge
//! (direct), and through sslsplit, the reference interception proxy; same
//! machine, same run, same load generator, same server. Each configuration
//! gets a fresh set of network namespaces; the configurations alternate over
//! the rounds and the median is reported.
//!
//! `session-bench run` drives it all (as root), and measures decrypt-resign a
//! second time with a cold forged-certificate cache: 1,000 server
//! certificates (half RSA-2048, half ECDSA P-256), each session to the next
//! one, tlsgate's cache one certificate long. `session-bench latency`
//! measures time to first byte and handshake time of sessions opened one at a
//! time with a pause between them (a quiet client), direct, through
//! do-not-decrypt and decrypt-resign (warm cache), with `[workers] idle` at
//! its default back-off and at `poll`; by default tlsgate's lcores get CPU 1
//! and the client and server CPU 0, as an appliance with cores of its own
//! between two hosts (`--cpus shared` lets them all share both). `session-bench
//! bulk` moves 256 MiB over one session and over 8 at once through the same
//! paths. `serve`, `load`, `probe` and `fetch` are the server, the load
//! generator, the latency client and the bulk client it starts inside the
//! namespaces: rustls on both ends, one session per connection (full
//! handshake, an HTTP/1.0 request, a 1 KiB answer or a bulk body, close).

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use tlsgate_perf::handshake::Pki;
use tlsgate_tests::netns::{Reaper, Topology};
use tlsgate_tests::{run_with_limit, signal, text, tlsgate, wait_with_limit, Scratch};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into())
    };
    match args.first().map(String::as_str) {
        Some("serve") => serve(&arg("--bind", "0.0.0.0:4433"), Path::new(&arg("--dir", "."))),
        Some("load") => load(
            &arg("--connect", "127.0.0.1:4433"),
            &arg("--sni", "bench.test"),
            Path::new(&arg("--dir", ".")),
            arg("--threads", "16").parse().unwrap_or(16),
            arg("--seconds", "5").parse().unwrap_or(5.0),
        ),
        Some("probe") => probe(
            &arg("--connect", "127.0.0.1:4433"),
            &arg("--sni", "bench.test"),
            Path::new(&arg("--dir", ".")),
            arg("--sessions", "200").parse().unwrap_or(200),
            arg("--gap-ms", "10").parse().unwrap_or(10),
        ),
        Some("run") => run(
            arg("--seconds", "5").parse().unwrap_or(5.0),
            arg("--rounds", "3").parse().unwrap_or(3),
            &arg("--only", ""),
            arg("--clients", "16").parse().unwrap_or(16),
        ),
        Some("fetch") => fetch(
            &arg("--connect", "127.0.0.1:4433"),
            Path::new(&arg("--dir", ".")),
            arg("--bytes", "1048576").parse().unwrap_or(1 << 20),
            arg("--parallel", "1").parse().unwrap_or(1),
        ),
        Some("bulk") => bulk(
            arg("--mib", "256").parse().unwrap_or(256),
            arg("--rounds", "3").parse().unwrap_or(3),
            &arg("--only", ""),
            &arg("--parallel", "1,8").split(',').filter_map(|v| v.parse().ok()).collect::<Vec<usize>>(),
            if arg("--cpus", "shared") == "split" { Cpus::Split } else { Cpus::Shared },
        ),
        Some("latency") => latency(
            arg("--sessions", "200").parse().unwrap_or(200),
            arg("--rounds", "3").parse().unwrap_or(3),
            arg("--gap-ms", "10").parse().unwrap_or(10),
            if arg("--cpus", "split") == "shared" { Cpus::Shared } else { Cpus::Split },
            &arg("--only", ""),
        ),
        _ => {
            eprintln!("usage: session-bench run [--seconds S] [--rounds N] | bulk [--mib N] [--rounds N] [--only SETUP] [--parallel 1,8] [--cpus shared|split] | latency [--sessions N] [--rounds N] [--gap-ms MS] [--cpus split|shared] [--only SETUP] | serve ... | load ... | probe ...");
            std::process::exit(2);
        }
    }
}

/// The server's certificates: bench.test's, and s0.bench.test to s999.bench.test's.
#[derive(Debug)]
struct BySni {
    bench: Arc<CertifiedKey>,
    many: Vec<Arc<CertifiedKey>>,
}

impl rustls::server::ResolvesServerCert for BySni {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let many = hello
            .server_name()
            .and_then(|n| n.strip_suffix(".bench.test")?.strip_prefix('s')?.parse::<usize>().ok())
            .and_then(|i| self.many.get(i));
        Some(many.unwrap_or(&self.bench).clone())
    }
}

/// The server: one thread per connection, each a full TLS handshake and a 1 KiB answer.
fn serve(bind: &str, dir: &Path) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webca = CertificateDer::from_pem_file(dir.join("webca.pem")).expect("webca.pem");
    let certified = |cert: CertificateDer<'static>, key: PrivateKeyDer<'static>| {
        let key = provider.key_provider.load_private_key(key).expect("a usable key");
        Arc::new(CertifiedKey::new(vec![cert, webca.clone()], key))
    };
    let bench = certified(
        CertificateDer::from_pem_file(dir.join("server.pem")).expect("server.pem"),
        PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key"),
    );
    let certs = CertificateDer::pem_file_iter(dir.join("many.pem")).expect("many.pem").flatten();
    let keys = PrivateKeyDer::pem_file_iter(dir.join("many.key")).expect("many.key").flatten();
    let many = certs.zip(keys).map(|(c, k)| certified(c, k)).collect();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { bench, many }));
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind(bind).expect("bind");
    for conn in listener.incoming().flatten() {
        let cfg = cfg.clone();
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            // Nagle against delayed ACKs would make every session wait 40 ms.
            let _ = conn.set_nodelay(true);
            let mut sock = conn;
            let Ok(mut tls) = rustls::ServerConnection::new(cfg) else { return };
            let mut s = rustls::Stream::new(&mut tls, &mut sock);
            let mut req = [0u8; 512];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut req) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&req[..n]),
                }
            }
            // `GET /bulk/N`: N bytes; anything else: 1 KiB.
            let bulk = std::str::from_utf8(&got)
                .ok()
                .and_then(|r| r.strip_prefix("GET /bulk/")?.split(' ').next()?.parse::<u64>().ok());
            let len = bulk.unwrap_or(1024);
            let _ = s.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes());
            let chunk = [b'x'; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if s.write_all(&chunk[..n]).is_err() {
                    return;
                }
                left -= n as u64;
            }
            tls.send_close_notify();
            let _ = tls.complete_io(&mut sock);
        });
    }
}

/// The load: `threads` clients, each opening sessions one after another for
/// `seconds`; prints `sessions failures seconds` (sessions that ended inside
/// the window).
fn load(connect: &str, sni: &str, dir: &Path, threads: usize, seconds: f64) {
    let cfg = client_config(dir);
    let addr: SocketAddr = connect.parse().expect("address:port");
    let names = server_names(sni);
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cfg, names, next) = (cfg.clone(), names.clone(), next.clone());
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let name = &names[next.fetch_add(1, Ordering::Relaxed) as usize % names.len()];
                    let result = one_session(&cfg, name, addr).map(|_| ());
                    // Only sessions that ended inside the window count, either way.
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if result.is_ok() {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let window = start.elapsed().as_secs_f64();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    for h in handles {
        let _ = h.join();
    }
    println!("{ok} {failed} {window:.3}");
}

/// A client trusting the web root and the inspection CA, never resuming.
fn client_config(dir: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for f in ["webca.pem", "corpca.pem"] {
        for c in CertificateDer::pem_file_iter(dir.join(f)).expect("CA file").flatten() {
            roots.add(c).expect("a CA certificate");
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every session a full handshake: nothing is resumed.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// The SNIs a load or probe cycles through: `many` is s0.bench.test to s999.bench.test.
fn server_names(sni: &str) -> Arc<Vec<ServerName<'static>>> {
    let names: Vec<String> =
        if sni == "many" { (0..MANY).map(|i| format!("s{i}.bench.test")).collect() } else { vec![sni.to_owned()] };
    Arc::new(names.into_iter().map(|n| ServerName::try_from(n).expect("a DNS name")).collect())
}

/// Server certificates of the cold-cache measurement.
const MANY: usize = 1000;

/// Times of one session, from the start of its TCP connect.
struct Timings {
    handshake: Duration,
    first_byte: Duration,
}

fn one_session(
    cfg: &Arc<rustls::ClientConfig>,
    name: &ServerName<'static>,
    addr: SocketAddr,
) -> Result<Timings, String> {
    let started = Instant::now();
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut tls = rustls::ClientConnection::new(cfg.clone(), name.clone()).map_err(|e| e.to_string())?;
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let handshake = started.elapsed();
    let mut s = rustls::Stream::new(&mut tls, &mut sock);
    s.write_all(b"GET / HTTP/1.0\r\nHost: bench.test\r\n\r\n").map_err(|e| e.to_string())?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).map_err(|e| e.to_string())?;
    let first_byte = started.elapsed();
    let mut body = first.to_vec();
    let mut r = BufReader::new(s);
    match r.read_to_end(&mut body) {
        Ok(_) => {}
        // A peer that closes without close_notify after the whole answer is fine for counting.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    if body.len() < 1024 {
        return Err(format!("short answer: {} bytes", body.len()));
    }
    Ok(Timings { handshake, first_byte })
}

/// The latency client: `sessions` sessions one after another, `gap_ms`
/// apart; prints each one's handshake time and time to first byte, in us.
fn probe(connect: &str, sni: &str, dir: &Path, sessions: usize, gap_ms: u64) {
    let cfg = client_config(dir);
    let addr: SocketAddr = connect.parse().expect("address:port");
    let names = server_names(sni);
    for i in 0..sessions {
        match one_session(&cfg, &names[i % names.len()], addr) {
            Ok(t) => println!("{} {}", t.handshake.as_micros(), t.first_byte.as_micros()),
            Err(e) => eprintln!("session {i}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(gap_ms));
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Direct,
    DoNotDecrypt,
    Resign,
    /// Decrypt-resign, sessions to 1,000 server certificates in turn, every one already forged.
    ResignWarm,
    /// The same, tlsgate's forged cache one long: every session forges.
    ResignCold,
    Sslsplit,
    /// As DoNotDecrypt, with no slow path (on af_packet the kernel spreads
    /// flows over the slow-path lcores' queues too, and they hand those
    /// packets to the worker: one more hop).
    DoNotDecryptAlone,
    /// As DoNotDecrypt, with `[workers] idle = "poll"` and no slow path.
    /// (Decrypt-resign polling needs a CPU for its worker and one for its
    /// slow-path lcore besides the hosts': more than two.)
    DoNotDecryptPoll,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct (Linux bridge)",
            Setup::DoNotDecrypt => "tlsgate, do-not-decrypt",
            Setup::Resign => "tlsgate, decrypt-resign",
            Setup::ResignWarm => "tlsgate, decrypt-resign, 1000 warm",
            Setup::ResignCold => "tlsgate, decrypt-resign, 1000 cold",
            Setup::Sslsplit => "sslsplit 0.5.5",
            Setup::DoNotDecryptAlone => "tlsgate, do-not-decrypt, no slow path",
            Setup::DoNotDecryptPoll => "tlsgate, do-not-decrypt, poll",
        }
    }

    /// The SNI its clients ask for.
    fn sni(self) -> &'static str {
        if matches!(self, Setup::ResignWarm | Setup::ResignCold) {
            "many"
        } else {
            "bench.test"
        }
    }
}

/// Where the processes of a measurement run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cpus {
    /// Anywhere: the middle box, the clients and the server share both CPUs.
    Shared,
    /// The middle box's lcores on one CPU, the clients and the server on the
    /// other, as an appliance with cores of its own between two hosts.
    Split,
}

/// The CPU the middle box gets with [`Cpus::Split`]; the hosts get CPU 0.
const APPLIANCE_CPU: usize = 1;

impl Cpus {
    /// A command running `me` in namespace `ns`, on the hosts' CPU when split.
    fn hosts(self, topo: &Topology, ns: &str, me: &Path) -> Command {
        match self {
            Cpus::Shared => topo.exec(ns, me.to_str().unwrap()),
            Cpus::Split => {
                let mut c = topo.exec(ns, "taskset");
                c.args(["-c", "0", me.to_str().unwrap()]);
                c
            }
        }
    }
}

/// The median; NaN for no samples (a setup left out with `--only`).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `only`: one setup by name (direct, do-not-decrypt, decrypt-resign, sslsplit), to profile it alone.
fn run(seconds: f64, rounds: usize, only: &str, clients: usize) {
    let dir = Scratch::new("session-bench");
    make_pki(&dir.0);
    let me = std::env::current_exe().expect("own path");
    let all =
        [Setup::Direct, Setup::DoNotDecrypt, Setup::Resign, Setup::ResignWarm, Setup::ResignCold, Setup::Sslsplit];
    let setups: Vec<Setup> = all.into_iter().filter(|s| only.is_empty() || s.name().contains(only)).collect();
    let rate = |setup: Setup, tag: u8| {
        in_setup(setup, Cpus::Shared, &me, &dir.0, tag, |topo, connect, _| {
            if setup == Setup::ResignWarm {
                // Every one of the 1,000 certificates forged before the window opens.
                let o = load_cmd(topo, &me, &dir.0, connect, setup.sni(), clients, 3.0);
                assert!(parse_load(&o).0 >= MANY as u64, "the warm-up pass reached every server: {}", text(&o));
            }
            let o = load_cmd(topo, &me, &dir.0, connect, setup.sni(), clients, seconds);
            let (ok, failed, secs) = parse_load(&o);
            if failed > ok / 100 {
                eprintln!("{}: {failed} sessions failed of {}", setup.name(), ok + failed);
            }
            ok as f64 / secs.max(0.001)
        })
    };
    if setups.len() != all.len() {
        for s in &setups {
            println!("{}: {:.0} sessions/s", s.name(), rate(*s, 40));
        }
        return;
    }
    let mut results: Vec<(Setup, Vec<f64>)> = setups.iter().map(|s| (*s, Vec::new())).collect();
    for round in 0..rounds {
        for (i, setup) in setups.iter().enumerate() {
            let r = rate(*setup, 40 + (round * setups.len() + i) as u8);
            eprintln!("round {} {}: {:.0} sessions/s", round + 1, setup.name(), r);
            results[i].1.push(r);
        }
    }
    let direct = median(&results[0].1);
    let dnd = median(&results[1].1);
    let warm = median(&results[3].1);
    println!(
        "new TLS sessions per second ({rounds} rounds of {seconds} s, median; {clients} clients, one full handshake each):"
    );
    println!("{:<32} {:>10} {:>10} {:>18} {:>10}", "path", "sessions/s", "vs direct", "vs do-not-decrypt", "vs warm");
    for (setup, v) in &results {
        let m = median(v);
        let vs_warm = if matches!(setup, Setup::ResignWarm | Setup::ResignCold) {
            format!("{:.0}%", 100.0 * m / warm)
        } else {
            String::new()
        };
        println!(
            "{:<32} {:>10.0} {:>9.0}% {:>17.0}% {:>10}",
            setup.name(),
            m,
            100.0 * m / direct,
            100.0 * m / dnd,
            vs_warm
        );
    }
}

/// Handshake time and time to first byte, p50/p90/p99 over every round's
/// sessions (the first five of each round left out: they warm ARP and the
/// forged cache). `only`: the setups whose name holds it (to profile one).
fn latency(sessions: usize, rounds: usize, gap_ms: u64, cpus: Cpus, only: &str) {
    let dir = Scratch::new("session-bench");
    make_pki(&dir.0);
    let me = std::env::current_exe().expect("own path");
    let all = [Setup::Direct, Setup::DoNotDecrypt, Setup::Resign, Setup::DoNotDecryptAlone, Setup::DoNotDecryptPoll];
    let setups: Vec<Setup> = all.into_iter().filter(|s| s.name().contains(only)).collect();
    let new_hist = || hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut results: Vec<(Setup, hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>)> =
        setups.iter().map(|s| (*s, new_hist(), new_hist())).collect();
    for round in 0..rounds {
        for (i, setup) in setups.iter().enumerate() {
            let tag = 40 + (round * setups.len() + i) as u8;
            let out = in_setup(*setup, cpus, &me, &dir.0, tag, |topo, connect, _| {
                run_with_limit(
                    cpus.hosts(topo, &topo.cli, &me)
                        .args(["probe", "--connect", connect, "--sni", setup.sni(), "--dir"])
                        .arg(&dir.0)
                        .args(["--sessions", &(sessions + 5).to_string(), "--gap-ms", &gap_ms.to_string()]),
                    Duration::from_secs(60 + (sessions as u64) * (gap_ms + 100) / 1000),
                )
            });
            let (_, hs, ttfb) = &mut results[i];
            let mut n = 0;
            for line in String::from_utf8_lossy(&out.stdout).lines().skip(5) {
                let mut it = line.split_whitespace().filter_map(|v| v.parse::<u64>().ok());
                if let (Some(h), Some(t)) = (it.next(), it.next()) {
                    let _ = hs.record(h.max(1));
                    let _ = ttfb.record(t.max(1));
                    n += 1;
                }
            }
            eprintln!("round {} {}: {n} sessions", round + 1, setup.name());
        }
    }
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let placed = match cpus {
        Cpus::Split => "tlsgate's lcores on CPU 1, client and server on CPU 0",
        Cpus::Shared => "every process on either CPU",
    };
    println!(
        "latency of new sessions ({rounds} rounds of {sessions} sessions one at a time, {gap_ms} ms apart; {placed}; ms):"
    );
    println!(
        "{:<38} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "path", "hs p50", "hs p90", "hs p99", "ttfb p50", "ttfb p90", "ttfb p99"
    );
    for (setup, hs, ttfb) in &results {
        println!(
            "{:<38} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            setup.name(),
            ms(hs, 0.5),
            ms(hs, 0.9),
            ms(hs, 0.99),
            ms(ttfb, 0.5),
            ms(ttfb, 0.9),
            ms(ttfb, 0.99)
        );
    }
    if setups.len() != all.len() {
        return;
    }
    let p50 = |i: usize| ms(&results[i].2, 0.5);
    println!(
        "ttfb p50 added: do-not-decrypt over direct {:+.2} ms, decrypt-resign over do-not-decrypt {:+.2} ms; do-not-decrypt without a slow path over direct {:+.2} ms, polling {:+.2} ms",
        p50(1) - p50(0),
        p50(2) - p50(1),
        p50(3) - p50(0),
        p50(4) - p50(0)
    );
}

/// Runs `body` with `setup` standing: fresh namespaces, its middle box, the
/// server, and one session through (bounded); `body` gets the topology and
/// the address to connect to. Everything is torn down after.
fn in_setup<T>(
    setup: Setup,
    cpus: Cpus,
    me: &Path,
    dir: &Path,
    tag: u8,
    body: impl FnOnce(&Topology, &str, Option<u32>) -> T,
) -> T {
    let topo = Topology::new(tag);
    let mut middle: Option<Reaper> = None;
    let mut connect = format!("{}:4433", topo.srv_ip);
    match setup {
        Setup::Direct => {
            let sh = |args: &[&str]| {
                let o = run_with_limit(Command::new("ip").args(["-n", &topo.mid]).args(args), Duration::from_secs(5));
                assert!(o.status.success(), "{args:?}: {}", text(&o));
            };
            sh(&["link", "add", "br0", "type", "bridge"]);
            sh(&["link", "set", &topo.mid_cli_if, "master", "br0"]);
            sh(&["link", "set", &topo.mid_srv_if, "master", "br0"]);
            sh(&["link", "set", "br0", "up"]);
        }
        Setup::DoNotDecrypt
        | Setup::Resign
        | Setup::ResignWarm
        | Setup::ResignCold
        | Setup::DoNotDecryptAlone
        | Setup::DoNotDecryptPoll => {
            let action = if matches!(setup, Setup::Resign | Setup::ResignWarm | Setup::ResignCold) {
                "action = \"decrypt-resign\"\nca = \"corp\""
            } else {
                "action = \"do-not-decrypt\""
            };
            let policy = dir.join(format!("policy-{tag}.toml"));
            std::fs::write(
                &policy,
                format!(
                    "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[trust]\nca_files = [\"webca.pem\"]\n\n\
                     [[ca]]\nname = \"corp\"\ncert = \"corpca.pem\"\nkey = \"corpca.key\"\n\n\
                     [[rule]]\nname = \"bench\"\n{action}\nsni = [\"bench.test\", \"*.bench.test\"]\n"
                ),
            )
            .unwrap();
            // Do-not-decrypt polling runs without a slow path: a polling lcore
            // needs a CPU of its own, and the appliance has one here.
            let slow = usize::from(!matches!(setup, Setup::DoNotDecryptPoll | Setup::DoNotDecryptAlone));
            let mut settings = topo.settings_with_slow_path(1, slow);
            if setup == Setup::DoNotDecryptPoll {
                settings = settings.replace("[workers]\n", "[workers]\nidle = \"poll\"\n");
            }
            if setup == Setup::ResignCold {
                settings = settings.replace("[slowpath]\n", "[slowpath]\nforged_cache = 1\n");
            }
            if cpus == Cpus::Split {
                // Every lcore (control, worker, slow path) on the appliance's CPU.
                settings = settings.replace(
                    "\"--log-level=warning\",",
                    &format!("\"--log-level=warning\", \"--lcores=(0-2)@{APPLIANCE_CPU}\","),
                );
            }
            let cfg = dir.join(format!("tlsgate-{tag}.toml"));
            std::fs::write(&cfg, format!("policy = \"{}\"\n{settings}", policy.display())).unwrap();
            let counters = dir.join(format!("counters-{tag}.json"));
            middle = Some(start_middle(
                &topo,
                tlsgate().to_str().unwrap(),
                &["run", "--config", cfg.to_str().unwrap(), "--counters-json", counters.to_str().unwrap()],
            ));
        }
        Setup::Sslsplit => {
            // Routed, not bridged: sslsplit terminates the client's connection on
            // an address of the middle and opens its own to the server.
            let sh = |ns: &str, args: &[&str]| {
                let o = run_with_limit(Command::new("ip").args(["-n", ns]).args(args), Duration::from_secs(5));
                assert!(o.status.success(), "{args:?}: {}", text(&o));
            };
            let mid_ip = topo.srv_ip.replace(".2", ".254");
            let up_net = topo.srv_ip.replace("10.77.", "10.78.");
            sh(&topo.mid, &["addr", "add", &format!("{mid_ip}/24"), "dev", &topo.mid_cli_if]);
            sh(&topo.mid, &["addr", "add", &format!("{}/24", up_net.replace(".2", ".254")), "dev", &topo.mid_srv_if]);
            sh(&topo.srv, &["addr", "add", &format!("{up_net}/24"), "dev", "s0"]);
            let (key, cert) = (dir.join("corpca.key"), dir.join("corpca.pem"));
            let args =
                ["-k", key.to_str().unwrap(), "-c", cert.to_str().unwrap(), "ssl", &mid_ip, "8443", &up_net, "4433"];
            middle = Some(match cpus {
                Cpus::Shared => start_middle(&topo, "sslsplit", &args),
                // On the appliance's CPU, as tlsgate's lcores are (its children inherit it).
                Cpus::Split => start_middle(
                    &topo,
                    "taskset",
                    &[&["-c", &APPLIANCE_CPU.to_string(), "sslsplit"][..], &args[..]].concat(),
                ),
            });
            connect = format!("{mid_ip}:8443");
        }
    }
    let server = cpus
        .hosts(&topo, &topo.srv, me)
        .args(["serve", "--bind", "0.0.0.0:4433", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    let _server = Reaper(Some(server));
    // Up when one session gets through (bounded).
    let start = Instant::now();
    loop {
        let o = load_cmd(&topo, me, dir, &connect, "bench.test", 1, 0.3);
        if parse_load(&o).0 > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{setup:?}: no session within 30 s: {}", text(&o));
        std::thread::sleep(Duration::from_millis(300));
    }
    let pid = middle.as_ref().and_then(|r| r.0.as_ref()).map(|c| c.id());
    let result = body(&topo, &connect, pid);
    // Both stop cleanly on SIGTERM. sslsplit forks an unprivileged child that
    // outlives a killed parent, so whatever is left of it is ended by name.
    if let Some(child) = middle.as_mut().and_then(|r| r.0.take()) {
        signal(&child, "TERM");
        let _ = wait_with_limit(child, Duration::from_secs(20));
    }
    if let Ok(json) = std::fs::read(dir.join(format!("counters-{tag}.json"))) {
        eprintln!("{}: {}", setup.name(), losses(&json));
    }
    if setup == Setup::Sslsplit {
        let key = dir.join("corpca.key");
        for sig in ["-TERM", "-KILL"] {
            let _ = run_with_limit(Command::new("pkill").args([sig, "-f"]).arg(&key), Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    result
}

/// What tlsgate lost, from its final counters: packets the driver missed
/// (its rx rings full), packets it dropped by reason, frames the slow path
/// could not send. A benchmark figure means little if packets were lost.
fn losses(json: &[u8]) -> String {
    let c: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mut parts = Vec::new();
    for p in c["ports"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("?");
        parts.push(format!("{name} missed {}", n(&p["driver"]["imissed"])));
        for (reason, count) in p["dropped_by_reason"].as_object().into_iter().flatten() {
            if n(count) > 0 {
                parts.push(format!("{name} dropped {reason} {}", n(count)));
            }
        }
    }
    for (i, l) in c["slow_path"].as_array().into_iter().flatten().enumerate() {
        parts.push(format!("slow path {i} tx_dropped {}", n(&l["tx_dropped"])));
    }
    parts.join(", ")
}

/// The middle box, at a higher priority than the load generator and the
/// server: on a machine of two CPUs shared with them, an appliance that would
/// have cores of its own would otherwise get one thread's fair share among
/// the clients' and servers' dozens. tlsgate and sslsplit get the same.
fn start_middle(topo: &Topology, program: &str, args: &[&str]) -> Reaper {
    let child = topo
        .exec(&topo.mid, "nice")
        .args(["-n", "-10", program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the middle box starts");
    Reaper(Some(child))
}

fn load_cmd(
    topo: &Topology,
    me: &Path,
    dir: &Path,
    connect: &str,
    sni: &str,
    threads: usize,
    seconds: f64,
) -> std::process::Output {
    run_with_limit(
        topo.exec(&topo.cli, me.to_str().unwrap())
            .args(["load", "--connect", connect, "--sni", sni, "--dir"])
            .arg(dir)
            .args(["--threads", &threads.to_string(), "--seconds", &seconds.to_string()]),
        Duration::from_secs_f64(seconds + 30.0),
    )
}

fn parse_load(o: &std::process::Output) -> (u64, u64, f64) {
    let s = String::from_utf8_lossy(&o.stdout);
    let mut it = s.split_whitespace();
    let ok = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let failed = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let secs = it.next().and_then(|v| v.parse().ok()).unwrap_or(1.0);
    (ok, failed, secs)
}

/// The bulk client: `parallel` sessions at once, each fetching `bytes`;
/// prints the bytes received and the seconds from the first connect to the
/// last byte.
fn fetch(connect: &str, dir: &Path, bytes: u64, parallel: usize) {
    let cfg = client_config(dir);
    let addr: SocketAddr = connect.parse().expect("address:port");
    let name = ServerName::try_from("bench.test").expect("a DNS name");
    let start = Instant::now();
    let handles: Vec<_> = (0..parallel)
        .map(|_| {
            let (cfg, name) = (cfg.clone(), name.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
                sock.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
                let mut tls = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
                let mut s = rustls::Stream::new(&mut tls, &mut sock);
                s.write_all(format!("GET /bulk/{bytes} HTTP/1.0\r\nHost: bench.test\r\n\r\n").as_bytes())
                    .map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0u64;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got += n as u64,
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(got)
            })
        })
        .collect();
    let mut total = 0u64;
    for h in handles {
        match h.join() {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => eprintln!("fetch: {e}"),
            Err(_) => eprintln!("fetch: a client thread panicked"),
        }
    }
    println!("{total} {:.4}", start.elapsed().as_secs_f64());
}

/// Bulk transfer: one session and 8 at once, each moving `mib` MiB from the
/// server to the client, direct, through do-not-decrypt, decrypt-resign and
/// sslsplit, alternating over `rounds`; Gbit/s (median), the median and
/// range of each round's ratio to do-not-decrypt's rate in that round, and,
/// for tlsgate, the CPU cycles its process spent per byte moved (all its lcores).
/// `only`: the setups whose name holds it, `parallel`: the session counts
/// (to profile one alone).
fn bulk(mib: u64, rounds: usize, only: &str, parallel: &[usize], cpus: Cpus) {
    let dir = Scratch::new("session-bench");
    make_pki(&dir.0);
    let me = std::env::current_exe().expect("own path");
    let setups: Vec<Setup> = [Setup::Direct, Setup::DoNotDecrypt, Setup::Resign, Setup::Sslsplit]
        .into_iter()
        .filter(|s| s.name().contains(only))
        .collect();
    let bytes = mib << 20;
    let hz = tsc_hz_estimate();
    // (setup, parallel) -> (Gbit/s samples, cycles/byte samples)
    let mut results: Vec<(Setup, usize, Vec<f64>, Vec<f64>)> =
        setups.iter().flat_map(|s| parallel.iter().map(|p| (*s, *p, Vec::new(), Vec::new()))).collect();
    for round in 0..rounds {
        for (i, setup) in setups.iter().enumerate() {
            let tag = 40 + (round * setups.len() + i) as u8;
            // tlsgate's CPU time is its process's; sslsplit's is spread over its children.
            let tlsgate = !matches!(setup, Setup::Direct | Setup::Sslsplit);
            let samples = in_setup(*setup, cpus, &me, &dir.0, tag, |topo, connect, pid| {
                let pid = pid.filter(|_| tlsgate);
                parallel
                    .iter()
                    .map(|&parallel| {
                        let cpu0 = pid.map(process_cpu_seconds);
                        let o = run_with_limit(
                            cpus.hosts(topo, &topo.cli, &me)
                                .args(["fetch", "--connect", connect, "--dir"])
                                .arg(&dir.0)
                                .args(["--bytes", &bytes.to_string(), "--parallel", &parallel.to_string()]),
                            Duration::from_secs(300),
                        );
                        let cpu = pid.map(process_cpu_seconds).zip(cpu0).map(|(b, a)| b - a);
                        let out = String::from_utf8_lossy(&o.stdout);
                        let mut it = out.split_whitespace();
                        let got: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                        let secs: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(1.0);
                        // Each answer's header comes on top of its body.
                        if got < bytes * parallel as u64 {
                            eprintln!(
                                "{} x{parallel}: {got} of {} bytes: {}",
                                setup.name(),
                                bytes * parallel as u64,
                                text(&o)
                            );
                        }
                        let gbps = got as f64 * 8.0 / secs.max(1e-3) / 1e9;
                        let cpb = cpu.map_or(f64::NAN, |c| c * hz / got.max(1) as f64);
                        (parallel, gbps, cpb)
                    })
                    .collect::<Vec<_>>()
            });
            for (parallel, gbps, cpb) in samples {
                eprintln!("round {} {} x{parallel}: {gbps:.2} Gbit/s, {cpb:.2} cycles/byte", round + 1, setup.name());
                let r = results.iter_mut().find(|r| r.0 == *setup && r.1 == parallel).expect("a row per setup");
                r.2.push(gbps);
                r.3.push(cpb);
            }
        }
    }
    // Each round's rate over do-not-decrypt's in the same round (they ran
    // back to back): the machine's drift between rounds cancels out.
    let dnd = |p: usize| results.iter().find(|r| r.0 == Setup::DoNotDecrypt && r.1 == p).map(|r| r.2.clone());
    println!("bulk transfer, {mib} MiB per session ({rounds} rounds, median):");
    println!(
        "{:<32} {:>9} {:>12} {:>18} {:>22} {:>14}",
        "path", "sessions", "Gbit/s", "vs do-not-decrypt", "per-round ratio range", "cycles/byte"
    );
    for (setup, parallel, g, c) in &results {
        let cpb = median(c);
        let ratios: Vec<f64> =
            dnd(*parallel).map(|d| g.iter().zip(&d).map(|(a, b)| 100.0 * a / b).collect()).unwrap_or_default();
        let (lo, hi) = ratios.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &r| (l.min(r), h.max(r)));
        println!(
            "{:<32} {:>9} {:>12.2} {:>17.0}% {:>22} {:>14}",
            setup.name(),
            parallel,
            median(g),
            median(&ratios),
            if ratios.is_empty() { String::new() } else { format!("{lo:.0}%-{hi:.0}%") },
            if cpb.is_nan() { String::new() } else { format!("{cpb:.2}") }
        );
    }
}

/// CPU seconds (user and system) a process has used, from /proc.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counting the state as 0.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    ticks as f64 / 100.0
}

/// The CPU's clock in Hz, as the kernel reports it (for cycles per byte).
fn tsc_hz_estimate() -> f64 {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .map_or(2.0e9, |mhz| mhz * 1e6)
}

/// The web root the policy trusts, the server's certificate for bench.test,
/// and the resigning CA (tlsgate's and sslsplit's).
fn make_pki(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let web = Pki::new("Bench Web Root");
    let leaf = web.issue(&["bench.test"], "Bench", now - 86_400, now + 30 * 86_400);
    let corp = Pki::new("Bench Inspection CA");
    let files: [(&str, String); 5] = [
        ("webca.pem", web.ca_cert_pem()),
        ("server.pem", leaf.cert_pem.clone()),
        ("server.key", leaf.key_pem.clone()),
        ("corpca.pem", corp.ca_cert_pem()),
        ("corpca.key", corp.ca_key_pem()),
    ];
    // The cold-cache servers: distinct certificates on a few shared keys
    // (forging costs the same whatever the original's key; only its type and
    // size count), even ones RSA-2048, odd ones P-256.
    let rsa: Vec<rcgen::KeyPair> = (0..4)
        .map(|_| {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).expect("an RSA key")
        })
        .collect();
    let ec: Vec<rcgen::KeyPair> = (0..4).map(|_| rcgen::KeyPair::generate().expect("a P-256 key")).collect();
    let (mut certs, mut keys) = (String::new(), String::new());
    for i in 0..MANY {
        let key = if i % 2 == 0 { &rsa[i / 2 % 4] } else { &ec[i / 2 % 4] };
        let leaf = web.issue_with_key(&[&format!("s{i}.bench.test")], "Bench", now - 86_400, now + 30 * 86_400, key);
        certs.push_str(&leaf.cert_pem);
        keys.push_str(&leaf.key_pem);
    }
    let files = files.into_iter().chain([("many.pem", certs), ("many.key", keys)]);
    for (name, body) in files {
        let p: PathBuf = dir.join(name);
        std::fs::write(&p, body).unwrap();
        if name.ends_with(".key") {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}
