//! # click-compat: Click configurations on xia-rs
//!
//! Will load and run the Click router configurations xia-core uses, mapping
//! its XIA elements (`XIAXIDRouteTable`, `XIASelectPath`, `XIACheckDest`,
//! `XIADecHLIM`, `XCMP`, …) onto the shared forwarding code in `xia-router`.
//! Nothing is implemented yet.
