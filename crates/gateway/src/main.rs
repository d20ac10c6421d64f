//! The `comfyume` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    comfyume::cli::main()
}
