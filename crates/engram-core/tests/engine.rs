//! The engine alone: no HTTP, no model. Each test runs an [`Engine`] on the
//! embedded back-ends in a temporary directory with the deterministic
//! `HashEmbedder` of `engram-testkit` (see there why it is a fair double for
//! engine logic, and why it says nothing about retrieval quality).

use engram_core::requests::{ListRequest, MemoryInput, MemoryUpdate, SearchMode, SearchRequest};
use engram_core::{Error, JobState, Principal, Role, State};
use engram_testkit::{Options, TestEngine};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn input(v: serde_json::Value) -> MemoryInput {
    serde_json::from_value(v).expect("a valid memory input")
}

/// Create `texts` in `ns` and wait until they are searchable.
async fn add(t: &TestEngine, ns: &str, texts: &[&str]) -> Vec<Uuid> {
    let items = texts.iter().map(|s| input(json!({ "text": s }))).collect();
    let out = t.engine.create(&t.admin, ns, items).await.unwrap();
    let ids: Vec<Uuid> = out.iter().map(|(c, _)| c.id).collect();
    assert!(t
        .engine
        .wait_searchable(&ids, &t.admin, WAIT)
        .await
        .unwrap());
    ids
}

async fn search(t: &TestEngine, p: &Principal, query: &str, mode: SearchMode) -> Vec<Uuid> {
    let req = SearchRequest {
        query: query.into(),
        mode,
        ..Default::default()
    };
    let out = t.engine.search(p, req).await.unwrap();
    out.hits.iter().map(|h| h.id).collect()
}

const MODES: [SearchMode; 3] = [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid];

#[tokio::test]
async fn a_write_is_embedded_indexed_and_found_in_every_mode() {
    let t = TestEngine::start().await;
    let ids = add(
        &t,
        "notes",
        &[
            "the apple pie recipe needs cinnamon",
            "the train to Lyon leaves at nine",
            "quarterly revenue grew by four percent",
        ],
    )
    .await;
    let m = t.engine.get(&t.admin, ids[1]).await.unwrap();
    assert_eq!(m.state, State::Ready);
    assert_eq!(m.embedding_version.as_deref(), Some("test-hash-64"));
    for mode in MODES {
        let hits = search(&t, &t.admin, "when does the train to Lyon leave", mode).await;
        assert_eq!(hits.first(), Some(&ids[1]), "{mode:?}");
    }
}

#[tokio::test]
async fn the_same_text_twice_is_one_memory() {
    let t = TestEngine::start().await;
    let first = add(&t, "notes", &["remember the milk"]).await;
    let again = t
        .engine
        .create(
            &t.admin,
            "notes",
            vec![input(json!({"text": "remember the milk"}))],
        )
        .await
        .unwrap();
    assert_eq!(again[0].0.id, first[0]);
    assert_eq!(again[0].0.status, "duplicate");
    // Another namespace is another memory.
    let other = add(&t, "elsewhere", &["remember the milk"]).await;
    assert_ne!(other[0], first[0]);
}

#[tokio::test]
async fn an_edited_text_is_embedded_and_indexed_again() {
    let t = TestEngine::start().await;
    let ids = add(
        &t,
        "notes",
        &["meeting moved to tuesday", "unrelated words here"],
    )
    .await;
    let update = MemoryUpdate {
        text: Some("meeting moved to thursday afternoon".into()),
        ..Default::default()
    };
    let m = t.engine.update(&t.admin, ids[0], update).await.unwrap();
    assert_eq!(m.state, State::Pending, "a new text is embedded again");
    assert!(t
        .engine
        .wait_searchable(&ids, &t.admin, WAIT)
        .await
        .unwrap());
    for mode in MODES {
        let hits = search(&t, &t.admin, "thursday afternoon", mode).await;
        assert_eq!(hits.first(), Some(&ids[0]), "{mode:?}");
    }
    let hits = search(&t, &t.admin, "tuesday", SearchMode::Keyword).await;
    assert!(!hits.contains(&ids[0]), "the old text is no longer indexed");
}

#[tokio::test]
async fn a_deleted_memory_is_gone_until_restored() {
    let t = TestEngine::start().await;
    let ids = add(&t, "notes", &["the spare key is under the mat"]).await;
    t.engine.delete(&t.admin, ids[0], false).await.unwrap();
    t.engine.catch_up().await.unwrap();
    for mode in MODES {
        assert!(
            search(&t, &t.admin, "spare key", mode).await.is_empty(),
            "{mode:?}"
        );
    }
    assert!(matches!(
        t.engine.get(&t.admin, ids[0]).await,
        Err(Error::MemoryNotFound(_))
    ));
    t.engine.restore(&t.admin, ids[0]).await.unwrap();
    assert!(t
        .engine
        .wait_searchable(&ids, &t.admin, WAIT)
        .await
        .unwrap());
    assert_eq!(
        search(&t, &t.admin, "spare key", SearchMode::Hybrid).await,
        ids
    );
    // A purge is final: nothing to restore.
    t.engine.delete(&t.admin, ids[0], true).await.unwrap();
    assert!(matches!(
        t.engine.restore(&t.admin, ids[0]).await,
        Err(Error::Conflict(_) | Error::MemoryNotFound(_))
    ));
}

/// Issue #15: a PATCH that releases a hold and then fails changes nothing,
/// the audit chain included.
#[tokio::test]
async fn a_refused_patch_releases_no_hold_and_writes_no_audit_event() {
    let t = TestEngine::start().await;
    let ids = add(
        &t,
        "notes",
        &["contract signed on may 3", "invoice paid on may 9"],
    )
    .await;
    let hold = MemoryUpdate {
        legal_hold: Some(true),
        ..Default::default()
    };
    t.engine.update(&t.admin, ids[0], hold).await.unwrap();
    let admin = t.engine.admin();
    let before = admin
        .audit_events(&t.admin, Default::default())
        .await
        .unwrap()
        .len();

    // Release the hold and take the other memory's text: a conflict.
    let patch = MemoryUpdate {
        legal_hold: Some(false),
        text: Some("invoice paid on may 9".into()),
        ..Default::default()
    };
    let err = t.engine.update(&t.admin, ids[0], patch).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    let m = t.engine.get(&t.admin, ids[0]).await.unwrap();
    assert!(m.legal_hold, "the release was rolled back with the change");
    assert_eq!(m.text, "contract signed on may 3");
    let after = admin
        .audit_events(&t.admin, Default::default())
        .await
        .unwrap();
    assert_eq!(after.len(), before, "no event of the refused patch");
    assert!(admin.verify_audit(&t.admin).await.unwrap().ok);

    // The same release with a valid change applies both.
    let patch = MemoryUpdate {
        legal_hold: Some(false),
        text: Some("contract signed on may 4".into()),
        ..Default::default()
    };
    let m = t.engine.update(&t.admin, ids[0], patch).await.unwrap();
    assert!(!m.legal_hold);
    assert_eq!(m.text, "contract signed on may 4");
}

#[tokio::test]
async fn other_tenants_and_scoped_principals_see_nothing_else() {
    let t = TestEngine::start().await;
    let ids = add(&t, "private", &["the vault code is 4711"]).await;
    add(&t, "public", &["the cafeteria opens at eight"]).await;
    let stranger = Principal::new("globex", "someone", Role::Admin);
    for mode in MODES {
        assert!(search(&t, &stranger, "vault code", mode).await.is_empty());
    }
    assert!(matches!(
        t.engine.get(&stranger, ids[0]).await,
        Err(Error::MemoryNotFound(_))
    ));
    let mut scoped = Principal::new("acme", "reader", Role::Reader);
    scoped.namespaces = Some(vec!["public".into()]);
    for mode in MODES {
        assert!(!search(&t, &scoped, "vault code", mode)
            .await
            .contains(&ids[0]));
    }
    assert!(matches!(
        t.engine.delete(&scoped, ids[0], false).await,
        Err(Error::Forbidden(_) | Error::MemoryNotFound(_))
    ));
}

#[tokio::test]
async fn rebuilt_indexes_answer_as_before() {
    let t = TestEngine::start().await;
    let ids = add(
        &t,
        "notes",
        &["blue whales eat krill", "red pandas eat bamboo"],
    )
    .await;
    let before = search(&t, &t.admin, "what do pandas eat", SearchMode::Hybrid).await;
    t.engine.rebuild().await.unwrap();
    let after = search(&t, &t.admin, "what do pandas eat", SearchMode::Hybrid).await;
    assert_eq!(before, after);
    assert_eq!(after.first(), Some(&ids[1]));
}

#[tokio::test]
async fn without_a_worker_jobs_wait_and_nothing_is_searchable() {
    let t = TestEngine::with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let out = t
        .engine
        .create(
            &t.admin,
            "notes",
            vec![input(json!({"text": "queued but not embedded"}))],
        )
        .await
        .unwrap();
    let id = out[0].0.id;
    assert!(!t
        .engine
        .wait_searchable(&[id], &t.admin, Duration::from_millis(300))
        .await
        .unwrap());
    assert_eq!(t.engine.state(&t.admin, id).await.unwrap(), State::Pending);
    let jobs = t
        .engine
        .jobs(&t.admin, Some(JobState::Queued), None, 100)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let page = t
        .engine
        .list(&t.admin, ListRequest::default())
        .await
        .unwrap();
    assert_eq!(page.memories.len(), 1, "listed before it is embedded");
}
