//! `mender-migrate`: the binary is argument parsing only; everything lives in the library.

fn main() -> std::process::ExitCode {
    mender_migrate::main_with_args(std::env::args_os())
}
