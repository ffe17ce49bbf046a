//! Binary entry point of the `server-migration` Update Module; all logic is in the library.

fn main() {
    std::process::exit(server_migration::cli::main_with(
        std::env::args_os().skip(1).collect(),
    ));
}
