//! Conversation sessions through the API: append, retry, conflicts, reading
//! in order, contextual search, event-time filters, deletion.

use super::*;

async fn append(app: &App, session: &str, body: Value) -> (StatusCode, Value) {
    app.call(
        "POST",
        &format!("/v1/sessions/{session}/messages?wait=true"),
        Some(body),
    )
    .await
}

fn positions(v: &Value) -> Vec<u64> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["position"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_append_in_order_retry_idempotently_and_refuse_conflicts() {
    let app = app().await;
    let (s, v) = append(
        &app,
        "chat-1",
        json!({"namespace": "conv", "messages": [
            {"speaker": "Ann", "text": "I adopted a dog last week", "occurred_at": "2023-05-08T13:56:00Z"},
            {"role": "Bo", "text": "What is its name?"},
            {"speaker": "Ann", "text": "Her name is Pixel", "metadata": {"mood": "happy"}}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(positions(&v), vec![0, 1, 2]);
    assert!(v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["status"] == "created" && m["state"] == "ready"));
    let second = v["messages"][1]["id"].clone();

    // Appending continues the order; the same words again are a new message.
    let (s, v) = append(
        &app,
        "chat-1",
        json!({"namespace": "conv", "messages": [{"speaker": "Bo", "text": "What is its name?"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(positions(&v), vec![3]);
    assert_ne!(v["messages"][0]["id"], second);

    // A retry with positions returns the stored message.
    let (s, v) = append(
        &app,
        "chat-1",
        json!({"namespace": "conv", "messages": [{"position": 1, "speaker": "Bo", "text": "What is its name?"}]}),
    )
    .await;
    assert!(s.is_success(), "{v}");
    assert_eq!(v["messages"][0]["status"], "duplicate");
    assert_eq!(v["messages"][0]["id"], second);

    // Another message at a taken position, positions that do not increase,
    // bad ids, speakers and times: clear 4xx, nothing stored.
    let (s, v) = append(
        &app,
        "chat-1",
        json!({"namespace": "conv", "messages": [{"position": 1, "speaker": "Bo", "text": "something else"}]}),
    )
    .await;
    assert_error(s, &v, StatusCode::CONFLICT, "position_conflict");
    let (s, v) = append(
        &app,
        "chat-1",
        json!({"namespace": "conv", "messages": [{"position": 9, "text": "a"}, {"position": 9, "text": "b"}]}),
    )
    .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_position");
    let (s, v) = append(
        &app,
        "chat-1",
        json!({"namespace": "conv", "messages": [{"position": 9223372036854775808_u64, "text": "a"}]}),
    )
    .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_position");
    let (s, v) = append(
        &app,
        "chat%0A1",
        json!({"namespace": "conv", "messages": [{"text": "a"}]}),
    )
    .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_session");
    let (s, v) = append(
        &app,
        "chat-1",
        json!({"namespace": "conv", "messages": [{"speaker": "x".repeat(300), "text": "a"}]}),
    )
    .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_session");
    let (s, v) = append(
        &app,
        "chat-1",
        json!({"namespace": "conv", "messages": [{"text": "a", "occurred_at": "0000-06-01T00:00:00Z"}]}),
    )
    .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "out_of_range");
    let (s, v) = append(&app, "chat-1", json!({"namespace": "conv", "messages": []})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = append(
        &app,
        "chat-1",
        json!({"namespace": "conv", "messages": [{"text": "a", "position": -1}]}),
    )
    .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");

    // Read back in order, page by page.
    let (s, v) = app
        .call(
            "GET",
            "/v1/sessions/chat-1/messages?namespace=conv&limit=3",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let texts: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        vec![
            "I adopted a dog last week",
            "What is its name?",
            "Her name is Pixel"
        ]
    );
    let first = &v["messages"][0];
    assert_eq!(first["kind"], "message");
    assert_eq!(first["session"]["id"], "chat-1");
    assert_eq!(first["session"]["position"], 0);
    assert_eq!(first["session"]["speaker"], "Ann");
    assert_eq!(first["occurred_at"], "2023-05-08T13:56:00Z");
    assert_eq!(v["messages"][2]["metadata"]["mood"], "happy");
    assert_eq!(v["next_after"], 2);
    let (s, v) = app
        .call(
            "GET",
            "/v1/sessions/chat-1/messages?namespace=conv&after=2",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        positions(
            &json!({"messages": v["messages"].as_array().unwrap().iter().map(|m| json!({"position": m["session"]["position"]})).collect::<Vec<_>>()})
        ),
        vec![3]
    );
    assert!(v.get("next_after").is_none(), "{v}");
    let (s, v) = app
        .call("GET", "/v1/sessions/nope/messages?namespace=conv", None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "session_not_found");
    let (s, v) = app
        .call("GET", "/v1/sessions/chat-1/messages?namespace=other", None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "session_not_found");

    // Delete the session: its messages leave reads and searches.
    let (s, v) = app
        .call("DELETE", "/v1/sessions/chat-1?namespace=conv", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"deleted": 4, "held": 0}));
    let (s, v) = app
        .call("GET", "/v1/sessions/chat-1/messages?namespace=conv", None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "session_not_found");
    let (s, v) = app
        .call("DELETE", "/v1/sessions/chat-1?namespace=conv", None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "session_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_searched_with_their_context_and_event_time() {
    let app = app().await;
    let (s, v) = append(
        &app,
        "walk",
        json!({"namespace": "conv", "messages": [
            {"speaker": "Ann", "text": "I adopted a dog last week", "occurred_at": "2023-05-08T13:56:00Z"},
            {"speaker": "Bo", "text": "Lovely! What is its name?", "occurred_at": "2023-05-08T13:57:00Z"},
            {"speaker": "Ann", "text": "Her name is Pixel", "occurred_at": "2023-05-08T13:58:00Z"}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    app.add("conv", "The office coffee machine is broken", json!({}))
        .await;

    // "Pixel" says nothing of a dog: the neighbouring turn does. The text
    // returned is the message itself.
    let hits = app
        .search(json!({"query": "What is the name of Ann's dog?", "mode": "keyword", "namespaces": ["conv"]}))
        .await;
    assert_eq!(hits[0]["text"], "Her name is Pixel", "{hits:?}");
    assert_eq!(hits[0]["session"]["position"], 2);
    // The session date is part of the context too.
    let hits = app
        .search(json!({"query": "May 2023", "mode": "keyword", "namespaces": ["conv"]}))
        .await;
    assert_eq!(hits.len(), 3, "{hits:?}");
    // Hybrid (the default) has it in the top two (beside the turn that
    // names the dog, which the embedding prefers).
    let hits = app
        .search(json!({"query": "What is the name of Ann's dog?", "namespaces": ["conv"]}))
        .await;
    let top2: Vec<&str> = hits
        .iter()
        .take(2)
        .map(|h| h["text"].as_str().unwrap())
        .collect();
    assert!(top2.contains(&"Her name is Pixel"), "{hits:?}");

    // A message that arrives later becomes its neighbours' context.
    let hits = app
        .search(json!({"query": "squeaky toy", "mode": "keyword", "namespaces": ["conv"]}))
        .await;
    assert!(hits.is_empty(), "{hits:?}");
    let (s, v) = append(
        &app,
        "walk",
        json!({"namespace": "conv", "messages": [{"speaker": "Bo", "text": "I will bring a squeaky toy"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let hits = app
        .search(json!({"query": "squeaky toy", "mode": "keyword", "namespaces": ["conv"]}))
        .await;
    let texts: Vec<&str> = hits.iter().map(|h| h["text"].as_str().unwrap()).collect();
    assert_eq!(texts[0], "I will bring a squeaky toy", "{texts:?}");
    assert!(texts.contains(&"Her name is Pixel"), "{texts:?}");

    // Event time: filter and ranges; created_at is untouched.
    let hits = app
        .search(json!({"query": "dog name", "namespaces": ["conv"],
            "filter": {"occurred_at": {"$lt": "2023-05-08T13:57:30Z"}}}))
        .await;
    let texts: Vec<&str> = hits.iter().map(|h| h["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(hits
        .iter()
        .all(|h| h["created_at"].as_str().unwrap() > "2024"));
    let hits = app
        .search(json!({"query": "coffee", "namespaces": ["conv"],
            "filter": {"session": {"$exists": false}}}))
        .await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["text"], "The office coffee machine is broken");
    let hits = app
        .search(json!({"query": "dog", "namespaces": ["conv"], "filter": {"session": "walk"}}))
        .await;
    assert_eq!(hits.len(), 4, "{hits:?}");

    // Deleting a message re-indexes its neighbours without it.
    let pixel = app
        .search(json!({"query": "Pixel", "mode": "keyword", "namespaces": ["conv"]}))
        .await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = app
        .call("DELETE", &format!("/v1/memories/{pixel}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // The indexer applies the removal in the background.
    let mut hits = Vec::new();
    for _ in 0..100 {
        hits = app
            .search(json!({"query": "Pixel", "mode": "keyword", "namespaces": ["conv"]}))
            .await;
        if hits.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        hits.is_empty(),
        "the neighbours keep the deleted turn: {hits:?}"
    );

    // Memories other than messages take an event time too.
    let id = app
        .add(
            "conv",
            "The team moved to Berlin",
            json!({"occurred_at": "2019-02-01T00:00:00Z"}),
        )
        .await;
    let (s, v) = app.call("GET", &format!("/v1/memories/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["occurred_at"], "2019-02-01T00:00:00Z");
    assert!(v.get("session").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_message_stays_in_its_session() {
    let app = app().await;
    app.add("conv", "See you tomorrow", json!({})).await;
    let (s, v) = append(
        &app,
        "s",
        json!({"namespace": "conv", "messages": [
            {"speaker": "Ann", "text": "See you tmrw"},
            {"speaker": "Bo", "text": "Bye"}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["messages"][0]["id"].as_str().unwrap().to_string();
    // The new text equals a fact's: not a duplicate of it, the message keeps
    // its session and position.
    let (s, v) = app
        .call(
            "PATCH",
            &format!("/v1/memories/{id}?wait=true"),
            Some(json!({"text": "See you tomorrow"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["session"]["position"], 0);
    let (s, v) = app
        .call("GET", "/v1/sessions/s/messages?namespace=conv", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["messages"][0]["text"], "See you tomorrow");
    assert_eq!(v["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_hit_brings_its_neighbours() {
    let app = app().await;
    let turns: Vec<Value> = [
        "Morning! How was the weekend?",
        "We went hiking near the lake",
        "Did you see any wildlife?",
        "A heron, standing very still in the reeds",
        "Nice. I stayed home and baked bread",
        "Sourdough again?",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| json!({"speaker": if i % 2 == 0 { "Ann" } else { "Bo" }, "text": t}))
    .collect();
    let (s, v) = append(
        &app,
        "weekend",
        json!({"namespace": "conv", "messages": turns}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let other = app
        .add("conv", "The heron logo is on the mug", json!({}))
        .await;

    // Without `expand`, hits carry no neighbours.
    let hits = app
        .search(json!({"query": "heron", "mode": "keyword", "namespaces": ["conv"]}))
        .await;
    assert!(
        hits.iter().all(|h| h.get("neighbors").is_none()),
        "{hits:?}"
    );

    let hits = app
        .search(
            json!({"query": "heron reeds", "mode": "keyword", "namespaces": ["conv"],
            "expand": {"neighbors": 2}}),
        )
        .await;
    assert_eq!(hits[0]["session"]["position"], 3, "{hits:?}");
    let around: Vec<(u64, &str)> = hits[0]["neighbors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["session"]["position"].as_u64().unwrap(),
                n["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        around,
        vec![
            (1, "We went hiking near the lake"),
            (2, "Did you see any wildlife?"),
            (4, "Nice. I stayed home and baked bread"),
            (5, "Sourdough again?"),
        ]
    );
    // A memory outside any session has none.
    let mug = hits.iter().find(|h| h["id"] == other.as_str()).unwrap();
    assert_eq!(mug["neighbors"], json!([]));

    // A deleted turn is skipped: the next live one takes its place.
    let wildlife = around[1].1;
    let id = app
        .search(json!({"query": wildlife, "mode": "keyword", "namespaces": ["conv"]}))
        .await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = app
        .call("DELETE", &format!("/v1/memories/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let hits = app
        .search(
            json!({"query": "heron reeds", "mode": "keyword", "namespaces": ["conv"],
            "expand": {"neighbors": 1}}),
        )
        .await;
    let around: Vec<u64> = hits[0]["neighbors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["session"]["position"].as_u64().unwrap())
        .collect();
    assert_eq!(around, vec![1, 4], "{hits:?}");

    // Out of range: a clear 400.
    for n in [0, 11] {
        let (s, v) = app
            .call(
                "POST",
                "/v1/search",
                Some(json!({"query": "heron", "expand": {"neighbors": n}})),
            )
            .await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, "out_of_range");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recency_prefers_recent_events_and_lists_sort_by_event_time() {
    let app = app().await;
    let old = app
        .add(
            "notes",
            "The team standup is at 9:30",
            json!({"occurred_at": "2024-01-10T09:00:00Z"}),
        )
        .await;
    let new = app
        .add(
            "notes",
            "The team standup is at 10:00",
            json!({"occurred_at": "2024-06-01T09:00:00Z"}),
        )
        .await;
    let mid = app
        .add(
            "notes",
            "Lunch moved to the rooftop",
            json!({"occurred_at": "2024-03-01T09:00:00Z"}),
        )
        .await;

    // The two standup notes score alike; with a recency preference measured
    // from mid-2024 the newer comes first, with its preference reported.
    let hits = app
        .search(
            json!({"query": "when is the team standup", "namespaces": ["notes"], "k": 2,
            "recency": {"half_life_days": 30, "origin": "2024-06-02T00:00:00Z"}}),
        )
        .await;
    assert_eq!(hits[0]["id"], new.as_str(), "{hits:?}");
    assert_eq!(hits[1]["id"], old.as_str(), "{hits:?}");
    let r0 = hits[0]["scores"]["recency"].as_f64().unwrap();
    let r1 = hits[1]["scores"]["recency"].as_f64().unwrap();
    assert!(r0 > 0.9 && r1 < 0.05, "{hits:?}");
    // Around an origin in early 2024, the older note is the one preferred,
    // in every mode.
    for mode in ["keyword", "vector", "hybrid"] {
        let hits = app
            .search(
                json!({"query": "team standup", "namespaces": ["notes"], "k": 2, "mode": mode,
                "recency": {"half_life_days": 1, "weight": 5, "origin": "2024-01-11T00:00:00Z"}}),
            )
            .await;
        assert_eq!(hits.len(), 2, "{mode}: {hits:?}");
        assert!(
            hits[0]["id"] == old.as_str(),
            "{mode}: the event a day before the origin wins at weight 5: {hits:?}"
        );
    }
    let plain = app
        .search(json!({"query": "team standup", "namespaces": ["notes"], "k": 2}))
        .await;
    assert!(plain.iter().all(|h| h["scores"].get("recency").is_none()));
    for bad in [
        json!({"half_life_days": 0}),
        json!({"half_life_days": -1}),
        json!({"half_life_days": 40000}),
        json!({"half_life_days": 1, "weight": 11}),
        json!({"half_life_days": 1, "weight": -1}),
    ] {
        let (s, v) = app
            .call(
                "POST",
                "/v1/search",
                Some(json!({"query": "standup", "recency": bad})),
            )
            .await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, "out_of_range");
    }

    // Lists by event time, both ways, page by page.
    let ids = |v: &Value| -> Vec<String> {
        v["memories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, v) = app
        .call("GET", "/v1/memories?namespace=notes&sort=occurred_at", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(ids(&v), vec![old.clone(), mid.clone(), new.clone()]);
    let (s, v) = app
        .call(
            "GET",
            "/v1/memories?namespace=notes&sort=occurred_at_desc&limit=2",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(ids(&v), vec![new.clone(), mid.clone()]);
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let (s, v) = app
        .call(
            "POST",
            "/v1/memories/list",
            Some(json!({"namespace": "notes", "sort": "occurred_at_desc", "limit": 2, "cursor": cursor})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(ids(&v), vec![old.clone()]);
    assert!(v["next_cursor"].is_null(), "{v}");
    // Insertion order is still the default.
    let (_, v) = app.call("GET", "/v1/memories?namespace=notes", None).await;
    assert_eq!(ids(&v), vec![old, new, mid]);
    let (s, v) = app
        .call("GET", "/v1/memories?namespace=notes&sort=newest", None)
        .await;
    assert!(s.is_client_error(), "{s} {v}");
}
