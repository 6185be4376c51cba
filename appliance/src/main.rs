//! `labboot`: the thin entry point. All logic lives in the `appliance` library.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    appliance::cli::main()
}
