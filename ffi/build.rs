//! Generates the DPDK bindings from the system's DPDK headers, with the same
//! compiler flags DPDK's own pkg-config file gives, and builds the C shim that
//! turns DPDK's `static inline` fast-path API into callable symbols.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");

    let dpdk = match pkg_config::Config::new().atleast_version("22.11").cargo_metadata(true).probe("libdpdk") {
        Ok(lib) => lib,
        Err(e) => {
            // One line on cargo's own error channel; pkg-config's long account follows on stderr.
            println!(
                "cargo::error=DPDK 22.11 not found by pkg-config (libdpdk): install it with \
                 `apt-get install dpdk libdpdk-dev pkg-config` (or run scripts/setup)"
            );
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let cflags = pkg_config::get_variable("libdpdk", "cflags").ok();
    // pkg-config's own --cflags, verbatim: includes `-include rte_config.h` and
    // `-march=...`, which change struct layouts and must match DPDK's build.
    let raw_cflags = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .or(cflags)
        .unwrap_or_default();
    let flags: Vec<String> = raw_cflags.split_whitespace().map(str::to_owned).collect();

    let mut build = cc::Build::new();
    build.file("shim.c").include(".").opt_level(3).warnings(false);
    for f in &flags {
        build.flag(f);
    }
    build.compile("tlsgate_dpdk_shim");

    // The PMDs live in DPDK's driver directory and are loaded by the EAL at run
    // time; net_ring is also linked for its public constructor API.
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");
    for p in &dpdk.link_paths {
        println!("cargo:rustc-link-search=native={}", p.display());
    }

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&flags)
        .clang_arg("-I.")
        .allowlist_function("rte_.*")
        .allowlist_function("tg_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("RING_F_.*")
        .allowlist_var("SOCKET_ID_ANY")
        // Packed-and-aligned protocol headers that Rust cannot represent; tlsgate
        // parses packets itself and never touches these through the bindings.
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_.*_hdr")
        .blocklist_function("rte_.*_vlog")
        .blocklist_function("rte_vlog")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("error: bindgen failed on the DPDK headers: {e}");
            std::process::exit(1);
        });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings.write_to_file(out.join("bindings.rs")).expect("write bindings.rs into OUT_DIR");
}
