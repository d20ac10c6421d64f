//! The `comfyume` binary: everything lives in the library; see `cli`.

/// mimalloc, not glibc's malloc: each password check allocates and frees a
/// 19 MiB Argon2 buffer, and glibc (whose mmap threshold rises to the size
/// of the largest block freed) keeps such blocks in per-thread arenas for
/// good. Measured on 2 cores, a release build after 300 failed logins (150
/// at a time): glibc 73 MB → 699 MB resident, never returned; mimalloc
/// 46 MB → 73 MB. The login flood test in tests/integration/cli.rs holds
/// the binary to a bound. mimalloc hands freed memory back only on a later
/// call from the freeing thread; `MIMALLOC_PURGE_DELAY=0` (set by the
/// systemd unit and the container image) makes it immediate: after 20
/// logins at once, 36 MiB resident instead of 75-97 MiB for ten seconds,
/// with no measurable cost in jobs per second (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    comfyume::cli::main()
}
