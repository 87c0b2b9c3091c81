//! `[dns] strip_ech` end to end: BIND 9 (Debian's `bind9`) serving HTTPS and
//! SVCB records with `ech=` in one network namespace, `dig` asking from
//! another, tlsgate between them on af_packet. The answers dig prints have
//! no ECH configuration left (and no `mandatory=ech` to make a record void),
//! the rest of each record as BIND sent it; answers without ECH are untouched,
//! as is DNS over TCP (which the stripping does not cover).

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tlsgate_tests::netns::{start_tlsgate, stop_and_read_events, Reaper, Topology};
use tlsgate_tests::{dpdk_lock, ech_config_list, run_with_limit, text, Scratch};

/// What dig prints in its answer section (+short), asking `name`/`rtype` over UDP (or TCP).
fn dig(topo: &Topology, name: &str, rtype: &str, tcp: bool) -> Result<String, String> {
    let mut c = topo.exec(&topo.cli, "dig");
    c.args([&format!("@{}", topo.srv_ip), name, rtype, "+short", "+norecurse", "+time=1", "+tries=1"]);
    if tcp {
        c.arg("+tcp");
    }
    let o = run_with_limit(&mut c, Duration::from_secs(10));
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if o.status.success() && !out.is_empty() && !out.contains("timed out") {
        Ok(out)
    } else {
        Err(text(&o))
    }
}

#[test]
fn dig_through_tlsgate_gets_bind9s_https_and_svcb_records_without_ech() {
    let _g = dpdk_lock();
    let topo = Topology::new(11);
    let dir = Scratch::new("e2e-dns");
    let list = ech_config_list("ech.shop.test");
    let raw = dir.path("ech.bin");
    std::fs::write(&raw, &list).unwrap();
    let b64 = run_with_limit(std::process::Command::new("base64").arg("-w0").arg(&raw), Duration::from_secs(5));
    let ech = String::from_utf8(b64.stdout).unwrap();
    assert!(ech.len() > 40, "base64 of the ECHConfigList");
    let zone = format!(
        "$TTL 300\n@ IN SOA ns.shop.test. admin.shop.test. 1 3600 600 86400 300\n@ IN NS ns.shop.test.\n\
         ns IN A {srv}\nwww IN A {srv}\n\
         www IN HTTPS 1 . alpn=\"h2,h3\" ech=\"{ech}\" ipv4hint={srv}\n\
         svc IN SVCB 1 www.shop.test. mandatory=ech ech=\"{ech}\" port=8443\n\
         plain IN HTTPS 1 . alpn=\"h2\"\n",
        srv = topo.srv_ip
    );
    std::fs::write(dir.path("shop.zone"), zone).unwrap();
    let conf = format!(
        "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on port 53 {{ {srv}; }};\n\
         listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; allow-query {{ any; }}; }};\n\
         controls {{ }};\nzone \"shop.test\" {{ type primary; file \"{d}/shop.zone\"; }};\n",
        d = dir.0.display(),
        srv = topo.srv_ip
    );
    let conf_path = dir.path("named.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let named = topo
        .exec(&topo.srv, "named")
        .args(["-g", "-c"])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _named = Reaper(Some(named));

    std::fs::write(dir.path("policy.toml"), "[policy]\ndefault_action = \"do-not-decrypt\"\n").unwrap();
    let cfg = dir.path("tlsgate.toml");
    let settings = format!(
        "policy = \"policy.toml\"\nevents = \"events.json\"\n\n[dns]\nstrip_ech = true\n\n{}",
        topo.settings(2)
    );
    std::fs::File::create(&cfg).unwrap().write_all(settings.as_bytes()).unwrap();
    let json = dir.path("counters.json");
    let mut gate = start_tlsgate(&topo, &cfg, &["--counters-json", json.to_str().unwrap()]);

    // The A record, once BIND and tlsgate are up (bounded retries).
    let start = Instant::now();
    loop {
        match dig(&topo, "www.shop.test", "A", false) {
            Ok(a) => {
                assert_eq!(a, topo.srv_ip);
                break;
            }
            Err(e) => assert!(start.elapsed() < Duration::from_secs(30), "no answer through tlsgate: {e}"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    // Over TCP, untouched: the records really carry ECH.
    let tcp = dig(&topo, "www.shop.test", "HTTPS", true).unwrap();
    assert!(tcp.contains(&format!("ech={ech}")), "{tcp}");
    let https = dig(&topo, "www.shop.test", "HTTPS", false).unwrap();
    assert_eq!(https, format!("1 . alpn=\"h2,h3\" ipv4hint={}", topo.srv_ip));
    let svcb = dig(&topo, "svc.shop.test", "SVCB", false).unwrap();
    assert_eq!(svcb, "1 www.shop.test. port=8443");
    let plain = dig(&topo, "plain.shop.test", "HTTPS", false).unwrap();
    assert_eq!(plain, "1 . alpn=\"h2\"");

    let (log, evs) = stop_and_read_events(&mut gate, &dir.path("events.json"));
    let dns: Vec<&serde_json::Value> = evs.iter().filter(|e| e["event_type"] == "dns").collect();
    assert_eq!(dns.len(), 2, "one event per rewritten answer:\n{log}");
    for (e, (name, rtype)) in dns.iter().zip([("www.shop.test", "HTTPS"), ("svc.shop.test", "SVCB")]) {
        assert_eq!(e["dns"]["rrname"], name, "{e}");
        assert_eq!(e["dns"]["rrtype"], rtype, "{e}");
        assert_eq!(e["dns"]["ech_removed"], 1, "{e}");
        assert_eq!(e["dns"]["rcode"], "NOERROR", "{e}");
        assert_eq!(e["proto"], "UDP");
        assert_eq!(e["src_ip"], topo.srv_ip.as_str());
        assert_eq!(e["src_port"], 53);
        assert_eq!(e["policy"]["reason_code"], "dns_ech_stripped", "{e}");
    }
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let sum = |name: &str| -> u64 {
        c["workers"].as_array().unwrap().iter().map(|w| w["inspection"][name].as_u64().unwrap_or(0)).sum()
    };
    assert_eq!(sum("dns_ech_stripped"), 2, "{c}");
    assert_eq!(sum("dns_ech_removed"), 2, "{c}");
    assert!(sum("dns_answers") >= 4, "{c}");
    assert_eq!(sum("dns_untouched_malformed"), 0, "{c}");
}
