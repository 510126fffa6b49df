//! The GitLab client against a fake speaking GitLab's REST v4 answers: notes
//! and discussion replies, award emoji (an existing one counts as done), the
//! marker search, and how refusals and limits are read.

use contexten_config::SecretSource;
use contexten_providers::gitlab::{GitlabClient, GitlabTarget, Noteable};
use contexten_providers::{HttpSettings, ProviderError};
use secrecy::SecretString;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn token() -> String {
    ["glpat", "-", "testtoken"].concat()
}

fn client(server: &MockServer) -> GitlabClient {
    let base = url::Url::parse(&format!("{}/api/v4", server.uri())).unwrap();
    let token = SecretSource::fixed(SecretString::from(token()));
    GitlabClient::new(&base, token, HttpSettings::default())
}

fn issue(discussion: Option<&str>, note: Option<u64>) -> GitlabTarget {
    GitlabTarget {
        project_id: 15,
        noteable: Noteable::Issue,
        iid: 7,
        discussion_id: discussion.map(str::to_owned),
        note_id: note,
    }
}

fn note(id: u64, body: &str) -> serde_json::Value {
    json!({
        "id": id,
        "type": null,
        "body": body,
        "author": {"id": 1, "username": "contexten-bot"},
        "created_at": "2026-11-29T12:00:00.000Z",
        "system": false,
        "noteable_id": 377,
        "noteable_type": "Issue",
        "noteable_iid": 7
    })
}

#[tokio::test]
async fn a_note_is_created_with_the_private_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v4/projects/15/issues/7/notes"))
        .and(header("private-token", token().as_str()))
        .and(body_json(json!({"body": "hello"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(note(302, "hello")))
        .expect(1)
        .mount(&server)
        .await;
    let created = client(&server)
        .create_note(&issue(None, None), "hello")
        .await
        .unwrap();
    assert_eq!(created.id, 302);
}

#[tokio::test]
async fn a_reply_in_a_discussion_goes_to_the_discussion_and_a_bad_id_is_refused_unsent() {
    let server = MockServer::start().await;
    let discussion = "6a9c1750b37d513a43987b574953fceb50b03ce7";
    Mock::given(method("POST"))
        .and(path(format!(
            "/api/v4/projects/15/issues/7/discussions/{discussion}/notes"
        )))
        .respond_with(ResponseTemplate::new(201).set_body_json(note(303, "in thread")))
        .expect(1)
        .mount(&server)
        .await;
    let gitlab = client(&server);
    let created = gitlab
        .create_note(&issue(Some(discussion), Some(1)), "in thread")
        .await
        .unwrap();
    assert_eq!(created.id, 303);
    let err = gitlab
        .create_note(&issue(Some("../../../users"), None), "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_discussion_id");
}

#[tokio::test]
async fn an_award_already_given_counts_as_done_in_either_of_gitlabs_answers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v4/projects/15/issues/7/notes/1244/award_emoji"))
        .and(body_json(json!({"name": "eyes"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": 4, "name": "eyes", "awardable_id": 1244, "awardable_type": "Note"
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v4/projects/15/issues/7/notes/1244/award_emoji"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "message": "404 Award Emoji Name has already been taken Not Found"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v4/projects/15/issues/7/award_emoji"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "message": "Award Emoji Name has already been taken"
        })))
        .mount(&server)
        .await;
    let gitlab = client(&server);
    let on_note = issue(None, Some(1244));
    assert_eq!(gitlab.award_emoji(&on_note, "eyes").await.unwrap(), Some(4));
    assert_eq!(gitlab.award_emoji(&on_note, "eyes").await.unwrap(), None);
    let on_issue = issue(None, None);
    assert_eq!(gitlab.award_emoji(&on_issue, "eyes").await.unwrap(), None);
}

#[tokio::test]
async fn a_404_that_is_not_an_existing_award_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"message": "404 Note Not Found"})),
        )
        .mount(&server)
        .await;
    let err = client(&server)
        .award_emoji(&issue(None, Some(9)), "eyes")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
}

#[tokio::test]
async fn the_marker_is_found_among_the_newest_notes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v4/projects/15/issues/7/notes"))
        .and(query_param("sort", "desc"))
        .and(query_param("order_by", "created_at"))
        .and(query_param("per_page", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            note(12, "someone else"),
            note(11, "<!-- contexten:task=t1:final -->\nthe answer"),
        ])))
        .mount(&server)
        .await;
    let gitlab = client(&server);
    let target = issue(None, None);
    let found = gitlab
        .find_note(&target, "contexten:task=t1:final")
        .await
        .unwrap();
    assert_eq!(found.map(|n| n.id), Some(11));
    let missing = gitlab
        .find_note(&target, "contexten:task=t2:final")
        .await
        .unwrap();
    assert_eq!(missing, None);
}

#[tokio::test]
async fn refusals_limits_and_outages_are_classified() {
    let server = MockServer::start().await;
    let gitlab = client(&server);
    let target = issue(None, None);
    let answer = |template: ResponseTemplate| {
        Mock::given(method("POST"))
            .respond_with(template)
            .up_to_n_times(1)
    };
    answer(ResponseTemplate::new(401).set_body_json(json!({"message": "401 Unauthorized"})))
        .mount(&server)
        .await;
    let err = gitlab.create_note(&target, "x").await.unwrap_err();
    assert_eq!(err.code(), "unauthorized");
    assert!(err.to_string().contains("401 Unauthorized"), "{err}");

    answer(ResponseTemplate::new(403).set_body_json(json!({"message": "403 Forbidden"})))
        .mount(&server)
        .await;
    assert_eq!(
        gitlab.create_note(&target, "x").await.unwrap_err().code(),
        "forbidden"
    );

    answer(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "17")
            .set_body_string("Retry later"),
    )
    .mount(&server)
    .await;
    match gitlab.create_note(&target, "x").await.unwrap_err() {
        ProviderError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(17))
        }
        other => panic!("{other:?}"),
    }

    answer(ResponseTemplate::new(502).set_body_string("Bad Gateway"))
        .mount(&server)
        .await;
    let err = gitlab.create_note(&target, "x").await.unwrap_err();
    assert!(err.maybe_applied(), "{err:?}");
}
