//! `labboot`: the thin entry point. All logic lives in the `appliance` library.

fn main() -> std::process::ExitCode {
    appliance::cli::main()
}
