//! The decant-init layer: a small layer of its own that puts the static `decant-init` binary
//! into an image at [`INIT_IN_IMAGE`], and the entrypoint that boots the image host-like
//! ([`INIT_ENTRYPOINT`]: services mode, with a `docker run IMAGE CMD` command as the main
//! service beside the image's services).
//!
//! Why `/usr/local/sbin`: it is on every distribution's root PATH, is empty in a packaged
//! system (dpkg and rpm never write there, so the layer shadows nothing), and is the place for
//! locally installed system binaries. A separate layer keeps the imported VM's layer
//! byte-identical to an import without `--init` (shared in the store and in registries) and
//! lets `commit --init` reuse it.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::image::{ImageMeta, LayerRef};
use crate::layer::{write_tree, LayerError, LayerOptions, LayerSummary};
use crate::store::{Store, StoreError};
use crate::{Entry, EntryKind, FileTree, Timestamp};

/// Where the layer puts decant-init.
pub const INIT_IN_IMAGE: &str = "/usr/local/sbin/decant-init";

/// The image entrypoint of a host-like image: decant-init in services mode; a command given to
/// `docker run` (the image's Cmd is cleared) becomes the main service.
pub const INIT_ENTRYPOINT: [&str; 3] = [INIT_IN_IMAGE, "--with-services", "--"];

/// Largest init binary accepted (the static init is about 1.5 MB; anything near this cap is
/// not it).
pub const MAX_INIT_BYTES: u64 = 64 << 20;

/// Why the init layer could not be made. One line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum InitLayerError {
    #[error("init binary {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("init binary {path}: not a regular file")]
    NotFile { path: PathBuf },
    #[error("init binary {path}: {size} bytes, more than the {MAX_INIT_BYTES}-byte cap")]
    TooBig { path: PathBuf, size: u64 },
    #[error("{0}")]
    Layer(#[from] LayerError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The directories leading to the binary, then the binary.
struct InitTree {
    entries: std::vec::IntoIter<Entry>,
    file: Option<io::Take<File>>,
    current_is_file: bool,
}

impl Read for InitTree {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (&mut self.file, self.current_is_file) {
            (Some(f), true) => f.read(buf),
            _ => Ok(0),
        }
    }
}

impl FileTree for InitTree {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        let e = self.entries.next();
        self.current_is_file = e.as_ref().is_some_and(|e| e.kind == EntryKind::File);
        Ok(e)
    }
    fn content(&mut self) -> &mut dyn Read {
        self
    }
}

/// Writes the init layer (`usr/`, `usr/local/`, `usr/local/sbin/` as root-owned 0755 and the
/// binary as 0755) into the store and returns it. The caller checks the binary is static.
pub fn write_init_layer(
    store: &Store,
    init: &Path,
    opts: LayerOptions,
) -> Result<(LayerRef, LayerSummary), InitLayerError> {
    let err = |source| InitLayerError::Read {
        path: init.to_path_buf(),
        source,
    };
    let file = File::open(init).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(InitLayerError::NotFile {
            path: init.to_path_buf(),
        });
    }
    if meta.len() > MAX_INIT_BYTES {
        return Err(InitLayerError::TooBig {
            path: init.to_path_buf(),
            size: meta.len(),
        });
    }
    let mtime = Timestamp {
        secs: meta.mtime(),
        nanos: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
    };
    let mut entries = Vec::new();
    for d in ["usr", "usr/local", "usr/local/sbin"] {
        let mut e = Entry::new(d, EntryKind::Dir, 0o755);
        e.mtime = mtime;
        entries.push(e);
    }
    let mut bin = Entry::new(
        INIT_IN_IMAGE.trim_start_matches('/'),
        EntryKind::File,
        0o755,
    );
    bin.mtime = mtime;
    bin.size = meta.len();
    entries.push(bin);
    let mut tree = InitTree {
        entries: entries.into_iter(),
        file: Some(file.take(meta.len())),
        current_is_file: false,
    };
    let blob = store.blob_writer()?;
    let (blob, layer) = write_tree(&mut tree, blob, opts)?;
    blob.commit(Some(&layer.digest))?;
    let layer_ref = LayerRef {
        digest: layer.digest.clone(),
        diff_id: layer.diff_id.clone(),
        size: layer.size,
        media_type: layer.media_type.to_string(),
    };
    Ok((layer_ref, layer))
}

/// Makes `meta` boot host-like: the entrypoint is decant-init in services mode and the Cmd is
/// cleared (an imported VM's shell as the main service would end the container at once).
pub fn set_init_entrypoint(meta: &mut ImageMeta) {
    meta.entrypoint = Some(INIT_ENTRYPOINT.iter().map(|s| s.to_string()).collect());
    meta.cmd = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::write_image;

    #[test]
    fn the_layer_holds_the_binary_and_its_directories() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let bin = t.path().join("decant-init");
        std::fs::write(&bin, b"\x7fELF not really, but bytes").unwrap();
        let (l, summary) = write_init_layer(&store, &bin, LayerOptions::default()).unwrap();
        assert_eq!(summary.entries, 4);
        let mut meta = ImageMeta {
            cmd: Some(vec!["/bin/bash".into()]),
            ..ImageMeta::default()
        };
        set_init_entrypoint(&mut meta);
        assert_eq!(meta.cmd, None);
        write_image(&store, &meta, std::slice::from_ref(&l), None).unwrap();
        let blob = store.blob_path(&l.digest).unwrap();
        let gz = flate2::read::GzDecoder::new(File::open(blob).unwrap());
        let mut ar = tar::Archive::new(gz);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name.ends_with("decant-init") {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                assert_eq!(data, b"\x7fELF not really, but bytes");
                assert_eq!(e.header().mode().unwrap() & 0o7777, 0o755);
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "usr/",
                "usr/local/",
                "usr/local/sbin/",
                "usr/local/sbin/decant-init"
            ]
        );
    }

    #[test]
    fn a_directory_or_a_missing_file_is_refused_in_one_line() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let e = write_init_layer(&store, t.path(), LayerOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = write_init_layer(&store, &t.path().join("nope"), LayerOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && !e.contains('\n'), "{e}");
    }
}
