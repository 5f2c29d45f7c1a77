//! `xia dag …`: DAG addresses.

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use xia_stack::Dag;

use crate::input::{arg_or_stdin, to_hex};

#[derive(Subcommand)]
pub enum DagCmd {
    /// Parse an address (RE or DAG form) and print it in another form.
    Parse {
        /// Output form.
        #[arg(long, value_enum, default_value_t = Format::Dag)]
        format: Format,
        /// The address, or `-` to read it from stdin.
        address: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// xia-core's DAG text, as its Graph::dag_string() prints it.
    Dag,
    /// The RE form, if the DAG has one.
    Re,
    /// The node array as on the wire, in lowercase hex on one line.
    Wire,
    /// A Graphviz digraph.
    Dot,
}

pub fn run(cmd: DagCmd) -> Result<()> {
    match cmd {
        DagCmd::Parse { format, address } => {
            let text = arg_or_stdin(&address)?;
            let dag = Dag::parse(&text).context("bad address")?;
            match format {
                Format::Dag => println!("{dag}"),
                Format::Re => match dag.to_re_string() {
                    Some(re) => println!("{re}"),
                    None => anyhow::bail!(
                        "this DAG has no RE form (its fallbacks branch or rejoin); use --format dag"
                    ),
                },
                Format::Wire => println!("{}", to_hex(&dag.to_wire())),
                Format::Dot => print!("{}", dag.to_dot()),
            }
            Ok(())
        }
    }
}
