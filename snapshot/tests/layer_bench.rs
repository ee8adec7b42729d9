//! Throughput measurement of the layer writer against pigz and zstd (not part of CI: run by
//! hand with `cargo test --release -p snapshot --test layer_bench -- --ignored --nocapture`,
//! with LAYER_BENCH_TAR pointing at a plain tar of a real tree, e.g. `tar cf x.tar /usr/share`).

use std::io::{BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Instant;

use snapshot::layer::{write_tree, Compression, LayerOptions, LayerReader};

struct Counter(u64);
impl std::io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn peer(cmd: &str, args: &[&str], input: &str) -> (f64, u64) {
    let t = Instant::now();
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::fs::File::open(input).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd} is required for this benchmark: {e}"));
    let mut n = 0u64;
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = out.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    assert!(child.wait().unwrap().success());
    (t.elapsed().as_secs_f64(), n)
}

#[test]
#[ignore]
fn bench_against_pigz_and_zstd() {
    let input = std::env::var("LAYER_BENCH_TAR").expect("set LAYER_BENCH_TAR to a plain tar");
    let mb = std::fs::metadata(&input).unwrap().len() as f64 / 1e6;
    // Warm the page cache so the first contender is not penalised.
    std::io::copy(
        &mut std::fs::File::open(&input).unwrap(),
        &mut std::io::sink(),
    )
    .unwrap();
    let levels: Vec<i32> = std::env::var("LAYER_BENCH_LEVELS")
        .unwrap_or_else(|_| "4".into())
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let kinds = [
        (Compression::None, vec![0]),
        (Compression::Gzip, levels.clone()),
        (Compression::Zstd, vec![3]),
    ];
    let only = std::env::var("LAYER_BENCH_KINDS").unwrap_or_else(|_| "none,gzip,zstd,peers".into());
    for (kind, lvls) in kinds {
        if !only.contains(&format!("{kind:?}").to_lowercase()) {
            continue;
        }
        for level in lvls {
            let t = Instant::now();
            let file = BufReader::new(std::fs::File::open(&input).unwrap());
            let mut tree = LayerReader::new(file).unwrap();
            let opts = LayerOptions {
                compression: kind,
                level: Some(level),
                threads: std::env::var("LAYER_BENCH_THREADS")
                    .map(|t| t.parse().unwrap())
                    .unwrap_or(2),
                allow_whiteouts: true,
                keep_selinux: true,
                ..LayerOptions::default()
            };
            let (_, s) = write_tree(&mut tree, Counter(0), opts).unwrap();
            let secs = t.elapsed().as_secs_f64();
            println!(
                "decant {kind:?} -{level} threads 2: {:.0} MB/s, {} bytes (tar {} bytes, input {mb:.0} MB)",
                s.tar_size as f64 / 1e6 / secs,
                s.size,
                s.tar_size
            );
        }
    }
    if !only.contains("peers") {
        return;
    }
    for (cmd, args) in [
        ("pigz", &["-6", "-p2", "-c"][..]),
        ("zstd", &["-T2", "-3", "-c"][..]),
    ] {
        let (secs, n) = peer(cmd, args, &input);
        println!("{cmd} {args:?}: {:.0} MB/s, {n} bytes", mb / secs);
    }
}

#[test]
#[ignore]
fn bench_deflate_chunk() {
    use flate2::{Compress, FlushCompress};
    let input = std::env::var("LAYER_BENCH_TAR").expect("set LAYER_BENCH_TAR to a plain tar");
    let mut data = vec![0u8; 64 << 20];
    let mut f = std::fs::File::open(&input).unwrap();
    f.read_exact(&mut data).unwrap();
    for level in [1, 2, 3, 4, 6] {
        for dict in [true] {
            let t = Instant::now();
            let mut c = Compress::new(flate2::Compression::new(level), false);
            let mut out = Vec::with_capacity(1 << 20);
            let mut total = 0;
            for (i, chunk) in data.chunks(512 * 1024).enumerate() {
                c.reset();
                if dict && i > 0 {
                    let prev = &data[i * 512 * 1024 - 32768..i * 512 * 1024];
                    c.set_dictionary(prev).unwrap();
                }
                out.clear();
                c.compress_vec(chunk, &mut out, FlushCompress::Sync)
                    .unwrap();
                total += out.len();
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "level {level} dict {dict}: {:.0} MB/s, {total} bytes",
                64.0 * 1.048576 / secs
            );
        }
    }
}
