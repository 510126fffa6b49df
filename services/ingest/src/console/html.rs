//! HTML building blocks of the console: escaping and the page frame. Every
//! untrusted string (dead-letter reasons, task text, headers) goes through
//! [`esc`]; no asset is loaded from anywhere.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;

/// `text` escaped for HTML text and double-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` escaped for a URL query value or path segment.
pub fn url_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A duration in seconds as `42s`, `5m 3s`, `2h 10m`, `3d 4h`.
pub fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}\
header{background:#1d3557;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}\
header a{color:#fff;text-decoration:none;font-weight:600}header form{margin:0}\
main{padding:1em 1.2em;max-width:78em}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.4em}\
table{border-collapse:collapse;background:#fff;margin:.4em 0 1em}th,td{border:1px solid #d5d9de;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#eef1f4}td.n{text-align:right;font-variant-numeric:tabular-nums}\
pre{background:#fff;border:1px solid #d5d9de;padding:.6em;overflow:auto;max-height:30em}\
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em}.ok{background:#e3f5e1;border:1px solid #8c8;padding:.6em}\
.err{background:#fde2e1;border:1px solid #d88;padding:.6em}button{padding:.3em .9em;cursor:pointer}\
.muted{color:#667}input[type=text],input[type=password]{padding:.3em;min-width:22em}";

/// A whole page: the navigation (with the logout form when signed in) and `body`.
pub fn page(title: &str, csrf: Option<&str>, body: &str) -> String {
    let nav = match csrf {
        Some(csrf) => format!(
            "<a href=\"/console/queues\">Queues</a><a href=\"/console/dead\">Dead letters</a>\
             <a href=\"/console/limits\">Breakers &amp; limiters</a>\
             <form method=\"get\" action=\"/console/search\"><input type=\"text\" name=\"q\" placeholder=\"task id, conversation or API token name\" aria-label=\"search\"> <button>Search</button></form>\
             <form method=\"post\" action=\"/console/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form>",
            esc(csrf)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · Contexten console</title><style>{STYLE}</style></head><body><header><strong>Contexten</strong>{nav}</header>\
         <main><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

/// An HTML answer with `status`, never cached (pages show live state and
/// carry the CSRF token).
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Inline style only, no script from anywhere, no framing.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An error page with `status` and the reason in words.
pub fn error(status: StatusCode, title: &str, reason: &str, csrf: Option<&str>) -> Response {
    respond(
        status,
        page(
            title,
            csrf,
            &format!("<p class=\"err\">{}</p>", esc(reason)),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_untrusted_text_is_escaped() {
        assert_eq!(
            esc("<script>alert(\"x\")</script>&'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(url_part("a b/<c>"), "a%20b%2F%3Cc%3E");
        assert_eq!(age(59), "59s");
        assert_eq!(age(3_661), "1h 1m");
    }
}
