//! The reader: what one family's sync compares its plan against.
//!
//! A full sync and a dry run dump the tables (one `iptables-save`). A
//! partial sync dumps nothing (with tens of thousands of rules that costs
//! seconds under nft): it trusts the kernel to hold what kproxy wrote last,
//! and only checks that the canary chains are still there; when one is gone
//! someone flushed the tables, and the sync becomes full.

use std::collections::BTreeSet;

use crate::cluster::{IpFamily, ServiceName};
use crate::kernel::KernelError;
use crate::kernel::iptables::Iptables;
use crate::netfilter::chains::CANARY;
use crate::netfilter::ruleset::SavedTables;

/// Tables holding the canary chain, as upstream's monitor watches them.
pub const CANARY_TABLES: [&str; 3] = ["mangle", "nat", "filter"];

/// How much a sync was asked to look at and write.
#[derive(Clone, Copy, Debug)]
pub enum SyncMode<'a> {
    /// Every owned chain (first sync, periodic resync).
    Full,
    /// The top-level chains and those of the Services that changed.
    Partial(&'a BTreeSet<ServiceName>),
    /// A dry run: only what differs from the kernel.
    Diff,
}

/// What the reader found, which is also how the sync proceeds.
#[derive(Clone, Debug)]
pub enum Live<'a> {
    /// A partial sync with every canary in place: nothing was dumped.
    Trusted(&'a BTreeSet<ServiceName>),
    /// A full sync against the dump.
    Full(SavedTables),
    /// A dry run against the dump.
    Diff(SavedTables),
}

/// Read what `mode` needs for `family`. A partial sync turns full when the
/// last sync of the family left it needing one, or when a canary is gone.
pub fn read<'a, I: Iptables + ?Sized>(
    ipt: &mut I,
    family: IpFamily,
    mode: SyncMode<'a>,
    needs_full: bool,
) -> Result<Live<'a>, KernelError> {
    match mode {
        SyncMode::Partial(changed) => {
            if needs_full {
                return dump(ipt, family).map(Live::Full);
            }
            if let Some(table) = CANARY_TABLES
                .into_iter()
                .find(|t| !ipt.chain_exists(family, t, CANARY))
            {
                tracing::info!(%family, table, "canary chain {CANARY} is gone: the table was flushed; syncing in full");
                return dump(ipt, family).map(Live::Full);
            }
            Ok(Live::Trusted(changed))
        }
        SyncMode::Full => dump(ipt, family).map(Live::Full),
        SyncMode::Diff => dump(ipt, family).map(Live::Diff),
    }
}

fn dump<I: Iptables + ?Sized>(ipt: &mut I, family: IpFamily) -> Result<SavedTables, KernelError> {
    Ok(SavedTables::parse(&ipt.save(family)?))
}
