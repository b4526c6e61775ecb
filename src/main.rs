//! The `trajflow` binary: parse the command line, run it, print the result or the error.

use clap::Parser;

fn main() {
    trajflow::memory::retain_freed_memory(cfg!(feature = "torch"));
    // The torch-free build runs data commands itself and hands the rest to the libtorch build.
    #[cfg(not(feature = "torch"))]
    trajflow::cli::hand_over::hand_over_if_needed(&std::env::args_os().collect::<Vec<_>>());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TRAJFLOW_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = trajflow::cli::run(trajflow::cli::Cli::parse());
    // Idle environment processes are closed as the bridge protocol says, not killed at exit.
    trajflow::env::bridge::close_idle();
    match result {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
