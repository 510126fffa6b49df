//! Test repositories, a server that never answers, and a look at running processes.

use contexten_testkit::GitRepo;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The test machine's git (not the hardened runner), panicking on failure.
pub use contexten_testkit::git;

/// A repository on branch `main` with `files` committed.
pub fn repo_with(files: &[(&str, &[u8])]) -> GitRepo {
    let repo = GitRepo::new();
    repo.files(files).commit("files");
    repo
}

pub fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers.
pub struct SilentServer {
    pub port: u16,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().unwrap().push(stream);
            }
        });
        SilentServer { port, _held: held }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/repo.git", self.port)
    }
}

/// Live (not zombie) processes whose command line contains `needle`, waiting
/// up to a second for killed ones to go.
pub fn live_processes_with(needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let found = scan(needle);
        if found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scan(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let (Ok(cmdline), Ok(stat)) = (
            std::fs::read(path.join("cmdline")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim().chars().next());
        if cmdline.contains(needle) && state != Some('Z') {
            found.push(cmdline);
        }
    }
    found
}
