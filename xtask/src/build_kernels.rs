//! `cargo xtask build-kernels`: the device crate → PTX per architecture, checked.
//!
//! For each `--arch` it runs the pinned nightly's cargo on `gpu_kernels/kernels` for
//! `nvptx64-nvidia-cuda` (`-Zbuild-std=core`, this binary as the linker), then checks the PTX
//! (no unresolved device functions, exactly the manifest's entry points) and runs ptxas on
//! it. Outputs under `target/ptx/<arch>/`: `inflight_kernels.ptx`, `manifest.json` and
//! `ptxas-report.txt` (registers, stack, spills and shared memory per kernel).

use crate::ptx_link::{ENV_LIBDEVICE, ENV_LLVM_TOOLS};
use crate::toolchain::{self, Toolchain};
use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Architectures the kernels are built and checked for.
pub const SUPPORTED_ARCHES: &[&str] = &["sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"];
/// Built when no `--arch` is given.
pub const DEFAULT_ARCH: &str = "sm_90";
/// Device functions PTX may leave external (the CUDA runtime provides them).
const ALLOWED_EXTERNS: &[&str] = &["vprintf", "malloc", "free", "__assertfail"];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// ptxas's resource report for one kernel.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    pub stack_frame_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    pub shared_bytes: u32,
}

#[derive(Debug, Serialize)]
struct Manifest<'a> {
    arch: &'a str,
    ptx_file: &'a str,
    nightly: &'a str,
    entry_points: Vec<String>,
    resources: &'a [KernelResources],
}

pub struct Options {
    pub arches: Vec<String>,
    pub deny_spills: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    for a in &opts.arches {
        ensure!(SUPPORTED_ARCHES.contains(&a.as_str()), "unsupported --arch {a}: choose from {}", SUPPORTED_ARCHES.join(", "));
    }
    let tc = toolchain::ensure()?;
    let mut spilled = Vec::new();
    for arch in &opts.arches {
        let res = build_arch(&tc, arch)?;
        spilled.extend(res.iter().filter(|r| r.spill_store_bytes + r.spill_load_bytes > 0).map(|r| format!("{arch}:{}", r.name)));
    }
    if !spilled.is_empty() {
        let msg = format!("register spills in: {}", spilled.join(", "));
        if opts.deny_spills {
            bail!("{msg} (see target/ptx/<arch>/ptxas-report.txt)");
        }
        eprintln!("xtask: warning: {msg}");
    }
    Ok(())
}

fn build_arch(tc: &Toolchain, arch: &str) -> Result<Vec<KernelResources>> {
    let root = workspace_root();
    let crate_dir = root.join("gpu_kernels/kernels");
    let target_dir = root.join("target/ptx-build").join(arch);
    let linker = std::env::current_exe()?;
    eprintln!("xtask: building kernels for {arch}");
    let rustflags = [
        format!("-Clinker={}", linker.display()),
        format!("-Ctarget-cpu={arch}"),
        "-Ctarget-feature=+ptx80".into(),
        "-Zunstable-options".into(),
        "-Cpanic=immediate-abort".into(),
    ];
    let status = toolchain::nightly_command("cargo")
        .current_dir(&crate_dir)
        .args(["build", "--release", "--target", "nvptx64-nvidia-cuda", "-Zbuild-std=core", "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"))
        .env(ENV_LLVM_TOOLS, &tc.llvm_tools)
        .env(ENV_LIBDEVICE, &tc.libdevice)
        .status()
        .context("running cargo for the kernel crate")?;
    ensure!(status.success(), "building the kernel crate for {arch} failed (see the errors above)");

    let built = target_dir.join("nvptx64-nvidia-cuda/release/inflight_kernels.ptx");
    let ptx = std::fs::read_to_string(&built).with_context(|| format!("reading {}", built.display()))?;
    check_externs(&ptx, arch)?;
    let entries = check_entry_points(&ptx, arch)?;
    let resources = run_ptxas(tc, arch, &built)?;

    let out_dir = root.join("target/ptx").join(arch);
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(out_dir.join("inflight_kernels.ptx"), &ptx)?;
    let manifest = Manifest {
        arch,
        ptx_file: "inflight_kernels.ptx",
        nightly: toolchain::NIGHTLY,
        entry_points: entries,
        resources: &resources,
    };
    std::fs::write(out_dir.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
    let report = format_report(arch, &resources);
    std::fs::write(out_dir.join("ptxas-report.txt"), &report)?;
    eprint!("{report}");
    eprintln!("xtask: wrote {}", out_dir.join("inflight_kernels.ptx").display());
    Ok(resources)
}

/// Fails on any `.extern .func` that the CUDA runtime does not provide (e.g. an unlinked
/// libdevice function).
pub fn check_externs(ptx: &str, arch: &str) -> Result<()> {
    let unresolved: Vec<&str> = ptx
        .lines()
        .filter(|l| l.trim_start().starts_with(".extern .func"))
        .filter_map(|l| l.split(|c: char| c.is_whitespace() || c == '(' || c == ')').rev().find(|t| !t.is_empty() && *t != ";"))
        .map(|n| n.trim_end_matches(';'))
        .filter(|n| !ALLOWED_EXTERNS.contains(n))
        .collect();
    if !unresolved.is_empty() {
        bail!("PTX for {arch} calls unresolved device functions: {} (a missing libdevice symbol or an unsupported core function)", unresolved.join(", "));
    }
    Ok(())
}

/// The `.entry` names of a PTX module.
pub fn entry_points(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix(".visible .entry ").or_else(|| l.strip_prefix(".entry "))?;
            Some(rest.split(|c: char| c == '(' || c.is_whitespace()).next()?.to_owned())
        })
        .collect()
}

/// Checks the PTX exports exactly the manifest's entry points of its target
/// ([`kernel_abi::manifest::PtxArch::entry_points`]: sm_90a adds the `wgmma` kernels).
pub fn check_entry_points(ptx: &str, arch: &str) -> Result<Vec<String>> {
    let Some(target) = kernel_abi::manifest::PtxArch::parse(arch) else { bail!("{arch} is not a PTX target name") };
    let found = entry_points(ptx);
    let missing: Vec<&str> = target.entry_points().filter(|e| !found.iter().any(|f| f == e)).collect();
    let extra: Vec<&str> = found.iter().map(String::as_str).filter(|f| !target.exports(f)).collect();
    if !missing.is_empty() {
        bail!("PTX for {arch} lacks kernels kernel_abi::manifest lists for {arch}: {}", missing.join(", "));
    }
    if !extra.is_empty() {
        bail!("PTX for {arch} exports kernels kernel_abi::manifest does not list for {arch}: {} (add them to the manifest)", extra.join(", "));
    }
    Ok(found)
}

fn run_ptxas(tc: &Toolchain, arch: &str, ptx: &Path) -> Result<Vec<KernelResources>> {
    let cubin = ptx.with_extension("cubin");
    let out = Command::new(&tc.ptxas)
        .arg(format!("-arch={arch}"))
        .args(["-v", "-O3", "-o"])
        .arg(&cubin)
        .arg(ptx)
        .output()
        .with_context(|| format!("starting {}", tc.ptxas.display()))?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("ptxas rejected the PTX for {arch}:\n{text}");
    }
    Ok(parse_ptxas_report(&text))
}

fn number_before(line: &str, suffix: &str) -> Option<u32> {
    let pos = line.find(suffix)?;
    line[..pos].split_whitespace().last()?.parse().ok()
}

/// Parses `ptxas -v` output into one record per kernel.
pub fn parse_ptxas_report(text: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            out.push(KernelResources { name: rest.trim().to_owned(), ..Default::default() });
        } else if let Some(cur) = out.last_mut() {
            if line.contains("bytes stack frame") {
                cur.stack_frame_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                cur.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
                cur.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used ") && line.contains("registers") {
                cur.registers = number_before(line, "registers").unwrap_or(0);
                cur.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn format_report(arch: &str, res: &[KernelResources]) -> String {
    let mut s = format!("ptxas resource report for {arch}\n{:<20} {:>5} {:>7} {:>8} {:>8} {:>7}\n", "kernel", "regs", "stack", "spill_st", "spill_ld", "smem");
    for r in res {
        s += &format!(
            "{:<20} {:>5} {:>7} {:>8} {:>8} {:>7}\n",
            r.name, r.registers, r.stack_frame_bytes, r.spill_store_bytes, r.spill_load_bytes, r.shared_bytes
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'rms_norm_bf16' for 'sm_90'\n\
ptxas info    : Function properties for rms_norm_bf16\n\
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n\
ptxas info    : Used 30 registers, used 1 barriers, 128 bytes smem, 416 bytes cmem[0]\n\
ptxas info    : Function properties for cast_f32_f16\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 12 registers, used 0 barriers, 376 bytes cmem[0]\n";

    #[test]
    fn parses_resources() {
        let r = parse_ptxas_report(REPORT);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], KernelResources { name: "rms_norm_bf16".into(), registers: 30, stack_frame_bytes: 8, spill_store_bytes: 4, spill_load_bytes: 4, shared_bytes: 128 });
        assert_eq!(r[0].registers, 12);
        assert_eq!(r[0].shared_bytes, 0);
    }

    #[test]
    fn finds_entries_and_unresolved_externs() {
        let ptx = ".visible .entry cast_f32_f16(\n.extern .func  (.param .b32 func_retval0) __nv_expf\n(\n.extern .func vprintf(\n";
        assert_eq!(entry_points(ptx), ["cast_f32_f16"]);
        let err = check_externs(ptx, "sm_90").unwrap_err().to_string();
        assert!(err.contains("__nv_expf"), "{err}");
        assert!(!err.contains("vprintf"), "{err}");
    }

    #[test]
    fn missing_manifest_entries_are_named() {
        let err = check_entry_points(".visible .entry copy_bytes(\n", "sm_90").unwrap_err().to_string();
        assert!(err.contains("rms_norm_bf16"), "{err}");
    }

    #[test]
    fn the_wgmma_kernels_belong_to_sm90a_alone() {
        let all: String = kernel_abi::manifest::PtxArch::SM90A.entry_points().map(|e| format!(".visible .entry {e}(\n")).collect();
        assert!(check_entry_points(&all, "sm_90a").is_ok());
        let err = check_entry_points(&all, "sm_90").unwrap_err().to_string();
        assert!(err.contains("gemm_wgmma_bf16") && err.contains("does not list"), "{err}");
        let plain: String = kernel_abi::manifest::ENTRY_POINTS.iter().map(|e| format!(".visible .entry {e}(\n")).collect();
        let err = check_entry_points(&plain, "sm_90a").unwrap_err().to_string();
        assert!(err.contains("lacks") && err.contains("gate_up_silu_wgmma_f16"), "{err}");
    }
}
