//! # xia-router: XIA forwarding
//!
//! Will hold the sans-IO forwarding core: one exact-match route table per
//! principal type, xia-core v2's DAG walk (select edge, classify, look up,
//! advance, check destination, decrement hop limit) as reusable steps, XCMP
//! generation, a per-destination fast-path cache and per-reason drop
//! counters. The native router, the Click elements and the simulator will
//! all call this one implementation. Nothing is implemented yet.
