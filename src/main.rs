//! The `prism` binary: everything happens in the library.

fn main() -> std::process::ExitCode {
    prism::cli::main()
}
