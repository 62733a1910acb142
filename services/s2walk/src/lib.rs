//! A software walk of AArch64 stage-2 translation tables, exact to the Arm ARM.
#![cfg_attr(not(test), no_std)]
