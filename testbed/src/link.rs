//! The link model: [`xia_net::impair`], shared with the real-network
//! drivers; a topology's [`LinkSpec`] gives each direction its
//! [`Impairment`].

pub use xia_net::impair::{DirStats, Direction, Fate, Impairment};

use crate::topology::LinkSpec;

impl From<LinkSpec> for Impairment {
    fn from(l: LinkSpec) -> Impairment {
        Impairment::from(&l)
    }
}

impl From<&LinkSpec> for Impairment {
    fn from(l: &LinkSpec) -> Impairment {
        Impairment {
            bandwidth_bps: l.bandwidth_bps,
            delay: l.delay,
            queue: l.queue,
            loss: l.loss,
            jitter: l.jitter,
            reorder: l.reorder,
            duplicate: l.duplicate,
        }
    }
}
