//! Prometheus metrics, read by a real Prometheus (Debian's `prometheus`):
//! tlsgate bridging curl and an HTTPS server in network namespaces with
//! `[metrics] listen`, Prometheus in tlsgate's namespace scraping it every
//! second. What Prometheus's HTTP API answers for the sessions by action,
//! the rules and the inspector's counters equals what the event log and the
//! final JSON counters say; every metric and label the Grafana dashboard
//! uses is in the scrape; a metrics address in use stops tlsgate at start.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tlsgate_perf::handshake::Pki;
use tlsgate_tests::netns::{start_https_server, start_tlsgate, stop_and_read_events, Reaper, Topology};
use tlsgate_tests::{dpdk_lock, repo, run_with_limit, text, tlsgate, Scratch};

const POLICY: &str = r#"[policy]
default_action = "do-not-decrypt"

[[rule]]
name = "watch"
action = "monitor"

[[rule]]
name = "no-casino"
action = "block"
sni = ["www.casino.test"]
"#;

/// Prometheus's answer to an instant query, as (labels, value) pairs.
fn query(topo: &Topology, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let o = run_with_limit(
        topo.exec(&topo.mid, "curl")
            .args(["-sS", "--max-time", "5", "-G", "http://127.0.0.1:9090/api/v1/query", "--data-urlencode"])
            .arg(format!("query={q}")),
        Duration::from_secs(10),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                        .unwrap_or_default();
                    (labels, s["value"][1].as_str().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn scrape(topo: &Topology, accept: Option<&str>) -> (String, String) {
    let mut c = topo.exec(&topo.mid, "curl");
    c.args(["-sS", "--max-time", "5", "-D", "-"]);
    if let Some(a) = accept {
        c.args(["-H", &format!("Accept: {a}")]);
    }
    let o = run_with_limit(c.arg("http://127.0.0.1:9477/metrics"), Duration::from_secs(10));
    let all = String::from_utf8_lossy(&o.stdout).to_string();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {}", text(&o)));
    (head.to_string(), body.to_string())
}

#[test]
fn prometheus_reads_what_the_event_log_and_the_counters_say() {
    let _g = dpdk_lock();
    let topo = Topology::new(14);
    let dir = Scratch::new("e2e-metrics");
    let web = Pki::new("Web Root CA");
    let leaf = web.issue(&["www.shop.test", "www.casino.test"], "Shop Inc", 1_700_000_000, 2_000_000_000);
    std::fs::write(dir.path("webca.pem"), web.ca_cert_pem()).unwrap();
    std::fs::write(dir.path("leaf.pem"), format!("{}{}", leaf.cert_pem, web.ca_cert_pem())).unwrap();
    std::fs::write(dir.path("leaf.key"), &leaf.key_pem).unwrap();
    std::fs::write(dir.path("policy.toml"), POLICY).unwrap();
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<html>metrics</html>\n").unwrap();
    let cfg = dir.path("tlsgate.toml");
    let settings = format!(
        "policy = \"policy.toml\"\nevents = \"events.json\"\n\n[metrics]\nlisten = \"127.0.0.1:9477\"\n\n{}",
        topo.settings_with_slow_path(2, 1)
    );
    std::fs::write(&cfg, settings).unwrap();
    let json = dir.path("counters.json");
    let mut gate = start_tlsgate(&topo, &cfg, &["--counters-json", json.to_str().unwrap()]);
    let _server = start_https_server(&topo, &www, &dir.path("leaf.pem"), &dir.path("leaf.key"), 120, &[]);
    let prom_cfg = dir.path("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tlsgate\n    static_configs:\n      - targets: ['127.0.0.1:9477']\n",
    )
    .unwrap();
    let prom = topo
        .exec(&topo.mid, "prometheus")
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path("tsdb").display()))
        .args(["--web.listen-address=127.0.0.1:9090", "--log.level=warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _prom = Reaper(Some(prom));
    let curl = |name: &str| {
        run_with_limit(
            topo.exec(&topo.cli, "curl")
                .args(["-sS", "--max-time", "3", "--cacert"])
                .arg(dir.path("webca.pem"))
                .args(["--resolve", &format!("{name}:443:{}", topo.srv_ip), &format!("https://{name}/index.html")]),
            Duration::from_secs(10),
        )
    };
    let start = Instant::now();
    while !curl("www.shop.test").status.success() {
        assert!(start.elapsed() < Duration::from_secs(30), "no page through tlsgate");
        std::thread::sleep(Duration::from_millis(300));
    }
    for _ in 0..3 {
        assert!(curl("www.shop.test").status.success());
    }
    for _ in 0..2 {
        assert!(!curl("www.casino.test").status.success(), "blocked");
    }

    // The scrape itself: both formats, and everything the dashboard uses.
    let (head, text04) = scrape(&topo, None);
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(text04.contains("# TYPE tlsgate_sessions_total counter"), "{text04}");
    let (head, om) = scrape(&topo, Some("application/openmetrics-text; version=1.0.0"));
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE tlsgate_sessions counter"));
    let dashboard = std::fs::read_to_string(repo().join("contrib/grafana/tlsgate.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut used = 0;
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            // Every tlsgate_ metric named, and every label it groups by, is in the scrape.
            let metrics: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("tlsgate_"))
                .collect();
            for m in &metrics {
                let base = m.strip_suffix("_bucket").unwrap_or(m);
                assert!(text04.contains(&format!("# TYPE {base} ")), "{m} (in {expr:?}) is not in the scrape");
                used += 1;
            }
            if let Some(by) = expr.split("by (").nth(1).and_then(|r| r.split(')').next()) {
                for label in by.split(',').map(str::trim).filter(|l| *l != "le") {
                    let m = metrics[0];
                    assert!(
                        text04.lines().any(|l| l.starts_with(m) && l.contains(&format!("{label}=\""))),
                        "{m} has no label {label} (in {expr:?})"
                    );
                }
            }
        }
    }
    assert!(used >= 15, "the dashboard names {used} metrics");

    // Prometheus, after a few scrapes.
    std::thread::sleep(Duration::from_secs(3));
    let start = Instant::now();
    let total = loop {
        let t = query(&topo, "sum(tlsgate_sessions_total)");
        if t.first().is_some_and(|(_, v)| *v >= 6.0) {
            std::thread::sleep(Duration::from_secs(2));
            break query(&topo, "sum(tlsgate_sessions_total)")[0].1;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "Prometheus has no sessions: {t:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let by_action: BTreeMap<String, f64> = query(&topo, "sum by (action) (tlsgate_sessions_total)")
        .into_iter()
        .map(|(l, v)| (l["action"].clone(), v))
        .collect();
    let inspected = query(&topo, "sum(tlsgate_inspect_sessions_total)")[0].1;
    let rule = query(&topo, "tlsgate_rule_sessions_total{rule=\"no-casino\"}")[0].1;
    let watched = query(&topo, "tlsgate_rule_monitor_hits_total{rule=\"watch\"}")[0].1;
    let decided = query(&topo, "sum(tlsgate_decision_latency_seconds_count)")[0].1;
    // The flows stay in the table (closed, decided) until they expire.
    let tracked = query(&topo, "sum(tlsgate_inspect_flows_now)")[0].1;
    assert!(tracked >= 1.0, "flows in the table now: {tracked}");

    let (log, evs) = stop_and_read_events(&mut gate, &dir.path("events.json"));
    assert_eq!(total, evs.len() as f64, "{log}");
    let mut from_events: BTreeMap<String, f64> = BTreeMap::new();
    for e in &evs {
        *from_events.entry(e["policy"]["actual_action"].as_str().unwrap().to_string()).or_default() += 1.0;
    }
    assert_eq!(by_action, from_events);
    assert_eq!(rule, evs.iter().filter(|e| e["policy"]["rule"] == "no-casino").count() as f64);
    assert_eq!(watched, evs.len() as f64, "the monitor rule holds for every session");
    assert_eq!(decided, evs.len() as f64, "every session's decision latency");
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let counted: u64 =
        c["workers"].as_array().unwrap().iter().map(|w| w["inspection"]["sessions"].as_u64().unwrap()).sum();
    assert_eq!(inspected, counted as f64, "the inspector's counters, as the final JSON has them");
}

#[test]
fn a_metrics_address_in_use_stops_tlsgate_at_start_with_one_line() {
    let _g = dpdk_lock();
    let dir = Scratch::new("metrics-in-use");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(dir.path("policy.toml"), "[policy]\ndefault_action = \"do-not-decrypt\"\n").unwrap();
    let cfg = dir.path("t.toml");
    std::fs::write(
        &cfg,
        format!(
            "policy = \"policy.toml\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[eal]\nargs = [\"--no-huge\", \"--no-shconf\", \"--no-pci\", \"--no-telemetry\", \"-m\", \"256\", \"--vdev=net_null0\", \"--vdev=net_null1\"]\n\n[[pair]]\na = \"net_null0\"\nb = \"net_null1\"\n\n[workers]\nlcores = [1]\n"
        ),
    )
    .unwrap();
    let o = run_with_limit(Command::new(tlsgate()).args(["run", "--config"]).arg(&cfg), Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let bad = dir.path("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&cfg).unwrap().replace(&format!("127.0.0.1:{port}"), "localhost"))
        .unwrap();
    let o = run_with_limit(Command::new(tlsgate()).args(["run", "--config"]).arg(&bad), Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(2), "a listen that is no address:port is a settings error: {}", text(&o));
}
