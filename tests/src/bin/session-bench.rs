//! New TLS sessions per second through the decrypting path, beside the same
//! load through tlsgate with do-not-decrypt, through a plain Linux bridge
//! (direct), and through sslsplit, the reference interception proxy; same
//! machine, same run, same load generator, same server. Each configuration
//! gets a fresh set of network namespaces; the configurations alternate over
//! the rounds and the median is reported.
//!
//! `session-bench run` drives it all (as root). `serve` and `load` are the
//! server and the load generator it starts inside the namespaces: rustls on
//! both ends, one short session per connection (full handshake, an HTTP/1.0
//! request, a 1 KiB answer, close).

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
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
        Some("run") => run(
            arg("--seconds", "5").parse().unwrap_or(5.0),
            arg("--rounds", "3").parse().unwrap_or(3),
            &arg("--only", ""),
            arg("--clients", "16").parse().unwrap_or(16),
        ),
        _ => {
            eprintln!("usage: session-bench run [--seconds S] [--rounds N] | serve ... | load ...");
            std::process::exit(2);
        }
    }
}

/// The server: one thread per connection, each a full TLS handshake and a 1 KiB answer.
fn serve(bind: &str, dir: &Path) {
    let chain = vec![
        CertificateDer::from_pem_file(dir.join("server.pem")).expect("server.pem"),
        CertificateDer::from_pem_file(dir.join("webca.pem")).expect("webca.pem"),
    ];
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key");
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
            let mut answer = b"HTTP/1.0 200 OK\r\nContent-Length: 1024\r\n\r\n".to_vec();
            answer.extend_from_slice(&[b'x'; 1024]);
            let _ = s.write_all(&answer);
            tls.send_close_notify();
            let _ = tls.complete_io(&mut sock);
        });
    }
}

/// The load: `threads` clients, each opening sessions one after another for
/// `seconds`; prints `sessions failures seconds` (sessions that ended inside
/// the window).
fn load(connect: &str, sni: &str, dir: &Path, threads: usize, seconds: f64) {
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
    let cfg = Arc::new(cfg);
    let addr: SocketAddr = connect.parse().expect("address:port");
    let name = ServerName::try_from(sni.to_owned()).expect("a DNS name");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cfg, name, stop, ok, failed) = (cfg.clone(), name.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let result = one_session(&cfg, &name, addr);
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

fn one_session(cfg: &Arc<rustls::ClientConfig>, name: &ServerName<'static>, addr: SocketAddr) -> Result<(), String> {
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut tls = rustls::ClientConnection::new(cfg.clone(), name.clone()).map_err(|e| e.to_string())?;
    let mut s = rustls::Stream::new(&mut tls, &mut sock);
    s.write_all(b"GET / HTTP/1.0\r\nHost: bench.test\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = Vec::new();
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
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Direct,
    DoNotDecrypt,
    Resign,
    Sslsplit,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct (Linux bridge)",
            Setup::DoNotDecrypt => "tlsgate, do-not-decrypt",
            Setup::Resign => "tlsgate, decrypt-resign",
            Setup::Sslsplit => "sslsplit 0.5.5",
        }
    }
}

/// `only`: one setup by name (direct, do-not-decrypt, decrypt-resign, sslsplit), to profile it alone.
fn run(seconds: f64, rounds: usize, only: &str, clients: usize) {
    let dir = Scratch::new("session-bench");
    make_pki(&dir.0);
    let me = std::env::current_exe().expect("own path");
    let all = [Setup::Direct, Setup::DoNotDecrypt, Setup::Resign, Setup::Sslsplit];
    let setups: Vec<Setup> = all.into_iter().filter(|s| only.is_empty() || s.name().contains(only)).collect();
    if setups.len() != all.len() {
        for s in &setups {
            let rate = measure(*s, &me, &dir.0, seconds, 40, clients);
            println!("{}: {rate:.0} sessions/s", s.name());
        }
        return;
    }
    let mut results: Vec<(Setup, Vec<f64>)> = setups.iter().map(|s| (*s, Vec::new())).collect();
    for round in 0..rounds {
        for (i, setup) in setups.iter().enumerate() {
            let rate = measure(*setup, &me, &dir.0, seconds, 40 + (round * setups.len() + i) as u8, clients);
            eprintln!("round {} {}: {:.0} sessions/s", round + 1, setup.name(), rate);
            results[i].1.push(rate);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let direct = median(&results[0].1);
    let dnd = median(&results[1].1);
    println!(
        "new TLS sessions per second ({rounds} rounds of {seconds} s, median; {clients} clients, one full handshake each):"
    );
    println!("{:<28} {:>10} {:>10} {:>16}", "path", "sessions/s", "vs direct", "vs do-not-decrypt");
    for (setup, v) in &results {
        let m = median(v);
        println!("{:<28} {:>10.0} {:>9.0}% {:>15.0}%", setup.name(), m, 100.0 * m / direct, 100.0 * m / dnd);
    }
}

/// One measurement: fresh namespaces, the middle box of `setup`, the server, the load.
fn measure(setup: Setup, me: &Path, dir: &Path, seconds: f64, tag: u8, clients: usize) -> f64 {
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
        Setup::DoNotDecrypt | Setup::Resign => {
            let action = if setup == Setup::Resign {
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
                     [[rule]]\nname = \"bench\"\n{action}\nsni = [\"bench.test\"]\n"
                ),
            )
            .unwrap();
            let cfg = dir.join(format!("tlsgate-{tag}.toml"));
            std::fs::write(&cfg, format!("policy = \"{}\"\n{}", policy.display(), topo.settings_with_slow_path(1, 1)))
                .unwrap();
            middle =
                Some(start_middle(&topo, tlsgate().to_str().unwrap(), &["run", "--config", cfg.to_str().unwrap()]));
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
            middle = Some(start_middle(
                &topo,
                "sslsplit",
                &["-k", key.to_str().unwrap(), "-c", cert.to_str().unwrap(), "ssl", &mid_ip, "8443", &up_net, "4433"],
            ));
            connect = format!("{mid_ip}:8443");
        }
    }
    let server = topo
        .exec(&topo.srv, me.to_str().unwrap())
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
        let o = load_cmd(&topo, me, dir, &connect, 1, 0.3);
        if parse_load(&o).0 > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{setup:?}: no session within 30 s: {}", text(&o));
        std::thread::sleep(Duration::from_millis(300));
    }
    let o = load_cmd(&topo, me, dir, &connect, clients, seconds);
    let (ok, failed, secs) = parse_load(&o);
    if failed > ok / 100 {
        eprintln!("{}: {failed} sessions failed of {}", setup.name(), ok + failed);
    }
    // Both stop cleanly on SIGTERM. sslsplit forks an unprivileged child that
    // outlives a killed parent, so whatever is left of it is ended by name.
    if let Some(child) = middle.as_mut().and_then(|r| r.0.take()) {
        signal(&child, "TERM");
        let _ = wait_with_limit(child, Duration::from_secs(20));
    }
    if setup == Setup::Sslsplit {
        let key = dir.join("corpca.key");
        for sig in ["-TERM", "-KILL"] {
            let _ = run_with_limit(Command::new("pkill").args([sig, "-f"]).arg(&key), Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    ok as f64 / secs.max(0.001)
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
    threads: usize,
    seconds: f64,
) -> std::process::Output {
    run_with_limit(
        topo.exec(&topo.cli, me.to_str().unwrap())
            .args(["load", "--connect", connect, "--sni", "bench.test", "--dir"])
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
    for (name, body) in files {
        let p: PathBuf = dir.join(name);
        std::fs::write(&p, body).unwrap();
        if name.ends_with(".key") {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}
