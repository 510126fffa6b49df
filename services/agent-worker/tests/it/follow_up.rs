//! A follow-up in the same conversation resumes the earlier task's run.

use crate::helpers::{TestFleet, WAIT, task};
use contexten_envelope::{Conversation, ReplyKind};

#[tokio::test]
async fn a_follow_up_in_the_same_conversation_resumes_the_same_run() {
    let fleet = TestFleet::start(&[]).await;
    fleet.fake.default_statuses(&["RUNNING", "COMPLETE"]);
    let worker = fleet.spawn_agent();

    let mut first = task("refactor the exporter");
    first.conversation = Some(Conversation {
        id: "github:octo/hello#7".into(),
        previous_task_id: None,
    });
    fleet.publish(&first).await;
    let finals = fleet.finals(&[first.task_id], WAIT).await;
    let url = finals[&first.task_id]
        .result
        .as_ref()
        .unwrap()
        .web_url
        .clone()
        .unwrap();
    let run_id: u64 = url.rsplit('/').next().unwrap().parse().unwrap();

    let mut second = task("also handle empty rows, please");
    second.conversation = Some(Conversation {
        id: "github:octo/hello#7".into(),
        previous_task_id: Some(first.task_id),
    });
    fleet.publish(&second).await;
    let answers = fleet
        .answers_until(WAIT, |taken| {
            taken
                .iter()
                .any(|a| a.task_id == second.task_id && a.reply == Some(ReplyKind::Final))
        })
        .await;
    let progress = answers
        .iter()
        .find(|a| a.task_id == second.task_id && a.reply == Some(ReplyKind::Progress))
        .expect("a progress answer for the follow-up");
    assert!(
        progress
            .result
            .as_ref()
            .unwrap()
            .summary
            .contains("picked up your follow-up")
    );
    let last = answers
        .iter()
        .find(|a| a.task_id == second.task_id && a.reply == Some(ReplyKind::Final))
        .unwrap();
    assert_eq!(
        last.result.as_ref().unwrap().web_url.as_deref(),
        Some(url.as_str())
    );

    assert_eq!(
        fleet.fake.creates().len(),
        1,
        "the follow-up did not create a run"
    );
    let resumes = fleet.fake.resumes();
    assert_eq!(resumes.len(), 1);
    assert_eq!(resumes[0]["agent_run_id"], run_id);
    assert!(
        resumes[0]["prompt"]
            .as_str()
            .unwrap()
            .contains("<untrusted-data source=\"request\">\nalso handle empty rows")
    );
    worker.stop().await;
}
