//! Virtual disks → partitions and volumes → filesystems → a stream of file entries.
//!
//! The flow is one way: a [`block::BlockSource`] (a raw file, a QCOW2/VDI/VMDK image, a window
//! on one) is split into volumes (MBR, GPT, LVM or none), each volume is probed for a filesystem,
//! and a filesystem reader yields `snapshot::FileTree` entries that the policy filters and the
//! layer writer turns into an OCI layer.

pub mod block;
pub mod bytes;
pub mod disk;
pub mod fs;
pub mod fstab;
pub mod glob;
pub mod graft;
pub mod inspect;
pub mod job;
pub mod plan;
pub mod policy;
pub mod tarball;
pub mod volume;
