//! The operator console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed here when missing), driven over the W3C
//! WebDriver protocol with plain HTTP calls: sign in with an admin token, see
//! a dead letter this test produced (a callback receiver refusing the answer)
//! with its reason, replay it after the confirmation once the receiver
//! accepts again, and see the task done on its page. A request without a
//! session and an action without the CSRF token are refused. Screenshots of
//! the pages go to `target/console-screenshots/`.

use base64::Engine as _;
use contexten_envelope::{Names, Stage};
use contexten_fleet_tests::harness::*;
use contexten_fleet_tests::process::free_port;
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, ResponseTemplate};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn admin_token() -> String {
    ["ctx_console_", "admin_", "0123456789abcdef"].concat()
}

/// Whether Chromium and its driver are here, installing them when missing
/// (non-interactive apt-get, through sudo when not root).
fn ensure_chromium() -> Result<(), String> {
    let present = || Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if present() {
        return Ok(());
    }
    eprintln!("console test: installing chromium and chromium-driver (apt-get)");
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let run = |args: &[&str]| {
        let mut command = if root {
            std::process::Command::new("apt-get")
        } else {
            let mut sudo = std::process::Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get: {e}"))
    };
    let installed = run(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "chromium",
        "chromium-driver",
    ]);
    if !present() {
        let _ = run(&["update", "-qq"]);
        let again = run(&[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "chromium",
            "chromium-driver",
        ]);
        if !present() {
            return Err(format!(
                "chromium and chromium-driver could not be installed ({installed:?}, {again:?})"
            ));
        }
    }
    Ok(())
}

/// A chromedriver process and one browser session on it.
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let ready = eventually(Duration::from_secs(20), || async {
            let status: Value = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            status["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        assert!(ready.is_some(), "chromedriver never became ready");
        let profile = tempfile::tempdir().unwrap();
        // An implicit wait: a click that submits a form returns before the
        // next page has loaded, so a lookup waits for its element (up to 10 s)
        // instead of failing on the page being replaced.
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "timeouts": {"implicit": 10000},
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-crash-reporter", "--disable-breakpad", format!("--user-data-dir={}", profile.path().display())
            ]}
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        Browser {
            http,
            session: format!("{base}/session/{session}"),
            _driver: driver,
            _profile: profile,
        }
    }

    async fn call(&self, verb: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(verb, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        if answer["value"]["error"].is_string() {
            panic!("webdriver {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// The session cookie's value (HttpOnly, so only the driver sees it).
    async fn cookie(&self, name: &str) -> String {
        let cookie = self
            .call(reqwest::Method::GET, &format!("/cookie/{name}"), None)
            .await;
        assert_eq!(cookie["httpOnly"], true, "{cookie}");
        assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
        cookie["value"].as_str().unwrap_or_default().to_owned()
    }

    async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let file = dir.join(name);
        std::fs::write(&file, bytes).unwrap();
        file
    }

    /// Ends the session (again in [`Drop`], where a second DELETE is harmless).
    async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

impl Drop for Browser {
    /// Ends the browser session (chromedriver then closes Chromium) even when
    /// an assertion failed: a plain blocking HTTP DELETE, since Drop cannot
    /// await. chromedriver itself is killed by `kill_on_drop`.
    fn drop(&mut self) {
        use std::io::{Read as _, Write as _};
        let Some(rest) = self.session.strip_prefix("http://") else {
            return;
        };
        let Some((host, path)) = rest.split_once('/') else {
            return;
        };
        if let Ok(mut stream) = std::net::TcpStream::connect(host) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request =
                format!("DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read(&mut [0u8; 256]);
            }
        }
    }
}

/// A file:// repository the context stage can read.
fn repository(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(
        dir.join("app/slug.py"),
        "def slug(title: str) -> str:\n    return title.lower()\n",
    )
    .unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &["commit", "-q", "-m", "first"],
    ] {
        contexten_testkit::git(dir, args);
    }
    format!("file://{}", dir.display())
}

#[tokio::test]
async fn the_console_in_a_browser_shows_a_dead_letter_replays_it_and_the_task_completes() {
    if let Err(why) = ensure_chromium() {
        eprintln!("SKIPPED the console browser test: {why}");
        return;
    }
    let token_hash = hex::encode(Sha256::digest(api_token().as_bytes()));
    let admin_hash = hex::encode(Sha256::digest(admin_token().as_bytes()));
    let fleet = Fleet::start(FleetOptions {
        extra: vec![
            ("CONTEXTEN_CONSOLE".into(), "1".into()),
            (
                "CONTEXTEN_API_TOKENS".into(),
                format!("fleet:{token_hash}:submit+read,console-ops:{admin_hash}:admin"),
            ),
            ("CONTEXTEN_TRACE_URL".into(), "http://127.0.0.1:16686/search?service=ingest&tags=%7B%22task_id%22%3A%22{task_id}%22%7D".into()),
        ],
        ..FleetOptions::default()
    })
    .await
    .expect("fleet starts");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    eprintln!("console test: screenshots in {}", shots.display());

    // A receiver that refuses the answer (a 4xx: dead-lettered at once) until told otherwise.
    let refusing = Arc::new(AtomicBool::new(true));
    let flag = refusing.clone();
    Mock::given(method("POST"))
        .and(path("/hooks/console"))
        .respond_with(move |_: &Request| {
            if flag.load(Ordering::SeqCst) {
                ResponseTemplate::new(422).set_body_string("receiver <b>not ready</b>")
            } else {
                ResponseTemplate::new(204)
            }
        })
        .with_priority(1)
        .mount(&fleet.fakes.callback)
        .await;
    let repo = repository(&fleet.dir.path().join("console-repo"));
    let callback = format!("{}/hooks/console", fleet.fakes.callback.uri());
    let response = fleet
        .submit(
            &json!({"text": "where are titles turned into slugs?", "repository_url": repo,
                    "strategy": "context", "callback_url": callback}),
            Some("console-1"),
        )
        .await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let task_id = accepted["task_id"].as_str().expect("task id").to_owned();

    let names = Names::new(&fleet.prefix);
    let connection = Connection::connect(&fleet.amqp_url, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    // Both the acknowledgement and the final answer end in dispatch's dead
    // queue, and the task's record says so.
    let letters = eventually(FLOW_WITHIN, || async {
        let letters: Vec<_> = contexten_cli::list_dead(&channel, &names, Stage::Dispatch, 100)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.task_id.as_deref() == Some(&task_id))
            .collect();
        (letters.len() == 2).then_some(letters)
    })
    .await
    .unwrap_or_else(|| panic!("the answers were never dead-lettered\n{}", fleet.logs(60)));
    let letter = letters
        .iter()
        .find(|l| !l.message_id.as_deref().unwrap_or_default().ends_with("/0"))
        .expect("the final answer's letter")
        .clone();
    let message_id = letter.message_id.clone().expect("a message id");
    assert!(!letter.reason.is_empty());
    assert!(
        letters.iter().all(|l| l.reason == letter.reason),
        "one reason, one group: {letters:?}"
    );

    let console = format!("{}/console", fleet.ingest_url);
    // Without a session: the API answers 401, a browser lands on the login page.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let refused = plain.get(format!("{console}/queues")).send().await.unwrap();
    assert_eq!(refused.status(), 401);

    let browser = Browser::start().await;
    browser.goto(&format!("{console}/queues")).await;
    assert!(
        browser.url().await.ends_with("/console/login"),
        "sent to sign in: {}",
        browser.url().await
    );
    browser.type_into("#token", &admin_token()).await;
    browser.click("#sign-in").await;
    // The click returns before the redirect has been followed.
    let signed_in = contexten_testkit::poll(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(100),
        || async {
            let url = browser.url().await;
            url.ends_with("/console/queues").then_some(url)
        },
    )
    .await;
    assert!(signed_in.is_ok(), "{}", browser.url().await);
    let queues = browser.source().await;
    assert!(
        queues.contains(&names.dead_queue(Stage::Dispatch)),
        "{queues}"
    );
    let queues_png = browser.screenshot(&shots, "queues.png").await;

    // An action with the session but without its CSRF token is refused.
    let session = browser.cookie("contexten_console").await;
    let forged = plain
        .post(format!("{console}/dead/act"))
        .header("cookie", format!("contexten_console={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "action=purge&stage=dispatch&message_id={message_id}&count=1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.text().await.unwrap().contains("CSRF"));

    browser.goto(&format!("{console}/dead")).await;
    let dead = browser.source().await;
    assert!(dead.contains(&letter.reason), "the reason is shown: {dead}");
    assert!(dead.contains(&task_id), "{dead}");
    let dead_png = browser.screenshot(&shots, "dead-letters.png").await;
    // Inspect the letter, then replay it through the confirmation.
    browser
        .click(&format!(
            "a.inspect[href$=\"{}\"]",
            message_id.replace('/', "%2F")
        ))
        .await;
    let inspected = browser.source().await;
    assert!(inspected.contains("Envelope (secrets masked)") && inspected.contains(&task_id));
    browser.screenshot(&shots, "dead-letter.png").await;
    // Before the replay the task's record says where it stopped.
    browser.goto(&format!("{console}/tasks/{task_id}")).await;
    let before = browser.text("#task-state").await;
    assert!(before.starts_with("dead_lettered:"), "{before}");
    // The receiver is back: replay the whole group after its confirmation.
    refusing.store(false, Ordering::SeqCst);
    browser.goto(&format!("{console}/dead")).await;
    browser.click("h3.group a.replay").await;
    let confirm = browser.text("#confirm-count").await;
    assert!(
        confirm.contains("This will replay 2 message(s)"),
        "{confirm}"
    );
    browser.screenshot(&shots, "confirm.png").await;
    browser.click("#confirm").await;
    let result = browser.text("#result").await;
    assert!(result.starts_with("Replayed: 2 message(s)"), "{result}");

    browser.click("a.task").await;
    let done = eventually(FLOW_WITHIN, || async {
        browser.goto(&format!("{console}/tasks/{task_id}")).await;
        (browser.text("#task-state").await == "done").then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "the task never showed done\n{}\n{}",
        browser.source().await,
        fleet.logs(40)
    );
    let page = browser.source().await;
    assert!(
        page.contains("id=\"timeline\"") && page.contains("<td>dispatch</td>"),
        "{page}"
    );
    assert!(page.contains("id=\"trace\""), "the trace link: {page}");
    let task_png = browser.screenshot(&shots, "task.png").await;
    eprintln!(
        "console test: screenshots {}, {}, {}",
        queues_png.display(),
        dead_png.display(),
        task_png.display()
    );
    let delivered = fleet
        .fakes
        .callback
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == "/hooks/console")
        .count();
    assert!(
        delivered >= 3,
        "ack and answer refused once each, then the answer delivered after the replay: {delivered}"
    );
    browser.quit().await;
    let _ = connection.close(200, "done".into()).await;
    fleet.stop().await;
}
