//! `cargo xtask gpu-bundle`: everything a GPU machine with no Rust needs, in `gpu-bundle/`
//! and packed as `gpu-bundle.tar.xz` (both ignored by git; the binaries embed their PTX as
//! text and pack about 6:1, so the archive stays well under the 64 MiB a device call
//! carries while the folder does not):
//!
//! - `bin/`: the GPU test binaries (release, stripped, PTX embedded) and
//!   `inflight-kernel-bench`;
//! - `ptx/<arch>/`: the PTX, its manifest and the ptxas resource report;
//! - `run.sh`: runs the tests with `INFLIGHT_REQUIRE_GPU=1`, then the benchmark, logging
//!   to `$OUT` (or `gpu-bundle/out`).

use crate::build_kernels::{self, workspace_root};
use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::process::{Command, Stdio};

/// Test targets (integration tests with `harness = false`) that need a GPU.
const GPU_TESTS: &[(&str, &str)] = &[("host_runtime", "gpu_kernels"), ("host_runtime", "gpu_gemm"), ("models", "gpu_model"), ("host_runtime", "gpu_fmha")];
/// Binaries that go into the bundle.
const BINARIES: &[(&str, &str)] = &[("host_runtime", "inflight-kernel-bench"), ("host_runtime", "inflight-gemm-bench"), ("host_runtime", "inflight-fmha-bench"), ("inflight", "inflight")];

const RUN_SH: &str = r#"#!/usr/bin/env bash
# Runs inflight's GPU tests and kernel benchmarks on a machine with a GPU and no Rust.
# Usage: bash gpu-bundle/run.sh      (log and JSON under $OUT, else gpu-bundle/out)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$here/out}"
mkdir -p "$out"
exec > >(tee "$out/gpu-bundle.log") 2>&1
rc=0
echo "== inflight GPU bundle: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv || true
cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')"
for t in "$here"/bin/test-*; do
  echo "== $(basename "$t")"
  INFLIGHT_REQUIRE_GPU=1 "$t" || rc=1
  # The oldest embedded PTX too, JIT-compiled for this GPU.
  echo "== $(basename "$t") with INFLIGHT_PTX_ARCH=80"
  INFLIGHT_REQUIRE_GPU=1 INFLIGHT_PTX_ARCH=80 "$t" || rc=1
  # On Hopper the default is the sm_90a PTX (wgmma GEMM): the plain sm_90 GEMM paths too.
  if [ -d "$here/ptx/sm_90a" ] && [ "$(basename "$t")" = test-gpu_gemm ] && [ "$cc" = 9.0 ]; then
    echo "== $(basename "$t") with INFLIGHT_PTX_ARCH=90"
    INFLIGHT_REQUIRE_GPU=1 INFLIGHT_PTX_ARCH=90 "$t" || rc=1
  fi
done
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  echo "== inflight-kernel-bench"
  "$here/bin/inflight-kernel-bench" --json "$out/kernel-bench.jsonl" ${BENCH_ARGS:-} || rc=1
  if [ -x "$here/bin/inflight-fmha-bench" ]; then
    echo "== inflight-fmha-bench"
    "$here/bin/inflight-fmha-bench" --json "$out/fmha-bench.jsonl" || rc=1
  fi
fi
echo "== done: rc=$rc"
exit $rc
"#;

pub fn run(arches: &[String], out: &str) -> Result<()> {
    build_kernels::run(&build_kernels::Options { arches: arches.to_vec(), deny_spills: false })?;
    let root = workspace_root();
    let bundle = root.join(out);
    ensure!(out.starts_with("gpu-bundle") && !out.contains('/'), "the bundle folder must be gpu-bundle or gpu-bundle-<name> (git ignores those), not {out}");
    let _ = std::fs::remove_dir_all(&bundle);
    std::fs::create_dir_all(bundle.join("bin"))?;

    for (pkg, test) in GPU_TESTS {
        let exe = build_test(&root, pkg, test)?;
        copy_stripped(&exe, &bundle.join("bin").join(format!("test-{test}")))?;
    }
    for (pkg, bin) in BINARIES {
        let status = Command::new(env!("CARGO")).current_dir(&root).args(["build", "--release", "-p", pkg, "--bin", bin]).status()?;
        ensure!(status.success(), "building {bin} failed");
        copy_stripped(&root.join("target/release").join(bin), &bundle.join("bin").join(bin))?;
    }
    for arch in arches {
        let src = root.join("target/ptx").join(arch);
        let dst = bundle.join("ptx").join(arch);
        std::fs::create_dir_all(&dst)?;
        for f in ["inflight_kernels.ptx", "manifest.json", "ptxas-report.txt"] {
            std::fs::copy(src.join(f), dst.join(f)).with_context(|| format!("copying {f} for {arch}"))?;
        }
    }
    let run_sh = bundle.join("run.sh");
    std::fs::write(&run_sh, RUN_SH)?;
    set_mode(&run_sh)?;
    let size = dir_size(&bundle)?;
    let packed = pack(&root, out)?;
    eprintln!(
        "xtask: {out}/ ready ({:.1} MiB), packed as {out}.tar.xz ({:.1} MiB); carry the archive and on the GPU machine run: tar xJf {out}.tar.xz && bash {out}/run.sh",
        size as f64 / (1 << 20) as f64,
        packed as f64 / (1 << 20) as f64
    );
    ensure!(packed < 48 << 20, "{out}.tar.xz is {packed} bytes: too close to the 64 MiB a device call carries");
    Ok(())
}

/// Packs `root/<out>/` into `root/<out>.tar.xz`; returns the archive's size.
fn pack(root: &Path, out: &str) -> Result<u64> {
    let archive = root.join(format!("{out}.tar.xz"));
    let status = Command::new("tar").current_dir(root).env("XZ_OPT", "-6 -T0").args(["-cJf"]).arg(&archive).arg(out).status().context("running tar")?;
    ensure!(status.success(), "tar -cJf {} failed", archive.display());
    Ok(std::fs::metadata(&archive)?.len())
}

/// Builds one integration test in release and returns its executable.
fn build_test(root: &Path, pkg: &str, test: &str) -> Result<std::path::PathBuf> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["test", "--release", "--no-run", "--message-format=json", "-p", pkg, "--test", test])
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "building test {test} of {pkg} failed");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == test && v["profile"]["test"] == true {
            if let Some(exe) = v["executable"].as_str() {
                return Ok(exe.into());
            }
        }
    }
    anyhow::bail!("cargo did not report an executable for test {test}")
}

fn copy_stripped(src: &Path, dst: &Path) -> Result<()> {
    std::fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
    // Release binaries are already stripped by the profile; `strip` is a best effort extra.
    let _ = Command::new("strip").arg(dst).status();
    set_mode(dst)
}

#[cfg(unix)]
fn set_mode(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn dir_size(p: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(p)? {
        let e = e?;
        total += if e.file_type()?.is_dir() { dir_size(&e.path())? } else { e.metadata()?.len() };
    }
    Ok(total)
}
