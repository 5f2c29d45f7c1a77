//! # xia-migrate: VM migration over XIA
//!
//! Will hold the migration control protocol as a sans-IO state machine:
//! full (stop-and-copy) and live (iterative pre-copy) migration of a guest
//! between XIA networks, followed by signed rebinding of the guest's HID and
//! SIDs so that its peers' connections survive. Nothing is implemented yet.
