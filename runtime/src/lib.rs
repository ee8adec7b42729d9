//! decant's container runtime: it takes a prepared root filesystem and an OCI runtime `Spec`
//! and runs a container on Linux namespaces and cgroups. It knows nothing of images.

pub mod cgroups;
pub mod security;
