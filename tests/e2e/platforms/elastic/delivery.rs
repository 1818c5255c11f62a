//! Delivered exactly once whatever the cluster does: every event a `create` under
//! `<agent_id>-<seq>`, item 429/503 sent again alone, 409 taken as delivered, whole-request
//! 429/5xx sent again, 413 split, stalls, resets and lost answers sent again, a node that is
//! down failed over, and kill -9 of the agent in mid-delivery.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_event_is_created_once_in_the_data_stream_under_the_agent_id_and_its_seq() {
    let es = cluster().await;
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es once", 0, 50);
    s.ingest.post_ok(&lines).await;
    let events = wait_for_events(&es, &s.agent_id, lines.len()).await;
    assert_stored_once(&events, &lines);
    for e in events.values() {
        assert_eq!(e["agent_id"], s.agent_id.as_str(), "{e}");
        assert!(e["@timestamp"].is_string(), "{e}");
    }
    assert!(es.documents().iter().all(|d| d.stream == INDEX));
    let auth = format!("ApiKey {}", key());
    for r in es.requests() {
        assert_eq!(r.method, "POST");
        assert!(r.path.starts_with("/_bulk"), "{}", r.path);
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/x-ndjson")),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("authorization"), Some(auth.as_str()));
        assert_eq!(r.status, Some(200));
        for item in &r.items {
            assert_eq!(
                (item.action.as_str(), item.index.as_str()),
                ("create", INDEX)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn items_answered_429_or_503_are_sent_again_alone_until_stored() {
    let es = cluster().await;
    let busy = |seq: u64| seq.is_multiple_of(7);
    let unavailable = |seq: u64| seq.is_multiple_of(11);
    es.reject_items(429, 2, move |d| {
        d.get("gapless").is_none() && d["seq"].as_u64().is_some_and(busy)
    });
    es.reject_items(503, 1, move |d| {
        d.get("gapless").is_none() && d["seq"].as_u64().is_some_and(unavailable)
    });
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es item retry", 0, 40);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 40).await, &lines);
    for seq in 1..=40 {
        let expected: &[u16] = if busy(seq) {
            &[429, 429, 201]
        } else if unavailable(seq) {
            &[503, 201]
        } else {
            &[201]
        };
        assert_eq!(
            statuses(&es, &s.agent_id, seq),
            expected,
            "seq {seq}: the cluster saw it with these item statuses"
        );
    }
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

// One event the cluster keeps answering 429 holds the cursor: the sink must say so through
// /health/delivery, and recover by itself once the item is taken.
#[tokio::test(flavor = "multi_thread")]
async fn an_item_refused_with_429_again_and_again_raises_the_alarm_until_it_is_stored() {
    let es = cluster().await;
    es.reject_items(429, 12, |d| d["seq"] == 5);
    let s = start(
        &[es.url()],
        10,
        &format!("{}\nalert_after = \"1s\"", api_key_auth()),
    )
    .await;
    let lines = numbered_lines("es stuck item", 0, 10);
    s.ingest.post_ok(&lines).await;
    wait_until(SHORT, "/health/delivery to turn 503", async || {
        s.agent.api_get("/health/delivery").await.0 == 503
    })
    .await;
    assert!(events_by_seq(&es, &s.agent_id).len() < 10);
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 10).await, &lines);
    wait_until(SHORT, "/health/delivery to turn 200 again", async || {
        s.agent.api_get("/health/delivery").await.0 == 200
    })
    .await;
    assert_eq!(statuses(&es, &s.agent_id, 5).len(), 13);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_answered_409_counts_as_delivered_and_the_stored_document_is_kept() {
    let es = cluster().await;
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    // An earlier life of this agent stored seqs 1..=5 already.
    let earlier: String = (1..=5)
        .map(|seq| {
            format!(
                "{}\n{}\n",
                json!({"create": {"_index": INDEX, "_id": format!("{}-{seq}", s.agent_id)}}),
                json!({"@timestamp": "2026-11-30T00:00:00Z", "agent_id": s.agent_id, "message": "stored earlier", "seq": seq})
            )
        })
        .collect();
    let answer = reqwest::Client::new()
        .post(format!("{}/_bulk", es.url()))
        .header("content-type", "application/x-ndjson")
        .header("authorization", format!("ApiKey {}", key()))
        .body(earlier)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let lines = numbered_lines("es 409", 0, 10);
    s.ingest.post_ok(&lines).await;
    wait_for_status(&s.agent, "every event delivered", |st| {
        st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    for seq in 1..=10 {
        // The first 201 of seqs 1..=5 is the earlier life's.
        let expected: &[u16] = if seq <= 5 { &[201, 409] } else { &[201] };
        assert_eq!(statuses(&es, &s.agent_id, seq), expected, "seq {seq}");
    }
    let events = events_by_seq(&es, &s.agent_id);
    assert_eq!(events.len(), 10);
    assert!((1..=5).all(|seq| events[&seq]["message"] == "stored earlier"));
    let status = s.agent.status_json().await;
    assert_eq!(status["sinks"]["search"]["dead_lettered_events"], 0);
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_requests_answered_429_or_5xx_are_sent_again_until_stored() {
    let es = cluster().await;
    es.script([
        Fault::Status(429),
        Fault::Status(503),
        Fault::Status(500),
        Fault::Status(502),
    ]);
    let s = start(&[es.url()], 20, &api_key_auth()).await;
    let lines = numbered_lines("es whole", 0, 20);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 20).await, &lines);
    let answered: Vec<Option<u16>> = es.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        answered[..5],
        [Some(429), Some(503), Some(500), Some(502), Some(200)]
    );
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_over_http_max_content_length_gets_413_and_is_split_until_it_fits() {
    const LIMIT: usize = 4000;
    let es = Elastic::start(
        Settings::default()
            .api_key(&key())
            .max_content_length(LIMIT),
    )
    .await;
    let s = start(&[es.url()], 50, &api_key_auth()).await;
    let lines = numbered_lines("es split", 0, 50);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 50).await, &lines);
    let requests = es.requests();
    assert!(
        requests.iter().any(|r| r.status == Some(413)),
        "no request was over the limit; {}",
        es.summary()
    );
    for r in requests.iter().filter(|r| r.status == Some(200)) {
        assert!(r.body_bytes <= LIMIT, "{} bytes", r.body_bytes);
    }
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_reset_and_lost_answers_are_sent_again_and_stored_once() {
    let es = cluster().await;
    es.script([Fault::Stall, Fault::Reset, Fault::AnswerLost]);
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es lost", 0, 30);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 30).await, &lines);
    wait_for_status(&s.agent, "every event delivered", |st| {
        st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    let lost = &es.requests()[2];
    for item in &lost.items {
        let seq = item.source.as_ref().unwrap()["seq"].as_u64().unwrap();
        assert_eq!(
            statuses(&es, &s.agent_id, seq),
            [201, 409],
            "seq {seq}: stored, its answer lost, sent again"
        );
    }
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_first_endpoint_down_every_event_arrives_through_the_second() {
    let es = cluster().await;
    let second = es.join().await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let s = start(&[down, second.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es failover", 0, 30);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 30).await, &lines);
    assert!(es.documents().iter().all(|d| d.node == second.port()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_answering_503_does_not_hold_up_delivery_through_the_other() {
    let first = cluster().await;
    first.set_fault(Fault::Status(503));
    let second = first.join().await;
    let s = start(&[first.url(), second.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es busy node", 0, 30);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&second, &s.agent_id, 30).await, &lines);
    assert!(second.documents().iter().all(|d| d.node == second.port()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_going_down_mid_stream_is_failed_over_to_the_other() {
    let first = cluster().await;
    let second = first.join().await;
    let s = start(&[first.url(), second.url()], 10, &api_key_auth()).await;
    let before = numbered_lines("es before", 0, 20);
    s.ingest.post_ok(&before).await;
    wait_for_events(&second, &s.agent_id, 20).await;
    drop(first);
    let after = numbered_lines("es after", 0, 20);
    s.ingest.post_ok(&after).await;
    let all: Vec<String> = before.into_iter().chain(after).collect();
    assert_stored_once(&wait_for_events(&second, &s.agent_id, 40).await, &all);
}

/// Kills the agent 12 times while it delivers 1,500 events to a slow cluster: at moments
/// that vary, while the cluster holds a batch it has stored, and after an answer was lost;
/// then checks that every seq is stored exactly once. `extra` goes into the sink's table.
async fn kill_9_mid_delivery(es: &Elastic, extra: &str) {
    const KILLS: usize = 12;
    es.set_fault(Fault::Slow(Duration::from_millis(200)));
    let mut s = start(&[es.url()], 50, &format!("{}\n{extra}", api_key_auth())).await;
    let lines = numbered_lines("es kill9", 0, 1500);
    s.ingest.post_ok(&lines).await;
    for kill in 0..KILLS {
        // A fast build may deliver everything before the last kills: nothing is left to
        // kill mid-delivery then.
        if events_by_seq(es, &s.agent_id).len() >= lines.len() {
            eprintln!("kill {kill}: everything is stored already; no more kills");
            break;
        }
        let seen = es.requests().len();
        match kill % 3 {
            // At a moment that differs from kill to kill (the pause is the fault schedule,
            // not a synchronisation).
            0 => tokio::time::sleep(Duration::from_millis(50 + (seen as u64 * 37) % 250)).await,
            // While the cluster holds a batch it has stored, or has lost the answer to one.
            k => {
                if k == 2 {
                    es.script([Fault::AnswerLost]);
                }
                wait_until(DELIVERY, "a stored batch awaiting its answer", async || {
                    es.requests().iter().skip(seen).any(|r| {
                        r.status.is_none() && r.items.iter().any(|i| i.status == Some(201))
                    }) || events_by_seq(es, &s.agent_id).len() >= lines.len()
                })
                .await;
            }
        }
        s.agent.kill9();
        eprintln!("kill {kill}: {}", es.summary());
        s.agent.restart().await;
    }
    es.set_fault(Fault::None);
    let events = wait_for_events(es, &s.agent_id, lines.len()).await;
    assert_stored_once(&events, &lines);
    let conflicts = es
        .requests()
        .iter()
        .flat_map(|r| r.items.clone())
        .filter(|i| i.status == Some(409))
        .count();
    assert!(
        conflicts > 0,
        "no stored batch was sent again, so de-duplication went untested"
    );
    assert_seqs_covered_once(es, &s.agent_id);
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_every_node_down_events_wait_and_arrive_once_a_node_is_back() {
    // A node outside the endpoints, to look into the cluster.
    let es = cluster().await;
    let (a, b) = (free_port(), free_port());
    let s = start(
        &[
            format!("http://127.0.0.1:{a}"),
            format!("http://127.0.0.1:{b}"),
        ],
        10,
        &api_key_auth(),
    )
    .await;
    let lines = numbered_lines("es all down", 0, 30);
    s.ingest.post_ok(&lines).await;
    wait_for_status(&s.agent, "a last_error while no node answers", |st| {
        st["sinks"]["search"]["last_error"].is_string()
    })
    .await;
    assert!(es.documents().is_empty());
    let _back = es.join_on(b).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 30).await, &lines);
    assert!(es.documents().iter().all(|d| d.node == b));
}

// Crash: SIGKILL at moments that vary and while the cluster holds a batch it has already
// stored (slow answers, and answers lost after indexing), so that the restarted agent sends
// stored batches again.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_kill_9_mid_delivery_leaves_every_seq_stored_exactly_once() {
    kill_9_mid_delivery(&cluster().await, "").await;
}

// Crash: as above, with four requests in flight and items answered 429 on their first
// arrival, so that kills also land between an item's refusal and its resend.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_kill_9_with_concurrent_requests_and_item_retries_stores_every_seq_once() {
    let es = cluster().await;
    es.reject_items(429, 1, |d| {
        d.get("gapless").is_none() && d["seq"].as_u64().is_some_and(|s| s.is_multiple_of(13))
    });
    kill_9_mid_delivery(&es, "concurrency = 4").await;
}

// ECS-formatted logs carry their own `@timestamp` (and may carry `agent_id`): written next to
// the agent's, the key would appear twice, which Elasticsearch refuses for the whole document.
#[tokio::test(flavor = "multi_thread")]
async fn a_clients_own_timestamp_and_agent_id_do_not_clash_with_the_agents() {
    let es = cluster().await;
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let objects: Vec<Value> = (1..=5)
        .map(|i| {
            json!({"@timestamp": "2020-01-02T03:04:05.678Z", "agent_id": "forged",
                   "message": format!("es ecs {i}"), "log": {"level": "info"}})
        })
        .collect();
    post_objects(&s.ingest, &objects).await;
    wait_for_status(&s.agent, "every event sent", |st| {
        st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    let refused: Vec<_> = es
        .requests()
        .iter()
        .flat_map(|r| r.items.clone())
        .filter(|i| i.error.is_some())
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    let events = events_by_seq(&es, &s.agent_id);
    assert_eq!(events.len(), 5);
    for e in events.values() {
        assert_eq!(e["agent_id"], s.agent_id.as_str(), "{e}");
        let kept = e.to_string();
        assert!(
            kept.contains("2020-01-02T03:04:05.678Z") && kept.contains("forged"),
            "the client's own values were lost: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_compression_none_the_body_goes_out_plain() {
    let es = cluster().await;
    let s = start(
        &[es.url()],
        10,
        &format!("{}\ncompression = \"none\"", api_key_auth()),
    )
    .await;
    let lines = numbered_lines("es plain", 0, 20);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 20).await, &lines);
    assert!(es
        .requests()
        .iter()
        .all(|r| r.header("content-encoding").is_none()));
}

// A heartbeat carries the agent id itself: written next to the agent's, the key would
// appear twice and the document be refused.
#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_are_stored_under_their_own_seq_and_keep_the_hole_query_exact() {
    let es = cluster().await;
    let s = start_with(
        Agent::builder(),
        &format!(
            "{}\n[sources.hb]\ntype = \"heartbeat\"\ninterval = \"200ms\"\n",
            sink(&[es.url()], 10, &api_key_auth())
        ),
    )
    .await;
    let lines = numbered_lines("es heartbeat", 0, 20);
    s.ingest.post_ok(&lines).await;
    let heartbeats = || -> Vec<Document> {
        es.documents()
            .into_iter()
            .filter(|d| d.source["gapless"] == "heartbeat")
            .collect()
    };
    wait_until(DELIVERY, "two heartbeats and the events", async || {
        heartbeats().len() >= 2 && events_by_seq(&es, &s.agent_id).len() >= 20
    })
    .await;
    let refused: Vec<_> = es
        .requests()
        .iter()
        .flat_map(|r| r.items.clone())
        .filter(|i| i.error.is_some())
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    for hb in heartbeats() {
        let seq = hb.source["seq"].as_u64().expect("a heartbeat has a seq");
        assert_eq!(hb.id, format!("{}-{seq}", s.agent_id));
        assert_eq!(hb.source["agent_id"], s.agent_id.as_str());
    }
    assert_seqs_covered_once(&es, &s.agent_id);
}

// The README's hole query counts, per agent, the seqs covered by events and gap records
// between the lowest and the highest: it is exact only if nothing is covered twice. After a
// `drop_oldest` overflow the stream holds a gap record for what the WAL lost.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_wal_overflow_the_hole_query_counts_every_seq_once() {
    let es = cluster().await;
    es.set_fault(Fault::Status(503));
    let s = start_with(
        Agent::builder(),
        &format!(
            "[wal]\nmax_bytes = \"1MiB\"\nsegment_bytes = \"64KiB\"\nwhen_full = \"drop_oldest\"\n{}",
            sink(&[es.url()], 500, &api_key_auth())
        ),
    )
    .await;
    // About 3 MiB of events into a 1 MiB WAL while nothing can be delivered.
    let lines = numbered_lines("es drop-oldest", 0, 12_000);
    for chunk in lines.chunks(500) {
        s.ingest.post_ok(chunk).await;
    }
    wait_for_status(&s.agent, "the WAL dropping its oldest records", |st| {
        st["wal"]["dropped_oldest_records"].as_u64() > Some(0)
    })
    .await;
    es.set_fault(Fault::None);
    wait_until(DELIVERY, "the last line stored", async || {
        events_by_seq(&es, &s.agent_id)
            .values()
            .any(|e| e["message"] == lines.last().unwrap().as_str())
    })
    .await;
    wait_for_status(&s.agent, "an empty backlog", |st| {
        st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    let gaps: Vec<Value> = es
        .sources()
        .into_iter()
        .filter(|d| d["gapless"] == "gap")
        .collect();
    assert!(!gaps.is_empty(), "no gap record was stored");
    let summary: Vec<String> = gaps
        .iter()
        .map(|g| {
            format!(
                "seq {} covers {}..={} ({} events, {})",
                g["seq"], g["first_seq"], g["last_seq"], g["events"], g["reason"]
            )
        })
        .collect();
    eprintln!("gap records: {summary:#?}");
    assert_seqs_covered_once(&es, &s.agent_id);
}
