//! The torch-free build as the front of `trajflow`. Built without the `torch` feature
//! (`make build` puts it in `target/lite/release/`), the binary does not link libtorch, so data
//! commands (`validate`, `explain`, `inspect`, `reprocess`, `watch`, `synth`, …) start in
//! milliseconds and use a fraction of the memory. A command it cannot run — a subcommand it does
//! not have (`run`, `generate`, `score`, …) or `--train` / `--import` — is handed over, arguments
//! untouched, to the libtorch build by `exec`, before anything is read or written. Invariant: the
//! front either runs a command itself from start to end or not at all.
//!
//! The libtorch build is, in order: `$TRAJFLOW_TORCH_BIN`; `trajflow-torch` beside this binary;
//! the cargo layout `X/lite/PROFILE/trajflow` → `X/PROFILE/trajflow`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::Cli;

/// The environment variable naming the libtorch build of `trajflow`.
pub const TORCH_BIN_VAR: &str = "TRAJFLOW_TORCH_BIN";

/// Replaces this process with the libtorch build when `args` (the whole command line, program
/// name first) need it; returns when this build runs the command itself. A command that needs
/// libtorch when no libtorch build can be found exits with an error that says how to get one.
pub fn hand_over_if_needed(args: &[OsString]) {
    if !needs_torch(args) {
        return;
    }
    let exe = std::env::current_exe().ok();
    let Some(torch) = torch_binary(std::env::var_os(TORCH_BIN_VAR), exe.as_deref()) else {
        if is_known_subcommand(args) {
            eprintln!(
                "error: this trajflow is built without libtorch and `--train`/`--import` need it; \
                 build it with `make build` (or set {TORCH_BIN_VAR} to a trajflow built with the torch feature)"
            );
            std::process::exit(2);
        }
        return; // an unknown subcommand: let clap say so.
    };
    let err = std::process::Command::new(&torch).args(&args[1..]).exec();
    eprintln!("error: cannot run the libtorch build {}: {err}", torch.display());
    std::process::exit(1);
}

/// Whether the command line asks for something only the libtorch build has: a subcommand this
/// build does not know (the help of the full command list included), or `--train` / `--import`.
pub fn needs_torch(args: &[OsString]) -> bool {
    let Some(sub) = args.get(1).and_then(|a| a.to_str()) else {
        return false;
    };
    let cli = Cli::command();
    let known = |s: &str| cli.find_subcommand(s).is_some();
    if matches!(sub, "-h" | "--help" | "help") {
        return args.len() == 2 || args.get(2).is_some_and(|a| !known(a.to_str().unwrap_or_default()));
    }
    if sub.starts_with('-') {
        return false;
    }
    if !known(sub) {
        return true;
    }
    args[2..].iter().filter_map(|a| a.to_str()).any(|a| a == "--train" || a == "--import" || a.starts_with("--import="))
}

/// Whether `args` name a subcommand of this build (so only `--train` / `--import` needed libtorch).
fn is_known_subcommand(args: &[OsString]) -> bool {
    args.get(1).and_then(|a| a.to_str()).is_some_and(|s| Cli::command().find_subcommand(s).is_some())
}

/// Where the libtorch build is (see the module documentation), if it exists.
pub fn torch_binary(var: Option<OsString>, exe: Option<&Path>) -> Option<PathBuf> {
    if let Some(v) = var.filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(v));
    }
    let exe = exe?;
    let dir = exe.parent()?;
    let beside = dir.join("trajflow-torch");
    if beside.is_file() {
        return Some(beside);
    }
    let profile = dir.file_name()?;
    let lite = dir.parent()?;
    if lite.file_name()? != "lite" {
        return None;
    }
    let cargo = lite.parent()?.join(profile).join(exe.file_name()?);
    cargo.is_file().then_some(cargo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn data_commands_stay_and_the_others_are_handed_over() {
        for stay in [
            "trajflow",
            "trajflow --version",
            "trajflow validate p.toml",
            "trajflow reprocess p.toml --input a --output b -w 2",
            "trajflow watch p.toml --input a --output b",
            "trajflow inspect d",
            "trajflow help reprocess",
            "trajflow reprocess --help",
        ] {
            assert!(!needs_torch(&args(stay)), "{stay}");
        }
        for go in [
            "trajflow run pipelines/loop.toml --out r",
            "trajflow generate --model smollm2-135m --chat hi",
            "trajflow reprocess p.toml --input a --output b --train",
            "trajflow watch p.toml --input a --output b --import openai --model m",
            "trajflow watch p.toml --input a --output b --import=openai",
            "trajflow --help",
            "trajflow help",
            "trajflow help run",
            "trajflow no-such-command",
        ] {
            assert!(needs_torch(&args(go)), "{go}");
        }
    }

    #[test]
    fn the_torch_build_is_found_by_variable_beside_or_in_the_cargo_layout() {
        let dir = tempfile::tempdir().unwrap();
        let var = Some(OsString::from("/opt/trajflow"));
        assert_eq!(torch_binary(var, None), Some(PathBuf::from("/opt/trajflow")));

        let (lite, full) = (dir.path().join("lite/release"), dir.path().join("release"));
        std::fs::create_dir_all(&lite).unwrap();
        std::fs::create_dir_all(&full).unwrap();
        let exe = lite.join("trajflow");
        assert_eq!(torch_binary(None, Some(&exe)), None, "nothing built yet");
        std::fs::write(full.join("trajflow"), "").unwrap();
        assert_eq!(torch_binary(Some(OsString::new()), Some(&exe)), Some(full.join("trajflow")));
        std::fs::write(lite.join("trajflow-torch"), "").unwrap();
        assert_eq!(torch_binary(None, Some(&exe)), Some(lite.join("trajflow-torch")));
        assert_eq!(torch_binary(None, Some(&full.join("trajflow"))), None, "not in a lite folder");
    }
}
