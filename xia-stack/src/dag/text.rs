//! xia-core's two text forms of a DAG, read and printed.
//!
//! - **DAG form**: `DAG <entry edges> - XID <edges> - … XID`. Edge numbers
//!   are positions in the node list (0 = the first XID). Printed exactly as
//!   xia-core's `Graph::dag_string()` prints it: nodes in input order with the
//!   intent moved last, `" - \n"` after each line but the last.
//! - **RE form**: `RE ( fallback … ) main … intent`. A parenthesised list is
//!   a fallback path to the node after it: the node before it (or the entry)
//!   gets edge 0 to that main node and edge 1 to the first fallback node;
//!   fallback nodes chain, the last pointing to the main node.
//!
//! Input is split on whitespace, and `(`, `)` and `-` are tokens even when
//! written next to other text, so `DAG 0- AD:…` reads. Everything else is
//! strict where xia-core is lenient: keywords are `DAG` and `RE` exactly,
//! XIDs are checked by [`Xid`]'s parser, and trailing text is an error.
//! Errors name the token (counted from 0) where the problem is.

use std::fmt;
use std::str::FromStr;

use super::{check, Dag, DagError, Edges, Node, NodeRef, MAX_EDGES, MAX_NODES};
use crate::xid::{Xid, XidError};

/// Why text is not a DAG address, and at which token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{kind}", token_prefix(*token, text))]
pub struct DagParseError {
    /// Index of the offending token, from 0; `None` when the input ended
    /// too early.
    pub token: Option<usize>,
    /// The offending token's text (empty at end of input).
    pub text: String,
    /// What is wrong.
    pub kind: DagParseErrorKind,
}

fn token_prefix(token: Option<usize>, text: &str) -> String {
    match token {
        Some(i) => format!("token {i} ({text:?}): "),
        None => "at end of input: ".to_string(),
    }
}

/// What is wrong with a DAG text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagParseErrorKind {
    /// Nothing but whitespace.
    #[error("empty address")]
    Empty,
    /// The first token is neither `DAG` nor `RE`.
    #[error("expected the keyword DAG or RE")]
    ExpectedKeyword,
    /// An XID was expected and this is not one.
    #[error("bad XID: {0}")]
    BadXid(XidError),
    /// An edge index or `-` was expected.
    #[error("expected an edge index or '-'")]
    ExpectedEdge,
    /// An XID was expected after `-` or at the start of the node list.
    #[error("expected an XID")]
    ExpectedXid,
    /// A node (or the entry) has more than [`MAX_EDGES`] edges.
    #[error("more than {MAX_EDGES} edges on one node")]
    TooManyEdges,
    /// More than [`MAX_NODES`] nodes.
    #[error("more than {MAX_NODES} nodes")]
    TooManyNodes,
    /// An edge index is not a node position.
    #[error("edge to node {target}, but there are only {nodes} nodes")]
    EdgeOutOfRange {
        /// The bad index.
        target: usize,
        /// How many nodes there are.
        nodes: usize,
    },
    /// `(` inside a fallback list.
    #[error("fallback lists do not nest")]
    NestedParen,
    /// `)` with no open `(`.
    #[error("')' without a matching '('")]
    UnbalancedClose,
    /// `(` never closed.
    #[error("'(' is never closed")]
    UnclosedParen,
    /// `( )`.
    #[error("empty fallback list")]
    EmptyFallback,
    /// A fallback list not followed by the node it falls back to.
    #[error("a fallback list must be followed by the node it leads to")]
    FallbackWithoutMain,
    /// The graph breaks a DAG rule (node numbers are input positions).
    #[error("{0}")]
    Structure(DagError),
}

struct Tokens<'a> {
    toks: Vec<&'a str>,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Tokens<'a> {
        let mut toks = Vec::new();
        for word in s.split_whitespace() {
            let mut rest = word;
            while let Some(pos) = rest.find(['(', ')', '-']) {
                if pos > 0 {
                    toks.push(&rest[..pos]);
                }
                toks.push(&rest[pos..pos + 1]);
                rest = &rest[pos + 1..];
            }
            if !rest.is_empty() {
                toks.push(rest);
            }
        }
        Tokens { toks }
    }

    fn err(&self, token: usize, kind: DagParseErrorKind) -> DagParseError {
        DagParseError {
            token: (token < self.toks.len()).then_some(token),
            text: self.toks.get(token).unwrap_or(&"").to_string(),
            kind,
        }
    }

    fn xid(&self, i: usize) -> Result<Xid, DagParseError> {
        match self.toks.get(i) {
            None => Err(self.err(i, DagParseErrorKind::ExpectedXid)),
            Some(t) if matches!(*t, "-" | "(" | ")") => {
                Err(self.err(i, DagParseErrorKind::ExpectedXid))
            }
            Some(t) => t
                .parse()
                .map_err(|e| self.err(i, DagParseErrorKind::BadXid(e))),
        }
    }
}

/// Maps a structural error on input node positions to the token of the node
/// it names.
fn structure_error(tokens: &Tokens, node_tokens: &[usize], e: DagError) -> DagParseError {
    let node = match &e {
        DagError::EdgeOutOfRange {
            from: NodeRef::Node(i),
            ..
        }
        | DagError::DuplicateEdge {
            from: NodeRef::Node(i),
            ..
        } => Some(*i),
        DagError::SelfLoop { node }
        | DagError::Cycle { node }
        | DagError::Unreachable { node }
        | DagError::SinkNotLast { sink: node } => Some(*node),
        DagError::MultipleSinks { second, .. } => Some(*second),
        _ => None,
    };
    let token = node.and_then(|i| node_tokens.get(i).copied()).unwrap_or(0);
    tokens.err(token, DagParseErrorKind::Structure(e))
}

fn parse_dag_form(t: &Tokens) -> Result<Dag, DagParseError> {
    use DagParseErrorKind as K;
    let mut i = 1; // token 0 is the keyword
                   // (edge index value, token index) per edge, per node; entry first.
    let mut lists: Vec<Vec<(usize, usize)>> = vec![Vec::new()];
    let mut xids: Vec<Xid> = Vec::new();
    let mut node_tokens: Vec<usize> = Vec::new();
    loop {
        // Edge indices of the current node, up to '-' or the end.
        while let Some(tok) = t.toks.get(i) {
            if *tok == "-" {
                break;
            }
            let digits =
                !tok.is_empty() && tok.len() <= 3 && tok.bytes().all(|b| b.is_ascii_digit());
            if !digits {
                return Err(t.err(i, K::ExpectedEdge));
            }
            let list = lists.last_mut().expect("entry list exists");
            if list.len() == MAX_EDGES {
                return Err(t.err(i, K::TooManyEdges));
            }
            list.push((tok.parse().expect("1-3 digits parse"), i));
            i += 1;
        }
        if i >= t.toks.len() {
            break;
        }
        i += 1; // the '-'
        if xids.len() == MAX_NODES {
            return Err(t.err(i, K::TooManyNodes));
        }
        xids.push(t.xid(i)?);
        node_tokens.push(i);
        lists.push(Vec::new());
        i += 1;
    }
    let n = xids.len();
    if n == 0 {
        return Err(t.err(i, K::ExpectedXid));
    }
    let mut edges = Vec::with_capacity(lists.len());
    for list in &lists {
        let mut e = Edges::new();
        for &(target, tok) in list {
            if target >= n {
                return Err(t.err(tok, K::EdgeOutOfRange { target, nodes: n }));
            }
            e.push(target as u8).expect("at most MAX_EDGES were read");
        }
        edges.push(e);
    }
    let nodes: Vec<Node> = xids
        .into_iter()
        .zip(&edges[1..])
        .map(|(x, e)| Node::new(x, *e))
        .collect();
    if let Err(e) = check(&edges[0], &nodes) {
        return Err(structure_error(t, &node_tokens, e));
    }
    Ok(Dag::from_unordered(edges[0], nodes).expect("checked above"))
}

fn parse_re_form(t: &Tokens) -> Result<Dag, DagParseError> {
    use DagParseErrorKind as K;
    // Build with xia-core's RE semantics; node i is the i-th XID token.
    let mut nodes: Vec<Node> = Vec::new();
    let mut entry = Edges::new();
    let mut node_tokens: Vec<usize> = Vec::new();
    // `prev` is the main node the next main node hangs off (None = entry).
    let mut prev: Option<usize> = None;
    let mut open: Option<usize> = None; // token of the open '('
    let mut fallback: Option<(usize, usize)> = None; // (first, last) nodes
    let mut pending: Option<(usize, usize)> = None; // closed list awaiting its main node
    let mut last_close = 0;
    let push_edge = |nodes: &mut Vec<Node>, entry: &mut Edges, from: Option<usize>, to: usize| {
        let list = match from {
            None => entry,
            Some(f) => &mut nodes[f].edges,
        };
        // At most two edges per main node and one per fallback node are
        // ever added, so this cannot overflow.
        list.push(to as u8)
            .expect("RE nodes have at most two edges");
    };
    for (i, tok) in t.toks.iter().enumerate().skip(1) {
        match *tok {
            "(" => {
                if open.is_some() {
                    return Err(t.err(i, K::NestedParen));
                }
                if pending.is_some() {
                    return Err(t.err(i, K::FallbackWithoutMain));
                }
                open = Some(i);
                fallback = None;
            }
            ")" => {
                if open.take().is_none() {
                    return Err(t.err(i, K::UnbalancedClose));
                }
                match fallback.take() {
                    None => return Err(t.err(i, K::EmptyFallback)),
                    Some(f) => pending = Some(f),
                }
                last_close = i;
            }
            "-" => return Err(t.err(i, K::ExpectedXid)),
            _ => {
                if nodes.len() == MAX_NODES {
                    return Err(t.err(i, K::TooManyNodes));
                }
                let xid = t.xid(i)?;
                let cur = nodes.len();
                nodes.push(Node::new(xid, Edges::new()));
                node_tokens.push(i);
                if open.is_some() {
                    fallback = match fallback {
                        None => Some((cur, cur)),
                        Some((first, last)) => {
                            push_edge(&mut nodes, &mut entry, Some(last), cur);
                            Some((first, cur))
                        }
                    };
                } else {
                    push_edge(&mut nodes, &mut entry, prev, cur);
                    if let Some((first, last)) = pending.take() {
                        push_edge(&mut nodes, &mut entry, prev, first);
                        push_edge(&mut nodes, &mut entry, Some(last), cur);
                    }
                    prev = Some(cur);
                }
            }
        }
    }
    if let Some(tok) = open {
        return Err(t.err(tok, K::UnclosedParen));
    }
    if pending.is_some() {
        return Err(t.err(last_close, K::FallbackWithoutMain));
    }
    if nodes.is_empty() {
        return Err(t.err(t.toks.len(), K::ExpectedXid));
    }
    Dag::new(entry, nodes).map_err(|e| structure_error(t, &node_tokens, e))
}

impl Dag {
    /// Reads either text form; the first token (`DAG` or `RE`) says which.
    pub fn parse(text: &str) -> Result<Dag, DagParseError> {
        let t = Tokens::new(text);
        match t.toks.first() {
            None => Err(t.err(0, DagParseErrorKind::Empty)),
            Some(&"DAG") => parse_dag_form(&t),
            Some(&"RE") => parse_re_form(&t),
            Some(_) => Err(t.err(0, DagParseErrorKind::ExpectedKeyword)),
        }
    }

    /// The DAG on one line, for logs, tables and protocols that carry
    /// text: the RE form when there is one, else the DAG form with its
    /// lines joined. Both read back with [`Dag::parse`].
    pub fn to_line(&self) -> String {
        self.to_re_string()
            .unwrap_or_else(|| self.to_string().replace(" \n", " "))
    }

    /// The RE form, if this DAG is one an RE string builds (same node
    /// order and edges); `None` otherwise (e.g. xia-core's four-way
    /// web-server DAG, whose fallbacks branch).
    pub fn to_re_string(&self) -> Option<String> {
        let mut out = String::from("RE");
        let mut prev = &self.entry;
        let mut i = 0;
        while i < self.nodes.len() {
            match *prev.as_slice() {
                [main] if main as usize == i => {}
                [main, first] if first as usize == i && main as usize > i => {
                    out.push_str(" (");
                    for n in &self.nodes[i..main as usize] {
                        out.push(' ');
                        out.push_str(&n.xid.to_string());
                    }
                    out.push_str(" )");
                    i = main as usize;
                }
                _ => return None,
            }
            out.push(' ');
            out.push_str(&self.nodes[i].xid.to_string());
            prev = &self.nodes[i].edges;
            i += 1;
        }
        // The walk only guessed the shape; reading it back proves it.
        (Dag::parse(&out).ok()? == *self).then_some(out)
    }
}

impl FromStr for Dag {
    type Err = DagParseError;

    fn from_str(s: &str) -> Result<Dag, DagParseError> {
        Dag::parse(s)
    }
}

/// xia-core's DAG text: `"DAG 0 - \nAD:… 1 - \nHID:… 2 - \nSID:…"`.
impl fmt::Display for Dag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DAG")?;
        for t in self.entry.as_slice() {
            write!(f, " {t}")?;
        }
        f.write_str(" - \n")?;
        let last = self.nodes.len() - 1;
        for n in &self.nodes[..last] {
            write!(f, "{}", n.xid)?;
            for t in n.edges.as_slice() {
                write!(f, " {t}")?;
            }
            f.write_str(" - \n")?;
        }
        write!(f, "{}", self.nodes[last].xid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AD:0606060606060606060606060606060606060606";
    const H: &str = "HID:0808080808080808080808080808080808080808";
    const S: &str = "SID:0909090909090909090909090909090909090909";
    const IP: &str = "IP:4500000000010000fafa000000000000c0a80001";

    fn kind(text: &str) -> (Option<usize>, DagParseErrorKind) {
        let e = Dag::parse(text).unwrap_err();
        (e.token, e.kind)
    }

    #[test]
    fn re_prints_as_xia_core_does() {
        let d = Dag::parse(&format!("RE {A} {H} {S}")).unwrap();
        assert_eq!(d.to_string(), format!("DAG 0 - \n{A} 1 - \n{H} 2 - \n{S}"));
        assert_eq!(d.to_re_string().unwrap(), format!("RE {A} {H} {S}"));
    }

    #[test]
    fn ipv4_fallback_prints_as_xia_core_does() {
        let d = Dag::parse(&format!("RE ( IP:192.168.0.1 ) {A} {H} {S}")).unwrap();
        assert_eq!(
            d.to_string(),
            format!("DAG 1 0 - \n{IP} 1 - \n{A} 2 - \n{H} 3 - \n{S}")
        );
        assert_eq!(
            d.to_re_string().unwrap(),
            format!("RE ( {IP} ) {A} {H} {S}")
        );
    }

    #[test]
    fn dag_form_moves_the_sink_last() {
        let s = "SID:0000000000000000000000000000000000000005";
        let h = "HID:0000000000000000000000000000000000000004";
        let a = "AD:0000000000000000000000000000000000000003";
        let d = Dag::parse(&format!("DAG 2 - {s} - {h} 0 - {a} 1")).unwrap();
        assert_eq!(d.to_string(), format!("DAG 1 - \n{h} 2 - \n{a} 0 - \n{s}"));
        assert_eq!(Dag::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn four_way_web_server_dag() {
        let text = format!("DAG 3 0 1 - \n{A} 3 2 - \n{IP} 3 0 - \n{H} 3 - \n{S}");
        let d = Dag::parse(&text).unwrap();
        assert_eq!(d.to_string(), text);
        assert_eq!(d.entry_edges().as_slice(), &[3, 0, 1]);
        assert_eq!(d.to_re_string(), None);
        // No RE form: one line of the DAG form, which reads back.
        let line = d.to_line();
        assert!(
            !line.contains('\n') && line.starts_with("DAG 3 0 1 - "),
            "{line}"
        );
        assert_eq!(Dag::parse(&line).unwrap(), d);
    }

    #[test]
    fn whitespace_tolerant_input() {
        let text = format!("  DAG 0-\t{A} 1 -\n\n {H}   2-{S}  ");
        let d = Dag::parse(&text).unwrap();
        assert_eq!(d, Dag::parse(&format!("RE {A} {H} {S}")).unwrap());
        let re = Dag::parse(&format!("RE ({IP}){A} {S}")).unwrap();
        assert_eq!(re.len(), 3);
    }

    #[test]
    fn re_with_several_fallback_lists() {
        let d = Dag::parse(&format!("RE ( {A} {H} ) {S} ( {IP} ) {H}")).unwrap();
        assert_eq!(d.entry_edges().as_slice(), &[2, 0]);
        assert_eq!(d.nodes()[2].edges.as_slice(), &[4, 3]);
        assert_eq!(d.nodes()[3].edges.as_slice(), &[4]);
        assert_eq!(
            d.to_re_string().unwrap(),
            format!("RE ( {A} {H} ) {S} ( {IP} ) {H}")
        );
    }

    #[test]
    fn malformed_inputs_name_the_token() {
        use DagParseErrorKind as K;
        assert_eq!(kind(""), (None, K::Empty));
        assert_eq!(kind("   \n"), (None, K::Empty));
        assert_eq!(kind(&format!("XRE {A}")), (Some(0), K::ExpectedKeyword));
        assert_eq!(kind(&format!("re {A}")), (Some(0), K::ExpectedKeyword));
        assert!(matches!(kind("RE AD:0x12"), (Some(1), K::BadXid(_))));
        assert!(matches!(
            kind(&format!("RE {A}:junk")),
            (Some(1), K::BadXid(_))
        ));
        assert!(matches!(
            kind(&format!("RE {A} FOO:{}", "0".repeat(40))),
            (Some(2), K::BadXid(XidError::UnknownType(_)))
        ));
        assert_eq!(kind("RE"), (None, K::ExpectedXid));
        assert_eq!(kind(&format!("RE ( {A} {S}")), (Some(1), K::UnclosedParen));
        assert_eq!(
            kind(&format!("RE {A} ) {S}")),
            (Some(2), K::UnbalancedClose)
        );
        assert_eq!(
            kind(&format!("RE ( ( {A} ) ) {S}")),
            (Some(2), K::NestedParen)
        );
        assert_eq!(kind(&format!("RE ( ) {S}")), (Some(2), K::EmptyFallback));
        assert_eq!(
            kind(&format!("RE {A} ( {H} )")),
            (Some(4), K::FallbackWithoutMain)
        );
        assert_eq!(
            kind(&format!("RE ( {A} ) ( {H} ) {S}")),
            (Some(4), K::FallbackWithoutMain)
        );
        assert_eq!(kind("DAG 0 -"), (None, K::ExpectedXid));
        assert_eq!(
            kind(&format!("DAG DAG 0 - {A}")),
            (Some(1), K::ExpectedEdge)
        );
        assert_eq!(
            kind(&format!("DAG 0 - {A} 1 {H}")),
            (Some(5), K::ExpectedEdge)
        );
        assert_eq!(kind(&format!("DAG 0 - {A} -")), (None, K::ExpectedXid));
        assert!(matches!(
            kind(&format!("DAG 0 - {A} - 0")),
            (Some(5), K::BadXid(XidError::MissingColon(_)))
        ));
        assert_eq!(
            kind(&format!("DAG 0 - {A} 7 - {S}")),
            (
                Some(4),
                K::EdgeOutOfRange {
                    target: 7,
                    nodes: 2
                }
            )
        );
        assert!(matches!(
            kind(&format!("DAG 0 - {A} -1 - {S}")),
            (Some(5), K::BadXid(XidError::MissingColon(_)))
        ));
        assert_eq!(
            kind(&format!("DAG 0 1 1 1 1 - {A} 1 - {S}")),
            (Some(5), K::TooManyEdges)
        );
        assert_eq!(
            kind(&format!("DAG 0 - {A} 1 - {H} 0 - {S}")),
            (Some(3), K::Structure(DagError::Cycle { node: 0 }))
        );
        assert_eq!(
            kind(&format!("DAG 0 - {A} - {S}")),
            (
                Some(5),
                K::Structure(DagError::MultipleSinks {
                    first: 0,
                    second: 1
                })
            )
        );
        assert_eq!(
            kind(&format!("DAG 1 - {A} 1 - {S}")),
            (Some(3), K::Structure(DagError::Unreachable { node: 0 }))
        );
        assert_eq!(
            kind(&format!("DAG - {A}")),
            (Some(0), K::Structure(DagError::NoEntryEdges))
        );
        let many = (0..21)
            .map(|i| format!("AD:{:040x}", i))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(kind(&format!("RE {many}")), (Some(21), K::TooManyNodes));
    }

    #[test]
    fn error_messages_say_where() {
        let e = Dag::parse("RE AD:12").unwrap_err();
        assert_eq!(
            e.to_string(),
            "token 1 (\"AD:12\"): bad XID: the ID must be 40 hex digits, found 2 characters"
        );
    }
}
