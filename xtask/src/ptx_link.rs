//! The device crate's linker: rustc calls this binary (through `-C linker=`) in the `llbc`
//! flavour with the crate's bitcode objects, the bitcode rlibs of `core`, the exported kernel
//! names and `-o out.ptx`. We link the bitcode with LLVM's own tools (from the pinned
//! nightly's `llvm-tools`), pull in libdevice, move shared-memory statics to address space 3,
//! internalise everything but the kernels, optimise, and emit PTX with `llc`.
//!
//! Tool locations come from the environment that `cargo xtask build-kernels` sets
//! ([`ENV_LLVM_TOOLS`], [`ENV_LIBDEVICE`]).

use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directory holding `llvm-link`, `opt`, `llc`, `llvm-ar`.
pub const ENV_LLVM_TOOLS: &str = "INFLIGHT_LLVM_TOOLS";
/// Path of `libdevice.10.bc`.
pub const ENV_LIBDEVICE: &str = "INFLIGHT_LIBDEVICE";
/// The link section that marks a `static` as CTA shared memory.
pub const SHARED_SECTION: &str = ".nvptx.shared";

/// True when this process was started by rustc as the linker.
pub fn invoked_as_linker(args: &[String]) -> bool {
    std::env::var_os(ENV_LLVM_TOOLS).is_some()
        && args.iter().any(|a| a == "--export-symbol" || a.starts_with('@') || a == "--target-cpu")
}

/// What rustc asked for.
#[derive(Debug, Default)]
struct LinkRequest {
    exports: Vec<String>,
    objects: Vec<PathBuf>,
    rlibs: Vec<PathBuf>,
    target_cpu: String,
    output: PathBuf,
}

fn expand_response_files(args: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for a in args {
        if let Some(path) = a.strip_prefix('@') {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading linker response file {path}"))?;
            out.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        } else {
            out.push(a.clone());
        }
    }
    Ok(out)
}

fn parse(args: &[String]) -> Result<LinkRequest> {
    let args = expand_response_files(args)?;
    let mut req = LinkRequest::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--export-symbol" => req.exports.push(it.next().context("--export-symbol without a name")?),
            "-o" => req.output = it.next().context("-o without a path")?.into(),
            "--target-cpu" => req.target_cpu = it.next().context("--target-cpu without a value")?,
            "--target" | "-L" | "--target-feature" => {
                it.next();
            }
            s if s.starts_with("--target-feature=") || s.starts_with("-O") || s == "--debug" => {}
            s if s.ends_with(".rlib") => req.rlibs.push(s.into()),
            s if s.ends_with(".o") || s.ends_with(".bc") => req.objects.push(s.into()),
            s if s.starts_with('-') => bail!("ptx linker: unexpected option {s:?} from rustc"),
            s => bail!("ptx linker: unexpected input {s:?} from rustc"),
        }
    }
    ensure!(!req.output.as_os_str().is_empty(), "ptx linker: rustc gave no -o");
    ensure!(!req.target_cpu.is_empty(), "ptx linker: rustc gave no --target-cpu");
    Ok(req)
}

fn tool(name: &str) -> Result<PathBuf> {
    let dir = std::env::var_os(ENV_LLVM_TOOLS).context("INFLIGHT_LLVM_TOOLS is not set")?;
    let p = Path::new(&dir).join(name);
    ensure!(p.exists(), "LLVM tool {} not found (is the llvm-tools component installed?)", p.display());
    Ok(p)
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{:?} failed ({}):\n{}", cmd, out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn is_bitcode(path: &Path) -> bool {
    std::fs::read(path).map(|b| b.starts_with(b"BC\xC0\xDE")).unwrap_or(false)
}

/// Extracts every bitcode member of `rlib` into `dir`.
fn extract_bitcode_members(rlib: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    run(Command::new(tool("llvm-ar")?).arg("x").arg(rlib).current_dir(dir))?;
    let mut members: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_bitcode(p))
        .collect();
    members.sort();
    Ok(members)
}

/// Moves every global placed in [`SHARED_SECTION`] to address space 3 (CTA shared memory):
/// its definition gets `addrspace(3)` and an undefined initialiser, and every use becomes an
/// `addrspacecast` back to a generic pointer, which LLVM's address-space inference folds.
pub fn rewrite_shared_statics(ir: &str) -> Result<(String, usize)> {
    let mut names = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    for line in ir.lines() {
        if line.starts_with('@') && line.contains(&format!("section \"{SHARED_SECTION}\"")) {
            let name_end = line.find(" = ").context("malformed global definition")?;
            let name = line[..name_end].to_owned();
            let rest = &line[name_end + 3..];
            let gpos = rest.find("global ").context("shared static is not a global")?;
            let (linkage, after) = rest.split_at(gpos);
            let after = &after["global ".len()..];
            // `<type> <initialiser>, section ...`: keep the type, drop the initialiser.
            let comma = after.find(", section").context("shared static without section")?;
            let ty_and_init = &after[..comma];
            let ty = split_type(ty_and_init)?;
            let linkage = linkage.replace("unnamed_addr ", "").replace("local_unnamed_addr ", "");
            lines.push(format!("{name} = {linkage}addrspace(3) global {ty} undef{}", &after[comma..]));
            names.push(name);
        } else {
            lines.push(line.to_owned());
        }
    }
    if names.is_empty() {
        return Ok((ir.to_owned(), 0));
    }
    let mut out = String::with_capacity(ir.len() + 64 * names.len());
    for line in &lines {
        let is_def = names.iter().any(|n| line.starts_with(&format!("{n} = ")));
        if is_def {
            out.push_str(line);
        } else {
            out.push_str(&replace_uses(line, &names));
        }
        out.push('\n');
    }
    Ok((out, names.len()))
}

/// The type part of `<type> <initialiser>` (types may contain spaces: `[32 x float]`).
fn split_type(s: &str) -> Result<&str> {
    let s = s.trim();
    if s.starts_with('[') || s.starts_with('{') || s.starts_with('<') {
        let (open, close) = match s.as_bytes()[0] {
            b'[' => (b'[', b']'),
            b'{' => (b'{', b'}'),
            _ => (b'<', b'>'),
        };
        let mut depth = 0;
        for (i, b) in s.bytes().enumerate() {
            if b == open {
                depth += 1;
            } else if b == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(&s[..=i]);
                }
            }
        }
        bail!("unbalanced type in {s:?}")
    } else {
        Ok(s.split_whitespace().next().context("empty global type")?)
    }
}

fn replace_uses(line: &str, names: &[String]) -> String {
    let mut out = String::with_capacity(line.len());
    let bytes = line.as_bytes();
    let mut i = 0;
    'outer: while i < bytes.len() {
        if bytes[i] == b'@' {
            for n in names {
                let end = i + n.len();
                let whole = line[i..].starts_with(n.as_str())
                    && bytes.get(end).is_none_or(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$'));
                if whole {
                    // Typed-pointer contexts read `ptr @X`: the cast goes in place of `@X`.
                    out.push_str(&format!("addrspacecast (ptr addrspace(3) {n} to ptr)"));
                    i = end;
                    continue 'outer;
                }
            }
        }
        let ch = line[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The linker entry point.
pub fn link(args: &[String]) -> Result<()> {
    let req = parse(args)?;
    let work = req.output.with_extension("link");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let crate_bc = work.join("crate.bc");
    run(Command::new(tool("llvm-link")?).args(&req.objects).arg("-o").arg(&crate_bc))?;

    let mut members = Vec::new();
    for (i, rlib) in req.rlibs.iter().enumerate() {
        members.extend(extract_bitcode_members(rlib, &work.join(format!("rlib{i}")))?);
    }
    let libs_bc = work.join("libs.bc");
    run(Command::new(tool("llvm-link")?).args(&members).arg("-o").arg(&libs_bc))?;

    let libdevice = std::env::var_os(ENV_LIBDEVICE).context("INFLIGHT_LIBDEVICE is not set")?;
    let linked_ll = work.join("linked.ll");
    run(Command::new(tool("llvm-link")?)
        .arg(&crate_bc)
        .arg("--only-needed")
        .arg(&libs_bc)
        .arg(&libdevice)
        .arg("-S")
        .arg("-o")
        .arg(&linked_ll))?;

    let ir = std::fs::read_to_string(&linked_ll)?;
    let (ir, _n_shared) = rewrite_shared_statics(&ir)?;
    let shared_ll = work.join("shared.ll");
    std::fs::write(&shared_ll, ir)?;

    let exports_file = work.join("exports.txt");
    std::fs::write(&exports_file, req.exports.join("\n") + "\n")?;
    let opt_bc = work.join("opt.bc");
    run(Command::new(tool("opt")?)
        .arg(&shared_ll)
        .arg(format!("--internalize-public-api-file={}", exports_file.display()))
        .arg("-passes=internalize,globaldce,default<O3>,globaldce")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&opt_bc))?;
    run(Command::new(tool("llc")?)
        .arg("-O3")
        .arg(format!("-mcpu={}", req.target_cpu))
        .arg("-mattr=+ptx80")
        .arg(&opt_bc)
        .arg("-o")
        .arg(&req.output))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_statics_move_to_addrspace_3() {
        let ir = "@RED = internal global [32 x float] zeroinitializer, section \".nvptx.shared\", align 4\n\
                  @other = internal global i32 0\n\
                  define void @k() {\n  store float 1.0, ptr @RED, align 4\n  %p = getelementptr inbounds i8, ptr @RED, i64 4\n  ret void\n}\n";
        let (out, n) = rewrite_shared_statics(ir).unwrap();
        assert_eq!(n, 1);
        assert!(out.contains("@RED = internal addrspace(3) global [32 x float] undef, section"), "{out}");
        assert!(out.contains("store float 1.0, ptr addrspacecast (ptr addrspace(3) @RED to ptr)"), "{out}");
        assert!(out.contains("@other = internal global i32 0"));
    }

    #[test]
    fn names_with_common_prefixes_are_not_confused() {
        let ir = "@A = internal global [4 x i32] zeroinitializer, section \".nvptx.shared\", align 4\n  load i32, ptr @AB\n";
        let (out, _) = rewrite_shared_statics(ir).unwrap();
        assert!(out.contains("ptr @AB"));
    }

    #[test]
    fn parses_rustc_arguments() {
        let args: Vec<String> = "--export-symbol k1 --export-symbol k2 a.o libcore.rlib -L x --target nvptx64-nvidia-cuda --target-cpu sm_80 --target-feature=+ptx80 -o out.ptx -O3 --debug"
            .split(' ')
            .map(str::to_owned)
            .collect();
        let r = parse(&args).unwrap();
        assert_eq!(r.exports, ["k1", "k2"]);
        assert_eq!(r.target_cpu, "sm_80");
        assert_eq!(r.rlibs.len(), 1);
        assert_eq!(r.objects.len(), 1);
    }
}
