//! Links `torch_cuda` explicitly when the libtorch in use ships it, so that CUDA is available at run
//! time on GPU machines (the linker would otherwise drop the unused library, and
//! `Cuda::is_available()` would silently say no), and records libtorch's folder as the binary's
//! run path so that `trajflow` starts without `LD_LIBRARY_PATH`.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    let Some(root) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        return;
    };
    let lib = root.join("lib");
    // Find libtorch at run time without LD_LIBRARY_PATH (it still takes precedence when set).
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
