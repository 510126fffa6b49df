//! A git server for tests: wiremock answers smart-HTTP requests through
//! `git http-backend` (CGI) over the repositories under a root, so clones and
//! shallow fetches speak git's real protocol on loopback (feature `git-http`).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use wiremock::{Request, ResponseTemplate};

/// One request answered by `git http-backend` over the repositories under
/// `root` (`<root>/<path of the URL>`); a backend that cannot run is a 500.
pub fn respond(root: &Path, request: &Request) -> ResponseTemplate {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", request.method.as_str())
        .env("PATH_INFO", request.url.path())
        .env("QUERY_STRING", request.url.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let Ok(mut child) = command.spawn() else {
        return ResponseTemplate::new(500);
    };
    let body = request.body.clone();
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&body);
        }
    });
    let output = child.wait_with_output();
    let _ = writer.join();
    let Ok(output) = output else {
        return ResponseTemplate::new(500);
    };
    // CGI: header lines, a blank line, the body.
    let out = output.stdout;
    let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return ResponseTemplate::new(500);
    };
    let mut response = ResponseTemplate::new(200);
    let mut content_type = "application/octet-stream".to_owned();
    for line in String::from_utf8_lossy(&out[..split]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "status" => {
                let code = value.split(' ').next().and_then(|c| c.parse().ok());
                response = ResponseTemplate::new(code.unwrap_or(500));
            }
            "content-type" => content_type = value.to_owned(),
            _ => {}
        }
    }
    response.set_body_raw(out[split + 4..].to_vec(), &content_type)
}
