//! Cross-check against an independent implementation: `benches/reference.py` computes the same
//! advantage pipelines in PyTorch (veRL-style padded tensors) and must agree with trajflow within
//! 1e-5 on synthetic data and on an edge-case dataset (adjacent actions, null bootstraps, groups
//! of one, episodes without actions). Needs the bootstrap venv (`make test` sets
//! TRAJFLOW_PYTHON); without it the test says SKIPPED on stderr and passes.

mod common;

#[test]
fn pytorch_reference_agrees_on_every_advantage_pipeline() {
    let Ok(python) = std::env::var("TRAJFLOW_PYTHON") else {
        eprintln!("SKIPPED: TRAJFLOW_PYTHON is not set (run through `make test`)");
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/check_reference.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(["--bin", common::bin().to_str().unwrap(), "--groups", "120"])
        .output()
        .expect("python runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "reference check failed:\n{text}");
    eprintln!("{text}");
}
