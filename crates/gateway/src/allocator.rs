//! The process's memory allocator, and the one moment the gateway asks it
//! to hand memory back.
//!
//! mimalloc, not glibc's malloc: each password check allocates and frees a
//! 19 MiB Argon2 buffer, and glibc (whose mmap threshold rises to the size
//! of the largest block freed) keeps such blocks in per-thread arenas for
//! good. Measured on 2 cores, a release build after 300 failed logins (150
//! at a time): glibc 73 MB → 699 MB resident, never returned; mimalloc
//! 46 MB → 73 MB.
//!
//! Built without transparent huge pages (mimalloc's `no_thp` feature):
//! with them every arena region touched costs a whole 2 MiB page, 16 MiB of
//! an idle gateway's 29 MiB. Without: 17 MiB idle, 24 MiB after 200 logins
//! at once (BENCHMARKS.md), for password hashes ~15% slower (more page
//! faults on the fresh Argon2 buffer).
//!
//! mimalloc returns freed memory to the system lazily: ten seconds after
//! the free, and then only when some later allocation looks. A login storm
//! would leave two or three Argon2 buffers resident for that long, so each
//! hash ends with [`release_freed`] (see `auth::password`).

/// The allocator `main.rs` installs.
pub type Allocator = mimalloc::MiMalloc;

// `mi_collect` only walks the allocator's own bookkeeping: it takes no
// pointer and may be called from any thread at any time, which is what
// makes declaring it `safe` sound.
#[allow(unsafe_code)]
unsafe extern "C" {
    safe fn mi_collect(force: bool);
}

/// Hands the memory this thread freed (and every arena's pending purge)
/// back to the system now. It walks the allocator's state: cheap next to
/// a password hash, not meant for hot paths.
pub fn release_freed() {
    // Keeps the symbol resolved against the mimalloc this crate links.
    let _: &Allocator = &mimalloc::MiMalloc;
    mi_collect(true);
}
