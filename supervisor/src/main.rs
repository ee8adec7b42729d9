//! decant-init (being written)
fn main() {}
