//! jbd2 replay against real dirty journals: ones written by `debugfs` journal commands and one
//! copied from a mounted filesystem, each checked block by block against `e2fsck`'s own replay.
//! Plus hostile journals made by damaging those real ones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use import::block::{BlockSource, FileSource, MemSource};
use import::fs::ext4::journal::{replay, JournalError, JournalReplay};

const MAGIC: [u8; 4] = [0xC0, 0x3B, 0x39, 0x98];

/// Runs a tool; a missing tool or a failure fails the test with the command line.
fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An ext4 image with a few files, built by mkfs with no mount.
fn mkfs(dir: &Path, name: &str, extra: &[&str], size: &str) -> PathBuf {
    let content = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(content.join("etc")).unwrap();
    std::fs::write(content.join("etc/hostname"), "journal-test\n").unwrap();
    std::fs::write(content.join("big"), vec![7u8; 100_000]).unwrap();
    let img = dir.join(name);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "root_owner=0:0"])
        .args(extra)
        .arg("-d")
        .arg(&content)
        .arg(&img)
        .arg(size));
    img
}

fn dumpe2fs_field(img: &Path, field: &str) -> String {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(img));
    out.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim_start_matches(':').trim().to_string())
        .unwrap_or_else(|| panic!("dumpe2fs -h {} has no {field}", img.display()))
}

fn block_size(img: &Path) -> u32 {
    dumpe2fs_field(img, "Block size").parse().unwrap()
}

fn block_count(img: &Path) -> u64 {
    dumpe2fs_field(img, "Block count").parse().unwrap()
}

fn needs_recovery(img: &Path) -> bool {
    dumpe2fs_field(img, "Filesystem features").contains("needs_recovery")
}

/// The journal inode's blocks in logical order, as the ext4 reader would map them.
fn journal_blocks(img: &Path) -> Vec<u64> {
    let out = run(Command::new("debugfs").arg("-R").arg("blocks <8>").arg(img));
    let blocks: Vec<u64> = out.split_whitespace().map(|b| b.parse().unwrap()).collect();
    assert!(!blocks.is_empty(), "debugfs lists no journal blocks");
    blocks
}

/// Runs debugfs commands (one a line) read-write on `img`.
fn debugfs(img: &Path, commands: &str) {
    let script = img.with_extension("cmds");
    std::fs::write(&script, commands).unwrap();
    let out = run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(img));
    assert!(
        !out.contains("rror") && !out.contains("sage:"),
        "debugfs complained: {out}"
    );
}

/// A file of `count` blocks, block i filled with byte `seed + i`; block 1 starts with the jbd2
/// magic so that the journal has to escape it.
fn pattern_file(dir: &Path, name: &str, count: usize, bs: usize, seed: u8) -> PathBuf {
    let mut data = Vec::new();
    for i in 0..count {
        data.extend(std::iter::repeat_n(seed.wrapping_add(i as u8), bs));
    }
    if count > 1 {
        data[bs..bs + 4].copy_from_slice(&MAGIC);
    }
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn open_replay(img: &Path) -> Result<Option<JournalReplay>, JournalError> {
    let base: Arc<dyn BlockSource> = Arc::new(FileSource::open(img).unwrap());
    replay(base, block_size(img), journal_blocks(img))
}

/// A copy of `img` with the journal replayed by e2fsck and nothing else changed.
fn e2fsck_copy(img: &Path) -> PathBuf {
    let fixed = img.with_extension("e2fsck");
    std::fs::copy(img, &fixed).unwrap();
    run(Command::new("e2fsck")
        .args(["-E", "journal_only", "-y"])
        .arg(&fixed));
    assert!(!needs_recovery(&fixed), "e2fsck left needs_recovery set");
    fixed
}

fn read_block(src: &dyn BlockSource, block: u64, bs: u32) -> Vec<u8> {
    let mut buf = vec![0u8; bs as usize];
    src.read_at(block * u64::from(bs), &mut buf).unwrap();
    buf
}

/// Every filesystem block read through our replay equals e2fsck's replayed copy, except the
/// blocks e2fsck rewrites itself once it is done (the ext4 superblock and the journal superblock).
fn assert_same_as_e2fsck(img: &Path, replayed: &JournalReplay) {
    let bs = block_size(img);
    let fixed = FileSource::open(&e2fsck_copy(img)).unwrap();
    let superblock = 1024 / u64::from(bs);
    let journal_sb = journal_blocks(img)[0];
    let mut compared = 0;
    for block in 0..block_count(img) {
        if block == superblock || block == journal_sb {
            continue;
        }
        let ours = read_block(replayed, block, bs);
        let theirs = read_block(&fixed, block, bs);
        assert!(
            ours == theirs,
            "block {block} differs from e2fsck's replay (in our replay map: {})",
            replayed.replayed_block_numbers().any(|b| b == block)
        );
        compared += 1;
    }
    assert!(compared > 1000);
}

fn tempdir() -> tempfile::TempDir {
    tempfile::TempDir::new().unwrap()
}

#[test]
fn clean_journal_needs_no_replay() {
    let dir = tempdir();
    let img = mkfs(dir.path(), "clean.img", &[], "8M");
    assert!(open_replay(&img).unwrap().is_none());
}

/// Transactions written by debugfs: a committed one with an escaped block, one revoking a
/// block of the first, and an uncommitted one that must not be applied.
fn debugfs_journal(extra: &[&str], size: &str, open: &str) {
    let dir = tempdir();
    let img = mkfs(dir.path(), "dirty.img", extra, size);
    let bs = block_size(&img);
    let n = block_count(&img);
    let (a, b, c, d) = (n - 20, n - 19, n - 18, n - 10);
    let first = pattern_file(dir.path(), "first", 3, bs as usize, 0x40);
    let again = pattern_file(dir.path(), "again", 1, bs as usize, 0x90);
    let late = pattern_file(dir.path(), "late", 1, bs as usize, 0xA0);
    debugfs(
        &img,
        &format!(
            "{open}\njw -b {a},{b},{c} {}\njw -r {a}\njw -b {d} {}\njw -b {c} -c {}\njc\n",
            first.display(),
            again.display(),
            late.display()
        ),
    );
    assert!(needs_recovery(&img));
    let base = FileSource::open(&img).unwrap();
    let replayed = open_replay(&img).unwrap().expect("a dirty journal");
    assert_eq!(replayed.transactions(), 3);
    assert_eq!(replayed.stopped_early(), None);
    let blocks: Vec<u64> = replayed.replayed_block_numbers().collect();
    assert_eq!(
        blocks,
        vec![b, c, d],
        "a is revoked, the uncommitted c copy is ignored"
    );
    assert_eq!(read_block(&replayed, a, bs), read_block(&base, a, bs));
    let escaped = read_block(&replayed, b, bs);
    assert_eq!(escaped[..4], MAGIC, "escaped block gets its magic back");
    assert!(escaped[4..].iter().all(|&x| x == 0x41));
    assert!(read_block(&replayed, c, bs).iter().all(|&x| x == 0x42));
    assert!(read_block(&replayed, d, bs).iter().all(|&x| x == 0x90));

    // Reads that start mid-block and span several blocks.
    let start = b * u64::from(bs) - 3;
    let mut span = vec![0u8; bs as usize * 2 + 9];
    replayed.read_at(start, &mut span).unwrap();
    let mut expected = read_block(&base, b - 1, bs)[bs as usize - 3..].to_vec();
    expected.extend(read_block(&replayed, b, bs));
    expected.extend(read_block(&replayed, c, bs));
    expected.extend(&read_block(&base, c + 1, bs)[..6]);
    assert_eq!(span, expected);
    let mut two = [0u8; 2];
    replayed.read_at(b * u64::from(bs) + 1, &mut two).unwrap();
    assert_eq!(two, MAGIC[1..3]);

    assert_same_as_e2fsck(&img, &replayed);
}

#[test]
fn debugfs_journal_plain_64bit() {
    debugfs_journal(&[], "8M", "jo");
}

#[test]
fn debugfs_journal_csum_v3_4k() {
    debugfs_journal(&["-b", "4096"], "32M", "jo -c -v 3");
}

#[test]
fn debugfs_journal_csum_v2() {
    debugfs_journal(&[], "8M", "jo -c -v 2");
}

#[test]
fn debugfs_journal_32bit_tags() {
    debugfs_journal(&["-O", "^64bit,^metadata_csum"], "8M", "jo");
}

#[test]
fn debugfs_journal_ext3() {
    debugfs_journal(&["-t", "ext3"], "8M", "jo");
}

/// A disk copied from a running VM: the image is copied while mounted, after `sync`.
#[test]
fn copy_of_mounted_filesystem_replays_like_e2fsck() {
    mounted_copy(&["-b", "4096"], "loop,commit=1", "journal_checksum_v3");
    // A v1 checksum (crc32 over the transaction in its commit block): a flipped byte in a
    // logged block ends the replay before that transaction, as in the kernel.
    let copy = mounted_copy(
        &["-b", "4096", "-O", "^metadata_csum"],
        "loop,commit=1,journal_checksum",
        "journal_checksum ",
    );
    let blocks = journal_blocks(&copy.1);
    let mut data = std::fs::read(&copy.1).unwrap();
    // Journal block 2 is the first logged block of the first transaction.
    data[blocks[2] as usize * 4096 + 77] ^= 0x20;
    let base: Arc<dyn BlockSource> = Arc::new(MemSource::new(data, "v1.img"));
    let replayed = replay(base, 4096, blocks).unwrap().unwrap();
    assert_eq!(replayed.transactions(), 0);
    assert!(replayed
        .stopped_early()
        .unwrap()
        .contains("bad commit checksum"));
}

/// Makes an image, mounts it, writes, and copies it while mounted; checks the replay of the copy
/// against e2fsck's and that the journal has `feature`. Returns the dir and the copy.
fn mounted_copy(mkfs_args: &[&str], options: &str, feature: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let img = mkfs(dir.path(), "live.img", mkfs_args, "64M");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let copy = dir.path().join("copy.img");
    let mut reason = String::new();
    for attempt in 0..3 {
        run(Command::new("mount")
            .args(["-o", options])
            .arg(&img)
            .arg(&mnt));
        // Several synced batches make several transactions; removing a directory frees
        // metadata blocks, which the kernel revokes.
        let work = || -> std::io::Result<()> {
            let sub = mnt.join(format!("round{attempt}"));
            let doomed = mnt.join(format!("doomed{attempt}"));
            std::fs::create_dir(&doomed)?;
            for i in 0..300 {
                std::fs::write(doomed.join(format!("long-file-name-{i:04}")), b"x")?;
            }
            sync()?;
            std::fs::create_dir(&sub)?;
            for i in 0..200 {
                std::fs::write(sub.join(format!("f{i}")), format!("file {i}\n").repeat(i))?;
            }
            sync()?;
            std::fs::remove_dir_all(&doomed)?;
            let _ = std::fs::remove_file(mnt.join("big"));
            std::os::unix::fs::symlink("etc/hostname", sub.join("link"))?;
            Ok(())
        };
        let worked = work();
        let synced = sync();
        let copied = std::fs::copy(&img, &copy);
        run(Command::new("umount").arg(&mnt));
        worked.unwrap();
        synced.unwrap();
        copied.unwrap();
        if !needs_recovery(&copy) {
            reason = "the copy has no needs_recovery flag".into();
            continue;
        }
        match open_replay(&copy).unwrap() {
            Some(replayed) => {
                eprintln!(
                    "mounted copy: attempt {attempt}, {} transactions, {} blocks",
                    replayed.transactions(),
                    replayed.replayed_blocks()
                );
                assert!(replayed.transactions() > 0);
                assert!(replayed.replayed_blocks() > 0);
                assert_same_as_e2fsck(&copy, &replayed);
                let features = dumpe2fs_field(&copy, "Journal features");
                assert!(format!("{features} ").contains(feature), "{features}");
                return (dir, copy);
            }
            None => reason = "the copy's journal was already checkpointed (s_start 0)".into(),
        }
    }
    panic!("could not make a dirty copy of a mounted filesystem in 3 attempts: {reason}");
}

/// A fast-commit filesystem: a plain `sync` leaves only full commits, which replay; an `fsync`
/// writes fast commits, which we refuse by name rather than silently drop.
#[test]
fn fast_commit_journal() {
    let dir = tempdir();
    let img = mkfs(
        dir.path(),
        "fc.img",
        &["-b", "4096", "-O", "fast_commit"],
        "64M",
    );
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (plain, fast) = (dir.path().join("plain.img"), dir.path().join("fast.img"));
    run(Command::new("mount")
        .args(["-o", "loop,commit=30"])
        .arg(&img)
        .arg(&mnt));
    let work = || -> std::io::Result<()> {
        std::fs::write(mnt.join("synced"), "synced\n")?;
        sync()?;
        std::fs::copy(&img, &plain)?;
        let mut f = std::fs::File::create(mnt.join("fsynced"))?;
        std::io::Write::write_all(&mut f, b"fsynced\n")?;
        f.sync_all()?;
        std::fs::copy(&img, &fast)?;
        Ok(())
    };
    let worked = work();
    run(Command::new("umount").arg(&mnt));
    worked.unwrap();
    assert!(needs_recovery(&plain) && needs_recovery(&fast));
    let replayed = open_replay(&plain).unwrap().expect("a dirty journal");
    assert_same_as_e2fsck(&plain, &replayed);
    let err = open_replay(&fast).err().expect("fast commits are refused");
    assert!(
        err.to_string().contains("fast commits for transaction"),
        "{err}"
    );
}

fn sync() -> std::io::Result<()> {
    let status = Command::new("sync").status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("sync failed"))
    }
}

// ---- hostile journals: damaged copies of a real dirty one ----

struct Dirty {
    _dir: tempfile::TempDir,
    data: Vec<u8>,
    bs: u32,
    blocks: Vec<u64>,
}

impl Dirty {
    fn new(open: &str) -> Dirty {
        let dir = tempdir();
        let img = mkfs(dir.path(), "dirty.img", &[], "8M");
        let bs = block_size(&img);
        let n = block_count(&img);
        let file = pattern_file(dir.path(), "data", 3, bs as usize, 0x10);
        debugfs(
            &img,
            &format!(
                "{open}\njw -b {},{},{} {}\njw -r {}\njc\n",
                n - 5,
                n - 4,
                n - 3,
                file.display(),
                n - 4
            ),
        );
        Dirty {
            data: std::fs::read(&img).unwrap(),
            bs,
            blocks: journal_blocks(&img),
            _dir: dir,
        }
    }

    /// Byte offset in the image of byte `at` of journal block `block`.
    fn offset(&self, block: usize, at: usize) -> usize {
        self.blocks[block] as usize * self.bs as usize + at
    }

    fn patch(&mut self, block: usize, at: usize, bytes: &[u8]) {
        let o = self.offset(block, at);
        self.data[o..o + bytes.len()].copy_from_slice(bytes);
    }

    fn replay(&self) -> Result<Option<JournalReplay>, JournalError> {
        self.replay_data(self.data.clone())
    }

    fn replay_data(&self, data: Vec<u8>) -> Result<Option<JournalReplay>, JournalError> {
        let base: Arc<dyn BlockSource> = Arc::new(MemSource::new(data, "hostile.img"));
        replay(base, self.bs, self.blocks.clone())
    }
}

/// The same log moved round the ring so that it wraps from the journal's end to `s_first`.
#[test]
fn wrapped_log_replays_like_e2fsck() {
    for open in ["jo", "jo -c -v 3"] {
        let j = Dirty::new(open);
        let plain = j.replay().unwrap().unwrap();
        let bs = j.bs as usize;
        let maxlen =
            u32::from_be_bytes(j.data[j.offset(0, 16)..j.offset(0, 20)].try_into().unwrap());
        let ring = maxlen as usize - 1;
        let shift = ring - 3;
        let mut data = j.data.clone();
        for i in 1..=ring {
            let to = 1 + (i - 1 + shift) % ring;
            let (src, dst) = (j.offset(i, 0), j.offset(to, 0));
            data[dst..dst + bs].copy_from_slice(&j.data[src..src + bs]);
        }
        let start = (1 + shift) as u32;
        let o = j.offset(0, 28);
        data[o..o + 4].copy_from_slice(&start.to_be_bytes());
        if open.contains("-c") {
            // Re-sign the journal superblock: crc32c of its 1024 bytes with the checksum zeroed.
            let sb = j.offset(0, 0);
            data[sb + 0xFC..sb + 0x100].fill(0);
            // The kernel's crc32c has no final inversion, the crate's has.
            let csum = !crc32c::crc32c(&data[sb..sb + 1024]);
            data[sb + 0xFC..sb + 0x100].copy_from_slice(&csum.to_be_bytes());
        }
        let img = j._dir.path().join("wrapped.img");
        std::fs::write(&img, &data).unwrap();
        let wrapped = open_replay(&img).unwrap().expect("a dirty wrapped journal");
        assert_eq!(wrapped.transactions(), plain.transactions());
        assert_eq!(
            wrapped.replayed_block_numbers().collect::<Vec<_>>(),
            plain.replayed_block_numbers().collect::<Vec<_>>()
        );
        assert_same_as_e2fsck(&img, &wrapped);
    }
}

fn expect_error(result: Result<Option<JournalReplay>, JournalError>, needle: &str) {
    match result {
        Ok(_) => panic!("expected an error containing {needle:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
            assert!(msg.starts_with("hostile.img: journal: "), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}

#[test]
fn hostile_bad_magic() {
    let mut j = Dirty::new("jo");
    assert!(j.replay().unwrap().is_some());
    j.patch(0, 0, &[0, 0, 0, 0]);
    expect_error(j.replay(), "block 0: bad superblock magic");
}

#[test]
fn hostile_maxlen_beyond_journal() {
    let mut j = Dirty::new("jo");
    let len = j.blocks.len() as u32 + 1;
    j.patch(0, 16, &len.to_be_bytes());
    expect_error(j.replay(), "s_maxlen");
}

#[test]
fn hostile_start_outside_log() {
    let mut j = Dirty::new("jo");
    j.patch(0, 28, &u32::MAX.to_be_bytes());
    expect_error(j.replay(), "s_start");
}

#[test]
fn hostile_tag_past_filesystem() {
    let mut j = Dirty::new("jo");
    // The first descriptor is journal block 1; its first tag starts at byte 12.
    j.patch(1, 12, &0xFFFF_FFF0u32.to_be_bytes());
    expect_error(j.replay(), "past the end of the filesystem");
}

#[test]
fn hostile_bad_checksums_stop_or_fail() {
    // A flipped data byte breaks the tag checksum: the kernel refuses such a recovery.
    let mut j = Dirty::new("jo -c -v 3");
    let o = j.offset(2, 100);
    j.data[o] ^= 0xFF;
    expect_error(j.replay(), "bad checksum on the copy of filesystem block");

    // A flipped commit block: that transaction and what follows are not replayed.
    let mut j = Dirty::new("jo -c -v 3");
    let o = j.offset(5, 200);
    j.data[o] ^= 0xFF;
    let replayed = j.replay().unwrap().unwrap();
    assert_eq!(replayed.transactions(), 0);
    assert_eq!(replayed.replayed_blocks(), 0);
    assert!(replayed
        .stopped_early()
        .unwrap()
        .contains("bad commit checksum"));

    // A flipped superblock byte.
    let mut j = Dirty::new("jo -c -v 3");
    let o = j.offset(0, 40 * 4);
    j.data[o] ^= 0x01;
    expect_error(j.replay(), "superblock checksum");
}

#[test]
fn hostile_sequence_loop() {
    // Every log block a commit of the next transaction: the log never ends by itself.
    let mut j = Dirty::new("jo");
    let first = 1usize;
    let sequence = u32::from_be_bytes(j.data[j.offset(0, 24)..j.offset(0, 28)].try_into().unwrap());
    for (i, block) in (first..j.blocks.len()).enumerate() {
        let mut header = MAGIC.to_vec();
        header.extend(2u32.to_be_bytes());
        header.extend(sequence.wrapping_add(i as u32).to_be_bytes());
        j.patch(block, 0, &header);
    }
    let start = Instant::now();
    expect_error(j.replay(), "more than once around");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn hostile_truncated_and_flipped_never_panic() {
    let j = Dirty::new("jo -c -v 3");
    // Truncated inside the journal.
    let cut = j.offset(3, 10);
    assert!(j.replay_data(j.data[..cut].to_vec()).is_err());
    // Byte flips all over the first journal blocks: any answer but a panic or a hang.
    let start = Instant::now();
    let mut state = 0x1234_5678u32;
    for _ in 0..300 {
        let mut data = j.data.clone();
        for _ in 0..4 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let block = (state >> 8) as usize % 8;
            let at = (state >> 16) as usize % j.bs as usize;
            let o = j.offset(block, at);
            data[o] ^= (state & 0xFF) as u8 | 1;
        }
        if let Ok(Some(replayed)) = j.replay_data(data) {
            let mut buf = vec![0u8; j.bs as usize * 3];
            for block in replayed.replayed_block_numbers().collect::<Vec<_>>() {
                let _ = replayed.read_at(block * u64::from(j.bs), &mut buf);
            }
        }
    }
    assert!(start.elapsed() < Duration::from_secs(20));
}
