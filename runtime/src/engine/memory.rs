//! Keeping a monitor's resident set to the pages it uses (issue target: at most 2 MB). A
//! monitor is a fork of the `decant` command that started the container, so it starts with
//! that command's resident code: clap, serde, the store, most of std and glibc, a few MB of
//! text and read-only data of which its event loop (poll, read, write the log, waitpid) uses
//! a few pages. Once the container runs, [`release_code`] drops this process's mappings of
//! those pages (MADV_DONTNEED on read-only file mappings without a private copy of any page:
//! the page cache still holds them and a page the loop needs comes back with a minor fault;
//! the page cache is not evicted, unlike MADV_PAGEOUT, so the next `decant` command starts as
//! fast), asks for no fault-around on them (MADV_RANDOM: a fault maps one page, not 64 kB),
//! gives back the dead part of the stack below the current frame, and gives the heap's free
//! memory back (malloc_trim).
//!
//! Other writable or copied-on-write mappings (data, relocations, the heap) are never
//! touched: dropping them would lose contents. The advice only changes what is resident.
//! decant-init does the same for itself (supervisor/src/memory.rs, with MADV_PAGEOUT over its
//! static image); the supervisor crate depends on none of ours, so the two stay apart.

/// Upper bound on /proc/self/smaps read (a monitor has a few dozen mappings, ~1 kB each).
const MAX_SMAPS: u64 = 4 << 20;

/// The read-only file mappings of this process that hold no private copy of any page:
/// (start, length). Text (`r-xp`) and read-only data (`r--p`) qualify; relocated read-only
/// data (RELRO) has private copies (`Anonymous:` above 0) and is left alone.
fn clean_file_ranges(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut take = |c: &mut Option<(usize, usize)>, anonymous: Option<u64>| {
        if let (Some(r), Some(0)) = (c.take(), anonymous) {
            out.push(r);
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else {
            continue;
        };
        if first == "Anonymous:" {
            let kb = f.next().and_then(|v| v.parse::<u64>().ok());
            take(&mut current, kb);
            continue;
        }
        let Some((a, b)) = first.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        // A mapping header: start-end perms offset dev inode [path].
        current = None;
        let (Some(perms), Some(_offset), Some(_dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        // Anonymous memory ([vdso], [stack], the heap) has inode 0: never ours to drop.
        if !matches!(perms, "r-xp" | "r--p") || inode == "0" {
            continue;
        }
        current = b.checked_sub(a).filter(|l| *l > 0).map(|len| (a, len));
    }
    out
}

/// The `[stack]` mapping: (start, end).
fn stack_range(smaps: &str) -> Option<(usize, usize)> {
    let line = smaps.lines().find(|l| l.ends_with("[stack]"))?;
    let (a, b) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        usize::from_str_radix(a, 16).ok()?,
        usize::from_str_radix(b, 16).ok()?,
    ))
}

/// The starting command's deepest calls (argument parsing, the store, JSON) left stack pages
/// resident far below where the monitor's loop runs; the part of the stack more than
/// [`STACK_KEEP`] below this frame holds nothing live (the stack grows down) and is given back.
fn release_stack_below_here(smaps: &str) {
    let marker = 0u8;
    let here = std::hint::black_box(std::ptr::addr_of!(marker)) as usize;
    let Some((start, end)) = stack_range(smaps) else {
        return;
    };
    if here < start || here >= end {
        return;
    }
    let top = here.saturating_sub(STACK_KEEP) & !(PAGE - 1);
    if top > start {
        // SAFETY: [start, top) is the part of this thread's stack mapping at least
        // STACK_KEEP below the current frame: no live frame or signal frame is there (the
        // callees of this function use a few hundred bytes), so its pages are dead; after
        // MADV_DONTNEED they read as zero when the stack grows into them again, as fresh
        // stack pages do.
        unsafe {
            libc::madvise(start as *mut libc::c_void, top - start, libc::MADV_DONTNEED);
        }
    }
}

/// How much of the stack below the current frame is kept.
const STACK_KEEP: usize = 16 << 10;
const PAGE: usize = 4096;

/// Drops this process's resident pages of read-only file mappings (they stay in the page
/// cache), the dead part of its stack and the heap's free memory.
pub fn release_code() {
    let Ok(f) = std::fs::File::open("/proc/self/smaps") else {
        return;
    };
    let mut smaps = String::new();
    if std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_SMAPS), &mut smaps).is_err() {
        return;
    }
    release_stack_below_here(&smaps);
    for (start, len) in clean_file_ranges(&smaps) {
        // SAFETY: the range is one of this process's read-only file mappings with no private
        // page (the kernel's own smaps says so), so every resident page is the page cache's;
        // MADV_RANDOM and MADV_DONTNEED change no mapping and no contents a reader could
        // see: a later access maps the same page-cache page again. Errors only mean the
        // advice was not taken.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_RANDOM);
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
        }
    }
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_taken() {
        let smaps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:00 123 /usr/bin/decant
Rss:                 100 kB
Anonymous:             0 kB
55d0c0100000-55d0c0900000 r-xp 00100000 fe:00 123 /usr/bin/decant
Anonymous:             0 kB
55d0c0900000-55d0c0980000 r--p 00900000 fe:00 123 /usr/bin/decant
Anonymous:            12 kB
55d0c0980000-55d0c0a00000 rw-p 00980000 fe:00 123 /usr/bin/decant
Anonymous:             0 kB
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f0000005000-7f0000004000 r-xp 00000000 fe:00 9 /lib/backwards
Anonymous:             0 kB
7f0000006000-7f0000007000 r-xp 00000000 fe:00 9 /lib/no-anonymous-line
garbage line
";
        assert_eq!(
            clean_file_ranges(smaps),
            vec![(0x55d0c0000000, 0x100000), (0x55d0c0100000, 0x800000)]
        );
    }

    #[test]
    fn the_stack_mapping_is_found() {
        let smaps =
            "7ffc0000-7ffd0000 rw-p 00000000 00:00 0                          [stack]\nRss: 4 kB\n";
        assert_eq!(stack_range(smaps), Some((0x7ffc0000, 0x7ffd0000)));
        assert_eq!(stack_range("garbage\n"), None);
    }

    #[test]
    fn release_keeps_this_process_running() {
        release_code();
        // Code and data still work after the advice: the text comes back on demand.
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }
}
