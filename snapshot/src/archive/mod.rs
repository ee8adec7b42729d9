//! `save` and `load`: images out of and into the store as a single tar file, in the two formats
//! other tools exchange: docker-archive (what `docker save` writes and `docker load` reads:
//! `manifest.json`, `<config hex>.json`, `<diff_id hex>/layer.tar` uncompressed) and
//! oci-archive (a tar of an OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/`).
//!
//! Both directions stream: save never holds a layer in memory, load spools large archive
//! members to temp files inside the store and moves them into place only once every image of
//! the archive checked out, so a bad archive adds nothing to the store.
//!
//! The tar headers of save are written by hand (with `tar::Header` for the field encoding),
//! because the output must be byte-for-byte reproducible and the entries are few and simple;
//! load reads the archive with the layer reader's hostile-input tar parser.

mod load;
mod save;

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::str::FromStr;

pub use load::{load, LoadedImage};
pub use save::save;

use crate::store::{Store, StoreError};

/// Keeps garbage collection away from the store's blobs while a save reads them or a load
/// moves new ones in (the store's shared gc lock, as a blob writer holds it).
pub(crate) struct GcHold<'a>(&'a Store);

impl<'a> GcHold<'a> {
    pub(crate) fn new(store: &'a Store) -> Result<GcHold<'a>, StoreError> {
        store.pins.writer_started()?;
        Ok(GcHold(store))
    }
}

impl Drop for GcHold<'_> {
    fn drop(&mut self) {
        self.0.pins.writer_finished();
    }
}

/// The two archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save` / `docker load`: manifest.json plus uncompressed `layer.tar` files.
    DockerArchive,
    /// A tar of an OCI image layout (`skopeo copy ... oci-archive:FILE`).
    OciArchive,
}

impl FromStr for ArchiveFormat {
    type Err = ArchiveError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "docker-archive" | "docker" => Ok(ArchiveFormat::DockerArchive),
            "oci-archive" | "oci" => Ok(ArchiveFormat::OciArchive),
            other => Err(ArchiveError::Usage(format!(
                "unknown archive format {other:?}: expected docker-archive or oci-archive"
            ))),
        }
    }
}

impl fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArchiveFormat::DockerArchive => "docker-archive",
            ArchiveFormat::OciArchive => "oci-archive",
        })
    }
}

/// Why a save or load failed. One line each, naming the archive member (or store blob) and
/// what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something about one member of the archive being loaded.
    #[error("archive member {member}: {what}")]
    Member { member: String, what: String },
    /// The archive as a whole (its tar structure, or what it lacks).
    #[error("archive: {0}")]
    Archive(String),
    /// A blob of the store does not match what its manifest or config says.
    #[error("store blob {digest}: {what}")]
    StoreBlob { digest: String, what: String },
    #[error("writing the archive: {0}")]
    Write(io::Error),
    #[error("{0}")]
    Usage(String),
}

pub(crate) fn member_err(member: &str, what: impl Into<String>) -> ArchiveError {
    ArchiveError::Member {
        member: member.to_string(),
        what: what.into(),
    }
}

/// How a layer stream is compressed, told by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Magic {
    Gzip,
    Zstd,
    Plain,
}

/// Wraps `r` in the decompressor its first bytes ask for (gzip `1f 8b`, zstd `28 b5 2f fd`),
/// or passes it through.
pub(crate) fn decompressed<'a, R: Read + 'a>(r: R) -> io::Result<(Magic, Box<dyn Read + 'a>)> {
    let mut buf = BufReader::with_capacity(256 * 1024, r);
    let head = buf.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        (
            Magic::Gzip,
            Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        )
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        (
            Magic::Zstd,
            Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
        )
    } else {
        (Magic::Plain, Box::new(buf))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn formats_parse() {
        assert_eq!(
            "docker-archive".parse::<ArchiveFormat>().unwrap(),
            ArchiveFormat::DockerArchive
        );
        assert_eq!(
            "oci-archive".parse::<ArchiveFormat>().unwrap(),
            ArchiveFormat::OciArchive
        );
        let e = "zip".parse::<ArchiveFormat>().unwrap_err().to_string();
        assert!(e.contains("\"zip\""), "{e}");
    }

    #[test]
    fn decompression_by_magic() {
        let data = b"hello layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&data[..], 3).unwrap();
        for (input, want) in [
            (gz, Magic::Gzip),
            (zs, Magic::Zstd),
            (data.clone(), Magic::Plain),
        ] {
            let (m, mut r) = decompressed(&input[..]).unwrap();
            assert_eq!(m, want);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }
}
