//! Routes from a topology. With static routing (the default): shortest
//! paths (by link delay, ties broken by node order so results are
//! deterministic), installed once at start. With link-state routing: only
//! what a router is configured with in real life — its attached hosts and
//! its own 4ID — plus link costs for the protocol.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use xia_router::forward::{Route, RouteTables};
use xia_stack::xid::Xid;

use crate::topology::{NodeKind, Topology};

/// Port `p` of node `n` is the `p`-th link (in file order) that touches it.
/// A link made for a `[[move]]` is a port of its router only, until the
/// move.
pub fn ports(topo: &Topology) -> Vec<Vec<(usize, usize)>> {
    let mut ports = vec![Vec::new(); topo.nodes.len()];
    for (li, l) in topo.links.iter().enumerate() {
        ports[l.a].push((li, l.b));
        // A host's link for a later move becomes its port 0 when it moves.
        if !l.initially_down {
            ports[l.b].push((li, l.a));
        }
    }
    ports
}

/// For router `src`: (distance in ns, first-hop port) to every node, through
/// routers only (hosts are leaves).
fn shortest(topo: &Topology, ports: &[Vec<(usize, usize)>], src: usize) -> Vec<Option<(u64, u16)>> {
    let n = topo.nodes.len();
    let mut best: Vec<Option<(u64, u16)>> = vec![None; n];
    let mut heap = BinaryHeap::new();
    best[src] = Some((0, u16::MAX));
    heap.push(Reverse((0u64, src, u16::MAX)));
    while let Some(Reverse((d, u, first))) = heap.pop() {
        if best[u].is_some_and(|(bd, bf)| (bd, bf) < (d, first)) {
            continue;
        }
        if u != src && topo.nodes[u].kind == NodeKind::Host {
            continue;
        }
        for (p, &(li, v)) in ports[u].iter().enumerate() {
            if topo.links[li].initially_down {
                continue;
            }
            // Each hop costs its delay plus 1 ns, so equal-delay paths
            // prefer fewer hops.
            let nd = d + topo.links[li].delay.as_nanos() as u64 + 1;
            let nf = if u == src { p as u16 } else { first };
            if best[v].is_none_or(|(bd, bf)| (nd, nf) < (bd, bf)) {
                best[v] = Some((nd, nf));
                heap.push(Reverse((nd, v, nf)));
            }
        }
    }
    best
}

/// Installs what router `r` knows without routing: a route to each host
/// on its own ports, and its 4ID as local.
pub fn install_connected(
    topo: &Topology,
    ports: &[Vec<(usize, usize)>],
    r: usize,
    tables: &mut RouteTables,
) {
    for (p, &(_, peer)) in ports[r].iter().enumerate() {
        if topo.nodes[peer].kind == NodeKind::Host {
            let hid = topo.nodes[peer].hid();
            let _ = tables.insert(hid, Route::via(p as u16, hid));
            for vm in topo.migration.vms.iter().filter(|v| v.hypervisor == peer) {
                let _ = tables.insert(vm.identity.xid(), Route::via(p as u16, hid));
            }
        }
    }
    if let NodeKind::Router {
        ipv4: Some(addr), ..
    } = &topo.nodes[r].kind
    {
        let _ = tables.insert(Xid::from_ipv4(*addr), Route::LOCAL);
    }
}

/// Link-state costs of router `r`'s ports: the link's one-way delay in
/// microseconds plus one, so that, as with static routes, equal-delay
/// paths prefer fewer hops.
pub fn port_costs(topo: &Topology, ports: &[Vec<(usize, usize)>], r: usize) -> Vec<u32> {
    ports[r]
        .iter()
        .map(|&(li, _)| {
            let us = topo.links[li].delay.as_micros();
            u32::try_from(us + 1).unwrap_or(u32::MAX)
        })
        .collect()
}

/// Installs router `r`'s static routes into `tables`.
pub fn install(topo: &Topology, ports: &[Vec<(usize, usize)>], r: usize, tables: &mut RouteTables) {
    let NodeKind::Router { unknown_ads, .. } = &topo.nodes[r].kind else {
        return;
    };
    let my_ad = topo.nodes[r].ad;
    let dist = shortest(topo, ports, r);
    let route_to = |target: usize| -> Option<Route> {
        let (_, port) = dist[target]?;
        let neighbour = ports[r][port as usize].1;
        Some(Route::via(port, topo.nodes[neighbour].hid()))
    };
    let mut add = |xid: Xid, route: Route| {
        // Tables start empty and topologies are small; a full table here
        // would be a configuration far beyond the simulator's scope.
        let _ = tables.insert(xid, route);
    };
    for (ai, ad) in topo.ads.iter().enumerate() {
        if ai == my_ad || unknown_ads.contains(&ai) {
            continue;
        }
        let nearest = (0..topo.nodes.len())
            .filter(|&n| {
                topo.nodes[n].ad == ai && matches!(topo.nodes[n].kind, NodeKind::Router { .. })
            })
            .filter_map(|n| dist[n].map(|(d, _)| (d, n)))
            .min();
        if let Some((_, n)) = nearest {
            if let Some(route) = route_to(n) {
                add(ad.xid, route);
            }
        }
    }
    for (n, node) in topo.nodes.iter().enumerate() {
        if n != r && node.ad == my_ad {
            if let Some(route) = route_to(n) {
                add(node.hid(), route);
                // The VMs a hypervisor starts with are behind it.
                for vm in topo.migration.vms.iter().filter(|v| v.hypervisor == n) {
                    add(vm.identity.xid(), route);
                }
            }
        }
        if let NodeKind::Router {
            ipv4: Some(addr), ..
        } = &node.kind
        {
            let xid = Xid::from_ipv4(*addr);
            if n == r {
                add(xid, Route::LOCAL);
            } else if let Some(route) = route_to(n) {
                add(xid, route);
            }
        }
    }
}
