//! The capvisor SDK library: image building and QEMU driving, shared by the CLI and the tests.
