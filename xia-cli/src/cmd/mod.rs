//! One module per subcommand.

pub mod apps;
pub mod daemon;
pub mod dag;
pub mod demo;
pub mod key;
pub mod migrate;
pub mod testbed;
pub mod xip;
