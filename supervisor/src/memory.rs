//! Keeping the init's resident set to the pages it uses. decant-init is a static binary whose
//! text (about 1.1 MB, most of it glibc and std code that only start-up or never runs) is
//! mapped from the page cache. Two kernel behaviours make nearly all of it resident: on a page
//! fault the kernel maps up to 64 kB around the faulting page (fault-around), and the page
//! cache holds the file in large folios that are mapped whole. So:
//! - [`no_fault_around`] (first thing in `main`): MADV_RANDOM on our own image, so a fault maps
//!   the faulting page only and read-ahead reads no more than it;
//! - [`release_text`] (once, after the first services are started): MADV_PAGEOUT on the
//!   read-only part of the image, so the clean pages of start-up code leave this process's
//!   resident set (the kernel skips pages another process also maps, such as a second
//!   container's init); the event loop faults back, page by page, only what it runs.
//!
//! Both are hints: on failure (an old kernel, a missing symbol range) nothing changes but the
//! RSS. They change no memory contents and no mapping, so they are safe for any code.

extern "C" {
    // The linker's symbols for the first byte of the loaded image, the end of its text, and
    // the end of its bss.
    static __ehdr_start: u8;
    static etext: u8;
    static end: u8;
}

const PAGE: usize = 4096;

fn advise(first: usize, last: usize, advice: libc::c_int) {
    let first = first & !(PAGE - 1);
    if let Some(len) = last.checked_sub(first).filter(|l| *l > 0) {
        // SAFETY: MADV_RANDOM and MADV_PAGEOUT are hints about our own mappings; they change
        // no memory contents (clean file pages are read back on the next access) and no
        // mapping, so no Rust reference is affected. Errors only mean the hint was not taken.
        unsafe {
            libc::madvise(first as *mut libc::c_void, len, advice);
        }
    }
}

/// MADV_RANDOM over the whole loaded image: no fault-around, no read-ahead.
pub fn no_fault_around() {
    advise(
        (&raw const __ehdr_start) as usize,
        (&raw const end) as usize,
        libc::MADV_RANDOM,
    );
}

/// MADV_PAGEOUT over the image's headers and text (never over writable data: private written
/// pages would have to go to swap, and the kernel never drops them).
pub fn release_text() {
    advise(
        (&raw const __ehdr_start) as usize,
        (&raw const etext) as usize,
        libc::MADV_PAGEOUT,
    );
}
