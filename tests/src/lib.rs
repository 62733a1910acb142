//! Shared helpers for capvisor's QEMU integration tests.
