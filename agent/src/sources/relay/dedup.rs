//! Which origin seqs the relay already holds, per agent: so that a batch an agent sends
//! again (its request timed out, it was killed before it saw the answer, it restarted from
//! its cursor) is not stored twice.
//!
//! - Per agent, the seqs held are a set of inclusive ranges, merged as they touch; an
//!   agent's requests are taken one at a time ([`Dedup::agent`]), so two copies of one
//!   batch in flight at once cannot both pass.
//! - Kept across the relay's restarts: a snapshot (`dedup.json` in the source's state
//!   directory, written atomically about once a second) says which WAL seqs it accounts
//!   for; at start the WAL records after those are read back to learn the rest.
//! - Bounded: an agent not heard from for `dedup_window` is forgotten, at most
//!   [`MAX_AGENTS`] agents (the least recently heard from go first) and [`MAX_RANGES`]
//!   ranges per agent (the oldest go first). Forgetting can only let a resent event through
//!   twice — never refuse a new one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gapless_wal::Wal;
use serde::{Deserialize, Serialize};

use crate::client_json::ClientObject;
use crate::event::split_payload;
use crate::reserved::{ORIGIN_AGENT_ID, ORIGIN_SEQ, ORIGIN_WAL_ID};

/// The most agents remembered.
pub const MAX_AGENTS: usize = 100_000;
/// The most separate seq ranges remembered per agent.
pub const MAX_RANGES: usize = 256;

/// The seqs one agent's events held by the relay, as merged inclusive ranges.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct AgentSeen {
    /// start → end (inclusive).
    ranges: BTreeMap<u64, u64>,
    /// When the agent was last heard from, Unix seconds.
    last_seen: u64,
    /// The agent's WAL (`Gapless-Wal-Id`) these seqs are of.
    #[serde(default)]
    wal_id: String,
}

impl AgentSeen {
    /// Makes these the seqs of WAL `wal_id`: another WAL than the one they were of (the
    /// agent lost its data_dir and counts from 1 again) forgets them, so that its seqs are
    /// never taken for ones already held.
    pub fn of_wal(&mut self, wal_id: &str, agent: &str) {
        // Seqs learnt from the WAL alone (the agent was first heard from after the last
        // snapshot) do not say which WAL they are of: they are taken to be this one's.
        if self.wal_id.is_empty() {
            self.wal_id = wal_id.to_string();
            return;
        }
        if self.wal_id != wal_id {
            if !self.ranges.is_empty() {
                tracing::warn!(agent, previous_wal = %self.wal_id, wal = wal_id, "relay: this agent has a new WAL (its seqs start again); what it sent before is forgotten for de-duplication");
            }
            self.ranges.clear();
            self.wal_id = wal_id.to_string();
        }
    }

    /// Whether `seq` is held.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| end >= seq)
    }

    /// Records `seq` as held.
    pub fn insert(&mut self, seq: u64) {
        if self.contains(seq) {
            return;
        }
        let below = self
            .ranges
            .range(..seq)
            .next_back()
            .filter(|(_, &end)| end + 1 == seq)
            .map(|(&start, _)| start);
        let above = seq
            .checked_add(1)
            .and_then(|next| self.ranges.get(&next).map(|&end| (next, end)));
        let start = below.unwrap_or(seq);
        let end = match above {
            Some((next, end)) => {
                self.ranges.remove(&next);
                end
            }
            None => seq,
        };
        self.ranges.insert(start, end);
        while self.ranges.len() > MAX_RANGES {
            self.ranges.pop_first();
        }
    }

    /// The ranges, for tests and status.
    #[cfg(test)]
    fn ranges(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().map(|(&a, &b)| (a, b)).collect()
    }
}

/// What the snapshot file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    /// Every record of this source before this WAL seq is accounted for.
    wal_next: u64,
    agents: HashMap<String, AgentSeen>,
}

/// The relay source's memory of what it holds.
pub struct Dedup {
    agents: Mutex<HashMap<String, Arc<tokio::sync::Mutex<AgentSeen>>>>,
    /// Requests hold it shared from their check to their update; the snapshot holds it
    /// alone, so that it never sees an append whose seqs are not yet recorded.
    pub(super) gate: tokio::sync::RwLock<()>,
    path: PathBuf,
    window: Duration,
}

fn now_secs() -> u64 {
    crate::event::unix_nanos_now() / 1_000_000_000
}

impl Dedup {
    /// Loads the snapshot in `state_dir` (if any) and reads the records of source
    /// `source` the WAL holds after it.
    pub fn load(state_dir: &Path, source: &str, wal: &Wal, window: Duration) -> Self {
        let path = state_dir.join("dedup.json");
        let snapshot: Snapshot = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "de-duplication snapshot unreadable; starting from the WAL alone (resent events may be stored twice)");
                Snapshot::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the de-duplication snapshot; starting from the WAL alone (resent events may be stored twice)");
                Snapshot::default()
            }
        };
        let mut agents = snapshot.agents;
        let learned = learn_from_wal(wal, source, snapshot.wal_next, &mut agents);
        tracing::info!(
            source,
            agents = agents.len(),
            from_wal = learned,
            "relay de-duplication state loaded"
        );
        Dedup {
            agents: Mutex::new(
                agents
                    .into_iter()
                    .map(|(k, v)| (k, Arc::new(tokio::sync::Mutex::new(v))))
                    .collect(),
            ),
            gate: tokio::sync::RwLock::new(()),
            path,
            window,
        }
    }

    /// The state of `agent`, to be locked for the whole of one request.
    pub fn agent(&self, agent: &str) -> Arc<tokio::sync::Mutex<AgentSeen>> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.len() >= MAX_AGENTS && !agents.contains_key(agent) {
            // Full: the agent heard from least recently is forgotten (an agent at work
            // holds its lock and is kept).
            let oldest = agents
                .iter()
                .filter_map(|(k, a)| a.try_lock().ok().map(|a| (a.last_seen, k.clone())))
                .min();
            if let Some((_, k)) = oldest {
                agents.remove(&k);
            }
        }
        agents
            .entry(agent.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(AgentSeen {
                    ranges: BTreeMap::new(),
                    last_seen: now_secs(),
                    wal_id: String::new(),
                }))
            })
            .clone()
    }

    /// Marks `agent` heard from now.
    pub fn touch(seen: &mut AgentSeen) {
        seen.last_seen = now_secs();
    }

    /// Writes the snapshot: forgets agents past the window (and beyond [`MAX_AGENTS`]),
    /// then records what is held up to the WAL's next seq. Returns how many agents it holds.
    pub async fn snapshot(&self, wal: &Wal) -> std::io::Result<usize> {
        let _alone = self.gate.write().await;
        let wal_next = wal.next_seq();
        let entries: Vec<(String, Arc<tokio::sync::Mutex<AgentSeen>>)> = {
            let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
            let cutoff = now_secs().saturating_sub(self.window.as_secs());
            agents.retain(|_, a| a.try_lock().map_or(true, |a| a.last_seen >= cutoff));
            if agents.len() > MAX_AGENTS {
                let mut by_age: Vec<(u64, String)> = agents
                    .iter()
                    .map(|(k, a)| (a.try_lock().map_or(u64::MAX, |a| a.last_seen), k.clone()))
                    .collect();
                by_age.sort_unstable();
                for (_, k) in by_age.into_iter().take(agents.len() - MAX_AGENTS) {
                    agents.remove(&k);
                }
            }
            agents.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut snapshot = Snapshot {
            wal_next,
            agents: HashMap::with_capacity(entries.len()),
        };
        for (k, v) in entries {
            snapshot.agents.insert(k, v.lock().await.clone());
        }
        drop(_alone);
        let agents = snapshot.agents.len();
        let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || crate::durable::write_atomic(&path, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        Ok(agents)
    }
}

/// Adds the origin seqs of source `source`'s records from WAL seq `from` on; returns how
/// many it read.
fn learn_from_wal(
    wal: &Wal,
    source: &str,
    from: u64,
    agents: &mut HashMap<String, AgentSeen>,
) -> u64 {
    let mut reader = wal.reader_from(from.max(1));
    let mut learned = 0u64;
    loop {
        let records = match reader.try_read(1000, 8 << 20) {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => return learned,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the WAL back for the de-duplication state; resent events may be stored twice");
                return learned;
            }
        };
        for r in records {
            let Some((name, json)) = split_payload(&r.payload) else {
                continue;
            };
            if name != source.as_bytes() {
                continue;
            }
            let Some(object) = std::str::from_utf8(json).ok().and_then(ClientObject::parse) else {
                continue;
            };
            let agent = object
                .get(ORIGIN_AGENT_ID)
                .and_then(|v| serde_json::from_str::<String>(v.get()).ok());
            let seq = object
                .get(ORIGIN_SEQ)
                .and_then(|v| v.get().parse::<u64>().ok());
            let wal_id = object
                .get(ORIGIN_WAL_ID)
                .and_then(|v| serde_json::from_str::<String>(v.get()).ok());
            if let (Some(agent), Some(seq)) = (agent, seq) {
                let seen = agents.entry(agent).or_default();
                if let Some(wal_id) = &wal_id {
                    seen.of_wal(wal_id, "");
                }
                seen.insert(seq);
                seen.last_seen = seen.last_seen.max(now_secs());
                learned += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_as_they_touch_and_hold_what_was_inserted() {
        let mut s = AgentSeen::default();
        for seq in [5, 7, 6, 1, 2, 10] {
            s.insert(seq);
        }
        assert_eq!(s.ranges(), vec![(1, 2), (5, 7), (10, 10)]);
        for seq in [1, 2, 5, 6, 7, 10] {
            assert!(s.contains(seq), "{seq}");
        }
        for seq in [0, 3, 4, 8, 9, 11] {
            assert!(!s.contains(seq), "{seq}");
        }
        s.insert(3);
        s.insert(4);
        assert_eq!(s.ranges(), vec![(1, 7), (10, 10)]);
    }

    #[test]
    fn a_new_wal_of_the_same_agent_starts_afresh() {
        let mut s = AgentSeen::default();
        s.insert(1);
        s.of_wal("w1", "a");
        assert!(s.contains(1), "seqs learnt from the WAL alone are kept");
        s.of_wal("w1", "a");
        assert!(s.contains(1));
        s.of_wal("w2", "a");
        assert!(!s.contains(1), "seq 1 of a new WAL is a new event");
    }

    #[test]
    fn beyond_the_bound_the_oldest_ranges_are_forgotten_never_new_seqs_refused() {
        let mut s = AgentSeen::default();
        for i in 0..(MAX_RANGES as u64 + 10) {
            s.insert(i * 2);
        }
        assert_eq!(s.ranges().len(), MAX_RANGES);
        assert!(!s.contains(0), "the oldest is forgotten");
        assert!(s.contains((MAX_RANGES as u64 + 9) * 2));
        assert!(!s.contains(1), "a seq never sent is never held");
    }
}
