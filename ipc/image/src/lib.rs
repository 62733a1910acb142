//! The capvisor system image layout.
#![cfg_attr(not(test), no_std)]
