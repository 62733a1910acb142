//! capvisor image manifests: parsing, validation and compilation.
