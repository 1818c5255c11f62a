//! What the cluster refuses for good goes to the dead-letter queue, announced by a notice
//! document naming the error (`mapper_parsing_exception`, …), while the rest is delivered;
//! `gapless dead-letter replay` sends it again under the same `_id`s.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn items_the_mapping_refuses_are_dead_lettered_with_a_notice_naming_mapper_parsing_exception()
{
    let es = cluster().await;
    es.map_long("code");
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    // 3 and 7 share a batch with delivered events between them.
    let bad: BTreeSet<usize> = [3, 7, 17].into();
    let objects: Vec<Value> = (1..=30)
        .map(|i| {
            let code = if bad.contains(&i) {
                json!("not-a-number")
            } else {
                json!(i)
            };
            json!({"message": format!("es mapping {i:03}"), "code": code})
        })
        .collect();
    post_objects(&s.ingest, &objects).await;
    let good = objects.len() - bad.len();
    wait_until(DELIVERY, "the good events and a notice", async || {
        events_by_seq(&es, &s.agent_id).len() >= good && !notices(&es).is_empty()
    })
    .await;
    let events = events_by_seq(&es, &s.agent_id);
    let stored: BTreeSet<&str> = events
        .values()
        .filter_map(|e| e["message"].as_str())
        .collect();
    for (i, o) in objects.iter().enumerate() {
        let message = o["message"].as_str().unwrap();
        assert_eq!(
            stored.contains(message),
            !bad.contains(&(i + 1)),
            "{message}"
        );
    }
    let refused: BTreeSet<u64> = es
        .requests()
        .iter()
        .flat_map(|r| r.items.clone())
        .filter(|i| i.error.as_deref() == Some("mapper_parsing_exception"))
        .map(|i| i.source.unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(refused.len(), bad.len(), "{refused:?}");
    for seq in &refused {
        assert_eq!(
            statuses(&es, &s.agent_id, *seq),
            [400],
            "seq {seq} was sent again after a permanent refusal"
        );
    }
    wait_until(SHORT, "notices covering the refused seqs", async || {
        let notices = notices(&es);
        refused.iter().all(|seq| {
            notices.iter().any(|(_, n)| {
                (n["first_seq"].as_u64()..=n["last_seq"].as_u64()).contains(&Some(*seq))
            })
        })
    })
    .await;
    let notices = notices(&es);
    for (id, n) in &notices {
        assert_eq!(n["error"], "mapper_parsing_exception", "{n}");
        assert_eq!(n["status"], 400, "{n}");
        let (a, z) = (
            n["first_seq"].as_u64().unwrap(),
            n["last_seq"].as_u64().unwrap(),
        );
        assert_eq!(id, &format!("{}-dead-letter-{a}-{z}", s.agent_id));
        let file = n["dead_letter_file"].as_str().unwrap();
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains("not-a-number"), "{file}: {text}");
    }
    let noticed: u64 = notices
        .iter()
        .map(|(_, n)| n["events"].as_u64().unwrap())
        .sum();
    assert_eq!(noticed, bad.len() as u64, "{notices:?}");
    wait_for_status(&s.agent, "the refused events counted", |st| {
        st["sinks"]["search"]["dead_lettered_events"] == bad.len()
            && st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    assert_seqs_covered_once(&es, &s.agent_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_request_refused_with_400_is_dead_lettered_and_the_rest_delivered() {
    let es = cluster().await;
    es.script([Fault::Status(400)]);
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es 400", 0, 30);
    s.ingest.post_ok(&lines).await;
    wait_until(DELIVERY, "the first request answered", async || {
        es.requests().first().is_some_and(|r| r.status.is_some())
    })
    .await;
    let first = es.requests()[0].clone();
    assert_eq!(first.status, Some(400));
    let refused: BTreeSet<u64> = first
        .items
        .iter()
        .map(|i| i.source.as_ref().unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert!(!refused.is_empty());
    let delivered = lines.len() - refused.len();
    wait_until(DELIVERY, "the rest delivered and a notice", async || {
        events_by_seq(&es, &s.agent_id).len() >= delivered && !notices(&es).is_empty()
    })
    .await;
    let events = events_by_seq(&es, &s.agent_id);
    assert!(refused.iter().all(|seq| !events.contains_key(seq)));
    assert_eq!(events.len(), delivered);
    let notices = notices(&es);
    assert_eq!(notices[0].1["status"], 400, "{:?}", notices);
    assert_eq!(notices[0].1["error"], "parse_exception", "{:?}", notices);
    assert_seqs_covered_once(&es, &s.agent_id);
    assert!(!dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_event_larger_than_http_max_content_length_is_dead_lettered_and_the_rest_delivered() {
    let es = Elastic::start(Settings::default().api_key(&key()).max_content_length(3000)).await;
    let s = start(&[es.url()], 20, &api_key_auth()).await;
    let mut lines = numbered_lines("es huge", 0, 20);
    lines[9] = format!("es huge {}", "x".repeat(4000));
    s.ingest.post_ok(&lines).await;
    wait_until(DELIVERY, "19 events and a notice", async || {
        events_by_seq(&es, &s.agent_id).len() >= 19 && !notices(&es).is_empty()
    })
    .await;
    let events = events_by_seq(&es, &s.agent_id);
    assert!(!events.contains_key(&10), "the huge event was stored");
    assert_eq!(events.len(), 19);
    let notices = notices(&es);
    assert_eq!(notices.len(), 1, "{notices:?}");
    let n = &notices[0].1;
    assert_eq!(
        (
            n["first_seq"].as_u64(),
            n["last_seq"].as_u64(),
            n["status"].as_u64()
        ),
        (Some(10), Some(10), Some(413)),
        "{n}"
    );
    assert_seqs_covered_once(&es, &s.agent_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_lettered_items_are_replayed_on_demand_under_their_own_ids() {
    let es = cluster().await;
    let refused = [3, 8];
    es.reject_items(400, 1, move |d| {
        d.get("gapless").is_none() && d["seq"].as_u64().is_some_and(|s| refused.contains(&s))
    });
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es replay", 0, 10);
    s.ingest.post_ok(&lines).await;
    wait_for_status(&s.agent, "two events dead-lettered", |st| {
        st["sinks"]["search"]["dead_lettered_events"] == 2
            && st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    assert_eq!(events_by_seq(&es, &s.agent_id).len(), 8);

    let (status, stdout, stderr) = run_command_async(&[
        "dead-letter".as_ref(),
        "replay".as_ref(),
        "--sink".as_ref(),
        "search".as_ref(),
        "--config".as_ref(),
        s.agent.config_path().as_os_str(),
    ])
    .await;
    assert!(
        status.success(),
        "dead-letter replay exited {status}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_stored_once(&events_by_seq(&es, &s.agent_id), &lines);
    for seq in refused {
        assert_eq!(statuses(&es, &s.agent_id, seq), [400, 201], "seq {seq}");
    }
    assert!(
        dead_letter_files(s.agent.data_dir()).is_empty(),
        "{:?}",
        dead_letter_files(s.agent.data_dir())
    );
}

/// Whether the stored notices cover every one of `seqs`.
fn noticed(es: &Elastic, seqs: &BTreeSet<u64>) -> bool {
    let notices = notices(es);
    seqs.iter().all(|seq| {
        notices
            .iter()
            .any(|(_, n)| (n["first_seq"].as_u64()..=n["last_seq"].as_u64()).contains(&Some(*seq)))
    })
}

// An API key without the privilege to write to the index is refused per item (403
// `security_exception`), not per request. The contract dead-letters that like any other
// 4xx; the notices are refused at first too, and must still arrive once the privilege is
// granted.
#[tokio::test(flavor = "multi_thread")]
async fn items_refused_for_a_missing_privilege_are_dead_lettered_and_noticed_once_granted() {
    let es = cluster().await;
    es.reject_items(403, 3, |_| true);
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es privilege", 0, 20);
    s.ingest.post_ok(&lines).await;
    let all: BTreeSet<u64> = (1..=20).collect();
    wait_until(DELIVERY, "notices covering every seq", async || {
        noticed(&es, &all)
    })
    .await;
    assert!(events_by_seq(&es, &s.agent_id).is_empty());
    for (_, n) in notices(&es) {
        assert_eq!(
            (n["status"].as_u64(), n["error"].as_str()),
            (Some(403), Some("security_exception")),
            "{n}"
        );
    }
    wait_for_status(&s.agent, "every event dead-lettered", |st| {
        st["sinks"]["search"]["dead_lettered_events"] == 20
            && st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    assert_seqs_covered_once(&es, &s.agent_id);
}

// Crash: SIGKILL while batches holding refused items are in flight (stored by the cluster,
// answer not yet read): after each restart the batch is sent again, its refused items are
// refused again, and no notice may be lost on the way.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_items_are_refused_loses_neither_events_nor_notices() {
    const KILLS: usize = 6;
    let es = cluster().await;
    es.map_long("code");
    es.set_fault(Fault::Slow(Duration::from_millis(150)));
    let mut s = start(&[es.url()], 20, &api_key_auth()).await;
    let bad = |i: usize| i.is_multiple_of(10);
    let objects: Vec<Value> = (1..=400)
        .map(|i| {
            let code = if bad(i) { json!("bad") } else { json!(i) };
            json!({"message": format!("es refused kill {i:04}"), "code": code})
        })
        .collect();
    post_objects(&s.ingest, &objects).await;
    for kill in 0..KILLS {
        let seen = es.requests().len();
        wait_until(DELIVERY, "a stored batch awaiting its answer", async || {
            es.requests()
                .iter()
                .skip(seen)
                .any(|r| r.status.is_none() && r.items.iter().any(|i| i.status == Some(201)))
        })
        .await;
        s.agent.kill9();
        eprintln!("kill {kill}: {}", es.summary());
        s.agent.restart().await;
    }
    es.set_fault(Fault::None);
    let refused_seqs = || -> BTreeSet<u64> {
        es.requests()
            .iter()
            .flat_map(|r| r.items.clone())
            .filter(|i| i.error.as_deref() == Some("mapper_parsing_exception"))
            .map(|i| i.source.unwrap()["seq"].as_u64().unwrap())
            .collect()
    };
    wait_until(
        DELIVERY,
        "the good events stored and every refusal noticed",
        async || {
            let refused = refused_seqs();
            events_by_seq(&es, &s.agent_id).len() == 360
                && refused.len() == 40
                && noticed(&es, &refused)
        },
    )
    .await;
    let stored: BTreeSet<String> = events_by_seq(&es, &s.agent_id)
        .values()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    for (i, o) in objects.iter().enumerate() {
        let message = o["message"].as_str().unwrap();
        assert_eq!(stored.contains(message), !bad(i + 1), "{message}");
    }
    let dead_lettered: String = dead_letter_files(s.agent.data_dir())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for (i, o) in objects.iter().enumerate().filter(|(i, _)| bad(i + 1)) {
        let message = o["message"].as_str().unwrap();
        assert!(
            dead_lettered.contains(message),
            "event {} refused but not in the dead-letter queue",
            i + 1
        );
    }
    assert_seqs_covered_once(&es, &s.agent_id);
}
