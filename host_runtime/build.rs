//! Embeds the kernels' PTX (built by `cargo xtask build-kernels` under `target/ptx/<arch>/`)
//! into the binary. With no PTX built, the binary still builds: the GPU backend then reports
//! "kernels not built" with the command to run, and the CPU backend works as usual.
//! `INFLIGHT_PTX_DIR` points the build at another folder of `<arch>/inflight_kernels.ptx`.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=INFLIGHT_PTX_DIR");
    let dir = match std::env::var_os("INFLIGHT_PTX_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../target/ptx"),
    };
    // Watching a folder that exists makes cargo rebuild when its PTX changes.
    let _ = std::fs::create_dir_all(&dir);
    println!("cargo:rerun-if-changed={}", dir.display());

    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(num) = name.strip_prefix("sm_") else { continue };
            // Plain `sm_XY` only: `sm_90a` PTX runs on sm_90 alone and is loaded explicitly.
            let Ok(cc) = num.parse::<u32>() else { continue };
            let ptx = e.path().join("inflight_kernels.ptx");
            if ptx.exists() {
                println!("cargo:rerun-if-changed={}", ptx.display());
                found.push((cc, ptx));
            }
        }
    }
    found.sort();
    let mut src = String::from("/// PTX per architecture (compute capability × 10), lowest first.\npub static EMBEDDED_PTX: &[(u32, &str)] = &[\n");
    for (cc, path) in &found {
        writeln!(src, "    ({cc}, include_str!({:?})),", path.canonicalize().unwrap()).unwrap();
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded_ptx.rs");
    std::fs::write(out, src).unwrap();
}
