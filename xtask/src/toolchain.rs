//! Finding, and installing when missing, what the kernel build needs: the pinned nightly
//! (with `rust-src` and `llvm-tools`) and ptxas + libdevice from NVIDIA's pip wheel, kept in
//! a cache directory (`$INFLIGHT_CACHE`, else `$XDG_CACHE_HOME/inflight`, else
//! `~/.cache/inflight`).

use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The nightly that builds the kernels; pinned because nvptx codegen details move.
pub const NIGHTLY: &str = "nightly-2026-05-20";
/// The pip wheel holding `ptxas` and `libdevice.10.bc`.
pub const NVCC_WHEEL: &str = "nvidia-cuda-nvcc-cu12==12.9.86";
const NVCC_DIR: &str = "nvcc-12.9.86";

/// Everything the kernel build runs.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub llvm_tools: PathBuf,
    pub ptxas: PathBuf,
    pub libdevice: PathBuf,
}

fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("INFLIGHT_CACHE") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Path::new(&d).join("inflight");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    Path::new(&home).join(".cache").join("inflight")
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `Command` for a rustup-managed tool of the pinned nightly, with the variables the outer
/// (stable) cargo set removed so they cannot redirect it.
pub fn nightly_command(program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", NIGHTLY, program]);
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "CARGO_MAKEFLAGS", "CARGO"] {
        cmd.env_remove(var);
    }
    cmd
}

fn ensure_nightly() -> Result<PathBuf> {
    let sysroot = nightly_command("rustc").args(["--print", "sysroot"]).output();
    let have = matches!(&sysroot, Ok(o) if o.status.success());
    if !have {
        say(&format!("installing the pinned toolchain {NIGHTLY} (rust-src, llvm-tools); once per machine"));
        run_ok(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal", "--component", "rust-src,llvm-tools"]))
            .context("installing the kernel toolchain with rustup")?;
    }
    let sysroot = run_ok(nightly_command("rustc").args(["--print", "sysroot"]))?;
    let tools = Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin");
    let src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if !tools.join("llc").exists() || !src.exists() {
        say(&format!("adding rust-src and llvm-tools to {NIGHTLY}"));
        run_ok(Command::new("rustup").args(["component", "add", "--toolchain", NIGHTLY, "rust-src", "llvm-tools"]))?;
    }
    ensure!(tools.join("llc").exists(), "llc not found in {} after installing llvm-tools", tools.display());
    Ok(tools)
}

/// Unpacks a wheel (a zip) with Python's standard library, so `unzip` is not needed.
fn unzip(wheel: &Path, dest: &Path) -> Result<()> {
    run_ok(Command::new("python3").args(["-m", "zipfile", "-e"]).arg(wheel).arg(dest))?;
    Ok(())
}

fn ensure_nvcc_wheel() -> Result<(PathBuf, PathBuf)> {
    let root = cache_dir().join(NVCC_DIR);
    let ptxas = root.join("nvidia/cuda_nvcc/bin/ptxas");
    let libdevice = root.join("nvidia/cuda_nvcc/nvvm/libdevice/libdevice.10.bc");
    if !(ptxas.exists() && libdevice.exists()) {
        let dl = cache_dir().join("downloads");
        std::fs::create_dir_all(&dl)?;
        say(&format!("fetching ptxas and libdevice ({NVCC_WHEEL}, ~40 MB) into {}", cache_dir().display()));
        run_ok(Command::new("python3").args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d"]).arg(&dl).arg(NVCC_WHEEL))
            .context("downloading the CUDA compiler wheel with pip (needs python3 and access to PyPI)")?;
        let wheel = std::fs::read_dir(&dl)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("nvidia_cuda_nvcc_cu12-12.9.86")))
            .context("pip reported success but the wheel is not in the download folder")?;
        let tmp = root.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        unzip(&wheel, &tmp)?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&tmp, &root)?;
        set_executable(&ptxas)?;
    }
    ensure!(ptxas.exists(), "ptxas missing from {}", root.display());
    ensure!(libdevice.exists(), "libdevice missing from {}", root.display());
    Ok((ptxas, libdevice))
}

#[cfg(unix)]
fn set_executable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = std::fs::metadata(p)?.permissions();
    perm.set_mode(0o755);
    std::fs::set_permissions(p, perm)?;
    Ok(())
}

/// Finds or installs everything; says what it installs.
pub fn ensure() -> Result<Toolchain> {
    let llvm_tools = ensure_nightly()?;
    let (ptxas, libdevice) = ensure_nvcc_wheel()?;
    Ok(Toolchain { llvm_tools, ptxas, libdevice })
}
