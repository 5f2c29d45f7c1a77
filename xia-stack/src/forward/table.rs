//! Route tables: one exact-match table per principal type, as in xia-core's
//! `XIAXIDRouteTable` elements.
//!
//! A table maps a 20-byte identifier to a [`Route`]: an [`Action`] (forward
//! out a port, or one of xia-core's special results), the next hop's XID
//! (for link-layer resolution), and flags. Each table may have a default
//! route used on a miss. A principal type with no table at all is a
//! *fallback* for the DAG walk — XIA's evolvability rule, where xia-core
//! says "unreachable".
//!
//! Tables are bounded ([`RouteTable::with_capacity_limit`]). Every change
//! bumps [`RouteTables::generation`], which caches (the router's fast path)
//! compare to drop stale entries.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use rustc_hash::FxHasher;

use crate::xid::{Principal, Xid, ID_LEN};

/// A port (interface) number of a node.
pub type PortId = u16;

/// What to do with a packet whose next node matched.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// Send it out this port.
    Forward(PortId),
    /// The XID is this node's (xia-core's −2): advance and continue here.
    Local,
    /// Copy it out every port but the one it came in on (−4).
    Broadcast,
    /// Known to be unreachable: answer XCMP unreachable (−6).
    Unreachable,
    /// Try the next edge (−7).
    Fallback,
    /// Drop silently (−1).
    Discard,
}

/// One table entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub struct Route {
    /// What to do.
    pub action: Action,
    /// The neighbour to hand the packet to, if known (a router's HID).
    pub next_hop: Option<Xid>,
    /// Free-form flags (xia-core carries them; routing daemons use them).
    pub flags: u32,
}

impl Route {
    /// Forward out `port`.
    pub const fn port(port: PortId) -> Route {
        Route {
            action: Action::Forward(port),
            next_hop: None,
            flags: 0,
        }
    }

    /// Forward out `port` to neighbour `next_hop`.
    pub const fn via(port: PortId, next_hop: Xid) -> Route {
        Route {
            action: Action::Forward(port),
            next_hop: Some(next_hop),
            flags: 0,
        }
    }

    /// A route with a special action and no next hop.
    pub const fn special(action: Action) -> Route {
        Route {
            action,
            next_hop: None,
            flags: 0,
        }
    }

    /// This node's own XID.
    pub const LOCAL: Route = Route::special(Action::Local);
}

/// The table would exceed its capacity limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("route table for {principal} is full ({limit} entries)")]
pub struct TableFull {
    /// The table's principal type.
    pub principal: Principal,
    /// Its limit.
    pub limit: usize,
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A table key: an XID's 20 bytes, hashed as three words (the derived
/// `Hash` of `[u8; 20]` adds a length prefix and a byte loop to every
/// lookup).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Key([u8; ID_LEN]);

impl std::hash::Hash for Key {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let b = &self.0;
        h.write_u64(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]));
        h.write_u64(u64::from_le_bytes([
            b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15],
        ]));
        h.write_u32(u32::from_le_bytes([b[16], b[17], b[18], b[19]]));
    }
}

/// Default most entries one table holds: room for xia-core's 10 M-entry
/// benchmark, bounded all the same.
pub const DEFAULT_TABLE_LIMIT: usize = 16 << 20;

/// The exact-match table of one principal type.
#[derive(Clone, Debug)]
pub struct RouteTable {
    principal: Principal,
    routes: FxMap<Key, Route>,
    default: Option<Route>,
    limit: usize,
}

impl RouteTable {
    fn new(principal: Principal, limit: usize) -> RouteTable {
        RouteTable {
            principal,
            routes: FxMap::default(),
            default: None,
            limit,
        }
    }

    /// The table's principal type.
    pub fn principal(&self) -> Principal {
        self.principal
    }

    /// Exact match, then the default.
    #[inline]
    pub fn lookup(&self, id: &[u8; ID_LEN]) -> Option<&Route> {
        self.routes.get(&Key(*id)).or(self.default.as_ref())
    }

    /// Exact match only.
    pub fn get(&self, id: &[u8; ID_LEN]) -> Option<&Route> {
        self.routes.get(&Key(*id))
    }

    /// The default route.
    pub fn default_route(&self) -> Option<&Route> {
        self.default.as_ref()
    }

    /// Number of exact entries.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no exact entries.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Xid, &Route)> {
        self.routes
            .iter()
            .map(move |(id, r)| (Xid::new(self.principal, id.0), r))
    }

    /// The capacity limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Sets the capacity limit (existing entries stay).
    pub fn with_capacity_limit(&mut self, limit: usize) -> &mut Self {
        self.limit = limit;
        self
    }

    /// Pre-allocates room for `n` more entries (for bulk loads).
    pub fn reserve(&mut self, n: usize) {
        self.routes
            .reserve(n.min(self.limit.saturating_sub(self.routes.len())));
    }
}

/// Serialized with its entries sorted by identifier, so that equal tables
/// give equal bytes whatever their insertion history.
impl serde::Serialize for RouteTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut routes: Vec<(&[u8; ID_LEN], &Route)> =
            self.routes.iter().map(|(k, r)| (&k.0, r)).collect();
        routes.sort_unstable_by_key(|(k, _)| *k);
        serde::Serialize::serialize(&(self.principal, &self.default, self.limit, routes), s)
    }
}

impl<'de> serde::Deserialize<'de> for RouteTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RouteTable, D::Error> {
        type Parts = (Principal, Option<Route>, usize, Vec<([u8; ID_LEN], Route)>);
        let (principal, default, limit, entries) = <Parts as serde::Deserialize>::deserialize(d)?;
        let mut routes = FxMap::default();
        routes.reserve(entries.len());
        for (id, route) in entries {
            if routes.insert(Key(id), route).is_some() {
                return Err(crate::serde_util::invalid(format!(
                    "route table for {principal} lists {} twice",
                    Xid::new(principal, id)
                )));
            }
        }
        Ok(RouteTable {
            principal,
            routes,
            default,
            limit,
        })
    }
}

/// What a lookup found, as the DAG walk needs it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lookup {
    /// No table for this principal type: fall back (XIA's evolvability).
    NoTable,
    /// A table but no entry and no default: fall back.
    Miss,
    /// An entry (or the default).
    Hit(Route),
}

/// All of a node's tables, one per principal type.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RouteTables {
    // Few principal types exist (8 built in); a linear scan of a short
    // vector beats hashing the type.
    tables: Vec<RouteTable>,
    #[serde(deserialize_with = "crate::serde_util::counter")]
    generation: u64,
    limit: Option<usize>,
}

impl RouteTables {
    /// No tables: every principal falls back.
    pub fn new() -> RouteTables {
        RouteTables::default()
    }

    /// Tables for these principal types, empty.
    pub fn with_principals(principals: &[Principal]) -> RouteTables {
        let mut t = RouteTables::new();
        for &p in principals {
            t.add_table(p);
        }
        t
    }

    /// Sets the capacity limit of every table, present and future.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = Some(limit);
        for t in &mut self.tables {
            t.limit = limit;
        }
    }

    /// Changes whenever any table changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The table of a principal type, if there is one.
    #[inline]
    pub fn table(&self, principal: Principal) -> Option<&RouteTable> {
        self.tables.iter().find(|t| t.principal == principal)
    }

    /// Adds an empty table for `principal` (no-op if there is one).
    pub fn add_table(&mut self, principal: Principal) -> &mut RouteTable {
        self.generation += 1;
        let limit = self.limit.unwrap_or(DEFAULT_TABLE_LIMIT);
        let pos = match self.tables.iter().position(|t| t.principal == principal) {
            Some(pos) => pos,
            None => {
                self.tables.push(RouteTable::new(principal, limit));
                self.tables.len() - 1
            }
        };
        &mut self.tables[pos]
    }

    /// Removes a principal's table: its XIDs become fallbacks.
    pub fn remove_table(&mut self, principal: Principal) -> Option<RouteTable> {
        let pos = self.tables.iter().position(|t| t.principal == principal)?;
        self.generation += 1;
        Some(self.tables.remove(pos))
    }

    /// Inserts or replaces the route for `xid`, creating its principal's
    /// table if needed; returns the old route.
    pub fn insert(&mut self, xid: Xid, route: Route) -> Result<Option<Route>, TableFull> {
        let table = self.add_table(xid.principal());
        if table.routes.len() >= table.limit && !table.routes.contains_key(&Key(*xid.id())) {
            return Err(TableFull {
                principal: xid.principal(),
                limit: table.limit,
            });
        }
        Ok(table.routes.insert(Key(*xid.id()), route))
    }

    /// Removes the route for `xid`.
    pub fn remove(&mut self, xid: &Xid) -> Option<Route> {
        let pos = self
            .tables
            .iter()
            .position(|t| t.principal == xid.principal())?;
        let old = self.tables[pos].routes.remove(&Key(*xid.id()));
        if old.is_some() {
            self.generation += 1;
        }
        old
    }

    /// Sets (or with `None`, clears) a principal's default route.
    pub fn set_default(&mut self, principal: Principal, route: Option<Route>) {
        self.add_table(principal).default = route;
    }

    /// Inserts many routes; stops at the first full table.
    pub fn extend(
        &mut self,
        routes: impl IntoIterator<Item = (Xid, Route)>,
    ) -> Result<(), TableFull> {
        for (xid, route) in routes {
            self.insert(xid, route)?;
        }
        Ok(())
    }

    /// What the DAG walk sees for `xid`.
    #[inline]
    pub fn lookup(&self, xid: &Xid) -> Lookup {
        match self.table(xid.principal()) {
            None => Lookup::NoTable,
            Some(t) => match t.lookup(xid.id()) {
                Some(r) => Lookup::Hit(*r),
                None => Lookup::Miss,
            },
        }
    }

    /// All tables.
    pub fn tables(&self) -> &[RouteTable] {
        &self.tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(p: Principal, b: u8) -> Xid {
        Xid::new(p, [b; ID_LEN])
    }

    #[test]
    fn lookup_semantics() {
        let mut t = RouteTables::with_principals(&[Principal::AD, Principal::HID]);
        assert_eq!(t.lookup(&x(Principal::SID, 1)), Lookup::NoTable);
        assert_eq!(t.lookup(&x(Principal::AD, 1)), Lookup::Miss);
        t.insert(x(Principal::AD, 1), Route::port(3)).unwrap();
        assert_eq!(t.lookup(&x(Principal::AD, 1)), Lookup::Hit(Route::port(3)));
        t.set_default(Principal::AD, Some(Route::port(0)));
        assert_eq!(t.lookup(&x(Principal::AD, 2)), Lookup::Hit(Route::port(0)));
        assert_eq!(t.remove(&x(Principal::AD, 1)), Some(Route::port(3)));
        assert_eq!(t.lookup(&x(Principal::AD, 1)), Lookup::Hit(Route::port(0)));
        t.remove_table(Principal::AD);
        assert_eq!(t.lookup(&x(Principal::AD, 1)), Lookup::NoTable);
    }

    #[test]
    fn bounded_and_generation_changes() {
        let mut t = RouteTables::new();
        t.set_limit(2);
        let g0 = t.generation();
        t.insert(x(Principal::HID, 1), Route::LOCAL).unwrap();
        t.insert(x(Principal::HID, 2), Route::LOCAL).unwrap();
        assert!(t.generation() > g0);
        assert_eq!(
            t.insert(x(Principal::HID, 3), Route::LOCAL),
            Err(TableFull {
                principal: Principal::HID,
                limit: 2
            })
        );
        // Replacing an existing entry is fine when full.
        assert_eq!(
            t.insert(x(Principal::HID, 2), Route::port(1)),
            Ok(Some(Route::LOCAL))
        );
    }
}
