//! The torch-free build (`make test` runs `cargo test --no-default-features --target-dir
//! target/lite --test lite` after the main suite): it runs data commands without libtorch and
//! writes the same datasets as the libtorch build, and hands every other command, unchanged, to
//! the libtorch build it finds in the cargo layout (`target/lite/debug` → `target/debug`).
#![cfg(not(feature = "torch"))]

mod common;
use common::*;

use std::path::PathBuf;
use std::process::Command;

/// The libtorch build of this checkout (built by the main test suite).
fn torch_build() -> PathBuf {
    let lite = bin();
    let profile = lite.parent().unwrap().file_name().unwrap().to_owned();
    let full = lite.parent().unwrap().parent().unwrap().parent().unwrap().join(profile).join("trajflow");
    assert!(full.is_file(), "{} is missing: run the main test suite (cargo test) first", full.display());
    full
}

fn lite(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    // No LD_LIBRARY_PATH and no rpath to libtorch: a binary that needed libtorch would not start.
    c.args(args).env_remove("LD_LIBRARY_PATH").env_remove("TRAJFLOW_TORCH_BIN");
    c
}

fn stdout_of(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn data_commands_run_without_libtorch_and_equal_the_libtorch_build() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    interleaved_files(&input, 30, 4, 3, 11);
    for p in ["poad_advantages.toml", "loop_advantages.toml"] {
        for columns in ["all", "final"] {
            let (a, b) =
                (dir.path().join(format!("{p}-{columns}-lite")), dir.path().join(format!("{p}-{columns}-torch")));
            let args = ["reprocess", &pipeline(p), "--input", s(&input), "-w", "2", "--columns", columns, "--output"];
            stdout_of(lite(&[&args[..], &[s(&a)]].concat()));
            let mut full = Command::new(torch_build());
            full.args(args).arg(&b);
            stdout_of(full);
            assert_same_dataset(&a, &b);
        }
    }
    assert!(
        stdout_of(lite(&["inspect", s(&dir.path().join("poad_advantages.toml-final-lite"))])).contains("advantages")
    );
}

#[test]
fn model_commands_are_handed_to_the_libtorch_build() {
    let mut direct = Command::new(torch_build());
    direct.arg("doctor");
    assert_eq!(stdout_of(lite(&["doctor"])), stdout_of(direct), "doctor runs in the libtorch build");
    let help = stdout_of(lite(&["--help"]));
    assert!(help.contains("generate") && help.contains("reprocess"), "the full command list:\n{help}");
}

#[test]
fn a_missing_libtorch_build_is_a_clear_error_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let missing = dir.path().join("no-such-trajflow");
    let input = dir.path().join("in");
    interleaved_files(&input, 4, 2, 1, 1);
    for args in [
        vec!["run", "pipelines/loop.toml", "--out", s(&out)],
        vec!["reprocess", "pipelines/loop.toml", "--input", s(&input), "--output", s(&out), "--train"],
    ] {
        let res = lite(&args).env("TRAJFLOW_TORCH_BIN", &missing).output().unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success() && err.contains("no-such-trajflow"), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}
