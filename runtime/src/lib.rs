//! decant's container runtime: it takes a prepared root filesystem and an OCI runtime `Spec`
//! and runs a container on Linux namespaces and cgroups. It knows nothing of images.

pub mod cgroups;
pub mod container;
mod dev;
pub mod engine;
pub mod error;
mod loopback;
pub mod namespaces;
mod process;
mod rootfs;
pub mod security;
pub mod spec;
mod state;
pub mod trace;
pub mod userns;

pub use container::{
    create, create_with_spec, delete, exec, kill, list, run, run_with_spec, start, state,
    validate_id, ContainerProcess, CreateOptions, ExecOptions, ExitStatus, RuntimeRoot,
};
pub use error::RuntimeError;
pub use nix::sys::signal::Signal;
pub use oci_spec::runtime::{ContainerState, State};
