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

    // (compute capability × 10, architecture-specific `a` target, PTX file)
    let mut found: Vec<(u32, bool, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(num) = name.strip_prefix("sm_") else { continue };
            // `sm_XY` and `sm_XYa` (the latter loads on capability XY alone: the host's
            // selection knows, see `host_runtime::device::module`).
            let (num, specific) = num.strip_suffix('a').map_or((num, false), |n| (n, true));
            let Ok(cc) = num.parse::<u32>() else { continue };
            let ptx = e.path().join("inflight_kernels.ptx");
            if ptx.exists() {
                println!("cargo:rerun-if-changed={}", ptx.display());
                found.push((cc, specific, ptx));
            }
        }
    }
    found.sort();
    let mut src = String::from("/// PTX per target, lowest first.\npub static EMBEDDED_PTX: &[(kernel_abi::manifest::PtxArch, &str)] = &[\n");
    for (cc, specific, path) in &found {
        writeln!(src, "    (kernel_abi::manifest::PtxArch {{ cc: {cc}, specific: {specific} }}, include_str!({:?})),", path.canonicalize().unwrap()).unwrap();
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded_ptx.rs");
    std::fs::write(out, src).unwrap();
}
