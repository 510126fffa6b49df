//! Fetching: refused inputs, timeouts, concurrency, hooks and submodules.

use std::time::{Duration, Instant};

use contexten_git::{GitError, Policy, Reason, Remote, Repo, RepoCache};

use crate::helpers::{SilentServer, file_url, git, live_processes_with, repo_with};

fn cache(root: &std::path::Path, timeout: Duration, allow_local: bool) -> RepoCache {
    RepoCache::new(root.to_path_buf(), Policy::new(timeout, allow_local))
}

#[test]
fn an_option_as_ref_or_url_is_refused_before_any_git_runs() {
    let source = repo_with(&[("a.py", b"x = 1\n")]);
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("pwned");
    let evil = format!("--upload-pack=touch {}", marker.display());
    let root = scratch.path().join("cache");
    let cache = cache(&root, Duration::from_secs(10), true);

    let refused = cache.fetch(&file_url(source.path()), Some(&evil), &Remote::default());
    assert!(
        matches!(refused, Err(GitError::RefusedRef(_))),
        "{refused:?}"
    );
    let refused = cache.fetch(&evil, None, &Remote::default());
    assert!(
        matches!(refused, Err(GitError::RefusedUrl(_))),
        "{refused:?}"
    );
    let local = Repo::open_local(&file_url(source.path()), cache.policy()).unwrap();
    assert!(matches!(
        local.resolve(Some(&evil)),
        Err(GitError::RefusedRef(_))
    ));
    assert!(!marker.exists(), "git ran the injected command");
    assert!(!root.exists(), "nothing ran, not even the cache's git init");
}

#[test]
fn local_repositories_need_to_be_allowed() {
    let source = repo_with(&[("a.py", b"x = 1\n")]);
    let root = tempfile::tempdir().unwrap();
    let closed = cache(root.path(), Duration::from_secs(10), false);
    let url = file_url(source.path());
    let error = closed.fetch(&url, None, &Remote::default()).unwrap_err();
    assert_eq!(error.reason(), Reason::RefusedUrl);
    assert!(Repo::open_local(&url, closed.policy()).is_err());
    let open = cache(root.path(), Duration::from_secs(10), true);
    let fetched = open.fetch(&url, Some("main"), &Remote::default()).unwrap();
    assert_eq!(
        fetched.resolved.commit,
        git(source.path(), &["rev-parse", "HEAD"])
    );
    // A snapshot kept by folder is reopened through its cache only.
    let again = open.open(fetched.repo.git_dir()).unwrap();
    assert_eq!(
        again.resolve(Some(&fetched.resolved.commit)).unwrap(),
        fetched.resolved
    );
    assert!(open.open(source.path()).is_err());
    assert!(open.open(&root.path().join("../elsewhere")).is_err());
}

#[test]
fn a_server_that_never_answers_times_out_and_leaves_no_git_behind() {
    let server = SilentServer::start();
    let root = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(2);
    let cache = cache(root.path(), timeout, false);
    let started = Instant::now();
    let error = cache
        .fetch(&server.url(), Some("main"), &Remote::default())
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, GitError::Timeout { .. }), "{error:?}");
    assert_eq!(error.reason(), Reason::Timeout);
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(3),
        "{elapsed:?}"
    );
    // git and its git-remote-http helper were killed together.
    let needle = format!("127.0.0.1:{}", server.port);
    assert_eq!(live_processes_with(&needle), Vec::<String>::new());
}

#[test]
fn concurrent_fetches_of_one_repository_each_get_their_own_commit() {
    let source = repo_with(&[("a.py", b"x = 1\n")]);
    let main = git(source.path(), &["rev-parse", "HEAD"]);
    git(source.path(), &["checkout", "-q", "-b", "other"]);
    std::fs::write(source.path().join("b.py"), "y = 2\n").unwrap();
    git(source.path(), &["add", "-A"]);
    git(source.path(), &["commit", "-q", "-m", "other"]);
    let other = git(source.path(), &["rev-parse", "HEAD"]);
    let root = tempfile::tempdir().unwrap();
    let cache = cache(root.path(), Duration::from_secs(30), true);
    let url = file_url(source.path());
    // Without the lock, most of these die on git's shallow.lock.
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (cache, url) = (&cache, &url);
                let reference = if i % 2 == 0 { "main" } else { "other" };
                s.spawn(move || {
                    (
                        reference,
                        cache.fetch(url, Some(reference), &Remote::default()),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (reference, fetched) in results {
        let fetched = fetched.unwrap_or_else(|e| panic!("{reference}: {e} {:?}", e.stderr()));
        let expected = if reference == "main" { &main } else { &other };
        assert_eq!(&fetched.resolved.commit, expected, "{reference}");
    }
}

#[test]
fn hooks_in_the_cache_repository_never_run() {
    let source = repo_with(&[("a.py", b"x = 1\n")]);
    let root = tempfile::tempdir().unwrap();
    let cache = cache(root.path(), Duration::from_secs(10), true);
    let url = file_url(source.path());
    let fetched = cache.fetch(&url, Some("main"), &Remote::default()).unwrap();
    // A hook that runs whenever a ref changes (a fetch updates one).
    let marker = root.path().join("hook-ran");
    let hook = fetched.repo.git_dir().join("hooks/reference-transaction");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, format!("#!/bin/sh\ntouch '{}'\n", marker.display())).unwrap();
    let mut perms = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).unwrap();
    // Plain git runs it (the test is real)...
    git(
        fetched.repo.git_dir(),
        &["update-ref", "refs/heads/probe", &fetched.resolved.commit],
    );
    assert!(marker.exists(), "the hook is runnable");
    std::fs::remove_file(&marker).unwrap();
    // ...the hardened fetch does not.
    std::fs::write(source.path().join("b.py"), "y = 2\n").unwrap();
    git(source.path(), &["add", "-A"]);
    git(source.path(), &["commit", "-q", "-m", "two"]);
    let again = cache.fetch(&url, Some("main"), &Remote::default()).unwrap();
    assert_ne!(again.resolved.commit, fetched.resolved.commit);
    assert!(!marker.exists(), "the hook ran during a fetch");
}

#[test]
fn submodules_are_neither_fetched_nor_listed() {
    let source = repo_with(&[("a.py", b"x = 1\n")]);
    // A submodule entry pointing at a repository that does not exist: any
    // attempt to fetch it would fail the fetch.
    std::fs::write(
        source.path().join(".gitmodules"),
        "[submodule \"sub\"]\n\tpath = sub\n\turl = /nonexistent/sub.git\n",
    )
    .unwrap();
    let commit = git(source.path(), &["rev-parse", "HEAD"]);
    git(
        source.path(),
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{commit},sub"),
        ],
    );
    git(source.path(), &["add", ".gitmodules"]);
    git(source.path(), &["commit", "-q", "-m", "submodule"]);
    let root = tempfile::tempdir().unwrap();
    let cache = cache(root.path(), Duration::from_secs(10), true);
    let fetched = cache
        .fetch(&file_url(source.path()), Some("main"), &Remote::default())
        .unwrap();
    let mut paths = Vec::new();
    fetched
        .repo
        .list_tree(&fetched.resolved.commit, |e| paths.push(e.path))
        .unwrap();
    assert_eq!(paths, [".gitmodules", "a.py"]);
}

/// Five commits: a.py and b.py change together three times, c.py alone twice.
fn repo_with_history() -> contexten_testkit::GitRepo {
    let repo = repo_with(&[("a.py", b"a = 0\n"), ("b.py", b"b = 0\n")]);
    for i in 1..=4u8 {
        if i % 2 == 0 {
            repo.file("c.py", format!("c = {i}\n")).commit("c alone");
        } else {
            repo.files(&[
                ("a.py", format!("a = {i}\n")),
                ("b.py", format!("b = {i}\n")),
            ])
            .commit("a and b");
        }
    }
    repo
}

#[test]
fn a_deeper_cache_brings_the_history_its_depth_names() {
    let source = repo_with_history();
    let url = file_url(source.path());
    let root = tempfile::tempdir().unwrap();

    let shallow = cache(root.path(), Duration::from_secs(10), true);
    assert_eq!(shallow.depth(), 1);
    let tip = shallow
        .fetch(&url, Some("main"), &Remote::default())
        .unwrap();
    let commit = tip.resolved.commit.clone();
    let seen = tip.repo.changed_paths(&commit, 200, 1 << 20).unwrap();
    assert!(
        seen.is_empty(),
        "depth 1 has the tip alone, a boundary: {seen:?}"
    );

    let deep = shallow.clone().with_depth(4);
    let fetched = deep.fetch(&url, Some("main"), &Remote::default()).unwrap();
    assert_eq!(fetched.resolved.commit, commit);
    let seen = fetched.repo.changed_paths(&commit, 200, 1 << 20).unwrap();
    assert_eq!(
        seen,
        vec![vec!["c.py"], vec!["a.py", "b.py"], vec!["c.py"]],
        "the last four commits but the shallow boundary, newest first"
    );
    let all = deep.clone().with_depth(50);
    let fetched = all.fetch(&url, Some("main"), &Remote::default()).unwrap();
    let seen = fetched.repo.changed_paths(&commit, 200, 1 << 20).unwrap();
    assert_eq!(seen.len(), 4, "all the history but the root: {seen:?}");
    assert_eq!(seen[3], vec!["a.py", "b.py"]);
    // Bounded by count and by bytes: a cut commit is left out, not half read.
    assert_eq!(
        fetched
            .repo
            .changed_paths(&commit, 2, 1 << 20)
            .unwrap()
            .len(),
        2
    );
    let cut = fetched.repo.changed_paths(&commit, 200, 12).unwrap();
    assert!(
        cut.len() < 5 && cut.iter().all(|c| !c.is_empty()),
        "{cut:?}"
    );
    assert!(
        fetched
            .repo
            .changed_paths(&commit, 0, 1 << 20)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        fetched.repo.changed_paths("--output=/tmp/x", 5, 1 << 20),
        Err(GitError::RefusedRef(_))
    ));
    // A shallower fetch of the same ref cuts the history again: why a cache
    // keeps one depth for all its fetches.
    let tip = shallow
        .fetch(&url, Some("main"), &Remote::default())
        .unwrap();
    let cut_again = tip.repo.changed_paths(&commit, 200, 1 << 20).unwrap();
    assert!(cut_again.is_empty(), "{cut_again:?}");
    assert_eq!(
        RepoCache::new(
            root.path().into(),
            Policy::new(Duration::from_secs(1), true)
        )
        .with_depth(0)
        .depth(),
        1
    );
}
