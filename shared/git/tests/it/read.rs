//! Reading: sizes are checked before contents, caps give partial selections.

use std::time::Duration;

use contexten_git::{Blob, GitError, Limits, Policy, Repo, Skipped};

use crate::helpers::{file_url, git, repo_with};

fn open(dir: &std::path::Path) -> Repo {
    Repo::open_local(&file_url(dir), &Policy::new(Duration::from_secs(10), true)).unwrap()
}

fn limits(max_files: usize, max_total_bytes: u64, max_blob_bytes: u64) -> Limits {
    Limits {
        max_files,
        max_total_bytes,
        max_blob_bytes,
    }
}

#[test]
fn a_blob_over_the_cap_is_skipped_from_its_size_and_never_read() {
    let big = vec![b'x'; 8 << 20];
    let source = repo_with(&[
        ("a.txt", b"first\n"),
        ("big.txt", &big),
        ("c.txt", b"last\n"),
    ]);
    let repo = open(source.path());
    let head = repo.resolve(None).unwrap();
    let cap = limits(100, 1 << 20, 64 << 10);
    let selection = repo.select(&head.commit, &cap, |_| Some(())).unwrap();
    assert_eq!(selection.listed, 3);
    assert_eq!(
        selection.skipped,
        Skipped {
            oversize: 1,
            ..Skipped::default()
        }
    );
    assert!(!selection.skipped.is_partial());
    let paths: Vec<_> = selection.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["a.txt", "c.txt"]);

    // Asked for anyway, the header's size keeps it out of memory: in the
    // middle it is drained, last it stops git.
    let id = |path: &str| git(source.path(), &["rev-parse", &format!("HEAD:{path}")]);
    let (a, big_id, c) = (id("a.txt"), id("big.txt"), id("c.txt"));
    let blobs = repo
        .read_blobs([a.as_str(), big_id.as_str(), c.as_str()], &cap)
        .unwrap();
    assert_eq!(
        blobs,
        [
            Blob::Data(b"first\n".to_vec()),
            Blob::Oversize(8 << 20),
            Blob::Data(b"last\n".to_vec())
        ]
    );
    let blobs = repo
        .read_blobs([a.as_str(), big_id.as_str()], &cap)
        .unwrap();
    assert_eq!(blobs[1], Blob::Oversize(8 << 20));
    assert_eq!(
        repo.read_file(&head.commit, "big.txt", 64 << 10).unwrap(),
        None
    );
}

#[test]
fn more_files_than_the_cap_give_a_partial_selection_of_the_best_ranked() {
    let names: Vec<String> = (0..30).map(|i| format!("f{i:02}.txt")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x\n"[..])).collect();
    let source = repo_with(&files);
    let repo = open(source.path());
    let head = repo.resolve(Some("main")).unwrap();
    // Rank the odd ones first.
    let selection = repo
        .select(&head.commit, &limits(10, 1 << 20, 1 << 20), |e| {
            Some(e.path[1..3].parse::<u32>().unwrap() % 2 == 0)
        })
        .unwrap();
    assert_eq!((selection.listed, selection.entries.len()), (30, 10));
    assert_eq!(selection.skipped.too_many_files, 20);
    assert!(selection.skipped.is_partial());
    let paths: Vec<_> = selection.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths[..3], ["f01.txt", "f03.txt", "f05.txt"]);
    let blobs = repo
        .read_blobs(
            selection.entries.iter().map(|e| e.id.as_str()),
            &Limits::default(),
        )
        .unwrap();
    assert!(blobs.iter().all(|b| *b == Blob::Data(b"x\n".to_vec())));
}

#[test]
fn the_total_cap_gives_a_partial_selection_and_guards_reads() {
    let kib = vec![b'y'; 1024];
    let names: Vec<String> = (0..8).map(|i| format!("f{i}.txt")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &kib[..])).collect();
    let source = repo_with(&files);
    let repo = open(source.path());
    let head = repo.resolve(None).unwrap();
    let cap = limits(100, 3 * 1024 + 10, 1 << 20);
    let selection = repo.select(&head.commit, &cap, |_| Some(())).unwrap();
    assert_eq!(selection.entries.len(), 3);
    assert_eq!(selection.skipped.total_size_cap, 5);
    // Reading more than the total stops git instead of filling memory.
    let all: Vec<String> = names
        .iter()
        .map(|n| format!("{}:{n}", head.commit))
        .collect();
    let over = repo.read_blobs(all.iter().map(String::as_str), &cap);
    assert!(matches!(over, Err(GitError::TooLarge { .. })), "{over:?}");
}

#[test]
fn single_files_are_read_by_revision_and_path() {
    let source = repo_with(&[("src/lib.rs", b"pub fn one() {}\n")]);
    let repo = open(source.path());
    assert_eq!(
        repo.read_file("main", "src/lib.rs", 1 << 20).unwrap(),
        Some(b"pub fn one() {}\n".to_vec())
    );
    assert_eq!(repo.read_file("main", "nope.rs", 1 << 20).unwrap(), None);
    assert_eq!(repo.read_file("main", "src", 1 << 20).unwrap(), None);
    assert!(matches!(
        repo.read_file("main", "../x", 1 << 20),
        Err(GitError::RefusedPath(_))
    ));
    let error = repo.resolve(Some("no-such-branch")).unwrap_err();
    assert_eq!(error.reason(), contexten_git::Reason::NotFound);
}
