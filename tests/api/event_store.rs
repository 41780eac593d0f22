use std::{collections::HashSet, sync::Arc};

use sea_orm::ConnectionTrait;
use serde_json::json;
use switchboard::events::{
    Actor, ActorKind, Append, AppendError, Cursor, EventStore, EventType, ExpectedVersion,
    NewEvent, RecordedEvent, StreamName,
};
use tokio::sync::Barrier;

use crate::helpers::{TestApp, both_backends};

pub fn event(event_type: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent::new(
        EventType::parse(event_type).unwrap(),
        payload,
        Actor::new(ActorKind::Admin, "a1"),
    )
}

pub fn stream(name: &str) -> StreamName {
    StreamName::parse(name).unwrap()
}

/// Appends to one stream on its own.
pub async fn append(
    store: &EventStore,
    stream: &StreamName,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<Vec<RecordedEvent>, AppendError> {
    store
        .append(vec![Append::new(stream.clone(), expected, events)], None)
        .await
}

fn store(app: &TestApp) -> EventStore {
    app.state.store.clone()
}

/// Waits until every committed event is readable (on Postgres, older
/// transactions elsewhere in the cluster can hold new ones back briefly).
pub async fn settle(store: &EventStore) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut cursor = Cursor::START;
    loop {
        let page = store.read_all(cursor, 5000).await.unwrap();
        cursor = page.next;
        if page.events.is_empty() && !page.pending {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log did not settle"
        );
        if page.events.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// The whole log from the start, once `expected` events are readable.
///
/// On Postgres a committed event becomes readable once every older
/// transaction in the cluster has ended (other tests' included), so this
/// waits for that, with a deadline, instead of expecting it at once.
pub async fn read_whole_log(store: &EventStore, expected: usize) -> Vec<RecordedEvent> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut events = Vec::with_capacity(expected);
    let mut cursor = Cursor::START;
    loop {
        let page = store.read_all(cursor, 5000).await.unwrap();
        cursor = page.next;
        let empty = page.events.is_empty();
        events.extend(page.events);
        if empty && events.len() >= expected && !page.pending {
            break;
        }
        if empty {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {expected} events became readable",
                events.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    assert_eq!(
        events.len(),
        expected,
        "the log holds more events than expected"
    );
    events
}

both_backends! {
    async fn appended_events_read_back_exactly_in_version_order(db) {
        let app = TestApp::spawn(&db).await;
        let store = store(&app);
        let s = stream("note:1");
        let written = append(
            &store,
            &s,
            ExpectedVersion::NoStream,
            vec![
                event("note.created", json!({"subject": "Где мой платёж?"})),
                event("note.added", json!({"text": "hello", "n": 1})),
            ],
        )
        .await
        .unwrap();
        let more = append(&store, &s, ExpectedVersion::Exact(2), vec![event("note.closed", json!({"old_status": "open"}))])
            .await
            .unwrap();

        let read = store.read_stream(&s).await.unwrap();
        let expected: Vec<_> = written.into_iter().chain(more).collect();
        assert_eq!(read, expected);
        assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(read.windows(2).all(|w| w[0].position < w[1].position));
        assert_eq!(read[0].payload["subject"], "Где мой платёж?");
        assert_eq!(read[0].actor, Actor::new(ActorKind::Admin, "a1"));
        // UUIDv7 ids, distinct.
        assert!(read.iter().all(|e| e.id.as_uuid().get_version_num() == 7));
        assert_eq!(read.iter().map(|e| e.id).collect::<HashSet<_>>().len(), 3);
        assert_eq!(store.stream_version(&s).await.unwrap(), 3);
        app.stop().await;
    }
}

both_backends! {
    async fn a_stale_expected_version_is_a_conflict_and_writes_nothing(db) {
        let app = TestApp::spawn(&db).await;
        let store = store(&app);
        let s = stream("note:7");
        append(&store, &s, ExpectedVersion::NoStream, vec![event("note.created", json!({}))]).await.unwrap();

        for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(0), ExpectedVersion::Exact(5)] {
            let err = append(&store, &s, expected, vec![event("note.added", json!({})), event("note.closed", json!({}))])
                .await
                .unwrap_err();
            assert!(matches!(err, AppendError::Conflict(_)), "expected a conflict, got {err:?}");
        }
        assert_eq!(store.read_stream(&s).await.unwrap().len(), 1);
        read_whole_log(&store, 1).await;
        app.stop().await;
    }
}

both_backends! {
    async fn of_concurrent_appends_at_the_same_version_exactly_one_wins(db) {
        let app = TestApp::spawn(&db).await;
        let store = store(&app);
        let s = stream("note:race");
        append(&store, &s, ExpectedVersion::NoStream, vec![event("note.created", json!({}))]).await.unwrap();

        let contenders = 8;
        let barrier = Arc::new(Barrier::new(contenders));
        let mut handles = Vec::new();
        for writer in 0..contenders {
            let store = store.clone();
            let barrier = barrier.clone();
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let batch = (0..3)
                    .map(|i| event("note.added", json!({"writer": writer, "i": i})))
                    .collect();
                append(&store, &s, ExpectedVersion::Exact(1), batch).await
            }));
        }
        let mut winners = Vec::new();
        for handle in handles {
            match handle.await.unwrap() {
                Ok(events) => winners.push(events),
                Err(AppendError::Conflict(_)) => {}
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one append must win");

        // Nothing partial: the stream holds the first event and the winner's
        // whole batch, and nothing from any loser.
        let read = store.read_stream(&s).await.unwrap();
        assert_eq!(read.len(), 4);
        let winner = read[1].payload["writer"].clone();
        assert!(read[1..].iter().all(|e| e.payload["writer"] == winner));
        assert_eq!(read[1..].to_vec(), winners.pop().unwrap());
        app.stop().await;
    }
}

both_backends! {
    async fn reading_the_whole_log_by_cursor_pages_through_every_event_once(db) {
        let app = TestApp::spawn(&db).await;
        let store = store(&app);
        for n in 0..25u32 {
            let s = stream(&format!("note:{}", n % 5));
            let expected = if n < 5 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(n / 5) };
            append(&store, &s, expected, vec![event("note.added", json!({"n": n}))]).await.unwrap();
        }
        let whole = read_whole_log(&store, 25).await;
        // Pages of 7, each resumed from the previous page's cursor after a
        // round trip through its string form, give the same sequence.
        let mut cursor = Cursor::START;
        let mut seen = Vec::new();
        loop {
            let page = store.read_all(cursor, 7).await.unwrap();
            assert!(page.events.len() <= 7);
            if page.events.is_empty() {
                assert_eq!(page.next, cursor);
                break;
            }
            cursor = page.next.to_string().parse().unwrap();
            seen.extend(page.events);
        }
        assert_eq!(seen, whole);
        assert_eq!(
            seen.iter().map(|e| e.payload["n"].as_u64().unwrap()).collect::<Vec<_>>(),
            (0..25).collect::<Vec<_>>()
        );
        assert_eq!(store.head().await.unwrap(), cursor);
        app.stop().await;
    }
}

both_backends! {
    async fn the_database_refuses_to_update_or_delete_events(db) {
        let app = TestApp::spawn(&db).await;
        let store = store(&app);
        append(&store, &stream("note:1"), ExpectedVersion::NoStream, vec![event("note.created", json!({}))]).await.unwrap();
        let conn = app.state.db.conn();
        assert!(conn.execute_unprepared("UPDATE events SET type = 'note.deleted'").await.is_err());
        assert!(conn.execute_unprepared("DELETE FROM events").await.is_err());
        let read = store.read_stream(&stream("note:1")).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].event_type.as_str(), "note.created");
        app.stop().await;
    }
}

both_backends! {
    async fn a_rolled_back_transaction_leaves_no_events(db) {
        let app = TestApp::spawn(&db).await;
        let store = store(&app);
        let txn = app.state.db.begin_write().await.unwrap();
        store
            .append(vec![Append::new(stream("note:1"), ExpectedVersion::NoStream, vec![event("note.created", json!({}))])], Some(&txn))
            .await
            .unwrap();
        txn.rollback().await.unwrap();
        assert!(store.read_stream(&stream("note:1")).await.unwrap().is_empty());
        assert!(store.read_all(Cursor::START, 10).await.unwrap().events.is_empty());
        app.stop().await;
    }
}

both_backends! {
    async fn appends_written_together_succeed_or_conflict_each_on_their_own(db) {
        let app = TestApp::spawn(&db).await;
        let store = store(&app);
        let stale = stream("note:stale");
        append(&store, &stale, ExpectedVersion::NoStream, vec![event("note.created", json!({}))]).await.unwrap();

        // Many appends at once; exactly the stale one is refused.
        let barrier = Arc::new(Barrier::new(41));
        let mut handles = Vec::new();
        for n in 0..41u32 {
            let store = store.clone();
            let barrier = barrier.clone();
            let stale = stale.clone();
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                if n == 20 {
                    append(&store, &stale, ExpectedVersion::NoStream, vec![event("note.added", json!({}))]).await
                } else {
                    let events = (0..(n % 3 + 1)).map(|i| event("note.added", json!({"n": n, "i": i}))).collect();
                    append(&store, &stream(&format!("note:{n}")), ExpectedVersion::NoStream, events).await
                }
            }));
        }
        let mut written = 0;
        for (n, handle) in handles.into_iter().enumerate() {
            match (n, handle.await.unwrap()) {
                (20, Err(AppendError::Conflict(_))) => {}
                (20, other) => panic!("the stale append must conflict, got {other:?}"),
                (n, Ok(events)) => {
                    assert_eq!(events.len(), n % 3 + 1);
                    assert!(events.iter().all(|e| e.payload["n"] == n));
                    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), (1..=events.len() as u32).collect::<Vec<_>>());
                    written += events.len();
                }
                (n, Err(e)) => panic!("append {n} failed: {e:?}"),
            }
        }
        let log = read_whole_log(&store, written + 1).await;
        assert_eq!(log.iter().map(|e| e.id).collect::<HashSet<_>>().len(), written + 1);
        app.stop().await;
    }
}

both_backends! {
    async fn an_append_to_several_streams_goes_in_whole_or_not_at_all(db) {
        let app = TestApp::spawn(&db).await;
        let store = store(&app);
        let (a, b) = (stream("note:a"), stream("note:b"));
        append(&store, &b, ExpectedVersion::NoStream, vec![event("note.created", json!({}))]).await.unwrap();
        // `b` is at 1, not at none: neither stream gets anything.
        let err = store
            .append(
                vec![
                    Append::new(a.clone(), ExpectedVersion::NoStream, vec![event("note.created", json!({}))]),
                    Append::new(b.clone(), ExpectedVersion::NoStream, vec![event("note.created", json!({}))]),
                ],
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::Conflict(_)), "{err:?}");
        assert!(store.read_stream(&a).await.unwrap().is_empty());
        assert_eq!(store.read_stream(&b).await.unwrap().len(), 1);
        // At the right versions both go in, a's and b's, in one append.
        let written = store
            .append(
                vec![
                    Append::new(a.clone(), ExpectedVersion::NoStream, vec![event("note.created", json!({"s": "a"}))]),
                    Append::new(b.clone(), ExpectedVersion::Exact(1), vec![event("note.added", json!({"s": "b"})), event("note.added", json!({"s": "b"}))]),
                ],
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            written.iter().map(|e| (e.stream.as_str().to_owned(), e.version)).collect::<Vec<_>>(),
            [("note:a".to_owned(), 1), ("note:b".to_owned(), 2), ("note:b".to_owned(), 3)]
        );
        assert_eq!(store.read_stream(&b).await.unwrap().len(), 3);
        read_whole_log(&store, 4).await;
        app.stop().await;
    }
}
