use std::time::Duration;

use serde_json::json;
use switchboard::events::{Append, ExpectedVersion, Subscription};

use crate::{
    event_store::{event, stream},
    helpers::{TestApp, both_backends, test_config},
};

/// The next event, or a panic after `deadline` (never a bare sleep).
async fn next_within(
    sub: &mut Subscription,
    deadline: Duration,
) -> std::sync::Arc<switchboard::events::RecordedEvent> {
    tokio::time::timeout(deadline, sub.next())
        .await
        .expect("no event arrived in time")
        .unwrap()
}

both_backends! {
    async fn a_live_subscriber_receives_each_append_in_order(db) {
        // A poll interval far longer than the deadline: delivery must come
        // from the wake-up on commit, not from polling.
        let mut config = test_config(db.config.clone());
        config.tailer_poll_interval = Duration::from_secs(600);
        let app = TestApp::spawn_with(config).await;
        let mut sub = app.state.tailer.subscribe();
        let s = stream("note:1");
        for version in 0..5u32 {
            let expected = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
            let written = app.state.store.append(vec![Append::new(s.clone(), expected, vec![event("note.added", json!({"n": version}))])], None).await.unwrap();
            let received = next_within(&mut sub, Duration::from_secs(5)).await;
            assert_eq!(*received, written[0]);
        }
        app.stop().await;
    }
}

both_backends! {
    async fn a_subscriber_from_an_old_cursor_gets_history_then_live_without_gap_or_duplicate(db) {
        let app = TestApp::spawn(&db).await;
        let store = &app.state.store;
        let s = stream("note:1");
        let mut all = Vec::new();
        for v in 0..10u32 {
            let expected = if v == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(v) };
            all.extend(store.append(vec![Append::new(s.clone(), expected, vec![event("note.added", json!({"v": v}))])], None).await.unwrap());
        }
        // Resume after the 4th event while new events keep arriving.
        let mut sub = app.state.tailer.subscribe_from(all[3].cursor);
        for v in 10..20u32 {
            all.extend(store.append(vec![Append::new(s.clone(), ExpectedVersion::Exact(v), vec![event("note.added", json!({"v": v}))])], None).await.unwrap());
        }
        let mut received = Vec::new();
        while received.len() < 16 {
            received.push(next_within(&mut sub, Duration::from_secs(10)).await.as_ref().clone());
        }
        assert_eq!(received, all[4..].to_vec());
        // And nothing more.
        assert!(tokio::time::timeout(Duration::from_millis(200), sub.next()).await.is_err());
        app.stop().await;
    }
}

both_backends! {
    async fn a_subscriber_that_falls_far_behind_catches_up_from_the_log(db) {
        let app = TestApp::spawn(&db).await;
        let mut sub = app.state.tailer.subscribe();
        // More than the in-memory channel holds (8192), without reading.
        let total = 9_000u32;
        let s = stream("bulk:1");
        let mut version = 0;
        while version < total {
            let batch = (0..500).map(|i| event("bulk.added", json!({"n": version + i}))).collect();
            let expected = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
            app.state.store.append(vec![Append::new(s.clone(), expected, batch)], None).await.unwrap();
            version += 500;
        }
        for n in 0..total {
            let e = next_within(&mut sub, Duration::from_secs(20)).await;
            assert_eq!(e.payload["n"], n);
        }
        app.stop().await;
    }
}

/// Postgres: positions commit out of order. A naive `position > N` poll
/// skips an event that commits after a later position was read; the store's
/// reader does not.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naive_position_poll_loses_an_event_that_the_store_reader_keeps() {
    use sea_orm::{ConnectionTrait, Statement};
    use switchboard::events::Cursor;

    use crate::helpers::{Kind, TestDb};

    let db = TestDb::new(Kind::Postgres).await;
    let app = TestApp::spawn(&db).await;
    let store = &app.state.store;

    // Transaction A takes position 1 and stays open.
    let slow = app.state.db.begin_write().await.unwrap();
    let a = store
        .append(
            vec![Append::new(
                stream("note:a"),
                ExpectedVersion::NoStream,
                vec![event("note.created", json!({}))],
            )],
            Some(&slow),
        )
        .await
        .unwrap();
    // B takes position 2 and commits first.
    let b = store
        .append(
            vec![Append::new(
                stream("note:b"),
                ExpectedVersion::NoStream,
                vec![event("note.created", json!({}))],
            )],
            None,
        )
        .await
        .unwrap();
    assert!(a[0].position < b[0].position);

    let naive = |after: i64| {
        let conn = app.state.db.conn().clone();
        async move {
            conn.query_all_raw(Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT position FROM events WHERE position > $1 ORDER BY position",
                [after.into()],
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<i64>("", "position").unwrap())
            .collect::<Vec<_>>()
        }
    };
    // The naive reader sees 2 and moves its cursor past 1.
    let first = naive(0).await;
    assert_eq!(first, vec![b[0].position]);
    // The store's reader waits: A is still running, so B is not yet readable.
    let page = store.read_all(Cursor::START, 100).await.unwrap();
    assert!(page.events.is_empty());
    assert!(page.pending);

    slow.commit().await.unwrap();

    let second = naive(b[0].position).await;
    assert!(
        second.is_empty(),
        "the naive reader never sees position {}",
        a[0].position
    );
    let log = crate::event_store::read_whole_log(store, 2).await;
    let ids: Vec<_> = log.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![a[0].id, b[0].id]);
    app.stop().await;
}

/// Postgres: 32 writers append 500 events each while a subscriber reads;
/// the subscriber (restarted halfway from its saved cursor) sees all 16,000
/// exactly once, in one consistent order.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_32_concurrent_writers_a_reader_sees_all_16000_events_exactly_once_in_order() {
    use std::collections::HashSet;

    use switchboard::events::Cursor;

    use crate::helpers::{Kind, TestDb};

    const WRITERS: u32 = 32;
    const PER_WRITER: u32 = 500;
    const TOTAL: usize = (WRITERS * PER_WRITER) as usize;
    let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;

    let db = TestDb::new(Kind::Postgres).await;
    let app = TestApp::spawn_with(test_config(db.with_max_connections(WRITERS + 8))).await;
    let store = app.state.store.clone();
    let tailer = app.state.tailer.clone();

    let reader = tokio::spawn(async move {
        let mut received = Vec::with_capacity(TOTAL);
        let mut sub = tailer.subscribe_from(Cursor::START);
        while received.len() < TOTAL {
            if received.len() == TOTAL / 2 {
                // Restart the reader: only its saved cursor survives.
                let saved: Cursor = sub.cursor().to_string().parse().unwrap();
                drop(sub);
                sub = tailer.subscribe_from(saved);
            }
            let e = tokio::time::timeout(Duration::from_secs(60), sub.next())
                .await
                .expect("reader stalled")
                .unwrap();
            received.push(e);
        }
        // Nothing beyond the 16,000.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sub.next())
                .await
                .is_err()
        );
        received
    });

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let s = stream(&format!("writer:{w}"));
            for v in 0..PER_WRITER {
                let expected = if v == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(v)
                };
                store
                    .append(
                        vec![Append::new(
                            s.clone(),
                            expected,
                            vec![event("load.appended", json!({"w": w, "v": v + 1}))],
                        )],
                        None,
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let received = reader.await.unwrap();

    // Exactly once.
    let ids: HashSet<_> = received.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), TOTAL);
    // Each writer's events in its own order.
    let mut last_version = vec![0u32; WRITERS as usize];
    for e in &received {
        let w = e.payload["w"].as_u64().unwrap() as usize;
        assert_eq!(e.version, last_version[w] + 1);
        last_version[w] = e.version;
    }
    // One consistent order: the same as reading the finished log from the start.
    let log: Vec<_> = crate::event_store::read_whole_log(&store, TOTAL)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(received.iter().map(|e| e.id).collect::<Vec<_>>(), log);
    assert!(received.windows(2).all(|w| w[0].cursor < w[1].cursor));
    app.stop().await;
}

/// Postgres: an event appended through one instance reaches the other
/// instance's subscribers within 100 ms, by LISTEN/NOTIFY (the fallback poll
/// is set to ten minutes here, so polling cannot be what delivers it).
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_appended_on_one_instance_reaches_the_other_within_100ms() {
    use crate::helpers::{Kind, TestDb};

    let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;
    let db = TestDb::new(Kind::Postgres).await;
    let mut config = test_config(db.config.clone());
    config.tailer_poll_interval = Duration::from_secs(600);
    let a = TestApp::spawn_with(config.clone()).await;
    let b = TestApp::spawn_with(config).await;
    let mut sub = b.state.tailer.subscribe();
    // Let B's LISTEN connection settle.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let s = stream("note:x");
    for v in 0..5u32 {
        let expected = if v == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(v)
        };
        let written = a
            .state
            .store
            .append(
                vec![Append::new(
                    s.clone(),
                    expected,
                    vec![event("note.added", json!({"v": v}))],
                )],
                None,
            )
            .await
            .unwrap();
        // From the commit on A (the append has returned) to B's subscriber.
        let started = tokio::time::Instant::now();
        let received = next_within(&mut sub, Duration::from_millis(100)).await;
        assert_eq!(received.id, written[0].id);
        eprintln!("cross-instance delivery {v}: {:?}", started.elapsed());
    }
    a.stop().await;
    b.stop().await;
}

/// Postgres: a transaction that cannot write to the log holds nothing back.
/// Strangers' write transactions left open for 30 s, one in another
/// database of the same server and one in this database on a table of its
/// own, delay neither a live subscriber nor a read of the log.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_open_transaction_does_not_hold_back_the_log() {
    use std::time::Instant;

    use sea_orm::{ConnectionTrait, TransactionTrait};
    use switchboard::{db::Db, events::Cursor};

    use crate::helpers::{Kind, TestDb};

    let db = TestDb::new(Kind::Postgres).await;
    let elsewhere = TestDb::new(Kind::Postgres).await;
    let mut config = test_config(db.config.clone());
    // Delivery must come from the wake-up on commit, not from a poll.
    config.tailer_poll_interval = Duration::from_secs(600);
    let app = TestApp::spawn_with(config).await;
    let store = &app.state.store;
    let mut sub = app.state.tailer.subscribe();
    // Both strangers' transactions stay open for 30 s while the log moves on.
    let mut strangers = Vec::new();
    for config in [&elsewhere.config, &db.config] {
        let stranger = Db::connect(config).await.unwrap();
        let txn = stranger.conn().begin().await.unwrap();
        txn.execute_unprepared("CREATE TABLE IF NOT EXISTS strangers_rows (n int)")
            .await
            .unwrap();
        txn.execute_unprepared("INSERT INTO strangers_rows VALUES (1)")
            .await
            .unwrap();
        strangers.push((stranger, txn));
    }
    let opened = Instant::now();
    let mut version = 0u32;
    while opened.elapsed() < Duration::from_secs(30) {
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let started = Instant::now();
        let written = store
            .append(
                vec![Append::new(
                    stream("note:horizon"),
                    expected,
                    vec![event("note.added", json!({"v": version}))],
                )],
                None,
            )
            .await
            .unwrap();
        version += 1;
        let received = next_within(&mut sub, Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert_eq!(*received, written[0]);
        let open_for = opened.elapsed();
        assert!(
            took < Duration::from_millis(100),
            "with strangers' transactions open for {open_for:?} the event took {took:?} to reach the subscriber"
        );
        // Readable, and the head, within 100 ms too (the service's own
        // background writes may hold them for a few milliseconds).
        let deadline = Instant::now() + Duration::from_millis(100);
        loop {
            let page = store.read_all(Cursor::START, 1000).await.unwrap();
            let head = store.head().await.unwrap();
            if page.events.last() == Some(&written[0]) && !page.pending && head == written[0].cursor
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the log is held back after {open_for:?}: pending {}, head {head:?}",
                page.pending
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(version >= 10, "{version} appends in 30 s");
    for (_, txn) in strangers {
        txn.rollback().await.unwrap();
    }
    app.stop().await;
}

/// Postgres: the service's own write transaction holds the log back from
/// its start, even when it had its id before it appended (else an event
/// committed meanwhile by someone else would be read first, and the
/// transaction's own, sorting before it, never).
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_transaction_that_had_its_id_before_appending_still_holds_the_log() {
    use sea_orm::ConnectionTrait;
    use switchboard::events::Cursor;

    use crate::helpers::{Kind, TestDb};

    let db = TestDb::new(Kind::Postgres).await;
    let app = TestApp::spawn(&db).await;
    let store = &app.state.store;
    let slow = app.state.db.begin_write().await.unwrap();
    // An id now, as any first write of the transaction would give it.
    slow.execute_unprepared("SELECT pg_current_xact_id()")
        .await
        .unwrap();
    let b = store
        .append(
            vec![Append::new(
                stream("note:b"),
                ExpectedVersion::NoStream,
                vec![event("note.created", json!({}))],
            )],
            None,
        )
        .await
        .unwrap();
    let page = store.read_all(Cursor::START, 100).await.unwrap();
    assert!(
        page.events.is_empty(),
        "read past a transaction that may still append"
    );
    assert!(page.pending);
    let a = store
        .append(
            vec![Append::new(
                stream("note:a"),
                ExpectedVersion::NoStream,
                vec![event("note.created", json!({}))],
            )],
            Some(&slow),
        )
        .await
        .unwrap();
    slow.commit().await.unwrap();
    let log = crate::event_store::read_whole_log(store, 2).await;
    let ids: Vec<_> = log.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![a[0].id, b[0].id]);
    app.stop().await;
}

/// Postgres: a cursor past the readable head (a webhook envelope's, while
/// an older transaction still runs) is one the log continues from, not one
/// of another log or of a reset database.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_past_the_readable_head_is_not_taken_for_a_reset_log() {
    use sea_orm::ConnectionTrait;

    use crate::helpers::{Kind, TestDb};

    let db = TestDb::new(Kind::Postgres).await;
    let app = TestApp::spawn(&db).await;
    let store = &app.state.store;
    let slow = app.state.db.begin_write().await.unwrap();
    slow.execute_unprepared("SELECT pg_current_xact_id()")
        .await
        .unwrap();
    let written = store
        .append(
            vec![Append::new(
                stream("note:past"),
                ExpectedVersion::NoStream,
                vec![event("note.created", json!({}))],
            )],
            None,
        )
        .await
        .unwrap();
    let cursor = written[0].cursor;
    assert!(
        cursor > store.head().await.unwrap(),
        "past the readable head"
    );
    assert_eq!(store.cannot_continue_from(cursor).await.unwrap(), None);
    let mut beyond = cursor.to_string();
    beyond.replace_range(
        ..beyond.find('-').unwrap(),
        &(u64::from(u32::MAX) * 4).to_string(),
    );
    assert!(
        store
            .cannot_continue_from(beyond.parse().unwrap())
            .await
            .unwrap()
            .is_some(),
        "{beyond} is past every event written"
    );
    slow.rollback().await.unwrap();
    app.stop().await;
}
