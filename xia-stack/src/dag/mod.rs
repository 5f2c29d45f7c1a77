//! DAG addresses: XIA's addresses with fallbacks.
//!
//! An address is a small directed acyclic graph of XIDs. Forwarding starts
//! at an implicit *entry* node, follows the first edge whose target it can
//! reach, and ends at the single sink, the *intent*. Lower-priority edges
//! are fallbacks: `RE ( AD:a HID:h ) SID:s` says "go to the service; if you
//! cannot, go through AD `a` and host `h`".
//!
//! A [`Dag`] always satisfies the rules xia-core's header depends on: 1 to
//! [`MAX_NODES`] nodes, at most [`MAX_EDGES`] prioritised out-edges per node
//! (edge 0 first), one sink stored last, no cycle, and every node reachable
//! from the entry. Node order is otherwise kept as given, because it is
//! visible: it is the order in xia-core's text form and on the wire.
//!
//! Text forms live in [`text`], the wire form in [`crate::wire::dag`].

pub mod text;

use std::fmt;

use crate::xid::{Principal, Xid};

pub use text::DagParseError;

/// Most nodes a DAG may have (xia-core's `CLICK_XIA_ADDR_MAX_NODES`).
pub const MAX_NODES: usize = 20;
/// Most out-edges a node (or the entry) may have.
pub const MAX_EDGES: usize = 4;

/// A node's out-edges, highest priority first: indices of target nodes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Edges {
    targets: [u8; MAX_EDGES],
    len: u8,
}

impl Edges {
    /// No edges.
    pub const fn new() -> Edges {
        Edges {
            targets: [0; MAX_EDGES],
            len: 0,
        }
    }

    /// Edges from a slice of targets; `None` if there are more than
    /// [`MAX_EDGES`] of them.
    pub fn from_slice(targets: &[u8]) -> Option<Edges> {
        let mut e = Edges::new();
        for &t in targets {
            e.push(t).ok()?;
        }
        Some(e)
    }

    /// Adds a lowest-priority edge; `Err` when all slots are taken.
    pub fn push(&mut self, target: u8) -> Result<(), u8> {
        if self.len as usize == MAX_EDGES {
            return Err(target);
        }
        self.targets[self.len as usize] = target;
        self.len += 1;
        Ok(())
    }

    /// The targets, highest priority first.
    pub fn as_slice(&self) -> &[u8] {
        &self.targets[..self.len as usize]
    }

    /// Number of edges.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn map(&self, f: impl Fn(u8) -> u8) -> Edges {
        let mut out = *self;
        for t in &mut out.targets[..self.len as usize] {
            *t = f(*t);
        }
        out
    }
}

impl fmt::Debug for Edges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Serialized as the target bytes (at most [`MAX_EDGES`]).
impl serde::Serialize for Edges {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_slice())
    }
}

impl<'de> serde::Deserialize<'de> for Edges {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Edges, D::Error> {
        struct EdgesVisitor;

        impl<'de> serde::de::Visitor<'de> for EdgesVisitor {
            type Value = Edges;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "at most {MAX_EDGES} edge targets")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Edges, E> {
                Edges::from_slice(v).ok_or_else(|| {
                    crate::serde_util::invalid(format_args!("a DAG node has {} edges", v.len()))
                })
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Edges, A::Error> {
                let mut e = Edges::new();
                while let Some(t) = seq.next_element::<u8>()? {
                    e.push(t).map_err(|_| {
                        crate::serde_util::invalid(format_args!(
                            "a DAG node has over {MAX_EDGES} edges"
                        ))
                    })?;
                }
                Ok(e)
            }
        }

        d.deserialize_bytes(EdgesVisitor)
    }
}

/// One node of a DAG: an XID and its out-edges.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// The node's XID.
    pub xid: Xid,
    /// Its out-edges (empty for the intent).
    pub edges: Edges,
}

impl Node {
    /// A node with these edges.
    pub fn new(xid: Xid, edges: Edges) -> Node {
        Node { xid, edges }
    }
}

/// Where in a DAG something is wrong: the entry node or node `i`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NodeRef {
    /// The implicit entry node.
    Entry,
    /// Node `i` in the given order.
    Node(usize),
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRef::Entry => f.write_str("the entry node"),
            NodeRef::Node(i) => write!(f, "node {i}"),
        }
    }
}

/// Why a set of nodes and edges is not a valid DAG address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// There are no nodes.
    #[error("a DAG needs at least one node")]
    Empty,
    /// More than [`MAX_NODES`] nodes.
    #[error("{count} nodes, at most {MAX_NODES} are allowed")]
    TooManyNodes {
        /// How many nodes there were.
        count: usize,
    },
    /// The entry node has no out-edge.
    #[error("the entry node has no edges")]
    NoEntryEdges,
    /// An edge points past the last node.
    #[error("{from} has an edge to node {target}, but there are only {nodes} nodes")]
    EdgeOutOfRange {
        /// The node the edge leaves.
        from: NodeRef,
        /// The bad target index.
        target: usize,
        /// How many nodes there are.
        nodes: usize,
    },
    /// A node points to itself.
    #[error("{node} has an edge to itself")]
    SelfLoop {
        /// The node.
        node: usize,
    },
    /// The same edge appears twice in one node.
    #[error("{from} has two edges to node {target}")]
    DuplicateEdge {
        /// The node the edges leave.
        from: NodeRef,
        /// Their common target.
        target: usize,
    },
    /// More than one node has no out-edges.
    #[error("several sinks: nodes {first} and {second} both have no edges, a DAG has one intent")]
    MultipleSinks {
        /// The first sink.
        first: usize,
        /// Another sink.
        second: usize,
    },
    /// The sink is not the last node (only for [`Dag::new`], which takes
    /// nodes in stored order).
    #[error("the intent (node {sink}) must be the last node")]
    SinkNotLast {
        /// Where the sink is.
        sink: usize,
    },
    /// A cycle.
    #[error("cycle through node {node}")]
    Cycle {
        /// A node on the cycle.
        node: usize,
    },
    /// A node the entry cannot reach, i.e. a second source.
    #[error("node {node} cannot be reached from the entry node (a DAG has one source)")]
    Unreachable {
        /// The unreachable node.
        node: usize,
    },
}

/// Checks the DAG rules on nodes in any order (the sink may be anywhere) and
/// returns the sink's index. Errors name nodes by their index in `nodes`.
pub(crate) fn check(entry: &Edges, nodes: &[Node]) -> Result<usize, DagError> {
    let n = nodes.len();
    if n == 0 {
        return Err(DagError::Empty);
    }
    if n > MAX_NODES {
        return Err(DagError::TooManyNodes { count: n });
    }
    if entry.is_empty() {
        return Err(DagError::NoEntryEdges);
    }
    let lists = std::iter::once((NodeRef::Entry, entry)).chain(
        nodes
            .iter()
            .enumerate()
            .map(|(i, nd)| (NodeRef::Node(i), &nd.edges)),
    );
    for (from, edges) in lists {
        for (k, &t) in edges.as_slice().iter().enumerate() {
            let target = t as usize;
            if target >= n {
                return Err(DagError::EdgeOutOfRange {
                    from,
                    target,
                    nodes: n,
                });
            }
            if from == NodeRef::Node(target) {
                return Err(DagError::SelfLoop { node: target });
            }
            if edges.as_slice()[..k].contains(&t) {
                return Err(DagError::DuplicateEdge { from, target });
            }
        }
    }
    let mut sinks = (0..n).filter(|&i| nodes[i].edges.is_empty());
    let sink = sinks.next();
    if let (Some(first), Some(second)) = (sink, sinks.next()) {
        return Err(DagError::MultipleSinks { first, second });
    }
    // Colour-marking DFS from every node finds any cycle, reachable or not.
    // 0 = unseen, 1 = on the stack, 2 = done. At most 20 nodes, so an
    // explicit stack of (node, next edge) never grows past 20.
    let mut colour = [0u8; MAX_NODES];
    for start in 0..n {
        if colour[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let targets = nodes[node].edges.as_slice();
            if *next < targets.len() {
                let t = targets[*next] as usize;
                *next += 1;
                match colour[t] {
                    0 => {
                        colour[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => return Err(DagError::Cycle { node: t }),
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    // Acyclic and finite: there is at least one sink.
    let sink = sink.ok_or(DagError::Cycle { node: 0 })?;
    let mut reached = [false; MAX_NODES];
    let mut todo: Vec<usize> = entry.as_slice().iter().map(|&t| t as usize).collect();
    while let Some(i) = todo.pop() {
        if !std::mem::replace(&mut reached[i], true) {
            todo.extend(nodes[i].edges.as_slice().iter().map(|&t| t as usize));
        }
    }
    if let Some(node) = (0..n).find(|&i| !reached[i]) {
        return Err(DagError::Unreachable { node });
    }
    Ok(sink)
}

/// A valid DAG address. See the module docs for the rules it keeps.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Dag {
    entry: Edges,
    nodes: Vec<Node>,
}

impl Dag {
    /// A DAG from its entry edges and nodes in stored order (intent last).
    pub fn new(entry: Edges, nodes: Vec<Node>) -> Result<Dag, DagError> {
        let sink = check(&entry, &nodes)?;
        if sink != nodes.len() - 1 {
            return Err(DagError::SinkNotLast { sink });
        }
        Ok(Dag { entry, nodes })
    }

    /// A DAG from nodes in any order: the sink is moved last and edges are
    /// renumbered, keeping the other nodes' order (xia-core's printer rule).
    pub fn from_unordered(entry: Edges, mut nodes: Vec<Node>) -> Result<Dag, DagError> {
        let sink = check(&entry, &nodes)?;
        let last = nodes.len() - 1;
        let renumber = |t: u8| -> u8 {
            let t = t as usize;
            let moved = match t {
                _ if t == sink => last,
                _ if t > sink => t - 1,
                _ => t,
            };
            moved as u8
        };
        let node = nodes.remove(sink);
        nodes.push(node);
        for nd in &mut nodes {
            nd.edges = nd.edges.map(renumber);
        }
        Ok(Dag {
            entry: entry.map(renumber),
            nodes,
        })
    }

    /// The one-node DAG: the entry points straight at `xid`.
    pub fn from_xid(xid: Xid) -> Dag {
        Dag {
            entry: Edges::from_slice(&[0]).expect("one edge fits"),
            nodes: vec![Node::new(xid, Edges::new())],
        }
    }

    /// A path with no fallbacks: entry → `xids[0]` → … → last (the intent).
    pub fn path(xids: &[Xid]) -> Result<Dag, DagError> {
        let n = xids.len();
        let nodes = xids
            .iter()
            .enumerate()
            .map(|(i, &xid)| {
                let edges = if i + 1 < n {
                    Edges::from_slice(&[(i + 1) as u8]).expect("one edge fits")
                } else {
                    Edges::new()
                };
                Node::new(xid, edges)
            })
            .collect();
        Dag::new(Edges::from_slice(&[0]).expect("one edge fits"), nodes)
    }

    /// Content `cid` served by host `hid` in `ad`: `RE ( AD HID ) CID`.
    /// The entry tries the CID first, so any node on the way that holds
    /// the chunk (a router's cache) may answer; the path to the server is
    /// the fallback.
    pub fn content(ad: Xid, hid: Xid, cid: Xid) -> Dag {
        let edges = |t: &[u8]| Edges::from_slice(t).expect("at most two edges");
        // Nodes AD(0) HID(1) CID(2).
        let nodes = vec![
            Node::new(ad, edges(&[1])),
            Node::new(hid, edges(&[2])),
            Node::new(cid, edges(&[])),
        ];
        Dag::new(edges(&[2, 0]), nodes).expect("a valid three-node DAG")
    }

    /// The entry node's out-edges.
    pub fn entry_edges(&self) -> &Edges {
        &self.entry
    }

    /// The nodes in stored order; the intent is last.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of nodes (the entry is not counted).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a DAG has at least one node. Here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s out-edges, or the entry's for `None`.
    pub fn out_edges(&self, node: Option<usize>) -> Option<&Edges> {
        match node {
            None => Some(&self.entry),
            Some(i) => self.nodes.get(i).map(|n| &n.edges),
        }
    }

    /// The intent: the final destination.
    pub fn intent(&self) -> &Xid {
        &self.nodes[self.nodes.len() - 1].xid
    }

    /// Replaces the intent, keeping the paths to it.
    pub fn set_intent(&mut self, xid: Xid) {
        let last = self.nodes.len() - 1;
        self.nodes[last].xid = xid;
    }

    /// A copy with another intent (e.g. a host's DAG turned into one of its
    /// services' DAGs).
    pub fn with_intent(&self, xid: Xid) -> Dag {
        let mut d = self.clone();
        d.set_intent(xid);
        d
    }

    /// xia-core's concatenation: `other`'s entry edges become this DAG's
    /// intent's edges, so `other` is reached through this DAG.
    pub fn append(&self, other: &Dag) -> Result<Dag, DagError> {
        let n = self.nodes.len();
        let count = n + other.nodes.len();
        if count > MAX_NODES {
            return Err(DagError::TooManyNodes { count });
        }
        let shift = |t: u8| t + n as u8;
        let mut nodes = self.nodes.clone();
        nodes[n - 1].edges = other.entry.map(shift);
        nodes.extend(
            other
                .nodes
                .iter()
                .map(|nd| Node::new(nd.xid, nd.edges.map(shift))),
        );
        Dag::new(self.entry, nodes)
    }

    /// Appends one node as the new intent.
    pub fn append_xid(&self, xid: Xid) -> Result<Dag, DagError> {
        self.append(&Dag::from_xid(xid))
    }

    /// The XIDs of a given principal type, in stored order.
    pub fn nodes_of_type(&self, principal: Principal) -> impl Iterator<Item = &Xid> {
        self.nodes
            .iter()
            .map(|n| &n.xid)
            .filter(move |x| x.principal() == principal)
    }

    /// A Graphviz rendering: the entry is a point, the intent a double
    /// circle, fallback edges (priority > 0) dashed and labelled.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph dag {\n  rankdir=LR;\n  entry [shape=point];\n");
        let last = self.nodes.len() - 1;
        for (i, n) in self.nodes.iter().enumerate() {
            let shape = if i == last { "doublecircle" } else { "ellipse" };
            s += &format!(
                "  n{i} [shape={shape}, label=\"{}\\n{}\"];\n",
                n.xid.principal(),
                n.xid.id_hex()
            );
        }
        let lists = std::iter::once(("entry".to_string(), &self.entry)).chain(
            self.nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("n{i}"), &n.edges)),
        );
        for (from, edges) in lists {
            for (prio, t) in edges.as_slice().iter().enumerate() {
                let style = if prio == 0 {
                    String::new()
                } else {
                    format!(" [style=dashed, label=\"{prio}\"]")
                };
                s += &format!("  {from} -> n{t}{style};\n");
            }
        }
        s.push_str("}\n");
        s
    }
}

/// Serialized as its entry edges and nodes; reading checks every DAG rule
/// again (an invalid DAG is an error, never a panic).
impl serde::Serialize for Dag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&(&self.entry, &self.nodes), s)
    }
}

impl<'de> serde::Deserialize<'de> for Dag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dag, D::Error> {
        let (entry, nodes) = <(Edges, Vec<Node>) as serde::Deserialize>::deserialize(d)?;
        Dag::new(entry, nodes)
            .map_err(|e| crate::serde_util::invalid(format_args!("invalid DAG: {e}")))
    }
}

impl fmt::Debug for Dag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dag({})", self.to_string().replace(" \n", " "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(p: Principal, b: u8) -> Xid {
        Xid::new(p, [b; 20])
    }

    fn e(t: &[u8]) -> Edges {
        Edges::from_slice(t).unwrap()
    }

    #[test]
    fn validation_errors() {
        let a = x(Principal::AD, 1);
        let h = x(Principal::HID, 2);
        let cases: Vec<(Edges, Vec<Node>, DagError)> = vec![
            (e(&[0]), vec![], DagError::Empty),
            (e(&[]), vec![Node::new(a, e(&[]))], DagError::NoEntryEdges),
            (
                e(&[1]),
                vec![Node::new(a, e(&[]))],
                DagError::EdgeOutOfRange {
                    from: NodeRef::Entry,
                    target: 1,
                    nodes: 1,
                },
            ),
            (
                e(&[0]),
                vec![Node::new(a, e(&[0, 1])), Node::new(h, e(&[]))],
                DagError::SelfLoop { node: 0 },
            ),
            (
                e(&[0]),
                vec![Node::new(a, e(&[1, 1])), Node::new(h, e(&[]))],
                DagError::DuplicateEdge {
                    from: NodeRef::Node(0),
                    target: 1,
                },
            ),
            (
                e(&[0]),
                vec![Node::new(a, e(&[])), Node::new(h, e(&[]))],
                DagError::MultipleSinks {
                    first: 0,
                    second: 1,
                },
            ),
            (
                e(&[0]),
                vec![
                    Node::new(a, e(&[1])),
                    Node::new(h, e(&[0])),
                    Node::new(h, e(&[])),
                ],
                DagError::Cycle { node: 0 },
            ),
            (
                e(&[1]),
                vec![Node::new(a, e(&[1])), Node::new(h, e(&[]))],
                DagError::Unreachable { node: 0 },
            ),
            (
                e(&[0]),
                vec![Node::new(a, e(&[])), Node::new(h, e(&[0]))],
                DagError::Unreachable { node: 1 },
            ),
        ];
        for (entry, nodes, want) in cases {
            assert_eq!(Dag::new(entry, nodes).unwrap_err(), want);
        }
        let nodes: Vec<Node> = (0..21)
            .map(|i| Node::new(a, if i < 20 { e(&[i + 1]) } else { e(&[]) }))
            .collect();
        assert_eq!(
            Dag::new(e(&[0]), nodes).unwrap_err(),
            DagError::TooManyNodes { count: 21 }
        );
    }

    #[test]
    fn sink_moves_last_with_renumbering() {
        let (s, h, a) = (
            x(Principal::SID, 3),
            x(Principal::HID, 2),
            x(Principal::AD, 1),
        );
        // entry → a(2) → h(1) → s(0)
        let d = Dag::from_unordered(
            e(&[2]),
            vec![
                Node::new(s, e(&[])),
                Node::new(h, e(&[0])),
                Node::new(a, e(&[1])),
            ],
        )
        .unwrap();
        assert_eq!(d.entry_edges().as_slice(), &[1]);
        assert_eq!(d.nodes()[0].xid, h);
        assert_eq!(d.nodes()[0].edges.as_slice(), &[2]);
        assert_eq!(d.nodes()[1].edges.as_slice(), &[0]);
        assert_eq!(d.intent(), &s);
    }

    #[test]
    fn algebra() {
        let (a, h, s) = (
            x(Principal::AD, 1),
            x(Principal::HID, 2),
            x(Principal::SID, 3),
        );
        let host = Dag::path(&[a, h]).unwrap();
        let svc = host.append_xid(s).unwrap();
        assert_eq!(svc, Dag::path(&[a, h, s]).unwrap());
        assert_eq!(svc.intent(), &s);
        let other = x(Principal::SID, 9);
        assert_eq!(svc.with_intent(other).intent(), &other);
        assert_eq!(svc.nodes_of_type(Principal::HID).collect::<Vec<_>>(), [&h]);
        let big = Dag::path(&[a; 15]).unwrap();
        assert_eq!(
            big.append(&Dag::path(&[h; 6]).unwrap()).unwrap_err(),
            DagError::TooManyNodes { count: 21 }
        );
        let dot = svc.to_dot();
        assert!(dot.contains("entry -> n0;"));
        assert!(dot.contains("n2 [shape=doublecircle"));
    }
}
