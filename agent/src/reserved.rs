//! The reserved field names: the top-level fields of an event that only the agent writes,
//! because the continuity protocol relies on them. This module owns the list and the rule
//! for a client's field that clashes with it; [`crate::client_json`] applies the rule when
//! it writes a client's object, and every source hands client objects to it through
//! [`crate::event::EventEncoder`], so no source can forward a clashing field.
//!
//! - Reserved: `gapless` (the marker of gap and heartbeat records), the `seq_field` of
//!   every configured sink (default `seq`), and [`CLIENT_FIELDS`] itself.
//! - The rule: a client's top-level field with a reserved name is kept, with its value
//!   byte for byte, but moved into one object under [`CLIENT_FIELDS`], in the order sent
//!   (duplicates included). A client's own `client_fields` moves there too, so the rule is
//!   total and lossless: `{"message":"b","seq":9}` goes out as
//!   `{"seq":<agent's>,"message":"b","client_fields":{"seq":9},…}`.
//! - The agent's own records (heartbeats, gap records, dead-letter notices) are written by
//!   the agent alone and do not go through the rule; the file and stdin sources write only
//!   the fixed names of [`AGENT_FIELDS`], which a `seq_field` may not take (the config
//!   refuses it).
//!
//! So a receiver, and `gapless verify-stream`, can trust a top-level `gapless` or seq field:
//! the agent wrote it.

use crate::config::Config;

/// The marker of the agent's gap and heartbeat records (`"gapless":"gap"`).
pub const GAPLESS: &str = "gapless";

/// Where a client's fields with reserved names go.
pub const CLIENT_FIELDS: &str = "client_fields";

/// The field carrying the agent id in events sent to a platform without request headers
/// (Azure Monitor, Elasticsearch); heartbeats carry it too.
pub const AGENT_ID: &str = "agent_id";

/// Where an `azure_monitor_logs` sink keeps the event time of an event old enough for Azure
/// to replace its `TimeGenerated`.
pub const TIME_ORIGINAL: &str = "TimeOriginal";

/// On a relay, the id of the agent an event came from (set by the relay's `gapless` source
/// from the authenticated request, never by a client).
pub const ORIGIN_AGENT_ID: &str = "origin_agent_id";

/// On a relay, the event's seq at the agent it came from.
pub const ORIGIN_SEQ: &str = "origin_seq";

/// On a relay, the id of the agent's WAL the event came from (`Gapless-Wal-Id`): an agent
/// that lost its data_dir counts from seq 1 again in a new WAL.
pub const ORIGIN_WAL_ID: &str = "origin_wal_id";

/// The time field of Elasticsearch data streams.
pub const ES_TIMESTAMP: &str = "@timestamp";

/// The seq field of a sink that does not set `seq_field`.
pub const DEFAULT_SEQ_FIELD: &str = "seq";

/// Every top-level name the agent writes itself: in events from lines (`message`, …, the
/// file source's `file` and flags), in heartbeats and in gap records. A sink's `seq_field`
/// must not be one of them, or the agent would write that key twice.
pub const AGENT_FIELDS: &[&str] = &[
    // Events from lines, and the fields added to client objects.
    "message",
    "timestamp",
    "host",
    "source",
    "file",
    "journal",
    "truncated",
    "invalid_utf8",
    "partial",
    "continued",
    // The syslog source's object.
    "syslog",
    // The rule's own names.
    GAPLESS,
    CLIENT_FIELDS,
    // Gap records and dead-letter notices.
    "reason",
    "first_seq",
    "last_seq",
    "events",
    "bytes",
    "from",
    "to",
    "dead_letter_file",
    "status",
    "error",
    // What a relay adds to the events it passes on.
    ORIGIN_AGENT_ID,
    ORIGIN_WAL_ID,
    ORIGIN_SEQ,
    // Heartbeats.
    "agent_id",
    "version",
    "uptime_seconds",
    "sinks",
    "dropped_events",
    "dead_lettered_events",
];

/// The reserved names of one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedFields {
    names: Vec<String>,
}

impl ReservedFields {
    /// `gapless`, `client_fields`, the relay's `origin_agent_id` and `origin_seq`, and these
    /// seq fields.
    pub fn new<'a>(seq_fields: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<String> = [
            GAPLESS,
            CLIENT_FIELDS,
            ORIGIN_AGENT_ID,
            ORIGIN_SEQ,
            ORIGIN_WAL_ID,
        ]
        .into_iter()
        .chain(seq_fields)
        .map(str::to_string)
        .collect();
        names.sort_unstable();
        names.dedup();
        ReservedFields { names }
    }

    /// The reserved names of `config`: the seq fields of all its sinks and the fields its
    /// platform sinks add to every event ([`crate::config::SinkKind::added_fields`]).
    pub fn from_config(config: &Config) -> Self {
        let added: Vec<String> = config
            .sinks
            .values()
            .flat_map(|s| s.kind.added_fields())
            .collect();
        Self::new(
            config
                .sinks
                .values()
                .filter_map(|s| s.seq_field.as_deref())
                .chain(added.iter().map(String::as_str)),
        )
    }

    /// Whether a top-level field named `name` is the agent's alone.
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

impl Default for ReservedFields {
    /// The names of a configuration whose sinks keep the default `seq_field`.
    fn default() -> Self {
        Self::new([DEFAULT_SEQ_FIELD])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seq_fields_of_all_sinks_and_the_protocol_names_are_reserved() {
        let r = ReservedFields::new(["seq", "n", "seq"]);
        assert_eq!(
            r.names().collect::<Vec<_>>(),
            [
                "client_fields",
                "gapless",
                "n",
                "origin_agent_id",
                "origin_seq",
                "origin_wal_id",
                "seq"
            ]
        );
        assert!(r.contains("n") && !r.contains("message"));
        assert!(ReservedFields::new([]).contains(GAPLESS));
        assert!(ReservedFields::default().contains("seq"));
    }

    #[test]
    fn the_names_of_the_rule_are_agent_fields() {
        assert!(AGENT_FIELDS.contains(&GAPLESS) && AGENT_FIELDS.contains(&CLIENT_FIELDS));
        assert!(!AGENT_FIELDS.contains(&DEFAULT_SEQ_FIELD));
    }
}
