//! capvisor's typed IPC: message layouts and protocols shared by the kernel, services and the SDK.
#![cfg_attr(not(test), no_std)]
