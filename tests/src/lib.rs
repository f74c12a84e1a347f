//! Helpers shared by the cross-crate integration tests in `tests/tests/`.

use std::path::PathBuf;

/// The workspace's `target/ptx` folder, where `cargo xtask build-kernels` writes PTX.
pub fn ptx_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ptx")
}

/// The PTX built for each architecture found under [`ptx_dir`], as (arch, text).
pub fn built_ptx() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(ptx_dir()) {
        for e in entries.flatten() {
            if let Ok(text) = std::fs::read_to_string(e.path().join("inflight_kernels.ptx")) {
                out.push((e.file_name().to_string_lossy().into_owned(), text));
            }
        }
    }
    out.sort();
    out
}

/// The byte size of each entry point's single parameter, from PTX declarations such as
/// `.visible .entry rms_norm_bf16(\n\t.param .align 8 .b8 rms_norm_bf16_param_0[64]\n)`.
pub fn entry_param_sizes(ptx: &str) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut lines = ptx.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix(".visible .entry ") else { continue };
        let name = rest.split('(').next().unwrap_or("").trim().to_owned();
        let mut sizes = Vec::new();
        for l in lines.by_ref() {
            let l = l.trim();
            if l.starts_with(')') {
                break;
            }
            if let Some(open) = l.rfind('[') {
                if let Ok(n) = l[open + 1..].trim_end_matches([']', ',']).parse() {
                    sizes.push(n);
                }
            } else if l.starts_with(".param") {
                // Scalar parameters: `.param .u64 name` etc.
                let bits = l.split_whitespace().nth(1).and_then(|t| t.trim_start_matches(".b").trim_start_matches(".u").trim_start_matches(".f").trim_start_matches(".s").parse::<usize>().ok());
                sizes.push(bits.map_or(0, |b| b / 8));
            }
        }
        out.push((name, sizes));
    }
    out
}
