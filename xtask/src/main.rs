//! `cargo xtask`: the project's build tasks.
//!
//! - `build-kernels [--arch sm_90 ...] [--deny-spills]`: the device crate → checked PTX.
//! - `gpu-bundle`: PTX + GPU test binaries + benchmark binary + a run script in
//!   `gpu-bundle/`, for a GPU machine that has no Rust.
//!
//! The same binary is the device crate's linker when rustc calls it (see [`ptx_link`]).

mod build_kernels;
mod bundle;
mod ptx_link;
mod toolchain;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "inflight build tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the GPU kernels to PTX, check them with ptxas, write target/ptx/<arch>/.
    BuildKernels {
        /// Target architectures (repeat or comma-separate): sm_80, sm_86, sm_89, sm_90, sm_90a.
        #[arg(long, value_delimiter = ',', default_value = build_kernels::DEFAULT_ARCH)]
        arch: Vec<String>,
        /// Fail if ptxas reports register spills in any kernel.
        #[arg(long)]
        deny_spills: bool,
    },
    /// Build the GPU test and benchmark bundle into gpu-bundle/ (kernels, tests, bench, run.sh).
    GpuBundle {
        /// Architectures whose PTX goes into the binaries (sm_90a: the Hopper-only wgmma
        /// kernels, loaded on compute capability 9.0; sm_90 stays for newer GPUs).
        #[arg(long, value_delimiter = ',', default_value = "sm_80,sm_90,sm_90a")]
        arch: Vec<String>,
        /// Output folder at the workspace root: gpu-bundle or gpu-bundle-<name>.
        #[arg(long, default_value = "gpu-bundle")]
        out: String,
    },
    /// Install the pinned nightly and ptxas/libdevice if missing, then print where they are.
    Toolchain,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if ptx_link::invoked_as_linker(&args) {
        return ptx_link::link(&args);
    }
    match Cli::parse().cmd {
        Cmd::BuildKernels { arch, deny_spills } => build_kernels::run(&build_kernels::Options { arches: arch, deny_spills }),
        Cmd::GpuBundle { arch, out } => bundle::run(&arch, &out),
        Cmd::Toolchain => {
            let tc = toolchain::ensure()?;
            println!("nightly     {}\nllvm tools  {}\nptxas       {}\nlibdevice   {}", toolchain::NIGHTLY, tc.llvm_tools.display(), tc.ptxas.display(), tc.libdevice.display());
            Ok(())
        }
    }
}
