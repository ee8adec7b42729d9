//! VDI
