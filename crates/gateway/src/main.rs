//! The `comfyume` binary: everything lives in the library; see `cli`, and
//! `allocator` for why this allocator.

#[global_allocator]
static ALLOCATOR: comfyume::allocator::Allocator = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    comfyume::cli::main()
}
