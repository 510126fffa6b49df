//! The guard's rules, without connecting anywhere: IP literals are judged as they
//! are, and the only name resolved is `localhost` (from the hosts file).

use super::*;

fn guard() -> OutboundGuard {
    OutboundGuard::default()
}

fn allow(list: &str) -> OutboundGuard {
    OutboundGuard::new(AllowList::parse(list).unwrap())
}

async fn refused(guard: &OutboundGuard, url: &str, purpose: Purpose) -> OutboundRefusal {
    match guard.check(url, purpose).await {
        Ok(checked) => panic!("{url} was allowed: {checked:?}"),
        Err(refusal) => refusal,
    }
}

fn category(refusal: &OutboundRefusal) -> Option<&'static str> {
    match refusal.kind {
        RefusalKind::Address(ip) => Some(ip.category.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn issue_list_is_refused_and_a_public_address_allowed_without_connecting() {
    let table = [
        ("https://127.0.0.1/", "loopback"),
        ("https://localhost/", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "link_local"),
        ("https://10.0.0.5/", "private"),
        ("https://[::ffff:10.0.0.1]/", "private"),
        ("https://[::1]/", "loopback"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://[fd00::1]/", "unique_local"),
    ];
    for (url, expected) in table {
        for purpose in [Purpose::Git, Purpose::Callback] {
            let refusal = refused(&guard(), url, purpose).await;
            assert_eq!(category(&refusal), Some(expected), "{url}");
            assert_eq!(refusal.reason(), "outbound_refused");
            assert!(!refusal.is_transient());
        }
    }
    for literal in [
        "127.0.0.1",
        "169.254.169.254",
        "10.0.0.5",
        "::ffff:10.0.0.1",
        "::1",
        "0.0.0.0",
        "fd00::1",
    ] {
        assert!(classify_ip(literal.parse().unwrap()).is_err(), "{literal}");
    }
    // A public literal is judged without DNS and without a connection.
    let checked = guard()
        .check("https://93.184.215.14/", Purpose::Callback)
        .await
        .unwrap();
    assert_eq!(
        checked.host,
        TargetHost::Ip("93.184.215.14".parse().unwrap())
    );
    assert_eq!(checked.port, 443);
    assert_eq!(checked.addrs, vec!["93.184.215.14:443".parse().unwrap()]);
    assert!(classify_ip("93.184.215.14".parse().unwrap()).is_ok());
}

#[tokio::test]
async fn refusal_sentence_names_the_host_the_category_and_the_setting() {
    let refusal = refused(
        &guard(),
        "https://10.0.0.5/hook?token=s3cret",
        Purpose::Callback,
    )
    .await;
    assert_eq!(
        refusal.to_string(),
        "callback URL host 10.0.0.5 is a private address; outbound requests only go to public addresses or hosts in CONTEXTEN_OUTBOUND_ALLOW"
    );
    assert_eq!(refusal.host.as_deref(), Some("10.0.0.5"));
    let named = refusal_by_name().await;
    assert!(
        named.starts_with("repository URL host localhost resolves to "),
        "{named}"
    );
    assert!(named.contains("a loopback address"), "{named}");
}

async fn refusal_by_name() -> String {
    refused(&guard(), "https://localhost/acme/api.git", Purpose::Git)
        .await
        .to_string()
}

#[tokio::test]
async fn odd_ipv4_spellings_are_read_as_the_address_they_reach() {
    for url in [
        "http://0x7f.1/",
        "https://2130706433/",
        "https://017700000001/",
        "https://127.1/",
        "https://[::127.0.0.1]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://[2002:a00:5::1]/",
    ] {
        let refusal = refused(&guard(), url, Purpose::Callback).await;
        assert!(
            matches!(refusal.kind, RefusalKind::Address(_)),
            "{url}: {refusal}"
        );
    }
}

#[tokio::test]
async fn credentials_in_the_url_are_refused_and_not_repeated() {
    for url in [
        "https://user:hunter2@example.com/acme/api.git",
        "https://ghp_hunter2@github.com/acme/api.git",
        "https://:hunter2@93.184.215.14/",
    ] {
        let refusal = refused(&guard(), url, Purpose::Git).await;
        assert_eq!(refusal.kind, RefusalKind::Credentials, "{url}");
        assert!(!refusal.to_string().contains("hunter2"), "{refusal}");
        assert!(refusal.to_string().contains("carries credentials"));
    }
    let ssh = OutboundGuard::default().allow_ssh_git(true);
    let refusal = refused(
        &ssh,
        "ssh://git:hunter2@93.184.215.14/acme/api",
        Purpose::Git,
    )
    .await;
    assert_eq!(refusal.kind, RefusalKind::Credentials);
}

#[tokio::test]
async fn schemes_other_than_https_are_refused() {
    for url in [
        "file:///etc/passwd",
        "git://github.com/acme/api.git",
        "ftp://93.184.215.14/x",
        "data:text/plain,hello",
        "gopher://93.184.215.14/",
        "javascript:alert(1)",
    ] {
        let refusal = refused(&guard(), url, Purpose::Callback).await;
        assert_eq!(refusal.kind, RefusalKind::Scheme, "{url}");
    }
    let refusal = refused(&guard(), "file:///etc/passwd", Purpose::Git).await;
    assert_eq!(refusal.kind, RefusalKind::Scheme);
    assert!(
        refusal
            .to_string()
            .contains("\"file\" is not allowed; use https")
    );
    for url in ["/srv/repo", "not a url", ""] {
        let refusal = refused(&guard(), url, Purpose::Git).await;
        assert_eq!(refusal.kind, RefusalKind::Malformed, "{url}");
    }
}

#[tokio::test]
async fn plain_http_needs_the_allow_list_or_loopback() {
    let refusal = refused(&guard(), "http://93.184.215.14/hook", Purpose::Callback).await;
    assert_eq!(refusal.kind, RefusalKind::Scheme);
    assert!(refusal.to_string().contains("plain http"), "{refusal}");
    let by_block = allow("93.184.215.0/24");
    assert!(
        by_block
            .check("http://93.184.215.14/hook", Purpose::Callback)
            .await
            .is_ok()
    );
    let by_name = allow("localhost");
    assert!(
        by_name
            .check("http://localhost:8080/", Purpose::Git)
            .await
            .is_ok()
    );
    let local = guard().allow_loopback(true);
    assert!(
        local
            .check("http://127.0.0.1:8080/", Purpose::Callback)
            .await
            .is_ok()
    );
    assert!(
        local
            .check("http://[::1]:8080/", Purpose::Callback)
            .await
            .is_ok()
    );
    // Loopback allowed does not make public http acceptable.
    assert!(
        local
            .check("http://93.184.215.14/", Purpose::Callback)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn ssh_is_for_git_only_and_only_when_switched_on() {
    let off = refused(&guard(), "git@93.184.215.14:acme/api.git", Purpose::Git).await;
    assert_eq!(off.kind, RefusalKind::Scheme);
    assert!(
        off.to_string().contains("CONTEXTEN_GIT_ALLOW_SSH=1"),
        "{off}"
    );
    let ssh = guard().allow_ssh_git(true);
    let callback = refused(&ssh, "ssh://git@93.184.215.14/acme/api", Purpose::Callback).await;
    assert_eq!(callback.kind, RefusalKind::Scheme);

    let scp = ssh
        .check("git@93.184.215.14:acme/api.git", Purpose::Git)
        .await
        .unwrap();
    assert_eq!(scp.url.as_str(), "ssh://git@93.184.215.14/acme/api.git");
    assert_eq!(scp.original, "git@93.184.215.14:acme/api.git");
    assert_eq!(scp.port, 22);
    let url = ssh
        .check("ssh://git@93.184.215.14:2222/acme/api", Purpose::Git)
        .await
        .unwrap();
    assert_eq!(url.addrs, vec!["93.184.215.14:2222".parse().unwrap()]);

    // ssh leaves IPv4 literals as names in the URL; they are still judged as addresses.
    let private = refused(&ssh, "ssh://git@10.0.0.5/acme/api", Purpose::Git).await;
    assert_eq!(category(&private), Some("private"));
    let scp_private = refused(&ssh, "git@[::1]:acme/api", Purpose::Git).await;
    assert_eq!(category(&scp_private), Some("loopback"));
    // A leading dash would be an ssh option.
    for url in [
        "-oProxyCommand=touch@93.184.215.14:x",
        "ssh://-oProxyCommand=x/acme",
    ] {
        let refusal = refused(&ssh, url, Purpose::Git).await;
        assert_eq!(refusal.kind, RefusalKind::Malformed, "{url}: {refusal}");
    }
}

#[tokio::test]
async fn allow_list_overrides_by_block_and_by_host() {
    let blocks = allow("10.0.0.0/8,fd00::/8");
    assert!(
        blocks
            .check("https://10.0.0.5/", Purpose::Callback)
            .await
            .is_ok()
    );
    assert!(
        blocks
            .check("https://[::ffff:10.0.0.1]/", Purpose::Callback)
            .await
            .is_ok()
    );
    assert!(
        blocks
            .check("https://[fd00::1]/", Purpose::Git)
            .await
            .is_ok()
    );
    assert!(
        blocks
            .check("https://192.168.0.1/", Purpose::Git)
            .await
            .is_err()
    );
    assert!(
        blocks
            .check("https://127.0.0.1/", Purpose::Git)
            .await
            .is_err()
    );

    let host = allow("localhost");
    let checked = host
        .check("https://LOCALHOST:8443/x", Purpose::Git)
        .await
        .unwrap();
    assert_eq!(checked.host, TargetHost::Name("localhost".into()));
    assert!(
        checked
            .addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8443)
    );
    // A host entry does not cover that host's address written as a literal.
    assert!(
        host.check("https://127.0.0.1/", Purpose::Git)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn allow_loopback_lets_loopback_through_and_nothing_else() {
    let local = guard().allow_loopback(true);
    for url in [
        "https://127.0.0.1/",
        "https://127.8.0.1/",
        "https://[::1]/",
        "https://localhost/",
        "https://[::ffff:127.0.0.1]/",
    ] {
        assert!(local.check(url, Purpose::Git).await.is_ok(), "{url}");
    }
    for url in [
        "https://10.0.0.5/",
        "https://169.254.169.254/",
        "https://0.0.0.0/",
    ] {
        assert!(local.check(url, Purpose::Git).await.is_err(), "{url}");
    }
}

#[test]
fn redirect_hops_are_judged_by_scheme_credentials_and_literal() {
    let url = |s: &str| Url::parse(s).unwrap();
    let plain = guard();
    assert!(
        plain
            .check_redirect(&url("https://93.184.215.14/x"), Purpose::Callback)
            .is_ok()
    );
    assert!(
        plain
            .check_redirect(&url("https://example.com/x"), Purpose::Callback)
            .is_ok()
    );
    for hop in [
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://169.254.169.254/",
        "http://example.com/",
        "https://u:p@example.com/",
        "ssh://git@example.com/x",
        "file:///etc/passwd",
    ] {
        assert!(
            plain.check_redirect(&url(hop), Purpose::Git).is_err(),
            "{hop}"
        );
    }
    let local = guard().allow_loopback(true);
    assert!(
        local
            .check_redirect(&url("http://localhost:1/"), Purpose::Git)
            .is_ok()
    );
    assert!(
        local
            .check_redirect(&url("http://127.0.0.1:1/"), Purpose::Git)
            .is_ok()
    );
    let named = allow("git.corp.example");
    assert!(
        named
            .check_redirect(&url("http://git.corp.example/"), Purpose::Git)
            .is_ok()
    );
    assert!(
        named
            .check_redirect(&url("http://other.example/"), Purpose::Git)
            .is_err()
    );
}

#[test]
fn git_pins_name_the_checked_addresses() {
    let checked = CheckedUrl {
        url: Url::parse("https://git.corp.example/acme/api.git").unwrap(),
        original: "https://git.corp.example/acme/api.git".into(),
        host: TargetHost::Name("git.corp.example".into()),
        port: 443,
        addrs: vec![
            "10.1.0.7:443".parse().unwrap(),
            "[fd00::7]:443".parse().unwrap(),
        ],
        purpose: Purpose::Git,
    };
    let addrs: Vec<IpAddr> = vec!["10.1.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
    assert_eq!(checked.git_pin(), Some(("git.corp.example", 443, addrs)));
    let literal = CheckedUrl {
        host: TargetHost::Ip("93.184.215.14".parse().unwrap()),
        ..checked.clone()
    };
    assert_eq!(literal.git_pin(), None);
    let ssh = CheckedUrl {
        url: Url::parse("ssh://git@git.corp.example/acme/api").unwrap(),
        ..checked
    };
    assert_eq!(ssh.git_pin(), None);
}

#[test]
fn settings_come_from_the_environment() {
    let env = Env::from_pairs([
        (ALLOW_VAR, "git.corp.example, 10.1.0.0/16"),
        (LOCAL_REPOS_VAR, "1"),
        (GIT_SSH_VAR, "true"),
    ]);
    let guard = OutboundGuard::from_env(&env).unwrap();
    assert_eq!(
        guard,
        allow("git.corp.example,10.1.0.0/16")
            .allow_loopback(true)
            .allow_ssh_git(true)
    );
    assert_eq!(
        OutboundGuard::from_env(&Env::default()).unwrap(),
        OutboundGuard::default()
    );
    let bad = OutboundGuard::from_env(&Env::from_pairs([(ALLOW_VAR, "10.0.0.1/8")])).unwrap_err();
    assert!(bad.to_string().contains("\"10.0.0.1/8\""), "{bad}");
    let flag = OutboundGuard::from_env(&Env::from_pairs([(GIT_SSH_VAR, "maybe")])).unwrap_err();
    assert!(flag.to_string().contains(GIT_SSH_VAR), "{flag}");
}

#[test]
fn precheck_judges_literals_localhost_and_schemes_without_dns() {
    let guard = OutboundGuard::default();
    for url in [
        "https://127.0.0.1/x.git",
        "https://localhost:8443/x.git",
        "https://api.localhost/x.git",
        "https://[::1]/x.git",
        "https://169.254.169.254/latest/meta-data",
        "http://example.com/x.git",
        "https://user:pw@example.com/x.git",
        "file:///etc/passwd",
    ] {
        assert!(guard.precheck(url, Purpose::Git).is_err(), "{url}");
    }
    // A name other than localhost is judged when it is resolved, at connect time.
    assert!(
        guard
            .precheck("https://git.example.com/x.git", Purpose::Git)
            .is_ok()
    );
    assert!(
        guard
            .precheck("https://93.184.215.14/x.git", Purpose::Git)
            .is_ok()
    );
    let local = OutboundGuard::default().allow_loopback(true);
    assert!(
        local
            .precheck("http://localhost:8080/x.git", Purpose::Git)
            .is_ok()
    );
    assert!(
        local
            .precheck("http://127.0.0.1:8080/hook", Purpose::Callback)
            .is_ok()
    );
    assert!(
        local
            .precheck("http://10.0.0.5/hook", Purpose::Callback)
            .is_err()
    );
}
