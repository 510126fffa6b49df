//! Whole-fleet Slack flows: a slash command (ingest's empty 200, then an
//! ephemeral acknowledgement through its `response_url`, the answer in the
//! channel or through the `response_url` as configured, or through it where
//! the bot is not in the channel) and an answer too long for one Slack message
//! (a summary in the thread plus the full code as a file, through the three
//! upload calls).

use contexten_fleet_tests::fakes::{Fakes, OUTSIDE_CHANNEL, url_form};
use contexten_fleet_tests::harness::*;
use serde_json::{Value, json};
use wiremock::Request;

/// Posts a signed slash command (a form, as Slack sends it).
async fn slash_command(fleet: &Fleet, form: &str) -> reqwest::Response {
    let timestamp = unix_now().to_string();
    let base = [b"v0:", timestamp.as_bytes(), b":", form.as_bytes()].concat();
    let signature = format!("v0={}", hmac_hex(slack_secret().as_bytes(), &base));
    fleet
        .http
        .post(format!("{}/webhooks/slack", fleet.ingest_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(form.to_owned())
        .send()
        .await
        .expect("ingest answers")
}

/// The form of a `/contexten` slash command in `channel`, whose response_url
/// is `hook` on the fake Slack.
fn command_form(fleet: &Fleet, channel: &str, hook: &str, trigger: &str) -> String {
    format!(
        "token=x&team_id=T0001&team_domain=acme&channel_id={channel}&channel_name=c&user_id=U0HUMAN&user_name=grace&command=%2Fcontexten&text={}&api_app_id=A0001&response_url={}&trigger_id={trigger}",
        encode(
            "write a python function slugify(title) that lowercases and joins words with dashes"
        ),
        encode(&format!("{}{hook}", fleet.fakes.slack.uri())),
    )
}

/// Ingest's answer to a new command: an empty 200 (Slack shows nothing).
async fn assert_empty_200(response: reqwest::Response) {
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");
    assert!(body.is_empty(), "{}", String::from_utf8_lossy(&body));
}

/// The JSON bodies posted to `hook`, in order.
async fn hook_bodies(fleet: &Fleet, hook: &str) -> Vec<Value> {
    Fakes::requests(&fleet.fakes.slack, "POST", hook)
        .await
        .into_iter()
        .map(|r: Request| serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null))
        .collect()
}

/// Waits for the answer (the generated code) through `hook` and checks that
/// the first thing posted there was the ephemeral acknowledgement, alone.
async fn acknowledged_then_answered(fleet: &Fleet, hook: &str) -> Vec<Value> {
    let sent = eventually(FLOW_WITHIN, || async {
        let sent = hook_bodies(fleet, hook).await;
        sent.iter()
            .any(|b| b.to_string().contains("def parse_duration"))
            .then_some(sent)
    })
    .await
    .unwrap_or_else(|| panic!("no answer through the response_url\n{}", fleet.logs(60)));
    let acks: Vec<&Value> = sent
        .iter()
        .filter(|b| b["response_type"] == "ephemeral")
        .collect();
    assert_eq!(acks.len(), 1, "one acknowledgement: {sent:?}");
    assert_eq!(
        sent[0]["response_type"], "ephemeral",
        "before the answer: {sent:?}"
    );
    assert!(
        sent[0]["text"].as_str().unwrap().starts_with("On it"),
        "{}",
        sent[0]
    );
    sent
}

/// No reaction: a slash command has no message to react to.
async fn assert_no_reaction(fleet: &Fleet) {
    assert!(
        Fakes::requests(&fleet.fakes.slack, "POST", "/api/reactions.add")
            .await
            .is_empty(),
        "no reaction without a message to react to"
    );
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_slash_command_where_the_bot_is_not_invited_is_answered_through_its_response_url() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let hook = "/commands/T0001/8123/fleetsecret";
    let form = command_form(&fleet, OUTSIDE_CHANNEL, hook, "1337.42.fleet");
    assert_empty_200(slash_command(&fleet, &form).await).await;

    let sent = acknowledged_then_answered(&fleet, hook).await;
    let answer = sent.last().unwrap();
    assert_eq!(answer["response_type"], "in_channel");
    assert!(answer.to_string().contains("def parse_duration"));
    let tried = Fakes::requests(&fleet.fakes.slack, "POST", "/api/chat.postMessage").await;
    assert!(
        tried
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains(OUTSIDE_CHANNEL)),
        "the channel was tried first"
    );
    for request in Fakes::requests(&fleet.fakes.slack, "POST", hook).await {
        assert!(
            request.headers.get("authorization").is_none(),
            "the bot token never goes to a response_url"
        );
    }
    assert_no_reaction(&fleet).await;
    fleet.stop().await;
}

#[tokio::test]
async fn configured_for_the_response_url_a_slash_command_is_acknowledged_and_answered_there() {
    let fleet = Fleet::start(FleetOptions {
        extra: vec![("SLACK_COMMAND_REPLY".into(), "response_url".into())],
        ..FleetOptions::default()
    })
    .await
    .expect("fleet starts");
    let hook = "/commands/T0001/8124/fleetsecret";
    let form = command_form(&fleet, "C0INVITED", hook, "1337.43.fleet");
    assert_empty_200(slash_command(&fleet, &form).await).await;

    let sent = acknowledged_then_answered(&fleet, hook).await;
    let answer = sent.last().unwrap();
    assert_eq!(answer["response_type"], "in_channel");
    assert!(answer.to_string().contains("def parse_duration"));
    assert!(
        Fakes::requests(&fleet.fakes.slack, "POST", "/api/chat.postMessage")
            .await
            .is_empty(),
        "nothing in the channel: the response_url could be used"
    );
    // The same command again (Slack retrying it) is not a second task.
    let again = slash_command(&fleet, &form).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["response_type"], "ephemeral", "{again}");
    assert_eq!(again["text"], "Already received.");
    assert_no_reaction(&fleet).await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_long_answer_arrives_as_a_summary_in_the_thread_and_the_full_code_as_a_file() {
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .expect("fleet starts");
    let mut code = String::from("\"\"\"Many small helpers.\"\"\"\n\n");
    for i in 0..900 {
        code.push_str(&format!(
            "\ndef helper_{i}(value: int) -> int:\n    \"\"\"Adds {i}.\"\"\"\n    return value + {i}\n"
        ));
    }
    assert!(code.chars().count() > 50_000);
    *fleet.fakes.llm_answer.lock().unwrap() = format!("Here it is:\n\n```python\n{code}```\n");
    let mention = json!({
        "token": "x", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
        "event_id": "Ev-fleet-long", "event_time": unix_now(),
        "authorizations": [{"team_id": "T0001", "user_id": "U0BOT", "is_bot": true}],
        "event": {"type": "app_mention", "user": "U0HUMAN", "text": "<@U0BOT> write a python module of many small helper functions",
                  "ts": "1764418000.000100", "channel": "C0LONG", "event_ts": "1764418000.000100", "team": "T0001"}
    });
    let response = fleet.slack_event(&mention).await;
    assert!(response.status().is_success(), "{}", response.status());

    let complete = eventually(FLOW_WITHIN, || async {
        Fakes::requests(
            &fleet.fakes.slack,
            "POST",
            "/api/files.completeUploadExternal",
        )
        .await
        .into_iter()
        .next()
    })
    .await
    .unwrap_or_else(|| panic!("no file shared\n{}", fleet.logs(60)));
    let complete = url_form(&complete.body);
    assert_eq!(complete["channel_id"], "C0LONG");
    assert_eq!(complete["thread_ts"], "1764418000.000100");
    let files: Value = serde_json::from_str(&complete["files"]).unwrap();
    let file_id = files[0]["id"].as_str().unwrap().to_owned();

    let uploaded = Fakes::requests(&fleet.fakes.slack, "POST", "/upload/v1/*").await;
    assert_eq!(uploaded.len(), 1);
    assert!(uploaded[0].url.path().ends_with(&file_id));
    let bytes = String::from_utf8(uploaded[0].body.clone()).unwrap();
    assert_eq!(
        bytes.trim_end(),
        code.trim_end(),
        "the file is the full code"
    );
    let asked = Fakes::requests(
        &fleet.fakes.slack,
        "POST",
        "/api/files.getUploadURLExternal",
    )
    .await;
    let asked = url_form(&asked[0].body);
    assert_eq!(asked["length"], bytes.len().to_string());
    // Named per task, so a redelivery can find it in the thread (no
    // repository here, so no language to name the extension after).
    assert!(asked["filename"].starts_with("contexten-"), "{asked:?}");

    let summaries: Vec<Value> =
        Fakes::requests(&fleet.fakes.slack, "POST", "/api/chat.postMessage")
            .await
            .into_iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null))
            .filter(|b| {
                b["channel"] == "C0LONG" && b["blocks"].to_string().contains(&asked["filename"])
            })
            .collect();
    assert_eq!(summaries.len(), 1, "one summary");
    assert_eq!(summaries[0]["thread_ts"], "1764418000.000100");
    assert!(
        !summaries[0].to_string().contains("helper_899"),
        "the code is in the file only"
    );
    fleet.stop().await;
}
